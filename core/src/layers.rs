//! The built-in instrumentation every run goes through: one `celeriac.task` tracing span and the run
//! metrics (started / succeeded / failed, run time), outside the user's tower layers.
//!
//! It wraps the run's future instead of being a tower layer of its own, so a worker without user
//! layers calls the task directly: no boxed service, no extra boxed future per run.

use std::future::Future;

use tokio::time::Instant;
use tracing::Instrument;

use crate::TaskError;
use crate::service::{TaskOutput, TaskRequest};

/// Runs `call(request)` inside the run's span and records its metrics. Arguments are never recorded.
pub(crate) fn instrumented<C, F>(
    request: TaskRequest,
    call: C,
) -> impl Future<Output = Result<TaskOutput, TaskError>> + Send
where
    C: FnOnce(TaskRequest) -> F,
    F: Future<Output = Result<TaskOutput, TaskError>> + Send,
{
    let metrics = request.metrics().clone();
    let ctx = request.context();
    let span = tracing::info_span!(
        "celeriac.task",
        task.name = %ctx.envelope().task,
        task.id = %ctx.id(),
        task.retries = ctx.retries(),
        messaging.system = ctx.app().broker().system(),
        messaging.destination.name = %ctx.queue(),
    );
    metrics.started.increment(1);
    let started = Instant::now();
    let run = {
        let _entered = span.enter();
        call(request)
    };
    async move {
        let result = run.await;
        let elapsed = started.elapsed();
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
        result
    }
    .instrument(span)
}
