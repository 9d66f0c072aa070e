//! Batched result writes: the successes stored by every lane of a worker go out together, one
//! pipeline per batch (see [`batching`](crate::batching)), so storing results costs Redis round
//! trips per batch, not per task. Each caller still waits for its own write.

use std::time::Duration;

use celeriac_core::{BrokerError, ResultState};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use crate::acks::copy;
use crate::error::bounded;
use crate::scripts::SCRIPTS;

/// Most writes per pipeline.
const MAX_BATCH: usize = 1_000;

/// Most batches awaiting their replies at once.
const MAX_IN_FLIGHT: usize = 8;

/// One result to store.
pub(crate) struct Write {
    pub(crate) key: String,
    /// The task's id, announced on the results channel once written.
    pub(crate) id: String,
    /// The record, its first byte the state's code.
    pub(crate) bytes: Vec<u8>,
    pub(crate) ttl_ms: u64,
    pub(crate) done: oneshot::Sender<Result<bool, BrokerError>>,
}

impl Write {
    /// Whether the record is a success, written with `SET NX` when no record exists yet.
    fn is_success(&self) -> bool {
        self.bytes.first() == Some(&ResultState::Success.code())
    }
}

/// Starts the batching task; it ends when every sender is gone.
pub(crate) fn start(
    conn: ConnectionManager,
    timeout: Duration,
    channel: String,
) -> mpsc::UnboundedSender<Write> {
    let target = Target {
        conn,
        timeout,
        channel,
    };
    // Batches go out without waiting for the previous ones' replies: storing results does not
    // stretch how long a delivery stays unsettled, which the worker's prefetch bounds.
    crate::batching::start(MAX_BATCH, MAX_IN_FLIGHT, move |batch| {
        write_batch(target.clone(), batch)
    })
}

/// Where writes go: the connection, its timeout, and the channel that announces them.
#[derive(Clone)]
struct Target {
    conn: ConnectionManager,
    timeout: Duration,
    channel: String,
}

/// Stores one batch and answers its callers.
async fn write_batch(target: Target, batch: Vec<Write>) {
    let (successes, others): (Vec<Write>, Vec<Write>) =
        batch.into_iter().partition(Write::is_success);
    let mut scripted = others;
    if !successes.is_empty() {
        scripted.extend(first_successes(&target, successes).await);
    }
    // Progress, failures, and successes that found a record: the script decides (rare).
    for write in scripted {
        let mut invocation = SCRIPTS.store_result.key(&write.key);
        invocation
            .arg(&write.bytes)
            .arg(write.ttl_ms)
            .arg(&target.channel)
            .arg(&write.id);
        let mut conn = target.conn.clone();
        let stored = bounded::<i64>(
            "store_result",
            target.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await;
        let _ = write.done.send(stored.map(|stored| stored == 1));
    }
}

/// Writes each success where its task has no record yet (`SET NX`), then announces the batch's ids
/// on the results channel (a hint, harmless for the writes that did not happen). Answers the
/// callers whose write happened or failed; returns the writes that found a record, for the script.
async fn first_successes(target: &Target, writes: Vec<Write>) -> Vec<Write> {
    let mut pipe = redis::pipe();
    let mut ids = Vec::with_capacity(writes.len() * 37);
    for write in &writes {
        pipe.cmd("SET")
            .arg(&write.key)
            .arg(&write.bytes)
            .arg("PX")
            .arg(write.ttl_ms)
            .arg("NX");
        if !ids.is_empty() {
            ids.push(b'\n');
        }
        ids.extend_from_slice(write.id.as_bytes());
    }
    // After the writes, in the same pipeline: Redis runs them in order.
    pipe.cmd("PUBLISH").arg(&target.channel).arg(ids).ignore();
    let mut conn = target.conn.clone();
    let written =
        bounded::<Vec<Option<()>>>("store_result", target.timeout, pipe.query_async(&mut conn))
            .await;
    let mut found_a_record = Vec::new();
    let failed = |writes: Vec<Write>, error: &BrokerError| {
        for write in writes {
            let _ = write
                .done
                .send(Err(copy(error, "redis result write failed")));
        }
    };
    match written {
        Ok(written) if written.len() == writes.len() => {
            for (write, written) in writes.into_iter().zip(written) {
                if written.is_some() {
                    let _ = write.done.send(Ok(true));
                } else {
                    found_a_record.push(write);
                }
            }
        }
        Ok(written) => {
            let error = BrokerError::Invalid(format!(
                "redis answered {} replies to {} result writes",
                written.len(),
                writes.len()
            ));
            failed(writes, &error);
        }
        Err(error) => failed(writes, &error),
    }
    found_a_record
}
