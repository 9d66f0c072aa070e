//! The built-in tower middleware every run goes through: metrics (outermost), then tracing.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower_service::Service;
use tracing::Instrument;

use crate::TaskError;
use crate::metrics::{self, TASK_RUN_SECONDS, TASKS_FAILED, TASKS_STARTED, TASKS_SUCCEEDED};
use crate::service::{TaskOutput, TaskRequest};

/// Counts started / succeeded / failed runs and records run time.
#[derive(Clone, Debug)]
pub(crate) struct MetricsService<S> {
    inner: S,
}

impl<S> MetricsService<S> {
    pub(crate) const fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<TaskRequest> for MetricsService<S>
where
    S: Service<TaskRequest, Response = TaskOutput, Error = TaskError>,
    S::Future: Send + 'static,
{
    type Response = TaskOutput;
    type Error = TaskError;
    type Future = BoxFuture<'static, Result<TaskOutput, TaskError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TaskError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: TaskRequest) -> Self::Future {
        let task = request.context().name().to_owned();
        let queue = request.context().queue().to_owned();
        metrics::increment(TASKS_STARTED, &task, &queue);
        let started = Instant::now();
        let run = self.inner.call(request);
        Box::pin(async move {
            let result = run.await;
            metrics::observe(TASK_RUN_SECONDS, &task, &queue, started.elapsed());
            let counter = if result.is_ok() {
                TASKS_SUCCEEDED
            } else {
                TASKS_FAILED
            };
            metrics::increment(counter, &task, &queue);
            result
        })
    }
}

/// Runs each task inside a `celeriac.task` span with OpenTelemetry messaging fields, and logs the
/// outcome. Arguments are never recorded.
#[derive(Clone, Debug)]
pub(crate) struct TraceService<S> {
    inner: S,
}

impl<S> TraceService<S> {
    pub(crate) const fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<TaskRequest> for TraceService<S>
where
    S: Service<TaskRequest, Response = TaskOutput, Error = TaskError>,
    S::Future: Send + 'static,
{
    type Response = TaskOutput;
    type Error = TaskError;
    type Future = BoxFuture<'static, Result<TaskOutput, TaskError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TaskError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: TaskRequest) -> Self::Future {
        let ctx = request.context();
        let span = tracing::info_span!(
            "celeriac.task",
            task.name = %ctx.envelope().display_name(),
            task.id = %ctx.id(),
            task.retries = ctx.retries(),
            messaging.system = ctx.app().broker().system(),
            messaging.destination.name = %ctx.queue(),
        );
        let run = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let started = Instant::now();
                let result = run.await;
                match &result {
                    Ok(_) => tracing::debug!(elapsed = ?started.elapsed(), "task succeeded"),
                    Err(error) => tracing::warn!(
                        elapsed = ?started.elapsed(),
                        error = %error.chain_message(),
                        "task failed"
                    ),
                }
                result
            }
            .instrument(span),
        )
    }
}
