//! The `#[task]` attribute macro of [celeriac](https://docs.rs/celeriac). Depend on `celeriac` and
//! write `#[celeriac::task]`; this crate is an implementation detail.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod task;

use proc_macro::TokenStream;

/// Declares a task from a function.
///
/// ```
/// use celeriac::{App, TaskContext};
///
/// #[celeriac::task(name = "ccp_send_sms_code", max_retries = 3, retry_backoff = 3)]
/// async fn ccp_send_sms_code(ctx: TaskContext, mobile: String, code: String) -> Result<(), std::io::Error> {
///     println!("attempt {} of task {}: {code} to {mobile}", ctx.retries() + 1, ctx.id());
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
/// let app = App::builder().broker(celeriac::MemoryBroker::new()).register::<ccp_send_sms_code>().build()?;
/// let id = ccp_send_sms_code::delay(&app, "13800138000".into(), "424242".into()).await?;
/// # let _ = id; Ok(()) }
/// ```
///
/// The function stays callable as it is. Beside it, the macro defines a type of the same name that
/// implements `celeriac::Task`, with `delay(&app, args…)` (an awaitable `celeriac::Delay`, with send
/// options chained on it), and submits it for `App::builder().autodiscover()`.
///
/// - An `async fn` runs on the worker's runtime; a plain `fn` runs on tokio's blocking pool (for
///   CPU-bound or blocking work).
/// - An optional first parameter of type `TaskContext` gives the run its context (Celery's `bind=True`).
/// - Arguments must be owned, serializable types; the return type is `Result<T, E>` (any error `E`,
///   serializable `T`) or nothing.
///
/// # Options
///
/// | option | value | meaning |
/// |--------|-------|---------|
/// | `name` | string | the task's name in messages (default: the function's name) |
/// | `queue` | string | the queue it is sent to (default: the app's, `celery`) |
/// | `max_retries` | integer or `None` | retry limit (default 3; `None` = forever) |
/// | `retry_backoff` | seconds, or `true` (1 s) | exponential back-off base: failures retry after base × 2ⁿ |
/// | `retry_backoff_max` | seconds | cap on back-off delays (default 600) |
/// | `retry_jitter` | bool | full jitter on back-off delays (default `true`) |
/// | `retry_delay` | seconds | fixed delay between retries of failures |
/// | `time_limit` | seconds | cancel a run that takes longer; counts as a failure |
/// | `rate_limit` | `"N/s"`, `"N/m"`, `"N/h"` | at most N runs per second/minute/hour per worker |
/// | `rate_limit_scope` | `"worker"` or `"cluster"` | one budget per worker (default) or one shared by every worker |
/// | `rate_limit_key` | argument name or list of names | one cluster-wide budget per value of those arguments |
/// | `expires` | seconds | discard the task if not started this long after it was sent |
/// | `priority` | 0–9 | default message priority |
/// | `acks_late` | bool | acknowledge after the run (default `true`) or before it |
/// | `ignore_result` | bool | do not store the outcome for `AsyncResult::get` (default: `true` for tasks returning `()`, `false` otherwise) |
/// | `track_started` | bool | record a `Started` state when a run starts (default `false`) |
/// | `unique_for` | duration (`"60s"`, `"5m"`, `"1h 30m"`) or seconds | refuse a second send with the same key while the first holds it (`EnqueueError::Duplicate`) |
/// | `unique_key` | argument name or list of names | what makes two sends the same (default: all the arguments) |
/// | `unique_until` | `"expired"` or `"executed"` | free the key when the window ends (default), or as soon as the task has run |
/// | `crate` | string path | where the `celeriac` crate is, if renamed (default `::celeriac`) |
///
/// Seconds may be integers or decimals (`time_limit = 2.5`).
#[proc_macro_attribute]
pub fn task(attr: TokenStream, item: TokenStream) -> TokenStream {
    task::expand(attr.into(), item.into()).into()
}
