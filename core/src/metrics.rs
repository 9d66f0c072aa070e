//! The metrics celeriac records, through the [`metrics`] facade.
//!
//! The library only emits; the application installs a recorder (for example
//! `metrics-exporter-prometheus`). Without one, recording costs next to nothing. Every series has the
//! labels `task` (the task name, or `unknown` for messages that name no registered task) and `queue`.
//! Task arguments are never recorded.
//!
//! | name | kind | meaning |
//! |------|------|---------|
//! | `celeriac_tasks_started_total` | counter | runs started |
//! | `celeriac_tasks_succeeded_total` | counter | runs that succeeded |
//! | `celeriac_tasks_failed_total` | counter | runs that failed (each failed run, retried or not) |
//! | `celeriac_tasks_retried_total` | counter | retries scheduled |
//! | `celeriac_tasks_dead_lettered_total` | counter | messages dead-lettered (given up, unknown, undecodable) |
//! | `celeriac_tasks_expired_total` | counter | tasks discarded because they expired before starting |
//! | `celeriac_task_run_seconds` | histogram | run time |
//! | `celeriac_task_queue_wait_seconds` | histogram | time from enqueue (or ETA) to start |

use std::time::Duration;

use ::metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

/// Runs started.
pub const TASKS_STARTED: &str = "celeriac_tasks_started_total";
/// Runs that succeeded.
pub const TASKS_SUCCEEDED: &str = "celeriac_tasks_succeeded_total";
/// Runs that failed.
pub const TASKS_FAILED: &str = "celeriac_tasks_failed_total";
/// Retries scheduled.
pub const TASKS_RETRIED: &str = "celeriac_tasks_retried_total";
/// Messages dead-lettered.
pub const TASKS_DEAD_LETTERED: &str = "celeriac_tasks_dead_lettered_total";
/// Tasks discarded because they expired.
pub const TASKS_EXPIRED: &str = "celeriac_tasks_expired_total";
/// Run time, in seconds.
pub const TASK_RUN_SECONDS: &str = "celeriac_task_run_seconds";
/// Time from enqueue (or ETA) to start, in seconds.
pub const TASK_QUEUE_WAIT_SECONDS: &str = "celeriac_task_queue_wait_seconds";

/// The `task` label value for messages that name no registered task.
pub const UNKNOWN_TASK: &str = "unknown";

/// Registers descriptions and units of every celeriac metric with the installed recorder.
/// Workers call it when they start; calling it again is harmless.
///
/// ```
/// celeriac::metrics::describe();
/// ```
pub fn describe() {
    describe_counter!(TASKS_STARTED, Unit::Count, "Task runs started.");
    describe_counter!(TASKS_SUCCEEDED, Unit::Count, "Task runs that succeeded.");
    describe_counter!(TASKS_FAILED, Unit::Count, "Task runs that failed.");
    describe_counter!(TASKS_RETRIED, Unit::Count, "Task retries scheduled.");
    describe_counter!(
        TASKS_DEAD_LETTERED,
        Unit::Count,
        "Messages moved to a dead-letter queue."
    );
    describe_counter!(
        TASKS_EXPIRED,
        Unit::Count,
        "Tasks discarded because they expired before starting."
    );
    describe_histogram!(TASK_RUN_SECONDS, Unit::Seconds, "Task run time.");
    describe_histogram!(
        TASK_QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time from enqueue (or ETA) to the start of a run."
    );
}

pub(crate) fn increment(name: &'static str, task: &str, queue: &str) {
    counter!(name, "task" => task.to_owned(), "queue" => queue.to_owned()).increment(1);
}

pub(crate) fn observe(name: &'static str, task: &str, queue: &str, value: Duration) {
    histogram!(name, "task" => task.to_owned(), "queue" => queue.to_owned())
        .record(value.as_secs_f64());
}
