//! Worker events and remote control over Redis pub/sub: a channel per topic, `<prefix>:<topic>`
//! (`<prefix>:events`, `<prefix>:control`, a reply channel per command).

use async_trait::async_trait;
use bytes::Bytes;
use celeriac_core::{BrokerError, EventBus, EventStream};
use futures::StreamExt;
use redis::aio::ConnectionManager;

use crate::error::bounded;

/// Messages published with `PUBLISH` on `<prefix>:<topic>`; each subscriber holds a pub/sub
/// connection of its own. Made by [`RedisBroker`](crate::RedisBroker)'s `event_bus`.
#[derive(Clone)]
pub(crate) struct RedisEventBus {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    timeout: std::time::Duration,
}

impl RedisEventBus {
    pub(crate) fn new(
        client: redis::Client,
        conn: ConnectionManager,
        key_prefix: &str,
        timeout: std::time::Duration,
    ) -> Self {
        Self {
            client,
            conn,
            prefix: key_prefix.to_owned(),
            timeout,
        }
    }
}

impl std::fmt::Debug for RedisEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEventBus")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for RedisEventBus {
    async fn publish(&self, topic: &str, events: Vec<Bytes>) -> Result<(), BrokerError> {
        celeriac_core::validate_topic(topic)?;
        let channel = format!("{}:{topic}", self.prefix);
        let mut pipe = redis::pipe();
        for event in &events {
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(event.as_ref())
                .ignore();
        }
        let mut conn = self.conn.clone();
        bounded::<()>("publish events", self.timeout, pipe.query_async(&mut conn)).await
    }

    async fn subscribe(&self, topic: &str) -> Result<EventStream, BrokerError> {
        let events = self
            .subscribe_also(topic, None)
            .await?
            .map(|(_, payload)| Ok(payload));
        Ok(Box::pin(events))
    }
}

impl RedisEventBus {
    /// The messages on `topic`'s channel and, on the same connection (so both end together),
    /// those on the channel `also`: `(true, payload)` for the latter.
    pub(crate) async fn subscribe_also(
        &self,
        topic: &str,
        also: Option<&str>,
    ) -> Result<impl futures::Stream<Item = (bool, Bytes)> + Send + use<>, BrokerError> {
        celeriac_core::validate_topic(topic)?;
        let channel = format!("{}:{topic}", self.prefix);
        let mut pubsub = bounded(
            "subscribe to events",
            self.timeout,
            self.client.get_async_pubsub(),
        )
        .await?;
        let mut channels = vec![channel];
        channels.extend(also.map(str::to_owned));
        bounded(
            "subscribe to events",
            self.timeout,
            pubsub.subscribe(&channels),
        )
        .await?;
        let also = also.map(str::to_owned);
        Ok(pubsub.into_on_message().map(move |message| {
            let other = also
                .as_deref()
                .is_some_and(|also| message.get_channel_name() == also);
            (other, Bytes::from(message.get_payload_bytes().to_vec()))
        }))
    }
}
