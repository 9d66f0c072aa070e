use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{Counters, Shared};
use crate::broker::{BrokerError, Delivery, Outgoing};
use crate::metrics::UNKNOWN_TASK;
use crate::service::TaskRequest;
use crate::task::panic_message;
use crate::{Envelope, RetryDecision, TaskContext, TaskError, clock};

/// A message whose ETA is further ahead than this (producer clock ahead, or a broker without delayed
/// delivery) goes back to the broker with its ETA instead of running early.
const EARLY_TOLERANCE: Duration = Duration::from_secs(1);

/// Logs a settlement that failed. The broker redelivers such a message later (at least once).
async fn settle(
    operation: &'static str,
    queue: &str,
    settlement: impl Future<Output = Result<(), BrokerError>>,
) {
    if let Err(error) = settlement.await {
        tracing::error!(%error, queue, operation, "cannot settle message; the broker will redeliver it");
    }
}

async fn dead_letter(shared: &Shared, delivery: Delivery, task: &str, reason: String) {
    let queue = delivery.shared_queue();
    tracing::warn!(queue = %queue, task, %reason, "dead-lettering message");
    shared.metrics.get(task, &queue).dead_lettered.increment(1);
    Counters::add(&shared.report.dead_lettered);
    settle("dead_letter", &queue, delivery.dead_letter(reason)).await;
}

/// Handles one delivery from decoding to settlement. Holds a concurrency slot until it returns.
pub(super) async fn process(
    shared: Arc<Shared>,
    delivery: Delivery,
    _slot: OwnedSemaphorePermit,
    stop_now: CancellationToken,
) {
    let app = &shared.app;
    let envelope = match Envelope::from_bytes(delivery.payload(), app.decode_limits()) {
        Ok(envelope) => envelope,
        Err(error) => {
            let reason = format!("undecodable message: {error}");
            return dead_letter(&shared, delivery, UNKNOWN_TASK, reason).await;
        }
    };
    let Some(task) = app.registered(&envelope.task) else {
        let reason = format!(
            "unknown task `{}`: no task of that name is registered in this worker",
            envelope.task
        );
        return dead_letter(&shared, delivery, UNKNOWN_TASK, reason).await;
    };
    let queue = delivery.shared_queue();
    let metrics = shared.metrics.get(&envelope.task, &queue);

    let now = clock::now();
    if envelope.is_expired_at(now) {
        tracing::info!(task = %envelope.task, task.id = %envelope.id, "task expired before it started; discarding");
        metrics.expired.increment(1);
        Counters::add(&shared.report.expired);
        return settle("ack", &queue, delivery.ack()).await;
    }
    if let Some(eta) = envelope.eta.filter(|eta| *eta > now + EARLY_TOLERANCE) {
        let mut outgoing = Outgoing::new(&*queue, delivery.payload().clone()).not_before(eta);
        outgoing.priority = envelope.priority;
        return match app.broker().publish(outgoing).await {
            Ok(()) => settle("ack", &queue, delivery.ack()).await,
            Err(error) => {
                tracing::warn!(%error, "cannot put back an early message; requeueing it");
                settle("requeue", &queue, delivery.requeue()).await;
            }
        };
    }

    if let Some(limiter) = shared.rate_limiters.get(envelope.task.as_str()) {
        tokio::select! {
            () = limiter.acquire() => {}
            () = stop_now.cancelled() => {
                Counters::add(&shared.report.requeued);
                return settle("requeue", &queue, delivery.requeue()).await;
            }
        }
    }

    let waited_since = envelope
        .eta
        .unwrap_or(envelope.created_at)
        .max(envelope.created_at);
    let waited = clock::now()
        .duration_since(waited_since)
        .unwrap_or(Duration::ZERO);
    metrics.queue_wait_seconds.record(waited.as_secs_f64());

    // Acks early (at most once) when the task asked for it; late (at least once) otherwise.
    let mut delivery = Some(delivery);
    if !task.options.acks_late
        && let Some(early) = delivery.take()
    {
        settle("ack", &queue, early.ack()).await;
    }

    let time_limit = envelope.time_limit.hard.or(task.options.time_limit);
    let retries = envelope.retries;
    let context = TaskContext::new(app.clone(), envelope);
    let request = TaskRequest::new(context.clone(), task.handler, time_limit, metrics.clone());
    let run = AssertUnwindSafe(shared.service.clone().oneshot(request)).catch_unwind();
    let result = tokio::select! {
        outcome = run => outcome.unwrap_or_else(|payload| Err(TaskError::Panicked(panic_message(&*payload)))),
        () = stop_now.cancelled() => {
            if let Some(delivery) = delivery {
                tracing::info!(task = %context.name(), task.id = %context.id(), "shutdown: requeueing running task");
                Counters::add(&shared.report.requeued);
                settle("requeue", &queue, delivery.requeue()).await;
            }
            return;
        }
    };

    let error = match result {
        Ok(_) => {
            Counters::add(&shared.report.succeeded);
            if let Some(delivery) = delivery {
                settle("ack", &queue, delivery.ack()).await;
            }
            return;
        }
        Err(error) => error,
    };
    let name = context.name();
    match task
        .options
        .retry
        .decide(retries, &error, &mut fastrand::Rng::new())
    {
        RetryDecision::RetryIn(delay) => {
            let mut next = Envelope::clone(context.shared_envelope());
            next.retries += 1;
            next.eta = Some(clock::now() + delay);
            match app.publish(next).await {
                Ok(_) => {
                    tracing::info!(task = %name, task.id = %context.id(), retry = retries + 1, ?delay, error = %error, "retry scheduled");
                    metrics.retried.increment(1);
                    Counters::add(&shared.report.retried);
                    if let Some(delivery) = delivery {
                        settle("ack", &queue, delivery.ack()).await;
                    }
                }
                Err(publish_error) => {
                    tracing::error!(%publish_error, task = %name, "cannot publish the retry; requeueing the task");
                    if let Some(delivery) = delivery {
                        settle("requeue", &queue, delivery.requeue()).await;
                    }
                }
            }
        }
        RetryDecision::GiveUp => {
            let reason = match retries {
                0 => format!("task `{name}` failed: {}", error.chain_message()),
                n => format!(
                    "task `{name}` failed after {n} retries: {}",
                    error.chain_message()
                ),
            };
            match delivery {
                Some(delivery) => dead_letter(&shared, delivery, name, reason).await,
                None => {
                    tracing::error!(task = %name, %reason, "task failed (acked early, so it is not dead-lettered)")
                }
            }
        }
    }
}
