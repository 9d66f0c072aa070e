use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use super::App;
use crate::{AsyncResult, EnqueueError, SendOptions, Task, TaskId};

/// A send of task `T`, with options chained on: await it to enqueue (Celery's `delay` and
/// `apply_async` in one). Made by `my_task::delay(&app, …)` or [`App::delay`]; it does nothing until
/// awaited.
///
/// ```
/// use std::time::Duration;
/// use celeriac::{App, MemoryBroker};
///
/// #[celeriac::task]
/// async fn ccp_send_sms_code(mobile: String, code: String) {
///     println!("SMS to {mobile}: {code}");
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
/// let app = App::builder().broker(MemoryBroker::new()).build()?;
/// let (mobile, code) = ("13800138000".to_owned(), "424242".to_owned());
///
/// // As soon as a worker is free:
/// ccp_send_sms_code::delay(&app, mobile.clone(), code.clone()).await?;
/// // In three seconds, on the `sms` queue:
/// ccp_send_sms_code::delay(&app, mobile, code)
///     .countdown(Duration::from_secs(3))
///     .queue("sms")
///     .await?;
/// assert_eq!(app.broker().stats("sms").await?.delayed, 1);
/// # Ok(()) }
/// ```
#[must_use = "a task is sent only when its `Delay` is awaited"]
pub struct Delay<'a, T: Task> {
    app: &'a App,
    args: T::Args,
    options: SendOptions,
}

impl<'a, T: Task> Delay<'a, T> {
    pub(super) fn new(app: &'a App, args: T::Args) -> Self {
        Self {
            app,
            args,
            options: SendOptions::new(),
        }
    }

    /// Run no earlier than `delay` from now.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.options = self.options.countdown(delay);
        self
    }

    /// Run no earlier than `at` (takes precedence over a countdown).
    pub fn eta(mut self, at: SystemTime) -> Self {
        self.options = self.options.eta(at);
        self
    }

    /// Discard the task if it has not started within `after` from now.
    pub fn expires_in(mut self, after: Duration) -> Self {
        self.options = self.options.expires_in(after);
        self
    }

    /// Discard the task if it has not started by `at`.
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.options = self.options.expires_at(at);
        self
    }

    /// Send to `queue` instead of the task's queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options = self.options.queue(queue);
        self
    }

    /// Message priority, 0 (lowest) to 9 (highest), on brokers that support priorities.
    pub fn priority(mut self, priority: u8) -> Self {
        self.options = self.options.priority(priority);
        self
    }

    /// A time limit for this run, instead of the task's.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.options = self.options.time_limit(limit);
        self
    }

    /// Sends with this id instead of a fresh one.
    pub fn task_id(mut self, id: TaskId) -> Self {
        self.options = self.options.task_id(id);
        self
    }

    /// Adds a message header (kept with the message, readable by the task).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options = self.options.header(name, value);
        self
    }

    /// Replaces every option with `options`.
    pub fn options(mut self, options: SendOptions) -> Self {
        self.options = options;
        self
    }
}

impl<'a, T: Task> IntoFuture for Delay<'a, T> {
    type Output = Result<AsyncResult<T::Output>, EnqueueError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.app.apply_async::<T>(self.args, self.options))
    }
}

impl<T: Task> fmt::Debug for Delay<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The arguments may be personal data (phone numbers, codes): never shown.
        f.debug_struct("Delay")
            .field("task", &T::NAME)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
