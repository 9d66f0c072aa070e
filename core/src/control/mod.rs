//! Remote control: ask running workers what they are doing, and tell them what to do — Celery's
//! `inspect` and `control`.
//!
//! [`App::control`] gives a [`Control`]: it broadcasts a [`Command`] to every worker (or to those
//! named with [`Control::destination`]) and gathers their replies until its timeout (1 s by
//! default), or until every named worker has answered. Commands and replies travel on the
//! broker's [event bus](crate::events::EventBus) — Redis pub/sub, the RabbitMQ topic exchange
//! `celeriac.events`, a broadcast channel for the embedded broker — at most once, like Celery's
//! pidbox: a worker that is down, or starts later, does not see a command.
//!
//! Revokes are the exception: [`Control::revoke`] also writes each id to the app's
//! [coordination store](crate::coordination) (the embedded broker's, the Redis broker's own
//! Redis, or the one given with [`AppBuilder::coordination_url`](crate::AppBuilder::coordination_url))
//! for three hours, and a worker reads them there whenever it starts listening, so a restarted
//! worker still drops a revoked task when it arrives.
//!
//! Workers listen unless built with [`WorkerBuilder::remote_control(false)`](crate::WorkerBuilder::remote_control).
//!
//! ```
//! use std::time::Duration;
//! use celeriac::App;
//!
//! #[celeriac::task]
//! async fn monthly_report(month: u32) -> Result<u32, std::io::Error> {
//!     tokio::time::sleep(Duration::from_secs(3600)).await;
//!     Ok(month)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app = App::builder().broker_url("memory://control-doc").register::<monthly_report>().build()?;
//! let worker = app.worker().hostname("reports-1").build()?;
//! let running = tokio::spawn(worker.run_until(std::future::pending()));
//! let sent = monthly_report::delay(&app, 11).await?;
//!
//! let control = app.control().timeout(Duration::from_millis(200));
//! // Wait until the worker has taken the task.
//! let active = loop {
//!     let replies = control.active().await?;
//!     if replies.iter().any(|reply| !reply.value.is_empty()) {
//!         break replies;
//!     }
//! };
//! assert_eq!(active[0].hostname, "reports-1");
//! assert_eq!(active[0].value[0].id, sent.id());
//!
//! // Stop it: the worker drops the run and records it as revoked.
//! let revoke = control.revoke([sent.id()], true).await?;
//! assert!(revoke.remembered);
//! assert_eq!(revoke.replies[0].value.terminated, [sent.id()]);
//!
//! control.shutdown().await?;
//! let report = running.await??;
//! assert_eq!(report.revoked, 1);
//! # Ok(()) }
//! ```
//!
//! ## The format (version 1)
//!
//! A command is a JSON object on the topic `control`: `{"v": 1, "ticket": …, "reply_to":
//! "reply.<ticket>", "destination": [hostnames] (absent: every worker), "command": <name>, …its
//! fields}`. Each worker that is addressed answers on `reply_to` with `{"v": 1, "ticket": …,
//! "hostname": …, "pid": …, "reply": <kind>, …its fields}`:
//!
//! | `command` | fields | `reply` | fields |
//! |---|---|---|---|
//! | `ping` | | `pong` | |
//! | `stats` | | `stats` | see [`WorkerStats`] |
//! | `active` | | `active` | `tasks`: [`ActiveTask`]s |
//! | `reserved` | | `reserved` | `tasks`: [`ReservedTask`]s |
//! | `registered` | | `registered` | `tasks`: names |
//! | `active-queues` | | `active-queues` | `queues` |
//! | `revoke` | `ids`, `terminate`, `keep_for_secs` | `revoked` | `remembered`, `terminated` |
//! | `shutdown` | | `shutting-down` | |
//! | `rate-limit` | `task`, `rate` (`"10/s"`, or null to remove) | `rate-limit` or `error` | `task`, `rate` / `message` |
//!
//! Readers ignore fields they do not know; a worker skips (and logs) a command it cannot read.

mod protocol;
pub(crate) mod revoked;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

pub(crate) use self::protocol::Request;
pub use self::protocol::{
    ActiveTask, Command, FORMAT_VERSION, Reply, ReplyBody, ReservedTask, Revoked, WorkerStats,
};
use crate::broker::BrokerError;
use crate::error::Report;
use crate::events::CONTROL_TOPIC;
use crate::{App, RateLimit, TaskId};

/// How long revoked task ids are remembered: three hours, as Celery does.
pub const REVOKE_KEEP_FOR: Duration = Duration::from_secs(3 * 3600);

/// Sends commands to workers and gathers their replies; see the [module](self). Made by
/// [`App::control`].
#[derive(Clone, Debug)]
#[must_use]
pub struct Control {
    app: App,
    timeout: Duration,
    destination: Option<Vec<String>>,
}

/// One worker's answer, with who gave it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Replied<T> {
    /// The worker's name.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// What it answered.
    pub value: T,
}

/// What a [`Control::revoke`] did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Revoke {
    /// Whether the ids were written to the coordination store, for workers that start later.
    /// `false` when the app has none (RabbitMQ without `coordination_url`): only the workers
    /// listening now know.
    pub remembered: bool,
    /// The workers that answered.
    pub replies: Vec<Replied<Revoked>>,
}

/// Why a command could not be sent, or its replies gathered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The app's broker carries no commands.
    #[error("the broker {broker} carries no remote-control commands")]
    NoBus {
        /// The broker, password hidden.
        broker: String,
    },
    /// The broker or the coordination store failed.
    #[error("remote control: {0}")]
    Broker(#[from] BrokerError),
}

impl App {
    /// Remote control of this app's workers; see [`control`](crate::control).
    pub fn control(&self) -> Control {
        Control {
            app: self.clone(),
            timeout: Duration::from_secs(1),
            destination: None,
        }
    }
}

impl Control {
    /// How long to wait for replies (default 1 s). With a [destination](Self::destination),
    /// gathering ends as soon as every named worker has answered.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Only the workers with these names answer (and act); by default, every worker.
    pub fn destination<I, S>(mut self, hostnames: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.destination = Some(hostnames.into_iter().map(Into::into).collect());
        self
    }

    /// Sends `command` and gathers the replies, in the order they came.
    pub async fn send(&self, command: Command) -> Result<Vec<Reply>, ControlError> {
        let broker = self.app.broker();
        let Some(bus) = broker.event_bus().await? else {
            return Err(ControlError::NoBus {
                broker: broker.redacted_url(),
            });
        };
        let ticket = uuid::Uuid::new_v4().to_string();
        let reply_to = format!("reply.{ticket}");
        let mut replies = bus.subscribe(&reply_to).await?;
        let request = Request {
            v: FORMAT_VERSION,
            ticket: ticket.clone(),
            reply_to,
            destination: self.destination.clone(),
            command,
        };
        let encoded = serde_json::to_vec(&request).map_err(|error| {
            BrokerError::Invalid(format!("cannot encode a control command: {error}"))
        })?;
        bus.publish(CONTROL_TOPIC, vec![Bytes::from(encoded)])
            .await?;
        let mut gathered: Vec<Reply> = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(names) = &self.destination
                && names
                    .iter()
                    .all(|name| gathered.iter().any(|reply| &reply.hostname == name))
            {
                break;
            }
            let next = tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                next = replies.next() => next,
            };
            match next {
                None => break,
                Some(Err(error)) => {
                    tracing::warn!(error = %Report(&error), "lost control replies");
                }
                Some(Ok(message)) => match serde_json::from_slice::<Reply>(&message) {
                    Ok(reply) if reply.ticket == ticket => gathered.push(reply),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "skipping a control reply celeriac cannot read");
                    }
                },
            }
        }
        Ok(gathered)
    }

    /// The replies of kind `pick` chooses, each with its worker.
    async fn gather<T>(
        &self,
        command: Command,
        pick: impl Fn(ReplyBody) -> Option<T>,
    ) -> Result<Vec<Replied<T>>, ControlError> {
        let replies = self.send(command).await?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| {
                let (hostname, pid) = (reply.hostname, reply.pid);
                let value = pick(reply.body)?;
                Some(Replied {
                    hostname,
                    pid,
                    value,
                })
            })
            .collect())
    }

    /// The workers that answer: Celery's `inspect ping`.
    pub async fn ping(&self) -> Result<Vec<Replied<()>>, ControlError> {
        self.gather(Command::Ping, |body| {
            matches!(body, ReplyBody::Pong).then_some(())
        })
        .await
    }

    /// Each worker's figures: Celery's `inspect stats`.
    pub async fn stats(&self) -> Result<Vec<Replied<WorkerStats>>, ControlError> {
        self.gather(Command::Stats, |body| match body {
            ReplyBody::Stats(stats) => Some(stats),
            _ => None,
        })
        .await
    }

    /// The tasks each worker is running: Celery's `inspect active`.
    pub async fn active(&self) -> Result<Vec<Replied<Vec<ActiveTask>>>, ControlError> {
        self.gather(Command::Active, |body| match body {
            ReplyBody::Active { tasks } => Some(tasks),
            _ => None,
        })
        .await
    }

    /// The tasks each worker fetched and holds until a lane is free, in the order they will run:
    /// Celery's `inspect reserved`. A worker holds up to `concurrency + 1` of them; more may wait
    /// in its broker client's prefetch buffer, unlisted.
    pub async fn reserved(&self) -> Result<Vec<Replied<Vec<ReservedTask>>>, ControlError> {
        self.gather(Command::Reserved, |body| match body {
            ReplyBody::Reserved { tasks } => Some(tasks),
            _ => None,
        })
        .await
    }

    /// The tasks each worker knows: Celery's `inspect registered`.
    pub async fn registered(&self) -> Result<Vec<Replied<Vec<String>>>, ControlError> {
        self.gather(Command::Registered, |body| match body {
            ReplyBody::Registered { tasks } => Some(tasks),
            _ => None,
        })
        .await
    }

    /// The queues each worker consumes: Celery's `inspect active_queues`.
    pub async fn active_queues(&self) -> Result<Vec<Replied<Vec<String>>>, ControlError> {
        self.gather(Command::ActiveQueues, |body| match body {
            ReplyBody::ActiveQueues { queues } => Some(queues),
            _ => None,
        })
        .await
    }

    /// The revoked task ids each worker remembers (and drops if they arrive): Celery's `inspect
    /// revoked`.
    pub async fn revoked(&self) -> Result<Vec<Replied<Vec<TaskId>>>, ControlError> {
        self.gather(Command::RevokedIds, |body| match body {
            ReplyBody::RevokedIds { ids } => Some(ids),
            _ => None,
        })
        .await
    }

    /// Revokes tasks: a worker drops one when it arrives, and with `terminate` stops it if it
    /// is running; either way its result is [`Revoked`](crate::ResultState::Revoked). The ids
    /// are remembered for [`REVOKE_KEEP_FOR`] in the app's coordination store, if it has one,
    /// before the command goes out.
    pub async fn revoke(
        &self,
        ids: impl IntoIterator<Item = TaskId>,
        terminate: bool,
    ) -> Result<Revoke, ControlError> {
        let ids: Vec<TaskId> = ids.into_iter().collect();
        let remembered = match self.app.coordination() {
            Some(store) => {
                for id in &ids {
                    store
                        .remember(revoked::STORE_KEY, &id.to_string(), REVOKE_KEEP_FOR)
                        .await?;
                }
                true
            }
            None => false,
        };
        let command = Command::Revoke {
            ids,
            terminate,
            keep_for_secs: REVOKE_KEEP_FOR.as_secs(),
        };
        let sent = self
            .gather(command, |body| match body {
                ReplyBody::Revoked(revoked) => Some(revoked),
                _ => None,
            })
            .await;
        match sent {
            Ok(replies) => Ok(Revoke {
                remembered,
                replies,
            }),
            // Remembered: workers learn of it when they next listen.
            Err(ControlError::NoBus { .. }) if remembered => Ok(Revoke {
                remembered,
                replies: Vec::new(),
            }),
            Err(error) => Err(error),
        }
    }

    /// Shuts workers down gracefully, as SIGTERM does: Celery's `control shutdown`. Answers the
    /// workers that said they would.
    pub async fn shutdown(&self) -> Result<Vec<Replied<()>>, ControlError> {
        self.gather(Command::Shutdown, |body| {
            matches!(body, ReplyBody::ShuttingDown).then_some(())
        })
        .await
    }

    /// Sets (or with `None` removes) each worker's own rate limit of `task`: Celery's `control
    /// rate_limit`. A worker that cannot (it does not know the task, or the task's limit is
    /// cluster-wide) answers why.
    pub async fn rate_limit(
        &self,
        task: &str,
        rate: Option<RateLimit>,
    ) -> Result<Vec<Replied<Result<Option<String>, String>>>, ControlError> {
        let command = Command::RateLimit {
            task: task.to_owned(),
            rate: rate.map(|rate| rate.to_string()),
        };
        self.gather(command, |body| match body {
            ReplyBody::RateLimit { rate, .. } => Some(Ok(rate)),
            ReplyBody::Error { message } => Some(Err(message)),
            _ => None,
        })
        .await
    }
}
