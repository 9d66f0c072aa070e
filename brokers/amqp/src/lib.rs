//! A RabbitMQ broker for [celeriac](https://docs.rs/celeriac) on [lapin] (AMQP 0-9-1).
//!
//! ```no_run
//! use celeriac::App;
//! use celeriac_amqp::AmqpBroker;
//!
//! # async fn run() -> Result<(), celeriac::Error> {
//! let broker = AmqpBroker::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let app = App::builder().broker(broker).autodiscover().build()?;
//! # let _ = app; Ok(()) }
//! ```
//!
//! # Design
//!
//! - **Durable queues, persistent messages, publisher confirms.** `delay` returns once RabbitMQ
//!   confirmed the message; a nack, a timeout or a lost connection is an error for the caller. Batches
//!   are pipelined: every message is sent before the first confirm is awaited. Publishes are spread
//!   over a few channels ([`AmqpBrokerBuilder::publisher_channels`]); a batch of at most 64
//!   messages stays on one channel, in order.
//! - **Manual acks with `basic.qos` prefetch.** A worker that dies leaves its unacked messages to
//!   RabbitMQ, which redelivers them to another worker.
//! - **Delays without plugins.** A delayed message waits in a wait queue `q.delay.<ms>` whose message
//!   TTL is its delay and which dead-letters into `q`. Delays are rounded to bound the number of wait
//!   queues (10 ms steps below 1 s, 100 ms below 10 s, 1 s below 100 s, then 0.5 %); idle wait queues
//!   delete themselves after ten minutes. A message waits at most 30 days at a time (RabbitMQ refuses
//!   TTLs over 10 years): one due later comes back early and a worker sends it back to wait.
//!   Celery's format on quorum queues uses Celery's native delayed delivery instead (see
//!   [`AmqpBrokerBuilder::queue_type`]), which Python's workers and producers share.
//! - **Hostile headers.** lapin's parser recurses through nested header tables without a limit, so
//!   the connection is read through a transport that checks each message's headers first, without
//!   recursion: headers nested deeper than 64 levels or malformed are replaced by one header with
//!   the reason, and the message is dead-lettered instead of crashing the worker.
//! - **Dead letters with reasons.** `q.dead` holds dead-lettered messages with the headers
//!   `x-celeriac-reason` and `x-celeriac-dead-lettered-at`.
//! - **Poison messages.** RabbitMQ marks a message it delivers again as redelivered. The consumer
//!   counts such deliveries in a header (it republishes the message with the count, then acks the
//!   original) and dead-letters a message once it reached `max_deliveries`.
//! - **Outages.** Every operation has a timeout. After a connection loss the next operation connects
//!   again; workers re-consume with back-off and re-declare their queues.
//! - **Sharding** (opt-in, [`AmqpBrokerBuilder::shards`]): a RabbitMQ queue runs on one core, so a
//!   celeriac queue can spread over several RabbitMQ queues, which workers all consume; order then
//!   holds only within a shard.
//! - **TLS**: `amqps://` URLs (feature `tls`, on by default: the system's OpenSSL), trusting the
//!   system's roots and any given to [`AmqpBrokerBuilder::tls_root_certificates`].
//! - **Priorities** via `x-max-priority` when [`AmqpBrokerBuilder::max_priority`] is set (it must then
//!   be set the same way everywhere the queue is declared).
//!
//! `stats` reads ready and dead-lettered counts from RabbitMQ; delayed counts cover the wait queues this
//! process declared, and unacked counts the deliveries this process holds (AMQP does not report
//! either). Passwords never appear in errors, logs or `Debug` output.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod acks;
mod celery;
mod config;
mod consumer;
mod dead;
mod delayed;
mod election;
mod error;
mod events;
mod frames;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod link;
mod rpc;
mod topology;
mod transport;
mod window;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use celeriac_core::Report;
use celeriac_core::{
    Broker, BrokerError, Capabilities, ConsumeOptions, DeadLetter, DeliveryStream, Outgoing,
    QueueStats,
};
use lapin::options::{BasicAckOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;

use celeriac_core::RedactedUrl;

pub use crate::config::QueueType;
use crate::config::Settings;
use crate::dead::DeadLetterReader;
pub use crate::election::AmqpElection;
use crate::error::bounded;
use crate::link::{Publication, Shared};
pub use crate::rpc::AmqpRpcBackend;
use crate::topology::{dead_queue, wait_queue};

/// A [`Broker`] on RabbitMQ. Cheap to clone.
#[derive(Clone)]
pub struct AmqpBroker {
    shared: Arc<Shared>,
}

/// Configures an [`AmqpBroker`].
///
/// ```no_run
/// use std::time::Duration;
/// use celeriac_amqp::AmqpBroker;
///
/// # async fn run() -> Result<(), celeriac::BrokerError> {
/// let broker = AmqpBroker::builder("amqp://guest:secret@127.0.0.1:5672/%2f")
///     .operation_timeout(Duration::from_secs(2))
///     .max_deliveries(10)
///     .connect()
///     .await?;
/// assert_eq!(celeriac::Broker::redacted_url(&broker), "amqp://guest:***@127.0.0.1:5672/%2f");
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct AmqpBrokerBuilder {
    url: RedactedUrl,
    settings: Settings,
    /// What is wrong with the URL's own options, said when connecting.
    invalid_url: Option<String>,
}

impl AmqpBrokerBuilder {
    /// What a broker built with these settings supports: delays of any length, dead letters,
    /// statistics; priorities up to [`max_priority`](Self::max_priority) when it is set (otherwise a
    /// message with a priority is refused with [`BrokerError::Unsupported`]); FIFO order unless
    /// [`shards`](Self::shards) spreads a queue over several.
    pub fn capabilities(&self) -> Capabilities {
        self.settings.capabilities()
    }

    /// Timeout of each AMQP operation, publisher confirms included (default 5 s).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.settings.operation_timeout = timeout;
        self
    }

    /// Deliveries without an ack after which a message is dead-lettered as poison (default 5).
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.settings.max_deliveries = max.max(1);
        self
    }

    /// Declares queues with `x-max-priority` so message priorities apply (1–9).
    pub fn max_priority(mut self, max: u8) -> Self {
        self.settings.max_priority = Some(max.clamp(1, 9));
        self
    }

    /// Publishing channels per connection (default 4, at least 1). Concurrent `delay` calls take
    /// them in turn and a large batch is split across them, so RabbitMQ handles them in parallel (each
    /// channel is its own process there); one channel serialises every publish and confirm.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), celeriac::BrokerError> {
    /// let broker = celeriac_amqp::AmqpBroker::builder("amqp://guest:guest@127.0.0.1:5672/%2f")
    ///     .publisher_channels(8)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn publisher_channels(mut self, channels: usize) -> Self {
        self.settings.publisher_channels = channels.clamp(1, 64);
        self
    }

    /// Spreads each queue over `shards` RabbitMQ queues (default 1: no sharding). A RabbitMQ queue
    /// is one Erlang process and so runs on one core; past ≈ 10 000–25 000 publishes/s or
    /// 25 000–55 000 consumes/s per queue (on 2-core machines), sharding is how a celeriac queue
    /// goes faster. Messages are sent to the shards in turn and workers consume all of them, so
    /// order holds only within a shard (a task queue with concurrent workers does not keep order
    /// anyway). Shard 0 is the queue itself, the others are `queue.shard.<i>`; delayed messages and
    /// dead letters stay on the queue itself.
    ///
    /// Set it the same way in every process that uses the queue: a worker started with fewer shards
    /// does not consume the others (their messages wait there, they are not lost).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), celeriac::BrokerError> {
    /// let broker = celeriac_amqp::AmqpBroker::builder("amqp://guest:guest@127.0.0.1:5672/%2f")
    ///     .shards(4)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn shards(mut self, shards: usize) -> Self {
        self.settings.shards = shards.clamp(1, 64);
        self
    }

    /// The largest AMQP frame offered to RabbitMQ, in bytes (default 128 KiB, RabbitMQ's
    /// default; at least 4 096). It sizes the client's buffers: lapin keeps 32 frames each way per
    /// connection, 8 MiB at the default. Smaller frames trade a little CPU for memory (32 KiB: a
    /// worker's RSS 12 MiB instead of 15, and ≈ 5–10 % more CPU per task in our benchmark). A
    /// message larger than a frame travels in several; there is no size limit. This setting wins
    /// over a `frame_max` in the URL's query, which wins over the default.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), celeriac::BrokerError> {
    /// let broker = celeriac_amqp::AmqpBroker::builder("amqp://guest:guest@127.0.0.1:5672/%2f")
    ///     .frame_max(32 * 1024)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn frame_max(mut self, bytes: u32) -> Self {
        self.settings.frame_max = Some(bytes.max(config::MIN_FRAME_MAX));
        self
    }

    /// Also trusts the CA certificates in `pem` (one or more, PEM) for `amqps://` URLs, besides the
    /// system's roots: for a RabbitMQ whose certificate a private CA signed. The server's certificate
    /// must still match the URL's host name.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read_to_string("/etc/rabbitmq/ca.pem")?;
    /// let broker = celeriac_amqp::AmqpBroker::builder("amqps://app:secret@rabbit.internal:5671/%2f")
    ///     .tls_root_certificates(ca)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_root_certificates(mut self, pem: impl Into<String>) -> Self {
        self.settings.tls_roots_pem = Some(pem.into());
        self
    }

    /// Shares queues with Python Celery (default off): a task message in Celery's format (kombu's
    /// JSON envelope, as an app built with `celery_compat()` writes it) is published as Celery
    /// publishes it — the body `[args, kwargs, embed]` alone, the protocol's headers as an AMQP
    /// table, `correlation_id`, `reply_to` and `priority` as properties — and a delivery that
    /// carries Celery's task headers is handed to the worker as Celery's message. Queues are
    /// declared as Celery declares them (durable, no arguments, unless
    /// [`max_priority`](Self::max_priority) is set). `celery_compat()` on an `amqp://` URL turns
    /// this on.
    ///
    /// ```
    /// let builder = celeriac_amqp::AmqpBroker::builder("amqp://127.0.0.1/%2f").celery_format(true);
    /// # let _ = builder;
    /// ```
    pub fn celery_format(mut self, on: bool) -> Self {
        self.settings.celery_format = on;
        self
    }

    /// The kind of queue declared for tasks (default [`QueueType::Classic`]). With
    /// [`QueueType::Quorum`] (`x-queue-type: quorum`) main queues are replicated across a RabbitMQ
    /// cluster — as Celery ≥ 5.5 declares them with `task_default_queue_type = "quorum"`, so both
    /// languages declare a shared queue alike. Quorum queues take no
    /// [`max_priority`](Self::max_priority) (connecting with both is an error); consumers use
    /// per-consumer prefetch, which quorum queues require. Delayed messages wait in celeriac's
    /// wait queues, which dead-letter into the quorum queue when due — or, with
    /// [`celery_format`](Self::celery_format), in Celery's native delayed delivery (the quorum
    /// queues `celery_delayed_27` … `celery_delayed_0`, declared as Celery ≥ 5.5 declares them;
    /// delays in whole seconds, rounded up). Redeliveries are
    /// counted against [`max_deliveries`](Self::max_deliveries) as on classic queues, in a copy
    /// republished to the tail (not by RabbitMQ's `x-delivery-count`, which also counts messages
    /// bounced unrun at the head of the queue while a restarted broker cuts consumers off), and
    /// dead letters go to a quorum queue too. The URL can ask for it: `?queue_type=quorum`.
    ///
    /// ```
    /// use celeriac_amqp::{AmqpBroker, QueueType};
    ///
    /// let builder = AmqpBroker::builder("amqp://127.0.0.1/%2f").queue_type(QueueType::Quorum);
    /// # let _ = builder;
    /// ```
    pub fn queue_type(mut self, kind: QueueType) -> Self {
        self.settings.queue_type = kind;
        self
    }

    /// Connects, failing if RabbitMQ cannot be reached within the operation timeout.
    pub async fn connect(self) -> Result<AmqpBroker, BrokerError> {
        if let Some(reason) = self.invalid_url {
            return Err(BrokerError::Connect {
                url: self.url.redacted().to_owned(),
                source: reason.into(),
            });
        }
        if self.settings.queue_type == QueueType::Quorum && self.settings.max_priority.is_some() {
            return Err(BrokerError::Invalid(
                "quorum queues take no `x-max-priority`: set `max_priority` or `queue_type(QueueType::Quorum)`, not both"
                    .into(),
            ));
        }
        let shared = Arc::new(Shared::new(self.url, self.settings));
        shared.link().await?;
        Ok(AmqpBroker { shared })
    }
}

impl AmqpBroker {
    /// Connects with default settings. `url` is `amqp://user:password@host:port/vhost` (the default
    /// vhost is `%2f`), or `amqps://…` for TLS (feature `tls`, on by default).
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a broker for `url`: one node's URL, or the nodes of a cluster separated
    /// by `;` (as Celery takes them). A connection goes to the node that answered last and fails
    /// over to the next when it is lost; consumers then consume again on the new node. The
    /// first node's URL may say `?queue_type=quorum` (or `classic`, the default), as
    /// [`queue_type`](AmqpBrokerBuilder::queue_type) does.
    ///
    /// ```
    /// use celeriac_amqp::AmqpBroker;
    ///
    /// let nodes = "amqp://guest:guest@rabbit-a:5672/%2f?queue_type=quorum;\
    ///              amqp://guest:guest@rabbit-b:5672/%2f;amqp://guest:guest@rabbit-c:5672/%2f";
    /// let builder = AmqpBroker::builder(nodes);
    /// # let _ = builder;
    /// ```
    pub fn builder(url: &str) -> AmqpBrokerBuilder {
        let url = RedactedUrl::new(url);
        let mut settings = Settings::default();
        let mut invalid_url = None;
        match config::queue_type(&url) {
            Ok(kind) => settings.queue_type = kind,
            Err(reason) => invalid_url = Some(reason),
        }
        AmqpBrokerBuilder {
            url,
            settings,
            invalid_url,
        }
    }

    /// The message count of `name`, declaring it with `arguments` (idempotent).
    async fn count(&self, name: &str, arguments: FieldTable) -> Result<u64, BrokerError> {
        let link = self.shared.link().await?;
        let channel = bounded(
            "open channel",
            self.shared.timeout(),
            link.connection.create_channel(),
        )
        .await?;
        let declared = bounded(
            "declare queue",
            self.shared.timeout(),
            channel.queue_declare(name.into(), QueueDeclareOptions::durable(), arguments),
        )
        .await;
        let _ = channel.close(200, "done".into()).await;
        Ok(u64::from(declared?.message_count()))
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    fn system(&self) -> &'static str {
        "rabbitmq"
    }

    fn redacted_url(&self) -> String {
        self.shared.url.redacted().to_owned()
    }

    async fn publish(&self, message: Outgoing) -> Result<(), BrokerError> {
        self.publish_batch(vec![message]).await
    }

    fn capabilities(&self) -> Capabilities {
        self.shared.settings.capabilities()
    }

    async fn event_bus(&self) -> Result<Option<Arc<dyn celeriac_core::EventBus>>, BrokerError> {
        // Events and remote control get a connection of their own: their channels come and go
        // with each command, and nothing that happens to them can touch the tasks' connection.
        let bus = self.shared.event_bus.get_or_init(|| {
            let (url, settings) = (self.shared.url.clone(), self.shared.settings.clone());
            Arc::new(events::AmqpEventBus::new(Arc::new(Shared::new(
                url, settings,
            ))))
        });
        Ok(Some(bus.clone()))
    }

    fn election(&self, name: &str, lease: Duration) -> Option<Arc<dyn celeriac_core::Election>> {
        let (url, settings) = (self.shared.url.clone(), self.shared.settings.clone());
        let election = AmqpElection::with_settings(url, settings, name).lease(lease);
        Some(Arc::new(election))
    }

    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
        if self.shared.settings.max_priority.is_none()
            && messages.iter().any(|message| message.priority.is_some())
        {
            return Err(BrokerError::unsupported(
                "rabbitmq",
                "message priorities without `max_priority`",
            ));
        }
        let mut celery: Vec<_> = if self.shared.settings.celery_format {
            messages
                .iter()
                .map(|message| celery::to_amqp(&message.payload))
                .collect()
        } else {
            Vec::new()
        };
        let link = self.shared.link().await?;
        let mut routes = Vec::with_capacity(messages.len());
        for message in &messages {
            routes.push(
                self.shared
                    .route(&link, &message.queue, message.not_before)
                    .await?,
            );
        }
        let mut celery = celery.iter_mut();
        let publications = messages
            .iter()
            .zip(&routes)
            .map(|(message, route)| {
                if let Some(Some((body, properties))) = celery.next() {
                    return Publication {
                        exchange: route.exchange,
                        queue: &route.key,
                        payload: body,
                        properties: std::mem::take(properties),
                    };
                }
                let properties = lapin::BasicProperties::default();
                Publication {
                    exchange: route.exchange,
                    queue: &route.key,
                    payload: &message.payload,
                    properties: match message.priority {
                        Some(priority) => properties.with_priority(priority.min(9)),
                        None => properties,
                    },
                }
            })
            .collect();
        self.shared.publish(&link, publications).await
    }

    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        consumer::start(self.shared.clone(), queues, options).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        // Declared as a publish declares it (bindings too: a delayed message Python sends before
        // any celeriac worker started reaches the queue).
        let link = self.shared.link().await?;
        self.shared.declare(&link, link.declarer(), queue).await?;
        let mut stats = QueueStats::default();
        for shard in topology::shards(queue, self.shared.settings.shards) {
            stats.ready += self
                .count(&shard, topology::main_arguments(&self.shared.settings))
                .await?;
        }
        stats.dead_lettered = self
            .count(
                &dead_queue(queue),
                topology::dead_arguments(&self.shared.settings),
            )
            .await?;
        for millis in self.shared.known_waits(queue) {
            stats.delayed += self
                .count(
                    &wait_queue(queue, millis),
                    topology::wait_arguments(queue, millis),
                )
                .await?;
        }
        stats.unacked = self.shared.unacked(queue);
        Ok(stats)
    }

    async fn consumers_stopped(&self) -> Result<(), BrokerError> {
        // A redelivery being counted or dead-lettered when the worker stopped fetching is settled
        // before the worker exits, not left to come back as a second copy.
        let settlements = &self.shared.settlements;
        settlements.close();
        if tokio::time::timeout(self.shared.timeout(), settlements.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "settling redeliveries is slow; those not settled come back when the channel closes"
            );
        }
        settlements.reopen();
        Ok(())
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        // Read without acking, then close the channel: RabbitMQ puts every message back in order.
        let reader = DeadLetterReader::open(&self.shared, queue).await?;
        let read = async {
            let mut letters = Vec::new();
            while letters.len() < limit {
                let Some(delivery) = reader.next().await? else {
                    break;
                };
                letters.push(dead::record(queue, delivery));
            }
            Ok(letters)
        }
        .await;
        reader.close().await;
        read
    }

    async fn requeue_dead_letters(&self, queue: &str, limit: usize) -> Result<u64, BrokerError> {
        let reader = DeadLetterReader::open(&self.shared, queue).await?;
        let moved = async {
            let mut moved = 0;
            while moved < limit {
                let Some(delivery) = reader.next().await? else {
                    break;
                };
                // Confirmed on the queue before the dead letter goes: a failure in between leaves
                // it dead-lettered (the channel closes unacked), never lost.
                self.publish(Outgoing::new(queue, delivery.data)).await?;
                bounded(
                    "remove requeued dead letter",
                    reader.timeout(),
                    delivery.acker.ack(BasicAckOptions::default()),
                )
                .await?;
                moved += 1;
            }
            Ok::<_, BrokerError>(moved as u64)
        }
        .await;
        reader.close().await;
        moved
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let link = self.shared.link().await?;
        let timeout = self.shared.timeout();
        let channel = bounded("open channel", timeout, link.connection.create_channel()).await?;
        self.shared.declare(&link, &channel, queue).await?;
        let shards: Vec<String> = topology::shards(queue, self.shared.settings.shards).collect();
        let mut names = shards.clone();
        names.extend(
            self.shared
                .known_waits(queue)
                .into_iter()
                .map(|ms| wait_queue(queue, ms)),
        );
        let mut purged = 0;
        for name in names {
            match bounded(
                "purge",
                timeout,
                channel.queue_purge(name.as_str().into(), QueuePurgeOptions::default()),
            )
            .await
            {
                Ok(count) => purged += u64::from(count),
                // A wait queue that expired is simply gone.
                Err(error) if !shards.contains(&name) => {
                    tracing::debug!(error = %Report(&error), queue = %name, "cannot purge wait queue")
                }
                Err(error) => return Err(error),
            }
        }
        let _ = channel.close(200, "done".into()).await;
        Ok(purged)
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        let link = self.shared.link().await?;
        let timeout = self.shared.timeout();
        let channel = bounded("open channel", timeout, link.connection.create_channel()).await?;
        let purged = async {
            self.shared.declare(&link, &channel, queue).await?;
            let dead = topology::dead_queue(queue);
            bounded(
                "purge dead letters",
                timeout,
                channel.queue_purge(dead.as_str().into(), QueuePurgeOptions::default()),
            )
            .await
        }
        .await;
        let _ = channel.close(200, "done".into()).await;
        Ok(u64::from(purged?))
    }
}

impl fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("url", &self.shared.url)
            .field("settings", &self.shared.settings)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    /// A stopping worker waits for the consumers' own settlements still going on (no connection
    /// needed: they are tracked in the broker's shared state).
    #[tokio::test(start_paused = true)]
    async fn consumers_stopped_waits_for_settlements_going_on() {
        let shared = Arc::new(Shared::new(
            RedactedUrl::new("amqp://guest:guest@127.0.0.1:1/%2f"),
            Settings::default(),
        ));
        let broker = AmqpBroker {
            shared: shared.clone(),
        };
        let settled = Arc::new(AtomicBool::new(false));
        shared.settlements.spawn({
            let settled = settled.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                settled.store(true, Ordering::SeqCst);
            }
        });
        broker
            .consumers_stopped()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(settled.load(Ordering::SeqCst));
        // Open again for the next worker's consumers.
        assert!(!shared.settlements.is_closed());
    }
}
