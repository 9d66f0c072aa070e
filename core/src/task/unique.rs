//! Unique tasks: while a task is held, a second send with the same key is refused.

use std::fmt;
use std::time::Duration;

use super::ArgsKey;
use crate::TaskId;

/// How a task is unique: for how long a send holds its key, and whether the end of its run
/// releases the key early. `#[task(unique_for = "60s")]` builds one.
///
/// ```
/// use std::time::Duration;
/// use celeriac::task::{Unique, UniqueUntil};
///
/// let unique = Unique::new(Duration::from_secs(60)).until_executed();
/// assert_eq!(unique.hold_for(), Duration::from_secs(60));
/// assert_eq!(unique.until(), UniqueUntil::Executed);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unique {
    hold_for: Duration,
    until: UniqueUntil,
}

/// When a unique task's key is free again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UniqueUntil {
    /// When the window ends, however soon the task ran (Sidekiq's `until_expired`): at most one
    /// send per key per window.
    #[default]
    Expired,
    /// When the task has run for good — succeeded, failed after its retries, dead-lettered or
    /// expired — or when the window ends, whichever is first (Sidekiq's `until_executed`): at most
    /// one queued or running task per key.
    Executed,
}

impl Unique {
    /// Unique for `hold_for` from each send that went through.
    pub fn new(hold_for: Duration) -> Self {
        Self {
            hold_for,
            until: UniqueUntil::Expired,
        }
    }

    /// Frees the key as soon as the task has run for good, not only when the window ends.
    #[must_use]
    pub fn until_executed(mut self) -> Self {
        self.until = UniqueUntil::Executed;
        self
    }

    /// How long a send holds its key at most.
    pub fn hold_for(&self) -> Duration {
        self.hold_for
    }

    /// When the key is free again.
    pub fn until(&self) -> UniqueUntil {
        self.until
    }
}

/// A send of a unique task refused because an earlier one holds its key: the answer
/// [`EnqueueError::Duplicate`](crate::EnqueueError::Duplicate) carries.
///
/// ```
/// use std::time::Duration;
/// use celeriac::{App, EnqueueError, MemoryBroker};
///
/// #[celeriac::task(unique_for = "60s", unique_key = "mobile")]
/// async fn send_code(mobile: String, code: String) {
///     println!("{code} to {mobile}");
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
/// let app = App::builder().broker(MemoryBroker::new()).register::<send_code>().build()?;
/// let first = send_code::delay(&app, "13800138000".into(), "424242".into()).await?;
/// match send_code::delay(&app, "13800138000".into(), "171717".into()).await {
///     Err(EnqueueError::Duplicate(duplicate)) => {
///         assert_eq!(duplicate.existing, first.id());
///         assert!(duplicate.retry_after <= Duration::from_secs(60));
///     }
///     other => panic!("expected a duplicate, got {other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Duplicate {
    /// The task's name.
    pub task: String,
    /// The id of the task that holds the key.
    pub existing: TaskId,
    /// How long until the key is free at the latest.
    pub retry_after: Duration,
}

impl fmt::Display for Duplicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task `{}` was not sent: an identical one ({}) holds its unique key for another {:.1} s",
            self.task,
            self.existing,
            self.retry_after.as_secs_f64()
        )
    }
}

/// The coordination key of a unique task: `unique:<task>:<key>`.
pub(crate) fn claim_key(task: &str, key: ArgsKey) -> String {
    format!("unique:{task}:{key}")
}
