use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::broker_url::BrokerChoice;
use super::coordination_url::CoordinationChoice;
use super::{App, AppInner, StateMap};
use crate::broker::Broker;
use crate::codec::{BincodeCodec, Codec, DecodeLimits};
use crate::coordination::CoordinationStore;
use crate::result::{MemoryResultBackend, ResultBackend, ResultBackendChoice};
use crate::task::registry::{Registry, TaskRegistration, linked_registrations};
use crate::{BuildError, DEFAULT_QUEUE, MemoryBroker, Task};

/// Builds an [`App`].
///
/// ```standalone_crate
/// use std::time::Duration;
/// use celeriac::codec::{DecodeLimits, JsonCodec};
/// use celeriac::{App, MemoryBroker};
///
/// let app = App::builder()
///     .broker(MemoryBroker::new())
///     .codec(JsonCodec::new())
///     .default_queue("default")
///     .decode_limits(DecodeLimits::default().max_message_bytes(256 * 1024))
///     .enqueue_timeout(Duration::from_secs(2))
///     .autodiscover()
///     .build()?;
/// assert_eq!(app.default_queue(), "default");
/// # Ok::<(), celeriac::Error>(())
/// ```
#[must_use]
pub struct AppBuilder {
    state: StateMap,
    broker: Option<BrokerChoice>,
    codec: Arc<dyn Codec>,
    registrations: Vec<TaskRegistration>,
    autodiscover: bool,
    default_queue: String,
    limits: DecodeLimits,
    enqueue_timeout: Duration,
    task_events: bool,
    result_backend: Option<ResultBackendChoice>,
    /// The results of a `MemoryBroker` given by value, used when no backend is chosen.
    broker_results: Option<MemoryResultBackend>,
    result_expires: Duration,
    coordination: Option<CoordinationChoice>,
    /// The coordination store of a broker given by hand, if it has one.
    broker_coordination: Option<Arc<dyn CoordinationStore>>,
    /// Whether tasks are sent in Celery's format.
    #[cfg(feature = "celery")]
    celery_wire: bool,
    /// The keys that sign and verify messages.
    signing: crate::signing::Keys,
}

impl AppBuilder {
    /// How long results are kept by default: one day (Celery's `result_expires`).
    pub const DEFAULT_RESULT_EXPIRES: Duration = Duration::from_secs(24 * 60 * 60);

    /// The default time `delay` waits for the broker before returning [`EnqueueError::Timeout`](crate::EnqueueError::Timeout).
    pub const DEFAULT_ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

    pub(super) fn new() -> Self {
        Self {
            state: StateMap::new(),
            broker: None,
            codec: Arc::new(BincodeCodec::new()),
            registrations: Vec::new(),
            autodiscover: false,
            default_queue: DEFAULT_QUEUE.to_owned(),
            limits: DecodeLimits::default(),
            enqueue_timeout: Self::DEFAULT_ENQUEUE_TIMEOUT,
            task_events: false,
            result_backend: None,
            broker_results: None,
            result_expires: Self::DEFAULT_RESULT_EXPIRES,
            coordination: None,
            #[cfg(feature = "celery")]
            celery_wire: false,
            signing: crate::signing::Keys::default(),
            broker_coordination: None,
        }
    }

    /// Uses the broker at `url`. Switching between the embedded broker, Redis and RabbitMQ is a
    /// change of URL:
    ///
    /// | URL | Broker | Feature |
    /// |---|---|---|
    /// | `memory://` | the in-process [`MemoryBroker`](crate::MemoryBroker); apps of one process built from the same URL share it (`memory://other` is another one) | always |
    /// | `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS) | [`redis::RedisBroker`](https://docs.rs/celeriac-redis) | `redis` |
    /// | `redis+cluster://host:port;redis+cluster://…`, `rediss+cluster://…` | [`redis::RedisBroker`](https://docs.rs/celeriac-redis) on a Redis Cluster | `redis` |
    /// | `amqp://user:password@host[:port]/vhost`, `amqps://…` (TLS) | [`amqp::AmqpBroker`](https://docs.rs/celeriac-amqp) | `amqp` |
    ///
    /// Redis and RabbitMQ are connected on first use, so `build` stays synchronous; a broker that
    /// cannot be reached then fails that operation with a [`BrokerError`](crate::BrokerError) (a
    /// worker keeps retrying). [`build`](Self::build) refuses a URL it cannot parse, an unknown scheme,
    /// or a scheme whose feature is off, naming the feature; no error shows the password.
    ///
    /// ```
    /// use celeriac::{App, BuildError};
    ///
    /// let app = App::builder().broker_url("memory://").build()?;
    /// assert_eq!(app.broker().system(), "memory");
    ///
    /// let error = App::builder().broker_url("kafka://user:hunter2@host").build().unwrap_err();
    /// assert!(matches!(error, BuildError::BrokerUrl { .. }));
    /// assert!(!error.to_string().contains("hunter2"));
    /// # Ok::<(), celeriac::Error>(())
    /// ```
    pub fn broker_url(mut self, url: impl AsRef<str>) -> Self {
        self.broker = Some(BrokerChoice::Url(url.as_ref().to_owned()));
        self
    }

    /// Uses the broker whose URL is in the environment variable `var` (e.g. `CELERIAC_BROKER_URL`);
    /// see [`broker_url`](Self::broker_url). [`build`](Self::build) fails if it is unset.
    ///
    /// ```
    /// use celeriac::{App, BuildError};
    ///
    /// let error = App::builder().broker_from_env("CELERIAC_DOC_UNSET_VARIABLE").build().unwrap_err();
    /// assert!(matches!(error, BuildError::BrokerEnvMissing { .. }));
    /// ```
    pub fn broker_from_env(mut self, var: &str) -> Self {
        self.broker = Some(match std::env::var(var) {
            Ok(url) => BrokerChoice::Url(url),
            Err(_) => BrokerChoice::EnvMissing(var.to_owned()),
        });
        self
    }

    /// Sends a `task-sent` [event](crate::events) for every task this app sends (Celery's
    /// `task_send_sent_event`), on the broker's event bus, for monitors to see tasks before a worker
    /// takes them. Off by default: a send then does no event work.
    pub fn task_events(mut self, on: bool) -> Self {
        self.task_events = on;
        self
    }

    /// Uses `broker`, built by hand (a configured `RedisBroker`, a [`MemoryBroker`](crate::MemoryBroker)
    /// to share with a test, or your own [`Broker`]).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        let memory = (&broker as &dyn Any).downcast_ref::<MemoryBroker>();
        self.broker_results = memory.map(MemoryBroker::result_backend);
        self.broker_coordination =
            memory.map(|broker| Arc::new(broker.coordination()) as Arc<dyn CoordinationStore>);
        #[cfg(feature = "redis")]
        if let Some(redis) = (&broker as &dyn Any).downcast_ref::<celeriac_redis::RedisBroker>() {
            self.broker_coordination = Some(Arc::new(redis.coordination()));
        }
        self.broker = Some(BrokerChoice::Given(Arc::new(broker)));
        self
    }

    /// Uses a broker that is already shared.
    pub fn shared_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker_results = None;
        self.broker_coordination = None;
        self.broker = Some(BrokerChoice::Given(broker));
        self
    }

    /// Keeps task results in the backend at `url`, for [`AsyncResult`](crate::AsyncResult)s to read:
    ///
    /// | URL | Backend | Feature |
    /// |---|---|---|
    /// | `memory://` | the in-process [`MemoryResultBackend`] of the embedded broker of that URL | always |
    /// | `redis://[user:password@]host[:port][/db]`, `rediss://…` | Redis, with any broker | `redis` |
    /// | `rpc://` | each result sent to its caller's reply queue on the app's RabbitMQ broker (given as an `amqp://` URL); only the sending process reads it, no chords | `amqp` |
    ///
    /// Without this, an app on the embedded broker keeps results in memory, and an app on another
    /// broker keeps none ([`AsyncResult::get`](crate::AsyncResult::get) then says so). Redis is
    /// connected on first use. [`build`](Self::build) refuses a URL it cannot use, without showing
    /// the password.
    ///
    /// ```
    /// use celeriac::{App, BuildError};
    ///
    /// let error = App::builder()
    ///     .broker_url("memory://")
    ///     .result_backend_url("mongodb://user:hunter2@host")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, BuildError::ResultBackendUrl { .. }));
    /// assert!(!error.to_string().contains("hunter2"));
    /// ```
    pub fn result_backend_url(mut self, url: impl AsRef<str>) -> Self {
        self.result_backend = Some(ResultBackendChoice::Url(url.as_ref().to_owned()));
        self
    }

    /// Keeps task results in `backend`, built by hand (or your own [`ResultBackend`]).
    pub fn result_backend(mut self, backend: impl ResultBackend) -> Self {
        self.result_backend = Some(ResultBackendChoice::Given(Arc::new(backend)));
        self
    }

    /// Keeps unique tasks' claims in the store at `url` (Celery has no such store; Sidekiq
    /// Enterprise keeps its unique jobs' locks in Redis the same way):
    ///
    /// | URL | store | feature |
    /// |-----|-------|---------|
    /// | `memory://` | the in-process [`MemoryCoordination`](crate::coordination::MemoryCoordination) of the embedded broker of that URL | always |
    /// | `redis://[user:password@]host[:port][/db]`, `rediss://…` | Redis, with any broker | `redis` |
    /// | `redis+cluster://host:port;redis+cluster://…` | a Redis Cluster, with any broker | `redis` |
    ///
    /// Without this, an app on the embedded broker keeps claims in memory, an app on Redis keeps
    /// them in the broker's Redis, and an app on RabbitMQ has none: [`build`](Self::build) then
    /// refuses a unique task with [`BuildError::NoCoordinationStore`]. Redis is connected on first
    /// use.
    ///
    /// ```
    /// use celeriac::{App, BuildError};
    ///
    /// #[celeriac::task(unique_for = "60s")]
    /// async fn nightly_report(day: String) {
    ///     println!("report of {day}");
    /// }
    ///
    /// let error = App::builder()
    ///     .broker_url("amqp://guest:guest@127.0.0.1:5672/%2f")
    ///     .register::<nightly_report>()
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, BuildError::NoCoordinationStore { task: "nightly_report", .. }));
    ///
    /// let app = App::builder()
    ///     .broker_url("amqp://guest:guest@127.0.0.1:5672/%2f")
    ///     .coordination_url("redis://127.0.0.1:6379/0")
    ///     .register::<nightly_report>()
    ///     .build();
    /// assert!(app.is_ok());
    /// ```
    pub fn coordination_url(mut self, url: impl AsRef<str>) -> Self {
        self.coordination = Some(CoordinationChoice::Url(url.as_ref().to_owned()));
        self
    }

    /// Keeps unique tasks' claims in `store`, built by hand (or your own [`CoordinationStore`]).
    pub fn coordination(mut self, store: impl CoordinationStore) -> Self {
        self.coordination = Some(CoordinationChoice::Given(Arc::new(store)));
        self
    }

    /// How long a stored result is kept (default one day, [`DEFAULT_RESULT_EXPIRES`](Self::DEFAULT_RESULT_EXPIRES)).
    pub fn result_expires(mut self, after: Duration) -> Self {
        self.result_expires = after;
        self
    }

    /// Encodes arguments with `codec` (default: [`BincodeCodec`]).
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = Arc::new(codec);
        self
    }

    /// Signs every message this app sends with `key`, and makes its workers run only messages
    /// signed by a key they accept (this one, and those of
    /// [`accept_signatures_of`](Self::accept_signatures_of)); see [`celeriac::signing`](crate::signing).
    ///
    /// ```
    /// use celeriac::App;
    /// use celeriac::signing::SigningKey;
    ///
    /// #[celeriac::task]
    /// async fn send_code(mobile: String) -> Result<String, std::io::Error> {
    ///     Ok(mobile)
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
    /// let key = SigningKey::new("2026-11", [42u8; 32])?;
    /// let app = App::builder()
    ///     .broker_url("memory://")
    ///     .sign_with(key)
    ///     .register::<send_code>()
    ///     .build()?;
    /// send_code::delay(&app, "13800000000".into()).await?;
    /// assert_eq!(celeriac::testing::run_until_idle(&app).await?.succeeded, 1);
    /// # Ok(()) })
    /// # }
    /// ```
    pub fn sign_with(mut self, key: crate::signing::SigningKey) -> Self {
        self.signing.sign_with(key);
        self
    }

    /// Makes this app's workers also run messages signed by `key` (a key being retired, or the
    /// next one before producers switch to it).
    ///
    /// ```
    /// use celeriac::App;
    /// use celeriac::signing::SigningKey;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let app = App::builder()
    ///     .broker_url("memory://")
    ///     .sign_with(SigningKey::new("2026-12", [2u8; 32])?)
    ///     .accept_signatures_of(SigningKey::new("2026-11", [1u8; 32])?)
    ///     .build()?;
    /// # let _ = app; Ok(()) }
    /// ```
    pub fn accept_signatures_of(mut self, key: crate::signing::SigningKey) -> Self {
        self.signing.accept(key);
        self
    }

    /// Sends tasks as Python Celery does (its message protocol 2 in kombu's JSON envelope, see
    /// [`celeriac::celery`](crate::celery)), so that Python workers run them; arguments and
    /// results are encoded as JSON ([`JsonCodec`](crate::codec::JsonCodec)). Workers read both
    /// formats either way.
    ///
    /// On a `redis://` (or `rediss://`) [`broker_url`](Self::broker_url), the broker keeps kombu's
    /// layout, as Python Celery's Redis transport does ([`KombuBroker`](crate::redis::KombuBroker)):
    /// Python and Rust workers then share the queues, and each restores what the other left
    /// unacknowledged when it died. On an `amqp://` (or `amqps://`) URL, RabbitMQ carries the task
    /// messages as Celery sends them there (the body alone, the protocol's headers as an AMQP
    /// table: [`AmqpBrokerBuilder::celery_format`](crate::amqp::AmqpBrokerBuilder::celery_format)),
    /// in queues declared as Celery declares them.
    ///
    /// ```
    /// use celeriac::App;
    ///
    /// #[celeriac::task(name = "verifications.tasks.ccp_send_sms_code")]
    /// async fn ccp_send_sms_code(mobile: String, code: String) -> Result<String, std::io::Error> {
    ///     Ok(format!("{code} to {mobile}"))
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
    /// let app = App::builder()
    ///     .broker_url("memory://")
    ///     .celery_compat()
    ///     .register::<ccp_send_sms_code>()
    ///     .build()?;
    /// ccp_send_sms_code::delay(&app, "13800000000".into(), "123456".into()).await?;
    /// assert_eq!(celeriac::testing::run_until_idle(&app).await?.succeeded, 1);
    /// # Ok(()) })
    /// # }
    /// ```
    #[cfg(feature = "celery")]
    pub fn celery_compat(mut self) -> Self {
        self.codec = Arc::new(crate::codec::JsonCodec::new());
        self.celery_wire = true;
        self
    }

    /// Shares `value` with every task run: tasks read it with
    /// [`TaskContext::state::<S>()`](crate::TaskContext::state) (one value per type; a second call with
    /// the same type replaces the first). Use it for clients, pools and gateways.
    ///
    /// ```
    /// use celeriac::{App, TaskContext, TaskError};
    ///
    /// struct Greeting(&'static str);
    ///
    /// #[celeriac::task]
    /// async fn greet(ctx: TaskContext, name: String) -> Result<(), TaskError> {
    ///     let greeting = ctx.state::<Greeting>()?;
    ///     println!("{}, {name}", greeting.0);
    ///     Ok(())
    /// }
    ///
    /// let app = App::builder().broker(celeriac::MemoryBroker::new()).state(Greeting("hello")).register::<greet>().build()?;
    /// assert_eq!(app.state::<Greeting>().map(|g| g.0), Some("hello"));
    /// # Ok::<(), celeriac::Error>(())
    /// ```
    pub fn state<S: Send + Sync + 'static>(mut self, value: S) -> Self {
        self.state.insert(TypeId::of::<S>(), Arc::new(value));
        self
    }

    /// Registers task `T` so this app's workers run it.
    pub fn register<T: Task>(mut self) -> Self {
        self.registrations.push(TaskRegistration::new::<T>());
        self
    }

    /// Registers every `#[task]` linked into the binary (Celery's `autodiscover_tasks`).
    ///
    /// Tasks in a library crate are found when the binary links that crate's code; if nothing else of
    /// the crate is used, the linker may drop it — register such tasks explicitly.
    pub fn autodiscover(mut self) -> Self {
        self.autodiscover = true;
        self
    }

    /// The queue for tasks that name none (default `celery`).
    pub fn default_queue(mut self, queue: impl Into<String>) -> Self {
        self.default_queue = queue.into();
        self
    }

    /// The limits every decoded message is held to.
    pub fn decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// How long `delay` waits for the broker (default 5 s).
    pub fn enqueue_timeout(mut self, timeout: Duration) -> Self {
        self.enqueue_timeout = timeout;
        self
    }

    /// Builds the app, checking the broker choice and the task registry. There is no default broker:
    /// without one this is [`BuildError::NoBroker`].
    pub fn build(self) -> Result<App, BuildError> {
        if self.default_queue.is_empty() {
            return Err(BuildError::InvalidSetting {
                setting: "default_queue",
                reason: "must not be empty".into(),
            });
        }
        #[cfg(feature = "celery")]
        if self.celery_wire && self.signing.any() {
            return Err(BuildError::InvalidSetting {
                setting: "sign_with",
                reason: "an app that sends Celery's format cannot sign its messages: Python workers would not read them, and Python producers cannot sign theirs".into(),
            });
        }
        let mut registry = Registry::default();
        for registration in &self.registrations {
            registration.insert_into(&mut registry)?;
        }
        if self.autodiscover {
            for registration in linked_registrations() {
                registration.insert_into(&mut registry)?;
            }
        }
        for (_, task) in registry.tasks() {
            if let Some(missing) = task
                .required_state
                .iter()
                .find(|needed| !self.state.contains_key(&needed.type_id))
            {
                return Err(BuildError::MissingState {
                    task: task.name,
                    state: missing.type_name,
                });
            }
        }
        if self.result_expires.is_zero() {
            return Err(BuildError::InvalidSetting {
                setting: "result_expires",
                reason: "must be longer than zero".into(),
            });
        }
        let broker = self.broker.ok_or(BuildError::NoBroker)?;
        // An app in Celery's format keeps Celery's layouts: kombu's on Redis brokers, Celery's
        // result meta in Redis result backends.
        #[cfg(feature = "celery")]
        let celery_layout = self.celery_wire;
        #[cfg(not(feature = "celery"))]
        let celery_layout = false;
        let result_backend = match self.result_backend {
            Some(choice) => Some(choice.into_backend(broker.url(), celery_layout)?),
            None => self
                .broker_results
                .or_else(|| broker.default_result_backend())
                .map(|backend| Arc::new(backend) as Arc<dyn ResultBackend>),
        };
        let coordination = match self.coordination {
            Some(choice) => Some(choice.into_store()?),
            None => self
                .broker_coordination
                .or_else(|| broker.default_coordination()),
        };
        if coordination.is_none()
            && let Some((_, task)) = registry
                .tasks()
                .filter(|(_, task)| {
                    task.options.unique.is_some()
                        || (task.options.rate_limit.is_some()
                            && task.options.rate_limit_scope != crate::RateLimitScope::Worker)
                })
                .min_by_key(|(name, _)| *name)
        {
            return Err(BuildError::NoCoordinationStore {
                task: task.name,
                broker: broker.describe(),
            });
        }
        let broker = broker.into_broker(celery_layout)?;
        Ok(App {
            inner: Arc::new(AppInner {
                state: self.state,
                broker,
                codec: self.codec,
                registry,
                default_queue: self.default_queue,
                limits: self.limits,
                enqueue_timeout: self.enqueue_timeout,
                reply_to: result_backend
                    .as_ref()
                    .and_then(|backend| backend.reply_to()),
                result_backend,
                result_expires: self.result_expires,
                coordination,
                sent_events: self.task_events.then(crate::events::SentEvents::default),
                #[cfg(feature = "celery")]
                celery_wire: self.celery_wire,
                signing: self.signing.any().then_some(self.signing),
            }),
        })
    }
}

impl fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppBuilder")
            .field("broker", &self.broker.as_ref().map(BrokerChoice::describe))
            .field("codec", &self.codec.content_type())
            .field("registrations", &self.registrations.len())
            .field("autodiscover", &self.autodiscover)
            .field("default_queue", &self.default_queue)
            .field(
                "result_backend",
                &self
                    .result_backend
                    .as_ref()
                    .map(ResultBackendChoice::describe),
            )
            .finish_non_exhaustive()
    }
}
