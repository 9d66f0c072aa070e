//! Worker events and remote control over RabbitMQ: a topic exchange, `celeriac.events`, routed
//! by topic (`events`, `control`, a reply topic per command), and a private queue per subscriber
//! bound to its topic.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use celeriac_core::{BrokerError, EventBus, EventStream};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::error::{bounded, from_lapin};
use crate::link::Shared;

/// The exchange events are published to.
const EXCHANGE: &str = "celeriac.events";

/// Events on the broker's connection: published without confirms (events are at most once),
/// transient, on a channel of their own.
pub(crate) struct AmqpEventBus {
    shared: Arc<Shared>,
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl AmqpEventBus {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            channel: tokio::sync::Mutex::new(None),
        }
    }

    /// A channel on the broker's connection with the exchange declared.
    async fn open(&self) -> Result<Channel, BrokerError> {
        let timeout = self.shared.timeout();
        let link = self.shared.link().await?;
        let channel = bounded("open channel", timeout, link.connection.create_channel()).await?;
        bounded(
            "declare events exchange",
            timeout,
            channel.exchange_declare(
                EXCHANGE.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(channel)
    }
}

impl std::fmt::Debug for AmqpEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpEventBus")
            .field("exchange", &EXCHANGE)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for AmqpEventBus {
    async fn publish(&self, topic: &str, events: Vec<Bytes>) -> Result<(), BrokerError> {
        celeriac_core::validate_topic(topic)?;
        let mut current = self.channel.lock().await;
        if !current
            .as_ref()
            .is_some_and(|channel| channel.status().connected())
        {
            *current = Some(self.open().await?);
        }
        let Some(channel) = current.as_ref() else {
            return Ok(());
        };
        for event in events {
            channel
                .basic_publish(
                    EXCHANGE.into(),
                    topic.into(),
                    BasicPublishOptions::default(),
                    &event,
                    BasicProperties::default().with_content_type("application/json".into()),
                )
                .await
                .map_err(|error| from_lapin("publish event", error))?;
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str) -> Result<EventStream, BrokerError> {
        celeriac_core::validate_topic(topic)?;
        let timeout = self.shared.timeout();
        let channel = self.open().await?;
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        let queue = bounded(
            "declare events queue",
            timeout,
            channel.queue_declare("".into(), options, FieldTable::default()),
        )
        .await?;
        bounded(
            "bind events queue",
            timeout,
            channel.queue_bind(
                queue.name().clone(),
                EXCHANGE.into(),
                topic.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let consumer = bounded(
            "consume events",
            timeout,
            channel.basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        // The stream keeps its channel open.
        let open = ClosedOnDrop(Some((channel, consumer.tag())));
        let events = consumer.map(move |delivery| {
            let _open = &open;
            delivery
                .map(|delivery| Bytes::from(delivery.data))
                .map_err(|error| from_lapin("receive event", error))
        });
        Ok(Box::pin(events))
    }
}

/// A subscriber's channel and consumer, cancelled then closed when its stream is dropped (a
/// channel left open lives as long as the connection: one per command's replies would add up).
struct ClosedOnDrop(Option<(Channel, lapin::types::ShortString)>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        if let (Some((channel, tag)), Ok(runtime)) =
            (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let cancel = lapin::options::BasicCancelOptions::default();
                let _ = channel.basic_cancel(tag, cancel).await;
                let _ = channel.close(200, "unsubscribed".into()).await;
            });
        }
    }
}
