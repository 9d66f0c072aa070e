//! The tower types every task run goes through.
//!
//! A worker turns each message into a [`TaskRequest`] and calls a [`tower::Service`] that answers with
//! a [`TaskOutput`] or a [`TaskError`]. Add your own tower layers with
//! [`WorkerBuilder::layer`](crate::WorkerBuilder::layer): a timeout, a concurrency limit, your own
//! middleware. The stack, outermost first:
//!
//! 1. metrics (started / succeeded / failed counters, run time) and tracing (one `celeriac.task`
//!    span per run) — built in;
//! 2. your layers, the first added outermost (tower's `ServiceBuilder` rule);
//! 3. the task itself, with its time limit and panic catching.
//!
//! ```
//! use std::time::Duration;
//! use celeriac::service::TaskRequest;
//! use celeriac::{App, MemoryBroker};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), celeriac::Error> {
//! let app = App::builder().broker(MemoryBroker::new()).build()?;
//! let worker = app
//!     .worker()
//!     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(60)))
//!     .layer(tower::layer::layer_fn(|inner| {
//!         tower::service_fn(move |request: TaskRequest| {
//!             tracing::debug!(task = request.context().name(), "about to run");
//!             tower::ServiceExt::oneshot(Clone::clone(&inner), request)
//!         })
//!     }))
//!     .build()?;
//! # let _ = (worker, ServiceBuilder::new()); Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower_service::Service;

use crate::metrics::TaskMetrics;
use crate::task::registry::Handler;
use crate::{TaskContext, TaskError};

/// One task run, as a tower request.
pub struct TaskRequest {
    context: TaskContext,
    handler: Handler,
    time_limit: Option<Duration>,
    metrics: Arc<TaskMetrics>,
}

impl TaskRequest {
    pub(crate) fn new(
        context: TaskContext,
        handler: Handler,
        time_limit: Option<Duration>,
        metrics: Arc<TaskMetrics>,
    ) -> Self {
        Self {
            context,
            handler,
            time_limit,
            metrics,
        }
    }

    pub(crate) fn metrics(&self) -> &Arc<TaskMetrics> {
        &self.metrics
    }

    /// The task's context: id, name, queue, retries, app.
    pub fn context(&self) -> &TaskContext {
        &self.context
    }

    /// The time limit this run is held to, if any.
    pub fn time_limit(&self) -> Option<Duration> {
        self.time_limit
    }
}

impl fmt::Debug for TaskRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskRequest")
            .field("context", &self.context)
            .field("time_limit", &self.time_limit)
            .finish_non_exhaustive()
    }
}

/// A successful run's encoded output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskOutput {
    bytes: Vec<u8>,
}

impl TaskOutput {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// The output, encoded with the app's codec.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The type-erased service a worker calls for each run.
pub type BoxTaskService = BoxCloneSyncService<TaskRequest, TaskOutput, TaskError>;

/// The innermost service: runs the task's code under its time limit and turns a panic into
/// [`TaskError::Panicked`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RunTask;

impl Service<TaskRequest> for RunTask {
    type Response = TaskOutput;
    type Error = TaskError;
    type Future = BoxFuture<'static, Result<TaskOutput, TaskError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: TaskRequest) -> Self::Future {
        (request.handler)(request.context, request.time_limit)
    }
}
