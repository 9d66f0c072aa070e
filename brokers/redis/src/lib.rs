//! A Redis broker for [celeriac](https://docs.rs/celeriac), built on Redis Streams with consumer groups.
//!
//! ```no_run
//! use celeriac::App;
//! use celeriac_redis::RedisBroker;
//!
//! # async fn run() -> Result<(), celeriac::Error> {
//! let broker = RedisBroker::connect("redis://127.0.0.1:6379/0").await?;
//! let app = App::builder().broker(broker).autodiscover().build()?;
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Design, and why it is as safe as RabbitMQ
//!
//! Each queue is three keys sharing the hash tag `{queue}` (so the layout works on Redis Cluster):
//! a stream of ready messages (`celeriac:{q}:ready`), a sorted set of delayed messages
//! (`celeriac:{q}:delayed`) and a dead-letter stream (`celeriac:{q}:dead`).
//!
//! - **Delivery**: workers read with `XREADGROUP` in one consumer group, in batches up to their prefetch.
//!   A read entry stays in the group's pending list until it is acknowledged (`XACK` + `XDEL`).
//! - **Bounded memory**: reads go through a connection whose reply reader streams past any entry
//!   larger than the worker's decode limit instead of holding it; such an entry is dead-lettered
//!   inside Redis. A worker holds at most `prefetch` × that limit, whatever producers write.
//! - **Leases instead of a blind visibility timeout**: while a delivery is held, its consumer extends
//!   its lease every third of the visibility timeout. A task that runs far longer than the timeout is
//!   therefore not run twice — unlike Celery's Redis transport. When a worker dies (even by SIGKILL),
//!   its leases lapse and other workers take its entries over (`XPENDING` … `IDLE` + `XCLAIM`).
//! - **Poison messages**: the stream's delivery counter counts every takeover; an entry delivered
//!   `max_deliveries` times without an ack is dead-lettered with that reason instead of cycling forever.
//! - **Delayed tasks** (countdowns, ETAs, retry back-off) wait in the sorted set; a Lua script moves due
//!   ones to the stream atomically, so any number of workers may run it at once without duplicates.
//! - **Requeue and dead-letter** are Lua scripts too: they act only on entries still pending, so a
//!   delivery whose lease was lost can never be duplicated by its late settlement.
//! - **Outages**: every operation has a timeout; connection errors and passing server states (`LOADING`
//!   after a restart, `MASTERDOWN`/`READONLY`/`TRYAGAIN` during a failover, …) are transient
//!   `BrokerError`s, so `delay` returns an error instead of hanging and workers reconnect with back-off.
//! - **Consumer hygiene**: a worker that stops cleanly removes its consumer from the group; consumers
//!   left by killed workers are deleted once idle for ten visibility timeouts with nothing pending.
//! - **Redis Cluster** (`redis+cluster://a:6379;redis+cluster://b:6379`): a queue lives on its hash
//!   tag's slot; publishes are split per queue, and each consumer reads every queue from its slot's
//!   master, following `MOVED` and failovers. Replication is asynchronous: with
//!   [`min_replicas`](RedisBrokerBuilder::min_replicas) a publish is confirmed only once a replica
//!   holds it.
//! - **Sentinel** (`redis+sentinel://sentinel:26379/<master name>;redis+sentinel://…`): commands go
//!   to the master the sentinels name, asked again when it dies or is demoted.
//!
//! Priorities are not supported by this broker (messages of one queue are FIFO); use separate queues.
//!
//! The crate also holds [`RedisResultBackend`], a result backend for any broker.
//! Passwords never appear in errors, logs or `Debug` output.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod acks;
mod batching;
mod bounded;
mod celery_results;
mod client_options;
mod config;
mod consumer;
mod coordination;
mod error;
mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod kombu;
mod publish;
mod readers;
mod reply;
mod result_listener;
mod result_writes;
mod results;
mod scripts;
mod sentinel;
mod server;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use celeriac_core::{
    Broker, BrokerError, Capabilities, ConsumeOptions, DeadLetter, DeliveryStream, Outgoing,
    QueueStats, RedactedUrl,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::server::{Conn, Server};

pub use crate::celery_results::{CeleryResultBackend, CeleryResultBackendBuilder};
use crate::config::Settings;
pub use crate::coordination::{RedisCoordination, RedisCoordinationBuilder};
use crate::error::bounded;
use crate::keys::QueueKeys;
pub use crate::kombu::{KombuBroker, KombuBrokerBuilder};
pub use crate::results::{RedisResultBackend, RedisResultBackendBuilder};
use crate::scripts::SCRIPTS;

/// A [`Broker`] on Redis (5.0+; 6.2+ for lease takeover). Cheap to clone.
#[derive(Clone)]
pub struct RedisBroker {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    server: Server,
    conn: Conn,
    url: RedactedUrl,
    settings: Settings,
    /// Consumers whose stream was dropped, to remove from their groups once a worker stopped.
    stopped: std::sync::Mutex<Vec<consumer::Stopped>>,
    /// The event bus's server and connection, made when first asked for: a batch of events (tens
    /// of kilobytes) on `conn` would hold up the queue's commands behind it.
    events_conn: tokio::sync::OnceCell<(redis::Client, ConnectionManager)>,
    /// Requeues of deliveries dropped unsettled, awaited when the worker says it stopped.
    requeues: tokio_util::task::TaskTracker,
}

/// Configures a [`RedisBroker`].
///
/// ```no_run
/// use std::time::Duration;
/// use celeriac_redis::RedisBroker;
///
/// # async fn run() -> Result<(), celeriac::BrokerError> {
/// let broker = RedisBroker::builder("redis://:secret@127.0.0.1:6379/0")
///     .visibility_timeout(Duration::from_secs(60))
///     .max_deliveries(10)
///     .operation_timeout(Duration::from_secs(2))
///     .connect()
///     .await?;
/// assert_eq!(celeriac::Broker::redacted_url(&broker), "redis://:***@127.0.0.1:6379/0");
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct RedisBrokerBuilder {
    url: RedactedUrl,
    settings: Settings,
}

impl RedisBrokerBuilder {
    /// How long a delivery may go without a lease extension before other workers take it over
    /// (default 30 s). Leases are extended every third of it while a task runs, so this bounds how
    /// late a crashed worker's tasks are redelivered, not how long a task may run.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.settings.visibility_timeout = timeout.max(Duration::from_millis(300));
        self
    }

    /// Deliveries without an ack after which a message is dead-lettered as poison (default 5).
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.settings.max_deliveries = max.max(1);
        self
    }

    /// Timeout of each Redis operation (default 5 s): `delay` during an outage fails after this.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.settings.operation_timeout = timeout;
        self
    }

    /// Prefix of every key (default `celeriac`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.key_prefix = prefix.into();
        self
    }

    /// Also trusts the CA certificates in `pem` (one or more, PEM) for `rediss://` URLs, besides the
    /// system's roots: for a Redis whose certificate a private CA signed. The server's certificate
    /// must still match the URL's host name. Needs the `tls` feature (on by default).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read_to_string("/etc/redis/ca.pem")?;
    /// let broker = celeriac_redis::RedisBroker::builder("rediss://:secret@redis.internal:6380/0")
    ///     .tls_root_certificates(ca)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_root_certificates(mut self, pem: impl Into<String>) -> Self {
        self.settings.tls_roots_pem = Some(pem.into());
        self
    }

    /// Makes every publish wait until `replicas` replicas of the queue's master hold the message
    /// (Redis `WAIT`), for at most `timeout`; a publish that fewer confirmed returns
    /// [`BrokerError::Unavailable`]. Redis replicates asynchronously: without this, a message that
    /// `publish` confirmed can be lost if its master dies before a replica copied it and the
    /// replica is promoted (see the reliability guide). Off by default.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), celeriac::BrokerError> {
    /// use std::time::Duration;
    /// let broker = celeriac_redis::RedisBroker::builder(
    ///     "redis+cluster://10.0.0.1:6379;redis+cluster://10.0.0.2:6379",
    /// )
    /// .min_replicas(1, Duration::from_millis(500))
    /// .connect()
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub fn min_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.settings.min_replicas =
            (replicas > 0).then_some(publish::MinReplicas { replicas, timeout });
        self
    }

    /// Connects. Fails if the URL is invalid or the server cannot be reached within the operation
    /// timeout.
    pub async fn connect(self) -> Result<RedisBroker, BrokerError> {
        let server = Server::open(&self.url, self.settings.tls_roots_pem.as_deref())?;
        let conn = server
            .connect_or_error(&self.url, self.settings.operation_timeout)
            .await?;
        tracing::debug!(url = %self.url.redacted(), cluster = server.is_cluster(), "connected to redis");
        Ok(RedisBroker {
            inner: Arc::new(Inner {
                server,
                conn,
                url: self.url,
                settings: self.settings,
                stopped: std::sync::Mutex::default(),
                events_conn: tokio::sync::OnceCell::new(),
                requeues: tokio_util::task::TaskTracker::new(),
            }),
        })
    }
}

/// The client for `url`, trusting the roots in `tls_roots_pem` (PEM) besides the system's.
pub(crate) fn client_for(
    url: &RedactedUrl,
    tls_roots_pem: Option<&str>,
) -> Result<redis::Client, BrokerError> {
    let invalid = |error: redis::RedisError| {
        BrokerError::Invalid(format!(
            "invalid redis URL {}: {}",
            url.redacted(),
            url.scrub(&error.to_string())
        ))
    };
    match tls_roots_pem {
        None => redis::Client::open(url.secret()).map_err(invalid),
        #[cfg(feature = "tls")]
        Some(pem) => redis::Client::build_with_tls(
            url.secret(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.as_bytes().to_vec()),
            },
        )
        .map_err(invalid),
        #[cfg(not(feature = "tls"))]
        Some(_) => Err(BrokerError::Invalid(
            "tls_root_certificates needs celeriac-redis's `tls` feature".to_owned(),
        )),
    }
}

/// A connection manager that reconnects on its own, with every response bounded by `response_timeout`.
/// Errors name `url` redacted, whatever the client's own message quotes.
pub(crate) async fn manager(
    client: &redis::Client,
    url: &RedactedUrl,
    response_timeout: Duration,
) -> Result<ConnectionManager, celeriac_core::BoxError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(response_timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    let connect = ConnectionManager::new_with_config(client.clone(), config);
    match tokio::time::timeout(response_timeout, connect).await {
        Ok(Ok(manager)) => Ok(manager),
        Ok(Err(error)) => Err(url.scrub(&error.to_string()).into()),
        Err(_) => Err(format!("no answer within {response_timeout:?}").into()),
    }
}

impl RedisBroker {
    /// What every Redis broker supports: delays of any length, dead letters, statistics, FIFO
    /// order. Not priorities: a message that asks for one is refused with
    /// [`BrokerError::Unsupported`] rather than sent without it (Redis streams have one order).
    pub const CAPABILITIES: Capabilities = Capabilities::none()
        .delays(None)
        .dead_letters()
        .stats()
        .fifo();

    /// Connects with default settings. `url` is `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://…` for TLS (feature `tls`, on by default); for a Redis Cluster, some of its nodes
    /// `;`-separated: `redis+cluster://[:password@]host:port;redis+cluster://…` (or
    /// `rediss+cluster://`); behind Sentinel, the sentinels, the first naming the master (and
    /// database): `redis+sentinel://[:password@]host:26379/<master name>[/db];redis+sentinel://…`.
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a broker for `url`.
    pub fn builder(url: &str) -> RedisBrokerBuilder {
        RedisBrokerBuilder {
            url: RedactedUrl::new(url),
            settings: Settings::default(),
        }
    }

    /// A coordination store on this broker's Redis, under its key prefix, sharing its connection:
    /// what an app built on this broker uses for unique tasks unless given another.
    pub fn coordination(&self) -> RedisCoordination {
        RedisCoordination::new(
            self.inner.conn(),
            self.inner.url.clone(),
            self.inner.settings.key_prefix.clone(),
            self.inner.settings.operation_timeout,
        )
    }

    fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(&self.inner.settings.key_prefix, queue)
    }
}

impl Inner {
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The broker's Redis, for connections of a consumer's own.
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }

    /// Where requeues of dropped deliveries run, so that a stopping worker can wait for them.
    pub(crate) fn requeues(&self) -> &tokio_util::task::TaskTracker {
        &self.requeues
    }

    pub(crate) fn stopped(&self) -> std::sync::MutexGuard<'_, Vec<consumer::Stopped>> {
        self.stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn epoch_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

#[async_trait]
impl Broker for RedisBroker {
    fn system(&self) -> &'static str {
        "redis"
    }

    fn redacted_url(&self) -> String {
        self.inner.url.redacted().to_owned()
    }

    async fn publish(&self, message: Outgoing) -> Result<(), BrokerError> {
        self.publish_batch(vec![message]).await
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    async fn event_bus(&self) -> Result<Option<Arc<dyn celeriac_core::EventBus>>, BrokerError> {
        let inner = &self.inner;
        let (client, conn) = inner
            .events_conn
            .get_or_try_init(|| {
                inner
                    .server
                    .pubsub_node(&inner.url, inner.settings.operation_timeout)
            })
            .await
            .map_err(|source| BrokerError::Connect {
                url: inner.url.redacted().to_owned(),
                source,
            })?;
        let bus = events::RedisEventBus::new(
            client.clone(),
            conn.clone(),
            &self.inner.settings.key_prefix,
            self.inner.settings.operation_timeout,
        );
        Ok(Some(Arc::new(bus)))
    }

    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
        publish::publish(&self.inner, messages).await
    }

    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        let keys = queues
            .iter()
            .map(|queue| self.keys(queue))
            .collect::<Vec<_>>();
        let conn = self
            .inner
            .server
            .connect_or_error(&self.inner.url, self.inner.settings.operation_timeout)
            .await?;
        consumer::start(self.inner.clone(), conn, keys, options).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let keys = self.keys(queue);
        let mut conn = self.inner.conn();
        let mut invocation = SCRIPTS.stats.key(&keys.ready);
        invocation
            .key(&keys.delayed)
            .key(&keys.dead)
            .arg(&self.inner.settings.group);
        let (ready, delayed, unacked, dead_lettered): (u64, u64, u64, u64) = bounded(
            "stats",
            self.inner.settings.operation_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let mut stats = QueueStats::default();
        stats.ready = ready;
        stats.delayed = delayed;
        stats.unacked = unacked;
        stats.dead_lettered = dead_lettered;
        Ok(stats)
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let keys = self.keys(queue);
        let mut conn = self.inner.conn();
        let entries: redis::streams::StreamRangeReply = bounded(
            "dead_letters",
            self.inner.settings.operation_timeout,
            redis::cmd("XRANGE")
                .arg(&keys.dead)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut conn),
        )
        .await?;
        Ok(entries
            .ids
            .into_iter()
            .map(|entry| {
                let field = |name: &str| -> Vec<u8> {
                    entry
                        .map
                        .get(name)
                        .and_then(|value| redis::from_redis_value::<Vec<u8>>(value.clone()).ok())
                        .unwrap_or_default()
                };
                let at_ms: u64 = String::from_utf8_lossy(&field("at")).parse().unwrap_or(0);
                DeadLetter::new(
                    queue,
                    field("p").into(),
                    String::from_utf8_lossy(&field("reason")).into_owned(),
                    UNIX_EPOCH + Duration::from_millis(at_ms),
                )
            })
            .collect())
    }

    async fn requeue_dead_letters(&self, queue: &str, limit: usize) -> Result<u64, BrokerError> {
        // Each script call moves a bounded batch, so Redis never blocks for long.
        const BATCH: usize = 500;
        let keys = self.keys(queue);
        let mut conn = self.inner.conn();
        let mut moved = 0_u64;
        let mut left = limit;
        while left > 0 {
            let batch = left.min(BATCH);
            let mut invocation = SCRIPTS.requeue_dead.key(&keys.dead);
            invocation.key(&keys.ready).arg(batch);
            let (this_batch, seen): (u64, u64) = bounded(
                "requeue_dead_letters",
                self.inner.settings.operation_timeout,
                invocation.invoke_async(&mut conn),
            )
            .await?;
            moved += this_batch;
            left -= batch;
            if seen < batch as u64 {
                break;
            }
        }
        Ok(moved)
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let keys = self.keys(queue);
        let mut conn = self.inner.conn();
        let mut invocation = SCRIPTS.purge.key(&keys.ready);
        invocation
            .key(&keys.delayed)
            .arg(&self.inner.settings.group);
        bounded(
            "purge",
            self.inner.settings.operation_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        let keys = self.keys(queue);
        let mut conn = self.inner.conn();
        let mut both = redis::pipe();
        both.atomic()
            .cmd("XLEN")
            .arg(&keys.dead)
            .cmd("DEL")
            .arg(&keys.dead)
            .ignore();
        let (purged,): (u64,) = bounded(
            "purge_dead_letters",
            self.inner.settings.operation_timeout,
            both.query_async(&mut conn),
        )
        .await?;
        Ok(purged)
    }

    async fn consumers_stopped(&self) -> Result<(), BrokerError> {
        // Deliveries the worker dropped unsettled (its prefetch) go back before it exits, rather
        // than waiting out their visibility timeout.
        let requeues = &self.inner.requeues;
        requeues.close();
        if tokio::time::timeout(self.inner.settings.operation_timeout, requeues.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "requeueing dropped deliveries is slow; their leases will lapse instead"
            );
        }
        requeues.reopen();
        let stopped = std::mem::take(&mut *self.inner.stopped());
        let mut outcome = Ok(());
        for consumer in stopped {
            // Every consumer is tried; the first failure is reported.
            let retired = consumer::retire(
                &self.inner,
                &consumer.name,
                &consumer.keys,
                consumer.retire_mode(),
            )
            .await;
            outcome = outcome.and(retired);
        }
        outcome
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &self.inner.url)
            .field("settings", &self.inner.settings)
            .finish()
    }
}
