//! The built-in middleware every run goes through: one `celeriac.task` tracing span and the run
//! metrics (started / succeeded / failed, run time), in a single layer outside the user's layers.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::time::Instant;
use tower_service::Service;
use tracing::Instrument;

use crate::TaskError;
use crate::service::{TaskOutput, TaskRequest};

/// Records metrics and a tracing span around each run. Arguments are never recorded.
#[derive(Clone, Debug)]
pub(crate) struct InstrumentService<S> {
    inner: S,
}

impl<S> InstrumentService<S> {
    pub(crate) const fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S> Service<TaskRequest> for InstrumentService<S>
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
        let metrics = request.metrics().clone();
        let ctx = request.context();
        let span = tracing::info_span!(
            "celeriac.task",
            task.name = %ctx.envelope().display_name(),
            task.id = %ctx.id(),
            task.retries = ctx.retries(),
            messaging.system = ctx.app().broker().system(),
            messaging.destination.name = %ctx.queue(),
        );
        metrics.started.increment(1);
        let started = Instant::now();
        let run = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
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
            .instrument(span),
        )
    }
}
