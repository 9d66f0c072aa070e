//! The record celeriac stores for each finished (or progressing) task: what the task returned, or
//! why it failed. Encoded with bincode behind a version byte, so its format can grow.

use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ResultState, StoredResult};
use crate::TaskId;
use crate::codec::{CodecError, DecodeLimits};

const VERSION: u8 = 2;
/// Version 1 lacked `origin` (`None`: one zero byte).
const VERSION_1: u8 = 1;

/// Why a task has no output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Cause {
    /// It ran and failed (after its retries, if it had any).
    Failed,
    /// It never ran: its message was dead-lettered (bad arguments, another build's argument types, …).
    DeadLettered,
    /// It expired before a worker started it.
    Expired,
    /// It was revoked.
    Revoked,
}

/// One task's stored record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResultRecord {
    /// The task's name.
    pub(crate) task: String,
    /// Retries used when the record was written.
    pub(crate) retries: u32,
    /// The MIME type of `output`.
    pub(crate) content_type: String,
    /// The encoded output of a success; empty otherwise.
    pub(crate) output: Vec<u8>,
    /// Why there is no output, with the error's text.
    pub(crate) failure: Option<(Cause, String)>,
    /// When it was written.
    pub(crate) at: SystemTime,
    /// The task whose failure this records when it is another one's: the link that stopped a
    /// chain (recorded as the chain's result), the member that failed a chord. `task` is then
    /// that task's name.
    pub(crate) origin: Option<TaskId>,
}

impl ResultRecord {
    pub(crate) fn new(task: &str, retries: u32) -> Self {
        Self {
            task: task.to_owned(),
            retries,
            content_type: String::new(),
            output: Vec::new(),
            failure: None,
            at: crate::clock::now(),
            origin: None,
        }
    }

    pub(crate) fn with_output(mut self, content_type: &str, output: Vec<u8>) -> Self {
        self.content_type = content_type.to_owned();
        self.output = output;
        self
    }

    pub(crate) fn with_failure(mut self, cause: Cause, message: String) -> Self {
        self.failure = Some((cause, message));
        self
    }

    /// The record, encoded for a backend, in `state`.
    pub(crate) fn to_stored(&self, state: ResultState) -> Result<StoredResult, CodecError> {
        let mut body = vec![VERSION];
        body.extend(crate::codec::bincode::encode_typed(self)?);
        Ok(StoredResult::new(state, Bytes::from(body)))
    }

    /// Decodes a stored record's body; anything that is not one is an error.
    /// Celery's result meta (JSON, from `AppBuilder::celery_compat` or a Python worker) is read
    /// too.
    pub(crate) fn from_body(body: &[u8], limits: &DecodeLimits) -> Result<Self, CodecError> {
        match body.split_first() {
            #[cfg(feature = "celery")]
            Some((b'{', _)) => {
                limits.check(body)?;
                crate::celery::from_meta(body)
            }
            Some((&VERSION, record)) => crate::codec::bincode::decode_typed(record, limits),
            Some((&VERSION_1, record)) => {
                let mut record = record.to_vec();
                record.push(0);
                crate::codec::bincode::decode_typed(&record, limits)
            }
            _ => Err(CodecError::Decode {
                content_type: "celeriac result record",
                source: "unknown record version".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let record = ResultRecord::new("add", 2)
            .with_output("application/x-bincode", vec![1, 2])
            .with_failure(Cause::Expired, "late".into());
        let stored = record.to_stored(ResultState::Failure).unwrap();
        let limits = DecodeLimits::default();
        assert_eq!(
            ResultRecord::from_body(&stored.body, &limits).unwrap(),
            record
        );
        for cut in 0..stored.body.len() {
            assert!(ResultRecord::from_body(&stored.body[..cut], &limits).is_err());
        }
        assert!(ResultRecord::from_body(b"\x09junk", &limits).is_err());
        // Version 1: the same record without `origin`.
        let mut v1 = vec![VERSION_1];
        v1.extend_from_slice(&stored.body[1..stored.body.len() - 1]);
        assert_eq!(ResultRecord::from_body(&v1, &limits).unwrap(), record);
    }
}
