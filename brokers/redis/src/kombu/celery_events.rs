//! celeriac's worker events, sent a second time as Celery's, where Flower and `celery events`
//! read them: `PUBLISH /<db>.celeryev/<routing key>` in kombu's envelope. Worker events go one
//! by one (`worker.online`, `worker.heartbeat`, `worker.offline`), task events in batches
//! (`task.multi`, a list), as Python workers send them.
//!
//! The translation is [`celeriac_core::celery::events`]; Celery's remote control
//! ([`celeriac_core::celery::pidbox`]) travels on this bus too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use celeriac_core::{BrokerError, CONTROL_TOPIC, EVENTS_TOPIC, EventBus, EventStream};
use futures::StreamExt;
use redis::aio::ConnectionManager;
use serde_json::{Value, json};

use crate::error::bounded;
use crate::events::RedisEventBus;

use celeriac_core::celery::{events, pidbox};

/// The event bus of [`KombuBroker`](super::KombuBroker): celeriac's own events on its channels,
/// and the same events in Celery's format for Flower.
pub(super) struct KombuEventBus {
    pub(super) inner: RedisEventBus,
    pub(super) conn: ConnectionManager,
    /// `<global_keyprefix>/<db>.celeryev/`.
    pub(super) channel_prefix: String,
    /// `<global_keyprefix>/<db>.celery.pidbox`, where Celery's remote-control requests go.
    pub(super) pidbox_channel: String,
    /// kombu's `global_keyprefix`, before the lists remote-control replies go on.
    pub(super) key_prefix: String,
    pub(super) timeout: Duration,
    /// Celery's Lamport clock, as a receiver orders events by it.
    pub(super) clock: AtomicU64,
}

impl std::fmt::Debug for KombuEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KombuEventBus")
            .field("channels", &self.channel_prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for KombuEventBus {
    async fn publish(&self, topic: &str, messages: Vec<Bytes>) -> Result<(), BrokerError> {
        if topic.starts_with(pidbox::REPLY_TOPIC_PREFIX) {
            return self.reply_to_celery(topic, &messages).await;
        }
        let celery = if topic == EVENTS_TOPIC {
            let utcoffset = events::utcoffset();
            messages
                .iter()
                .flat_map(|message| events::celery_events(message, &self.clock, utcoffset))
                .collect()
        } else {
            Vec::new()
        };
        let own = self.inner.publish(topic, messages).await;
        if !celery.is_empty() {
            let mut pipe = redis::pipe();
            for event in &celery {
                pipe.publish(
                    format!("{}{}", self.channel_prefix, event.routing_key),
                    envelope(
                        events::EXCHANGE,
                        &event.routing_key,
                        json!({"hostname": event.hostname}),
                        &event.body,
                    ),
                )
                .ignore();
            }
            let mut conn = self.conn.clone();
            if let Err(error) = bounded::<()>(
                "publish Celery events",
                self.timeout,
                pipe.query_async(&mut conn),
            )
            .await
            {
                tracing::debug!(error = %celeriac_core::Report(&error), "cannot publish Celery's events");
            }
        }
        own
    }

    /// celeriac's commands and, for `control`, Celery's remote-control requests as celeriac's.
    async fn subscribe(&self, topic: &str) -> Result<EventStream, BrokerError> {
        if topic != CONTROL_TOPIC {
            return self.inner.subscribe(topic).await;
        }
        let commands = self
            .inner
            .subscribe_also(topic, Some(&self.pidbox_channel))
            .await?
            .filter_map(|(celery, payload)| {
                let command = if celery {
                    super::pidbox::command_for(&payload, pidbox::now_epoch()).map(Bytes::from)
                } else {
                    Some(payload)
                };
                std::future::ready(command.map(Ok))
            });
        Ok(Box::pin(commands))
    }
}

impl KombuEventBus {
    /// Sends a worker's replies to a Celery request where the Python client waits: pushed on
    /// `<global_keyprefix><routing key>.reply.celery.pidbox`, which expires in 10 s as kombu's do.
    async fn reply_to_celery(&self, topic: &str, replies: &[Bytes]) -> Result<(), BrokerError> {
        let mut pipe = redis::pipe();
        let mut any = false;
        for reply in replies {
            let clock = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(celery) = pidbox::celery_reply(topic, reply, clock) {
                let list = format!(
                    "{}{}.{}",
                    self.key_prefix,
                    celery.routing_key,
                    pidbox::REPLY_EXCHANGE
                );
                let headers = json!({"ticket": celery.ticket, "clock": clock});
                let reply = envelope(
                    pidbox::REPLY_EXCHANGE,
                    &celery.routing_key,
                    headers,
                    &celery.body,
                );
                pipe.lpush(&list, reply).ignore();
                pipe.pexpire(&list, 10_000).ignore();
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        bounded(
            "reply to Celery's remote control",
            self.timeout,
            pipe.query_async(&mut conn),
        )
        .await
    }
}

/// kombu's envelope around a transient JSON message (an event, a remote-control reply), as
/// Python's dispatcher and mailbox send them.
pub(super) fn envelope(exchange: &str, routing_key: &str, headers: Value, body: &[u8]) -> Vec<u8> {
    json!({
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::new_v4().to_string(),
        },
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_is_kombus() {
        let envelope: Value = serde_json::from_slice(&envelope(
            "celeryev",
            "worker.heartbeat",
            json!({"hostname": "sms@vm"}),
            b"{}",
        ))
        .unwrap();
        assert_eq!(
            envelope["properties"]["delivery_info"]["exchange"],
            "celeryev"
        );
        assert_eq!(envelope["properties"]["body_encoding"], "base64");
        assert_eq!(envelope["headers"]["hostname"], "sms@vm");
        assert_eq!(envelope["body"], "e30=");
    }
}
