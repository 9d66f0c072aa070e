//! Workflows (Celery's canvas), type-checked: signatures, chains, groups and chords.
//!
//! - A **signature** is a task with its arguments, to send later: `add::s(2, 3)` has them all, and
//!   `double::partial()` all but the first, which the previous task's output fills in. (Rust has no
//!   overloading, so the two are two functions: `s` takes every argument, `partial` every one but
//!   the first.)
//! - A **chain** runs tasks one after the other, each output feeding the next partial:
//!   `add::s(2, 3).then(double::partial())`. The compiler checks each link: a task whose first
//!   argument is not the previous output's type does not build. A full signature may follow any task:
//!   it ignores the output (Celery's immutable `si`).
//! - A **group** runs signatures of one output type at once; its [`GroupResult`] gives their outputs
//!   in order.
//! - A **chord** is a group and a callback that gets every member's output as a `Vec`, once all have
//!   succeeded.
//! - **Callbacks**: [`Signature::link`] sends a task with this one's output on success;
//!   [`Signature::link_error`] sends one with a [`TaskFailure`] when it fails for good.
//!
//! What comes next travels in each message (the envelope's [`Workflow`](crate::envelope::Workflow));
//! there is no coordinator process. A chord's only shared state is its join in the result backend,
//! which records members by index, so a member that runs twice (a redelivery after a crash) counts
//! once. The guide's [workflows page](crate::guide::workflows) tells the whole story.
//!
//! ```
//! use std::time::Duration;
//! use celeriac::App;
//! use celeriac::canvas::{chord, group};
//!
//! #[celeriac::task(ignore_result = false)]
//! async fn add(a: i64, b: i64) -> Result<i64, std::io::Error> {
//!     Ok(a + b)
//! }
//!
//! #[celeriac::task]
//! async fn double(n: i64) -> Result<i64, std::io::Error> {
//!     Ok(2 * n)
//! }
//!
//! #[celeriac::task]
//! async fn total(parts: Vec<i64>) -> Result<i64, std::io::Error> {
//!     Ok(parts.iter().sum())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::builder().broker_url("memory://canvas-doc")
//!     .register::<add>()
//!     .register::<double>()
//!     .register::<total>()
//!     .build()?;
//! tokio::spawn(app.worker().build()?.run_until(std::future::pending()));
//! let wait = Duration::from_secs(5);
//!
//! // (2 + 3) * 2 * 2
//! let chain = add::s(2, 3).then(double::partial()).then(double::partial());
//! assert_eq!(chain.delay(&app).await?.get_timeout(wait).await?, 20);
//!
//! let sums = group((0..10).map(|n| add::s(n, n))).delay(&app).await?;
//! assert_eq!(sums.get_timeout(wait).await?, (0..10).map(|n| 2 * n).collect::<Vec<_>>());
//!
//! let sum_of_sums = chord(group((0..10).map(|n| add::s(n, 1))), total::partial());
//! assert_eq!(sum_of_sums.delay(&app).await?.get_timeout(wait).await?, 55);
//! # Ok(()) }
//! ```

pub(crate) mod chain;
mod group;
mod signature;

use serde::{Deserialize, Serialize};

pub use self::chain::Chain;
pub use self::group::{Chord, Group, GroupResult, chord, group};
pub(crate) use self::signature::Pending;
pub use self::signature::{FirstArg, Follows, Partial, Signature};

use crate::TaskId;

/// What an error callback ([`Signature::link_error`], [`Chord::link_error`]) receives as its first
/// argument: which task failed, and why.
///
/// ```
/// use celeriac::canvas::TaskFailure;
///
/// #[celeriac::task]
/// async fn alert(failure: TaskFailure, channel: String) {
///     eprintln!("[{channel}] task {} ({}) failed: {}", failure.task, failure.id, failure.error);
/// }
/// # let _ = alert::partial("ops".to_owned());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskFailure {
    /// The failed task's id.
    pub id: TaskId,
    /// The failed task's name.
    pub task: String,
    /// Retries it used.
    pub retries: u32,
    /// Its error, with its causes, or why it never ran.
    pub error: String,
}

impl TaskFailure {
    pub(crate) fn new(id: TaskId, task: &str, retries: u32, error: String) -> Self {
        Self {
            id,
            task: task.to_owned(),
            retries,
            error,
        }
    }
}
