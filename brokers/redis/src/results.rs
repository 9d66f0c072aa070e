//! The Redis result backend: one key per task result, pub/sub to wake waiters.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use celeriac_core::{BrokerError, ChordJoin, ChordPart, RedactedUrl, ResultBackend, StoredResult};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::client_options::{ClientOptions, client_option_setters};
use crate::error::bounded;
use crate::result_listener::{self, Channels, Command, Watch};
use crate::result_writes;
use crate::scripts::SCRIPTS;

/// Task results in Redis, for any broker (Celery's `redis://` result backend).
///
/// Each result is one key, `celeriac:result:<task id>`, kept for the app's `result_expires`, and
/// written under celeriac's rule — a stored outcome is never made worse, so a task that ran twice
/// keeps its first success: a task's first record is written with `SET NX`, any later one by a Lua
/// script that compares states. Writes from all the lanes of a worker go out in pipelined batches,
/// and each batch announces the ids it stored on one channel, `celeriac:results`. Callers waiting in
/// [`AsyncResult::get`](https://docs.rs/celeriac) listen there (one pub/sub connection per backend,
/// subscribed only while someone waits) and read their key when its id is announced: a result
/// reaches its caller without polling. If that connection drops, the backend reconnects, subscribes
/// again and every waiter reads its key once more, so nothing published meanwhile is missed.
///
/// Apps usually choose it by URL (`AppBuilder::result_backend_url("redis://…")`); build it by hand
/// for a key prefix or timeout of your own:
///
/// ```no_run
/// use std::time::Duration;
/// use celeriac_redis::RedisResultBackend;
///
/// # async fn run() -> Result<(), celeriac::Error> {
/// let results = RedisResultBackend::builder("redis://127.0.0.1:6379/1")
///     .key_prefix("shop")
///     .operation_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// let app = celeriac::App::builder()
///     .broker_url("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .result_backend(results)
///     .build()?;
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisResultBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    url: RedactedUrl,
    key_prefix: String,
    timeout: Duration,
    /// The pub/sub listener, started by the first wait.
    listener: OnceLock<mpsc::UnboundedSender<Command>>,
    /// The batching writer, started by the first write.
    writer: OnceLock<mpsc::UnboundedSender<result_writes::Write>>,
    /// Stops the listener when the backend is dropped.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Configures a [`RedisResultBackend`].
#[derive(Debug)]
#[must_use]
pub struct RedisResultBackendBuilder {
    options: ClientOptions,
}

impl RedisResultBackendBuilder {
    client_option_setters!("results are `<prefix>:result:<task id>`");

    /// Connects. Fails if the URL is invalid or the server cannot be reached in time.
    pub async fn connect(self) -> Result<RedisResultBackend, BrokerError> {
        let (client, conn) = self.options.connect().await?;
        let ClientOptions {
            url,
            key_prefix,
            timeout,
            ..
        } = self.options;
        Ok(RedisResultBackend {
            inner: Arc::new(Inner {
                client,
                conn,
                url,
                key_prefix,
                timeout,
                listener: OnceLock::new(),
                writer: OnceLock::new(),
                stop: CancellationToken::new(),
            }),
        })
    }
}

impl RedisResultBackend {
    /// Connects with default settings to `redis://…` or `rediss://…`.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a backend for `url`.
    pub fn builder(url: &str) -> RedisResultBackendBuilder {
        RedisResultBackendBuilder {
            options: ClientOptions::new(url),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}:result:{id}", self.inner.key_prefix)
    }

    /// The key of one part of chord `id`'s join: `members`, `sent` or `failed`. The id is a hash
    /// tag, so a chord's keys share a Redis Cluster slot.
    fn chord_key(&self, id: &str, part: &str) -> String {
        format!("{}:chord:{{{id}}}:{part}", self.inner.key_prefix)
    }

    /// The channel on which writers announce the ids of the results they stored.
    fn channel(&self) -> String {
        format!("{}:results", self.inner.key_prefix)
    }

    fn listener(&self) -> &mpsc::UnboundedSender<Command> {
        self.inner.listener.get_or_init(|| {
            result_listener::start(
                self.inner.client.clone(),
                self.inner.url.redacted().to_owned(),
                self.inner.timeout,
                Channels::Shared(self.channel()),
                self.inner.stop.clone(),
            )
        })
    }

    /// Registers a wait on task `id` with the listener (subscribed when this returns).
    async fn watch(&self, id: &str) -> Result<Watch, BrokerError> {
        result_listener::watch(self.listener(), id).await
    }
}

#[async_trait]
impl ResultBackend for RedisResultBackend {
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
        let (done, stored) = oneshot::channel();
        let write = result_writes::Write {
            key: self.key(id),
            id: id.to_owned(),
            bytes: result.to_bytes(),
            ttl_ms: ttl_ms(ttl),
            done,
        };
        let writer = self.inner.writer.get_or_init(|| {
            result_writes::start(self.inner.conn.clone(), self.inner.timeout, self.channel())
        });
        let gone = || BrokerError::Disconnected { op: "store_result" };
        writer.send(write).map_err(|_| gone())?;
        stored.await.map_err(|_| gone())?
    }

    async fn fetch(&self, id: &str) -> Result<Option<StoredResult>, BrokerError> {
        let mut conn = self.inner.conn.clone();
        let bytes: Option<Vec<u8>> = bounded(
            "get_result",
            self.inner.timeout,
            redis::cmd("GET").arg(self.key(id)).query_async(&mut conn),
        )
        .await?;
        bytes
            .map(|bytes| StoredResult::from_bytes(&bytes))
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

    fn joins_chords(&self) -> bool {
        true
    }

    async fn join_chord(
        &self,
        part: ChordPart<'_>,
        output: Bytes,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        let (chord, member, size) = (part.chord, part.index, part.size);
        if size == 0 {
            return Ok(ChordJoin::Failed(celeriac_core::UNSIZED_CHORD.to_owned()));
        }
        let mut invocation = SCRIPTS.chord_join.key(self.chord_key(chord, "members"));
        invocation
            .key(self.chord_key(chord, "sent"))
            .arg(member)
            .arg(output.as_ref())
            .arg(size)
            .arg(ttl_ms(ttl));
        let mut conn = self.inner.conn.clone();
        let joined: Option<Vec<Vec<u8>>> = bounded(
            "join_chord",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let Some(flat) = joined else {
            return Ok(ChordJoin::Waiting);
        };
        let mut members = Vec::with_capacity(flat.len() / 2);
        let mut pairs = flat.into_iter();
        while let (Some(index), Some(output)) = (pairs.next(), pairs.next()) {
            let index = std::str::from_utf8(&index)
                .ok()
                .and_then(|index| index.parse::<u32>().ok())
                .ok_or_else(|| {
                    BrokerError::Invalid(format!(
                        "chord {chord}'s join holds a member that is not an index"
                    ))
                })?;
            members.push((index, Bytes::from(output)));
        }
        members.sort_unstable_by_key(|(index, _)| *index);
        Ok(ChordJoin::Complete(
            members.into_iter().map(|(_, output)| output).collect(),
        ))
    }

    async fn chord_fired(&self, chord: &str, ttl: Duration) -> Result<(), BrokerError> {
        let mut conn = self.inner.conn.clone();
        bounded(
            "chord_fired",
            self.inner.timeout,
            redis::cmd("SET")
                .arg(self.chord_key(chord, "sent"))
                .arg(1)
                .arg("PX")
                .arg(ttl_ms(ttl))
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn fail_chord(
        &self,
        part: ChordPart<'_>,
        error: &str,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        let mut invocation = SCRIPTS.chord_fail.key(self.chord_key(part.chord, "failed"));
        invocation.arg(part.index).arg(ttl_ms(ttl));
        let mut conn = self.inner.conn.clone();
        let first: i64 = bounded(
            "fail_chord",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(if first == 1 {
            ChordJoin::Failed(error.to_owned())
        } else {
            ChordJoin::Waiting
        })
    }

    async fn forget(&self, id: &str) -> Result<(), BrokerError> {
        let mut conn = self.inner.conn.clone();
        bounded(
            "forget_result",
            self.inner.timeout,
            redis::cmd("DEL")
                .arg(self.key(id))
                .query_async::<()>(&mut conn),
        )
        .await
    }
}

impl fmt::Debug for RedisResultBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisResultBackend")
            .field("url", &self.inner.url)
            .field("key_prefix", &self.inner.key_prefix)
            .finish_non_exhaustive()
    }
}

/// A time to live in whole milliseconds, at least one (Redis refuses `PX 0`).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}
