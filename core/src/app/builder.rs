use std::any::TypeId;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{App, AppInner, StateMap};
use crate::broker::{Broker, MemoryBroker};
use crate::codec::{BincodeCodec, Codec, DecodeLimits};
use crate::task::registry::{Registry, TaskRegistration, linked_registrations};
use crate::{BuildError, DEFAULT_QUEUE, Task};

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
    broker: Option<Arc<dyn Broker>>,
    codec: Arc<dyn Codec>,
    registrations: Vec<TaskRegistration>,
    autodiscover: bool,
    default_queue: String,
    limits: DecodeLimits,
    enqueue_timeout: Duration,
}

impl AppBuilder {
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
        }
    }

    /// Uses `broker`. Switching from the in-memory broker to Redis or RabbitMQ is this one line.
    pub fn broker(self, broker: impl Broker) -> Self {
        self.shared_broker(Arc::new(broker))
    }

    /// Uses a broker that is already shared.
    pub fn shared_broker(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Encodes arguments with `codec` (default: [`BincodeCodec`]).
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = Arc::new(codec);
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
    /// let app = App::builder().state(Greeting("hello")).register::<greet>().build()?;
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

    /// Builds the app, checking the task registry.
    pub fn build(self) -> Result<App, BuildError> {
        if self.default_queue.is_empty() {
            return Err(BuildError::InvalidSetting {
                setting: "default_queue",
                reason: "must not be empty".into(),
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
        let broker = self.broker.unwrap_or_else(|| Arc::new(MemoryBroker::new()));
        Ok(App {
            inner: Arc::new(AppInner {
                state: self.state,
                broker,
                codec: self.codec,
                registry,
                default_queue: self.default_queue,
                limits: self.limits,
                enqueue_timeout: self.enqueue_timeout,
            }),
        })
    }
}

impl fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppBuilder")
            .field("broker", &self.broker.as_ref().map(|b| b.redacted_url()))
            .field("codec", &self.codec.content_type())
            .field("registrations", &self.registrations.len())
            .field("autodiscover", &self.autodiscover)
            .field("default_queue", &self.default_queue)
            .finish_non_exhaustive()
    }
}
