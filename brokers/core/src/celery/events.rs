//! celeriac's worker events, sent a second time as Celery's, where Flower and `celery events`
//! read them. Translated from celeriac's documented event format (version 1), so the worker's
//! own path is untouched; arguments and results are in neither (`args` and `result` say so).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value, json};

/// What Celery's receivers read as the software's name.
pub const SW_IDENT: &str = "rs-celeriac";

/// The exchange Celery's events go to (a topic exchange; on Redis, channels
/// `/<db>.celeryev/<routing key>`).
pub const EXCHANGE: &str = "celeryev";

/// Hours west of UTC, as Python's `time.timezone / 3600`, which Celery's receivers correct
/// timestamps by.
pub fn utcoffset() -> f64 {
    -f64::from(chrono::Local::now().offset().local_minus_utc()) / 3600.0
}

/// One of Celery's event messages, to publish to the `celeryev` exchange (on Redis, the channel
/// `/<db>.celeryev/<routing key>`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CeleryEvent {
    /// `worker.heartbeat`, `task.multi`, …
    pub routing_key: String,
    /// One event, or for `task.multi` a list of them (JSON).
    pub body: Vec<u8>,
    /// The worker's name, for the message's `hostname` header.
    pub hostname: String,
}

/// One batch of celeriac's events (format version 1, as published on
/// [`EVENTS_TOPIC`](crate::EVENTS_TOPIC)) as Celery's messages: worker events one by one, task
/// events in one `task.multi` batch, as Python workers send them. What is not an event batch, or
/// an event Celery has no name for, is skipped. `clock` is the sender's Lamport clock;
/// `utcoffset` its hours west of UTC ([`utcoffset`]).
///
/// ```
/// use std::sync::atomic::AtomicU64;
///
/// let batch = br#"{"v": 1, "hostname": "sms@vm", "pid": 7, "events": [
///     {"type": "worker-heartbeat", "timestamp": 1764500000.5, "active": 0, "processed": 3}]}"#;
/// let events = celeriac_core::celery::events::celery_events(batch, &AtomicU64::new(0), 0.0);
/// assert_eq!(events[0].routing_key, "worker.heartbeat");
/// assert_eq!(events[0].hostname, "sms@vm");
/// ```
pub fn celery_events(batch: &[u8], clock: &AtomicU64, utcoffset: f64) -> Vec<CeleryEvent> {
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
            "task-sent" | "task-received" => {
                add("uuid", field("uuid"));
                add("name", field("name"));
                add("args", json!("(redacted)"));
                add("kwargs", json!("(redacted)"));
                add("retries", field("retries"));
                add("root_id", Value::Null);
                add("parent_id", Value::Null);
                add("eta", Value::Null);
                add("expires", Value::Null);
                // A sent task also says where it went.
                if kind == "task-sent" {
                    add("queue", field("queue"));
                    add("exchange", json!(""));
                    add("routing_key", field("queue"));
                }
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
                messages.push(CeleryEvent {
                    routing_key,
                    body,
                    hostname: hostname.clone(),
                });
            }
        } else {
            tasks.push(Value::Object(celery));
        }
    }
    if !tasks.is_empty()
        && let Ok(body) = serde_json::to_vec(&tasks)
    {
        messages.push(CeleryEvent {
            routing_key: "task.multi".to_owned(),
            body,
            hostname,
        });
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
        let messages = celery_events(batch, &clock, 0.0);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            (
                messages[0].routing_key.as_str(),
                messages[0].hostname.as_str()
            ),
            ("worker.heartbeat", "sms@vm")
        );
        let heartbeat: Value = serde_json::from_slice(&messages[0].body).unwrap();
        assert_eq!(heartbeat["type"], "worker-heartbeat");
        assert_eq!(heartbeat["freq"], 2.0);
        assert_eq!(heartbeat["processed"], 7);
        assert_eq!(heartbeat["sw_ident"], SW_IDENT);
        assert_eq!(heartbeat["clock"], 1);
        assert_eq!(messages[1].routing_key, "task.multi");
        let tasks: Vec<Value> = serde_json::from_slice(&messages[1].body).unwrap();
        let types: Vec<&str> = tasks.iter().filter_map(|t| t["type"].as_str()).collect();
        // A dead letter without a task id has nothing to attach to.
        assert_eq!(types, ["task-received", "task-succeeded"]);
        assert_eq!(tasks[0]["args"], "(redacted)");
        assert!(celery_events(b"not json", &clock, 0.0).is_empty());
        assert!(celery_events(br#"{"events": 1}"#, &clock, 0.0).is_empty());
    }
}
