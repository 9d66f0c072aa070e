//! Panic catching: the one place a panic in task code or in a user's layer is caught. It becomes
//! [`TaskError::Panicked`], which the retry policy treats like any failure, and the worker lives on.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{CatchUnwind, Either, Map, Ready, ready};
use tower_service::Service;

use crate::TaskError;
use crate::service::TaskRequest;
use crate::task::panic_message;

/// Turns a panic — while a layer builds the run's future or while the run is polled — into
/// [`TaskError::Panicked`]. Outermost of the run's services, inside only metrics and tracing.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CatchPanic<S> {
    inner: S,
}

type Caught<T> = Result<Result<T, TaskError>, Box<dyn Any + Send>>;

fn flatten<T>(caught: Caught<T>) -> Result<T, TaskError> {
    caught.unwrap_or_else(|payload| Err(TaskError::Panicked(panic_message(&*payload))))
}

/// The future of a run under [`CatchPanic`].
pub(crate) type CatchPanicFuture<F, T> = Either<
    Map<CatchUnwind<AssertUnwindSafe<F>>, fn(Caught<T>) -> Result<T, TaskError>>,
    Ready<Result<T, TaskError>>,
>;

// ===== impl CatchPanic =====

impl<S> CatchPanic<S> {
    pub(crate) const fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, T> Service<TaskRequest> for CatchPanic<S>
where
    S: Service<TaskRequest, Response = T, Error = TaskError>,
{
    type Response = T;
    type Error = TaskError;
    type Future = CatchPanicFuture<S::Future, T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TaskError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: TaskRequest) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
            Ok(future) => Either::Left(
                AssertUnwindSafe(future)
                    .catch_unwind()
                    .map(flatten::<T> as fn(Caught<T>) -> Result<T, TaskError>),
            ),
            Err(payload) => {
                Either::Right(ready(Err(TaskError::Panicked(panic_message(&*payload)))))
            }
        }
    }
}
