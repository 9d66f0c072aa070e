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
//!
//! A [beat](crate::beat) records three more, labelled by `beat` or `entry`:
//!
//! | name | kind | meaning |
//! |------|------|---------|
//! | `celeriac_beat_leading` | gauge | 1 while this process leads the beat, else 0 |
//! | `celeriac_beat_ticks_sent_total` | counter | ticks sent |
//! | `celeriac_beat_ticks_skipped_total` | counter | missed ticks skipped (catch-up policy or bound) |
//!
//! and workers count the second copies of ticks they drop in `celeriac_beat_copies_dropped_total`
//! (labelled by `task`).
//!
//! Workers also sample their queues' depth every 15 seconds
//! ([`WorkerBuilder::queue_depth_interval`](crate::WorkerBuilder::queue_depth_interval)), and a
//! worker sending events counts those it had to drop:
//!
//! | name | kind | meaning |
//! |------|------|---------|
//! | `celeriac_queue_depth` | gauge | messages in a queue, labelled `queue` and `state` (`ready`, `delayed`, `unacked`, `dead_lettered`) |
//! | `celeriac_events_dropped_total` | counter | events a worker dropped (buffer full, broker refusing) |
//!
//! The run and wait times are histograms to the `metrics` facade; an exporter decides how to show
//! them. Prometheus's exporter shows summaries unless given buckets: give it [`SECONDS_BUCKETS`].
//!
//! ```
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let recorder = PrometheusBuilder::new()
//!     .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), celeriac::metrics::SECONDS_BUCKETS)
//!     .expect("buckets are not empty")
//!     .build_recorder();
//! # let _ = recorder;
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ::metrics::{
    Counter, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    histogram,
};

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

/// 1 while this process leads a beat, else 0.
pub const BEAT_LEADING: &str = "celeriac_beat_leading";
/// Ticks a beat sent.
pub const BEAT_TICKS_SENT: &str = "celeriac_beat_ticks_sent_total";
/// Missed ticks a beat skipped.
pub const BEAT_TICKS_SKIPPED: &str = "celeriac_beat_ticks_skipped_total";
/// Second copies of ticks a worker dropped.
pub const BEAT_COPIES_DROPPED: &str = "celeriac_beat_copies_dropped_total";

/// Messages in a queue, by `queue` and `state`.
pub const QUEUE_DEPTH: &str = "celeriac_queue_depth";

/// Histogram buckets (seconds) for run and wait times: 1 ms to 5 minutes, a few per decade — for
/// SMS sends of a few hundred milliseconds and reports of a minute alike.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

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
    describe_gauge!(BEAT_LEADING, "1 while this process leads the beat.");
    describe_gauge!(
        QUEUE_DEPTH,
        Unit::Count,
        "Messages in a queue, by state (ready, delayed, unacked, dead_lettered)."
    );
    describe_counter!(BEAT_TICKS_SENT, Unit::Count, "Beat ticks sent.");
    describe_counter!(
        BEAT_TICKS_SKIPPED,
        Unit::Count,
        "Missed beat ticks skipped."
    );
    describe_counter!(
        BEAT_COPIES_DROPPED,
        Unit::Count,
        "Second copies of beat ticks dropped by workers."
    );
}

/// Samples the depth of `queues` into [`QUEUE_DEPTH`]; a queue the broker cannot count is
/// skipped (and logged at debug level).
pub(crate) async fn sample_queue_depth(broker: &dyn crate::Broker, queues: &[String]) {
    for queue in queues {
        match broker.stats(queue).await {
            Ok(stats) => {
                let states = [
                    ("ready", stats.ready),
                    ("delayed", stats.delayed),
                    ("unacked", stats.unacked),
                    ("dead_lettered", stats.dead_lettered),
                ];
                for (state, count) in states {
                    ::metrics::gauge!(QUEUE_DEPTH, "queue" => queue.clone(), "state" => state)
                        .set(count as f64);
                }
            }
            Err(error) => {
                tracing::debug!(queue, error = %crate::error::Report(&error), "cannot sample the queue's depth");
            }
        }
    }
}

/// The metric handles of one task on one queue, registered once and reused for every run.
pub(crate) struct TaskMetrics {
    /// The queue's name, [interned](interned): a worker's events carry it without touching a
    /// reference count that every lane shares (that cache line's trips between cores cost a
    /// worker draining no-ops on the embedded broker about 3 % of its throughput with events on).
    pub(crate) queue: &'static str,
    pub(crate) started: Counter,
    pub(crate) succeeded: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) expired: Counter,
    pub(crate) run_seconds: Histogram,
    pub(crate) queue_wait_seconds: Histogram,
}

impl TaskMetrics {
    fn register(task: &str, queue: &str) -> Self {
        let labels = [("task", task.to_owned()), ("queue", queue.to_owned())];
        Self {
            queue: interned(queue),
            started: counter!(TASKS_STARTED, &labels),
            succeeded: counter!(TASKS_SUCCEEDED, &labels),
            failed: counter!(TASKS_FAILED, &labels),
            retried: counter!(TASKS_RETRIED, &labels),
            dead_lettered: counter!(TASKS_DEAD_LETTERED, &labels),
            expired: counter!(TASKS_EXPIRED, &labels),
            run_seconds: histogram!(TASK_RUN_SECONDS, &labels),
            queue_wait_seconds: histogram!(TASK_QUEUE_WAIT_SECONDS, &labels),
        }
    }
}

/// Per-worker cache of [`TaskMetrics`], by task and queue. Handles are registered with the recorder
/// installed when a (task, queue) pair is first seen.
#[derive(Default)]
pub(crate) struct MetricsCache {
    by_task: RwLock<HashMap<String, HashMap<String, Arc<TaskMetrics>>>>,
}

/// `name` as a `&'static str`, the same one for every call with equal text. Each distinct name is
/// kept for the life of the process, as the metrics registered with it are: this is for the
/// few names a worker's queues have, not for text from messages.
fn interned(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(&known) = names.get(name) {
        return known;
    }
    let kept: &'static str = Box::leak(Box::from(name));
    names.insert(kept);
    kept
}

impl MetricsCache {
    pub(crate) fn get(&self, task: &str, queue: &str) -> Arc<TaskMetrics> {
        {
            let by_task = self.by_task.read().unwrap_or_else(|p| p.into_inner());
            if let Some(metrics) = by_task.get(task).and_then(|by_queue| by_queue.get(queue)) {
                return metrics.clone();
            }
        }
        let mut by_task = self.by_task.write().unwrap_or_else(|p| p.into_inner());
        by_task
            .entry(task.to_owned())
            .or_default()
            .entry(queue.to_owned())
            .or_insert_with(|| Arc::new(TaskMetrics::register(task, queue)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_intern_to_one_str_and_others_to_their_own() {
        let sms = interned(&String::from("sms"));
        assert_eq!(sms, "sms");
        assert!(std::ptr::eq(sms, interned("sms")));
        let email = interned("email");
        assert_eq!(email, "email");
        assert!(!std::ptr::eq(sms, email));
        // The handles of a task on a queue carry the queue's interned name.
        let cache = MetricsCache::default();
        assert!(std::ptr::eq(cache.get("send", "sms").queue, sms));
    }
}
