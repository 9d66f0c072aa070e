//! The published contract kit (`celeriac::testing`) catches real broker mistakes: two deliberately
//! broken brokers, built as a third-party author would build one, fail the cases about their faults
//! (and pass them once the fault is off, so the failure is the fault's).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use celeriac::MemoryBroker;
use celeriac::async_trait;
use celeriac::broker::{
    Acknowledger, Broker, BrokerError, Capabilities, ConsumeOptions, DeadLetter, Delivery,
    DeliveryStream, Outgoing, QueueStats,
};
use celeriac::testing::{contract, run_case};
use futures::StreamExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// A delivery dropped unsettled (a crashed worker) is acked instead of delivered again.
    LosesDroppedDeliveries,
    /// Priorities are not claimed, yet a message asking for one is accepted and sent without it.
    IgnoresPriorities,
}

/// A broker of our own over the in-memory one, with one fault switched on.
#[derive(Debug)]
struct Faulty {
    inner: MemoryBroker,
    fault: Fault,
}

#[derive(Debug)]
struct LossyAck {
    inner: Option<Delivery>,
}

impl Drop for LossyAck {
    fn drop(&mut self) {
        if let Some(delivery) = self.inner.take() {
            // The fault: an unsettled delivery is removed rather than delivered again.
            tokio::spawn(delivery.ack());
        }
    }
}

#[async_trait]
impl Acknowledger for LossyAck {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.inner.take().expect("settled once").ack().await
    }
    async fn requeue(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.inner.take().expect("settled once").requeue().await
    }
    async fn dead_letter(
        mut self: Box<Self>,
        _payload: bytes::Bytes,
        reason: String,
    ) -> Result<(), BrokerError> {
        self.inner
            .take()
            .expect("settled once")
            .dead_letter(reason)
            .await
    }
}

#[async_trait]
impl Broker for Faulty {
    fn system(&self) -> &'static str {
        "faulty"
    }
    fn redacted_url(&self) -> String {
        "faulty://".to_owned()
    }
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.inner.capabilities();
        if self.fault == Fault::IgnoresPriorities {
            capabilities.max_priority = None;
        }
        capabilities
    }
    async fn publish(&self, message: Outgoing) -> Result<(), BrokerError> {
        let mut message = message;
        if self.fault == Fault::IgnoresPriorities {
            message.priority = None;
        }
        self.inner.publish(message).await
    }
    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        let stream = self.inner.consume(queues, options).await?;
        if self.fault != Fault::LosesDroppedDeliveries {
            return Ok(stream);
        }
        Ok(Box::pin(stream.map(|delivery| {
            delivery.map(|delivery| {
                Delivery::new(
                    delivery.payload().clone(),
                    delivery.shared_queue(),
                    delivery.redelivered(),
                    Box::new(LossyAck {
                        inner: Some(delivery),
                    }),
                )
            })
        })))
    }
    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        self.inner.stats(queue).await
    }
    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        self.inner.dead_letters(queue, limit).await
    }
    async fn requeue_dead_letters(&self, queue: &str, limit: usize) -> Result<u64, BrokerError> {
        self.inner.requeue_dead_letters(queue, limit).await
    }
    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        self.inner.purge(queue).await
    }
}

fn panic_text(payload: Box<dyn Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
        })
        .unwrap_or_default()
}

/// Runs `case` on a `Faulty` broker; returns the failure message, or `None` when the case passed.
fn failure<C, F>(fault: Fault, name: &str, case: C) -> Option<String>
where
    C: FnOnce(Arc<dyn Broker>, String) -> F,
    F: Future<Output = ()>,
{
    let factory = move || async move {
        Arc::new(Faulty {
            inner: MemoryBroker::new(),
            fault,
        }) as Arc<dyn Broker>
    };
    catch_unwind(AssertUnwindSafe(|| run_case(factory, name, case)))
        .err()
        .map(panic_text)
}

#[test]
fn the_kit_catches_a_broker_that_loses_dropped_deliveries() {
    let case = |broker, queue: String| async move {
        contract::dropped_delivery_is_delivered_again(broker, &queue).await
    };
    assert_eq!(failure(Fault::None, "dropped", case), None);
    let failed = failure(Fault::LosesDroppedDeliveries, "dropped", case)
        .expect("the kit let a broker that loses deliveries pass");
    assert!(failed.contains("the dropped message"), "{failed}");
}

#[test]
fn the_kit_catches_a_broker_that_silently_ignores_priorities() {
    let case = |broker, queue: String| async move {
        contract::priorities_are_honoured_or_refused(broker, &queue).await
    };
    assert_eq!(failure(Fault::None, "priorities", case), None);
    let failed = failure(Fault::IgnoresPriorities, "priorities", case)
        .expect("the kit let a broker that ignores priorities pass");
    assert!(failed.contains("BrokerError::Unsupported"), "{failed}");
}
