//! Worker events on the wire: a fire-and-forget channel that workers publish to and monitors (the
//! CLI, a dashboard, your own code) subscribe to.
//!
//! Events are for watching, not for bookkeeping: delivery is at most once, and a subscriber sees
//! only what is published while it listens. A broker carries them its own way — Redis pub/sub,
//! a RabbitMQ topic exchange, a broadcast channel in memory — behind [`EventBus`].

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::broadcast;

use crate::BrokerError;

/// Encoded messages as a subscriber receives them. A subscriber too slow to keep up loses
/// messages (the stream yields [`BrokerError::Unavailable`] saying how many) and goes on.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Bytes, BrokerError>> + Send>>;

/// The topic worker events travel on.
pub const EVENTS_TOPIC: &str = "events";

/// The topic remote-control commands travel on; replies come back on a topic of their own.
pub const CONTROL_TOPIC: &str = "control";

/// Checks a topic name: 1 to 200 ASCII letters, digits, `.`, `-`, `_`.
pub fn validate_topic(topic: &str) -> Result<(), BrokerError> {
    let valid = !topic.is_empty()
        && topic.len() <= 200
        && topic
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(BrokerError::Invalid(format!(
            "invalid topic {topic:?}: use 1 to 200 ASCII letters, digits, `.`, `-` or `_`"
        )))
    }
}

/// Where workers publish events and monitors subscribe to them, and where remote-control
/// commands and their replies travel: fire-and-forget messages on named topics
/// ([`EVENTS_TOPIC`], [`CONTROL_TOPIC`], a reply topic per command).
#[async_trait]
pub trait EventBus: Send + Sync + fmt::Debug + 'static {
    /// Publishes encoded messages on `topic`, in order; nobody listening is not an error.
    async fn publish(&self, topic: &str, messages: Vec<Bytes>) -> Result<(), BrokerError>;

    /// Every message published on `topic` from now on, until the stream is dropped.
    async fn subscribe(&self, topic: &str) -> Result<EventStream, BrokerError>;
}

/// Messages within one process: the embedded broker's bus.
///
/// ```
/// use bytes::Bytes;
/// use futures::StreamExt;
/// use celeriac::events::{EventBus, MemoryEventBus, EVENTS_TOPIC};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::BrokerError> {
/// let bus = MemoryEventBus::new();
/// let mut events = bus.subscribe(EVENTS_TOPIC).await?;
/// bus.publish(EVENTS_TOPIC, vec![Bytes::from_static(b"{}")]).await?;
/// assert_eq!(events.next().await.transpose()?, Some(Bytes::from_static(b"{}")));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryEventBus {
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<Bytes>>>>,
}

impl MemoryEventBus {
    /// How many messages a subscriber may lag behind before it loses some. The channel keeps a
    /// message until every subscriber has read it or a newer one takes its slot, so this bounds
    /// what a stalled subscriber holds: a worker's message is up to 512 events, about 80 KB, and
    /// 256 of them are 20 MB (4 096 were 300 MB).
    const CAPACITY: usize = 256;

    /// A bus with no subscriber yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Bytes>>> {
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for MemoryEventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics = self.topics();
        let mut debug = f.debug_struct("MemoryEventBus");
        for (topic, sender) in topics.iter() {
            debug.field(topic, &sender.receiver_count());
        }
        debug.finish()
    }
}

#[async_trait]
impl EventBus for MemoryEventBus {
    async fn publish(&self, topic: &str, messages: Vec<Bytes>) -> Result<(), BrokerError> {
        validate_topic(topic)?;
        let mut topics = self.topics();
        let Some(sender) = topics.get(topic) else {
            // No subscriber: nobody is watching, which is fine.
            return Ok(());
        };
        if sender.receiver_count() == 0 {
            topics.remove(topic);
            return Ok(());
        }
        for message in messages {
            let _ = sender.send(message);
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<EventStream, BrokerError> {
        validate_topic(topic)?;
        let receiver = {
            let mut topics = self.topics();
            // Topics nobody listens to any more (finished replies) go.
            topics.retain(|_, sender| sender.receiver_count() > 0);
            topics
                .entry(topic.to_owned())
                .or_insert_with(|| broadcast::channel(Self::CAPACITY).0)
                .subscribe()
        };
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            match receiver.recv().await {
                Ok(message) => Some((Ok(message), receiver)),
                Err(broadcast::error::RecvError::Lagged(lost)) => Some((
                    Err(BrokerError::Unavailable {
                        op: "events",
                        reason: format!("this subscriber fell behind and lost {lost} messages"),
                    }),
                    receiver,
                )),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(Box::pin(stream))
    }
}
