//! A dead letter as operators read it (the CLI's `dlq` verbs, the dashboard): its task decoded
//! from the message where it can be, arguments left out.

use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::DeadLetter;
use crate::codec::DecodeLimits;
use crate::{App, Envelope, TaskId};

/// A dead letter's summary.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Letter {
    pub(crate) queue: String,
    /// The task's id, name and retries, if the message decodes.
    pub(crate) id: Option<TaskId>,
    pub(crate) task: Option<String>,
    pub(crate) retries: Option<u32>,
    pub(crate) reason: String,
    /// When it was dead-lettered, in seconds since the Unix epoch.
    pub(crate) at: f64,
    /// The message's size.
    pub(crate) bytes: usize,
}

impl Letter {
    pub(crate) fn new(app: &App, dead: &DeadLetter) -> Self {
        Self::read(dead, app.decode_limits())
    }

    /// The summary of `dead`, decoding its message within `limits`.
    pub(crate) fn read(dead: &DeadLetter, limits: &DecodeLimits) -> Self {
        let payload = crate::signing::unverified(&dead.payload);
        let envelope = Envelope::from_bytes(payload, limits).ok();
        Self {
            queue: dead.queue.clone(),
            id: envelope.as_ref().map(|envelope| envelope.id),
            task: envelope.as_ref().map(|envelope| envelope.task.clone()),
            retries: envelope.as_ref().map(|envelope| envelope.retries),
            reason: dead.reason.clone(),
            at: dead
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64()),
            bytes: dead.payload.len(),
        }
    }

    /// When it was dead-lettered, as `2026-11-30 06:12:00` (UTC).
    pub(crate) fn when(&self) -> String {
        crate::clock::calendar(crate::clock::from_epoch_seconds(self.at))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    }
}
