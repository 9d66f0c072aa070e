//! Signatures: a task with its arguments (all of them, or all but the first), to send later.

use std::fmt;
use std::marker::PhantomData;

use super::TaskFailure;
use super::chain::{Chain, send_chain};
use crate::app::stores_result;
use crate::envelope::{ChainLink, Step};
use crate::task::TaskArgs;
use crate::{App, AsyncResult, EnqueueError, SendOptions, Task, TaskId, TaskOptions};

/// A task with all its arguments and send options: Celery's `add.s(2, 3)`, written `add::s(2, 3)`.
///
/// Send it alone with [`delay`](Self::delay), or make it the start of a [chain](Self::then), a
/// member of a [group](super::group), or a callback. As a callback or a later chain step it ignores
/// the previous task's output (Celery's immutable signature, `si`).
///
/// ```
/// use std::time::Duration;
/// use celeriac::App;
///
/// #[celeriac::task(ignore_result = false)]
/// async fn add(a: i64, b: i64) -> Result<i64, std::io::Error> {
///     Ok(a + b)
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = App::builder().broker_url("memory://signature-doc").register::<add>().build()?;
/// tokio::spawn(app.worker().build()?.run_until(std::future::pending()));
///
/// let sum = add::s(2, 3).queue("math").countdown(Duration::from_millis(1));
/// # let sum = sum.queue("celery");
/// assert_eq!(sum.delay(&app).await?.get_timeout(Duration::from_secs(5)).await?, 5);
/// # Ok(()) }
/// ```
#[must_use = "a signature does nothing until it is sent"]
pub struct Signature<T: Task> {
    args: T::Args,
    options: SendOptions,
    callbacks: Callbacks,
    task: PhantomData<fn() -> T>,
}

/// A task with all its arguments but the first, which the previous task's output fills in: a chain
/// step after the first, a [chord](super::chord)'s callback, a [`link`](Signature::link). Written
/// `double::partial()` for a task `double(n: i64)`, `store::partial(key)` for `store(n: i64, key:
/// String)`.
///
/// `R` is the tuple of the arguments it has. Whether it may follow a task is checked when the chain
/// is built, by [`Follows`].
#[must_use = "a signature does nothing until it is sent"]
pub struct Partial<T: Task, R> {
    rest: R,
    options: SendOptions,
    callbacks: Callbacks,
    task: PhantomData<fn() -> T>,
}

/// `link` and `link_error`, for the signatures of a task `T` (each keeps its `callbacks`).
macro_rules! callback_setters {
    () => {
        /// Sends `callback` with this task's output when it succeeds (Celery's `link`). The
        /// callback's first argument must be this task's output type, unless it is a full signature.
        pub fn link<N: Follows<T::Output>>(mut self, callback: N) -> Self {
            self.callbacks.link.push(callback.into_pending());
            self
        }

        /// Sends `errback` with a [`TaskFailure`] when this task fails for good: after its
        /// retries, dead-lettered without a run, or expired (Celery's `link_error`).
        pub fn link_error<N: Follows<TaskFailure>>(mut self, errback: N) -> Self {
            self.callbacks.link_error.push(errback.into_pending());
            self
        }
    };
}

/// The callbacks of one signature.
#[derive(Default)]
struct Callbacks {
    link: Vec<Pending>,
    link_error: Vec<Pending>,
}

impl<T: Task> Signature<T> {
    /// The signature of `T` with `args` (what `my_task::s(…)` calls).
    pub fn new(args: T::Args) -> Self {
        Self {
            args,
            options: SendOptions::new(),
            callbacks: Callbacks::default(),
            task: PhantomData,
        }
    }

    crate::app::send::send_option_setters!();
    callback_setters!();

    /// A chain: this task, then `next` with its output.
    pub fn then<N: Follows<T::Output>>(self, next: N) -> Chain<N::Output> {
        Chain::new(vec![self.pending(), next.into_pending()])
    }

    pub(crate) fn pending(self) -> Pending {
        Pending::of::<T>(Box::new(self.args), self.options, self.callbacks, false)
    }

    /// Sends the task (and, on its outcome, its callbacks).
    pub async fn delay(self, app: &App) -> Result<AsyncResult<T::Output>, EnqueueError> {
        let pending = self.pending();
        let ignored_by = (!pending.store_result).then_some(T::NAME);
        let id = send_chain(app, vec![pending], false).await?;
        Ok(AsyncResult::new(app.clone(), id, ignored_by))
    }
}

impl<T: Task, R: TaskArgs> Partial<T, R> {
    /// The partial signature of `T` with every argument but the first (what `my_task::partial(…)`
    /// calls).
    pub fn new(rest: R) -> Self {
        Self {
            rest,
            options: SendOptions::new(),
            callbacks: Callbacks::default(),
            task: PhantomData,
        }
    }

    crate::app::send::send_option_setters!();
    callback_setters!();
}

/// A signature that may come after a task returning `P`: a [`Partial`] whose first argument is a
/// `P`, or any full [`Signature`] (which ignores it).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot follow a task that returns `{P}`",
    label = "its first argument is not a `{P}`",
    note = "a partial signature's first argument is the previous task's output"
)]
pub trait Follows<P> {
    /// What the task returns.
    type Output;

    #[doc(hidden)]
    fn into_pending(self) -> Pending;
}

impl<T: Task, P> Follows<P> for Signature<T> {
    type Output = T::Output;

    fn into_pending(self) -> Pending {
        self.pending()
    }
}

impl<T: Task, R: TaskArgs, P> Follows<P> for Partial<T, R>
where
    T::Args: FirstArg<P, Rest = R>,
{
    type Output = T::Output;

    fn into_pending(self) -> Pending {
        Pending::of::<T>(Box::new(self.rest), self.options, self.callbacks, true)
    }
}

/// An argument tuple whose first element is a `P`; `Rest` is the tuple of the others. Implemented
/// for tuples of 1 to 16 task arguments, beside their [`TaskArgs`] impls.
#[diagnostic::on_unimplemented(
    message = "a task taking `{Self}` cannot take `{P}` as its first argument",
    label = "the previous task returns `{P}`",
    note = "a partial signature's first argument is the previous task's output (for a chord's callback, a `Vec` of its members' output)"
)]
pub trait FirstArg<P>: TaskArgs {
    /// The other arguments.
    type Rest: TaskArgs;
}

/// A signature with its types erased, not encoded yet (encoding needs the app's codec).
#[doc(hidden)]
pub struct Pending {
    name: &'static str,
    args: Box<dyn TaskArgs>,
    task_options: TaskOptions,
    options: SendOptions,
    takes_previous: bool,
    args_schema: Option<u64>,
    pub(crate) store_result: bool,
    callbacks: Callbacks,
}

impl Pending {
    fn of<T: Task>(
        args: Box<dyn TaskArgs>,
        options: SendOptions,
        callbacks: Callbacks,
        takes_previous: bool,
    ) -> Self {
        let task_options = T::options();
        Self {
            name: T::NAME,
            store_result: stores_result::<T>(&task_options),
            args,
            task_options,
            options,
            takes_previous,
            args_schema: <T::Args as TaskArgs>::schema_fingerprint(),
            callbacks,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The task's id, chosen now if it has none: a workflow knows every task's id before any runs.
    pub(crate) fn id(&mut self) -> TaskId {
        *self.options.task_id.get_or_insert_with(TaskId::new)
    }

    /// Encodes it with the app's codec, without its callbacks.
    fn step(self, app: &App) -> Result<Step, EnqueueError> {
        let mut step = app.step(
            self.name,
            self.args.as_serialize(),
            Some(&self.task_options),
            self.options,
        )?;
        step.takes_previous = self.takes_previous;
        step.args_schema = self.args_schema;
        step.store_result = self.store_result;
        Ok(step)
    }

    /// Encodes it for messages sent later, one per tick of a beat's entry. Callbacks are refused:
    /// they would make each tick a workflow.
    pub(crate) fn into_step(self, app: &App) -> Result<Step, EnqueueError> {
        if !self.callbacks.link.is_empty() || !self.callbacks.link_error.is_empty() {
            return Err(EnqueueError::InvalidOptions {
                task: self.name.to_owned(),
                reason: "a periodic task's signature cannot have callbacks (`link`, `link_error`)"
                    .into(),
            });
        }
        self.step(app)
    }

    /// Encodes it with its callbacks. A callback's own callbacks are refused: a message carries one
    /// level of them.
    pub(crate) fn into_chain_link(mut self, app: &App) -> Result<ChainLink, EnqueueError> {
        let callbacks = std::mem::take(&mut self.callbacks);
        let mut link = ChainLink::new(self.step(app)?);
        link.link = Self::steps(callbacks.link, app)?;
        link.link_error = Self::steps(callbacks.link_error, app)?;
        Ok(link)
    }

    /// Encodes callbacks, which may not have callbacks of their own.
    pub(crate) fn steps(callbacks: Vec<Pending>, app: &App) -> Result<Vec<Step>, EnqueueError> {
        callbacks
            .into_iter()
            .map(|callback| {
                let nested = &callback.callbacks;
                if !nested.link.is_empty() || !nested.link_error.is_empty() {
                    return Err(EnqueueError::InvalidOptions {
                        task: callback.name.to_owned(),
                        reason: "a callback cannot have callbacks of its own".into(),
                    });
                }
                callback.step(app)
            })
            .collect()
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("task", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<T: Task> fmt::Debug for Signature<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Arguments may be personal data: never shown.
        f.debug_struct("Signature")
            .field("task", &T::NAME)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<T: Task, R> fmt::Debug for Partial<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partial")
            .field("task", &T::NAME)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
