//! Task results: [`AsyncResult`] handles, the [`ResultBackend`]s that keep outcomes, and
//! [`ResultError`].
//!
//! `delay` answers an [`AsyncResult<T>`](AsyncResult), typed by the task's output. A worker stores
//! each outcome of a task that keeps its result — its output, or why it has none — in the app's
//! result backend, and [`AsyncResult::get`] reads it, woken by the backend the moment it is stored.
//!
//! | Backend | Chosen by | Waiting |
//! |---|---|---|
//! | [`MemoryResultBackend`] | the default of an app whose broker is `memory://` or a [`MemoryBroker`](crate::MemoryBroker) | a channel |
//! | Redis (`celeriac::redis::RedisResultBackend`, feature `redis`) | `result_backend_url("redis://…")` or `rediss://`, with any broker | pub/sub |
//!
//! Outcomes are kept for the app's [`result_expires`](crate::AppBuilder::result_expires) (one day by
//! default). Tasks returning `()` store nothing unless declared with `ignore_result = false`; any
//! task can opt out with `ignore_result = true`.
//!
//! **At least once, one outcome.** A task may run twice (a worker died before its ack). Every backend
//! applies [`ResultState::replaces`] atomically: a second run never turns a success into a failure,
//! and the first success is the one kept.

mod async_result;
mod backend_url;
mod error;
pub(crate) mod record;
pub(crate) mod store;

#[doc(inline)]
pub use celeriac_core::{ChordJoin, ChordPart, ResultBackend, ResultState, StoredResult};

pub use self::async_result::AsyncResult;
pub(crate) use self::backend_url::ResultBackendChoice;
pub use self::error::ResultError;
#[cfg(feature = "celery")]
pub(crate) use self::record::{Cause, ResultRecord};
pub use celeriac_core::MemoryResultBackend;
