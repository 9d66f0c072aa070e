use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::record::{Cause, ResultRecord};
use super::{ResultBackend, ResultError, ResultState, StoredResult};
use crate::codec::CodecError;
use crate::{App, CodecExt, TaskId};

/// A handle on the outcome of one task run, typed by the task's output (Celery's `AsyncResult`).
///
/// `delay` returns one; it derefs to the task's [`TaskId`]. [`get`](Self::get) waits for the
/// outcome — pushed by the result backend, never polled — and gives the task's output or says why
/// there is none: failed (with its error and the retries it used), dead-lettered, expired, revoked.
///
/// ```
/// use std::time::Duration;
/// use celeriac::App;
///
/// #[celeriac::task]
/// async fn add(a: i64, b: i64) -> Result<i64, std::convert::Infallible> {
///     Ok(a + b)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // `memory://` keeps results in memory; Redis and RabbitMQ apps add `result_backend_url(…)`.
/// let app = App::builder().broker_url("memory://async-result-doc").register::<add>().build()?;
/// let worker = app.worker().build()?;
/// tokio::spawn(worker.run_until(std::future::pending()));
///
/// let sum = add::delay(&app, 2, 3).await?;
/// assert_eq!(sum.get_timeout(Duration::from_secs(5)).await?, 5);
/// assert_eq!(sum.state().await?, celeriac::ResultState::Success);
/// # Ok(()) }
/// ```
pub struct AsyncResult<T> {
    app: App,
    id: TaskId,
    /// The task's name when it is known to ignore its result.
    ignored_by: Option<&'static str>,
    output: PhantomData<fn() -> T>,
}

impl<T> AsyncResult<T> {
    /// A handle on task `id`'s result, e.g. in another process than the one that sent it. `T` is the
    /// task's output type; a stored output of another type is a [`ResultError::Decode`].
    ///
    /// ```
    /// use celeriac::{App, AsyncResult, TaskId};
    ///
    /// # fn main() -> Result<(), celeriac::Error> {
    /// let app = App::builder().broker_url("memory://").build()?;
    /// let id: TaskId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().expect("a UUID");
    /// let result = AsyncResult::<i64>::from_id(&app, id);
    /// assert_eq!(result.id(), id);
    /// # Ok(()) }
    /// ```
    pub fn from_id(app: &App, id: TaskId) -> Self {
        Self::new(app.clone(), id, None)
    }

    pub(crate) fn new(app: App, id: TaskId, ignored_by: Option<&'static str>) -> Self {
        Self {
            app,
            id,
            ignored_by,
            output: PhantomData,
        }
    }

    /// The task's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's state as the result backend knows it now: [`Pending`](ResultState::Pending) until a
    /// worker records something (queued, ignored, expired from the backend or forgotten tasks stay
    /// pending), [`Started`](ResultState::Started) for tasks with `track_started`, then
    /// [`Retry`](ResultState::Retry), [`Success`](ResultState::Success),
    /// [`Failure`](ResultState::Failure) or [`Revoked`](ResultState::Revoked).
    pub async fn state(&self) -> Result<ResultState, ResultError> {
        let Some(backend) = self.app.result_backend() else {
            return Ok(ResultState::Pending);
        };
        let stored = backend
            .fetch(&self.id.to_string())
            .await
            .map_err(|source| self.backend_error(source))?;
        Ok(stored.map_or(ResultState::Pending, |stored| stored.state))
    }

    /// Whether the task is over (succeeded, failed or revoked).
    pub async fn ready(&self) -> Result<bool, ResultError> {
        Ok(self.state().await?.is_ready())
    }

    /// Deletes the stored result (Celery's `forget`): the backend frees it before it expires. The
    /// task then reads as pending, and a `get` waits.
    pub async fn forget(&self) -> Result<(), ResultError> {
        match self.app.result_backend() {
            Some(backend) => backend
                .forget(&self.id.to_string())
                .await
                .map_err(|source| self.backend_error(source)),
            None => Ok(()),
        }
    }

    fn backend_error(&self, source: crate::BrokerError) -> ResultError {
        ResultError::Backend {
            id: self.id,
            source,
        }
    }

    fn backend(&self) -> Result<&Arc<dyn ResultBackend>, ResultError> {
        if let Some(task) = self.ignored_by {
            return Err(ResultError::Ignored {
                task: task.to_owned(),
                id: self.id,
            });
        }
        self.app
            .result_backend()
            .ok_or(ResultError::NoBackend { id: self.id })
    }
}

impl<T: DeserializeOwned> AsyncResult<T> {
    /// Waits for the task's outcome, however long it takes (Celery's `get()` without a timeout).
    /// Prefer [`get_timeout`](Self::get_timeout) where a caller must answer.
    pub async fn get(&self) -> Result<T, ResultError> {
        let backend = self.backend()?;
        let stored = backend
            .wait_ready(&self.id.to_string())
            .await
            .map_err(|source| self.backend_error(source))?;
        self.outcome(&stored)
    }

    /// Waits at most `timeout` for the task's outcome; then [`ResultError::Timeout`].
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T, ResultError> {
        match tokio::time::timeout(timeout, self.get()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ResultError::Timeout {
                id: self.id,
                waited: timeout,
            }),
        }
    }

    /// The output if the task is over, `None` while it is not: a `get` that does not wait.
    pub async fn try_get(&self) -> Result<Option<T>, ResultError> {
        let backend = self.backend()?;
        let stored = backend
            .fetch(&self.id.to_string())
            .await
            .map_err(|source| self.backend_error(source))?;
        match stored {
            Some(stored) if stored.state.is_ready() => self.outcome(&stored).map(Some),
            _ => Ok(None),
        }
    }

    /// The output, or the error, a ready record stands for.
    fn outcome(&self, stored: &StoredResult) -> Result<T, ResultError> {
        let limits = self.app.decode_limits();
        let record = ResultRecord::from_body(&stored.body, limits).map_err(|source| {
            ResultError::Decode {
                task: "(unknown)".to_owned(),
                id: self.id,
                type_name: "a celeriac result record",
                source,
            }
        })?;
        let id = self.id;
        if stored.state == ResultState::Success {
            let decoded = match self.app.codec_for(&record.content_type) {
                Some(codec) => codec.decode::<T>(&record.output, limits),
                None => Err(CodecError::UnsupportedContentType(
                    record.content_type.clone(),
                )),
            };
            return decoded.map_err(|source| ResultError::Decode {
                task: record.task,
                id,
                type_name: std::any::type_name::<T>(),
                source,
            });
        }
        // A chain's or chord's result names the link or member that failed it.
        let id = record.origin.unwrap_or(id);
        let (cause, message) = record
            .failure
            .unwrap_or((Cause::Failed, "no reason recorded".to_owned()));
        let task = record.task;
        Err(match cause {
            Cause::Failed => ResultError::Failed {
                task,
                id,
                retries: record.retries,
                message,
            },
            Cause::DeadLettered => ResultError::DeadLettered {
                task,
                id,
                reason: message,
            },
            Cause::Expired => ResultError::Expired { task, id },
            Cause::Revoked => ResultError::Revoked {
                task,
                id,
                reason: message,
            },
        })
    }
}

impl<T> Deref for AsyncResult<T> {
    type Target = TaskId;

    fn deref(&self) -> &TaskId {
        &self.id
    }
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        Self::new(self.app.clone(), self.id, self.ignored_by)
    }
}

/// Shows the task's id, as Celery's `AsyncResult` does.
impl<T> fmt::Display for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.id, f)
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("id", &self.id)
            .field("output", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T> From<AsyncResult<T>> for TaskId {
    fn from(result: AsyncResult<T>) -> Self {
        result.id
    }
}
