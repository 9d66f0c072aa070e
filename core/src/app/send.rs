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

/// The option setters of a send, for a type that keeps its [`SendOptions`] in a field `options`:
/// [`Delay`](crate::Delay) and the workflow signatures share them.
macro_rules! send_option_setters {
    () => {
        /// Run no earlier than `delay` from when the task is sent.
        pub fn countdown(mut self, delay: std::time::Duration) -> Self {
            self.options = self.options.countdown(delay);
            self
        }

        /// Run no earlier than `at` (takes precedence over a countdown).
        pub fn eta(mut self, at: std::time::SystemTime) -> Self {
            self.options = self.options.eta(at);
            self
        }

        /// Discard the task if it has not started within `after` from when it is sent.
        pub fn expires_in(mut self, after: std::time::Duration) -> Self {
            self.options = self.options.expires_in(after);
            self
        }

        /// Discard the task if it has not started by `at`.
        pub fn expires_at(mut self, at: std::time::SystemTime) -> Self {
            self.options = self.options.expires_at(at);
            self
        }

        /// Send to `queue` instead of the task's queue.
        pub fn queue(mut self, queue: impl Into<String>) -> Self {
            self.options = self.options.queue(queue);
            self
        }

        /// Message priority, 0 (lowest) to 9 (highest), on brokers that support priorities.
        pub fn priority(mut self, priority: u8) -> Self {
            self.options = self.options.priority(priority);
            self
        }

        /// A time limit for this run, instead of the task's.
        pub fn time_limit(mut self, limit: std::time::Duration) -> Self {
            self.options = self.options.time_limit(limit);
            self
        }

        /// Sends with this id instead of a fresh one.
        pub fn task_id(mut self, id: $crate::TaskId) -> Self {
            self.options = self.options.task_id(id);
            self
        }

        /// Adds a message header (kept with the message, readable by the task).
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.options = self.options.header(name, value);
            self
        }

        /// Replaces every option with `options`.
        pub fn options(mut self, options: $crate::SendOptions) -> Self {
            self.options = options;
            self
        }
    };
}
pub(crate) use send_option_setters;
