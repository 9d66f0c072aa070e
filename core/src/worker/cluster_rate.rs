//! Cluster-wide rate limits in the worker: a run over the shared budget is not waited for in its
//! lane. The worker reserves the run's slot in the coordination store and sends the task back to
//! the broker to run at that slot; the lane takes other work meanwhile.

use std::time::Duration;

use super::Shared;
use super::process::settle;
use crate::broker::Delivery;
use crate::error::Report;
use crate::task::registry::RegisteredTask;
use crate::{Envelope, RateLimit, RateLimitScope};

/// Marks a task sent back to run at the slot it reserved: it runs then without asking again.
pub(crate) const RATE_SLOT_HEADER: &str = "x-celeriac-rate-slot";

/// A slot this close is waited for in the lane rather than sent back through the broker.
const WAIT_IN_LANE: Duration = Duration::from_millis(10);

/// Waits below a timer tick are not waited for: tokio's timer counts whole milliseconds, so a
/// sleep of a few microseconds would hold the lane for a millisecond.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// Waits `wait` in the lane, unless it is under a timer tick.
async fn pause(wait: Duration) {
    if wait >= TIMER_TICK {
        tokio::time::sleep(wait).await;
    }
}

/// How long a task waits before another try when the coordination store cannot answer.
const STORE_DOWN_RETRY: Duration = Duration::from_secs(1);

/// Decides whether `delivery` runs now under its task's cluster-wide `limit`: answers it back if
/// so; otherwise sends the task back to the broker for later and settles the delivery.
pub(super) async fn admit(
    shared: &Shared,
    task: &RegisteredTask,
    limit: RateLimit,
    envelope: &mut Envelope,
    delivery: Delivery,
) -> Option<Delivery> {
    let app = &shared.app;
    // Back for the slot it reserved: runs at that slot, not before (a broker may deliver a
    // countdown a little early, which the worker's ETA check lets through).
    if envelope.headers.contains_key(RATE_SLOT_HEADER) {
        let early = envelope
            .eta
            .and_then(|slot| slot.duration_since(crate::clock::now()).ok())
            .unwrap_or(Duration::ZERO);
        if early > WAIT_IN_LANE {
            send_back(shared, delivery, envelope, early, true).await;
            return None;
        }
        pause(early).await;
        // A retry of the run asks for a slot of its own.
        envelope.headers.remove(RATE_SLOT_HEADER);
        return Some(delivery);
    }
    let key = match task.options.rate_limit_scope {
        RateLimitScope::Worker => return Some(delivery),
        RateLimitScope::Cluster => format!("rate:{}", task.name),
        RateLimitScope::ClusterPerKey => match (task.rate_key)(app, envelope) {
            Ok(key) => format!("rate:{}:{key}", task.name),
            // Arguments that do not decode fail in the run, with the usual dead letter.
            Err(_) => return Some(delivery),
        },
    };
    let Some(store) = app.coordination() else {
        return Some(delivery);
    };
    // The store bounds its own operations (Redis: its operation timeout): no timer here, on the
    // path of every run.
    let wait = match store.reserve_slot(&key, limit.interval()).await {
        Ok(wait) => wait,
        Err(error) => {
            tracing::warn!(task = %envelope.task, task.id = %envelope.id, error = %Report(&error), "cannot reserve a rate-limit slot; trying the task again in a second");
            send_back(shared, delivery, envelope, STORE_DOWN_RETRY, false).await;
            return None;
        }
    };
    if wait <= WAIT_IN_LANE {
        pause(wait).await;
        return Some(delivery);
    }
    send_back(shared, delivery, envelope, wait, true).await;
    None
}

/// Publishes the task again to run in `after`, marked as holding its slot if `reserved`, then acks
/// the delivery; requeues it instead if the broker refuses, so the task is never lost.
async fn send_back(
    shared: &Shared,
    delivery: Delivery,
    envelope: &Envelope,
    after: Duration,
    reserved: bool,
) {
    let queue = delivery.shared_queue();
    let at = crate::clock::now() + after;
    let mut later = envelope.clone();
    later.eta = Some(at);
    if reserved {
        later
            .headers
            .insert(RATE_SLOT_HEADER.to_owned(), String::new());
    }
    let bytes = match shared.app.encode_envelope(&later) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(error = %Report(&error), "cannot encode a rate-limited task again; requeueing it");
            settle("requeue", &queue, delivery.requeue()).await;
            return;
        }
    };
    super::process::send_back(shared, delivery, bytes, envelope, at, "a rate-limited task").await;
}
