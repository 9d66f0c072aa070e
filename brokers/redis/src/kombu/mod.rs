//! A broker on kombu's Redis layout, the one Python Celery's Redis transport uses, so that Python
//! and Rust workers share queues: see [`KombuBroker`].

mod celery_events;
mod consume;
mod envelope;
mod layout;
mod pidbox;
mod restore;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use celeriac_core::{
    Broker, BrokerError, Capabilities, ConsumeOptions, DeadLetter, DeliveryStream, Outgoing,
    QueueStats, RedactedUrl,
};
use redis::Script;
use redis::aio::{ConnectionManager, MultiplexedConnection};

use self::layout::{Layout, read_dead_record};
use crate::error::bounded;

/// A [`Broker`] on the Redis layout of Python Celery's transport (kombu), so that Celery's Python
/// workers and celeriac's Rust workers share queues: either runs what the other's producers send,
/// and each restores what the other left unacknowledged when it died. Cheap to clone.
///
/// An app built with [`AppBuilder::celery_compat`] on a `redis://` URL uses it.
///
/// ```no_run
/// use std::time::Duration;
/// use celeriac_redis::KombuBroker;
///
/// # async fn run() -> Result<(), celeriac::BrokerError> {
/// // For an app built with `.broker(broker).celery_compat()`:
/// let broker = KombuBroker::builder("redis://127.0.0.1:6379/0")
///     .global_keyprefix("shop:")
///     .visibility_timeout(Duration::from_secs(3600))
///     .connect()
///     .await?;
/// # let _ = broker; Ok(()) }
/// ```
///
/// # The layout, and what celeriac adds to it
///
/// - A queue is a list named after it (with `global_keyprefix` in front); producers `LPUSH` kombu's
///   JSON envelope onto it. Messages of priority 3–5, 6–8 and 9 wait in the lists `<queue>\x06\x163`,
///   `…6` and `…9`, served after the queue's own list, as kombu serves them: **on Redis, a lower
///   number is served first**. celeriac's producers do not set priorities on this broker (they are
///   refused); Python's are honoured in kombu's order.
/// - A message taken is recorded in the hash `unacked` and the sorted set `unacked_index`, as
///   kombu's do — but in one script with taking it from its list, so there is no moment when a
///   worker that dies holds it unrecorded (unlike kombu, which pops first and records after). Only
///   the first message after an idle wait (taken by `BRPOP`) has that moment, as kombu's do.
/// - Acknowledging deletes both entries. A message held longer than the visibility timeout
///   (default 3600 s, kombu's; **set it the same in every participant**) is put back by a restore
///   sweep, which any worker (celeriac's every 10 s, Python's about every 100 s) runs under the
///   lock `unacked_mutex`. celeriac's workers renew the time of the messages they hold every third
///   of the timeout, so a long task or a task held for its ETA is not run twice.
/// - Delays: none in the broker. A task's ETA travels in the message and the worker holds it until
///   it is due, as Celery's workers do ([`Capabilities::delays`] is off).
/// - Dead letters, which kombu lacks, go to the list `_celeriac.dead.<queue>`; Python workers
///   ignore it.
/// - A message that is not Celery's (celeriac's own envelope, or any bytes) travels in kombu's
///   envelope with the content type `application/x-celeriac`; Python workers refuse it.
///
/// [`AppBuilder::celery_compat`]: https://docs.rs/celeriac/latest/celeriac/struct.AppBuilder.html#method.celery_compat
#[derive(Clone)]
pub struct KombuBroker {
    inner: Arc<KombuInner>,
}

struct KombuInner {
    client: redis::Client,
    conn: ConnectionManager,
    url: RedactedUrl,
    layout: Layout,
    settings: KombuSettings,
    sweeping: AtomicBool,
    /// The connection of celeriac's own events and remote control, made when first asked for.
    events_conn: tokio::sync::OnceCell<ConnectionManager>,
    /// The acknowledgements waiting to go out together, started by the first.
    acks: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Ack>>,
}

/// One acknowledgement, and who waits for it.
struct Ack {
    tag: String,
    done: tokio::sync::oneshot::Sender<Result<(), BrokerError>>,
}

/// Most acknowledgements in one transaction.
const ACK_BATCH: usize = 1_000;

/// The most messages one publishing pipeline carries (a batch larger than this is sent in several:
/// on an error, a prefix of the batch may have been published, as `Broker::publish_batch` allows).
const PUBLISH_CHUNK: usize = 1_000;

#[derive(Clone, Debug)]
struct KombuSettings {
    visibility_timeout: Duration,
    restore_interval: Duration,
    operation_timeout: Duration,
    global_keyprefix: String,
    tls_roots_pem: Option<String>,
    /// Why the URL's options are wrong, reported by `connect`.
    invalid: Option<String>,
}

/// Configures a [`KombuBroker`].
#[derive(Debug)]
#[must_use]
pub struct KombuBrokerBuilder {
    url: RedactedUrl,
    settings: KombuSettings,
}

impl KombuBrokerBuilder {
    /// kombu's `visibility_timeout` (default 3600 s): a message unacknowledged this long is put
    /// back in its queue. Every worker and producer of the deployment must use the same.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.settings.visibility_timeout = timeout.max(Duration::from_millis(300));
        self
    }

    /// How often this process's restore sweep looks for messages held past the visibility timeout
    /// (default 10 s).
    pub fn restore_interval(mut self, interval: Duration) -> Self {
        self.settings.restore_interval = interval.max(Duration::from_millis(50));
        self
    }

    /// kombu's `global_keyprefix` transport option: prepended to every key (default none).
    pub fn global_keyprefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.global_keyprefix = prefix.into();
        self
    }

    /// Timeout of each Redis operation (default 5 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.settings.operation_timeout = timeout;
        self
    }

    /// Also trusts the CA certificates in `pem` for `rediss://` URLs (see
    /// [`RedisBrokerBuilder::tls_root_certificates`](crate::RedisBrokerBuilder::tls_root_certificates)).
    pub fn tls_root_certificates(mut self, pem: impl Into<String>) -> Self {
        self.settings.tls_roots_pem = Some(pem.into());
        self
    }

    /// Connects. Fails if the URL is invalid or the server cannot be reached within the operation
    /// timeout.
    pub async fn connect(self) -> Result<KombuBroker, BrokerError> {
        if let Some(reason) = &self.settings.invalid {
            return Err(BrokerError::Invalid(format!(
                "redis URL {}: {reason}",
                self.url.redacted()
            )));
        }
        let client = crate::client_for(&self.url, self.settings.tls_roots_pem.as_deref())?;
        let conn = crate::manager(&client, &self.url, self.settings.operation_timeout)
            .await
            .map_err(|source| BrokerError::Connect {
                url: self.url.redacted().to_owned(),
                source,
            })?;
        Ok(KombuBroker {
            inner: Arc::new(KombuInner {
                client,
                conn,
                layout: Layout::new(&self.settings.global_keyprefix),
                url: self.url,
                settings: self.settings,
                sweeping: AtomicBool::new(false),
                events_conn: tokio::sync::OnceCell::new(),
                acks: std::sync::OnceLock::new(),
            }),
        })
    }
}

impl KombuBroker {
    /// What this broker supports: dead letters, statistics, FIFO order within a queue. Not
    /// delays (the worker holds early tasks) nor priorities (see the type's documentation).
    pub const CAPABILITIES: Capabilities = Capabilities::none().dead_letters().stats().fifo();

    /// Connects with default settings to `redis://[user:password@]host[:port][/db]` (or
    /// `rediss://`).
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a broker for `url`.
    ///
    /// The URL may carry kombu's transport options `global_keyprefix` and `visibility_timeout`
    /// (seconds) as query parameters, and `layout=kombu`, which is how an app or the `celeriac`
    /// command picks this broker by URL:
    /// `redis://127.0.0.1:6379/0?layout=kombu&global_keyprefix=shop:&visibility_timeout=3600`.
    /// The builder's methods override them.
    pub fn builder(url: &str) -> KombuBrokerBuilder {
        let mut settings = KombuSettings {
            visibility_timeout: Duration::from_secs(3600),
            restore_interval: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(5),
            global_keyprefix: String::new(),
            tls_roots_pem: None,
            invalid: None,
        };
        if let Ok(parsed) = url::Url::parse(url) {
            for (name, value) in parsed.query_pairs() {
                match name.as_ref() {
                    "global_keyprefix" => settings.global_keyprefix = value.into_owned(),
                    "visibility_timeout" => match value.parse::<f64>() {
                        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 1e9 => {
                            settings.visibility_timeout =
                                Duration::from_secs_f64(seconds).max(Duration::from_millis(300));
                        }
                        _ => {
                            settings.invalid = Some(format!(
                                "visibility_timeout `{value}` is not a number of seconds"
                            ));
                        }
                    },
                    _ => {}
                }
            }
        }
        KombuBrokerBuilder {
            url: RedactedUrl::new(url),
            settings,
        }
    }
}

/// The Lua scripts of this layout.
struct Scripts {
    take: Script,
    restore: Script,
    dead_letter: Script,
    requeue_dead: Script,
    purge: Script,
    unlock: Script,
    touch: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    take: Script::new(include_str!("../scripts/kombu/take.lua")),
    restore: Script::new(include_str!("../scripts/kombu/restore.lua")),
    dead_letter: Script::new(include_str!("../scripts/kombu/dead_letter.lua")),
    requeue_dead: Script::new(include_str!("../scripts/kombu/requeue_dead.lua")),
    purge: Script::new(include_str!("../scripts/kombu/purge.lua")),
    unlock: Script::new(include_str!("../scripts/kombu/unlock.lua")),
    touch: Script::new(include_str!("../scripts/kombu/touch.lua")),
});

/// Which end of its list a restored message goes to.
#[derive(Clone, Copy, Debug)]
enum End {
    /// Served next (kombu's restores after a crash).
    Head,
    /// Served after the messages waiting (a requeue).
    Tail,
}

impl KombuInner {
    fn timeout(&self) -> Duration {
        self.settings.operation_timeout
    }

    /// A connection of its own, for `BRPOP` (which holds its connection while it waits).
    async fn blocking_connection(&self) -> Result<MultiplexedConnection, BrokerError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout()))
            .set_response_timeout(None);
        match tokio::time::timeout(
            self.timeout(),
            self.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(error)) => Err(BrokerError::Connect {
                url: self.url.redacted().to_owned(),
                source: self.url.scrub(&error.to_string()).into(),
            }),
            Err(_) => Err(BrokerError::Timeout {
                op: "connect",
                after: self.timeout(),
            }),
        }
    }

    /// Acknowledges `tag` as kombu does (`ZREM unacked_index`, `HDEL unacked`). Acks that come
    /// while a batch is on its way go out together in the next one; each caller waits for its own.
    async fn ack(&self, tag: String) -> Result<(), BrokerError> {
        let acks = self.acks.get_or_init(|| {
            let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(send_acks(
                self.conn.clone(),
                self.layout.clone(),
                self.timeout(),
                receiver,
            ));
            sender
        });
        let (done, acked) = tokio::sync::oneshot::channel();
        let gone = || BrokerError::Disconnected { op: "ack" };
        acks.send(Ack { tag, done }).map_err(|_| gone())?;
        acked.await.map_err(|_| gone())?
    }

    async fn dead_letter(&self, tag: &str, dead: &str, record: &[u8]) -> Result<(), BrokerError> {
        let mut invocation = SCRIPTS.dead_letter.key(&self.layout.unacked);
        invocation
            .key(&self.layout.unacked_index)
            .key(dead)
            .arg(tag)
            .arg(record);
        let mut conn = self.conn.clone();
        let moved: u64 = bounded(
            "dead-letter",
            self.timeout(),
            invocation.invoke_async(&mut conn),
        )
        .await?;
        if moved == 0 {
            tracing::warn!(
                tag,
                "a dead-lettered message had been restored already (held past the visibility timeout)"
            );
        }
        Ok(())
    }

    async fn list_lengths(&self, keys: &[String]) -> Result<u64, BrokerError> {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.llen(key);
        }
        let mut conn = self.conn.clone();
        let lengths: Vec<u64> =
            bounded("queue length", self.timeout(), pipe.query_async(&mut conn)).await?;
        Ok(lengths.iter().sum())
    }

    /// Unacknowledged messages whose routing key is `queue` (a scan of `unacked`).
    async fn unacked_of(&self, queue: &str) -> Result<u64, BrokerError> {
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        let mut count = 0;
        loop {
            let (next, entries): (u64, Vec<(String, Vec<u8>)>) = bounded(
                "count unacknowledged",
                self.timeout(),
                redis::cmd("HSCAN")
                    .arg(&self.layout.unacked)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn),
            )
            .await?;
            count += entries
                .iter()
                .filter(|(_, entry)| routing_key_of(entry).as_deref() == Some(queue))
                .count() as u64;
            if next == 0 {
                return Ok(count);
            }
            cursor = next;
        }
    }
}

/// Sends the acknowledgements that arrive, in batches, until every sender is gone.
async fn send_acks(
    mut conn: ConnectionManager,
    layout: Layout,
    timeout: Duration,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<Ack>,
) {
    let mut batch = Vec::with_capacity(ACK_BATCH);
    while requests.recv_many(&mut batch, ACK_BATCH).await > 0 {
        let tags: Vec<&str> = batch.iter().map(|ack| ack.tag.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrem(&layout.unacked_index, &tags)
            .hdel(&layout.unacked, &tags);
        let result = bounded::<()>("ack", timeout, pipe.query_async(&mut conn)).await;
        for ack in batch.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(crate::acks::copy(error, "redis ack failed")),
            };
            let _ = ack.done.send(outcome);
        }
    }
}

/// The routing key of an `unacked` entry (`[envelope, exchange, routing_key]`).
fn routing_key_of(entry: &[u8]) -> Option<String> {
    let (_, _, routing_key): (serde::de::IgnoredAny, serde::de::IgnoredAny, String) =
        serde_json::from_slice(entry).ok()?;
    Some(routing_key)
}

impl fmt::Debug for KombuBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KombuBroker")
            .field("url", &self.inner.url)
            .field("global_keyprefix", &self.inner.settings.global_keyprefix)
            .field(
                "visibility_timeout",
                &self.inner.settings.visibility_timeout,
            )
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Broker for KombuBroker {
    fn system(&self) -> &'static str {
        "redis"
    }

    fn redacted_url(&self) -> String {
        self.inner.url.redacted().to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    async fn publish(&self, message: Outgoing) -> Result<(), BrokerError> {
        self.publish_batch(vec![message]).await
    }

    /// Pushes every message in one transaction, a Celery message to the list of its own priority.
    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
        if messages.iter().any(|message| message.priority.is_some()) {
            return Err(BrokerError::unsupported(
                "redis",
                "priorities in kombu's layout (it serves lower numbers first)",
            ));
        }
        if messages.iter().any(|message| message.not_before.is_some()) {
            return Err(BrokerError::unsupported(
                "redis",
                "delays in kombu's layout (workers hold early tasks)",
            ));
        }
        let layout = &self.inner.layout;
        // In pipelines of a bounded size, as the native broker sends: one pipeline of a large
        // batch of Celery's messages is megabytes, allocated (and faulted in) afresh each time.
        for chunk in messages.chunks(PUBLISH_CHUNK) {
            let mut pipe = redis::pipe();
            // A batch mostly goes to one list: its name is made once.
            let mut list: Option<(&str, Option<u8>, String)> = None;
            for message in chunk {
                let (item, priority) = layout::to_list_item(&message.queue, &message.payload);
                let key = match &list {
                    Some((queue, at, key)) if *queue == message.queue && *at == priority => key,
                    _ => {
                        let key = layout.list_for(&message.queue, priority);
                        &list.insert((&message.queue, priority, key)).2
                    }
                };
                pipe.lpush(key, item.as_ref()).ignore();
            }
            let mut conn = self.inner.conn.clone();
            bounded::<()>("publish", self.inner.timeout(), pipe.query_async(&mut conn)).await?;
        }
        Ok(())
    }

    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        celeriac_core::validate_queues(queues)?;
        consume::consume(self.inner.clone(), queues, options).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let ready = self
            .inner
            .list_lengths(&self.inner.layout.lists(queue))
            .await?;
        let dead_lettered = self
            .inner
            .list_lengths(&[self.inner.layout.dead(queue)])
            .await?;
        let unacked = self.inner.unacked_of(queue).await?;
        let mut stats = QueueStats::default();
        stats.ready = ready;
        stats.unacked = unacked;
        stats.dead_lettered = dead_lettered;
        Ok(stats)
    }

    async fn len(&self, queue: &str) -> Result<u64, BrokerError> {
        self.inner
            .list_lengths(&self.inner.layout.lists(queue))
            .await
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.inner.conn.clone();
        let last = isize::try_from(limit).unwrap_or(isize::MAX);
        let mut records: Vec<Vec<u8>> = bounded(
            "read dead letters",
            self.inner.timeout(),
            redis::cmd("LRANGE")
                .arg(self.inner.layout.dead(queue))
                .arg(-last)
                .arg(-1)
                .query_async(&mut conn),
        )
        .await?;
        records.reverse();
        records
            .iter()
            .map(|record| read_dead_record(queue, record))
            .collect()
    }

    async fn requeue_dead_letters(&self, queue: &str, limit: usize) -> Result<u64, BrokerError> {
        let layout = &self.inner.layout;
        let mut invocation = SCRIPTS.requeue_dead.key(layout.dead(queue));
        invocation.key(layout.list_for(queue, None)).arg(limit);
        let mut conn = self.inner.conn.clone();
        bounded(
            "requeue dead letters",
            self.inner.timeout(),
            invocation.invoke_async(&mut conn),
        )
        .await
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let mut invocation = SCRIPTS.purge.prepare_invoke();
        for list in self.inner.layout.lists(queue) {
            invocation.key(list);
        }
        let mut conn = self.inner.conn.clone();
        bounded(
            "purge",
            self.inner.timeout(),
            invocation.invoke_async(&mut conn),
        )
        .await
    }

    /// celeriac's own worker events and remote control, on the channels
    /// `<global_keyprefix>celeriac:<topic>`; worker events also in Celery's format on
    /// `/<db>.celeryev/…`, where Flower reads them.
    async fn event_bus(&self) -> Result<Option<Arc<dyn celeriac_core::EventBus>>, BrokerError> {
        let inner = &self.inner;
        let conn = inner
            .events_conn
            .get_or_try_init(|| crate::manager(&inner.client, &inner.url, inner.timeout()))
            .await
            .map_err(|source| BrokerError::Connect {
                url: inner.url.redacted().to_owned(),
                source,
            })?;
        let inner_bus = crate::events::RedisEventBus::new(
            inner.client.clone(),
            conn.clone(),
            &format!("{}celeriac", inner.settings.global_keyprefix),
            inner.timeout(),
        );
        let db = inner.client.get_connection_info().redis_settings().db();
        let bus = celery_events::KombuEventBus {
            inner: inner_bus,
            conn: conn.clone(),
            channel_prefix: format!("{}/{db}.celeryev/", inner.settings.global_keyprefix),
            pidbox_channel: format!("{}/{db}.celery.pidbox", inner.settings.global_keyprefix),
            key_prefix: inner.settings.global_keyprefix.clone(),
            timeout: inner.timeout(),
            clock: std::sync::atomic::AtomicU64::new(0),
        };
        Ok(Some(Arc::new(bus)))
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        let invocation = SCRIPTS.purge.key(self.inner.layout.dead(queue));
        let mut conn = self.inner.conn.clone();
        bounded(
            "purge dead letters",
            self.inner.timeout(),
            invocation.invoke_async(&mut conn),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn routing_keys_are_read_from_unacked_entries() {
        let entry = br#"[{"body": "x", "properties": {}}, "", "sms"]"#;
        assert_eq!(super::routing_key_of(entry).as_deref(), Some("sms"));
        assert_eq!(super::routing_key_of(b"[1, 2]"), None);
    }
}

/// The kombu layout's parsers, for the fuzz targets (see `crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing {
    use bytes::Bytes;
    use celeriac_core::DeadLetter;

    pub(crate) fn list_item(item: Bytes) -> Bytes {
        super::layout::from_list_item(item)
    }

    pub(crate) fn dead_record(record: &[u8]) -> Option<DeadLetter> {
        super::read_dead_record("fuzz", record).ok()
    }

    pub(crate) fn unacked_entry(entry: &[u8]) -> Option<Vec<u8>> {
        let _ = super::routing_key_of(entry);
        super::layout::Restorable::from_entry(entry)
            .ok()
            .map(|restorable| restorable.message)
    }

    pub(crate) fn pidbox_request(envelope: &[u8]) -> Option<Vec<u8>> {
        super::pidbox::command_for(envelope, 1_764_500_000.0)
    }
}
