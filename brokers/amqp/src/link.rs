//! One connection to RabbitMQ with its publishing channels (publisher confirms on), re-established on
//! demand after a connection loss, and the queues declared on it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celeriac_core::{BoxError, BrokerError};
use futures::future::try_join_all;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use celeriac_core::RedactedUrl;

use crate::config::{DEFAULT_FRAME_MAX, MIN_FRAME_MAX, Settings};
use crate::delayed;
use crate::error::{bounded, from_lapin};
use crate::topology::{self, dead_queue, wait_queue};
use crate::transport;

/// Header carrying how many deliveries of a message ended without an ack (poison detection).
pub(crate) const DELIVERIES_HEADER: &str = "x-celeriac-deliveries";
/// Header carrying why a message was dead-lettered.
pub(crate) const REASON_HEADER: &str = "x-celeriac-reason";
/// Header carrying when a message was dead-lettered (ms since the Unix epoch).
pub(crate) const DEAD_AT_HEADER: &str = "x-celeriac-dead-lettered-at";

/// A batch of at most this many messages stays on one publishing channel, in order.
const CHUNK_MIN: usize = 64;

/// A message to publish on the publishing channel.
pub(crate) struct Publication<'a> {
    /// The exchange it goes to: `""` (the default exchange) for a queue named by `queue`.
    pub(crate) exchange: &'a str,
    /// The routing key: the queue's name on the default exchange.
    pub(crate) queue: &'a str,
    pub(crate) payload: &'a [u8],
    /// Its properties; it is sent persistent whatever they say.
    pub(crate) properties: BasicProperties,
}

impl<'a> Publication<'a> {
    /// `payload` for `queue` with `headers` (none when empty).
    pub(crate) fn with_headers(queue: &'a str, payload: &'a [u8], headers: FieldTable) -> Self {
        let properties = BasicProperties::default();
        let properties = if headers.inner().is_empty() {
            properties
        } else {
            properties.with_headers(headers)
        };
        Self {
            exchange: "",
            queue,
            payload,
            properties,
        }
    }
}

/// Where a message is published: an exchange and a routing key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route {
    /// `""` for the default exchange, which routes by queue name.
    pub(crate) exchange: &'static str,
    pub(crate) key: String,
}

impl Route {
    /// Straight to the queue `queue`.
    fn queue(queue: String) -> Self {
        Self {
            exchange: "",
            key: queue,
        }
    }
}

/// A live connection and what was declared on it.
pub(crate) struct Link {
    pub(crate) connection: Connection,
    /// Publishing channels (confirms on); the first one also declares queues.
    publishers: Vec<Channel>,
    /// Which publishing channel the next publication takes.
    next_publisher: AtomicUsize,
    declared: Mutex<HashSet<String>>,
}

impl Link {
    /// The channel that declares queues.
    pub(crate) fn declarer(&self) -> &Channel {
        &self.publishers[0]
    }

    fn connected(&self) -> bool {
        self.connection.status().connected()
            && self
                .publishers
                .iter()
                .all(|channel| channel.status().connected())
    }

    /// The publishing channel for the next publication, in turn.
    fn publisher(&self) -> &Channel {
        let turn = self.next_publisher.fetch_add(1, Ordering::Relaxed);
        &self.publishers[turn % self.publishers.len()]
    }
}

/// The broker's connection state, shared by its clones, consumers and acknowledgers.
pub(crate) struct Shared {
    /// The URL: one node's, or the nodes of a cluster separated by `;`.
    pub(crate) url: RedactedUrl,
    /// The nodes, in the URL's order: a connection goes to the one that answered last, and on to
    /// the next when it does not (failover).
    nodes: Vec<RedactedUrl>,
    /// Which node to try first.
    preferred: AtomicUsize,
    pub(crate) settings: Settings,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    /// Wait queues this process declared, per queue: what `stats` and `purge` can see.
    waits: Mutex<HashMap<String, HashSet<u64>>>,
    /// Deliveries handed out by this process and not settled yet, per queue.
    unacked: Mutex<HashMap<String, u64>>,
    /// Which shard the next immediate message goes to.
    next_shard: AtomicUsize,
    /// The event bus, on a connection of its own (made on first use).
    pub(crate) event_bus: std::sync::OnceLock<Arc<crate::events::AmqpEventBus>>,
    /// Consumers' own settlements going on (a redelivery's counted copy or dead letter, then
    /// its original's ack): a stopping worker waits for them.
    pub(crate) settlements: tokio_util::task::TaskTracker,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn epoch_millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

impl Shared {
    pub(crate) fn new(url: RedactedUrl, settings: Settings) -> Self {
        Self {
            nodes: url.nodes(),
            preferred: AtomicUsize::new(0),
            url,
            settings,
            link: tokio::sync::Mutex::new(None),
            waits: Mutex::new(HashMap::new()),
            unacked: Mutex::new(HashMap::new()),
            next_shard: AtomicUsize::new(0),
            event_bus: std::sync::OnceLock::new(),
            settlements: tokio_util::task::TaskTracker::new(),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.settings.operation_timeout
    }

    /// `node`'s URL parsed, with the frame size settled (builder, else URL, else our default).
    fn uri(&self, node: &RedactedUrl) -> Result<AMQPUri, BrokerError> {
        // The parser's messages can quote the whole URL, password included: never pass them on.
        let mut uri: AMQPUri = node.secret().parse().map_err(|_| BrokerError::Connect {
            url: node.redacted().to_owned(),
            source: "not a valid amqp:// or amqps:// URL".into(),
        })?;
        if let Some(heartbeat) = self.settings.heartbeat {
            uri.query.heartbeat = Some(heartbeat);
        }
        uri.query.frame_max = Some(
            self.settings
                .frame_max
                .or(uri.query.frame_max)
                .unwrap_or(DEFAULT_FRAME_MAX)
                .max(MIN_FRAME_MAX),
        );
        Ok(uri)
    }

    /// A new connection to the first node that answers within `timeout`, starting with the one
    /// that answered last; the error of the last node tried if none does.
    async fn connect(&self, timeout: Duration) -> Result<Connection, BrokerError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut failure = None;
        for offset in 0..self.nodes.len() {
            let index = (first + offset) % self.nodes.len();
            let node = &self.nodes[index];
            match self.connect_to(node, timeout).await {
                Ok(connection) => {
                    if index != first {
                        tracing::warn!(node = %node.redacted(), "connected to another rabbitmq node (failover)");
                        self.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok(connection);
                }
                Err(error) => {
                    if self.nodes.len() > 1 {
                        tracing::warn!(node = %node.redacted(), error = %celeriac_core::Report(&error), "cannot connect to a rabbitmq node; trying the next");
                    }
                    failure = Some(error);
                }
            }
        }
        Err(failure.unwrap_or_else(|| BrokerError::Connect {
            url: self.url.redacted().to_owned(),
            source: "the URL names no node".into(),
        }))
    }

    /// A new connection to `node`, within `timeout`; TLS for `amqps://`, trusting the configured
    /// roots too.
    async fn connect_to(
        &self,
        node: &RedactedUrl,
        timeout: Duration,
    ) -> Result<Connection, BrokerError> {
        let failed = |source: BoxError| BrokerError::Connect {
            url: node.redacted().to_owned(),
            source,
        };
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: self.settings.tls_roots_pem.clone(),
        };
        let connect = transport::connect(self.uri(node)?, tls, ConnectionProperties::default());
        match tokio::time::timeout(timeout, connect).await {
            // lapin's messages are passed on scrubbed: we do not control their wording.
            Ok(result) => result.map_err(|error| failed(node.scrub(&error.to_string()).into())),
            Err(_) => Err(failed(format!("no answer within {timeout:?}").into())),
        }
    }

    /// The current link, connecting (again) if there is none or it was lost.
    pub(crate) async fn link(&self) -> Result<Arc<Link>, BrokerError> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref()
            && link.connected()
        {
            return Ok(link.clone());
        }
        let timeout = self.timeout();
        let connection = self.connect(timeout).await?;
        let mut publishers = Vec::with_capacity(self.settings.publisher_channels);
        for _ in 0..self.settings.publisher_channels {
            let publisher = bounded("open channel", timeout, connection.create_channel()).await?;
            bounded(
                "enable publisher confirms",
                timeout,
                publisher.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
            publishers.push(publisher);
        }
        tracing::debug!(url = %self.nodes[self.preferred.load(Ordering::Relaxed)], "connected to rabbitmq");
        let link = Arc::new(Link {
            connection,
            publishers,
            next_publisher: AtomicUsize::new(0),
            declared: Mutex::new(HashSet::new()),
        });
        *current = Some(link.clone());
        Ok(link)
    }

    /// Declares `queue` (all its shards) and its dead-letter queue on `channel` (once per link).
    pub(crate) async fn declare(
        &self,
        link: &Link,
        channel: &Channel,
        queue: &str,
    ) -> Result<(), BrokerError> {
        if lock(&link.declared).contains(queue) {
            return Ok(());
        }
        let timeout = self.timeout();
        for shard in topology::shards(queue, self.settings.shards) {
            let main = topology::main_arguments(&self.settings);
            bounded(
                "declare queue",
                timeout,
                channel.queue_declare(shard.as_str().into(), QueueDeclareOptions::durable(), main),
            )
            .await?;
        }
        if self.settings.celery_format {
            // Celery's topology: a direct exchange of the queue's name, bound with its name (what
            // a producer routing through the exchange, as `task_routes` may, relies on).
            let options = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            bounded(
                "declare Celery's exchange",
                timeout,
                channel.exchange_declare(
                    queue.into(),
                    ExchangeKind::Direct,
                    options,
                    FieldTable::default(),
                ),
            )
            .await?;
            bounded(
                "bind to Celery's exchange",
                timeout,
                channel.queue_bind(
                    queue.into(),
                    queue.into(),
                    queue.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        if self.settings.native_delays() {
            self.declare_delayed_delivery(link, channel).await?;
            delayed::bind_queue(channel, queue, timeout).await?;
        }
        bounded(
            "declare dead-letter queue",
            timeout,
            channel.queue_declare(
                dead_queue(queue).into(),
                QueueDeclareOptions::durable(),
                topology::dead_arguments(&self.settings),
            ),
        )
        .await?;
        lock(&link.declared).insert(queue.to_owned());
        Ok(())
    }

    /// Declares Celery's delayed-delivery levels on `channel` (once per link).
    async fn declare_delayed_delivery(
        &self,
        link: &Link,
        channel: &Channel,
    ) -> Result<(), BrokerError> {
        if lock(&link.declared).contains(delayed::DELIVERY_EXCHANGE) {
            return Ok(());
        }
        delayed::declare_levels(channel, self.timeout()).await?;
        lock(&link.declared).insert(delayed::DELIVERY_EXCHANGE.to_owned());
        Ok(())
    }

    /// Declares the wait queue of `queue` for `millis` (once per link) and returns its name.
    async fn declare_wait(
        &self,
        link: &Link,
        queue: &str,
        millis: u64,
    ) -> Result<String, BrokerError> {
        let name = wait_queue(queue, millis);
        if !lock(&link.declared).contains(&name) {
            bounded(
                "declare wait queue",
                self.timeout(),
                link.declarer().queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions::durable(),
                    topology::wait_arguments(queue, millis),
                ),
            )
            .await?;
            lock(&link.declared).insert(name.clone());
            lock(&self.waits)
                .entry(queue.to_owned())
                .or_default()
                .insert(millis);
        }
        Ok(name)
    }

    /// The wait-queue delays of `queue` known to this process.
    pub(crate) fn known_waits(&self, queue: &str) -> Vec<u64> {
        lock(&self.waits)
            .get(queue)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default()
    }

    pub(crate) fn unacked(&self, queue: &str) -> u64 {
        lock(&self.unacked).get(queue).copied().unwrap_or(0)
    }

    pub(crate) fn add_unacked(&self, queue: &str, delta: i64) {
        let mut unacked = lock(&self.unacked);
        let count = unacked.entry(queue.to_owned()).or_default();
        *count = count.saturating_add_signed(delta);
    }

    /// Where a message for `queue` goes: the queue itself (or its next shard), or, delayed, the
    /// wait queue for its delay (which dead-letters into the queue itself) — or Celery's native
    /// delayed delivery, for Celery's format on quorum queues.
    pub(crate) async fn route(
        &self,
        link: &Link,
        queue: &str,
        not_before: Option<SystemTime>,
    ) -> Result<Route, BrokerError> {
        self.declare(link, link.declarer(), queue).await?;
        let delay = not_before.and_then(|at| at.duration_since(SystemTime::now()).ok());
        let Some(delay) = delay.filter(|delay| *delay >= Duration::from_millis(5)) else {
            return Ok(Route::queue(self.next_shard(queue)));
        };
        if self.settings.native_delays()
            && let Some(key) = delayed::routing_key(delay, queue)
        {
            return Ok(Route {
                exchange: delayed::FIRST_EXCHANGE,
                key,
            });
        }
        let wait = self
            .declare_wait(link, queue, topology::quantize(delay))
            .await?;
        Ok(Route::queue(wait))
    }

    /// The shard of `queue` the next message goes to, in turn.
    fn next_shard(&self, queue: &str) -> String {
        let shards = self.settings.shards;
        if shards <= 1 {
            return queue.to_owned();
        }
        let turn = self.next_shard.fetch_add(1, Ordering::Relaxed);
        topology::shard(queue, turn % shards)
    }

    /// Publishes persistent messages and waits until the broker confirmed every one. Publishes are
    /// pipelined: all are sent before the first confirm is awaited.
    pub(crate) async fn publish(
        &self,
        link: &Link,
        mut publications: Vec<Publication<'_>>,
    ) -> Result<(), BrokerError> {
        // A large batch is cut into contiguous chunks, one per publishing channel, sent side by side.
        let chunk = publications
            .len()
            .div_ceil(link.publishers.len())
            .max(CHUNK_MIN);
        let mut chunks = Vec::with_capacity(link.publishers.len());
        while publications.len() > chunk {
            let rest = publications.split_off(chunk);
            chunks.push(std::mem::replace(&mut publications, rest));
        }
        chunks.push(publications);
        let sends = chunks
            .into_iter()
            .map(|chunk| self.publish_on(link.publisher(), chunk));
        let published = try_join_all(sends).await.map(|_| ());
        if matches!(published, Err(BrokerError::Rejected { .. })) {
            self.renew_publishers(link).await;
        }
        published
    }

    /// After a nack, publishes go out on a new link: a channel can keep nacking every publish to a
    /// quorum queue whose leader changed under it (seen on RabbitMQ 3.10 when a node dies), which
    /// no retry on the same channel gets past. The old connection stays for as long as the
    /// consumers on it run.
    async fn renew_publishers(&self, nacked: &Link) {
        let mut current = self.link.lock().await;
        if current
            .as_ref()
            .is_some_and(|link| std::ptr::eq(Arc::as_ptr(link), nacked))
        {
            tracing::warn!("rabbitmq nacked a publish; publishing on a new connection");
            *current = None;
        }
    }

    /// Publishes `publications` in order on `publisher`, then waits for every confirm.
    async fn publish_on(
        &self,
        publisher: &Channel,
        publications: Vec<Publication<'_>>,
    ) -> Result<(), BrokerError> {
        let timeout = self.timeout();
        let mut confirms = Vec::with_capacity(publications.len());
        for publication in publications {
            let properties = publication.properties.with_delivery_mode(2);
            let confirm = bounded(
                "publish",
                timeout,
                publisher.basic_publish(
                    ShortString::from(publication.exchange),
                    ShortString::from(publication.queue),
                    BasicPublishOptions::default(),
                    publication.payload,
                    properties,
                ),
            )
            .await?;
            confirms.push(async move {
                match tokio::time::timeout(timeout, confirm).await {
                    Ok(Ok(Confirmation::Nack(_))) => Err(BrokerError::Rejected {
                        reason: "the broker nacked the message (publisher confirm)".into(),
                    }),
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(from_lapin("publish confirm", error)),
                    Err(_) => Err(BrokerError::Timeout {
                        op: "publish confirm",
                        after: timeout,
                    }),
                }
            });
        }
        try_join_all(confirms).await.map(|_| ())
    }

    /// Publishes `payload` to the dead-letter queue of `queue` with `reason`, confirmed.
    pub(crate) async fn publish_dead_letter(
        &self,
        queue: &str,
        payload: &[u8],
        reason: &str,
    ) -> Result<(), BrokerError> {
        let link = self.link().await?;
        self.declare(&link, link.declarer(), queue).await?;
        let mut headers = FieldTable::default();
        headers.insert(
            REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            DEAD_AT_HEADER.into(),
            AMQPValue::LongLongInt(epoch_millis(SystemTime::now())),
        );
        let dead = dead_queue(queue);
        self.publish(
            &link,
            vec![Publication::with_headers(&dead, payload, headers)],
        )
        .await
    }

    /// Publishes `payload` back to `queue` with its own `properties` (a Celery message keeps its
    /// protocol's headers), counting one more delivery that ended without an ack.
    pub(crate) async fn publish_recounted(
        &self,
        queue: &str,
        payload: &[u8],
        deliveries: u32,
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let link = self.link().await?;
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            DELIVERIES_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(deliveries)),
        );
        let publication = Publication {
            exchange: "",
            queue,
            payload,
            properties: properties.with_headers(headers),
        };
        self.publish(&link, vec![publication]).await
    }
}

/// Reads an integer header.
pub(crate) fn int_header(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    match headers?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Reads a text header.
pub(crate) fn text_header(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}
