use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::TaskId;

/// Options for one send (Celery's `apply_async` keywords).
///
/// ```
/// use std::time::Duration;
/// use celeriac::SendOptions;
///
/// let options = SendOptions::new()
///     .countdown(Duration::from_secs(10))
///     .expires_in(Duration::from_secs(300))
///     .queue("sms")
///     .priority(9)
///     .header("request-id", "abc123");
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct SendOptions {
    pub(crate) countdown: Option<Duration>,
    pub(crate) eta: Option<SystemTime>,
    pub(crate) expires_in: Option<Duration>,
    pub(crate) expires_at: Option<SystemTime>,
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<u8>,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) task_id: Option<TaskId>,
    pub(crate) parent_id: Option<TaskId>,
    pub(crate) root_id: Option<TaskId>,
    pub(crate) headers: BTreeMap<String, String>,
}

impl SendOptions {
    /// No options: run as soon as possible, on the task's queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run no earlier than `delay` from now.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self
    }

    /// Run no earlier than `at` (takes precedence over a countdown).
    pub fn eta(mut self, at: SystemTime) -> Self {
        self.eta = Some(at);
        self
    }

    /// Discard the task if it has not started within `after` from now.
    pub fn expires_in(mut self, after: Duration) -> Self {
        self.expires_in = Some(after);
        self
    }

    /// Discard the task if it has not started by `at` (takes precedence over `expires_in`).
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Send to `queue` instead of the task's queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Message priority, 0 (lowest) to 9 (highest).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// A time limit for this run, instead of the task's.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Use this id instead of a fresh one.
    pub fn task_id(mut self, id: TaskId) -> Self {
        self.task_id = Some(id);
        self
    }

    /// Adds an application header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    pub(crate) fn linked(mut self, parent: TaskId, root: TaskId) -> Self {
        self.parent_id = Some(parent);
        self.root_id = Some(root);
        self
    }
}
