//! Worker events on the wire: a fire-and-forget channel that workers publish to and monitors (the
//! CLI, a dashboard, your own code) subscribe to.
//!
//! Events are for watching, not for bookkeeping: delivery is at most once, and a subscriber sees
//! only what is published while it listens. A broker carries them its own way — Redis pub/sub,
//! a RabbitMQ topic exchange, a broadcast channel in memory — behind [`EventBus`].

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast;

use crate::BrokerError;

/// Encoded events as a subscriber receives them. A subscriber too slow to keep up loses events
/// (the stream yields [`BrokerError::Unavailable`] saying how many) and goes on.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Bytes, BrokerError>> + Send>>;

/// Where workers publish events and monitors subscribe to them.
#[async_trait]
pub trait EventBus: Send + Sync + fmt::Debug + 'static {
    /// Publishes encoded events, in order; nobody listening is not an error.
    async fn publish(&self, events: Vec<Bytes>) -> Result<(), BrokerError>;

    /// Every event published from now on, until the stream is dropped.
    async fn subscribe(&self) -> Result<EventStream, BrokerError>;
}

/// Events within one process: the embedded broker's bus.
///
/// ```
/// use bytes::Bytes;
/// use futures::StreamExt;
/// use celeriac::events::{EventBus, MemoryEventBus};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::BrokerError> {
/// let bus = MemoryEventBus::new();
/// let mut events = bus.subscribe().await?;
/// bus.publish(vec![Bytes::from_static(b"{}")]).await?;
/// assert_eq!(events.next().await.transpose()?, Some(Bytes::from_static(b"{}")));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryEventBus {
    sender: broadcast::Sender<Bytes>,
}

impl MemoryEventBus {
    /// How many events a subscriber may lag behind before it loses some.
    const CAPACITY: usize = 4_096;

    /// A bus with no subscriber yet.
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(Self::CAPACITY).0,
        }
    }
}

impl Default for MemoryEventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryEventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEventBus")
            .field("subscribers", &self.sender.receiver_count())
            .finish()
    }
}

#[async_trait]
impl EventBus for MemoryEventBus {
    async fn publish(&self, events: Vec<Bytes>) -> Result<(), BrokerError> {
        for event in events {
            // No subscriber: nobody is watching, which is fine.
            let _ = self.sender.send(event);
        }
        Ok(())
    }

    async fn subscribe(&self) -> Result<EventStream, BrokerError> {
        let receiver = self.sender.subscribe();
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(event) => Some((Ok(event), receiver)),
                Err(broadcast::error::RecvError::Lagged(lost)) => Some((
                    Err(BrokerError::Unavailable {
                        op: "events",
                        reason: format!("this subscriber fell behind and lost {lost} events"),
                    }),
                    receiver,
                )),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(Box::pin(stream))
    }
}
