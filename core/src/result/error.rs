use std::time::Duration;

use crate::codec::CodecError;
use crate::{BrokerError, TaskId};

/// Why [`AsyncResult::get`](super::AsyncResult::get) has no output to give.
///
/// Each variant says which task (name and id) it is about, so a log line of it alone is enough.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResultError {
    /// The task ran and failed, after its retries if it had any.
    #[error("task `{task}` ({id}) failed{}: {message}", retries_used(*retries))]
    Failed {
        /// The task's name.
        task: String,
        /// The task's id.
        id: TaskId,
        /// How many retries it used.
        retries: u32,
        /// The task's error, with its causes.
        message: String,
    },
    /// The task's message was dead-lettered without a run (its arguments could not be decoded, it
    /// was sent by another build of the task, …). Replay it with `Broker::requeue_dead_letters`.
    #[error("task `{task}` ({id}) was dead-lettered: {reason}")]
    DeadLettered {
        /// The task's name.
        task: String,
        /// The task's id.
        id: TaskId,
        /// Why.
        reason: String,
    },
    /// The task expired before a worker started it.
    #[error("task `{task}` ({id}) expired before it started")]
    Expired {
        /// The task's name.
        task: String,
        /// The task's id.
        id: TaskId,
    },
    /// The task was revoked.
    #[error("task `{task}` ({id}) was revoked: {reason}")]
    Revoked {
        /// The task's name.
        task: String,
        /// The task's id.
        id: TaskId,
        /// Why, as the revoker said.
        reason: String,
    },
    /// No outcome arrived in time. The task may still be queued or running — or its result expired,
    /// was forgotten, or it was never sent.
    #[error(
        "no result for task {id} within {waited:?}: it is still pending, or its result expired or was forgotten"
    )]
    Timeout {
        /// The task's id.
        id: TaskId,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The task does not store its result (`ignore_result`, the default for tasks returning `()`).
    #[error(
        "task `{task}` ({id}) does not store its result: declare it with `#[task(ignore_result = false)]` to wait for it"
    )]
    Ignored {
        /// The task's name.
        task: String,
        /// The task's id.
        id: TaskId,
    },
    /// The app has no result backend.
    #[error(
        "the app has no result backend to read task {id}'s result from: call `result_backend_url(\"redis://…\")` (or `rpc://`, or use `memory://` as the broker) on the app builder"
    )]
    NoBackend {
        /// The task's id.
        id: TaskId,
    },
    /// The stored output does not decode as the type asked for: the caller and the task disagree on
    /// the output type (another build of the task, or `AsyncResult::from_id` with the wrong type).
    #[error("the result of task `{task}` ({id}) does not decode as `{type_name}`")]
    Decode {
        /// The task's name, as the record says.
        task: String,
        /// The task's id.
        id: TaskId,
        /// The type asked for.
        type_name: &'static str,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// The result backend failed.
    #[error("cannot read the result of task {id} from the result backend")]
    Backend {
        /// The task's id.
        id: TaskId,
        /// The backend's error.
        #[source]
        source: BrokerError,
    },
}

fn retries_used(retries: u32) -> String {
    match retries {
        0 => String::new(),
        1 => " after 1 retry".to_owned(),
        n => format!(" after {n} retries"),
    }
}
