//! The built-in parts of the run path. Outermost first:
//!
//! 1. [`instrumented`]: one `celeriac.task` tracing span and the run metrics (started / succeeded /
//!    failed, run time). It wraps the run's future rather than being a service, so it adds no boxed
//!    future per run;
//! 2. [`CatchPanic`](catch_panic::CatchPanic): the one place panics are caught;
//! 3. the user's layers, if any (boxed once, as [`BoxTaskService`](crate::service::BoxTaskService));
//! 4. [`TimeLimit`](time_limit::TimeLimit): cancels a run past its limit;
//! 5. [`RunTask`](crate::service::RunTask): decodes the arguments, runs the task, encodes its output.
//!
//! Without user layers, 3 is absent and the worker calls `CatchPanic<TimeLimit<RunTask>>` directly:
//! the same services, with no box between them.

pub(crate) mod catch_panic;
pub(crate) mod time_limit;

use std::sync::Arc;

use std::future::Future;

use tokio::time::Instant;
use tracing::Instrument;

use crate::TaskError;
use crate::metrics::TaskMetrics;
use crate::service::{TaskOutput, TaskRequest};

/// Runs `call(request)`, started at `started`, inside the run's span and records its metrics;
/// returns its outcome and the instant it ended (one clock read serves the metric and the event).
/// Arguments are never recorded.
pub(crate) fn instrumented<C, F>(
    request: TaskRequest,
    metrics: Arc<TaskMetrics>,
    started: Instant,
    call: C,
) -> impl Future<Output = (Result<TaskOutput, TaskError>, Instant)> + Send
where
    C: FnOnce(TaskRequest) -> F,
    F: Future<Output = Result<TaskOutput, TaskError>> + Send,
{
    let ctx = request.context();
    // With OpenTelemetry, the run span is a consumer span named as the messaging conventions
    // say, and continues the trace its message carries.
    #[cfg(feature = "opentelemetry")]
    let span = {
        let span = tracing::info_span!(
            "celeriac.task",
            task.name = %ctx.envelope().task,
            task.id = %ctx.id(),
            task.retries = ctx.retries(),
            messaging.system = ctx.app().broker().system(),
            messaging.destination.name = %ctx.queue(),
            messaging.operation.type = "process",
            messaging.message.id = %ctx.id(),
            otel.kind = "consumer",
            otel.name = %format_args!("process {}", ctx.queue()),
        );
        crate::trace_context::continue_trace(&span, &ctx.envelope().headers);
        span
    };
    #[cfg(not(feature = "opentelemetry"))]
    let span = tracing::info_span!(
        "celeriac.task",
        task.name = %ctx.envelope().task,
        task.id = %ctx.id(),
        task.retries = ctx.retries(),
        messaging.system = ctx.app().broker().system(),
        messaging.destination.name = %ctx.queue(),
    );
    metrics.started.increment(1);
    let run = {
        let _entered = span.enter();
        call(request)
    };
    async move {
        let result = run.await;
        let ended = Instant::now();
        let elapsed = ended.saturating_duration_since(started);
        metrics.run_seconds.record(elapsed.as_secs_f64());
        match &result {
            Ok(_) => {
                metrics.succeeded.increment(1);
                tracing::debug!(?elapsed, "task succeeded");
            }
            Err(error) => {
                metrics.failed.increment(1);
                tracing::warn!(?elapsed, error = %error.chain_message(), "task failed");
            }
        }
        (result, ended)
    }
    .instrument(span)
}
