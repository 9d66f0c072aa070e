//! Worker events: what workers report as they run — tasks received, started, succeeded, failed,
//! retried, dead-lettered; workers online, their heartbeats, offline — for monitors to watch live.
//!
//! A worker sends events when built with [`WorkerBuilder::events`](crate::WorkerBuilder::events)
//! (Celery's `-E`). They travel on the broker — Redis pub/sub on `<prefix>:events`, the RabbitMQ
//! topic exchange `celeriac.events`, a broadcast channel for the embedded broker — at most once,
//! off the hot path: a worker hands each event to a bounded buffer that a task of its own
//! publishes in batches, and drops (and counts, in `celeriac_events_dropped_total`) what does not
//! fit rather than slow its tasks down.
//!
//! ```
//! use std::time::Duration;
//! use futures::StreamExt;
//! use celeriac::App;
//! use celeriac::events::EventKind;
//!
//! #[celeriac::task]
//! async fn hello() {}
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::builder().broker_url("memory://events-doc").register::<hello>().build()?;
//! let mut events = celeriac::events::subscribe(&app).await?;
//! hello::delay(&app).await?;
//! let worker = app.worker().events(true).build()?;
//! worker.run_until(tokio::time::sleep(Duration::from_millis(100))).await?;
//!
//! let mut kinds = Vec::new();
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     kinds.push(event.kind.name());
//!     if matches!(event.kind, EventKind::WorkerOffline { .. }) {
//!         break;
//!     }
//! }
//! assert_eq!(
//!     kinds,
//!     ["worker-online", "task-received", "task-started", "task-succeeded", "worker-offline"]
//! );
//! # Ok(()) }
//! ```
//!
//! ## The format (version 1)
//!
//! Each message on the bus is a JSON object holding the events one worker published together:
//! `{"v": 1, "hostname": …, "pid": …, "events": [{"type": …, "timestamp": …, …}, …]}` — `v` the
//! format's version, `hostname` the worker's name (`celeriac@<host>:<pid>` unless set with
//! [`WorkerBuilder::hostname`](crate::WorkerBuilder::hostname)), and per event its `type`, its
//! `timestamp` (seconds since the Unix epoch) and the fields of its type:
//!
//! | `type` | fields |
//! |---|---|
//! | `task-sent` | `uuid`, `name`, `queue`, `retries`, `eta` (if any) — from producers built with [`AppBuilder::task_events`](crate::AppBuilder::task_events) |
//! | `task-received` | `uuid`, `name`, `queue`, `retries` |
//! | `task-started` | `uuid`, `name` |
//! | `task-succeeded` | `uuid`, `name`, `runtime` (seconds) |
//! | `task-retried` | `uuid`, `name`, `runtime`, `exception`, `retries` (of the next run) |
//! | `task-failed` | `uuid`, `name`, `runtime`, `exception` (failed for good: dead-lettered next) |
//! | `task-revoked` | `uuid`, `name`, `terminated` (stopped while it ran, rather than dropped when it arrived) |
//! | `task-dead-lettered` | `uuid` (absent for an undecodable message), `name`, `reason` |
//! | `worker-online` | `concurrency`, `queues`, `freq` (seconds between heartbeats) |
//! | `worker-heartbeat` | `concurrency`, `active`, `processed`, `freq`, `loadavg` (1, 5, 15 min), `rss_bytes` |
//! | `worker-offline` | `processed` |
//!
//! Task arguments are never in events. Readers ignore fields they do not know, so later versions
//! may add fields; a change that is not an addition gets a new `v`. A worker that misses three
//! heartbeats is offline ([`Monitor`]).

mod emitter;
mod host;
mod record;

pub(crate) use self::host::{
    hostname as host_name, loadavg as host_loadavg, rss_bytes as host_rss_bytes,
};

/// The name a process's events and replies carry unless it is given one:
/// `celeriac@<host>:<pid>`.
pub(crate) fn default_hostname() -> String {
    format!("celeriac@{}:{}", host_name(), std::process::id())
}
pub(crate) mod monitor;

use std::time::{SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

pub(crate) use self::emitter::{Emitter, EventTasks};
pub(crate) use self::record::Record;

/// A producer's `task-sent` events: its emitter, started on the first send.
#[derive(Default)]
pub(crate) struct SentEvents {
    emitter: tokio::sync::OnceCell<Option<std::sync::Arc<Emitter>>>,
}

impl SentEvents {
    /// Sends `task-sent` for `envelope`, just published by `app`.
    pub(crate) async fn sent(&self, app: &App, envelope: &crate::Envelope) {
        let emitter = self
            .emitter
            .get_or_init(|| async {
                match app.broker().event_bus().await {
                    Ok(Some(bus)) => Some(Emitter::publishing(bus, default_hostname().into()).0),
                    Ok(None) => {
                        tracing::warn!(broker = %app.broker().redacted_url(), "this broker carries no events; no task-sent events");
                        None
                    }
                    Err(error) => {
                        tracing::warn!(error = %crate::error::Report(&error), "cannot reach the broker's event bus; no task-sent events");
                        None
                    }
                }
            })
            .await;
        if let Some(emitter) = emitter {
            let eta = envelope
                .eta
                .and_then(|eta| eta.duration_since(UNIX_EPOCH).ok())
                .map(|since| since.as_secs_f64());
            emitter.emit(EventKind::TaskSent {
                uuid: envelope.id,
                name: envelope.task.clone(),
                queue: envelope.queue.clone(),
                retries: envelope.retries,
                eta,
            });
        }
    }
}

impl std::fmt::Debug for SentEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentEvents").finish_non_exhaustive()
    }
}
pub use self::monitor::{Monitor, WorkerStatus};
use crate::{App, BrokerError, TaskId};
pub use celeriac_core::events::{
    CONTROL_TOPIC, EVENTS_TOPIC, EventBus, EventStream, MemoryEventBus, validate_topic,
};

/// The version of the event format this crate writes.
pub const FORMAT_VERSION: u32 = 1;

/// One event, as workers send it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// The format's version ([`FORMAT_VERSION`]).
    pub v: u32,
    /// The worker that sent it.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// When it happened, in seconds since the Unix epoch.
    pub timestamp: f64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// When it happened. A timestamp that is no time (negative, or past what the system clock
    /// holds: a broken or hostile sender) reads as the Unix epoch.
    pub fn time(&self) -> SystemTime {
        crate::clock::from_epoch_seconds(self.timestamp)
    }
}

/// What happened (see the [module](self) for each one's fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are documented in the module's table
pub enum EventKind {
    /// A producer sent a task (apps built with `AppBuilder::task_events`).
    TaskSent {
        uuid: TaskId,
        name: String,
        queue: String,
        retries: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta: Option<f64>,
    },
    /// A worker took a message of a task it knows.
    TaskReceived {
        uuid: TaskId,
        name: String,
        queue: String,
        retries: u32,
    },
    /// A run started.
    TaskStarted { uuid: TaskId, name: String },
    /// A run succeeded.
    TaskSucceeded {
        uuid: TaskId,
        name: String,
        runtime: f64,
    },
    /// A run failed and the task will run again.
    TaskRetried {
        uuid: TaskId,
        name: String,
        runtime: f64,
        exception: String,
        retries: u32,
    },
    /// A run failed for good.
    TaskFailed {
        uuid: TaskId,
        name: String,
        runtime: f64,
        exception: String,
    },
    /// A task was revoked: dropped when it arrived, or stopped while it ran (`terminated`).
    TaskRevoked {
        uuid: TaskId,
        name: String,
        terminated: bool,
    },
    /// A message was dead-lettered: failed for good, unknown task, undecodable.
    TaskDeadLettered {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uuid: Option<TaskId>,
        name: String,
        reason: String,
    },
    /// A worker started.
    WorkerOnline {
        concurrency: usize,
        queues: Vec<String>,
        freq: f64,
    },
    /// A worker is alive.
    WorkerHeartbeat {
        concurrency: usize,
        active: u64,
        processed: u64,
        freq: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        loadavg: Option<[f64; 3]>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rss_bytes: Option<u64>,
    },
    /// A worker stopped cleanly.
    WorkerOffline { processed: u64 },
}

impl EventKind {
    /// The event's `type`, as on the wire (`task-succeeded`, `worker-heartbeat`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::TaskSent { .. } => "task-sent",
            Self::TaskReceived { .. } => "task-received",
            Self::TaskStarted { .. } => "task-started",
            Self::TaskSucceeded { .. } => "task-succeeded",
            Self::TaskRetried { .. } => "task-retried",
            Self::TaskFailed { .. } => "task-failed",
            Self::TaskRevoked { .. } => "task-revoked",
            Self::TaskDeadLettered { .. } => "task-dead-lettered",
            Self::WorkerOnline { .. } => "worker-online",
            Self::WorkerHeartbeat { .. } => "worker-heartbeat",
            Self::WorkerOffline { .. } => "worker-offline",
        }
    }
}

/// One message on the bus, read: the events one worker published together (written by
/// [`record::write_batch`]).
#[derive(Deserialize)]
pub(crate) struct Batch {
    v: u32,
    hostname: String,
    pid: u32,
    events: Vec<Stamped>,
}

/// An event in a [`Batch`]: when, and what.
#[derive(Deserialize)]
struct Stamped {
    timestamp: f64,
    #[serde(flatten)]
    kind: EventKind,
}

impl Batch {
    /// Its events, each with the worker's name.
    pub(crate) fn into_events(self) -> impl Iterator<Item = Event> {
        let (v, hostname, pid) = (self.v, self.hostname, self.pid);
        self.events.into_iter().map(move |stamped| Event {
            v,
            hostname: hostname.clone(),
            pid,
            timestamp: stamped.timestamp,
            kind: stamped.kind,
        })
    }
}

/// Why events cannot be watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The app's broker carries no events.
    #[error("the broker {broker} carries no worker events")]
    NoBus {
        /// The broker, password hidden.
        broker: String,
    },
    /// The broker failed.
    #[error("worker events: {0}")]
    Broker(#[from] BrokerError),
    /// An event could not be read (not JSON, or not of a known type): skipped by [`Monitor`].
    #[error("an event celeriac cannot read: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
}

/// Every event published on the app's broker from now on, decoded.
pub async fn subscribe(
    app: &App,
) -> Result<impl Stream<Item = Result<Event, EventError>> + Send + use<>, EventError> {
    let Some(bus) = app.broker().event_bus().await? else {
        return Err(EventError::NoBus {
            broker: app.broker().redacted_url(),
        });
    };
    let messages = bus.subscribe(EVENTS_TOPIC).await?;
    Ok(messages.flat_map(|message| {
        let events: Vec<Result<Event, EventError>> = match message {
            Err(error) => vec![Err(EventError::Broker(error))],
            Ok(message) => match serde_json::from_slice::<Batch>(&message) {
                Ok(batch) => batch.into_events().map(Ok).collect(),
                Err(error) => vec![Err(EventError::Malformed {
                    reason: error.to_string(),
                })],
            },
        };
        futures::stream::iter(events)
    }))
}

/// Seconds since the Unix epoch now (on the app's clock), as events carry time.
#[cfg(feature = "dashboard")]
pub(crate) fn timestamp_now() -> f64 {
    crate::clock::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_read_as_documented() {
        let event = Event {
            v: FORMAT_VERSION,
            hostname: "celeriac@web-1:42".into(),
            pid: 42,
            timestamp: 1_795_996_770.5,
            kind: EventKind::TaskSucceeded {
                uuid: TaskId::new(),
                name: "ccp_send_sms_code".into(),
                runtime: 0.25,
            },
        };
        let json = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(json["type"], "task-succeeded");
        assert_eq!(json["v"], 1);
        assert_eq!(json["runtime"], 0.25);
        let back: Event = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, event);
        // Fields a reader does not know are ignored; an unknown type is an error, not a panic.
        let newer = r#"{"v":1,"type":"worker-offline","hostname":"w","pid":1,"timestamp":0,"processed":3,"colour":"red"}"#;
        assert!(serde_json::from_str::<Event>(newer).is_ok());
        let unknown = r#"{"v":1,"type":"worker-dancing","hostname":"w","pid":1,"timestamp":0}"#;
        assert!(serde_json::from_str::<Event>(unknown).is_err());
        // On the wire, a worker's events travel in batches.
        let at = tokio::time::Instant::now();
        let entries = [record::Entry {
            at,
            record: Record::from(EventKind::WorkerOffline { processed: 2 }),
        }];
        let mut wire = Vec::new();
        record::write_batch(
            &mut wire,
            "w",
            7,
            &entries,
            &record::Timeline::fixed(at, 1_500_000_000),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let wire = String::from_utf8(wire).unwrap_or_default();
        assert_eq!(
            wire,
            r#"{"v":1,"hostname":"w","pid":7,"events":[{"timestamp":1.5,"type":"worker-offline","processed":2}]}"#
        );
        let events: Vec<Event> = serde_json::from_str::<Batch>(&wire)
            .map(|batch| batch.into_events().collect())
            .unwrap_or_default();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].hostname.as_str(), events[0].pid), ("w", 7));
    }
}
