use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Task, TaskError};
use crate::{App, AsyncResult, EnqueueError, Envelope, SendOptions, TaskId};

/// What a running task knows about itself (Celery's `bind=True`): its id, retries so far, the app to
/// enqueue follow-up tasks with, and a way to ask for a retry.
///
/// Take it as the first parameter of a `#[task]` function:
///
/// ```
/// use std::time::Duration;
/// use celeriac::{TaskContext, TaskError};
///
/// #[celeriac::task(name = "poll_delivery_report", max_retries = 10)]
/// async fn poll_delivery_report(ctx: TaskContext, message_id: String) -> Result<(), TaskError> {
///     let delivered = false; // ask the SMS provider here
///     if !delivered {
///         tracing::info!(task.id = %ctx.id(), %message_id, retries = ctx.retries(), "not delivered yet");
///         return Err(ctx.retry_in(Duration::from_secs(30)));
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct TaskContext {
    envelope: Arc<Envelope>,
    app: App,
}

impl TaskContext {
    /// A context for running `envelope` with `app` — what the worker builds; also handy for calling a
    /// task function directly in a unit test.
    pub fn new(app: App, envelope: Envelope) -> Self {
        Self {
            envelope: Arc::new(envelope),
            app,
        }
    }

    /// The task's id (the same across retries).
    pub fn id(&self) -> TaskId {
        self.envelope.id
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.envelope.task
    }

    /// The queue the task was consumed from.
    pub fn queue(&self) -> &str {
        &self.envelope.queue
    }

    /// How many times the task was retried before this run.
    pub fn retries(&self) -> u32 {
        self.envelope.retries
    }

    /// The task's ETA, if it was scheduled.
    pub fn eta(&self) -> Option<SystemTime> {
        self.envelope.eta
    }

    /// The whole message envelope.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The app, for enqueueing follow-up tasks.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The shared value of type `S` given to [`AppBuilder::state`](crate::AppBuilder::state). A
    /// missing value is a [`TaskError::Reject`]: no retry can supply it, so the message is
    /// dead-lettered with the type's name rather than retried.
    pub fn state<S: Send + Sync + 'static>(&self) -> Result<&S, TaskError> {
        self.app.state::<S>().ok_or_else(|| {
            TaskError::reject(format!(
                "no state of type `{}` was given to App::builder().state(…)",
                std::any::type_name::<S>()
            ))
        })
    }

    /// Asks to run again after `delay` (Celery's `self.retry(countdown=…)`). Return the error from the
    /// task; it counts against `max_retries`.
    pub fn retry_in(&self, delay: Duration) -> TaskError {
        TaskError::retry_after(delay)
    }

    /// Asks to run again after the retry policy's back-off delay.
    pub fn retry(&self) -> TaskError {
        TaskError::Retry {
            after: None,
            reason: None,
        }
    }

    /// Enqueues a follow-up task whose parent is this task and whose root is this task's root.
    pub async fn delay<T: Task>(
        &self,
        args: T::Args,
    ) -> Result<AsyncResult<T::Output>, EnqueueError> {
        self.apply_async::<T>(args, SendOptions::new()).await
    }

    /// Like [`delay`](Self::delay), with send options.
    pub async fn apply_async<T: Task>(
        &self,
        args: T::Args,
        options: SendOptions,
    ) -> Result<AsyncResult<T::Output>, EnqueueError> {
        let root = self.envelope.root_id.unwrap_or(self.envelope.id);
        let options = options.linked(self.envelope.id, root);
        self.app.apply_async::<T>(args, options).await
    }

    pub(crate) fn shared_envelope(&self) -> &Arc<Envelope> {
        &self.envelope
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Arguments are never shown: they may hold phone numbers or codes.
        f.debug_struct("TaskContext")
            .field("id", &self.envelope.id)
            .field("name", &self.envelope.task)
            .field("queue", &self.envelope.queue)
            .field("retries", &self.envelope.retries)
            .finish_non_exhaustive()
    }
}
