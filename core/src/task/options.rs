use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::Unique;
use crate::RetryPolicy;

/// The queue tasks go to unless told otherwise: `celery`, as in Celery, to ease migration.
pub const DEFAULT_QUEUE: &str = "celery";

/// How a task runs: its queue, retries, limits and acknowledgement mode.
///
/// The `#[task]` macro builds these from its options; a hand-written [`Task`](crate::Task) returns
/// them from [`Task::options`](crate::Task::options).
///
/// ```
/// use std::time::Duration;
/// use celeriac::{RateLimit, RetryPolicy, TaskOptions};
///
/// let options = TaskOptions::new()
///     .queue("sms")
///     .retry(RetryPolicy::exponential(Duration::from_secs(3)).max_retries(3))
///     .time_limit(Duration::from_secs(30))
///     .rate_limit("10/m".parse::<RateLimit>()?)
///     .expires(Duration::from_secs(300));
/// assert_eq!(options.queue_name(), Some("sms"));
/// # Ok::<(), celeriac::task::ParseRateLimitError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TaskOptions {
    /// The queue to send to; `None` uses the app's default queue.
    pub queue: Option<String>,
    /// When failures are retried.
    pub retry: RetryPolicy,
    /// Cancels a run that takes longer, counting it as a failure.
    pub time_limit: Option<Duration>,
    /// At most this many runs per interval: in each worker process, or across the cluster (see
    /// [`rate_limit_scope`](Self::rate_limit_scope)).
    pub rate_limit: Option<RateLimit>,
    /// Which runs the rate limit counts: each worker's (the default, Celery's), every worker's
    /// together, or every worker's per key.
    pub rate_limit_scope: RateLimitScope,
    /// A task not started within this long after it was sent is discarded (and counted as expired).
    pub expires: Option<Duration>,
    /// Default message priority (0–9, higher first).
    pub priority: Option<u8>,
    /// Acknowledge after the run (the default: at least once) rather than before it (at most once).
    pub acks_late: bool,
    /// Whether to store the task's outcome in the app's result backend: `Some(false)` stores it,
    /// `Some(true)` does not (Celery's `ignore_result`), `None` (the default) stores it unless the
    /// task returns `()`. An `AsyncResult` of a task that ignores its result answers
    /// [`ResultError::Ignored`](crate::result::ResultError::Ignored) at once.
    pub ignore_result: Option<bool>,
    /// Record a [`Started`](crate::ResultState::Started) state when a worker starts the task
    /// (Celery's `track_started`; off by default: one more write per run).
    pub track_started: bool,
    /// While a send of this task holds its [key](crate::Task::unique_key), a second send with the
    /// same key is refused with [`EnqueueError::Duplicate`](crate::EnqueueError::Duplicate)
    /// (`#[task(unique_for = "60s")]`). Needs a coordination store (see
    /// [`AppBuilder::coordination_url`](crate::AppBuilder::coordination_url)).
    pub unique: Option<Unique>,
}

impl TaskOptions {
    /// The defaults: app's default queue, no automatic retries, no limits, acks late.
    pub fn new() -> Self {
        Self {
            queue: None,
            retry: RetryPolicy::none(),
            time_limit: None,
            rate_limit: None,
            rate_limit_scope: RateLimitScope::Worker,
            expires: None,
            priority: None,
            acks_late: true,
            ignore_result: None,
            track_started: false,
            unique: None,
        }
    }

    /// Sends this task to `queue`.
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// The configured queue, if any.
    pub fn queue_name(&self) -> Option<&str> {
        self.queue.as_deref()
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the time limit.
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Sets the rate limit (per worker unless [`rate_limit_scope`](Self::rate_limit_scope) says
    /// otherwise).
    #[must_use]
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Sets which runs the rate limit counts.
    #[must_use]
    pub fn rate_limit_scope(mut self, scope: RateLimitScope) -> Self {
        self.rate_limit_scope = scope;
        self
    }

    /// Sets the default expiry, counted from when the task is sent.
    #[must_use]
    pub fn expires(mut self, after: Duration) -> Self {
        self.expires = Some(after);
        self
    }

    /// Sets the default priority.
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Acknowledge after the run (`true`, default) or before it (`false`).
    #[must_use]
    pub fn acks_late(mut self, acks_late: bool) -> Self {
        self.acks_late = acks_late;
        self
    }
}

impl TaskOptions {
    /// Stores the task's outcome (`false`) or not (`true`); see the field of this name.
    #[must_use]
    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = Some(ignore);
        self
    }

    /// Records a `Started` state when a run starts.
    #[must_use]
    pub fn track_started(mut self, track: bool) -> Self {
        self.track_started = track;
        self
    }

    /// Makes the task unique; see the field of this name.
    #[must_use]
    pub fn unique(mut self, unique: Unique) -> Self {
        self.unique = Some(unique);
        self
    }
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Which runs a task's rate limit counts.
///
/// A cluster-wide limit keeps its budget in the app's coordination store (Redis, or memory on the
/// embedded broker): every worker of every process draws on it. A run over the budget is not
/// waited for in a worker lane: the worker reserves the run's slot and sends the task back to the
/// broker to run at that time, and takes other work meanwhile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RateLimitScope {
    /// Each worker process on its own (Celery's `rate_limit`): the run waits in its lane for its
    /// slot.
    #[default]
    Worker,
    /// One budget for the task, shared by every worker (`rate_limit_scope = "cluster"`).
    Cluster,
    /// One budget per [key](crate::Task::rate_limit_key) of the task's arguments, shared by every
    /// worker (`rate_limit_key = "mobile"`): one key's runs never slow another key's.
    ClusterPerKey,
}

/// A rate: at most `count` runs per `per`, spaced evenly (Celery's `rate_limit`).
///
/// Parses Celery's notation: `"10/s"`, `"10/m"`, `"100/h"`.
///
/// ```
/// use std::time::Duration;
/// use celeriac::RateLimit;
///
/// let limit: RateLimit = "30/m".parse()?;
/// assert_eq!(limit, RateLimit::per_minute(30));
/// assert_eq!(limit.interval(), Duration::from_secs(2));
/// assert!("30/fortnight".parse::<RateLimit>().is_err());
/// # Ok::<(), celeriac::task::ParseRateLimitError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    count: u32,
    per: Duration,
}

impl RateLimit {
    /// `count` runs per `per`. A zero count is treated as one.
    pub fn new(count: u32, per: Duration) -> Self {
        Self {
            count: count.max(1),
            per,
        }
    }

    /// `count` runs per second.
    pub fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` runs per minute.
    pub fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` runs per hour.
    pub fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }

    /// The spacing between two runs.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

/// As it is written: `10/s`, `30/m`, `100/h` — what [`FromStr`] reads back — or `5 per 90s` for
/// other periods.
impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_millis() {
            1_000 => "s",
            60_000 => "m",
            3_600_000 => "h",
            _ => return write!(f, "{} per {:?}", self.count, self.per),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// A rate limit string that is not `N/s`, `N/m` or `N/h`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate limit `{0}`: expected `N/s`, `N/m` or `N/h` with N > 0")]
pub struct ParseRateLimitError(String);

impl FromStr for RateLimit {
    type Err = ParseRateLimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseRateLimitError(s.to_owned());
        let (count, unit) = s.trim().split_once('/').ok_or_else(error)?;
        let count: u32 = count.trim().parse().map_err(|_| error())?;
        if count == 0 {
            return Err(error());
        }
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(error()),
        };
        Ok(Self::new(count, per))
    }
}
