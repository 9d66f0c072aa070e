//! # celeriac-core
//!
//! The contract between [celeriac](https://docs.rs/celeriac) and its brokers: the [`Broker`] trait, the
//! single-use [`Delivery`] handle, [`BrokerError`], [`Capabilities`] and the small types around them.
//! Applications depend on `celeriac`, which re-exports all of this as `celeriac::broker`; broker
//! authors depend on this crate (or on `celeriac`) and check their broker with the contract kit in
//! `celeriac::testing` (feature `test-util`).
//!
//! # Delivery contract (at least once)
//!
//! Every broker — the in-memory one in `celeriac`, Redis and RabbitMQ in their own crates, and yours —
//! keeps this contract, and the contract kit checks it:
//!
//! 1. A published message is delivered to one consumer of its queue; once its `not_before` time has
//!    passed, if it has one.
//! 2. A consumer holds at most `prefetch` unsettled deliveries; it gets no more until it settles some.
//! 3. Each [`Delivery`] is settled once: **ack** removes it; **requeue** puts it back (marked
//!    redelivered); **dead-letter** moves it, with a reason, to the queue's dead-letter queue, where
//!    [`Broker::dead_letters`] shows it and [`Broker::requeue_dead_letters`] replays it.
//! 4. A delivery that is never settled — its worker crashed, it was dropped, the worker shut down — is
//!    **delivered again** (immediately on the in-memory broker, after a visibility timeout or a closed
//!    channel on the others). A task may therefore run more than once; it is never lost. Make tasks
//!    idempotent, or accept a rare duplicate.
//! 5. `publish` returns only once the broker has the message; an error means it may not have it.
//! 6. What a broker cannot do, it says in [`Broker::capabilities`], and a request for it fails with
//!    [`BrokerError::Unsupported`]; nothing asked for is silently ignored.
//!
//! Queue names reach a broker already checked ([`validate_queue`]): `celeriac`'s `App` and workers
//! refuse empty names before any broker sees them.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![doc(test(attr(deny(warnings, rust_2018_idioms))))]

mod capabilities;
#[cfg(feature = "celery")]
pub mod celery;
pub mod coordination;
mod delivery;
pub mod election;
mod error;
pub mod events;
mod memory_results;
mod prefetch;
mod results;
mod url;

use std::fmt;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;

pub use self::capabilities::Capabilities;
pub use self::coordination::{Claim, CoordinationStore, MAX_SET_MEMBERS, Record};
pub use self::delivery::{Acknowledger, Delivery};
pub use self::election::{Election, StoreElection, Term};
pub use self::error::{BoxError, BrokerError, Report};
pub use self::events::{
    CONTROL_TOPIC, EVENTS_TOPIC, EventBus, EventStream, MemoryEventBus, validate_topic,
};
pub use self::memory_results::MemoryResultBackend;
pub use self::prefetch::{PrefetchSlot, PrefetchWindow};
pub use self::results::{
    ChordJoin, ChordPart, ResultBackend, ResultState, StoredResult, UNSIZED_CHORD,
};
pub use self::url::RedactedUrl;

/// Re-exported for broker implementations: [`Broker`] and [`Acknowledger`] are `#[async_trait]` traits.
pub use async_trait::async_trait;

/// The largest message a consumer decodes unless told otherwise: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The stream of deliveries a consumer receives.
pub type DeliveryStream = Pin<Box<dyn Stream<Item = Result<Delivery, BrokerError>> + Send>>;

/// A message to publish.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use celeriac::broker::Outgoing;
///
/// let message = Outgoing::new("celery", b"payload".to_vec())
///     .not_before(SystemTime::now() + Duration::from_secs(3))
///     .priority(5);
/// assert_eq!(message.queue, "celery");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outgoing {
    /// The destination queue.
    pub queue: String,
    /// The message bytes.
    pub payload: Bytes,
    /// Deliver no earlier than this time.
    pub not_before: Option<SystemTime>,
    /// Priority 0 (lowest, the default) to 9 (highest); larger values are clamped to 9.
    pub priority: Option<u8>,
}

impl Outgoing {
    /// A message for `queue`, deliverable at once.
    pub fn new(queue: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            queue: queue.into(),
            payload: payload.into(),
            not_before: None,
            priority: None,
        }
    }

    /// Delays delivery until `at`.
    #[must_use]
    pub fn not_before(mut self, at: SystemTime) -> Self {
        self.not_before = Some(at);
        self
    }

    /// Sets the priority (0–9, higher first).
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
}

/// How a consumer wants its deliveries.
///
/// ```
/// use celeriac::broker::ConsumeOptions;
///
/// let options = ConsumeOptions::default().prefetch(32);
/// assert_eq!(options.prefetch_count(), 32);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumeOptions {
    prefetch: usize,
    max_message_bytes: usize,
}

impl ConsumeOptions {
    /// At most `prefetch` unsettled deliveries at once (at least 1).
    #[must_use]
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// The prefetch bound.
    pub fn prefetch_count(&self) -> usize {
        self.prefetch
    }

    /// The largest message the consumer will decode (default: [`DEFAULT_MAX_MESSAGE_BYTES`], 1 MiB). A broker
    /// that can check sizes before handing a message over dead-letters larger ones unread, so that
    /// a consumer's memory stays within `prefetch` × this bound whatever producers write; others
    /// deliver them and the worker dead-letters them.
    ///
    ///
    /// ```
    /// use celeriac::broker::ConsumeOptions;
    ///
    /// let options = ConsumeOptions::default().max_message_bytes(64 * 1024);
    /// assert_eq!(options.max_message_len(), 64 * 1024);
    /// ```
    #[must_use]
    pub fn max_message_bytes(mut self, max: usize) -> Self {
        self.max_message_bytes = max;
        self
    }

    /// The largest message the consumer will decode.
    pub fn max_message_len(&self) -> usize {
        self.max_message_bytes
    }
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            prefetch: 16,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// How many messages of one queue are where.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Deliverable now.
    pub ready: u64,
    /// Waiting for their `not_before` time.
    pub delayed: u64,
    /// Delivered and not yet settled.
    pub unacked: u64,
    /// In the dead-letter queue.
    pub dead_lettered: u64,
}

/// A message in a dead-letter queue, with why it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The queue it was consumed from.
    pub queue: String,
    /// The message bytes as they were delivered.
    pub payload: Bytes,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When it was dead-lettered.
    pub at: SystemTime,
}

impl DeadLetter {
    /// A dead-letter record, for broker implementations.
    pub fn new(
        queue: impl Into<String>,
        payload: Bytes,
        reason: impl Into<String>,
        at: SystemTime,
    ) -> Self {
        Self {
            queue: queue.into(),
            payload,
            reason: reason.into(),
            at,
        }
    }
}

/// A message broker. Object-safe: a celeriac `App` holds an `Arc<dyn Broker>`.
///
/// See the [crate documentation](crate) for the delivery contract every implementation keeps.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// The messaging system, as OpenTelemetry names it (`memory`, `redis`, `rabbitmq`).
    fn system(&self) -> &'static str;

    /// The broker URL with any password replaced by `***`, safe to log.
    fn redacted_url(&self) -> String;

    /// Publishes one message. Returns once the broker holds it.
    async fn publish(&self, message: Outgoing) -> Result<(), BrokerError>;

    /// Publishes several messages, pipelined where the broker allows. On error, a prefix of the batch
    /// may have been published.
    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
        for message in messages {
            self.publish(message).await?;
        }
        Ok(())
    }

    /// Starts consuming `queues`. Deliveries from all of them arrive on one stream.
    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError>;

    /// What this broker supports. Requests for anything else fail with
    /// [`BrokerError::Unsupported`]. The default claims nothing beyond the delivery contract.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Counts of a queue's messages. The default answers [`BrokerError::Unsupported`].
    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let _ = queue;
        Err(BrokerError::unsupported(self.system(), "queue statistics"))
    }

    /// Messages waiting in `queue`: ready plus delayed, not counting unsettled deliveries.
    async fn len(&self, queue: &str) -> Result<u64, BrokerError> {
        let stats = self.stats(queue).await?;
        Ok(stats.ready + stats.delayed)
    }

    /// Up to `limit` of the oldest messages in `queue`'s dead-letter queue. The default answers
    /// [`BrokerError::Unsupported`].
    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let _ = (queue, limit);
        Err(BrokerError::unsupported(
            self.system(),
            "reading dead letters",
        ))
    }

    /// Moves up to `limit` of the oldest dead letters of `queue` back to `queue`, each once, ready
    /// at once and with its payload unchanged; returns how many moved. The default answers
    /// [`BrokerError::Unsupported`].
    async fn requeue_dead_letters(&self, queue: &str, limit: usize) -> Result<u64, BrokerError> {
        let _ = (queue, limit);
        Err(BrokerError::unsupported(
            self.system(),
            "requeueing dead letters",
        ))
    }

    /// Removes every waiting (ready or delayed) message of `queue`; returns how many. The default
    /// answers [`BrokerError::Unsupported`].
    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let _ = queue;
        Err(BrokerError::unsupported(self.system(), "purging queues"))
    }

    /// Removes every dead letter of `queue`; returns how many. The default answers
    /// [`BrokerError::Unsupported`].
    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        let _ = queue;
        Err(BrokerError::unsupported(
            self.system(),
            "purging dead letters",
        ))
    }

    /// A celeriac worker calls this when it stopped: the streams it got from
    /// [`consume`](Self::consume) are dropped and its deliveries settled. A broker that registers
    /// consumers on the server removes them here (the Redis broker deletes its consumer-group
    /// entries), so clean restarts leave nothing behind. The default does nothing.
    async fn consumers_stopped(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    /// The bus this broker carries worker events on, connecting to it if needed; `None` if it
    /// carries none (the default).
    async fn event_bus(&self) -> Result<Option<std::sync::Arc<dyn EventBus>>, BrokerError> {
        Ok(None)
    }

    /// An election held in this broker, named `name`, whose terms last about `lease` without a
    /// renewal, for a beat whose app has no coordination store: RabbitMQ elects with a
    /// single-active-consumer queue. The default holds none.
    fn election(
        &self,
        name: &str,
        lease: std::time::Duration,
    ) -> Option<std::sync::Arc<dyn Election>> {
        let _ = (name, lease);
        None
    }
}

/// Refuses an empty queue name. `celeriac`'s `App` and workers call it before a broker sees a queue
/// name, so broker implementations need not.
///
/// ```
/// assert!(celeriac_core::validate_queue("celery").is_ok());
/// assert!(celeriac_core::validate_queue("").is_err());
/// ```
pub fn validate_queue(queue: &str) -> Result<(), BrokerError> {
    if queue.is_empty() {
        return Err(BrokerError::Invalid("empty queue name".into()));
    }
    Ok(())
}

/// Refuses an empty list of queues or an empty queue name in it (see [`validate_queue`]).
///
/// ```
/// assert!(celeriac_core::validate_queues(&["a".to_owned()]).is_ok());
/// assert!(celeriac_core::validate_queues(&[]).is_err());
/// ```
pub fn validate_queues(queues: &[String]) -> Result<(), BrokerError> {
    if queues.is_empty() {
        return Err(BrokerError::Invalid(
            "consume needs at least one queue".into(),
        ));
    }
    queues.iter().try_for_each(|queue| validate_queue(queue))
}
