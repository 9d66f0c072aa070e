//! The time limit: a run that outlasts its limit is cancelled and fails with
//! [`TaskError::TimeLimit`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower_service::Service;

use crate::TaskError;
use crate::service::TaskRequest;

/// Holds each run to its [`TaskRequest::time_limit`] (the send's own, else the task's).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimeLimit<S> {
    inner: S,
}

// ===== impl TimeLimit =====

impl<S> TimeLimit<S> {
    pub(crate) const fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, T> Service<TaskRequest> for TimeLimit<S>
where
    S: Service<TaskRequest, Response = T, Error = TaskError>,
{
    type Response = T;
    type Error = TaskError;
    type Future = TimeLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TaskError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: TaskRequest) -> Self::Future {
        match request.time_limit() {
            Some(limit) => TimeLimitFuture::Limited {
                future: tokio::time::timeout(limit, self.inner.call(request)),
                limit,
            },
            None => TimeLimitFuture::Unlimited {
                future: self.inner.call(request),
            },
        }
    }
}

pin_project! {
    /// The future of a run under [`TimeLimit`].
    #[project = TimeLimitProjection]
    pub(crate) enum TimeLimitFuture<F> {
        Limited { #[pin] future: tokio::time::Timeout<F>, limit: Duration },
        Unlimited { #[pin] future: F },
    }
}

impl<F, T> Future for TimeLimitFuture<F>
where
    F: Future<Output = Result<T, TaskError>>,
{
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TimeLimitProjection::Limited { future, limit } => match future.poll(cx) {
                Poll::Ready(Ok(outcome)) => Poll::Ready(outcome),
                Poll::Ready(Err(_elapsed)) => Poll::Ready(Err(TaskError::TimeLimit(*limit))),
                Poll::Pending => Poll::Pending,
            },
            TimeLimitProjection::Unlimited { future } => future.poll(cx),
        }
    }
}
