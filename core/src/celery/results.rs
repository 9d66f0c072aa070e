//! Task results in Celery's format: the meta Celery's result backends keep,
//! `{"status", "result", "traceback", "children", "date_done", "task_id", …}`, to and from
//! celeriac's result record.

use serde_json::{Map, Value, json};

use super::CeleryError;
use super::convert::{iso, parse_iso};
use crate::TaskId;
use crate::codec::CodecError;
use crate::result::{Cause, ResultRecord, ResultState, StoredResult};

/// The exception type of a failed run, as Python sees it (`exc_module` null: Python makes a class
/// of that name in `celery.exceptions`).
const TASK_ERROR: &str = "TaskError";
/// The exception type of a task whose message was dead-lettered without running.
const DEAD_LETTERED: &str = "DeadLettered";
/// Celery's exception for revoked and expired tasks.
const REVOKED: &str = "TaskRevokedError";

/// `record` in `state` as Celery's result meta for task `id`: the output must be JSON (an app in
/// Celery's format encodes with [`JsonCodec`](crate::codec::JsonCodec)).
pub(crate) fn to_meta(
    record: &ResultRecord,
    state: ResultState,
    id: TaskId,
) -> Result<StoredResult, CodecError> {
    let encoding = |error: CeleryError| error.encoding();
    let (status, result) = match state {
        ResultState::Success => {
            let output: Value = if record.output.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&record.output).map_err(|error| {
                    encoding(CeleryError::Unsupported(format!(
                        "a result that is not JSON ({}): {error}",
                        record.content_type
                    )))
                })?
            };
            ("SUCCESS", output)
        }
        ResultState::Started => (
            "STARTED",
            json!({"pid": std::process::id(), "hostname": crate::events::default_hostname()}),
        ),
        _ => {
            let (cause, message) = record
                .failure
                .clone()
                .unwrap_or((Cause::Failed, "no reason recorded".to_owned()));
            let (status, exc_type, exc_module, message) = match (state, cause) {
                (ResultState::Retry, _) => ("RETRY", TASK_ERROR, Value::Null, message),
                (_, Cause::Expired) => (
                    "REVOKED",
                    REVOKED,
                    json!("celery.exceptions"),
                    "expired".to_owned(),
                ),
                (_, Cause::Revoked) => (
                    "REVOKED",
                    REVOKED,
                    json!("celery.exceptions"),
                    "revoked".to_owned(),
                ),
                (_, Cause::DeadLettered) => ("FAILURE", DEAD_LETTERED, Value::Null, message),
                (_, Cause::Failed) => ("FAILURE", TASK_ERROR, Value::Null, message),
            };
            (
                status,
                json!({"exc_type": exc_type, "exc_message": [message], "exc_module": exc_module}),
            )
        }
    };
    let date_done = if state.is_ready() {
        Value::String(iso(record.at))
    } else {
        Value::Null
    };
    let meta = json!({
        "status": status,
        "result": result,
        "traceback": null,
        "children": [],
        "date_done": date_done,
        "task_id": id.to_string(),
        "name": record.task,
        "retries": record.retries,
    });
    let body = serde_json::to_vec(&meta)
        .map_err(|error| encoding(CeleryError::Unsupported(error.to_string())))?;
    Ok(StoredResult::new(state, body))
}

/// Reads Celery's result meta (written by a Python worker, or by [`to_meta`]) as a record.
pub(crate) fn from_meta(body: &[u8]) -> Result<ResultRecord, CodecError> {
    read_meta(body).map_err(CeleryError::decoding)
}

fn read_meta(body: &[u8]) -> Result<ResultRecord, CeleryError> {
    let meta: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|error| CeleryError::Envelope(format!("not a Celery result meta: {error}")))?;
    let status = meta
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| CeleryError::header("status", "missing"))?;
    let task = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("(unknown)");
    let retries = meta
        .get("retries")
        .and_then(Value::as_u64)
        .map_or(0, |retries| u32::try_from(retries).unwrap_or(u32::MAX));
    let mut record = ResultRecord::new(task, retries);
    if let Some(at) = meta
        .get("date_done")
        .and_then(Value::as_str)
        .and_then(|text| parse_iso(text).ok())
    {
        record.at = at;
    }
    let result = meta.get("result").unwrap_or(&Value::Null);
    match status {
        "SUCCESS" => {
            let output =
                serde_json::to_vec(result).map_err(|error| CeleryError::Body(error.to_string()))?;
            Ok(record.with_output("application/json", output))
        }
        "PENDING" | "RECEIVED" | "STARTED" => Ok(record),
        _ => {
            let (exc_type, message) = exception(result);
            let cause = match (status, exc_type.as_str()) {
                ("REVOKED", _) if message == "expired" => Cause::Expired,
                ("REVOKED", _) => Cause::Revoked,
                (_, DEAD_LETTERED) => Cause::DeadLettered,
                _ => Cause::Failed,
            };
            let message = match exc_type.as_str() {
                TASK_ERROR | DEAD_LETTERED | REVOKED => message,
                // A Python exception: say which, as Python prints it.
                _ => format!("{exc_type}: {message}"),
            };
            Ok(record.with_failure(cause, message))
        }
    }
}

/// `(exc_type, message)` of Celery's encoded exception; the message is its arguments, joined.
fn exception(result: &Value) -> (String, String) {
    let exc_type = result
        .get("exc_type")
        .and_then(Value::as_str)
        .unwrap_or("Exception")
        .to_owned();
    let message = match result.get("exc_message") {
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => result.to_string(),
    };
    (exc_type, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> TaskId {
        TaskId::new()
    }

    #[test]
    fn a_success_is_celerys_meta_and_reads_back() {
        let record = ResultRecord::new("ccp_send_sms_code", 1)
            .with_output("application/json", b"0".to_vec());
        let id = id();
        let stored = to_meta(&record, ResultState::Success, id).unwrap();
        let meta: Value = serde_json::from_slice(&stored.body).unwrap();
        assert_eq!(meta["status"], "SUCCESS");
        assert_eq!(meta["result"], 0);
        assert_eq!(meta["task_id"], id.to_string());
        assert_eq!(meta["children"], json!([]));
        assert!(
            meta["date_done"]
                .as_str()
                .is_some_and(|done| done.ends_with("+00:00"))
        );
        let back = from_meta(&stored.body).unwrap();
        assert_eq!(
            (back.task.as_str(), back.retries, back.output.as_slice()),
            ("ccp_send_sms_code", 1, &b"0"[..])
        );
    }

    #[test]
    fn failures_keep_their_cause_and_message() {
        for (cause, state, status) in [
            (Cause::Failed, ResultState::Failure, "FAILURE"),
            (Cause::DeadLettered, ResultState::Failure, "FAILURE"),
            (Cause::Expired, ResultState::Revoked, "REVOKED"),
            (Cause::Revoked, ResultState::Revoked, "REVOKED"),
        ] {
            let record = ResultRecord::new("t", 0).with_failure(cause, "gateway down".to_owned());
            let stored = to_meta(&record, state, id()).unwrap();
            let meta: Value = serde_json::from_slice(&stored.body).unwrap();
            assert_eq!(meta["status"], status);
            let back = from_meta(&stored.body).unwrap();
            assert_eq!(back.failure.map(|(cause, _)| cause), Some(cause));
        }
        let record =
            ResultRecord::new("t", 3).with_failure(Cause::Failed, "gateway down".to_owned());
        let back = from_meta(&to_meta(&record, ResultState::Failure, id()).unwrap().body).unwrap();
        assert_eq!(
            back.failure,
            Some((Cause::Failed, "gateway down".to_owned()))
        );
    }

    #[test]
    fn python_results_read_as_records() {
        // Captured from Celery 5.7 (see the research notes): a success and a KeyError.
        let success = br#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-29T12:13:12.141065+00:00", "task_id": "52220322-6490-4d37-a26d-85757b423078"}"#;
        let record = from_meta(success).unwrap();
        assert_eq!(record.output, b"5");
        assert_eq!(record.task, "(unknown)");
        let failure = br#"{"status": "FAILURE", "result": {"exc_type": "KeyError", "exc_message": ["nope 1"], "exc_module": "builtins"}, "traceback": "Traceback ...", "children": [], "date_done": "2026-11-29T12:15:57.250845+00:00", "name": "tasks.add", "retries": 0}"#;
        let record = from_meta(failure).unwrap();
        assert_eq!(
            record.failure,
            Some((Cause::Failed, "KeyError: nope 1".to_owned()))
        );
        assert_eq!(record.task, "tasks.add");
        for bad in [&b"[1]"[..], b"{}", b"not json", br#"{"status": 7}"#] {
            assert!(from_meta(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_result_that_is_not_json_cannot_be_celerys() {
        let record = ResultRecord::new("t", 0).with_output("application/x-bincode", vec![0xff]);
        assert!(to_meta(&record, ResultState::Success, id()).is_err());
    }
}
