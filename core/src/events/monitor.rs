//! Watching workers: which are online, and what their last heartbeat said.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Event, EventError, EventKind, subscribe};
use crate::App;

/// Heartbeats a worker may miss before it is shown offline.
const MISSED_HEARTBEATS: u32 = 3;

/// Follows the events of the app's broker and keeps each worker's status.
///
/// ```
/// use std::time::Duration;
/// use celeriac::App;
/// use celeriac::events::Monitor;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let app = App::builder().broker_url("memory://monitor-doc").build()?;
/// let monitor = Monitor::start(&app).await?;
/// let worker = app.worker().events(true).hostname("sms-1").build()?;
/// let running = tokio::spawn(worker.run_until(tokio::time::sleep(Duration::from_millis(200))));
/// tokio::time::sleep(Duration::from_millis(50)).await;
/// assert!(monitor.workers().iter().any(|worker| worker.hostname == "sms-1" && worker.online));
/// running.await??;
/// tokio::time::sleep(Duration::from_millis(50)).await;
/// // It stopped cleanly and said so.
/// assert!(monitor.workers().iter().all(|worker| !worker.online));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Monitor {
    workers: Arc<Mutex<BTreeMap<String, Seen>>>,
    following: JoinHandle<()>,
}

/// What the monitor knows of a worker.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    status: WorkerStatus,
    /// When its last event arrived, on tokio's clock.
    heard_at: Instant,
    /// Whether it said it went offline.
    left: bool,
}

/// A worker as its events describe it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// Its name.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// Whether it is online: it said it stopped, or missed three heartbeats, if not.
    pub online: bool,
    /// When its last event was sent.
    pub last_seen: SystemTime,
    /// Runs at once, at most.
    pub concurrency: usize,
    /// Runs going on at its last heartbeat.
    pub active: u64,
    /// Runs it finished, at its last heartbeat.
    pub processed: u64,
    /// Seconds between its heartbeats.
    pub freq: f64,
    /// Its machine's load averages, at its last heartbeat.
    pub loadavg: Option<[f64; 3]>,
    /// Its resident memory, at its last heartbeat.
    pub rss_bytes: Option<u64>,
}

impl Monitor {
    /// Subscribes to the app's broker's events and starts following them.
    pub async fn start(app: &App) -> Result<Self, EventError> {
        let mut events = Box::pin(subscribe(app).await?);
        let workers: Arc<Mutex<BTreeMap<String, Seen>>> = Arc::default();
        let following = tokio::spawn({
            let workers = workers.clone();
            async move {
                while let Some(event) = events.next().await {
                    let event = match event {
                        Ok(event) => event,
                        Err(error) => {
                            tracing::debug!(%error, "skipping an event");
                            continue;
                        }
                    };
                    let mut workers = workers.lock().unwrap_or_else(PoisonError::into_inner);
                    observe(&mut workers, event, Instant::now());
                }
            }
        });
        Ok(Self { workers, following })
    }

    /// Every worker heard from since the monitor started, by name.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        let now = Instant::now();
        self.workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|seen| status_at(seen, now))
            .collect()
    }
}

/// A worker's status at `now`: offline once it said so, or once it missed three heartbeats of the
/// period it announced (a period that is not a sane number of seconds counts as a minute).
pub(crate) fn status_at(seen: &Seen, now: Instant) -> WorkerStatus {
    let mut status = seen.status.clone();
    let period = Duration::try_from_secs_f64(status.freq.clamp(0.001, 86_400.0))
        .unwrap_or(Duration::from_secs(60));
    let patience = period.saturating_mul(MISSED_HEARTBEATS);
    status.online = !seen.left && now.saturating_duration_since(seen.heard_at) <= patience;
    status
}

/// Folds one event into what the monitor knows of its worker.
pub(crate) fn observe(workers: &mut BTreeMap<String, Seen>, event: Event, now: Instant) {
    let seen = workers
        .entry(event.hostname.clone())
        .or_insert_with(|| Seen {
            status: WorkerStatus {
                hostname: event.hostname.clone(),
                pid: event.pid,
                online: true,
                last_seen: event.time(),
                concurrency: 0,
                active: 0,
                processed: 0,
                freq: 2.0,
                loadavg: None,
                rss_bytes: None,
            },
            heard_at: now,
            left: false,
        });
    seen.heard_at = now;
    seen.status.last_seen = event.time();
    seen.status.pid = event.pid;
    seen.left = false;
    match event.kind {
        EventKind::WorkerOnline {
            concurrency, freq, ..
        } => {
            seen.status.concurrency = concurrency;
            seen.status.freq = freq;
        }
        EventKind::WorkerHeartbeat {
            concurrency,
            active,
            processed,
            freq,
            loadavg,
            rss_bytes,
        } => {
            let status = &mut seen.status;
            (status.concurrency, status.active, status.processed) =
                (concurrency, active, processed);
            (status.freq, status.loadavg, status.rss_bytes) = (freq, loadavg, rss_bytes);
        }
        EventKind::WorkerOffline { processed } => {
            seen.status.processed = processed;
            seen.status.active = 0;
            seen.left = true;
        }
        _ => {}
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.following.abort();
    }
}
