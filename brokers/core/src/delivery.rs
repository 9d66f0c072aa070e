use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::BrokerError;

/// How a broker settles one delivery. Implemented by broker adapters; users call [`Delivery`]'s methods.
///
/// Each method consumes the handle, so a delivery is settled at most once. An implementation must
/// make an acknowledger that is dropped unsettled lead to redelivery (immediately, when its consumer
/// goes away, or after a visibility timeout).
#[async_trait]
pub trait Acknowledger: Send + fmt::Debug + 'static {
    /// Removes the message for good.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;
    /// Puts the message back in its queue, marked as redelivered.
    async fn requeue(self: Box<Self>) -> Result<(), BrokerError>;
    /// Moves the message to its queue's dead-letter queue with `reason`.
    async fn dead_letter(
        self: Box<Self>,
        payload: Bytes,
        reason: String,
    ) -> Result<(), BrokerError>;
}

/// One message handed to a consumer, with the single-use handle that settles it.
///
/// Settle every delivery exactly once with [`ack`](Self::ack), [`requeue`](Self::requeue) or
/// [`dead_letter`](Self::dead_letter). **A delivery that is dropped unsettled is delivered again**:
/// that is the at-least-once contract every [`Broker`](super::Broker) keeps.
///
/// ```
/// use celeriac::broker::{Broker, ConsumeOptions, MemoryBroker, Outgoing};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::BrokerError> {
/// let broker = MemoryBroker::new();
/// broker.publish(Outgoing::new("celery", b"hello".to_vec())).await?;
/// let mut deliveries = broker.consume(&["celery".to_owned()], ConsumeOptions::default()).await?;
/// let delivery = deliveries.next().await.expect("a delivery")?;
/// assert_eq!(&delivery.payload()[..], b"hello");
/// delivery.ack().await?;
/// assert_eq!(broker.len("celery").await?, 0);
/// # Ok(()) }
/// ```
pub struct Delivery {
    payload: Bytes,
    queue: Arc<str>,
    redelivered: bool,
    acker: Box<dyn Acknowledger>,
}

impl Delivery {
    /// A delivery, for broker implementations. Pass the queue name as an `Arc<str>` shared by all
    /// deliveries of the queue to avoid an allocation per message.
    pub fn new(
        payload: Bytes,
        queue: impl Into<Arc<str>>,
        redelivered: bool,
        acker: Box<dyn Acknowledger>,
    ) -> Self {
        Self {
            payload,
            queue: queue.into(),
            redelivered,
            acker,
        }
    }

    /// The message bytes (an encoded celeriac envelope when sent by celeriac).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The queue the message came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The queue name, shared (a reference count, no copy).
    pub fn shared_queue(&self) -> Arc<str> {
        self.queue.clone()
    }

    /// Whether the message was delivered before and not acknowledged.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// Acknowledges the message: it is removed for good.
    pub async fn ack(self) -> Result<(), BrokerError> {
        self.acker.ack().await
    }

    /// The acknowledger's own ack future, unboxed once: a worker polls it once to send the ack and
    /// keeps it only while the broker's confirmation is pending. [`ack`](Self::ack) awaits it.
    pub fn into_ack(self) -> BoxFuture<'static, Result<(), BrokerError>> {
        self.acker.ack()
    }

    /// Puts the message back in its queue for another consumer.
    pub async fn requeue(self) -> Result<(), BrokerError> {
        self.acker.requeue().await
    }

    /// Moves the message to the dead-letter queue of its queue, recording `reason`.
    pub async fn dead_letter(self, reason: impl Into<String>) -> Result<(), BrokerError> {
        self.acker.dead_letter(self.payload, reason.into()).await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue)
            .field("len", &self.payload.len())
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}
