//! What the dashboard shows, gathered in the background: workers (their `stats` every two
//! seconds, over remote control), queue counts, and recent tasks (from worker events).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::control::{ReplyBody, WorkerStats};
use crate::events::{Event, EventKind};
use crate::{App, TaskId};

/// How often workers and queues are asked.
const POLL: Duration = Duration::from_secs(2);

/// Polls a worker may miss before it shows offline.
const MISSED_POLLS: u32 = 3;

/// Recent tasks kept.
const RECENT_TASKS: usize = 500;

/// Steps kept per task.
const TIMELINE: usize = 32;

/// Queues whose flow is counted, at most (their names come from events).
const FLOWING_QUEUES: usize = 1_000;

/// The dashboard's picture of the cluster.
#[derive(Default)]
struct Picture {
    workers: BTreeMap<String, Seen>,
    queues: BTreeMap<String, QueueRow>,
    /// What events told of each queue's traffic since the dashboard started.
    flow: HashMap<String, Flow>,
    tasks: HashMap<TaskId, TaskRow>,
    /// Task ids, oldest first, to drop the oldest beyond `RECENT_TASKS`.
    order: VecDeque<TaskId>,
    /// Why the broker could not be asked, if it could not.
    trouble: Option<String>,
}

struct Seen {
    pid: u32,
    stats: WorkerStats,
    replied_at: Instant,
    /// It said it stopped (a `worker-offline` event) after its last reply.
    left: bool,
}

/// A worker, as the page shows it.
#[derive(Clone, Serialize)]
pub(super) struct WorkerRow {
    hostname: String,
    pid: u32,
    online: bool,
    /// Seconds since its last reply.
    silent_for: f64,
    #[serde(flatten)]
    stats: WorkerStats,
    processed: u64,
}

/// A queue's counts.
#[derive(Clone, Serialize)]
pub(super) struct QueueRow {
    queue: String,
    ready: u64,
    delayed: u64,
    unacked: u64,
    dead_lettered: u64,
    #[serde(flatten)]
    flow: Flow,
    /// Why its counts could not be read, if they could not.
    error: Option<String>,
}

/// Tasks sent to a queue and received from it since the dashboard started, as events tell (sent
/// only by producers with `task_events`); the page shows their rates over time.
#[derive(Clone, Copy, Default, Serialize)]
struct Flow {
    sent: u64,
    received: u64,
}

impl QueueRow {
    fn new(queue: String, stats: crate::broker::QueueStats, error: Option<String>) -> Self {
        Self {
            queue,
            ready: stats.ready,
            delayed: stats.delayed,
            unacked: stats.unacked,
            dead_lettered: stats.dead_lettered,
            flow: Flow::default(),
            error,
        }
    }
}

/// A task, as its events tell it.
#[derive(Clone, Serialize)]
pub(super) struct TaskRow {
    id: TaskId,
    name: String,
    state: &'static str,
    queue: Option<String>,
    worker: Option<String>,
    retries: u32,
    runtime: Option<f64>,
    error: Option<String>,
    /// When it was last heard of, in seconds since the Unix epoch.
    updated: f64,
    timeline: Vec<Step>,
}

/// One event of a task.
#[derive(Clone, Serialize)]
pub(super) struct Step {
    event: &'static str,
    timestamp: f64,
    hostname: String,
}

/// What the page receives each second.
#[derive(Serialize)]
pub(super) struct Snapshot {
    time: f64,
    broker: String,
    trouble: Option<String>,
    workers: Vec<WorkerRow>,
    queues: Vec<QueueRow>,
    /// The most recently heard-of tasks, newest first (up to 100).
    tasks: Vec<TaskRow>,
}

/// Gathers the picture until stopped.
pub(super) struct Collector {
    picture: Arc<Mutex<Picture>>,
    tasks: Vec<JoinHandle<()>>,
    broker: String,
}

impl Collector {
    pub(super) fn start(app: App, queues: Vec<String>) -> Self {
        let picture: Arc<Mutex<Picture>> = Arc::default();
        let polling = tokio::spawn(poll(app.clone(), picture.clone(), queues));
        let following = tokio::spawn(follow(app.clone(), picture.clone()));
        Self {
            picture,
            tasks: vec![polling, following],
            broker: app.broker().redacted_url(),
        }
    }

    pub(super) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    fn picture(&self) -> MutexGuard<'_, Picture> {
        lock(&self.picture)
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let picture = self.picture();
        let now = Instant::now();
        let workers = picture
            .workers
            .iter()
            .map(|(hostname, seen)| {
                let silent_for = now.duration_since(seen.replied_at);
                WorkerRow {
                    hostname: hostname.clone(),
                    pid: seen.pid,
                    online: !seen.left && silent_for < POLL * MISSED_POLLS,
                    silent_for: silent_for.as_secs_f64(),
                    processed: seen.stats.succeeded
                        + seen.stats.retried
                        + seen.stats.dead_lettered
                        + seen.stats.expired
                        + seen.stats.revoked,
                    stats: seen.stats.clone(),
                }
            })
            .collect();
        let mut tasks: Vec<TaskRow> = picture.tasks.values().cloned().collect();
        tasks.sort_by(|a, b| b.updated.total_cmp(&a.updated));
        tasks.truncate(100);
        Snapshot {
            time: crate::events::timestamp_now(),
            broker: self.broker.clone(),
            trouble: picture.trouble.clone(),
            workers,
            queues: queue_rows(&picture),
            tasks,
        }
    }

    /// A task the events told of, if still kept.
    pub(super) fn task(&self, id: TaskId) -> Option<TaskRow> {
        self.picture().tasks.get(&id).cloned()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The queues' counts, with their flow.
fn queue_rows(picture: &Picture) -> Vec<QueueRow> {
    picture
        .queues
        .values()
        .map(|row| QueueRow {
            flow: picture.flow.get(&row.queue).copied().unwrap_or_default(),
            ..row.clone()
        })
        .collect()
}

fn lock(picture: &Mutex<Picture>) -> MutexGuard<'_, Picture> {
    picture.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Asks workers for their stats and queues for their counts, every [`POLL`].
async fn poll(app: App, picture: Arc<Mutex<Picture>>, extra_queues: Vec<String>) {
    let control = app.control().timeout(Duration::from_secs(1));
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let replies = control.send(crate::control::Command::Stats).await;
        let mut queues: BTreeSet<String> = extra_queues.iter().cloned().collect();
        {
            let mut picture = lock(&picture);
            match replies {
                Ok(replies) => {
                    picture.trouble = None;
                    for reply in replies {
                        if let ReplyBody::Stats(stats) = reply.body {
                            picture.workers.insert(
                                reply.hostname,
                                Seen {
                                    pid: reply.pid,
                                    stats,
                                    replied_at: Instant::now(),
                                    left: false,
                                },
                            );
                        }
                    }
                }
                Err(error) => {
                    picture.trouble = Some(crate::error::Report(&error).to_string());
                }
            }
            for seen in picture.workers.values() {
                queues.extend(seen.stats.queues.iter().cloned());
            }
        }
        let mut rows = Vec::with_capacity(queues.len());
        for queue in queues {
            let row = match app.broker().stats(&queue).await {
                Ok(stats) => QueueRow::new(queue, stats, None),
                Err(error) => {
                    let error = crate::error::Report(&error).to_string();
                    QueueRow::new(queue, crate::broker::QueueStats::default(), Some(error))
                }
            };
            rows.push(row);
        }
        lock(&picture).queues = rows
            .into_iter()
            .map(|row| (row.queue.clone(), row))
            .collect();
    }
}

/// Follows worker events (resubscribing when the stream ends) for tasks and clean stops.
async fn follow(app: App, picture: Arc<Mutex<Picture>>) {
    loop {
        match crate::events::subscribe(&app).await {
            Ok(events) => {
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    match event {
                        Ok(event) => observe(&mut lock(&picture), event),
                        Err(error) => tracing::debug!(%error, "dashboard: skipping an event"),
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %crate::error::Report(&error), "dashboard: cannot follow worker events; tasks will not show");
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

fn observe(picture: &mut Picture, event: Event) {
    match &event.kind {
        EventKind::TaskSent { queue, .. } => count_flow(picture, queue, |flow| &mut flow.sent),
        EventKind::TaskReceived { queue, .. } => {
            count_flow(picture, queue, |flow| &mut flow.received);
        }
        _ => {}
    }
    let (id, name, state, change): (TaskId, &str, &'static str, Change) = match &event.kind {
        EventKind::WorkerOffline { .. } => {
            if let Some(seen) = picture.workers.get_mut(&event.hostname) {
                seen.left = true;
            }
            return;
        }
        // A worker that sends events shows at once; its next `stats` reply fills it in.
        EventKind::WorkerOnline {
            concurrency,
            queues,
            ..
        } => {
            let stats = WorkerStats {
                concurrency: *concurrency,
                queues: queues.clone(),
                ..WorkerStats::default()
            };
            picture.workers.insert(
                event.hostname.clone(),
                Seen {
                    pid: event.pid,
                    stats,
                    replied_at: Instant::now(),
                    left: false,
                },
            );
            return;
        }
        EventKind::TaskSent {
            uuid, name, queue, ..
        } => (*uuid, name, "sent", Change::Queue(queue.clone())),
        EventKind::TaskReceived {
            uuid,
            name,
            queue,
            retries,
        } => (
            *uuid,
            name,
            "received",
            Change::Received(queue.clone(), *retries),
        ),
        EventKind::TaskStarted { uuid, name } => (*uuid, name, "started", Change::None),
        EventKind::TaskSucceeded {
            uuid,
            name,
            runtime,
        } => (*uuid, name, "succeeded", Change::Ended(*runtime, None)),
        EventKind::TaskRetried {
            uuid,
            name,
            runtime,
            exception,
            ..
        } => (
            *uuid,
            name,
            "retrying",
            Change::Ended(*runtime, Some(exception.clone())),
        ),
        EventKind::TaskFailed {
            uuid,
            name,
            runtime,
            exception,
        } => (
            *uuid,
            name,
            "failed",
            Change::Ended(*runtime, Some(exception.clone())),
        ),
        EventKind::TaskDeadLettered {
            uuid: Some(uuid),
            name,
            reason,
        } => (*uuid, name, "dead-lettered", Change::Error(reason.clone())),
        EventKind::TaskRevoked { uuid, name, .. } => (*uuid, name, "revoked", Change::None),
        _ => return,
    };
    if !picture.tasks.contains_key(&id) {
        picture.order.push_back(id);
        while picture.order.len() > RECENT_TASKS {
            if let Some(oldest) = picture.order.pop_front() {
                picture.tasks.remove(&oldest);
            }
        }
    }
    let row = picture.tasks.entry(id).or_insert_with(|| TaskRow {
        id,
        name: name.to_owned(),
        state,
        queue: None,
        worker: None,
        retries: 0,
        runtime: None,
        error: None,
        updated: event.timestamp,
        timeline: Vec::new(),
    });
    // Events of one task may arrive out of order across workers: the latest decides the state.
    if event.timestamp >= row.updated {
        row.state = state;
        row.updated = event.timestamp;
    }
    if !matches!(event.kind, EventKind::TaskSent { .. }) {
        row.worker = Some(event.hostname.clone());
    }
    match change {
        Change::Queue(queue) => row.queue = Some(queue),
        Change::Received(queue, retries) => (row.queue, row.retries) = (Some(queue), retries),
        Change::Ended(runtime, error) => (row.runtime, row.error) = (Some(runtime), error),
        Change::Error(reason) => row.error = Some(reason),
        Change::None => {}
    }
    if row.timeline.len() < TIMELINE {
        row.timeline.push(Step {
            event: event.kind.name(),
            timestamp: event.timestamp,
            hostname: event.hostname,
        });
    }
}

/// Folds `events` into a new picture and renders its rows, as the page would (for the fuzzers).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_observe(events: Vec<Event>) {
    let mut picture = Picture::default();
    for event in events {
        observe(&mut picture, event);
    }
    let _ = serde_json::to_vec(&queue_rows(&picture));
    let _ = serde_json::to_vec(&picture.tasks.values().collect::<Vec<_>>());
}

fn count_flow(picture: &mut Picture, queue: &str, counter: impl FnOnce(&mut Flow) -> &mut u64) {
    if let Some(flow) = picture.flow.get_mut(queue) {
        *counter(flow) += 1;
    } else if picture.flow.len() < FLOWING_QUEUES {
        let mut flow = Flow::default();
        *counter(&mut flow) += 1;
        picture.flow.insert(queue.to_owned(), flow);
    }
}

/// What an event changes of a task besides its state.
enum Change {
    None,
    Queue(String),
    Received(String, u32),
    Ended(f64, Option<String>),
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            v: crate::events::FORMAT_VERSION,
            hostname: "w".into(),
            pid: 1,
            timestamp: 1.0,
            kind,
        }
    }

    #[test]
    fn queues_show_what_events_say_flowed_through_them() {
        let mut picture = Picture::default();
        for queue in ["sms", "mail"] {
            let row = QueueRow::new(queue.into(), crate::broker::QueueStats::default(), None);
            picture.queues.insert(queue.into(), row);
        }
        let sent = |queue: &str| {
            event(EventKind::TaskSent {
                uuid: TaskId::new(),
                name: "t".into(),
                queue: queue.into(),
                retries: 0,
                eta: None,
            })
        };
        let received = |queue: &str| {
            event(EventKind::TaskReceived {
                uuid: TaskId::new(),
                name: "t".into(),
                queue: queue.into(),
                retries: 0,
            })
        };
        for _ in 0..3 {
            observe(&mut picture, sent("sms"));
        }
        observe(&mut picture, received("sms"));
        observe(&mut picture, received("other"));
        let rows = queue_rows(&picture);
        let flow = |queue: &str| {
            let row = rows.iter().find(|row| row.queue == queue);
            row.map(|row| (row.flow.sent, row.flow.received))
        };
        assert_eq!(flow("sms"), Some((3, 1)));
        assert_eq!(flow("mail"), Some((0, 0)));
        // A queue no one polls is counted, and shows once it is polled.
        assert_eq!(flow("other"), None);
        assert_eq!(picture.flow.get("other").map(|flow| flow.received), Some(1));

        // Names from events are bounded.
        for n in 0..FLOWING_QUEUES {
            observe(&mut picture, received(&format!("q{n}")));
        }
        assert_eq!(picture.flow.len(), FLOWING_QUEUES);
        let json = serde_json::to_value(&rows[0]).unwrap_or_default();
        assert!(
            json.get("received").is_some() && json.get("sent").is_some(),
            "{json}"
        );
    }
}
