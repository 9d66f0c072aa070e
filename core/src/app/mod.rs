//! The [`App`]: broker, codec and task registry, and the way tasks are sent.

mod broker_url;
mod builder;
mod coordination_url;
mod delay;
pub(crate) mod send;
mod unique;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub(crate) use self::broker_url::memory_results;
pub use self::builder::AppBuilder;
pub use self::delay::Delay;
pub use self::send::SendOptions;
pub(crate) use self::unique::{UNIQUE_HEADER, release_after_run};
use crate::broker::{Broker, Outgoing};
use crate::codec::{self, Codec, CodecError, DecodeLimits};
use crate::coordination::CoordinationStore;
use crate::envelope::Step;
use crate::result::{AsyncResult, ResultBackend};
use crate::task::TaskArgs;
use crate::task::registry::{RegisteredTask, Registry};
use crate::{EnqueueError, Envelope, Task, TaskError, TaskId, TaskOptions, WorkerBuilder, clock};

/// A celeriac application: where tasks are sent and which tasks its workers run.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`, so web handlers hold it in their state.
///
/// ```standalone_crate
/// use celeriac::{App, MemoryBroker};
///
/// #[celeriac::task(name = "ccp_send_sms_code", max_retries = 3, retry_backoff = 3)]
/// async fn ccp_send_sms_code(mobile: String, code: String) -> Result<(), std::io::Error> {
///     println!("sending {code} to {mobile}");
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
/// let app = App::builder().broker(MemoryBroker::new()).autodiscover().build()?;
/// let id = ccp_send_sms_code::delay(&app, "13800138000".into(), "424242".into()).await?;
/// assert_eq!(app.broker().len("celery").await?, 1);
/// # let _ = id; Ok(()) }
/// ```
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

/// Values tasks reach through [`TaskContext::state`](crate::TaskContext::state), by type.
pub(crate) type StateMap = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

struct AppInner {
    state: StateMap,
    broker: Arc<dyn Broker>,
    codec: Arc<dyn Codec>,
    registry: Registry,
    default_queue: String,
    limits: DecodeLimits,
    enqueue_timeout: Duration,
    result_backend: Option<Arc<dyn ResultBackend>>,
    result_expires: Duration,
    /// The result backend's [`reply_to`](ResultBackend::reply_to), written in every message.
    reply_to: Option<String>,
    /// Where unique tasks' claims are kept, if anywhere.
    coordination: Option<Arc<dyn CoordinationStore>>,
    /// Where `task-sent` events go, if the app sends them.
    sent_events: Option<crate::events::SentEvents>,
    /// Whether tasks are sent in Celery's format.
    #[cfg(feature = "celery")]
    celery_wire: bool,
    /// The keys that sign and verify messages, if any.
    signing: Option<crate::signing::Keys>,
}

impl App {
    /// Starts building an app. Choose its broker with [`AppBuilder::broker_url`] (or
    /// [`AppBuilder::broker`]); there is no default.
    pub fn builder() -> AppBuilder {
        AppBuilder::new()
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The codec that encodes task arguments.
    pub fn codec(&self) -> &dyn Codec {
        &*self.inner.codec
    }

    /// The queue tasks go to unless their options or the send options name another.
    pub fn default_queue(&self) -> &str {
        &self.inner.default_queue
    }

    /// Where task results are kept, if anywhere (see [`AppBuilder::result_backend_url`]).
    pub fn result_backend(&self) -> Option<&Arc<dyn ResultBackend>> {
        self.inner.result_backend.as_ref()
    }

    /// How long a stored result is kept.
    pub fn result_expires(&self) -> Duration {
        self.inner.result_expires
    }

    /// How long a send waits for the broker (and a unique task's claim) before it fails.
    pub fn enqueue_timeout(&self) -> Duration {
        self.inner.enqueue_timeout
    }

    /// Where unique tasks' claims are kept, if anywhere (see [`AppBuilder::coordination_url`]).
    pub fn coordination(&self) -> Option<&Arc<dyn CoordinationStore>> {
        self.inner.coordination.as_ref()
    }

    /// The limits applied to every message a worker of this app decodes.
    pub fn decode_limits(&self) -> &DecodeLimits {
        &self.inner.limits
    }

    /// The names of the registered tasks.
    pub fn task_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.inner.registry.names()
    }

    /// Starts building a worker for this app's tasks.
    pub fn worker(&self) -> WorkerBuilder {
        WorkerBuilder::new(self.clone())
    }

    /// Sends task `T` (Celery's `delay`): await the returned [`Delay`], with options chained on it if
    /// any, to get the task's id once the broker holds the message. `my_task::delay(&app, …)` is the
    /// same with the arguments spelled out.
    pub fn delay<T: Task>(&self, args: T::Args) -> Delay<'_, T> {
        Delay::new(self, args)
    }

    /// Sends task `T` with options: countdown, ETA, expiry, queue, priority (Celery's `apply_async`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac::{App, SendOptions};
    ///
    /// #[celeriac::task]
    /// async fn remind(user_id: u64) {
    ///     println!("reminding {user_id}");
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
    /// let app = App::builder().broker(celeriac::MemoryBroker::new()).build()?;
    /// let options = SendOptions::new().countdown(Duration::from_secs(60)).queue("reminders");
    /// app.apply_async::<remind>((7,), options).await?;
    /// assert_eq!(app.broker().stats("reminders").await?.delayed, 1);
    /// # Ok(()) }
    /// ```
    pub async fn apply_async<T: Task>(
        &self,
        args: T::Args,
        options: SendOptions,
    ) -> Result<AsyncResult<T::Output>, EnqueueError> {
        let task_options = T::options();
        // A unique task's key, from its arguments before they are encoded into the message.
        let unique = task_options
            .unique
            .map(|unique| T::unique_key(&args).map(|key| (unique, key)))
            .transpose()
            .map_err(|source| EnqueueError::Encode {
                task: T::NAME.to_owned(),
                source,
            })?;
        let mut envelope =
            self.envelope(T::NAME, args.as_serialize(), Some(&task_options), options)?;
        envelope.args_schema = T::Args::schema_fingerprint();
        envelope.store_result = stores_result::<T>(&task_options);
        let ignored_by = (!envelope.store_result).then_some(T::NAME);
        let id = envelope.id;
        let claimed = match unique {
            Some((unique, key)) => Some(unique::claim(self, key, unique, &mut envelope).await?),
            None => None,
        };
        if let Err(error) = self.publish(envelope).await {
            if let Some(claimed) = claimed {
                claimed.give_back(self, id).await;
            }
            return Err(error);
        }
        Ok(AsyncResult::new(self.clone(), id, ignored_by))
    }

    /// Sends many runs of task `T` in one batch (pipelined by brokers that can). Returns their ids in order.
    pub async fn delay_batch<T: Task>(
        &self,
        args: impl IntoIterator<Item = T::Args>,
    ) -> Result<Vec<TaskId>, EnqueueError> {
        let task_options = T::options();
        if task_options.unique.is_some() {
            return Err(EnqueueError::InvalidOptions {
                task: T::NAME.to_owned(),
                reason: "a unique task is sent with `delay`, one send at a time, so that each \
                         send learns whether it was a duplicate"
                    .to_owned(),
            });
        }
        let args_schema = T::Args::schema_fingerprint();
        let store_result = stores_result::<T>(&task_options);
        let mut envelopes = Vec::new();
        for args in args {
            let mut envelope = self.envelope(
                T::NAME,
                args.as_serialize(),
                Some(&task_options),
                SendOptions::new(),
            )?;
            envelope.args_schema = args_schema;
            envelope.store_result = store_result;
            envelopes.push(envelope);
        }
        let ids = envelopes.iter().map(|envelope| envelope.id).collect();
        self.publish_all(envelopes).await?;
        Ok(ids)
    }

    /// Sends a task by name, for tasks this process does not link (Celery's `send_task`). The task's
    /// own options apply when it is registered here; otherwise only `options` and the app's defaults.
    pub async fn send_task<A>(
        &self,
        name: &str,
        args: &A,
        options: SendOptions,
    ) -> Result<TaskId, EnqueueError>
    where
        A: Serialize + Sync + ?Sized,
    {
        let registered = self.inner.registry.get(name);
        let mut envelope =
            self.envelope(name, &args, registered.map(|task| &task.options), options)?;
        // A task this process does not link stores its result (read it with `AsyncResult::from_id`).
        envelope.store_result = registered.is_none_or(|task| task.store_result);
        self.publish(envelope).await
    }

    fn envelope(
        &self,
        name: &str,
        args: &dyn erased_serde::Serialize,
        task_options: Option<&TaskOptions>,
        options: SendOptions,
    ) -> Result<Envelope, EnqueueError> {
        let (parent_id, root_id) = (options.parent_id, options.root_id);
        let mut step = self.step(name, args, task_options, options)?;
        let args = std::mem::take(&mut step.args);
        let mut envelope = step.into_envelope(clock::now(), args);
        envelope.parent_id = parent_id;
        envelope.root_id = root_id;
        Ok(envelope)
    }

    /// A message template for task `name`: options resolved against the task's and the app's,
    /// arguments encoded. [`envelope`](Self::envelope) sends one at once; a workflow keeps the
    /// later ones in its first message.
    pub(crate) fn step(
        &self,
        name: &str,
        args: &dyn erased_serde::Serialize,
        task_options: Option<&TaskOptions>,
        options: SendOptions,
    ) -> Result<Step, EnqueueError> {
        let invalid = |reason: String| EnqueueError::InvalidOptions {
            task: name.to_owned(),
            reason,
        };
        let queue = options
            .queue
            .or_else(|| task_options.and_then(|o| o.queue.clone()))
            .unwrap_or_else(|| self.inner.default_queue.clone());
        if queue.is_empty() {
            return Err(invalid("the queue name is empty".into()));
        }
        let priority = options.priority.or(task_options.and_then(|o| o.priority));
        if let Some(priority) = priority.filter(|p| *p > 9) {
            return Err(invalid(format!("priority {priority} is above 9")));
        }
        if priority.is_some() && self.broker().capabilities().max_priority.is_none() {
            return Err(invalid(format!(
                "the broker ({}) does not order messages by priority; use a queue per priority",
                self.broker().system()
            )));
        }
        let encoded =
            self.inner
                .codec
                .encode_erased(args)
                .map_err(|source| EnqueueError::Encode {
                    task: name.to_owned(),
                    source,
                })?;
        Ok(Step {
            id: options.task_id.unwrap_or_default(),
            task: name.to_owned(),
            queue,
            args: encoded,
            content_type: self.inner.codec.content_type().to_owned(),
            takes_previous: false,
            args_schema: None,
            store_result: false,
            priority,
            time_limit: options.time_limit,
            countdown: options.countdown,
            eta: options.eta,
            expires_in: options.expires_in.or(task_options.and_then(|o| o.expires)),
            expires_at: options.expires_at,
            headers: options.headers,
            reply_to: self.inner.reply_to.clone(),
        })
    }

    /// Whether this app sends Celery's messages ([`AppBuilder::celery_compat`]).
    pub(crate) fn celery_wire(&self) -> bool {
        #[cfg(feature = "celery")]
        return self.inner.celery_wire;
        #[cfg(not(feature = "celery"))]
        false
    }

    /// Makes `envelope` member `index` of group `group` where this app's format says where a
    /// message stands in its group: Celery's (its `group` and `group_index` headers). celeriac's
    /// own format needs no such mark, so there it does nothing.
    pub(crate) fn place_in_group(&self, envelope: &mut Envelope, group: TaskId, index: usize) {
        #[cfg(feature = "celery")]
        if self.inner.celery_wire {
            crate::celery::place_in_group(envelope, group, index);
        }
        #[cfg(not(feature = "celery"))]
        let _ = (envelope, group, index);
    }

    /// An envelope's bytes, in the format this app sends: celeriac's own, or Celery's (see
    /// [`AppBuilder::celery_compat`]).
    pub(crate) fn encode_envelope(&self, envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
        #[cfg(feature = "celery")]
        if self.inner.celery_wire {
            return crate::celery::encode(envelope);
        }
        let bytes = envelope.to_bytes()?;
        Ok(match &self.inner.signing {
            Some(keys) => keys.sign(bytes),
            None => bytes,
        })
    }

    /// `record` in `state` as this app's result backend keeps it: Celery's result meta (which
    /// Python reads) for an app in Celery's format, celeriac's record otherwise.
    pub(crate) fn result_to_store(
        &self,
        record: &crate::result::record::ResultRecord,
        state: crate::ResultState,
        id: TaskId,
    ) -> Result<crate::StoredResult, CodecError> {
        #[cfg(feature = "celery")]
        if self.inner.celery_wire {
            return crate::celery::to_meta(record, state, id);
        }
        let _ = id;
        record.to_stored(state)
    }

    /// The envelope in a delivered message: its signature checked first if this app has keys
    /// (see [`celeriac::signing`](crate::signing)).
    pub(crate) fn open_envelope(&self, bytes: &[u8]) -> Result<Envelope, CodecError> {
        match &self.inner.signing {
            Some(keys) => Envelope::from_bytes(keys.verify(bytes)?, &self.inner.limits),
            None => Envelope::from_bytes(crate::signing::unverified(bytes), &self.inner.limits),
        }
    }

    fn outgoing(&self, envelope: &Envelope) -> Result<Outgoing, EnqueueError> {
        let bytes = self
            .encode_envelope(envelope)
            .map_err(|source| EnqueueError::Encode {
                task: envelope.task.clone(),
                source,
            })?;
        Ok(self.message_for_broker(&envelope.queue, bytes, envelope.eta, envelope.priority))
    }

    /// `payload` for `queue` as this app's broker takes it. A broker without delays delivers it
    /// at once, and the worker holds it until its ETA, which is in the message. A priority goes
    /// to a broker that orders by it (sends check that it does); otherwise it stays in the message
    /// only (a retry of a Celery message keeps it so).
    pub(crate) fn message_for_broker(
        &self,
        queue: &str,
        payload: impl Into<bytes::Bytes>,
        eta: Option<std::time::SystemTime>,
        priority: Option<u8>,
    ) -> Outgoing {
        let mut outgoing = Outgoing::new(queue, payload);
        let capabilities = self.broker().capabilities();
        if capabilities.delays {
            outgoing.not_before = eta;
        }
        if capabilities.max_priority.is_some() {
            outgoing.priority = priority;
        }
        outgoing
    }

    /// Publishes envelopes in one batch, within the enqueue timeout.
    pub(crate) async fn publish_all(&self, envelopes: Vec<Envelope>) -> Result<(), EnqueueError> {
        let Some(first) = envelopes.first() else {
            return Ok(());
        };
        let task = first.task.clone();
        self.prepare_replies(&task).await?;
        let messages = envelopes
            .iter()
            .map(|envelope| self.outgoing(envelope))
            .collect::<Result<Vec<_>, _>>()?;
        self.with_timeout(&task, self.inner.broker.publish_batch(messages))
            .await?;
        if let Some(events) = &self.inner.sent_events {
            for envelope in &envelopes {
                events.sent(self, envelope).await;
            }
        }
        Ok(())
    }

    /// Publishes an envelope, within the enqueue timeout.
    pub(crate) async fn publish(
        &self,
        #[allow(unused_mut)] mut envelope: Envelope,
    ) -> Result<TaskId, EnqueueError> {
        self.prepare_replies(&envelope.task).await?;
        #[cfg(feature = "opentelemetry")]
        let span = crate::trace_context::send_span(&mut envelope, self.inner.broker.system());
        let outgoing = self.outgoing(&envelope)?;
        let published = self.with_timeout(&envelope.task, self.inner.broker.publish(outgoing));
        #[cfg(feature = "opentelemetry")]
        let published = tracing::Instrument::instrument(published, span);
        published.await?;
        if let Some(events) = &self.inner.sent_events {
            events.sent(self, &envelope).await;
        }
        Ok(envelope.id)
    }

    /// Has a result backend that sends results to their caller ready to receive them, before a send.
    async fn prepare_replies(&self, task: &str) -> Result<(), EnqueueError> {
        match &self.inner.result_backend {
            Some(backend) if self.inner.reply_to.is_some() => {
                self.with_timeout(task, backend.prepare()).await
            }
            _ => Ok(()),
        }
    }

    async fn with_timeout(
        &self,
        task: &str,
        publish: impl Future<Output = Result<(), crate::BrokerError>>,
    ) -> Result<(), EnqueueError> {
        let after = self.inner.enqueue_timeout;
        match tokio::time::timeout(after, publish).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(EnqueueError::Broker {
                task: task.to_owned(),
                source,
            }),
            Err(_) => Err(EnqueueError::Timeout {
                task: task.to_owned(),
                after,
            }),
        }
    }

    /// The codec for `content_type`: the app's own, or a built-in one.
    pub(crate) fn codec_for(&self, content_type: &str) -> Option<&dyn Codec> {
        if content_type == self.inner.codec.content_type() {
            Some(&*self.inner.codec)
        } else {
            codec::builtin_for(content_type)
        }
    }

    /// Decodes a message's arguments with the codec its content type names.
    pub(crate) fn decode_args<T: Task>(&self, envelope: &Envelope) -> Result<T::Args, TaskError> {
        // Celery's `[args, kwargs]`, bound to the task's parameters by position and by name.
        #[cfg(feature = "celery")]
        if envelope.content_type == crate::celery::ARGS_CONTENT_TYPE {
            let bound = crate::celery::bind(&envelope.args, T::ARG_NAMES)
                .map_err(TaskError::InvalidArgs)?;
            let json = crate::codec::JsonCodec::new();
            return T::Args::decode_from(&json, &bound, &self.inner.limits).map_err(|error| {
                TaskError::InvalidArgs(crate::celery::name_the_argument(
                    &bound,
                    T::ARG_NAMES,
                    error,
                ))
            });
        }
        let codec = self.codec_for(&envelope.content_type).ok_or_else(|| {
            TaskError::InvalidArgs(CodecError::UnsupportedContentType(
                envelope.content_type.clone(),
            ))
        })?;
        T::Args::decode_from(codec, &envelope.args, &self.inner.limits)
            .map_err(TaskError::InvalidArgs)
    }

    /// The shared value of type `S` given to [`AppBuilder::state`], if any.
    pub fn state<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.inner
            .state
            .get(&TypeId::of::<S>())
            .and_then(|value| value.downcast_ref::<S>())
    }

    pub(crate) fn registered(&self, name: &str) -> Option<&RegisteredTask> {
        self.inner.registry.get(name)
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }
}

/// Whether task `T` with `options` stores its outcome: as its `ignore_result` option says, and by
/// default unless it returns `()`.
pub(crate) fn stores_result<T: Task>(options: &TaskOptions) -> bool {
    !options
        .ignore_result
        .unwrap_or(TypeId::of::<T::Output>() == TypeId::of::<()>())
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("broker", &self.inner.broker.redacted_url())
            .field("codec", &self.inner.codec.content_type())
            .field("tasks", &self.inner.registry)
            .field("default_queue", &self.inner.default_queue)
            .finish_non_exhaustive()
    }
}
