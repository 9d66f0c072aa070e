//! Events as a worker's run path hands them over, and how a batch of them is written on the bus.
//!
//! The three events every run makes (received, started, succeeded) are recorded without an
//! allocation: the task's name is the registry's `&'static str`, the queue the delivery's shared
//! name. They are written exactly as their [`EventKind`] would be, so readers see one format.

use std::io::Write;
use std::sync::Arc;

use serde::Serialize;

use super::{EventKind, FORMAT_VERSION};
use crate::TaskId;

/// An event waiting to be published.
pub(crate) enum Record {
    /// `task-received`.
    Received {
        uuid: TaskId,
        name: &'static str,
        queue: Arc<str>,
        retries: u32,
    },
    /// `task-started`.
    Started { uuid: TaskId, name: &'static str },
    /// `task-succeeded`.
    Succeeded {
        uuid: TaskId,
        name: &'static str,
        runtime: f64,
    },
    /// Any other event: rarer, built as it is read.
    Other(EventKind),
}

impl Record {
    /// Whether it says the worker stopped (its publisher's last event).
    pub(crate) fn is_offline(&self) -> bool {
        matches!(self, Self::Other(EventKind::WorkerOffline { .. }))
    }
}

impl From<EventKind> for Record {
    fn from(kind: EventKind) -> Self {
        Self::Other(kind)
    }
}

/// A [`Record`] and when it happened (seconds since the Unix epoch).
pub(crate) struct Entry {
    pub(crate) timestamp: f64,
    pub(crate) record: Record,
}

/// Any event but a run's own, on the wire.
#[derive(Serialize)]
struct OtherEvent<'a> {
    timestamp: f64,
    #[serde(flatten)]
    kind: &'a EventKind,
}

/// Writes `entries` as one message from `hostname` (process `pid`) at the end of `out`:
/// `{"v":1,"hostname":…,"pid":…,"events":[…]}`.
///
/// A run's own events — nine in ten on a busy worker — are written field by field (strings and
/// numbers by `serde_json`): through `serde_json`'s serializer, every key and tag is escaped as
/// it is written, which cost a worker draining no-ops a tenth of its throughput. The test below
/// reads them back as the [`EventKind`]s they stand for.
pub(crate) fn write_batch(
    out: &mut impl Write,
    hostname: &str,
    pid: u32,
    entries: &[Entry],
) -> serde_json::Result<()> {
    raw(out, b"{\"v\":")?;
    json(out, &FORMAT_VERSION)?;
    raw(out, b",\"hostname\":")?;
    json(out, hostname)?;
    raw(out, b",\"pid\":")?;
    json(out, &pid)?;
    raw(out, b",\"events\":[")?;
    for (n, entry) in entries.iter().enumerate() {
        if n > 0 {
            raw(out, b",")?;
        }
        write_entry(out, entry)?;
    }
    raw(out, b"]}")?;
    Ok(())
}

fn write_entry(out: &mut impl Write, entry: &Entry) -> serde_json::Result<()> {
    let (tag, uuid, name) = match &entry.record {
        Record::Received { uuid, name, .. } => ("task-received", uuid, name),
        Record::Started { uuid, name } => ("task-started", uuid, name),
        Record::Succeeded { uuid, name, .. } => ("task-succeeded", uuid, name),
        Record::Other(kind) => {
            let timestamp = entry.timestamp;
            return serde_json::to_writer(out, &OtherEvent { timestamp, kind });
        }
    };
    raw(out, b"{\"timestamp\":")?;
    json(out, &entry.timestamp)?;
    raw(out, b",\"type\":\"")?;
    raw(out, tag.as_bytes())?;
    raw(out, b"\",\"uuid\":\"")?;
    let mut hyphenated = [0; uuid::fmt::Hyphenated::LENGTH];
    raw(
        out,
        uuid.as_uuid()
            .hyphenated()
            .encode_lower(&mut hyphenated)
            .as_bytes(),
    )?;
    raw(out, b"\",\"name\":")?;
    json(out, name)?;
    match &entry.record {
        Record::Received { queue, retries, .. } => {
            raw(out, b",\"queue\":")?;
            json(out, &**queue)?;
            raw(out, b",\"retries\":")?;
            json(out, retries)?;
        }
        Record::Succeeded { runtime, .. } => {
            raw(out, b",\"runtime\":")?;
            json(out, runtime)?;
        }
        Record::Started { .. } | Record::Other(_) => {}
    }
    raw(out, b"}")?;
    Ok(())
}

/// `value` as JSON, at the end of `out`.
fn json(out: &mut impl Write, value: &(impl Serialize + ?Sized)) -> serde_json::Result<()> {
    serde_json::to_writer(out, value)
}

/// `bytes` as they are, at the end of `out`.
fn raw(out: &mut impl Write, bytes: &[u8]) -> serde_json::Result<()> {
    out.write_all(bytes).map_err(serde_json::Error::io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Batch, Event};

    #[test]
    fn run_events_read_back_as_their_kinds() {
        let uuid = TaskId::new();
        let entries = [
            Record::Received {
                uuid,
                name: "ccp_send_sms_code",
                queue: Arc::from("sms"),
                retries: 2,
            },
            Record::Started {
                uuid,
                name: "ccp_send_sms_code",
            },
            Record::Succeeded {
                uuid,
                name: "ccp_send_sms_code",
                runtime: 0.25,
            },
            Record::from(EventKind::WorkerOffline { processed: 1 }),
        ]
        .into_iter()
        .enumerate()
        .map(|(n, record)| Entry {
            timestamp: 10.0 + n as f64,
            record,
        })
        .collect::<Vec<_>>();
        let mut wire = Vec::new();
        write_batch(&mut wire, "w", 7, &entries).unwrap_or_else(|e| panic!("{e}"));
        let batch: Batch = serde_json::from_slice(&wire).unwrap_or_else(|e| panic!("{e}"));
        let events: Vec<Event> = batch.into_events().collect();
        let name = "ccp_send_sms_code".to_owned();
        let kinds: Vec<_> = events.iter().map(|event| event.kind.clone()).collect();
        assert_eq!(
            kinds,
            [
                EventKind::TaskReceived {
                    uuid,
                    name: name.clone(),
                    queue: "sms".into(),
                    retries: 2,
                },
                EventKind::TaskStarted {
                    uuid,
                    name: name.clone(),
                },
                EventKind::TaskSucceeded {
                    uuid,
                    name,
                    runtime: 0.25,
                },
                EventKind::WorkerOffline { processed: 1 },
            ]
        );
        let stamps: Vec<f64> = events.iter().map(|event| event.timestamp).collect();
        assert_eq!(stamps, [10.0, 11.0, 12.0, 13.0]);
        assert!(
            events
                .iter()
                .all(|event| event.hostname == "w" && event.pid == 7)
        );
        assert!(entries[3].record.is_offline() && !entries[0].record.is_offline());
    }
}
