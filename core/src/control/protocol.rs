//! The remote-control wire format (version 1): JSON requests on the `control` topic, JSON replies
//! on the request's own reply topic.

use serde::{Deserialize, Serialize};

use crate::TaskId;

/// The version of the control format this crate writes.
pub const FORMAT_VERSION: u32 = 1;

/// A command, as sent on the `control` topic: `{"v": 1, "ticket": …, "reply_to": …,
/// "destination": [hostnames] or null, "command": "ping", …}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) v: u32,
    /// Names this request; its replies come back on `reply_to`.
    pub(crate) ticket: String,
    pub(crate) reply_to: String,
    /// The workers that are to answer (by hostname), or every worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) destination: Option<Vec<String>>,
    #[serde(flatten)]
    pub(crate) command: Command,
}

impl Request {
    /// Whether the worker named `hostname` is to answer.
    pub(crate) fn is_for(&self, hostname: &str) -> bool {
        self.destination
            .as_ref()
            .is_none_or(|names| names.iter().any(|name| name == hostname))
    }
}

/// What a worker is asked to do. Celery's `inspect` verbs answer; its `control` verbs act.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Command {
    /// Answers [`ReplyBody::Pong`]: the worker is alive and listening.
    Ping,
    /// Answers [`ReplyBody::Stats`].
    Stats,
    /// Answers [`ReplyBody::Active`]: the tasks running now.
    Active,
    /// Answers [`ReplyBody::Reserved`]: the tasks fetched and waiting for a free lane.
    Reserved,
    /// Answers [`ReplyBody::Registered`]: the tasks the worker knows.
    Registered,
    /// Answers [`ReplyBody::ActiveQueues`]: the queues it consumes.
    ActiveQueues,
    /// Answers [`ReplyBody::RevokedIds`]: the revoked task ids it remembers.
    RevokedIds,
    /// Drops these tasks when they arrive (and, with `terminate`, stops them if they are
    /// running), remembering them for `keep_for_secs`. Answers [`ReplyBody::Revoked`].
    Revoke {
        /// The tasks.
        ids: Vec<TaskId>,
        /// Whether to stop runs already started.
        #[serde(default)]
        terminate: bool,
        /// How long workers remember them, in seconds.
        keep_for_secs: u64,
    },
    /// Shuts the worker down gracefully, as SIGTERM does. Answers [`ReplyBody::ShuttingDown`].
    Shutdown,
    /// Sets (or with `None` removes) the worker's own rate limit of `task`, such as `"10/s"`.
    /// Answers [`ReplyBody::RateLimit`] or [`ReplyBody::Error`].
    RateLimit {
        /// The task's name.
        task: String,
        /// The new limit.
        rate: Option<String>,
    },
}

impl Command {
    /// The command's name on the wire (`ping`, `active-queues`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Stats => "stats",
            Self::Active => "active",
            Self::Reserved => "reserved",
            Self::Registered => "registered",
            Self::ActiveQueues => "active-queues",
            Self::RevokedIds => "revoked-ids",
            Self::Revoke { .. } => "revoke",
            Self::Shutdown => "shutdown",
            Self::RateLimit { .. } => "rate-limit",
        }
    }
}

/// One worker's answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Reply {
    /// The format's version ([`FORMAT_VERSION`]).
    pub v: u32,
    /// The request it answers.
    pub ticket: String,
    /// The worker that answered.
    pub hostname: String,
    /// Its process id.
    pub pid: u32,
    /// What it said.
    #[serde(flatten)]
    pub body: ReplyBody,
}

/// What a worker answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ReplyBody {
    /// To [`Command::Ping`].
    Pong,
    /// To [`Command::Stats`].
    Stats(WorkerStats),
    /// To [`Command::Active`].
    Active {
        /// The runs in progress.
        tasks: Vec<ActiveTask>,
    },
    /// To [`Command::Reserved`].
    Reserved {
        /// The deliveries waiting for a free lane, oldest first.
        tasks: Vec<ReservedTask>,
    },
    /// To [`Command::Registered`].
    Registered {
        /// Task names, sorted.
        tasks: Vec<String>,
    },
    /// To [`Command::ActiveQueues`].
    ActiveQueues {
        /// Queue names, sorted.
        queues: Vec<String>,
    },
    /// To [`Command::Revoke`].
    Revoked(Revoked),
    /// To [`Command::RevokedIds`].
    RevokedIds {
        /// Revoked task ids the worker remembers (and drops if they arrive), sorted.
        ids: Vec<TaskId>,
    },
    /// To [`Command::Shutdown`].
    ShuttingDown,
    /// To [`Command::RateLimit`]: the limit now in force.
    RateLimit {
        /// The task.
        task: String,
        /// Its limit in this worker, if any.
        rate: Option<String>,
    },
    /// The worker could not do what it was asked.
    Error {
        /// Why.
        message: String,
    },
}

/// A worker's figures, as [`Command::Stats`] answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Lanes: tasks it runs at once.
    pub concurrency: usize,
    /// Deliveries it may hold unsettled.
    pub prefetch: usize,
    /// The queues it consumes.
    pub queues: Vec<String>,
    /// Its broker, password hidden.
    pub broker: String,
    /// Seconds since it started.
    pub uptime: f64,
    /// Runs in progress.
    pub active: usize,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed and were retried.
    pub retried: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Tasks discarded as expired.
    pub expired: u64,
    /// Tasks dropped or stopped because they were revoked.
    pub revoked: u64,
    /// Revoked task ids it remembers.
    pub revokes_remembered: usize,
    /// Resident memory in bytes (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// The machine's load averages over 1, 5 and 15 minutes (Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadavg: Option<[f64; 3]>,
}

/// A run in progress, as [`Command::Active`] answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActiveTask {
    /// The task's id.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// The queue it came from.
    pub queue: String,
    /// Retries before this run.
    pub retries: u32,
    /// When the run started, in seconds since the Unix epoch.
    pub started: f64,
    /// Seconds it has run so far.
    pub runtime: f64,
}

/// A task a worker fetched and holds until a lane is free, as [`Command::Reserved`] answers.
///
/// A worker holds up to `concurrency + 1` such deliveries (the broker's prefetch window may keep
/// more in its client, unlisted); they run in this order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReservedTask {
    /// The task's id.
    pub id: TaskId,
    /// Its name.
    pub name: String,
    /// The queue it came from.
    pub queue: String,
    /// Retries before the run it waits for.
    pub retries: u32,
}

/// A worker's answer to [`Command::Revoke`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Revoked {
    /// Revoked task ids the worker remembers now.
    pub remembered: usize,
    /// Of the revoked tasks, those it was running and stopped.
    pub terminated: Vec<TaskId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_read_as_documented() {
        let request = Request {
            v: FORMAT_VERSION,
            ticket: "t-1".into(),
            reply_to: "reply.t-1".into(),
            destination: Some(vec!["w1".into()]),
            command: Command::RateLimit {
                task: "send_sms".into(),
                rate: Some("10/s".into()),
            },
        };
        let wire = serde_json::to_string(&request).unwrap_or_default();
        assert_eq!(
            wire,
            r#"{"v":1,"ticket":"t-1","reply_to":"reply.t-1","destination":["w1"],"command":"rate-limit","task":"send_sms","rate":"10/s"}"#
        );
        let back: Request = serde_json::from_str(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert!(back.is_for("w1") && !back.is_for("w2"));
        let everyone: Request = serde_json::from_str(
            r#"{"v":1,"ticket":"t","reply_to":"reply.t","command":"ping","later":true}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(everyone.is_for("anyone"));
        assert_eq!(everyone.command, Command::Ping);
        // An unknown command is an error to skip, not a panic.
        assert!(
            serde_json::from_str::<Request>(
                r#"{"v":1,"ticket":"t","reply_to":"reply.t","command":"dance"}"#
            )
            .is_err()
        );

        let reply = Reply {
            v: FORMAT_VERSION,
            ticket: "t-1".into(),
            hostname: "w1".into(),
            pid: 7,
            body: ReplyBody::Revoked(Revoked {
                remembered: 2,
                terminated: Vec::new(),
            }),
        };
        let wire = serde_json::to_string(&reply).unwrap_or_default();
        assert_eq!(
            wire,
            r#"{"v":1,"ticket":"t-1","hostname":"w1","pid":7,"reply":"revoked","remembered":2,"terminated":[]}"#
        );
        let back: Reply = serde_json::from_str(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, reply);
    }
}
