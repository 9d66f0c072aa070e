//! What a message carries of the workflow it belongs to (Celery's `embed`): the rest of its chain,
//! its callbacks and its chord. A worker that finishes the task sends what comes next from here, so
//! a workflow needs no coordinator; the only shared state is a chord's join in the result backend.
//!
//! The types nest to a fixed depth (a [`Workflow`] holds [`ChainLink`]s, which hold [`Step`]s, which
//! hold nothing), so no message can make decoding recurse without bound.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Envelope, TaskId};

/// A task to send later: a message template with its arguments encoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Step {
    /// The id the task will have, chosen when the workflow was built.
    pub id: TaskId,
    /// The task's name.
    pub task: String,
    /// The queue it goes to.
    pub queue: String,
    /// The encoded arguments: all of them, or all but the first when `takes_previous`.
    pub args: Vec<u8>,
    /// The MIME type of `args`.
    pub content_type: String,
    /// Whether the previous task's output becomes the first argument (a partial signature).
    pub takes_previous: bool,
    /// The fingerprint of the task's argument types, as in [`Envelope::args_schema`].
    pub args_schema: Option<u64>,
    /// Whether the task's outcome is stored.
    pub store_result: bool,
    /// Message priority.
    pub priority: Option<u8>,
    /// The run's time limit.
    pub time_limit: Option<Duration>,
    /// Run no earlier than this long after being sent.
    pub countdown: Option<Duration>,
    /// Run no earlier than this.
    pub eta: Option<SystemTime>,
    /// Discard if not started within this long after being sent.
    pub expires_in: Option<Duration>,
    /// Discard if not started by this.
    pub expires_at: Option<SystemTime>,
    /// Application headers.
    pub headers: BTreeMap<String, String>,
    /// Where its result is sent, as in [`Envelope::reply_to`].
    pub reply_to: Option<String>,
}

impl Step {
    /// The message for this step, sent at `now`, with `args` as its complete arguments.
    pub(crate) fn into_envelope(self, now: SystemTime, args: Vec<u8>) -> Envelope {
        let mut envelope = Envelope::new(self.task, self.queue, args, self.content_type);
        envelope.id = self.id;
        envelope.created_at = now;
        envelope.priority = self.priority;
        envelope.eta = self.eta.or(self.countdown.map(|countdown| now + countdown));
        envelope.expires = self.expires_at.or(self.expires_in.map(|after| now + after));
        envelope.time_limit = self.time_limit;
        envelope.headers = self.headers;
        envelope.args_schema = self.args_schema;
        envelope.store_result = self.store_result;
        envelope.reply_to = self.reply_to;
        envelope
    }
}

/// A step of a chain, with the callbacks of that step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChainLink {
    /// The task.
    pub step: Step,
    /// Sent with its output when it succeeds.
    pub link: Vec<Step>,
    /// Sent with a [`TaskFailure`](crate::canvas::TaskFailure) when it fails for good.
    pub link_error: Vec<Step>,
}

impl ChainLink {
    /// A link without callbacks.
    pub fn new(step: Step) -> Self {
        Self {
            step,
            link: Vec::new(),
            link_error: Vec::new(),
        }
    }
}

/// What a chord's member knows of its chord.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChordMember {
    /// The chord's id: its join's key in the result backend. For celeriac's chords it is the
    /// callback's id; for Celery's, the group's.
    pub chord: TaskId,
    /// This member's place in the group, from 0.
    pub index: u32,
    /// How many members the chord has; `0` when the result backend keeps that (Celery's chords).
    pub size: u32,
    /// The callback, sent with every member's output once all succeeded. Its id is the chord's
    /// result id.
    pub callback: ChainLink,
    /// Sent once, with the failing member's [`TaskFailure`](crate::canvas::TaskFailure), when a member
    /// fails for good.
    pub link_error: Vec<Step>,
}

/// The workflow a message belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Workflow {
    /// The chain's steps still to run after this task, next first.
    pub chain: Vec<ChainLink>,
    /// Sent with this task's output when it succeeds.
    pub link: Vec<Step>,
    /// Sent with a [`TaskFailure`](crate::canvas::TaskFailure) when this task fails for good.
    pub link_error: Vec<Step>,
    /// The chord this task is a member of.
    pub chord: Option<ChordMember>,
    /// Set on a chord's callback. Its id is fixed by the chord, so a copy sent again after a crash
    /// is recognised: a worker drops it when the callback's success is already stored.
    pub chord_callback: bool,
}

impl Workflow {
    /// Whether there is nothing to do after the task.
    pub fn is_empty(&self) -> bool {
        self.chain.is_empty()
            && self.link.is_empty()
            && self.link_error.is_empty()
            && self.chord.is_none()
            && !self.chord_callback
    }
}
