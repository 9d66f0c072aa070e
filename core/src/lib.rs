//! # celeriac
//!
//! A task queue for Rust with Celery's ergonomics: declare a task with [`#[task]`](macro@task), send it
//! with `delay` from a web handler that answers at once, and let workers on one machine or many run it,
//! retrying failures with back-off and losing nothing when a worker or the broker dies.
//!
//! ```standalone_crate
//! use std::time::Duration;
//! use celeriac::App;
//!
//! #[celeriac::task(name = "ccp_send_sms_code", max_retries = 3, retry_backoff = 3)]
//! async fn ccp_send_sms_code(mobile: String, code: String) -> Result<(), std::io::Error> {
//!     println!("SMS to {mobile}: your code is {code}");
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
//! // The broker is a URL: `redis://…` or `amqp://…` (features `redis`, `amqp`) instead of `memory://`.
//! let app = App::builder().broker_url("memory://").autodiscover().build()?;
//!
//! // In a web handler: enqueue and answer at once.
//! ccp_send_sms_code::delay(&app, "13800138000".into(), "424242".into()).await?;
//!
//! // In a worker process (here: until a timer fires instead of SIGTERM).
//! let report = app.worker().build()?.run_until(tokio::time::sleep(Duration::from_millis(50))).await?;
//! assert_eq!(report.succeeded, 1);
//! # Ok(()) }
//! ```
//!
//! ## Concepts
//!
//! - [`Task`]: a named kind of work with typed arguments ([`task`](mod@task) module). Its
//!   [`TaskOptions`] set the queue, [`RetryPolicy`], time limit, rate limit, expiry, priority and
//!   acknowledgement mode.
//! - [`App`]: a broker (chosen by URL with [`AppBuilder::broker_url`]), a [`Codec`], shared
//!   [`State`] and the registered tasks. `my_task::delay(&app, …)` returns a [`Delay`] to await, with
//!   options chained on it; it answers the task's [`TaskId`].
//! - [`Broker`]: where messages wait; the [`broker`] module states the at-least-once contract.
//!   [`MemoryBroker`] is the embedded one; `celeriac::redis` and `celeriac::amqp` (features)
//!   are the others.
//! - [`Worker`]: consumes queues and settles every message exactly one way (see [`worker`]). Each run
//!   goes through a tower stack, so tower layers apply ([`service`]).
//! - [`beat`]: periodic tasks — schedules that any number of processes run, one elected leader
//!   sending each tick once ([`election`]).
//! - [`events`]: what workers do (and, if asked, what producers send), live on the broker; a
//!   [`Monitor`](events::Monitor) of which workers are alive.
//! - [`guide`]: the user guide, from a first task to testing and coming from Celery.
//! - Observability: one `tracing` span per run and [`metrics`] counters; the library never installs a
//!   subscriber or recorder.
//!
//! ## Feature flags
//!
//! - `macros` (default): the [`#[task]`](macro@task) attribute.
//! - `redis`: the Redis broker (`redis://`, `rediss://`, `redis+cluster://`), re-exported as
//!   `celeriac::redis`.
//! - `amqp`: the RabbitMQ broker (`amqp://`, `amqps://`), re-exported as `celeriac::amqp`.
//! - `full`: all of the above.
//! - `test-util`: `celeriac::testing` — a harness that runs an app's tasks to completion in tests,
//!   and the broker contract kit for broker authors.

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![doc(test(attr(deny(warnings, rust_2018_idioms))))]

pub mod app;
pub mod beat;
pub mod broker;
pub mod canvas;
#[cfg(feature = "celery")]
pub mod celery;
#[cfg(feature = "cli")]
pub mod cli;
mod clock;
pub mod codec;
pub mod control;
pub mod coordination;
#[cfg(feature = "dashboard")]
pub mod dashboard;
pub mod election;
pub mod envelope;
pub mod error;
pub mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod layers;
mod lazy;
pub mod metrics;
pub mod result;
pub mod retry;
pub mod service;
pub mod signing;
pub mod task;
#[cfg(feature = "test-util")]
pub mod testing;
#[cfg(feature = "opentelemetry")]
pub mod trace_context;
pub mod worker;

pub use crate::app::{App, AppBuilder, Delay, SendOptions};
pub use crate::broker::{Broker, BrokerError, Delivery, MemoryBroker};
pub use crate::codec::{Codec, CodecExt};
pub use crate::envelope::{Envelope, TaskId};
pub use crate::error::{BuildError, EnqueueError, Error, WorkerError};
pub use crate::result::{AsyncResult, ResultError, ResultState, StoredResult};
pub use crate::retry::{RetryDecision, RetryPolicy};
pub use crate::task::{
    BoxError, DEFAULT_QUEUE, IntoTaskResult, RateLimit, RateLimitScope, State, Task, TaskArgs,
    TaskContext, TaskError, TaskOptions,
};
pub use crate::worker::{Worker, WorkerBuilder, WorkerReport};

/// Declares a task from a function. See the [`celeriac_macros::task`] documentation for options.
#[cfg(feature = "macros")]
#[doc(inline)]
pub use celeriac_macros::task;

/// The user guide: tasks, sending, brokers, workers, retries, testing, coming from Celery.
///
/// The same text is `docs/guide.md` in the repository.
#[doc = include_str!("docs/guide.md")]
pub mod guide {
    /// A walkthrough of the SMS verification-code example (`examples/sms-verification`): the
    /// Celery flow it replaces, and what changed.
    #[doc = include_str!("docs/sms-example.md")]
    pub mod sms_example {}

    /// Results: `AsyncResult`, what `get` answers, choosing a result backend, which tasks keep
    /// results, and why a task that ran twice still has one outcome.
    #[doc = include_str!("docs/results.md")]
    pub mod results {}

    /// Workflows: signatures, chains, groups and chords, type-checked; how a chord joins without a
    /// coordinator and survives a worker's crash; the limits; coming from Celery's canvas.
    #[doc = include_str!("docs/workflows.md")]
    pub mod workflows {}

    /// Unique tasks: a second send with the same key is refused while the first holds it; where
    /// claims live; what it guarantees; coming from Celery (which has none).
    #[doc = include_str!("docs/unique.md")]
    pub mod unique {}

    /// Periodic tasks: schedules (intervals, cron in a time zone, jitter, TOML), one leader among
    /// any number of beat processes, what happens when it dies or hangs; coming from Celery beat.
    #[doc = include_str!("docs/periodic.md")]
    pub mod periodic {}

    /// Operating celeriac: worker events, watching which workers are alive; coming from Celery's
    /// events and Flower.
    #[doc = include_str!("docs/operating.md")]
    pub mod operating {}

    /// Rate limits: per worker (Celery's), cluster-wide and per key; how a cluster-wide limit
    /// defers runs without holding a worker; coming from Celery.
    #[doc = include_str!("docs/rate-limits.md")]
    pub mod rate_limits {}

    /// Sharing queues with Python Celery: which way tasks go, how arguments map, kombu's Redis
    /// layout and what celeriac adds to it.
    #[cfg(all(feature = "celery", feature = "redis"))]
    #[doc = include_str!("docs/celery.md")]
    pub mod celery {}
}

/// The Redis broker (`celeriac-redis`), for brokers configured beyond their URL.
#[cfg(feature = "redis")]
#[doc(inline)]
pub use celeriac_redis as redis;

/// The RabbitMQ broker (`celeriac-amqp`), for brokers configured beyond their URL.
#[cfg(feature = "amqp")]
#[doc(inline)]
pub use celeriac_amqp as amqp;

/// Re-exported for [`Broker`] implementations, which are `#[async_trait]` impls.
pub use celeriac_core::async_trait;

/// The names most programs need: `use celeriac::prelude::*;`.
pub mod prelude {
    pub use crate::{
        App, AsyncResult, Broker, CodecExt, MemoryBroker, RetryPolicy, SendOptions, State, Task,
        TaskContext, TaskError, TaskId, TaskOptions,
    };
}

/// Items the `#[task]` macro's generated code uses. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use inventory;

    pub use crate::task::StateRequirement;
    pub use crate::task::registry::TaskRegistration;
    pub use crate::{IntoTaskResult, TaskError};

    /// Implemented for every type a `State<T>` parameter may hold.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be task state",
        label = "`State<T>` needs `T: Clone + Send + Sync + 'static`",
        note = "each run gets a clone of the app's value: wrap clients and pools in an `Arc` and derive `Clone`"
    )]
    pub trait TaskState: Clone + Send + Sync + 'static {}

    #[diagnostic::do_not_recommend]
    impl<T> TaskState for T where T: Clone + Send + Sync + 'static {}

    /// Takes the app's `T` for one run of a task with a `State<T>` parameter.
    pub fn extract_state<T: TaskState>(
        ctx: &crate::TaskContext,
    ) -> Result<crate::State<T>, TaskError> {
        crate::State::from_context(ctx)
    }

    /// Runs a blocking (synchronous) task function on tokio's blocking pool.
    pub async fn run_blocking<F, R>(f: F) -> Result<R, TaskError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        tokio::task::spawn_blocking(f).await.map_err(|error| {
            if error.is_panic() {
                TaskError::Panicked(crate::task::panic_message(&*error.into_panic()))
            } else {
                TaskError::msg("the blocking task was cancelled")
            }
        })
    }

    /// Implemented for every type a task argument may have.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be a task argument",
        label = "task arguments must be `Serialize + DeserializeOwned + Send + 'static`",
        note = "arguments travel through the broker: derive `serde::Serialize` and `serde::Deserialize` for your type, and use owned types (`String`, not `&str`)",
        note = "a client, pool or configuration shared by every run is state, not an argument: take it as `State(x): State<{Self}>` and provide it with `AppBuilder::state`"
    )]
    pub trait TaskArgument:
        serde::Serialize + serde::de::DeserializeOwned + Send + 'static
    {
    }

    #[diagnostic::do_not_recommend]
    impl<T> TaskArgument for T where T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}
}
