//! Batched acknowledgements: acks from all deliveries of one consumer are sent together, one script
//! call per queue per batch. A lone ack goes out at once; under load, acks that arrive while a batch
//! is in flight form the next one. Each caller still waits for its own ack to be confirmed.

use std::collections::HashMap;
use std::sync::Arc;

use celeriac_core::BrokerError;
use tokio::sync::{mpsc, oneshot};

use crate::Inner;
use crate::error::bounded;
use crate::keys::QueueKeys;
use crate::scripts::SCRIPTS;

/// Most acks per script call (Lua's `unpack` has a stack limit).
const MAX_BATCH: usize = 1_000;

pub(crate) struct AckRequest {
    pub(crate) queue: usize,
    pub(crate) id: String,
    pub(crate) done: oneshot::Sender<Result<(), BrokerError>>,
}

/// Starts the batching task of one consumer; it ends when every sender is gone.
pub(crate) fn start(broker: Arc<Inner>, keys: Vec<QueueKeys>) -> mpsc::UnboundedSender<AckRequest> {
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(run(broker, keys, receiver));
    sender
}

async fn run(
    broker: Arc<Inner>,
    keys: Vec<QueueKeys>,
    mut requests: mpsc::UnboundedReceiver<AckRequest>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut by_queue: HashMap<usize, Vec<AckRequest>> = HashMap::new();
        for request in batch.drain(..) {
            by_queue.entry(request.queue).or_default().push(request);
        }
        for (queue, requests) in by_queue {
            let settings = broker.settings();
            let mut conn = broker.conn();
            let mut invocation = SCRIPTS.ack.key(&keys[queue].ready);
            invocation.arg(&settings.group);
            for request in &requests {
                invocation.arg(&request.id);
            }
            let result = bounded::<u64>(
                "ack",
                settings.operation_timeout,
                invocation.invoke_async(&mut conn),
            )
            .await;
            for request in requests {
                let outcome = match &result {
                    Ok(_) => Ok(()),
                    Err(error) => Err(copy(error, "redis ack failed")),
                };
                let _ = request.done.send(outcome);
            }
        }
    }
}

/// A copy of a batch's error for each of its callers (broker errors are not `Clone`); errors that
/// are not transient become `context` with the error's text as the cause.
pub(crate) fn copy(error: &BrokerError, context: &str) -> BrokerError {
    match error {
        BrokerError::Disconnected { op } => BrokerError::Disconnected { op },
        BrokerError::Timeout { op, after } => BrokerError::Timeout { op, after: *after },
        BrokerError::Unavailable { op, reason } => BrokerError::Unavailable {
            op,
            reason: reason.clone(),
        },
        other => BrokerError::Backend {
            context: context.to_owned(),
            source: celeriac_core::Report(other).to_string().into(),
        },
    }
}
