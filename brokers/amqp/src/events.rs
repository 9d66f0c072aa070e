//! Worker events and remote control over RabbitMQ: a topic exchange, `celeriac.events`, routed
//! by topic (`events`, `control`, a reply topic per command), and a private queue per subscriber
//! bound to its topic.
//!
//! With [`celery_format`](crate::AmqpBrokerBuilder::celery_format), Celery's too, for Flower and
//! `celery inspect`: events also go to the `celeryev` topic exchange in Celery's format, the
//! queue that listens for commands is also bound to Celery's `celery.pidbox` fanout, and replies
//! to Celery's requests go to `reply.celery.pidbox` (see [`celeriac_core::celery`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use celeriac_core::celery::{events as celery_events, pidbox};
use celeriac_core::{BrokerError, CONTROL_TOPIC, EVENTS_TOPIC, EventBus, EventStream};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
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
    /// Celery's Lamport clock, as its receivers order events and replies by it.
    clock: AtomicU64,
}

/// Celery's exchanges, declared as kombu declares them (a different declaration would close the
/// channel): `(name, kind, durable)`.
const CELERY_EXCHANGES: [(&str, ExchangeKind, bool); 3] = [
    (celery_events::EXCHANGE, ExchangeKind::Topic, true),
    (pidbox::EXCHANGE, ExchangeKind::Fanout, false),
    (pidbox::REPLY_EXCHANGE, ExchangeKind::Direct, false),
];

impl AmqpEventBus {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            channel: tokio::sync::Mutex::new(None),
            clock: AtomicU64::new(0),
        }
    }

    fn celery(&self) -> bool {
        self.shared.settings.celery_format
    }

    /// A channel on the broker's connection with the exchanges declared.
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
        if self.celery() {
            for (name, kind, durable) in CELERY_EXCHANGES {
                let options = ExchangeDeclareOptions {
                    durable,
                    ..ExchangeDeclareOptions::default()
                };
                bounded(
                    "declare Celery's exchange",
                    timeout,
                    channel.exchange_declare(name.into(), kind, options, FieldTable::default()),
                )
                .await?;
            }
        }
        Ok(channel)
    }

    /// Celery's transient JSON message, as its dispatcher and mailbox publish them.
    fn celery_properties(headers: FieldTable) -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(1)
            .with_headers(headers)
    }

    /// Celery's events for a batch of celeriac's, to the `celeryev` exchange. Events are at most
    /// once: what cannot be sent is logged.
    async fn publish_celery_events(&self, channel: &Channel, batches: &[Bytes]) {
        let utcoffset = celery_events::utcoffset();
        for batch in batches {
            for event in celery_events::celery_events(batch, &self.clock, utcoffset) {
                let mut headers = FieldTable::default();
                headers.insert(
                    ShortString::from("hostname"),
                    AMQPValue::LongString(LongString::from(event.hostname.as_str())),
                );
                let published = channel
                    .basic_publish(
                        celery_events::EXCHANGE.into(),
                        event.routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        &event.body,
                        Self::celery_properties(headers),
                    )
                    .await;
                if let Err(error) = published {
                    tracing::debug!(%error, "cannot publish Celery's events");
                    return;
                }
            }
        }
    }

    /// A worker's replies to a Celery request, to `reply.celery.pidbox` with the client's routing
    /// key.
    async fn reply_to_celery(
        &self,
        channel: &Channel,
        topic: &str,
        replies: &[Bytes],
    ) -> Result<(), BrokerError> {
        for reply in replies {
            let clock = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
            let Some(celery) = pidbox::celery_reply(topic, reply, clock) else {
                continue;
            };
            let mut headers = FieldTable::default();
            if let Some(ticket) = &celery.ticket {
                headers.insert(
                    ShortString::from("ticket"),
                    AMQPValue::LongString(LongString::from(ticket.as_str())),
                );
            }
            headers.insert(
                ShortString::from("clock"),
                AMQPValue::LongLongInt(i64::try_from(clock).unwrap_or(i64::MAX)),
            );
            channel
                .basic_publish(
                    pidbox::REPLY_EXCHANGE.into(),
                    celery.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &celery.body,
                    Self::celery_properties(headers),
                )
                .await
                .map_err(|error| from_lapin("reply to Celery's remote control", error))?;
        }
        Ok(())
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
        let celery_reply = self.celery() && topic.starts_with(pidbox::REPLY_TOPIC_PREFIX);
        if !celery_reply {
            celeriac_core::validate_topic(topic)?;
        }
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
        if celery_reply {
            return self.reply_to_celery(channel, topic, &events).await;
        }
        if self.celery() && topic == EVENTS_TOPIC {
            self.publish_celery_events(channel, &events).await;
        }
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
        // Celery's requests come on the same queue, through Celery's fanout.
        let celery = self.celery() && topic == CONTROL_TOPIC;
        if celery {
            bounded(
                "bind to Celery's remote control",
                timeout,
                channel.queue_bind(
                    queue.name().clone(),
                    pidbox::EXCHANGE.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
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
        let events = consumer.filter_map(move |delivery| {
            let _open = &open;
            let message = match delivery {
                Ok(delivery) if celery && delivery.exchange.as_str() == pidbox::EXCHANGE => {
                    celery_command(&delivery).map(|command| Ok(Bytes::from(command)))
                }
                Ok(delivery) => Some(Ok(Bytes::from(delivery.data))),
                Err(error) => Some(Err(from_lapin("receive event", error))),
            };
            std::future::ready(message)
        });
        Ok(Box::pin(events))
    }
}

/// celeriac's command for a Celery request off the `celery.pidbox` fanout, if it is one to do now.
fn celery_command(delivery: &lapin::message::Delivery) -> Option<Vec<u8>> {
    // py-amqp writes `expires` as an integer, kombu on Redis as a float.
    let expires = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get("expires"))
        .and_then(|expires| match expires {
            AMQPValue::Double(at) => Some(*at),
            AMQPValue::Float(at) => Some(f64::from(*at)),
            AMQPValue::LongLongInt(at) => Some(*at as f64),
            AMQPValue::LongInt(at) => Some(f64::from(*at)),
            AMQPValue::LongUInt(at) => Some(f64::from(*at)),
            _ => None,
        })
        .unwrap_or(0.0);
    pidbox::command_for(&delivery.data, expires, pidbox::now_epoch())
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
