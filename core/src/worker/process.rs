//! One delivery, from decoding to settlement.
//!
//! A lane (see [`lane`](super::lane)) awaits `process` for each delivery it takes. The hot path
//! (decode, run, ack) stays inline in that future; every rare path (dead letter, early ETA, rate
//! limit, retry, shutdown) is boxed, so the future stays small: it lives on the lane's stack frame
//! once per run, and its size is per-task memory traffic.

use std::sync::Arc;
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::future::{BoxFuture, Either};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_service::Service;

use super::control::Running;
use super::lane::LaneMetrics;
use super::workflow;
use super::{Counters, Shared};
use crate::broker::{BrokerError, Delivery};
use crate::error::Report;
use crate::events::{EventKind, Record};
use crate::layers::catch_panic::CatchPanic;
use crate::layers::instrumented;
use crate::layers::time_limit::TimeLimit;
use crate::metrics::{TaskMetrics, UNKNOWN_TASK};
use crate::result::record::Cause;
use crate::result::store;
use crate::service::{RunTask, TaskRequest};
use crate::task::registry::RegisteredTask;
use crate::{Envelope, RetryDecision, TaskContext, TaskError, TaskId, clock};

/// A message from a broker that delays whose ETA is further ahead than this (a producer clock ahead)
/// goes back to the broker with its ETA instead of running early.
const EARLY_TOLERANCE: Duration = Duration::from_secs(1);

/// Awaits a settlement and logs it if it failed.
pub(super) async fn settle(
    operation: &'static str,
    queue: &str,
    settlement: impl Future<Output = Result<(), BrokerError>>,
) {
    report(operation, queue, settlement.await);
}

/// Logs a settlement that failed. The broker redelivers such a message later (at least once).
fn report(operation: &'static str, queue: &str, settled: Result<(), BrokerError>) {
    if let Err(error) = settled {
        tracing::error!(error = %Report(&error), queue, operation, "cannot settle message; the broker will redeliver it");
    }
}

async fn dead_letter(
    shared: &Shared,
    delivery: Delivery,
    task: &str,
    id: Option<TaskId>,
    reason: String,
) {
    let queue = delivery.shared_queue();
    shared.emit(|| EventKind::TaskDeadLettered {
        uuid: id,
        name: task.to_owned(),
        reason: reason.clone(),
    });
    tracing::warn!(queue = %queue, task, %reason, "dead-lettering message");
    shared.metrics.get(task, &queue).dead_lettered.increment(1);
    Counters::add(&shared.report.dead_lettered);
    settle("dead_letter", &queue, delivery.dead_letter(reason)).await;
}

/// Records why a task that will not run has no result, then dead-letters its message.
async fn refuse(
    shared: &Shared,
    delivery: Delivery,
    envelope: &Envelope,
    task: &str,
    reason: String,
) {
    let why = reason.clone();
    workflow::ended(&shared.app, envelope, Cause::DeadLettered, why).await;
    dead_letter(shared, delivery, task, Some(envelope.id), reason).await;
}

/// Handles one delivery from decoding to settlement. A successful run's ack that the broker has not
/// confirmed yet is returned, to be awaited while the lane runs its next task.
pub(super) async fn process(
    shared: &Shared,
    lane: usize,
    lane_metrics: &mut LaneMetrics,
    mut delivery: Delivery,
    stops: Stops<'_>,
) -> Option<PendingAck> {
    let stop_now = stops.now;
    let app = &shared.app;
    let mut envelope = match app.open_envelope(delivery.payload()) {
        Ok(envelope) => envelope,
        Err(error) => {
            let reason = format!("undecodable message: {}", Report(&error));
            Box::pin(dead_letter(shared, delivery, UNKNOWN_TASK, None, reason)).await;
            return None;
        }
    };
    if let Some(control) = &shared.control
        && control.revoked.contains(envelope.id)
    {
        Box::pin(drop_revoked(shared, delivery, &envelope)).await;
        return None;
    }
    let Some(task) = app.registered(&envelope.task) else {
        let reason = format!(
            "unknown task `{}`: no task of that name is registered in this worker",
            envelope.task
        );
        Box::pin(refuse(shared, delivery, &envelope, UNKNOWN_TASK, reason)).await;
        return None;
    };
    if let Some(reason) = task.schema_mismatch(envelope.args_schema) {
        Box::pin(refuse(shared, delivery, &envelope, task.name, reason)).await;
        return None;
    }
    let queue = delivery.shared_queue();
    let metrics = lane_metrics.get(&shared.metrics, task.name, &queue);
    // One clock read serves the event and the expiry check.
    let arrived = tokio::time::Instant::now();
    shared.emit_at(arrived, || Record::Received {
        uuid: envelope.id,
        name: task.name,
        queue: metrics.queue,
        retries: envelope.retries,
    });

    let now = clock::wall_at(arrived);
    if envelope.is_expired_at(now) {
        tracing::info!(task = %envelope.task, task.id = %envelope.id, "task expired before it started; discarding");
        metrics.expired.increment(1);
        Counters::add(&shared.report.expired);
        let reason = "expired before it started".to_owned();
        Box::pin(workflow::ended(app, &envelope, Cause::Expired, reason)).await;
        settle("ack", &queue, delivery.ack()).await;
        return None;
    }
    let mut now = now;
    // A broker that delays delivered it at about its time: a little early is due. Without delays,
    // the message came at once and the worker keeps the whole wait.
    let tolerance = if shared.broker_delays {
        EARLY_TOLERANCE
    } else {
        Duration::ZERO
    };
    if let Some(eta) = envelope.eta.filter(|eta| *eta > now + tolerance) {
        if shared.broker_delays {
            Box::pin(put_back_early(shared, delivery, &envelope, eta)).await;
            return None;
        }
        // A broker without delays (kombu's layout, as Celery uses Redis) leaves ETAs to the
        // workers, as Celery's do: this lane holds the task, unacknowledged, until it is due.
        let due = tokio::time::sleep_until(clock::instant_at(eta));
        tokio::select! {
            () = due => now = clock::now(),
            () = stops.fetching.cancelled() => {
                settle("requeue", &queue, delivery.requeue()).await;
                return None;
            }
        }
    }
    if envelope
        .workflow
        .as_ref()
        .is_some_and(|workflow| workflow.chord_callback)
        && Box::pin(already_succeeded(app, &envelope)).await
    {
        tracing::info!(task = %envelope.task, task.id = %envelope.id, "dropping a copy of a chord's callback that already succeeded");
        settle("ack", &queue, delivery.ack()).await;
        return None;
    }
    if envelope.headers.contains_key(crate::beat::SEND_HEADER)
        && Box::pin(crate::beat::is_second_copy(app, &envelope)).await
    {
        tracing::info!(task = %envelope.task, task.id = %envelope.id, "dropping a second copy of a beat's tick that ran already");
        ::metrics::counter!(crate::metrics::BEAT_COPIES_DROPPED, "task" => envelope.task.clone())
            .increment(1);
        settle("ack", &queue, delivery.ack()).await;
        return None;
    }
    let mut starts_at = now;
    if let Some(limit) = task.options.rate_limit
        && task.options.rate_limit_scope != crate::RateLimitScope::Worker
    {
        let admitted = Box::pin(super::cluster_rate::admit(
            shared,
            task,
            limit,
            &mut envelope,
            delivery,
        ));
        match admitted.await {
            Some(admitted) => delivery = admitted,
            None => return None,
        }
        starts_at = clock::now();
    } else if let Some(limiter) = shared.rate_limiters.get(envelope.task.as_str())
        && limiter.is_limited()
    {
        let limited = Box::pin(async {
            tokio::select! {
                () = limiter.acquire() => true,
                () = stop_now.cancelled() => false,
            }
        });
        if !limited.await {
            Counters::add(&shared.report.requeued);
            Box::pin(settle("requeue", &queue, delivery.requeue())).await;
            return None;
        }
        starts_at = clock::now();
    }

    let waited_since = envelope
        .eta
        .unwrap_or(envelope.created_at)
        .max(envelope.created_at);
    let waited = starts_at
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

    if task.options.track_started {
        Box::pin(store::started(app, &envelope)).await;
    }
    let time_limit = envelope.time_limit.or(task.options.time_limit);
    // One clock read serves the run's metrics and its event.
    let started = tokio::time::Instant::now();
    let started_at = shared.events.get().map(|events| {
        events.started();
        events.emit_at(
            Record::Started {
                uuid: envelope.id,
                name: task.name,
            },
            started,
        );
        started
    });
    let context = TaskContext::new(app.clone(), envelope);
    let request = TaskRequest::new(context.clone(), time_limit);
    // The run path (see `layers`): panics caught, the user's layers if any, the time limit, the task.
    let run = instrumented(request, metrics.clone(), started, |request| {
        match &shared.layered {
            Some(service) => Either::Left(CatchPanic::new(service.clone()).oneshot(request)),
            // Every service of the unlayered stack is always ready: call it directly.
            None => Either::Right(CatchPanic::new(TimeLimit::new(RunTask)).call(request)),
        }
    });
    let mut run = std::pin::pin!(run);
    // Most runs finish on their first poll; only a run that waits needs the shutdown watch, and
    // shows in remote control's `active` (which can stop it).
    let (outcome, ended) = match futures::poll!(run.as_mut()) {
        Poll::Ready(outcome) => outcome,
        Poll::Pending => {
            let running = shared.control.as_ref().and_then(|control| {
                control.running(
                    lane,
                    Running {
                        id: context.id(),
                        name: task.name,
                        queue: queue.clone(),
                        retries: context.retries(),
                        started: starts_at,
                        terminate: CancellationToken::new(),
                    },
                )
            });
            let terminated = async {
                match &running {
                    Some(running) => running.terminate.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = &mut run => outcome,
                () = stop_now.cancelled() => {
                    shared.ended_run(started_at, |_| None::<Record>);
                    if let Some(delivery) = delivery {
                        tracing::info!(task = %context.name(), task.id = %context.id(), "shutdown: requeueing running task");
                        Counters::add(&shared.report.requeued);
                        Box::pin(settle("requeue", &queue, delivery.requeue())).await;
                    }
                    return None;
                }
                () = terminated => {
                    drop(running);
                    Box::pin(stop_revoked(shared, &context, delivery, &queue, started_at)).await;
                    return None;
                }
            }
        }
    };
    match outcome {
        Ok(output) => {
            Counters::add(&shared.report.succeeded);
            shared.ended_run_at(started_at, ended, |runtime| {
                Some(Record::Succeeded {
                    uuid: context.id(),
                    name: task.name,
                    runtime,
                })
            });
            // The result is stored before the ack (a worker that dies in between runs the task
            // again, and the backend keeps the first success); neither holds the lane.
            // What follows in its workflow is sent before the ack too.
            // A unique key held until the task has run is released before the ack too, and a
            // beat's tick is written down as run (a copy delivered again is dropped).
            let envelope = context.envelope();
            let holds_key = envelope.headers.contains_key(crate::app::UNIQUE_HEADER);
            let is_tick = envelope.headers.contains_key(crate::beat::SEND_HEADER);
            if store::wanted(app, envelope) || envelope.workflow.is_some() || holds_key || is_tick {
                let (app, envelope) = (app.clone(), context.shared_envelope().clone());
                let output = output.into_bytes();
                let stored = async move {
                    if holds_key {
                        crate::app::release_after_run(&app, &envelope).await;
                    }
                    if is_tick {
                        crate::beat::ran(&app, &envelope).await;
                    }
                    if envelope.workflow.is_none() {
                        store::success(&app, &envelope, output).await;
                        return true;
                    }
                    store::success(&app, &envelope, output.clone()).await;
                    workflow::succeeded(&app, &envelope, &output).await
                };
                return Some(PendingAck::after(queue, stored, delivery));
            }
            // The run is over: its ack (a broker round trip, maybe) does not hold the lane. The
            // broker's prefetch still bounds how many deliveries are unsettled at once.
            PendingAck::start(queue, delivery?).await
        }
        Err(error) => {
            let failed = Failed {
                task,
                context,
                metrics: &metrics,
                queue: &queue,
                error,
                started_at,
                ended,
            };
            Box::pin(after_failure(shared, failed, delivery)).await;
            None
        }
    }
}

/// Drops a revoked task that arrived: records it as revoked (its workflow stops), then acks it.
async fn drop_revoked(shared: &Shared, delivery: Delivery, envelope: &Envelope) {
    let queue = delivery.shared_queue();
    tracing::info!(task = %envelope.task, task.id = %envelope.id, "dropping a revoked task");
    shared.emit(|| EventKind::TaskRevoked {
        uuid: envelope.id,
        name: envelope.task.clone(),
        terminated: false,
    });
    Counters::add(&shared.report.revoked);
    let reason = "revoked before it ran".to_owned();
    workflow::ended(&shared.app, envelope, Cause::Revoked, reason).await;
    settle("ack", &queue, delivery.ack()).await;
}

/// After a running task was stopped by a revoke: records it as revoked, then acks it.
async fn stop_revoked(
    shared: &Shared,
    context: &TaskContext,
    delivery: Option<Delivery>,
    queue: &str,
    started_at: Option<tokio::time::Instant>,
) {
    tracing::info!(task = %context.name(), task.id = %context.id(), "revoked: stopped a running task");
    shared.ended_run(started_at, |_| {
        Some(EventKind::TaskRevoked {
            uuid: context.id(),
            name: context.name().to_owned(),
            terminated: true,
        })
    });
    Counters::add(&shared.report.revoked);
    let reason = "revoked and terminated while it ran".to_owned();
    workflow::ended(&shared.app, context.envelope(), Cause::Revoked, reason).await;
    if let Some(delivery) = delivery {
        settle("ack", queue, delivery.ack()).await;
    }
}

/// Whether the task of `envelope` has a stored success (a chord's callback sent twice).
async fn already_succeeded(app: &crate::App, envelope: &Envelope) -> bool {
    let Some(backend) = app.result_backend() else {
        return false;
    };
    match backend.fetch(&envelope.id.to_string()).await {
        Ok(stored) => stored.is_some_and(|stored| stored.state == crate::ResultState::Success),
        Err(error) => {
            tracing::warn!(task = %envelope.task, task.id = %envelope.id, error = %Report(&error), "cannot check whether the chord's callback ran already; running it");
            false
        }
    }
}

/// A successful run's ack, sent but not confirmed yet.
pub(super) struct PendingAck {
    queue: Arc<str>,
    confirmation: BoxFuture<'static, Result<(), BrokerError>>,
}

impl PendingAck {
    /// Runs `first` (storing the result, sending what follows in the workflow), then sends the
    /// ack of `delivery` if the task has one left to send (an early-acked task has none) — or
    /// requeues it when `first` says it could not do its part.
    fn after(
        queue: Arc<str>,
        first: impl Future<Output = bool> + Send + 'static,
        delivery: Option<Delivery>,
    ) -> Self {
        let confirmation = Box::pin(async move {
            let done = first.await;
            match delivery {
                Some(delivery) if done => delivery.into_ack().await,
                Some(delivery) => delivery.requeue().await,
                None => Ok(()),
            }
        });
        Self {
            queue,
            confirmation,
        }
    }

    /// Sends the ack. Returns `None` when the broker settled it at once (the common case for the
    /// embedded broker), the pending confirmation otherwise.
    async fn start(queue: Arc<str>, delivery: Delivery) -> Option<Self> {
        let mut confirmation = delivery.into_ack();
        match futures::poll!(&mut confirmation) {
            Poll::Ready(result) => {
                report("ack", &queue, result);
                None
            }
            Poll::Pending => Some(Self {
                queue,
                confirmation,
            }),
        }
    }
}

impl Future for PendingAck {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let result = ready!(self.confirmation.as_mut().poll(cx));
        report("ack", &self.queue, result);
        Poll::Ready(())
    }
}

/// What stops a lane's work: the end of fetching (a shutdown began), and the end of the grace
/// period (running tasks are stopped).
#[derive(Clone, Copy)]
pub(super) struct Stops<'a> {
    pub(super) fetching: &'a CancellationToken,
    pub(super) now: &'a CancellationToken,
}

/// Sends a message that arrived well before its ETA back to the broker with that ETA.
async fn put_back_early(
    shared: &Shared,
    delivery: Delivery,
    envelope: &Envelope,
    eta: std::time::SystemTime,
) {
    let payload = delivery.payload().clone();
    send_back(shared, delivery, payload, envelope, eta, "an early message").await;
}

/// Publishes `payload` (the delivery's message, or a changed copy of it) to run at `eta`, then acks
/// `delivery`; requeues it instead if the broker refuses, so the task is never lost. `what` names
/// the message in the warning.
pub(super) async fn send_back(
    shared: &Shared,
    delivery: Delivery,
    payload: impl Into<bytes::Bytes>,
    envelope: &Envelope,
    eta: std::time::SystemTime,
    what: &str,
) {
    let queue = delivery.shared_queue();
    let outgoing = shared
        .app
        .message_for_broker(&queue, payload, Some(eta), envelope.priority);
    match shared.app.broker().publish(outgoing).await {
        Ok(()) => settle("ack", &queue, delivery.ack()).await,
        Err(error) => {
            tracing::warn!(error = %Report(&error), "cannot send {what} back to the broker; requeueing it");
            settle("requeue", &queue, delivery.requeue()).await;
        }
    }
}

/// A run that failed.
struct Failed<'a> {
    task: &'a RegisteredTask,
    context: TaskContext,
    metrics: &'a TaskMetrics,
    queue: &'a str,
    error: TaskError,
    /// When the run started, if the worker sends events.
    started_at: Option<tokio::time::Instant>,
    /// When it ended.
    ended: tokio::time::Instant,
}

/// Schedules a retry or dead-letters the message, as the task's retry policy decides.
async fn after_failure(shared: &Shared, failed: Failed<'_>, delivery: Option<Delivery>) {
    let Failed {
        task,
        context,
        metrics,
        queue,
        error,
        started_at,
        ended,
    } = failed;
    let name = context.name();
    let retries = context.retries();
    let decision = task.options.retry.decide(retries, &error);
    shared.ended_run_at(started_at, ended, |runtime| {
        let (uuid, name, exception) = (context.id(), name.to_owned(), error.chain_message());
        Some(match decision {
            RetryDecision::RetryIn(_) => EventKind::TaskRetried {
                uuid,
                name,
                runtime,
                exception,
                retries: retries + 1,
            },
            RetryDecision::GiveUp => EventKind::TaskFailed {
                uuid,
                name,
                runtime,
                exception,
            },
        })
    });
    match decision {
        RetryDecision::RetryIn(delay) => {
            let mut next = Envelope::clone(context.shared_envelope());
            next.retries += 1;
            next.eta = Some(clock::now() + delay);
            match shared.app.publish(next).await {
                Ok(_) => {
                    let message = error.chain_message();
                    tracing::info!(task = %name, task.id = %context.id(), retry = retries + 1, ?delay, error = %message, "retry scheduled");
                    store::retrying(&shared.app, context.envelope(), message).await;
                    metrics.retried.increment(1);
                    Counters::add(&shared.report.retried);
                    if let Some(delivery) = delivery {
                        settle("ack", queue, delivery.ack()).await;
                    }
                }
                Err(publish_error) => {
                    tracing::error!(%publish_error, task = %name, "cannot publish the retry; requeueing the task");
                    if let Some(delivery) = delivery {
                        settle("requeue", queue, delivery.requeue()).await;
                    }
                }
            }
        }
        RetryDecision::GiveUp => {
            let message = error.chain_message();
            let reason = match retries {
                0 => format!("task `{name}` failed: {message}"),
                n => format!("task `{name}` failed after {n} retries: {message}"),
            };
            workflow::ended(&shared.app, context.envelope(), Cause::Failed, message).await;
            match delivery {
                Some(delivery) => {
                    dead_letter(shared, delivery, name, Some(context.id()), reason).await;
                }
                None => {
                    tracing::error!(task = %name, %reason, "task failed (acked early, so it is not dead-lettered)")
                }
            }
        }
    }
}
