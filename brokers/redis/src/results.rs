//! The Redis result backend: one key per task result, pub/sub to wake waiters.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use celeriac_core::{BrokerError, RedactedUrl, ResultBackend, StoredResult};
use futures::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::error::bounded;
use crate::scripts::SCRIPTS;

/// Task results in Redis, for any broker (Celery's `redis://` result backend).
///
/// Each result is one key, `celeriac:result:<task id>`, written by a Lua script that applies
/// celeriac's rule — a stored outcome is never made worse, so a task that ran twice keeps its first
/// success — and expires with the app's `result_expires`. Writing a finished outcome publishes it on
/// the key's channel; callers waiting in [`AsyncResult::get`](https://docs.rs/celeriac) are
/// subscribed there (one pub/sub connection per backend, however many wait), so a result reaches
/// its caller in one round trip, without polling. If that connection drops, the backend reconnects,
/// subscribes again and every waiter reads its key once more, so nothing published meanwhile is
/// missed.
///
/// Apps usually choose it by URL (`AppBuilder::result_backend_url("redis://…")`); build it by hand
/// for a key prefix or timeout of your own:
///
/// ```no_run
/// use std::time::Duration;
/// use celeriac::redis::RedisResultBackend;
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
    url: RedactedUrl,
    key_prefix: String,
    timeout: Duration,
    tls_roots_pem: Option<String>,
}

impl RedisResultBackendBuilder {
    /// Prefix of every key (default `celeriac`): results are `<prefix>:result:<task id>`.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Timeout of each Redis operation (default 5 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Also trusts the CA certificates in `pem` for `rediss://` URLs (see
    /// [`RedisBrokerBuilder::tls_root_certificates`](crate::RedisBrokerBuilder::tls_root_certificates)).
    pub fn tls_root_certificates(mut self, pem: impl Into<String>) -> Self {
        self.tls_roots_pem = Some(pem.into());
        self
    }

    /// Connects. Fails if the URL is invalid or the server cannot be reached in time.
    pub async fn connect(self) -> Result<RedisResultBackend, BrokerError> {
        let client = crate::client_for(&self.url, self.tls_roots_pem.as_deref())?;
        let conn = crate::manager(&client, &self.url, self.timeout)
            .await
            .map_err(|source| BrokerError::Connect {
                url: self.url.redacted().to_owned(),
                source,
            })?;
        Ok(RedisResultBackend {
            inner: Arc::new(Inner {
                client,
                conn,
                url: self.url,
                key_prefix: self.key_prefix,
                timeout: self.timeout,
                listener: OnceLock::new(),
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
            url: RedactedUrl::new(url),
            key_prefix: "celeriac".to_owned(),
            timeout: Duration::from_secs(5),
            tls_roots_pem: None,
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}:result:{id}", self.inner.key_prefix)
    }

    fn listener(&self) -> &mpsc::UnboundedSender<Command> {
        self.inner.listener.get_or_init(|| {
            let (commands, receiver) = mpsc::unbounded_channel();
            let listener = Listener {
                client: self.inner.client.clone(),
                url: self.inner.url.redacted().to_owned(),
                timeout: self.inner.timeout,
                channels: HashMap::new(),
                epoch: watch::channel(0).0,
            };
            tokio::spawn(listener.run(receiver, self.inner.stop.clone()));
            commands
        })
    }

    /// Subscribes to `channel` (confirmed by Redis when this returns).
    async fn subscribe(&self, channel: &str) -> Result<Subscription, BrokerError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Subscribe(channel.to_owned(), reply);
        let gone = || BrokerError::Disconnected { op: "subscribe" };
        self.listener().send(command).map_err(|_| gone())?;
        let (result, epoch) = answer.await.map_err(|_| gone())??;
        Ok(Subscription {
            commands: self.listener().clone(),
            channel: channel.to_owned(),
            result,
            epoch,
        })
    }
}

/// A waiter's hold on a channel; unsubscribes when the last one for the channel is dropped.
struct Subscription {
    commands: mpsc::UnboundedSender<Command>,
    channel: String,
    result: watch::Receiver<Option<StoredResult>>,
    /// Changes each time the pub/sub connection is made anew: re-read the key then.
    epoch: watch::Receiver<u64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self
            .commands
            .send(Command::Unsubscribe(std::mem::take(&mut self.channel)));
    }
}

type Subscribed =
    Result<(watch::Receiver<Option<StoredResult>>, watch::Receiver<u64>), BrokerError>;

enum Command {
    Subscribe(String, oneshot::Sender<Subscribed>),
    Unsubscribe(String),
}

/// A subscribed channel: how many wait on it, and the slot its result lands in.
struct Channel {
    waiters: usize,
    result: watch::Sender<Option<StoredResult>>,
}

/// Owns the pub/sub connection: every subscription and every message goes through it, one at a time.
struct Listener {
    client: redis::Client,
    url: String,
    timeout: Duration,
    channels: HashMap<String, Channel>,
    epoch: watch::Sender<u64>,
}

impl Listener {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let mut pause = Duration::from_millis(100);
        loop {
            let connected = tokio::select! {
                () = stop.cancelled() => return,
                connected = self.connect() => connected,
            };
            let (mut sink, mut messages) = match connected {
                Ok(connection) => {
                    pause = Duration::from_millis(100);
                    connection
                }
                Err(error) => {
                    tracing::warn!(url = %self.url, error = %celeriac_core::Report(&error), "cannot reach redis for result notifications; retrying");
                    // Meanwhile a new waiter is told at once rather than left hanging.
                    let wait = tokio::time::sleep(pause);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = &mut wait => break,
                            command = commands.recv() => match command {
                                Some(command) => self.refuse(command, &error),
                                None => return,
                            },
                        }
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            // Every waiter re-reads its key: a result may have been published while disconnected.
            self.epoch.send_modify(|epoch| *epoch += 1);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    command = commands.recv() => {
                        let Some(command) = command else { return };
                        if self.obey(command, &mut sink).await.is_err() {
                            break;
                        }
                    }
                    message = messages.next() => {
                        let Some(message) = message else { break };
                        self.deliver(message.get_channel_name(), message.get_payload_bytes());
                    }
                }
            }
            tracing::warn!(url = %self.url, "lost the redis connection for result notifications; reconnecting");
        }
    }

    /// Opens the pub/sub connection and subscribes to every channel someone waits on.
    async fn connect(&self) -> Result<(PubSubSink, PubSubStream), BrokerError> {
        let pubsub = bounded("subscribe", self.timeout, self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let channels: Vec<&String> = self.channels.keys().collect();
        if !channels.is_empty() {
            bounded("subscribe", self.timeout, sink.subscribe(channels)).await?;
        }
        Ok((sink, stream))
    }

    /// Carries out a command; an error means the connection is gone.
    async fn obey(&mut self, command: Command, sink: &mut PubSubSink) -> Result<(), BrokerError> {
        match command {
            Command::Subscribe(channel, reply) => {
                if let Some(known) = self.channels.get_mut(&channel) {
                    known.waiters += 1;
                    let _ = reply.send(Ok((known.result.subscribe(), self.epoch.subscribe())));
                    return Ok(());
                }
                if let Err(error) =
                    bounded("subscribe", self.timeout, sink.subscribe(&channel)).await
                {
                    let shown = BrokerError::Unavailable {
                        op: "subscribe",
                        reason: celeriac_core::Report(&error).to_string(),
                    };
                    let _ = reply.send(Err(shown));
                    return Err(error);
                }
                let result = watch::channel(None).0;
                let _ = reply.send(Ok((result.subscribe(), self.epoch.subscribe())));
                self.channels
                    .insert(channel, Channel { waiters: 1, result });
            }
            Command::Unsubscribe(channel) => {
                let Some(known) = self.channels.get_mut(&channel) else {
                    return Ok(());
                };
                known.waiters -= 1;
                if known.waiters == 0 {
                    self.channels.remove(&channel);
                    bounded("unsubscribe", self.timeout, sink.unsubscribe(&channel)).await?;
                }
            }
        }
        Ok(())
    }

    /// Answers a command while there is no connection.
    fn refuse(&mut self, command: Command, error: &BrokerError) {
        match command {
            Command::Subscribe(_, reply) => {
                let _ = reply.send(Err(BrokerError::Unavailable {
                    op: "subscribe",
                    reason: celeriac_core::Report(error).to_string(),
                }));
            }
            Command::Unsubscribe(channel) => {
                if let Some(known) = self.channels.get_mut(&channel) {
                    known.waiters -= 1;
                    if known.waiters == 0 {
                        self.channels.remove(&channel);
                    }
                }
            }
        }
    }

    /// Hands a published result to the waiters of its channel.
    fn deliver(&self, channel: &str, payload: &[u8]) {
        let Some(known) = self.channels.get(channel) else {
            return;
        };
        match StoredResult::from_bytes(payload) {
            Ok(result) if result.state.is_ready() => {
                known.result.send_replace(Some(result));
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(channel, error = %celeriac_core::Report(&error), "ignoring a message on a result channel");
            }
        }
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
        let mut conn = self.inner.conn.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = SCRIPTS.store_result.key(self.key(id));
        invocation.arg(result.to_bytes()).arg(ttl_ms);
        let stored: i64 = bounded(
            "store_result",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(stored == 1)
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
        let mut subscription = self.subscribe(&self.key(id)).await?;
        loop {
            subscription.epoch.borrow_and_update();
            if let Some(stored) = self.fetch(id).await?.filter(|s| s.state.is_ready()) {
                return Ok(stored);
            }
            tokio::select! {
                published = subscription.result.wait_for(Option::is_some) => {
                    let published = published.map_err(|_| BrokerError::Disconnected { op: "wait_ready" })?;
                    if let Some(stored) = published.clone() {
                        return Ok(stored);
                    }
                }
                changed = subscription.epoch.changed() => {
                    changed.map_err(|_| BrokerError::Disconnected { op: "wait_ready" })?;
                }
            }
        }
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
