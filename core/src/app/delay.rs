use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use super::App;
use crate::{AsyncResult, EnqueueError, SendOptions, Task};

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

    super::send::send_option_setters!();
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
