use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use crate::codec::CodecError;

/// A boxed error, the type any task error converts into.
pub use celeriac_core::BoxError;

/// Why a task run did not succeed. What the worker does next depends on the variant and the task's
/// [`RetryPolicy`](crate::RetryPolicy):
///
/// | variant        | retried?                                      | finally                |
/// |----------------|-----------------------------------------------|------------------------|
/// | `Failed`       | if the policy has back-off and `retry_on` agrees | dead-lettered       |
/// | `Retry`        | yes, until `max_retries`                      | dead-lettered          |
/// | `Reject`       | never                                         | dead-lettered at once  |
/// | `InvalidArgs`  | never                                         | dead-lettered at once  |
/// | `TimeLimit`    | like `Failed`                                 | dead-lettered          |
/// | `Panicked`     | like `Failed`                                 | dead-lettered          |
///
/// Task functions may return their own error type, [`BoxError`] or `TaskError`: the `#[task]` macro
/// turns any error into `TaskError::Failed`, and recovers a `TaskError` that was boxed on the way (so a
/// task returning `Result<_, BoxError>` can still `return Err(ctx.retry_in(d).into())`).
///
/// ```
/// use std::time::Duration;
/// use celeriac::TaskError;
///
/// let error = TaskError::retry_after(Duration::from_secs(5));
/// assert_eq!(error.to_string(), "retry requested in 5s");
/// let error = TaskError::from(celeriac::BoxError::from(error));
/// assert!(matches!(error, TaskError::Retry { .. }));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum TaskError {
    /// The task failed; the retry policy decides whether it runs again.
    Failed(BoxError),
    /// The task asked to run again (Celery's `self.retry()`), after `after` or the policy's back-off.
    Retry {
        /// The requested delay; `None` uses the policy's back-off.
        after: Option<Duration>,
        /// Why, for the logs and the dead-letter reason.
        reason: Option<BoxError>,
    },
    /// The task refuses this message for good: it is dead-lettered without retries.
    Reject {
        /// Why.
        reason: String,
    },
    /// The message's arguments do not decode as the task's argument types.
    InvalidArgs(CodecError),
    /// The run exceeded its time limit and was cancelled.
    TimeLimit(Duration),
    /// The task panicked; the panic message is kept.
    Panicked(String),
}

impl TaskError {
    /// A failure from any error value.
    pub fn failed(error: impl Into<BoxError>) -> Self {
        Self::from(error.into())
    }

    /// A failure with a message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self::Failed(message.to_string().into())
    }

    /// A rejection: the task is dead-lettered at once with `reason`.
    pub fn reject(reason: impl Into<String>) -> Self {
        Self::Reject {
            reason: reason.into(),
        }
    }

    /// An explicit request to run again after `delay`.
    pub fn retry_after(delay: Duration) -> Self {
        Self::Retry {
            after: Some(delay),
            reason: None,
        }
    }

    /// Attaches the error that caused a retry request (kept in logs and the dead-letter reason).
    #[must_use]
    pub fn because(self, cause: impl Into<BoxError>) -> Self {
        match self {
            Self::Retry { after, .. } => Self::Retry {
                after,
                reason: Some(cause.into()),
            },
            other => other,
        }
    }

    /// Whether the underlying error (of a failure or retry request) is an `E`.
    pub fn is<E: StdError + 'static>(&self) -> bool {
        self.downcast_ref::<E>().is_some()
    }

    /// The underlying error of a failure or retry request, if it is an `E`.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            Self::Failed(error)
            | Self::Retry {
                reason: Some(error),
                ..
            } => error.downcast_ref(),
            _ => None,
        }
    }

    /// The whole error: this error's message followed by each cause's, once each, joined with `: `
    /// (see [`Report`](crate::error::Report)).
    pub fn chain_message(&self) -> String {
        crate::error::Report(self).to_string()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(error) => write!(f, "{error}"),
            Self::Retry { after, reason } => {
                f.write_str("retry requested")?;
                if let Some(after) = after {
                    write!(f, " in {after:?}")?;
                }
                if let Some(reason) = reason {
                    write!(f, " because {reason}")?;
                }
                Ok(())
            }
            Self::Reject { reason } => write!(f, "rejected: {reason}"),
            Self::InvalidArgs(error) => write!(f, "invalid task arguments: {error}"),
            Self::TimeLimit(limit) => write!(f, "time limit of {limit:?} exceeded"),
            Self::Panicked(message) => write!(f, "panicked: {message}"),
        }
    }
}

impl StdError for TaskError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // The inner error's own message is already this error's message.
            Self::Failed(error) => error.source(),
            Self::Retry {
                reason: Some(reason),
                ..
            } => reason.source(),
            Self::InvalidArgs(error) => error.source(),
            _ => None,
        }
    }
}

impl From<BoxError> for TaskError {
    /// Recovers a boxed `TaskError`; any other error becomes [`TaskError::Failed`].
    fn from(error: BoxError) -> Self {
        match error.downcast::<TaskError>() {
            Ok(task_error) => *task_error,
            Err(other) => Self::Failed(other),
        }
    }
}

/// Describes a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
