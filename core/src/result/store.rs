//! How a worker records outcomes in the app's result backend.

use std::time::Duration;

use super::ResultState;
use super::record::{Cause, ResultRecord};
use crate::error::Report;
use crate::{App, Envelope, TaskId};

/// Attempts at one write before it is given up (and logged): a backend that blinks does not lose
/// the outcome, one that is down does not hold the worker for long.
const ATTEMPTS: u32 = 3;

/// Whether the outcome of the task `envelope` carries is to be stored.
pub(crate) fn wanted(app: &App, envelope: &Envelope) -> bool {
    envelope.store_result && app.result_backend().is_some()
}

/// Stores `record` in `state` for the task `envelope` carries, if it keeps its result. A failure to
/// store is logged, not returned: the task's own outcome (ack, retry, dead letter) goes ahead.
async fn record(app: &App, envelope: &Envelope, state: ResultState, record: ResultRecord) {
    if envelope.store_result {
        write(
            app,
            envelope.id,
            envelope.reply_to.as_deref(),
            state,
            record,
        )
        .await;
    }
}

/// Stores `record` in `state` as task `id`'s result, trying again on transient errors; logs what
/// it cannot store.
async fn write(
    app: &App,
    id: TaskId,
    reply_to: Option<&str>,
    state: ResultState,
    record: ResultRecord,
) {
    let Some(backend) = app.result_backend() else {
        return;
    };
    let task = &record.task;
    let stored = match app.result_to_store(&record, state, id) {
        Ok(stored) => stored,
        Err(error) => {
            tracing::error!(%task, task.id = %id, error = %Report(&error), "cannot encode the task's result");
            return;
        }
    };
    let key = id.to_string();
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match backend
            .store_reply(&key, reply_to, stored.clone(), app.result_expires())
            .await
        {
            Ok(_) => return,
            Err(error) if error.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(%task, task.id = %id, error = %Report(&error), "cannot store the task's result; trying again");
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            Err(error) => {
                tracing::error!(%task, task.id = %id, %state, error = %Report(&error), "cannot store the task's result; callers waiting on it will time out");
                return;
            }
        }
    }
}

/// Records a success with its encoded output.
pub(crate) async fn success(app: &App, envelope: &Envelope, output: Vec<u8>) {
    let done = ResultRecord::new(&envelope.task, envelope.retries)
        .with_output(app.codec().content_type(), output);
    record(app, envelope, ResultState::Success, done).await;
}

/// Records that a worker started the task (`track_started`).
pub(crate) async fn started(app: &App, envelope: &Envelope) {
    let started = ResultRecord::new(&envelope.task, envelope.retries);
    record(app, envelope, ResultState::Started, started).await;
}

/// Records a failed run whose retry is scheduled.
pub(crate) async fn retrying(app: &App, envelope: &Envelope, error: String) {
    without_output(app, envelope, ResultState::Retry, Cause::Failed, error).await;
}

/// Records a task that ended without output, for good: it failed, was dead-lettered without a
/// run, or expired before it started (`cause`), and why.
pub(crate) async fn ended(app: &App, envelope: &Envelope, cause: Cause, message: String) {
    without_output(app, envelope, ended_state(cause), cause, message).await;
}

/// The state an end without output is stored in.
fn ended_state(cause: Cause) -> ResultState {
    match cause {
        Cause::Expired | Cause::Revoked => ResultState::Revoked,
        Cause::Failed | Cause::DeadLettered => ResultState::Failure,
    }
}

/// Records, as the result of `result` (a chain's last task, a chord's callback), that the task of
/// `origin` stopped its workflow: it failed for good, was dead-lettered or expired.
pub(crate) async fn stopped(
    app: &App,
    result: TaskId,
    origin: &Envelope,
    cause: Cause,
    message: String,
) {
    let state = ended_state(cause);
    let mut record = ResultRecord::new(&origin.task, origin.retries).with_failure(cause, message);
    record.origin = Some(origin.id);
    write(app, result, origin.reply_to.as_deref(), state, record).await;
}

/// Records an outcome without output.
async fn without_output(
    app: &App,
    envelope: &Envelope,
    state: ResultState,
    cause: Cause,
    message: String,
) {
    let done = ResultRecord::new(&envelope.task, envelope.retries).with_failure(cause, message);
    record(app, envelope, state, done).await;
}
