//! Unique tasks on the app's side: a send claims its key before it publishes; a worker releases a
//! key held until the task has run.

use std::time::Duration;

use super::App;
use crate::broker::BrokerError;
use crate::coordination::{Claim, ClaimRequest};
use crate::task::{ArgsKey, Duplicate, Unique, UniqueUntil, claim_key};
use crate::{EnqueueError, Envelope, TaskId};

/// The header that carries the claim key of a unique task released when it has run.
pub(crate) const UNIQUE_HEADER: &str = "x-celeriac-unique";

/// Sends a unique task: claims its key, then publishes, or answers the duplicate that holds it. A
/// task whose key is released when it has run carries the key in a header for its worker.
///
/// When the app's coordination store is the broker's own (the Redis broker's Redis), the claim and
/// the publish are one step in the broker ([`Broker::publish_claimed`](crate::Broker::publish_claimed)):
/// one round trip. Otherwise the claim comes first, and is given back if the publish fails.
pub(super) async fn send(
    app: &App,
    key: ArgsKey,
    unique: Unique,
    mut envelope: Envelope,
) -> Result<(), EnqueueError> {
    let task = envelope.task.clone();
    let Some(store) = app.coordination() else {
        return Err(EnqueueError::InvalidOptions {
            task,
            reason: "the task is unique and the app has no coordination store (register the task \
                     with the app, or give one with `AppBuilder::coordination_url`)"
                .to_owned(),
        });
    };
    let claim_key = claim_key(&task, key);
    let holder = envelope.id.to_string();
    if unique.until() == UniqueUntil::Executed {
        envelope
            .headers
            .insert(UNIQUE_HEADER.to_owned(), claim_key.clone());
    }
    if app.inner.claims_in_broker {
        app.prepare_replies(&task).await?;
        let request = ClaimRequest {
            key: &claim_key,
            holder: &holder,
            hold_for: unique.hold_for(),
        };
        let after = app.inner.enqueue_timeout;
        let fused = app
            .inner
            .broker
            .publish_claimed(App::outgoing(&envelope)?, request);
        match tokio::time::timeout(after, fused).await {
            Ok(Some(Ok(claim))) => return answer(&task, &claim_key, claim),
            Ok(Some(Err(source))) => return Err(EnqueueError::Broker { task, source }),
            Err(_) => return Err(EnqueueError::Timeout { task, after }),
            // The broker keeps no claims after all: claim through the store.
            Ok(None) => {}
        }
    }
    let claim = store.claim(&claim_key, &holder, unique.hold_for());
    let claimed = bounded(app.inner.enqueue_timeout, claim)
        .await
        .map_err(|source| EnqueueError::Coordination {
            task: task.clone(),
            source,
        })?;
    answer(&task, &claim_key, claimed)?;
    if let Err(error) = app.publish(envelope).await {
        give_back(app, &claim_key, &holder).await;
        return Err(error);
    }
    Ok(())
}

/// What a claim's outcome means for the send: go on, or the duplicate that holds the key.
fn answer(task: &str, claim_key: &str, claim: Claim) -> Result<(), EnqueueError> {
    let Claim::Held { holder, left } = claim else {
        return Ok(());
    };
    let existing = holder
        .parse::<TaskId>()
        .map_err(|_| EnqueueError::Coordination {
            task: task.to_owned(),
            source: BrokerError::Invalid(format!(
                "unique key `{claim_key}` is held by `{holder}`, which is not a task id"
            )),
        })?;
    Err(EnqueueError::Duplicate(Duplicate {
        task: task.to_owned(),
        existing,
        retry_after: left,
    }))
}

/// Gives a key back after the send failed: the caller may try again at once. Best effort: at worst
/// the key stays held until its window ends.
async fn give_back(app: &App, claim_key: &str, holder: &str) {
    let Some(store) = app.coordination() else {
        return;
    };
    let release = store.release(claim_key, holder);
    if let Err(error) = bounded(app.inner.enqueue_timeout, release).await {
        tracing::warn!(key = %claim_key, error = %crate::error::Report(&error), "cannot release the unique key of a task that was not sent; it stays held until its window ends");
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
