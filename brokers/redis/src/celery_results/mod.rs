//! Task results in Celery's format on Redis, so that Python's `AsyncResult.get()` reads what a Rust
//! worker stored and a Rust `AsyncResult` reads what a Python worker stored: see
//! [`CeleryResultBackend`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use celeriac_core::{
    BrokerError, ChordJoin, ChordPart, RedactedUrl, ResultBackend, ResultState, StoredResult,
};
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod chords;
mod groups;

use crate::client_options::ClientOptions;
use crate::error::bounded;
use crate::result_listener::{self, Channels, Command, Watch};

static STORE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("../scripts/celery_store.lua")));

/// A [`ResultBackend`] that keeps results as Celery's Redis backend does: the JSON meta
/// `{"status": …, "result": …, "traceback": …, "children": …, "date_done": …, "task_id": …}` under
/// `celery-task-meta-<id>`, published on a channel of the same name when stored.
///
/// It stores what it is given: celeriac's app writes Celery's meta into it when built with
/// `celery_compat()` (which picks this backend for a `redis://` result backend URL). A first
/// success is never replaced, whichever language stored it.
///
/// ```no_run
/// # async fn run() -> Result<(), celeriac::BrokerError> {
/// let results = celeriac_redis::CeleryResultBackend::builder("redis://127.0.0.1:6379/0")
///     .global_keyprefix("shop:") // result_backend_transport_options = {"global_keyprefix": "shop:"}
///     .connect()
///     .await?;
/// # let _ = results; Ok(()) }
/// ```
#[derive(Clone)]
pub struct CeleryResultBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    url: RedactedUrl,
    timeout: Duration,
    prefix: String,
    listener: OnceLock<mpsc::UnboundedSender<Command>>,
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Configures a [`CeleryResultBackend`].
#[derive(Debug)]
#[must_use]
pub struct CeleryResultBackendBuilder {
    /// Its key prefix is Celery's `global_keyprefix` (default none).
    options: ClientOptions,
}

impl CeleryResultBackendBuilder {
    /// The `global_keyprefix` of Celery's `result_backend_transport_options` (default none).
    pub fn global_keyprefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.key_prefix = prefix.into();
        self
    }

    /// Timeout of each Redis operation (default 5 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = timeout;
        self
    }

    /// Connects.
    pub async fn connect(self) -> Result<CeleryResultBackend, BrokerError> {
        let (client, conn) = self.options.connect().await?;
        let ClientOptions {
            url,
            key_prefix,
            timeout,
            ..
        } = self.options;
        Ok(CeleryResultBackend {
            inner: Arc::new(Inner {
                client,
                conn,
                url,
                timeout,
                prefix: key_prefix,
                listener: OnceLock::new(),
                stop: CancellationToken::new(),
            }),
        })
    }
}

impl CeleryResultBackend {
    /// Connects with default settings to `redis://…` (or `rediss://`).
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a backend for `url`.
    pub fn builder(url: &str) -> CeleryResultBackendBuilder {
        let mut options = ClientOptions::new(url);
        options.key_prefix = String::new();
        CeleryResultBackendBuilder { options }
    }

    fn key_prefix(&self) -> String {
        format!("{}celery-task-meta-", self.inner.prefix)
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.key_prefix())
    }

    fn listener(&self) -> &mpsc::UnboundedSender<Command> {
        self.inner.listener.get_or_init(|| {
            result_listener::start(
                self.inner.client.clone(),
                self.inner.url.redacted().to_owned(),
                self.inner.timeout,
                Channels::PerTask(self.key_prefix()),
                self.inner.stop.clone(),
            )
        })
    }

    async fn watch(&self, id: &str) -> Result<Watch, BrokerError> {
        result_listener::watch(self.listener(), id).await
    }
}

/// The rank of `ResultState::replaces`, as `celery_store.lua` compares them.
fn rank(state: ResultState) -> u8 {
    match state {
        ResultState::Started | ResultState::Retry => 1,
        ResultState::Failure | ResultState::Revoked => 2,
        ResultState::Success => 3,
        _ => 0,
    }
}

impl std::fmt::Debug for CeleryResultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeleryResultBackend")
            .field("url", &self.inner.url)
            .field("global_keyprefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ResultBackend for CeleryResultBackend {
    fn system(&self) -> &'static str {
        "redis"
    }

    fn redacted_url(&self) -> String {
        self.inner.url.redacted().to_owned()
    }

    async fn store(
        &self,
        id: &str,
        result: StoredResult,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let mut invocation = STORE.key(self.key(id));
        invocation
            .arg(result.body.as_ref())
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(rank(result.state));
        let mut conn = self.inner.conn.clone();
        let stored: u64 = bounded(
            "store_result",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(stored == 1)
    }

    async fn fetch(&self, id: &str) -> Result<Option<StoredResult>, BrokerError> {
        let mut conn = self.inner.conn.clone();
        let meta: Option<Vec<u8>> = bounded(
            "get_result",
            self.inner.timeout,
            redis::cmd("GET").arg(self.key(id)).query_async(&mut conn),
        )
        .await?;
        meta.map(|meta| celeriac_core::celery::results::stored_meta(id, meta))
            .transpose()
    }

    async fn wait_ready(&self, id: &str) -> Result<StoredResult, BrokerError> {
        // Subscribe first, then read: a result stored in between is seen by one or the other.
        let mut watch = self.watch(id).await?;
        loop {
            watch.mark_seen();
            if let Some(stored) = self.fetch(id).await?.filter(|s| s.state.is_ready()) {
                return Ok(stored);
            }
            watch.changed().await?;
        }
    }

    async fn forget(&self, id: &str) -> Result<(), BrokerError> {
        let mut conn = self.inner.conn.clone();
        bounded::<()>(
            "forget_result",
            self.inner.timeout,
            redis::cmd("DEL").arg(self.key(id)).query_async(&mut conn),
        )
        .await
    }

    /// Writes `celery-taskset-meta-<group>` as Celery's `GroupResult.save()` does.
    async fn save_group(
        &self,
        group: &str,
        members: &[String],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        self.save_celery_group(group, members, ttl).await
    }

    /// Reads `celery-taskset-meta-<group>` as Celery's `GroupResult.restore()` does.
    async fn restore_group(&self, group: &str) -> Result<Option<Vec<String>>, BrokerError> {
        self.restore_celery_group(group).await
    }

    async fn forget_group(&self, group: &str) -> Result<(), BrokerError> {
        self.forget_celery_group(group).await
    }

    /// Celery's chords: joined in Celery's keys, the size being what the chord's sender wrote.
    fn joins_chords(&self) -> bool {
        true
    }

    /// Writes `celery-taskset-meta-<chord>.s`, as Celery's producer does.
    async fn keep_chord_size(
        &self,
        chord: &str,
        size: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.keep_celery_chord_size(chord, size, ttl).await?;
        Ok(true)
    }

    async fn join_chord(
        &self,
        part: ChordPart<'_>,
        output: Bytes,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        self.join_celery_chord(part, chords::Outcome::Succeeded(&output), ttl)
            .await
    }

    async fn chord_fired(&self, chord: &str, _ttl: Duration) -> Result<(), BrokerError> {
        self.celery_chord_sent(chord).await
    }

    /// Records the failure in the join; `Failed` (naming the first member that failed, as
    /// Celery's `ChordError` does) when it completes the chord: Celery fails a chord once every
    /// member is in.
    async fn fail_chord(
        &self,
        part: ChordPart<'_>,
        error: &str,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        self.join_celery_chord(part, chords::Outcome::Failed(error), ttl)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_replacement_rule() {
        for new in [
            ResultState::Pending,
            ResultState::Started,
            ResultState::Retry,
            ResultState::Success,
            ResultState::Failure,
            ResultState::Revoked,
        ] {
            for old in [
                ResultState::Pending,
                ResultState::Started,
                ResultState::Retry,
                ResultState::Success,
                ResultState::Failure,
                ResultState::Revoked,
            ] {
                let (n, o) = (rank(new), rank(old));
                assert_eq!(
                    n > o || (n == o && n < 3),
                    new.replaces(old),
                    "{new} over {old}"
                );
            }
        }
    }
}
