//! Events as a worker's run path hands them over, and how a batch of them is written on the bus.
//!
//! The three events every run makes (received, started, succeeded) are recorded without an
//! allocation: the task's name is the registry's `&'static str`, the queue the delivery's shared
//! name. They are written exactly as their [`EventKind`] would be, so readers see one format.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use tokio::time::Instant;

use super::{EventKind, FORMAT_VERSION};
use crate::TaskId;

/// An event waiting to be published.
pub(crate) enum Record {
    /// `task-received`.
    Received {
        uuid: TaskId,
        name: &'static str,
        queue: &'static str,
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
    /// Any other event: rarer, built as it is read (boxed, so that the buffer's entries stay
    /// small: they cross from the worker's threads to the publisher's).
    Other(Box<EventKind>),
}

impl Record {
    /// Whether it says the worker stopped (its publisher's last event).
    pub(crate) fn is_offline(&self) -> bool {
        matches!(self, Self::Other(kind) if matches!(**kind, EventKind::WorkerOffline { .. }))
    }
}

impl From<EventKind> for Record {
    fn from(kind: EventKind) -> Self {
        Self::Other(Box::new(kind))
    }
}

/// A [`Record`] and when it happened.
pub(crate) struct Entry {
    /// On the process's monotonic (tokio) clock: the publisher turns it into wall-clock time,
    /// once a batch rather than once an event.
    pub(crate) at: Instant,
    pub(crate) record: Record,
}

/// Turns instants into Unix time from one reading of the wall clock.
#[derive(Clone, Copy)]
pub(crate) struct Timeline {
    instant: Instant,
    unix_nanos: u64,
}

impl Timeline {
    /// The app's clock now (see [`crate::clock`]).
    pub(crate) fn now() -> Self {
        let instant = Instant::now();
        let unix_nanos = crate::clock::wall_at(instant)
            .duration_since(UNIX_EPOCH)
            .map_or(0, saturating_nanos);
        Self {
            instant,
            unix_nanos,
        }
    }

    /// A timeline on which `instant` is `unix_nanos` after the epoch.
    #[cfg(test)]
    pub(crate) fn fixed(instant: Instant, unix_nanos: u64) -> Self {
        Self {
            instant,
            unix_nanos,
        }
    }

    /// Nanoseconds since the Unix epoch at `at`.
    fn unix_nanos(&self, at: Instant) -> u64 {
        if at >= self.instant {
            let after = saturating_nanos(at - self.instant);
            self.unix_nanos.saturating_add(after)
        } else {
            let before = saturating_nanos(self.instant - at);
            self.unix_nanos.saturating_sub(before)
        }
    }
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Any event but a run's own, on the wire.
#[derive(Serialize)]
struct OtherEvent<'a> {
    timestamp: f64,
    #[serde(flatten)]
    kind: &'a EventKind,
}

/// Writes `entries` as one message from `hostname` (process `pid`) at the end of `out`:
/// `{"v":1,"hostname":…,"pid":…,"events":[…]}`, their times read on `timeline`.
///
/// A run's own events — nine in ten on a busy worker — are written field by field: through
/// `serde_json`'s serializer, every key and tag is escaped as it is written, which cost a worker
/// draining no-ops a tenth of its throughput. Times are written in fixed point to the
/// microsecond (`1764500000.123456`), a JSON number as a float's shortest form is, at a fraction
/// of its cost. The test below reads them back as the [`EventKind`]s they stand for.
pub(crate) fn write_batch<'e>(
    out: &mut impl Write,
    hostname: &str,
    pid: u32,
    entries: impl IntoIterator<Item = &'e Entry>,
    timeline: &Timeline,
) -> serde_json::Result<()> {
    raw(out, b"{\"v\":")?;
    json(out, &FORMAT_VERSION)?;
    raw(out, b",\"hostname\":")?;
    json(out, hostname)?;
    raw(out, b",\"pid\":")?;
    json(out, &pid)?;
    raw(out, b",\"events\":[")?;
    let mut writer = EntryWriter {
        timeline,
        seconds: Seconds::default(),
        strings: Strings::default(),
    };
    for (n, entry) in entries.into_iter().enumerate() {
        if n > 0 {
            raw(out, b",")?;
        }
        writer.write(out, entry)?;
    }
    raw(out, b"]}")?;
    Ok(())
}

/// What writing a batch's entries remembers from one to the next.
struct EntryWriter<'a> {
    timeline: &'a Timeline,
    seconds: Seconds,
    strings: Strings,
}

impl EntryWriter<'_> {
    fn write(&mut self, out: &mut impl Write, entry: &Entry) -> serde_json::Result<()> {
        let micros = self.timeline.unix_nanos(entry.at) / 1_000;
        let (tag, uuid, name) = match &entry.record {
            Record::Received { uuid, name, .. } => ("task-received", uuid, name),
            Record::Started { uuid, name } => ("task-started", uuid, name),
            Record::Succeeded { uuid, name, .. } => ("task-succeeded", uuid, name),
            Record::Other(kind) => {
                let timestamp = micros as f64 / 1e6;
                let kind = &**kind;
                return serde_json::to_writer(out, &OtherEvent { timestamp, kind });
            }
        };
        raw(out, b"{\"timestamp\":")?;
        self.seconds.write(out, micros)?;
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
        self.strings.write(out, name)?;
        match &entry.record {
            Record::Received { queue, retries, .. } => {
                raw(out, b",\"queue\":")?;
                self.strings.write(out, queue)?;
                raw(out, b",\"retries\":")?;
                raw(out, itoa::Buffer::new().format(*retries).as_bytes())?;
            }
            Record::Succeeded { runtime, .. } => {
                raw(out, b",\"runtime\":")?;
                // A float from a `Duration`: never negative, NaN or infinite, but said so anyway.
                let micros = (runtime * 1e6).round();
                if micros.is_finite() && micros >= 0.0 && micros < u64::MAX as f64 {
                    fixed_point(out, micros as u64)?;
                } else {
                    json(out, runtime)?;
                }
            }
            Record::Started { .. } | Record::Other(_) => {}
        }
        raw(out, b"}")?;
        Ok(())
    }
}

/// Writes times in fixed point, keeping the whole seconds' digits from the last time (a batch's
/// events fall in a second or two).
#[derive(Default)]
struct Seconds {
    whole: Option<u64>,
    digits: [u8; 20],
    len: usize,
}

impl Seconds {
    fn write(&mut self, out: &mut impl Write, micros: u64) -> serde_json::Result<()> {
        let whole = micros / 1_000_000;
        if self.whole != Some(whole) {
            let mut buffer = itoa::Buffer::new();
            let digits = buffer.format(whole).as_bytes();
            self.len = digits.len();
            self.digits[..digits.len()].copy_from_slice(digits);
            self.whole = Some(whole);
        }
        raw(out, &self.digits[..self.len])?;
        fraction(out, micros % 1_000_000)
    }
}

/// `micros` millionths as a JSON number with six decimals, at the end of `out`.
fn fixed_point(out: &mut impl Write, micros: u64) -> serde_json::Result<()> {
    raw(
        out,
        itoa::Buffer::new().format(micros / 1_000_000).as_bytes(),
    )?;
    fraction(out, micros % 1_000_000)
}

/// `.` and the six digits of `micros` (under a million), at the end of `out`.
fn fraction(out: &mut impl Write, micros: u64) -> serde_json::Result<()> {
    let mut digits = *b".000000";
    let mut rest = micros;
    for digit in digits[1..].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    raw(out, &digits)
}

/// Writes strings as JSON, remembering the last few found to need no escaping: a batch names the
/// same few tasks and queues again and again, and while it is written they are borrowed, so the
/// same address and length is the same text.
#[derive(Default)]
struct Strings {
    plain: [(usize, usize); 4],
    next: usize,
}

impl Strings {
    /// `text` as a JSON string, at the end of `out`: as it is when nothing in it needs escaping
    /// (task and queue names, nearly always), else escaped by `serde_json`.
    fn write(&mut self, out: &mut impl Write, text: &str) -> serde_json::Result<()> {
        let key = (text.as_ptr() as usize, text.len());
        if !self.plain.contains(&key) {
            // Without an early exit, so that the check runs on many bytes at once.
            let needs_escaping = text.bytes().fold(false, |needs, byte| {
                needs | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
            });
            if needs_escaping {
                return json(out, text);
            }
            self.plain[self.next] = key;
            self.next = (self.next + 1) % self.plain.len();
        }
        raw(out, b"\"")?;
        raw(out, text.as_bytes())?;
        raw(out, b"\"")
    }
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
        // Ten seconds after the epoch, on a clock whose first entry is a second later.
        let start = Instant::now();
        let timeline = Timeline::fixed(start + Duration::from_secs(1), 11_000_000_000);
        let entries = [
            Record::Received {
                uuid,
                name: "ccp_send_sms_code",
                queue: "sms \"urgent\"",
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
            at: start + Duration::from_nanos(n as u64 * 1_000_001_000),
            record,
        })
        .collect::<Vec<_>>();
        let mut wire = Vec::new();
        write_batch(&mut wire, "w", 7, &entries, &timeline).unwrap_or_else(|e| panic!("{e}"));
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
                    queue: "sms \"urgent\"".into(),
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
        assert_eq!(stamps, [10.0, 11.000001, 12.000002, 13.000003]);
        assert!(
            events
                .iter()
                .all(|event| event.hostname == "w" && event.pid == 7)
        );
        assert!(entries[3].record.is_offline() && !entries[0].record.is_offline());
    }

    /// Entries cross from the worker's threads to the publisher's: each byte is cache traffic.
    #[test]
    fn entries_stay_small() {
        assert!(std::mem::size_of::<Entry>() <= 72);
    }

    #[test]
    fn fixed_point_keeps_the_fraction_s_zeros() {
        for (micros, written) in [
            (0, "0.000000"),
            (999, "0.000999"),
            (1_000_000, "1.000000"),
            (1_764_500_000_123_456, "1764500000.123456"),
            (1_764_500_000_909_090, "1764500000.909090"),
            (999_999, "0.999999"),
            (u64::MAX, "18446744073709.551615"),
        ] {
            let mut out = Vec::new();
            fixed_point(&mut out, micros).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(String::from_utf8_lossy(&out), written);
        }
    }
}
