//! Celery's remote control (kombu's pidbox), so that `celery inspect`, `celery control` and
//! Flower's worker page reach celeriac workers.
//!
//! A broker reads a request off Celery's pidbox (the `celery.pidbox` fanout) beside celeriac's own
//! commands and hands it to the worker as the celeriac command (format version 1) that answers it
//! ([`command_for`]). Its reply topic carries what Celery's reply needs — the method, the reply
//! routing key, the ticket — so the worker's reply, published on that topic, is turned into
//! Celery's ([`celery_reply`]) without any state kept in between; the broker sends it to
//! [`REPLY_EXCHANGE`] with its routing key, where the Python client waits.
//!
//! `scheduled` answers an empty list: a celeriac worker holds no task with an ETA (delays wait in
//! the broker). `reserved` lists the deliveries a worker holds until a lane is free. `hello` (a
//! starting Python worker's sync) answers that there are no revokes to share.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Reply topics of Celery's requests start so (celeriac's worker answers on `reply.*` topics): a
/// broker sends what is published on them with [`celery_reply`].
pub const REPLY_TOPIC_PREFIX: &str = "reply.celery-pidbox.";

/// The fanout exchange Celery's remote-control requests are published to (on Redis, the channel
/// `/<db>.celery.pidbox`).
pub const EXCHANGE: &str = "celery.pidbox";

/// How long a revoke from Celery is remembered, as celeriac's own `revoke` does.
const REVOKES_KEPT_SECS: u64 = 3 * 3600;

/// The direct exchange Celery's clients read replies from (on Redis, the list
/// `<routing key>.reply.celery.pidbox`).
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";

/// What the reply to a request needs, carried in its reply topic.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Pending {
    #[serde(rename = "m")]
    method: String,
    /// `None` for a cast: nobody waits for the reply.
    #[serde(rename = "r")]
    routing_key: Option<String>,
    #[serde(rename = "t")]
    ticket: Option<String>,
}

#[derive(Deserialize)]
struct Request {
    method: String,
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
    #[serde(default)]
    destination: Option<Vec<String>>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    ticket: Option<String>,
    #[serde(default)]
    reply_to: Option<ReplyTo>,
}

#[derive(Deserialize)]
struct ReplyTo {
    routing_key: String,
}

/// Seconds since the Unix epoch, as Celery's `expires` header counts.
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// celeriac's command (JSON, format version 1) for Celery's request `body` (JSON, as Celery's
/// message carries it), whose `expires` header says when it lapses (seconds since the epoch, `0`
/// for never); `None` for what is not to be done: unreadable, expired, addressed by a pattern
/// (which celeriac does not match), or a cast (no reply wanted) that only asks about the worker.
///
/// ```
/// let body = br#"{"method": "ping", "destination": ["w1"], "ticket": "t-1",
///                 "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "rk"}}"#;
/// let now = celeriac_core::celery::pidbox::now_epoch();
/// let command = celeriac_core::celery::pidbox::command_for(body, 0.0, now).unwrap();
/// let command: serde_json::Value = serde_json::from_slice(&command).unwrap();
/// assert_eq!(command["command"], "ping");
/// assert_eq!(command["destination"][0], "w1");
/// ```
pub fn command_for(body: &[u8], expires: f64, now: f64) -> Option<Vec<u8>> {
    if expires > 0.0 && expires < now {
        return None;
    }
    let request: Request = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(_) => {
            tracing::debug!("skipping a Celery remote-control request that is not one");
            return None;
        }
    };
    if request.pattern.is_some() {
        tracing::debug!("skipping a Celery remote-control request addressed by a pattern");
        return None;
    }
    let arguments = request.arguments.unwrap_or_default();
    let replied = request.reply_to.is_some();
    let command = match request.method.as_str() {
        "ping" | "hello" | "heartbeat" | "enable_events" | "disable_events" | "scheduled"
            if replied =>
        {
            json!({"command": "ping"})
        }
        "stats" | "conf" if replied => json!({"command": "stats"}),
        "registered" if replied => json!({"command": "registered"}),
        "active_queues" if replied => json!({"command": "active-queues"}),
        "active" if replied => json!({"command": "active"}),
        "reserved" if replied => json!({"command": "reserved"}),
        "revoked" if replied => json!({"command": "revoked-ids"}),
        "revoke" => {
            let ids = match arguments.get("task_id") {
                Some(Value::String(id)) => vec![id.clone()],
                Some(Value::Array(ids)) => ids
                    .iter()
                    .filter_map(|id| id.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            // celeriac's ids are UUIDs, as Celery's are; another id cannot be one of its tasks.
            let ids: Vec<String> = ids
                .into_iter()
                .filter(|id| uuid::Uuid::parse_str(id).is_ok())
                .collect();
            let terminate = arguments.get("terminate").and_then(Value::as_bool) == Some(true);
            json!({"command": "revoke", "ids": ids, "terminate": terminate, "keep_for_secs": REVOKES_KEPT_SECS})
        }
        "shutdown" => json!({"command": "shutdown"}),
        "rate_limit" => {
            let task = arguments.get("task_name").and_then(Value::as_str)?;
            json!({"command": "rate-limit", "task": task, "rate": celery_rate(arguments.get("rate_limit"))})
        }
        // Anything else asked for a reply: the worker says it has no such command.
        _ if replied => json!({"command": "ping"}),
        _ => return None,
    };
    let pending = Pending {
        method: request.method,
        routing_key: request.reply_to.map(|reply_to| reply_to.routing_key),
        ticket: request.ticket,
    };
    let reply_to = reply_topic(&pending)?;
    let mut native = json!({
        "v": 1,
        "ticket": pending.ticket.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        "reply_to": reply_to,
        "destination": request.destination.filter(|names| !names.is_empty()),
    });
    if let (Value::Object(native), Value::Object(command)) = (&mut native, command) {
        native.extend(command);
    }
    serde_json::to_vec(&native).ok()
}

/// Celery's rate limit (`"10/m"`, a number per second, or nothing to remove it) as celeriac's.
fn celery_rate(rate: Option<&Value>) -> Option<String> {
    match rate {
        Some(Value::String(rate)) if !rate.is_empty() && rate != "0" => {
            if rate.contains('/') {
                Some(rate.clone())
            } else {
                Some(format!("{rate}/s"))
            }
        }
        Some(Value::Number(rate)) if rate.as_f64().is_some_and(|rate| rate > 0.0) => {
            Some(format!("{rate}/s"))
        }
        _ => None,
    }
}

fn reply_topic(pending: &Pending) -> Option<String> {
    let encoded = serde_json::to_vec(pending).ok()?;
    let topic = format!(
        "{REPLY_TOPIC_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(encoded)
    );
    if topic.len() > 200 {
        tracing::debug!("skipping a Celery remote-control request: its reply address is too long");
        return None;
    }
    Some(topic)
}

/// Celery's reply, to send to [`REPLY_EXCHANGE`] with its routing key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CeleryReply {
    /// Where the client waits: the routing key of its reply queue.
    pub routing_key: String,
    /// The request's ticket, for the reply's `ticket` header.
    pub ticket: Option<String>,
    /// `{"<hostname>": <answer>}` (JSON).
    pub body: Vec<u8>,
}

/// Celery's reply to the request behind `topic` (a reply topic [`command_for`] made), from a
/// celeriac worker's `reply` (JSON, format version 1); `None` when nobody waits (a cast) or the
/// reply cannot be read.
pub fn celery_reply(topic: &str, reply: &[u8], clock: u64) -> Option<CeleryReply> {
    let encoded = topic.strip_prefix(REPLY_TOPIC_PREFIX)?;
    let pending: Pending = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())?;
    let routing_key = pending.routing_key?;
    let reply: Map<String, Value> = serde_json::from_slice(reply).ok()?;
    let hostname = reply.get("hostname")?.as_str()?.to_owned();
    let answer = answer(&pending.method, &reply, clock);
    let body = serde_json::to_vec(&json!({ hostname: answer })).ok()?;
    Some(CeleryReply {
        routing_key,
        ticket: pending.ticket,
        body,
    })
}

/// What a Python worker would answer to `method`, from celeriac's reply.
fn answer(method: &str, reply: &Map<String, Value>, clock: u64) -> Value {
    let field = |name: &str| reply.get(name).cloned().unwrap_or(Value::Null);
    if reply.get("reply").and_then(Value::as_str) == Some("error") {
        return json!({"error": field("message")});
    }
    match method {
        "ping" => json!({"ok": "pong"}),
        "stats" => stats(reply, clock),
        "conf" => json!({
            "broker_url": field("broker"),
            "task_default_queue": reply.get("queues").and_then(|queues| queues.get(0)).cloned().unwrap_or(Value::Null),
            "worker_concurrency": field("concurrency"),
            "worker_prefetch_multiplier": 1,
        }),
        "registered" => field("tasks"),
        "active_queues" => Value::Array(
            reply
                .get("queues")
                .and_then(Value::as_array)
                .map(|queues| queues.iter().map(queue_info).collect())
                .unwrap_or_default(),
        ),
        "active" | "reserved" => {
            let pid = field("pid");
            let hostname = field("hostname");
            Value::Array(
                reply
                    .get("tasks")
                    .and_then(Value::as_array)
                    .map(|tasks| {
                        tasks
                            .iter()
                            .map(|task| task_info(task, &hostname, &pid))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        }
        // A celeriac worker holds no task with an ETA: delays wait in the broker.
        "scheduled" => json!([]),
        "revoked" => reply.get("ids").cloned().unwrap_or_else(|| json!([])),
        "revoke" => json!({"ok": "tasks flagged as revoked"}),
        "shutdown" => json!({"ok": "shutting down"}),
        "rate_limit" if reply.get("rate").is_some_and(Value::is_null) => {
            json!({"ok": "rate limit disabled successfully"})
        }
        "rate_limit" => json!({"ok": "new rate limit set successfully"}),
        "heartbeat" => Value::Null,
        "hello" => json!({"revoked": {}, "clock": clock}),
        "enable_events" | "disable_events" => json!({
            "error": "a celeriac worker's events are set when it starts (WorkerBuilder::events)"
        }),
        other => json!({ "error": format!("No such command: {other}") }),
    }
}

/// Celery's `stats`, as Flower's worker page reads it, from celeriac's.
fn stats(reply: &Map<String, Value>, clock: u64) -> Value {
    let field = |name: &str| reply.get(name).cloned().unwrap_or(Value::Null);
    let pid = field("pid");
    let mut stats = json!({
        // Counts per task name: celeriac counts per worker (see `processed` in its events).
        "total": {},
        "pid": pid,
        "clock": clock.to_string(),
        "uptime": reply.get("uptime").and_then(Value::as_f64).unwrap_or(0.0).floor(),
        "pool": {
            "implementation": "celeriac (tokio tasks)",
            "max-concurrency": field("concurrency"),
            "processes": [pid],
            "max-tasks-per-child": null,
            "put-guarded-by-semaphore": false,
            "timeouts": [],
        },
        "broker": broker_info(reply.get("broker").and_then(Value::as_str).unwrap_or("")),
        "prefetch_count": field("prefetch"),
    });
    if let (Some(rss), Value::Object(stats)) =
        (reply.get("rss_bytes").and_then(Value::as_u64), &mut stats)
    {
        stats.insert("rusage".into(), json!({"maxrss": rss / 1024}));
    }
    stats
}

/// Celery's description of the broker connection, from its (password-less) URL.
fn broker_info(url: &str) -> Value {
    let Ok(url) = url::Url::parse(url) else {
        return json!({"transport": url});
    };
    json!({
        "hostname": url.host_str(),
        "userid": (!url.username().is_empty()).then(|| url.username()),
        "virtual_host": url.path().trim_start_matches('/'),
        "port": url.port(),
        "insist": false,
        "ssl": url.scheme() == "rediss",
        "transport": url.scheme(),
        "connect_timeout": 4,
        "transport_options": {},
        "login_method": null,
        "uri_prefix": null,
        "heartbeat": 0,
        "failover_strategy": "round-robin",
        "alternates": [],
    })
}

/// A queue as Celery's `active_queues` describes it.
fn queue_info(name: &Value) -> Value {
    json!({
        "name": name,
        "exchange": {"name": name, "type": "direct", "arguments": null, "durable": true,
                     "passive": false, "auto_delete": false, "delivery_mode": null, "no_declare": false},
        "routing_key": name,
        "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false, "alias": null,
        "bindings": [], "no_declare": null, "expires": null, "message_ttl": null,
        "max_length": null, "max_length_bytes": null, "max_priority": null,
    })
}

/// A task as Celery's `active` (a run in progress, with `started`) or `reserved` (waiting for a
/// lane, without) describes it. celeriac does not show arguments.
fn task_info(task: &Value, hostname: &Value, pid: &Value) -> Value {
    let field = |name: &str| task.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "id": field("id"),
        "name": field("name"),
        "args": "(redacted)",
        "kwargs": "(redacted)",
        "type": field("name"),
        "hostname": hostname,
        "time_start": field("started"),
        "acknowledged": false,
        "delivery_info": {"exchange": "", "routing_key": field("queue"), "priority": 0, "redelivered": false},
        "worker_pid": pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(body: Value, expires: f64) -> Option<Value> {
        command_for(body.to_string().as_bytes(), expires, 1_000.0)
            .map(|json| serde_json::from_slice(&json).unwrap())
    }

    #[test]
    fn flowers_stats_request_asks_the_named_worker_for_its_stats() {
        let native = command(
            json!({"method": "stats", "arguments": {}, "destination": ["rust@vm"], "pattern": null,
                   "matcher": null, "ticket": "56e5525b-98c0-4886-9223-048e86b9a33c",
                   "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "0c70b555"}}),
            1_001.0,
        )
        .unwrap();
        assert_eq!(native["command"], "stats");
        assert_eq!(native["destination"], json!(["rust@vm"]));
        assert_eq!(native["ticket"], "56e5525b-98c0-4886-9223-048e86b9a33c");
        let topic = native["reply_to"].as_str().unwrap();
        assert!(topic.starts_with(REPLY_TOPIC_PREFIX));
        crate::validate_topic(topic).unwrap();

        let reply = json!({"v": 1, "ticket": "56e5525b-98c0-4886-9223-048e86b9a33c",
            "hostname": "rust@vm", "pid": 42, "reply": "stats", "concurrency": 8, "prefetch": 16,
            "queues": ["sms"], "broker": "redis://127.0.0.1:6379/13", "uptime": 9.7, "active": 0,
            "succeeded": 3, "retried": 0, "dead_lettered": 0, "expired": 0, "revoked": 0,
            "revokes_remembered": 0, "rss_bytes": 10240});
        let celery = celery_reply(topic, reply.to_string().as_bytes(), 7).unwrap();
        assert_eq!(celery.routing_key, "0c70b555");
        assert_eq!(
            celery.ticket.as_deref(),
            Some("56e5525b-98c0-4886-9223-048e86b9a33c")
        );
        let body: Value = serde_json::from_slice(&celery.body).unwrap();
        let stats = &body["rust@vm"];
        assert_eq!(stats["pid"], 42);
        assert_eq!(stats["pool"]["max-concurrency"], 8);
        assert_eq!(stats["prefetch_count"], 16);
        assert_eq!(stats["broker"]["virtual_host"], "13");
        assert_eq!(stats["broker"]["port"], 6379);
        assert_eq!(stats["rusage"]["maxrss"], 10);
        assert_eq!(stats["uptime"], 9.0);
    }

    #[test]
    fn casts_act_or_are_skipped_and_expired_requests_are_dropped() {
        // Flower's `enable_events` every 5 s, with nobody waiting: nothing to do.
        assert_eq!(
            command(json!({"method": "enable_events", "arguments": {}}), 0.0),
            None
        );
        // A revoke cast acts, for UUID ids only; its reply goes nowhere.
        let revoke = command(
            json!({"method": "revoke", "arguments": {"task_id": ["0c70b555-d3cb-3553-97a2-ca6c0d6f7e23", "nope"], "terminate": true}}),
            0.0,
        )
        .unwrap();
        assert_eq!(
            revoke["ids"],
            json!(["0c70b555-d3cb-3553-97a2-ca6c0d6f7e23"])
        );
        assert_eq!(revoke["terminate"], true);
        let reply = br#"{"v":1,"ticket":"t","hostname":"w","pid":1,"reply":"revoked","remembered":1,"terminated":[]}"#;
        assert_eq!(
            celery_reply(revoke["reply_to"].as_str().unwrap(), reply, 1),
            None
        );
        // Expired a second ago.
        assert_eq!(
            command(
                json!({"method": "revoke", "arguments": {"task_id": "x"}}),
                999.0
            ),
            None
        );
        // Not a request at all, or addressed by a pattern.
        assert_eq!(command_for(b"[1, 2]", 0.0, 0.0), None);
        assert_eq!(
            command(
                json!({"method": "shutdown", "pattern": "rust-*", "matcher": "glob"}),
                0.0
            ),
            None
        );
    }

    #[test]
    fn unknown_and_listless_methods_answer_as_celery_would() {
        let reply_to = |method: &str| {
            let native = command(
                json!({"method": method, "ticket": "t", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "rk"}}),
                0.0,
            )
            .unwrap();
            assert_eq!(native["command"], "ping", "{method}");
            native["reply_to"].as_str().unwrap().to_owned()
        };
        let pong = br#"{"v":1,"ticket":"t","hostname":"w","pid":1,"reply":"pong"}"#;
        let answer_to = |method: &str| -> Value {
            let celery = celery_reply(&reply_to(method), pong, 1).unwrap();
            serde_json::from_slice::<Value>(&celery.body).unwrap()["w"].clone()
        };
        assert_eq!(answer_to("ping"), json!({"ok": "pong"}));
        assert_eq!(answer_to("scheduled"), json!([]));
        let revoked = command(
            json!({"method": "revoked", "ticket": "t", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "rk"}}),
            0.0,
        )
        .unwrap();
        assert_eq!(revoked["command"], "revoked-ids");
        let ids = br#"{"v":1,"ticket":"t","hostname":"w","pid":1,"reply":"revoked-ids","ids":["6a3b0c5e-8f5d-4a57-b1f2-0f0e4d3c2b1a"]}"#;
        let celery = celery_reply(revoked["reply_to"].as_str().unwrap(), ids, 1).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&celery.body).unwrap()["w"],
            json!(["6a3b0c5e-8f5d-4a57-b1f2-0f0e4d3c2b1a"])
        );
        assert_eq!(
            answer_to("pool_grow"),
            json!({"error": "No such command: pool_grow"})
        );
    }

    #[test]
    fn reserved_lists_the_waiting_deliveries_as_celery_does() {
        let native = command(
            json!({"method": "reserved", "ticket": "t", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "rk"}}),
            0.0,
        )
        .unwrap();
        assert_eq!(native["command"], "reserved");
        let reply = json!({"v": 1, "ticket": "t", "hostname": "w", "pid": 9, "reply": "reserved",
            "tasks": [{"id": "6a3b0c5e-8f5d-4a57-b1f2-0f0e4d3c2b1a", "name": "send_sms",
                       "queue": "sms", "retries": 1}]});
        let celery = celery_reply(
            native["reply_to"].as_str().unwrap(),
            reply.to_string().as_bytes(),
            1,
        )
        .unwrap();
        let listed = &serde_json::from_slice::<Value>(&celery.body).unwrap()["w"];
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        let task = &listed[0];
        assert_eq!(task["id"], "6a3b0c5e-8f5d-4a57-b1f2-0f0e4d3c2b1a");
        assert_eq!(task["name"], "send_sms");
        assert_eq!(task["hostname"], "w");
        assert_eq!(task["worker_pid"], 9);
        assert_eq!(task["time_start"], Value::Null);
        assert_eq!(task["delivery_info"]["routing_key"], "sms");
    }

    #[test]
    fn celerys_rate_limits_read_as_celeriacs() {
        assert_eq!(celery_rate(Some(&json!("10/m"))).as_deref(), Some("10/m"));
        assert_eq!(celery_rate(Some(&json!("5"))).as_deref(), Some("5/s"));
        assert_eq!(celery_rate(Some(&json!(2))).as_deref(), Some("2/s"));
        assert_eq!(celery_rate(Some(&json!("0"))), None);
        assert_eq!(celery_rate(None), None);
    }
}
