//! Unique tasks on the app's side: a send claims its key before it publishes; a worker releases a
//! key held until the task has run.

use std::time::Duration;

use super::App;
use crate::broker::BrokerError;
use crate::coordination::Claim;
use crate::task::{ArgsKey, Duplicate, Unique, UniqueUntil, claim_key};
use crate::{EnqueueError, Envelope, TaskId};

/// The header that carries the claim key of a unique task released when it has run.
pub(crate) const UNIQUE_HEADER: &str = "x-celeriac-unique";

/// A claim a send took, to release if the send fails.
pub(super) struct Claimed {
    key: String,
}

/// Claims the key of task `task` for `envelope`, or answers the duplicate that holds it. A task
/// whose key is released when it has run carries the key in a header for its worker.
pub(super) async fn claim(
    app: &App,
    key: ArgsKey,
    unique: Unique,
    envelope: &mut Envelope,
) -> Result<Claimed, EnqueueError> {
    let task = &envelope.task;
    let Some(store) = app.coordination() else {
        return Err(EnqueueError::InvalidOptions {
            task: task.clone(),
            reason: "the task is unique and the app has no coordination store (register the task \
                     with the app, or give one with `AppBuilder::coordination_url`)"
                .to_owned(),
        });
    };
    let claim_key = claim_key(task, key);
    let holder = envelope.id.to_string();
    let claim = store.claim(&claim_key, &holder, unique.hold_for());
    let claimed = bounded(app.inner.enqueue_timeout, claim)
        .await
        .map_err(|source| EnqueueError::Coordination {
            task: task.clone(),
            source,
        })?;
    match claimed {
        Claim::Claimed => {}
        Claim::Held { holder, left } => {
            let existing = holder
                .parse::<TaskId>()
                .map_err(|_| EnqueueError::Coordination {
                    task: task.clone(),
                    source: BrokerError::Invalid(format!(
                        "unique key `{claim_key}` is held by `{holder}`, which is not a task id"
                    )),
                })?;
            return Err(EnqueueError::Duplicate(Duplicate {
                task: task.clone(),
                existing,
                retry_after: left,
            }));
        }
    }
    if unique.until() == UniqueUntil::Executed {
        envelope
            .headers
            .insert(UNIQUE_HEADER.to_owned(), claim_key.clone());
    }
    Ok(Claimed { key: claim_key })
}

impl Claimed {
    /// Gives the key back after the send failed: the caller may try again at once. Best effort:
    /// at worst the key stays held until its window ends.
    pub(super) async fn give_back(self, app: &App, id: TaskId) {
        let Some(store) = app.coordination() else {
            return;
        };
        let holder = id.to_string();
        let release = store.release(&self.key, &holder);
        if let Err(error) = bounded(app.inner.enqueue_timeout, release).await {
            tracing::warn!(key = %self.key, error = %crate::error::Report(&error), "cannot release the unique key of a task that was not sent; it stays held until its window ends");
        }
    }
}

/// Releases the unique key of the task of `envelope` if it holds one until it has run: called when
/// the task has run for good (succeeded, failed after its retries, dead-lettered, expired).
pub(crate) async fn release_after_run(app: &App, envelope: &Envelope) {
    let (Some(key), Some(store)) = (envelope.headers.get(UNIQUE_HEADER), app.coordination()) else {
        return;
    };
    let holder = envelope.id.to_string();
    let release = store.release(key, &holder);
    if let Err(error) = bounded(app.inner.enqueue_timeout, release).await {
        tracing::warn!(task = %envelope.task, task.id = %envelope.id, error = %crate::error::Report(&error), "cannot release the task's unique key; it stays held until its window ends");
    }
}

async fn bounded<T>(
    after: Duration,
    operation: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(after, operation)
        .await
        .unwrap_or(Err(BrokerError::Timeout {
            op: "coordination",
            after,
        }))
}
