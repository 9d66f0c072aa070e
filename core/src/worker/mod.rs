//! Workers: consume queues, run tasks, settle every message.
//!
//! A worker takes deliveries from its queues, runs up to `concurrency` tasks at once, and settles each
//! message exactly one way after its run (acks late): **ack** on success; on failure, a **retry**
//! (a copy with `retries + 1` and a not-before time is published, then the original is acked) or a
//! **dead-letter** with the error once the retry policy gives up. Unknown task names and undecodable
//! messages are dead-lettered with a reason, and the worker keeps serving. Panics are caught and count
//! as failures.
//!
//! On SIGINT or SIGTERM ([`Worker::run`]) or when a future completes ([`Worker::run_until`]), the
//! worker stops fetching, lets running tasks finish for up to the grace period, and requeues the rest:
//! nothing is lost.

mod cluster_rate;
mod control;
mod lane;
mod process;
mod rate_limit;
mod run;
mod shutdown;
mod waiting;
mod workflow;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use self::rate_limit::RateLimiter;
pub use self::shutdown::shutdown_signal;
use crate::layers::time_limit::TimeLimit;
use crate::metrics::MetricsCache;
use crate::service::{BoxTaskService, RunTask, TaskOutput, TaskRequest};
use crate::task::BoxError;
use crate::{App, BuildError, TaskError};

type LayerFn = Box<dyn Fn(BoxTaskService) -> BoxTaskService + Send + Sync>;

/// Configures a [`Worker`]; from [`App::worker`].
///
/// ```
/// use std::time::Duration;
/// use celeriac::App;
///
/// # fn main() -> Result<(), celeriac::Error> {
/// let app = App::builder().broker(celeriac::MemoryBroker::new()).build()?;
/// let worker = app
///     .worker()
///     .queues(["celery", "sms"])
///     .concurrency(8)
///     .prefetch(16)
///     .grace_period(Duration::from_secs(30))
///     .build()?;
/// # let _ = worker; Ok(()) }
/// ```
#[must_use]
pub struct WorkerBuilder {
    app: App,
    queues: Option<Vec<String>>,
    concurrency: usize,
    prefetch: Option<usize>,
    grace_period: Duration,
    layers: Vec<LayerFn>,
    events: Events,
    queue_depth_every: Option<Duration>,
    remote_control: bool,
}

/// Whether and how a worker sends events.
#[derive(Clone, Debug)]
struct Events {
    on: bool,
    hostname: Option<String>,
    heartbeat: Duration,
}

impl WorkerBuilder {
    /// The default grace period for running tasks at shutdown.
    pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);

    pub(crate) fn new(app: App) -> Self {
        let concurrency = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            app,
            queues: None,
            concurrency,
            prefetch: None,
            grace_period: Self::DEFAULT_GRACE_PERIOD,
            layers: Vec::new(),
            events: Events {
                on: false,
                hostname: None,
                heartbeat: Duration::from_secs(2),
            },
            queue_depth_every: Some(Duration::from_secs(15)),
            remote_control: true,
        }
    }

    /// Listens for [remote-control](crate::control) commands (default: on, as Celery's workers
    /// do): answers `ping`, `stats`, `active` and the rest, honours revokes — also those
    /// remembered in the coordination store before it started — and shuts down when told.
    /// Off, it does no work for them.
    pub fn remote_control(mut self, on: bool) -> Self {
        self.remote_control = on;
        self
    }

    /// How often the worker samples its queues' depth into the `celeriac_queue_depth` gauge
    /// (default every 15 s, and once at start); `None` never does. Each sample asks the broker for
    /// each queue's statistics.
    pub fn queue_depth_interval(mut self, every: Option<Duration>) -> Self {
        self.queue_depth_every = every;
        self
    }

    /// Sends [events](crate::events) — tasks received, started, succeeded, failed, retried,
    /// dead-lettered; online, a heartbeat, offline — on the broker, for monitors (Celery's `-E`).
    /// Off unless asked for: a worker without events does no work for them.
    pub fn events(mut self, on: bool) -> Self {
        self.events.on = on;
        self
    }

    /// The name this worker's events and remote-control replies carry (default
    /// `celeriac@<host>:<pid>`); [`Control::destination`](crate::control::Control::destination)
    /// picks workers by it.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.events.hostname = Some(name.into());
        self
    }

    /// How often a worker that sends events says it is alive (default 2 s). A monitor shows it
    /// offline after three missed heartbeats.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.events.heartbeat = every;
        self
    }

    /// The queues to consume. Default: the app's default queue plus every registered task's queue.
    pub fn queues<I, Q>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = Q>,
        Q: Into<String>,
    {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// At most `concurrency` tasks run at once (default: the number of CPUs, as in Celery). This is
    /// the only knob for parallel runs.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// How many unsettled deliveries the broker may hand this worker ahead of time (default: four per
    /// concurrency slot, Celery's prefetch multiplier). Buffering only: it never adds parallel runs.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// How long running tasks may finish at shutdown before they are requeued (default 30 s).
    pub fn grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// Wraps every run in a tower layer. The first layer added is the outermost, as with tower's
    /// `ServiceBuilder`; the built-in metrics and tracing layers are outside all of them.
    ///
    /// The layer's service may fail with any error convertible to [`BoxError`] (tower's own
    /// middleware does); such errors count as task failures.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxTaskService> + Send + Sync + 'static,
        L::Service: Service<TaskRequest, Response = TaskOutput> + Clone + Send + Sync + 'static,
        <L::Service as Service<TaskRequest>>::Error: Into<BoxError>,
        <L::Service as Service<TaskRequest>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner).map_err(into_task_error))
        }));
        self
    }

    /// Builds the worker.
    pub fn build(self) -> Result<Worker, BuildError> {
        if self.concurrency == 0 {
            return Err(BuildError::InvalidSetting {
                setting: "concurrency",
                reason: "must be at least 1".into(),
            });
        }
        let queues = match self.queues {
            Some(queues) => queues,
            None => {
                let mut queues = vec![self.app.default_queue().to_owned()];
                for (_, task) in self.app.registry().tasks() {
                    if let Some(queue) = task.options.queue_name() {
                        queues.push(queue.to_owned());
                    }
                }
                queues
            }
        };
        let mut queues = queues;
        queues.sort();
        queues.dedup();
        if queues.is_empty() || queues.iter().any(String::is_empty) {
            return Err(BuildError::InvalidSetting {
                setting: "queues",
                reason: "a worker needs at least one non-empty queue name".into(),
            });
        }
        // The user's layers wrap the time-limited task; without any, the worker calls
        // `CatchPanic<TimeLimit<RunTask>>` with no box between (see `layers`).
        let layered = (!self.layers.is_empty()).then(|| {
            let mut service = BoxTaskService::new(TimeLimit::new(RunTask));
            for layer in self.layers.iter().rev() {
                service = layer(service);
            }
            service
        });
        let rate_limiters = self
            .app
            .registry()
            .tasks()
            .filter(|(_, task)| task.options.rate_limit_scope == crate::RateLimitScope::Worker)
            .map(|(name, task)| (name, RateLimiter::new(task.options.rate_limit)))
            .collect();
        let hostname: Arc<str> = match &self.events.hostname {
            Some(name) => name.as_str().into(),
            None => crate::events::default_hostname().into(),
        };
        Ok(Worker {
            shared: Arc::new(Shared {
                broker_delays: self.app.broker().capabilities().delays,
                app: self.app,
                layered,
                rate_limiters,
                metrics: MetricsCache::default(),
                report: Counters::default(),
                events: std::sync::OnceLock::new(),
                control: self
                    .remote_control
                    .then(|| control::ControlState::new(self.concurrency)),
                hostname,
            }),
            events: self.events,
            queue_depth_every: self.queue_depth_every,
            queues,
            concurrency: self.concurrency,
            prefetch: self
                .prefetch
                .unwrap_or(self.concurrency.saturating_mul(4))
                .max(1),
            grace_period: self.grace_period,
        })
    }
}

fn into_task_error<E: Into<BoxError>>(error: E) -> TaskError {
    TaskError::from(error.into())
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("grace_period", &self.grace_period)
            .field("layers", &self.layers.len())
            .field("events", &self.events)
            .field("queue_depth_every", &self.queue_depth_every)
            .field("remote_control", &self.remote_control)
            .finish_non_exhaustive()
    }
}

/// What the worker shares with each run.
struct Shared {
    app: App,
    /// Whether the broker holds messages until their ETA (else this worker holds early ones).
    broker_delays: bool,
    /// The user's tower layers around the task, if any.
    layered: Option<BoxTaskService>,
    rate_limiters: HashMap<&'static str, RateLimiter>,
    metrics: MetricsCache,
    report: Counters,
    /// Where its events go, once it runs, if it sends them.
    events: std::sync::OnceLock<Arc<crate::events::Emitter>>,
    /// What remote control needs, if the worker listens.
    control: Option<control::ControlState>,
    /// The name its events and replies carry.
    hostname: Arc<str>,
}

impl Shared {
    /// Sends the event `kind` makes, if this worker sends events (`kind` is not called otherwise).
    fn emit<R: Into<crate::events::Record>>(&self, kind: impl FnOnce() -> R) {
        if let Some(events) = self.events.get() {
            events.emit(kind());
        }
    }

    /// Sends the event `kind` makes as having happened at `at`, if this worker sends events.
    fn emit_at<R: Into<crate::events::Record>>(
        &self,
        at: tokio::time::Instant,
        kind: impl FnOnce() -> R,
    ) {
        if let Some(events) = self.events.get() {
            events.emit_at(kind(), at);
        }
    }

    /// A run that started at `started_at` (set if the worker sends events) ended now: sends the
    /// event `kind` makes of its run time, if any.
    fn ended_run<R: Into<crate::events::Record>>(
        &self,
        started_at: Option<tokio::time::Instant>,
        kind: impl FnOnce(f64) -> Option<R>,
    ) {
        if started_at.is_some() {
            self.ended_run_at(started_at, tokio::time::Instant::now(), kind);
        }
    }

    /// A run that started at `started_at` (set if the worker sends events) ended at `ended`:
    /// sends the event `kind` makes of its run time, if any.
    fn ended_run_at<R: Into<crate::events::Record>>(
        &self,
        started_at: Option<tokio::time::Instant>,
        ended: tokio::time::Instant,
        kind: impl FnOnce(f64) -> Option<R>,
    ) {
        if let (Some(events), Some(started_at)) = (self.events.get(), started_at) {
            events.ended();
            let runtime = ended.saturating_duration_since(started_at).as_secs_f64();
            if let Some(kind) = kind(runtime) {
                events.emit_at(kind, ended);
            }
        }
    }
}

#[derive(Default)]
struct Counters {
    succeeded: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    expired: AtomicU64,
    requeued: AtomicU64,
    revoked: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs finished, one way or another.
    fn processed(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
            + self.retried.load(Ordering::Relaxed)
            + self.dead_lettered.load(Ordering::Relaxed)
            + self.expired.load(Ordering::Relaxed)
            + self.revoked.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> WorkerReport {
        WorkerReport {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            requeued: self.requeued.load(Ordering::Relaxed),
            revoked: self.revoked.load(Ordering::Relaxed),
            events_dropped: 0,
        }
    }
}

/// What a worker did, returned when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Runs that succeeded (and were acked).
    pub succeeded: u64,
    /// Failed runs for which a retry was scheduled.
    pub retried: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Tasks discarded as expired.
    pub expired: u64,
    /// Tasks put back in their queue at shutdown.
    pub requeued: u64,
    /// Revoked tasks: dropped when they arrived, or stopped while they ran.
    pub revoked: u64,
    /// Events the worker did not send (see [`WorkerBuilder::events`]): its event buffer was full,
    /// or the broker refused them. Always 0 for a worker that sends no events.
    pub events_dropped: u64,
}

/// A running worker; see the [module documentation](self).
pub struct Worker {
    shared: Arc<Shared>,
    queues: Vec<String>,
    concurrency: usize,
    prefetch: usize,
    grace_period: Duration,
    events: Events,
    queue_depth_every: Option<Duration>,
}

impl Worker {
    /// The queues this worker consumes.
    pub fn queues(&self) -> &[String] {
        &self.queues
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run(self) -> Result<WorkerReport, crate::WorkerError> {
        self.run_until(shutdown_signal()).await
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("queues", &self.queues)
            .field("concurrency", &self.concurrency)
            .field("prefetch", &self.prefetch)
            .field("grace_period", &self.grace_period)
            .finish_non_exhaustive()
    }
}
