//! Error types for building an app, enqueueing, and running workers, and the top-level [`Error`].
//!
//! Each error's `Display` is its own message; its causes are its `source()` chain, never repeated in
//! the message. Print a whole chain with [`Report`] (or `anyhow`'s `{:#}`).

use std::time::Duration;

pub use celeriac_core::Report;

use crate::BrokerError;
use crate::codec::CodecError;
use crate::task::Duplicate;

/// Why an [`App`](crate::App) or a [`Worker`](crate::Worker) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two different task types use the same name.
    #[error("two different tasks are registered under the name `{name}`: `{first}` and `{second}`")]
    DuplicateTaskName {
        /// The contested name.
        name: &'static str,
        /// The task registered first (its function's path).
        first: &'static str,
        /// The task registered second.
        second: &'static str,
    },
    /// A registered task takes `State<T>` and the app was given no `T`.
    #[error(
        "task `{task}` takes `State<{state}>`, and the app has no `{state}`: \
         give it one with `App::builder().state(…)`"
    )]
    MissingState {
        /// The task's name.
        task: &'static str,
        /// The missing state type, as Rust names it.
        state: &'static str,
    },
    /// A task name is unusable.
    #[error("invalid task name `{name}`: {reason}")]
    InvalidTaskName {
        /// The name.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No broker was chosen. There is no silent default: two processes that both forgot would each
    /// talk to a private in-memory queue, and tasks would vanish without a word.
    #[error(
        "no broker chosen: call `broker_url(\"memory://\")` (this process only), \
         `broker_url(\"redis://…\")`, `broker_url(\"amqp://…\")`, \
         `broker_from_env(\"CELERIAC_BROKER_URL\")` or `broker(…)` on the app builder"
    )]
    NoBroker,
    /// The broker URL cannot be used. The URL is shown without its password.
    #[error("invalid broker URL `{url}`: {reason}")]
    BrokerUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker URL's scheme needs a Cargo feature of `celeriac` that is off.
    #[error(
        "broker URL `{url}` needs the `{feature}` feature of celeriac: \
         `cargo add celeriac --features {feature}`"
    )]
    BrokerFeatureDisabled {
        /// The URL, password redacted.
        url: String,
        /// The feature to enable.
        feature: &'static str,
    },
    /// The environment variable that should name the broker is not set (or not UTF-8).
    #[error(
        "environment variable `{var}` does not hold a broker URL: set it to e.g. `memory://`, \
         `redis://127.0.0.1:6379/0` or `amqp://guest:guest@127.0.0.1:5672/%2f`"
    )]
    BrokerEnvMissing {
        /// The variable's name.
        var: String,
    },
    /// The result backend URL cannot be used. The URL is shown without its password.
    #[error("invalid result backend URL `{url}`: {reason}")]
    ResultBackendUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A beat's entry is invalid: its cron expression, time zone, interval, jitter or name.
    #[error("beat entry `{entry}`: {reason}")]
    BeatEntry {
        /// The entry's name.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A beat's TOML schedule cannot be read.
    #[error("beat schedule {origin}: {reason}")]
    BeatSchedule {
        /// The file, or `TOML text`.
        origin: String,
        /// What is wrong with it (with its line and column).
        reason: String,
    },
    /// A beat has nowhere to elect its leader.
    #[error(
        "the beat has nowhere to elect its leader: the app (broker {broker}) has no coordination \
         store; give one with `AppBuilder::coordination_url(\"redis://…\")`, or an election with \
         `BeatBuilder::election` (on RabbitMQ: `celeriac::amqp::AmqpElection`)"
    )]
    NoElection {
        /// The app's broker, password hidden.
        broker: String,
    },
    /// A setting is out of range.
    #[error("invalid setting `{setting}`: {reason}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The coordination store URL cannot be used. The URL is shown without its password.
    #[error("invalid coordination store URL `{url}`: {reason}")]
    CoordinationUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A task needs a coordination store (it is unique, or has a cluster-wide rate limit) and the
    /// app has none.
    #[error(
        "task `{task}` is unique or has a cluster-wide rate limit, which needs a coordination \
         store shared by every process, and the app has none: its broker ({broker}) holds no \
         claims; give one with `AppBuilder::coordination_url(\"redis://…\")`"
    )]
    NoCoordinationStore {
        /// The task.
        task: &'static str,
        /// The broker's URL, password redacted.
        broker: String,
    },
}

/// Why a task could not be enqueued. The task was not sent (or, after a timeout, may not have been).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The arguments could not be encoded.
    #[error("cannot encode the arguments of task `{task}`")]
    Encode {
        /// The task name.
        task: String,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// The broker failed or refused.
    #[error("cannot enqueue task `{task}`")]
    Broker {
        /// The task name.
        task: String,
        /// The broker's error.
        #[source]
        source: BrokerError,
    },
    /// The broker did not confirm in time.
    #[error("enqueueing task `{task}` timed out after {after:?}")]
    Timeout {
        /// The task name.
        task: String,
        /// The configured enqueue timeout.
        after: Duration,
    },
    /// The task is unique and an identical one holds its key: nothing was sent.
    #[error("{0}")]
    Duplicate(Duplicate),
    /// The task is unique and the coordination store failed: nothing was sent.
    #[error("cannot check that task `{task}` is unique")]
    Coordination {
        /// The task name.
        task: String,
        /// The store's error.
        #[source]
        source: BrokerError,
    },
    /// The send options are invalid (e.g. priority above 9).
    #[error("invalid options for task `{task}`: {reason}")]
    InvalidOptions {
        /// The task name.
        task: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The broker refused to consume these queues because the request itself is invalid (see
    /// [`BrokerError::is_invalid_request`]); every other broker error the worker rides out.
    #[error("cannot consume queues {queues:?}")]
    Consume {
        /// The queues.
        queues: Vec<String>,
        /// The broker's error.
        #[source]
        source: BrokerError,
    },
    /// The runtime shut down under the worker before it stopped.
    #[error("the worker was cancelled: its tokio runtime is shutting down")]
    Cancelled,
}

/// Any celeriac error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`BuildError`].
    #[error(transparent)]
    Build(#[from] BuildError),
    /// See [`EnqueueError`].
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    /// See [`WorkerError`].
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// See [`BrokerError`].
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// See [`CodecError`].
    #[error(transparent)]
    Codec(#[from] CodecError),
}
