//! How a worker records outcomes in the app's result backend.

use std::time::Duration;

use super::ResultState;
use super::record::{Cause, ResultRecord};
use crate::error::Report;
use crate::{App, Envelope};

/// Attempts at one write before it is given up (and logged): a backend that blinks does not lose
/// the outcome, one that is down does not hold the worker for long.
const ATTEMPTS: u32 = 3;

/// Whether the outcome of the task `envelope` carries is to be stored.
pub(crate) fn wanted(app: &App, envelope: &Envelope) -> bool {
    envelope.store_result && app.result_backend().is_some()
}

/// Stores `record` in `state` for the task `envelope` carries, if it keeps its result. A failure to
/// store is logged, not returned: the task's own outcome (ack, retry, dead letter) goes ahead.
pub(crate) async fn record(
    app: &App,
    envelope: &Envelope,
    state: ResultState,
    record: ResultRecord,
) {
    if !envelope.store_result {
        return;
    }
    let Some(backend) = app.result_backend() else {
        return;
    };
    let stored = match record.to_stored(state) {
        Ok(stored) => stored,
        Err(error) => {
            tracing::error!(task = %envelope.task, task.id = %envelope.id, error = %Report(&error), "cannot encode the task's result");
            return;
        }
    };
    let id = envelope.id.to_string();
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match backend
            .store(&id, stored.clone(), app.result_expires())
            .await
        {
            Ok(_) => return,
            Err(error) if error.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(task = %envelope.task, task.id = %envelope.id, error = %Report(&error), "cannot store the task's result; trying again");
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            Err(error) => {
                tracing::error!(task = %envelope.task, task.id = %envelope.id, %state, error = %Report(&error), "cannot store the task's result; callers waiting on it will time out");
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

/// Records an outcome without output: a failure, a dead letter, an expiry, a scheduled retry.
pub(crate) async fn without_output(
    app: &App,
    envelope: &Envelope,
    state: ResultState,
    cause: Cause,
    message: String,
) {
    let done = ResultRecord::new(&envelope.task, envelope.retries).with_failure(cause, message);
    record(app, envelope, state, done).await;
}
