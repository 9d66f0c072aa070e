//! Publishing: ready messages are appended to their queue's stream, delayed ones added to its
//! sorted set, many per pipeline; optionally confirmed by replicas with `WAIT`.
//!
//! On a Redis Cluster a pipeline cannot span slots, so each queue's messages go in pipelines of
//! their own, to the master owning the queue.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use celeriac_core::{BrokerError, Outgoing};

use crate::error::bounded;
use crate::keys::QueueKeys;
use crate::{Inner, epoch_millis};

/// Messages per pipeline.
const CHUNK: usize = 2_000;

/// How many replicas must hold a published message before `publish` returns (see
/// [`RedisBrokerBuilder::min_replicas`](crate::RedisBrokerBuilder::min_replicas)).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MinReplicas {
    pub(crate) replicas: u32,
    pub(crate) timeout: Duration,
}

pub(crate) async fn publish(inner: &Inner, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
    if messages.iter().any(|message| message.priority.is_some()) {
        return Err(BrokerError::unsupported("redis", "message priorities"));
    }
    let now = SystemTime::now();
    if !inner.server().is_cluster() {
        for chunk in messages.chunks(CHUNK) {
            send(inner, chunk.iter(), now).await?;
        }
        return Ok(());
    }
    let mut by_queue: HashMap<&str, Vec<&Outgoing>> = HashMap::new();
    for message in &messages {
        by_queue.entry(&message.queue).or_default().push(message);
    }
    for messages in by_queue.values() {
        for chunk in messages.chunks(CHUNK) {
            send(inner, chunk.iter().copied(), now).await?;
        }
    }
    Ok(())
}

/// One pipeline of `messages`, and a `WAIT` after them if replicas must confirm.
async fn send(
    inner: &Inner,
    messages: impl Iterator<Item = &Outgoing>,
    now: SystemTime,
) -> Result<(), BrokerError> {
    let settings = inner.settings();
    let mut pipe = redis::pipe();
    // A batch's messages come grouped by queue: each queue's keys are made once.
    let mut queue_keys: Option<QueueKeys> = None;
    for message in messages {
        let keys = match queue_keys {
            Some(ref keys) if *keys.queue == *message.queue => keys,
            _ => queue_keys.insert(QueueKeys::new(&settings.key_prefix, &message.queue)),
        };
        match message.not_before.filter(|at| *at > now) {
            Some(at) => {
                let mut member = uuid::Uuid::new_v4().as_bytes().to_vec();
                member.extend_from_slice(&message.payload);
                pipe.cmd("ZADD")
                    .arg(&keys.delayed)
                    .arg(epoch_millis(at))
                    .arg(member)
                    .ignore();
            }
            None => {
                pipe.cmd("XADD")
                    .arg(&keys.ready)
                    .arg("*")
                    .arg("p")
                    .arg(message.payload.as_ref())
                    .ignore();
            }
        }
    }
    let mut conn = inner.conn();
    let Some(wanted) = settings.min_replicas else {
        return bounded(
            "publish",
            settings.operation_timeout,
            pipe.query_async::<()>(&mut conn),
        )
        .await;
    };
    // In a pipeline, `WAIT` goes where the writes went: the queue's master.
    pipe.cmd("WAIT")
        .arg(wanted.replicas)
        .arg(u64::try_from(wanted.timeout.as_millis()).unwrap_or(u64::MAX));
    let (confirmed,): (u32,) = bounded(
        "publish",
        settings.operation_timeout + wanted.timeout,
        pipe.query_async(&mut conn),
    )
    .await?;
    if confirmed < wanted.replicas {
        return Err(BrokerError::Unavailable {
            op: "publish",
            reason: format!(
                "written to the master but confirmed by {confirmed} of {} replicas within {:?}: \
                 a failover now could lose it (it may also be delivered; publishing again may \
                 run it twice)",
                wanted.replicas, wanted.timeout
            ),
        });
    }
    Ok(())
}
