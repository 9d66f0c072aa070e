//! The worker's side of [remote control](crate::control): what it runs (per lane), what is
//! revoked, and the task that answers commands.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::run::Reconnect;
use crate::control::revoked::{self, RevokedSet};
use crate::control::{ActiveTask, Command, FORMAT_VERSION, Reply, ReplyBody, Request, WorkerStats};
use crate::error::Report;
use crate::events::{CONTROL_TOPIC, EventBus, validate_topic};
use crate::{RateLimit, TaskId};

/// What remote control needs of a worker that listens.
pub(super) struct ControlState {
    pub(super) revoked: RevokedSet,
    /// One per lane: the run it is waiting on, if any.
    lanes: Vec<LaneSlot>,
    /// Deliveries fetched and waiting for a free lane.
    pub(super) waiting: super::waiting::Waiting,
    started: std::time::Instant,
}

impl ControlState {
    pub(super) fn new(concurrency: usize) -> Self {
        Self {
            revoked: RevokedSet::default(),
            lanes: (0..concurrency).map(|_| LaneSlot::default()).collect(),
            waiting: super::waiting::Waiting::new(concurrency),
            started: std::time::Instant::now(),
        }
    }

    /// Records that lane `lane` waits on the run `running`, until the guard is dropped.
    pub(super) fn running(&self, lane: usize, running: Running) -> Option<RunningGuard<'_>> {
        let slot = self.lanes.get(lane)?;
        let terminate = running.terminate.clone();
        *slot.lock() = Some(running);
        Some(RunningGuard { slot, terminate })
    }

    fn active(&self) -> Vec<ActiveTask> {
        let now = SystemTime::now();
        self.lanes
            .iter()
            .filter_map(|slot| {
                let current = slot.lock();
                let running = current.as_ref()?;
                Some(ActiveTask {
                    id: running.id,
                    name: running.name.to_owned(),
                    queue: running.queue.to_string(),
                    retries: running.retries,
                    started: seconds_since_epoch(running.started),
                    runtime: now
                        .duration_since(running.started)
                        .unwrap_or(Duration::ZERO)
                        .as_secs_f64(),
                })
            })
            .collect()
    }

    /// Stops the runs of `ids` in progress; answers which it stopped.
    fn terminate(&self, ids: &[TaskId]) -> Vec<TaskId> {
        let mut stopped = Vec::new();
        for slot in &self.lanes {
            let current = slot.lock();
            if let Some(running) = current.as_ref().filter(|running| ids.contains(&running.id)) {
                running.terminate.cancel();
                stopped.push(running.id);
            }
        }
        stopped
    }
}

#[derive(Default)]
struct LaneSlot(Mutex<Option<Running>>);

impl LaneSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A run a lane waits on.
pub(super) struct Running {
    pub(super) id: TaskId,
    pub(super) name: &'static str,
    pub(super) queue: Arc<str>,
    pub(super) retries: u32,
    pub(super) started: SystemTime,
    pub(super) terminate: CancellationToken,
}

/// Clears the lane's slot when the run is over.
pub(super) struct RunningGuard<'a> {
    slot: &'a LaneSlot,
    pub(super) terminate: CancellationToken,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        *self.slot.lock() = None;
    }
}

/// What the listener tells about the worker besides its shared state.
pub(super) struct Listening {
    pub(super) queues: Vec<String>,
    pub(super) concurrency: usize,
    pub(super) prefetch: usize,
    /// Cancelled to shut the worker down.
    pub(super) stop_fetching: CancellationToken,
}

/// Starts answering commands, until aborted: listens, and reads the revokes remembered in the
/// coordination store, before it returns — so a worker drops a revoked task from its first
/// delivery on. Listens again (with back-off) when the bus drops.
pub(super) async fn listen(shared: Arc<Shared>, listening: Listening) -> JoinHandle<()> {
    let mut first = Some(subscribe(&shared).await);
    if let Some(Err(_)) = &first {
        // The bus is down: the remembered revokes still count from the start.
        if let Err(error) = load_revokes(&shared).await {
            tracing::warn!(error = %Report(&error), "cannot read the revokes remembered in the coordination store");
        }
    }
    tokio::spawn(async move {
        let mut reconnect = Reconnect::new();
        loop {
            let subscribed = match first.take() {
                Some(subscribed) => subscribed,
                None => subscribe(&shared).await,
            };
            match subscribed {
                Ok(None) => return,
                Ok(Some((bus, mut commands))) => {
                    reconnect.reset();
                    while let Some(message) = commands.next().await {
                        match message {
                            Ok(message) => answer(&shared, &listening, &*bus, &message).await,
                            // Fell behind (the embedded bus): the stream goes on.
                            Err(error) if error.is_transient() => {
                                tracing::warn!(error = %Report(&error), "missed remote-control commands");
                            }
                            Err(error) => {
                                tracing::warn!(error = %Report(&error), "remote control: the bus failed; listening again");
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %Report(&error), "remote control: cannot listen for commands; will retry");
                }
            }
            tokio::time::sleep(reconnect.delay()).await;
        }
    })
}

type Subscribed = (Arc<dyn EventBus>, crate::events::EventStream);

/// Subscribes to commands, then reads the revokes remembered in the coordination store (in that
/// order: a revoke sent in between is heard). `None`: the broker carries no commands.
async fn subscribe(shared: &Shared) -> Result<Option<Subscribed>, crate::BrokerError> {
    let broker = shared.app.broker();
    let Some(bus) = broker.event_bus().await? else {
        tracing::info!(broker = %broker.redacted_url(), "this broker carries no remote-control commands; the worker does not listen");
        return Ok(None);
    };
    let commands = bus.subscribe(CONTROL_TOPIC).await?;
    load_revokes(shared).await?;
    Ok(Some((bus, commands)))
}

/// Adds the revokes remembered in the app's coordination store, if it has one.
async fn load_revokes(shared: &Shared) -> Result<(), crate::BrokerError> {
    if let (Some(store), Some(control)) = (shared.app.coordination(), &shared.control) {
        for (member, left) in store.members(revoked::STORE_KEY).await? {
            match member.parse::<TaskId>() {
                Ok(id) => control.revoked.insert(id, left),
                Err(error) => {
                    tracing::warn!(%member, %error, "skipping a remembered revoke that is not a task id");
                }
            }
        }
    }
    Ok(())
}

/// Decodes a command, does it if it is for this worker, and replies.
async fn answer(shared: &Shared, listening: &Listening, bus: &dyn EventBus, message: &Bytes) {
    let request: Request = match serde_json::from_slice(message) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%error, "skipping a remote-control command celeriac cannot read");
            return;
        }
    };
    if !request.is_for(&shared.hostname) {
        return;
    }
    // Replies go to a reply topic only: a command cannot make workers publish events or commands.
    if !request.reply_to.starts_with("reply.") || validate_topic(&request.reply_to).is_err() {
        tracing::warn!(reply_to = %request.reply_to, "skipping a remote-control command with an invalid reply topic");
        return;
    }
    let shutdown = request.command == Command::Shutdown;
    tracing::info!(command = request.command.name(), "remote control");
    let body = respond(shared, listening, request.command);
    let reply = Reply {
        v: FORMAT_VERSION,
        ticket: request.ticket,
        hostname: shared.hostname.to_string(),
        pid: std::process::id(),
        body,
    };
    match serde_json::to_vec(&reply) {
        Ok(encoded) => {
            if let Err(error) = bus
                .publish(&request.reply_to, vec![Bytes::from(encoded)])
                .await
            {
                tracing::warn!(error = %Report(&error), "cannot send a remote-control reply");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot encode a remote-control reply"),
    }
    if shutdown {
        tracing::info!("remote control: shutting down");
        listening.stop_fetching.cancel();
    }
}

fn respond(shared: &Shared, listening: &Listening, command: Command) -> ReplyBody {
    let Some(control) = &shared.control else {
        return ReplyBody::Error {
            message: "remote control is off".into(),
        };
    };
    match command {
        Command::Ping => ReplyBody::Pong,
        Command::Shutdown => ReplyBody::ShuttingDown,
        Command::Stats => {
            let report = shared.report.snapshot();
            ReplyBody::Stats(WorkerStats {
                concurrency: listening.concurrency,
                prefetch: listening.prefetch,
                queues: listening.queues.clone(),
                broker: shared.app.broker().redacted_url(),
                uptime: control.started.elapsed().as_secs_f64(),
                active: control.active().len(),
                succeeded: report.succeeded,
                retried: report.retried,
                dead_lettered: report.dead_lettered,
                expired: report.expired,
                revoked: report.revoked,
                revokes_remembered: control.revoked.len(),
                rss_bytes: crate::events::host_rss_bytes(),
                loadavg: crate::events::host_loadavg(),
            })
        }
        Command::Active => ReplyBody::Active {
            tasks: control.active(),
        },
        Command::Reserved => ReplyBody::Reserved {
            tasks: control
                .waiting
                .list(|payload| shared.app.open_envelope(payload)),
        },
        Command::Registered => {
            let mut tasks: Vec<String> = shared.app.task_names().map(str::to_owned).collect();
            tasks.sort();
            ReplyBody::Registered { tasks }
        }
        Command::ActiveQueues => ReplyBody::ActiveQueues {
            queues: listening.queues.clone(),
        },
        Command::RevokedIds => ReplyBody::RevokedIds {
            ids: control.revoked.ids_now(),
        },
        Command::Revoke {
            ids,
            terminate,
            keep_for_secs,
        } => {
            let keep_for = Duration::from_secs(keep_for_secs);
            for id in &ids {
                control.revoked.insert(*id, keep_for);
            }
            let terminated = if terminate {
                control.terminate(&ids)
            } else {
                Vec::new()
            };
            ReplyBody::Revoked(crate::control::Revoked {
                remembered: control.revoked.len(),
                terminated,
            })
        }
        Command::RateLimit { task, rate } => set_rate_limit(shared, task, rate),
    }
}

fn set_rate_limit(shared: &Shared, task: String, rate: Option<String>) -> ReplyBody {
    let Some(registered) = shared.app.registered(&task) else {
        return ReplyBody::Error {
            message: format!(
                "unknown task `{task}`: no task of that name is registered in this worker"
            ),
        };
    };
    let Some(limiter) = shared.rate_limiters.get(registered.name) else {
        return ReplyBody::Error {
            message: format!(
                "task `{task}` has a cluster-wide rate limit; change it in the task's options"
            ),
        };
    };
    let limit = match rate.as_deref().map(str::parse::<RateLimit>).transpose() {
        Ok(limit) => limit,
        Err(error) => {
            return ReplyBody::Error {
                message: format!("invalid rate limit for `{task}`: {error}"),
            };
        }
    };
    limiter.set(limit);
    ReplyBody::RateLimit {
        task,
        rate: limit.map(|limit| limit.to_string()),
    }
}

fn seconds_since_epoch(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}
