//! celeriac's worker events, sent a second time as Celery's, where Flower and `celery events`
//! read them: `PUBLISH /<db>.celeryev/<routing key>` in kombu's envelope. Worker events go one
//! by one (`worker.online`, `worker.heartbeat`, `worker.offline`), task events in batches
//! (`task.multi`, a list), as Python workers send them.
//!
//! Translated from celeriac's documented event format (version 1), so the worker's own path is
//! untouched; arguments and results are never in either (`args` and `result` say so).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use celeriac_core::{BrokerError, CONTROL_TOPIC, EVENTS_TOPIC, EventBus, EventStream};
use futures::StreamExt;
use redis::aio::ConnectionManager;
use serde_json::{Map, Value, json};

use crate::error::bounded;
use crate::events::RedisEventBus;

use super::pidbox;

/// What Celery's receivers read as the software's name.
const SW_IDENT: &str = "rs-celeriac";

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
            messages
                .iter()
                .flat_map(|message| translate(message, &self.clock, utcoffset()))
                .collect()
        } else {
            Vec::new()
        };
        let own = self.inner.publish(topic, messages).await;
        if !celery.is_empty() {
            let mut pipe = redis::pipe();
            for (routing_key, body, hostname) in &celery {
                pipe.publish(
                    format!("{}{routing_key}", self.channel_prefix),
                    envelope("celeryev", routing_key, json!({"hostname": hostname}), body),
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
                    pidbox::command_for(&payload, pidbox::now_epoch()).map(Bytes::from)
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
            if let Some((routing_key, envelope)) = pidbox::celery_reply(topic, reply, clock) {
                let list = format!(
                    "{}{routing_key}.{}",
                    self.key_prefix,
                    pidbox::REPLY_EXCHANGE
                );
                pipe.lpush(&list, envelope).ignore();
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

/// Hours west of UTC, as Python's `time.timezone / 3600`.
fn utcoffset() -> f64 {
    -f64::from(chrono::Local::now().offset().local_minus_utc()) / 3600.0
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

/// One batch of celeriac's events as Celery's: `(routing key, body, hostname)` for each message
/// to send. What is not an event batch, or an event Celery has no name for, is skipped.
fn translate(batch: &[u8], clock: &AtomicU64, utcoffset: f64) -> Vec<(String, Vec<u8>, String)> {
    let Ok(Value::Object(batch)) = serde_json::from_slice::<Value>(batch) else {
        return Vec::new();
    };
    let hostname = batch
        .get("hostname")
        .and_then(Value::as_str)
        .unwrap_or("celeriac")
        .to_owned();
    let pid = batch.get("pid").cloned().unwrap_or(Value::Null);
    let Some(Value::Array(events)) = batch.get("events") else {
        return Vec::new();
    };
    let mut messages = Vec::new();
    let mut tasks = Vec::new();
    for event in events {
        let Some(kind) = event.get("type").and_then(Value::as_str) else {
            continue;
        };
        let field = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
        let mut celery = Map::new();
        celery.insert("hostname".into(), json!(hostname));
        celery.insert("utcoffset".into(), json!(utcoffset));
        celery.insert("pid".into(), pid.clone());
        celery.insert(
            "clock".into(),
            json!(clock.fetch_add(1, Ordering::Relaxed) + 1),
        );
        celery.insert("timestamp".into(), field("timestamp"));
        let mut add = |name: &str, value: Value| {
            celery.insert(name.to_owned(), value);
        };
        let celery_type = match kind {
            "worker-online" | "worker-heartbeat" | "worker-offline" => {
                add("freq", event.get("freq").cloned().unwrap_or(json!(2.0)));
                add("active", event.get("active").cloned().unwrap_or(json!(0)));
                add(
                    "processed",
                    event.get("processed").cloned().unwrap_or(json!(0)),
                );
                let loadavg = match event.get("loadavg") {
                    Some(loadavg @ Value::Array(_)) => loadavg.clone(),
                    _ => json!([0.0, 0.0, 0.0]),
                };
                add("loadavg", loadavg);
                add("sw_ident", json!(SW_IDENT));
                add("sw_ver", json!(env!("CARGO_PKG_VERSION")));
                add("sw_sys", json!(sw_sys()));
                kind
            }
            "task-sent" => {
                add("uuid", field("uuid"));
                add("name", field("name"));
                add("args", json!("(redacted)"));
                add("kwargs", json!("(redacted)"));
                add("retries", field("retries"));
                add("queue", field("queue"));
                add("exchange", json!(""));
                add("routing_key", field("queue"));
                add("root_id", Value::Null);
                add("parent_id", Value::Null);
                add("eta", Value::Null);
                add("expires", Value::Null);
                kind
            }
            "task-received" => {
                add("uuid", field("uuid"));
                add("name", field("name"));
                add("args", json!("(redacted)"));
                add("kwargs", json!("(redacted)"));
                add("retries", field("retries"));
                add("root_id", Value::Null);
                add("parent_id", Value::Null);
                add("eta", Value::Null);
                add("expires", Value::Null);
                kind
            }
            "task-started" => {
                add("uuid", field("uuid"));
                kind
            }
            "task-succeeded" => {
                add("uuid", field("uuid"));
                add("result", json!("(not shown)"));
                add("runtime", field("runtime"));
                kind
            }
            "task-failed" | "task-retried" => {
                add("uuid", field("uuid"));
                add("exception", field("exception"));
                add("traceback", json!(""));
                kind
            }
            "task-revoked" => {
                add("uuid", field("uuid"));
                add("terminated", field("terminated"));
                add("signum", Value::Null);
                add("expired", json!(false));
                kind
            }
            // Celery has no dead letters: the task failed, and why.
            "task-dead-lettered" if event.get("uuid").is_some_and(Value::is_string) => {
                add("uuid", field("uuid"));
                let reason = event.get("reason").and_then(Value::as_str).unwrap_or("");
                add("exception", json!(format!("dead-lettered: {reason}")));
                add("traceback", json!(""));
                "task-failed"
            }
            _ => continue,
        };
        celery.insert("type".into(), json!(celery_type));
        if celery_type.starts_with("worker-") {
            let routing_key = celery_type.replace('-', ".");
            if let Ok(body) = serde_json::to_vec(&celery) {
                messages.push((routing_key, body, hostname.clone()));
            }
        } else {
            tasks.push(Value::Object(celery));
        }
    }
    if !tasks.is_empty()
        && let Ok(body) = serde_json::to_vec(&tasks)
    {
        messages.push(("task.multi".to_owned(), body, hostname));
    }
    messages
}

/// The system's name as Python's `platform.system()` says it.
fn sw_sys() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_events_go_one_by_one_and_task_events_in_a_batch() {
        let batch = br#"{"v": 1, "hostname": "sms@vm", "pid": 42, "events": [
            {"type": "worker-heartbeat", "timestamp": 1764500000.5, "concurrency": 4, "active": 1, "processed": 7, "freq": 2.0, "loadavg": [0.5, 0.4, 0.3]},
            {"type": "task-received", "timestamp": 1764500000.6, "uuid": "52220322-6490-4d37-a26d-85757b423078", "name": "tasks.add", "queue": "celery", "retries": 0},
            {"type": "task-succeeded", "timestamp": 1764500000.7, "uuid": "52220322-6490-4d37-a26d-85757b423078", "name": "tasks.add", "runtime": 0.01},
            {"type": "task-dead-lettered", "timestamp": 1764500000.8, "name": "tasks.add", "reason": "undecodable"},
            {"type": "something-new", "timestamp": 1764500000.9}
        ]}"#;
        let clock = AtomicU64::new(0);
        let messages = translate(batch, &clock, 0.0);
        assert_eq!(messages.len(), 2);
        let (routing_key, body, hostname) = &messages[0];
        assert_eq!(
            (routing_key.as_str(), hostname.as_str()),
            ("worker.heartbeat", "sms@vm")
        );
        let heartbeat: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(heartbeat["type"], "worker-heartbeat");
        assert_eq!(heartbeat["freq"], 2.0);
        assert_eq!(heartbeat["processed"], 7);
        assert_eq!(heartbeat["sw_ident"], SW_IDENT);
        assert_eq!(heartbeat["clock"], 1);
        let (routing_key, body, _) = &messages[1];
        assert_eq!(routing_key, "task.multi");
        let tasks: Vec<Value> = serde_json::from_slice(body).unwrap();
        let types: Vec<&str> = tasks.iter().filter_map(|t| t["type"].as_str()).collect();
        // A dead letter without a task id has nothing to attach to.
        assert_eq!(types, ["task-received", "task-succeeded"]);
        assert_eq!(tasks[0]["args"], "(redacted)");
        assert!(translate(b"not json", &clock, 0.0).is_empty());
        assert!(translate(br#"{"events": 1}"#, &clock, 0.0).is_empty());
    }

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
