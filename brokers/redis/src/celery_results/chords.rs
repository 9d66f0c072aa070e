//! Celery's chord join on Redis, so that a chord built in Python completes when its members run on
//! Rust workers (or on both): `celery-taskset-meta-<group>.j/.s/.t/.d/.c`, as Celery 5.7's Redis
//! backend keeps them (see `scripts/celery_chord.lua`).
//!
//! Celery reports a chord's failure once every member is in, not at the first failure: a failed
//! member is recorded like the others, and whoever completes the chord fails it.

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use celeriac_core::{BrokerError, ChordJoin, ChordPart};
use redis::Script;
use serde_json::{Value, json};

use super::CeleryResultBackend;
use crate::error::bounded;

static JOIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/celery_chord.lua")));

/// How long a claim on sending a chord's callback holds: a repeated member claims it again after,
/// should the claimant have died before sending.
const CLAIM: Duration = Duration::from_secs(30);

/// How long a sent chord's mark keeps late copies of its members from joining it again (Celery's
/// 300 s).
const SENT_MARK: Duration = Duration::from_secs(300);

/// A member's outcome, as its entry in the join records it.
pub(super) enum Outcome<'a> {
    /// Its output (JSON).
    Succeeded(&'a [u8]),
    /// Why it failed.
    Failed(&'a str),
}

impl CeleryResultBackend {
    pub(super) fn group_key(&self, group: &str, suffix: &str) -> String {
        format!("{}celery-taskset-meta-{group}{suffix}", self.inner.prefix)
    }

    /// Records `part`'s outcome; says whether the caller is to send the callback (or fail the
    /// chord).
    pub(super) async fn join_celery_chord(
        &self,
        part: ChordPart<'_>,
        outcome: Outcome<'_>,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        let entry = entry(part.task_id, &outcome)?;
        let key = |suffix: &str| self.group_key(part.chord, suffix);
        let mut invocation = JOIN.key(key(".j"));
        invocation
            .key(key(".t"))
            .key(key(".s"))
            .key(key(".d"))
            .key(key(".c"))
            .arg(part.task_id)
            .arg(entry)
            .arg(part.index)
            .arg(ttl.as_secs().max(1))
            .arg(CLAIM.as_secs());
        let mut conn = self.inner.conn.clone();
        let reply: Vec<Vec<u8>> = bounded(
            "join_chord",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let mut reply = reply.into_iter();
        if reply.next().as_deref() != Some(b"complete") {
            return Ok(ChordJoin::Waiting);
        }
        let joined = read_entries(part.chord, reply)?;
        if matches!(joined, ChordJoin::Failed(_)) {
            // As Celery does: a copy of a member that comes later does not fail the chord again.
            bounded::<()>(
                "fail_chord",
                self.inner.timeout,
                redis::cmd("DEL").arg(key(".s")).query_async(&mut conn),
            )
            .await?;
        }
        Ok(joined)
    }

    /// Keeps chord `chord`'s size before its members are sent, as Celery's producer does
    /// (`set_chord_size`): its members carry none, and the join counts up to this.
    pub(super) async fn keep_celery_chord_size(
        &self,
        chord: &str,
        size: u32,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let key = |suffix: &str| self.group_key(chord, suffix);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set_ex(key(".s"), size, ttl.as_secs().max(1))
            .ignore()
            .del(key(".c"))
            .ignore();
        let mut conn = self.inner.conn.clone();
        bounded(
            "keep_chord_size",
            self.inner.timeout,
            pipe.query_async(&mut conn),
        )
        .await
    }

    /// Marks chord `chord`'s callback sent: its join's keys go, and late copies of members find
    /// it over.
    pub(super) async fn celery_chord_sent(&self, chord: &str) -> Result<(), BrokerError> {
        let key = |suffix: &str| self.group_key(chord, suffix);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&[key(".j"), key(".t"), key(".s"), key(".d")])
            .ignore()
            .set_ex(key(".c"), "done", SENT_MARK.as_secs())
            .ignore();
        let mut conn = self.inner.conn.clone();
        bounded(
            "chord_fired",
            self.inner.timeout,
            pipe.query_async(&mut conn),
        )
        .await
    }
}

/// A member's entry in the join, as Celery writes it: `[1, task id, state, result]`, a failure's
/// result being Celery's encoded exception.
fn entry(task_id: &str, outcome: &Outcome<'_>) -> Result<String, BrokerError> {
    let (state, result) = match outcome {
        Outcome::Succeeded(output) => (
            "SUCCESS",
            serde_json::from_slice::<Value>(output).map_err(|error| {
                BrokerError::Invalid(format!(
                    "the output of chord member {task_id} is not JSON (Celery's chords hold JSON): {error}"
                ))
            })?,
        ),
        Outcome::Failed(error) => (
            "FAILURE",
            json!({"exc_type": "TaskError", "exc_message": [error], "exc_module": null}),
        ),
    };
    Ok(json!([1, task_id, state, result]).to_string())
}

/// The outputs of a complete chord, in group order; or why it failed, as Celery says it.
fn read_entries(
    chord: &str,
    entries: impl Iterator<Item = Vec<u8>>,
) -> Result<ChordJoin, BrokerError> {
    let mut outputs = Vec::new();
    for entry in entries {
        let (_, task_id, state, result): (Value, Value, String, Value) =
            serde_json::from_slice(&entry).map_err(|error| {
                BrokerError::Invalid(format!(
                    "chord {chord}'s join holds an entry that is not Celery's: {error}"
                ))
            })?;
        if matches!(state.as_str(), "FAILURE" | "REVOKED") {
            let exc_type = result["exc_type"].as_str().unwrap_or("Exception");
            let message = match &result["exc_message"] {
                Value::Array(parts) => parts
                    .iter()
                    .map(|part| {
                        part.as_str()
                            .map_or_else(|| part.to_string(), str::to_owned)
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                other => other.to_string(),
            };
            let task_id = task_id.as_str().unwrap_or("?");
            return Ok(ChordJoin::Failed(format!(
                "Dependency {task_id} raised {exc_type}: {message}"
            )));
        }
        let output =
            serde_json::to_vec(&result).map_err(|error| BrokerError::Invalid(error.to_string()))?;
        outputs.push(Bytes::from(output));
    }
    Ok(ChordJoin::Complete(outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_as_celery_writes_them() {
        let success = entry("t1", &Outcome::Succeeded(b"3")).unwrap();
        assert_eq!(success, r#"[1,"t1","SUCCESS",3]"#);
        // Python's own spelling, with spaces.
        let python = br#"[1, "t2", "SUCCESS", [1, 2]]"#.to_vec();
        let joined = read_entries("g", [success.into_bytes(), python].into_iter()).unwrap();
        assert_eq!(
            joined,
            ChordJoin::Complete(vec![Bytes::from_static(b"3"), Bytes::from_static(b"[1,2]")])
        );
        let failed = entry("t3", &Outcome::Failed("gateway down")).unwrap();
        assert_eq!(
            read_entries("g", [failed.into_bytes()].into_iter()).unwrap(),
            ChordJoin::Failed("Dependency t3 raised TaskError: gateway down".into())
        );
        let python_failure =
            br#"[1, "t4", "FAILURE", {"exc_type": "KeyError", "exc_message": ["nope"], "exc_module": "builtins"}]"#;
        assert_eq!(
            read_entries("g", [python_failure.to_vec()].into_iter()).unwrap(),
            ChordJoin::Failed("Dependency t4 raised KeyError: nope".into())
        );
        assert!(read_entries("g", [b"garbage".to_vec()].into_iter()).is_err());
        assert!(entry("t5", &Outcome::Succeeded(b"\xff")).is_err());
    }
}
