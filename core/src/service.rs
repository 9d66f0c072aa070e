//! The tower types every task run goes through.
//!
//! A worker turns each message into a [`TaskRequest`] and calls a [`tower::Service`] that answers with
//! a [`TaskOutput`] or a [`TaskError`]. Add your own tower layers with
//! [`WorkerBuilder::layer`](crate::WorkerBuilder::layer): a timeout, a concurrency limit, your own
//! middleware. The stack, outermost first:
//!
//! 1. metrics (started / succeeded / failed counters, run time) and tracing (one `celeriac.task`
//!    span per run) — built in;
//! 2. panic catching — built in: a panic in your layers or in the task is a
//!    [`TaskError::Panicked`], and the worker lives on;
//! 3. your layers, the first added outermost (tower's `ServiceBuilder` rule);
//! 4. the time limit — built in: [`TaskRequest::time_limit`];
//! 5. the task itself: decode the arguments, run, encode the output.
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
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::util::BoxCloneSyncService;
use tower_service::Service;

use crate::{TaskContext, TaskError};

/// One task run, as a tower request: the task's input — its context (id, name, queue, retries, the
/// app) with the message's encoded arguments — and the time limit it is held to.
pub struct TaskRequest {
    context: TaskContext,
    time_limit: Option<Duration>,
}

impl TaskRequest {
    /// A request to run the task `context` describes, under `time_limit`.
    pub fn new(context: TaskContext, time_limit: Option<Duration>) -> Self {
        Self {
            context,
            time_limit,
        }
    }

    /// The task's context: id, name, queue, retries, app.
    pub fn context(&self) -> &TaskContext {
        &self.context
    }

    /// The message's encoded arguments (decoded by the innermost service).
    pub fn args(&self) -> &[u8] {
        &self.context.envelope().args
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

    /// The encoded output, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The type-erased service a worker calls for each run.
pub type BoxTaskService = BoxCloneSyncService<TaskRequest, TaskOutput, TaskError>;

/// The innermost service: finds the registered task the request names, decodes its arguments,
/// runs it and encodes its output. Always ready.
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
        let context = request.context;
        match context.app().registered(context.name()) {
            Some(task) => (task.handler)(context),
            None => {
                let error = TaskError::reject(format!("unknown task `{}`", context.name()));
                Box::pin(std::future::ready(Err(error)))
            }
        }
    }
}
