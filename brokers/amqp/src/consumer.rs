//! Consuming: one channel per consumer with `basic.qos` prefetch and manual acks; redelivered
//! messages are counted and poison messages dead-lettered; each delivery's single-use acknowledger.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use celeriac_core::Report;
use celeriac_core::{Acknowledger, BrokerError, ConsumeOptions, Delivery, DeliveryStream};
use futures::StreamExt;
use futures::stream::{BoxStream, SelectAll};
use lapin::Channel;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};

use crate::QueueType;
use crate::acks::AckWindow;
use crate::error::{bounded, from_lapin};
use crate::frames::REFUSED_HEADERS_HEADER;
use crate::link::{DELIVERIES_HEADER, Shared, int_header, text_header};
use crate::topology;

type Incoming = BoxStream<'static, (Arc<str>, Result<lapin::message::Delivery, lapin::Error>)>;

/// How long a delivery the consumer could not settle waits before it is requeued.
const GIVE_BACK_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// Attempts at starting a consumer when its connection is lost meanwhile.
const START_ATTEMPTS: u32 = 3;

pub(crate) async fn start(
    shared: Arc<Shared>,
    queues: &[String],
    options: ConsumeOptions,
) -> Result<DeliveryStream, BrokerError> {
    let mut attempt = 1;
    loop {
        match start_once(shared.clone(), queues, options).await {
            // The connection closed under the new channel (RabbitMQ closes it on a hard protocol
            // error, such as a method on a channel it has not finished opening): a fresh link and
            // channel, a few times, before the caller sees it.
            Err(error) if error.is_transient() && attempt < START_ATTEMPTS => {
                tracing::debug!(error = %celeriac_core::Report(&error), attempt, "cannot start consuming; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)))
                    .await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

async fn start_once(
    shared: Arc<Shared>,
    queues: &[String],
    options: ConsumeOptions,
) -> Result<DeliveryStream, BrokerError> {
    let link = shared.link().await?;
    let timeout = shared.timeout();
    let channel = bounded("open channel", timeout, link.connection.create_channel()).await?;
    let mut unstarted = CloseUnlessStarted(Some(channel.clone()));
    // One consumer per queue and shard, all handing out deliveries named after their celeriac queue.
    let mut sources = Vec::new();
    for queue in queues {
        shared.declare(&link, &channel, queue).await?;
        let name: Arc<str> = Arc::from(queue.as_str());
        sources.extend(
            topology::shards(queue, shared.settings.shards).map(|shard| (shard, name.clone())),
        );
    }
    let limits = prefetch_limits(
        options.prefetch_count(),
        sources.len(),
        shared.settings.queue_type == QueueType::Quorum,
    );
    let mut incoming: SelectAll<Incoming> = SelectAll::new();
    let mut tags = Vec::with_capacity(sources.len());
    for ((source, name), limit) in sources.into_iter().zip(limits) {
        let (prefetch, global) = limit;
        bounded(
            "set prefetch",
            timeout,
            channel.basic_qos(prefetch, BasicQosOptions { global }),
        )
        .await?;
        let consumer = bounded(
            "consume",
            timeout,
            channel.basic_consume(
                source.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        tags.push(consumer.tag());
        incoming.push(
            consumer
                .map(move |delivery| (name.clone(), delivery))
                .boxed(),
        );
    }
    unstarted.0 = None;
    let consumer = Consumer {
        shared,
        incoming,
        acks: AckWindow::start(channel.clone(), options.prefetch_count()),
        _cancel: CancelOnDrop { channel, tags },
        failed: false,
    };
    let stream = futures::stream::unfold(consumer, |mut consumer| async move {
        let next = consumer.next().await?;
        Some((next, consumer))
    });
    Ok(Box::pin(stream))
}

/// The `basic.qos` of each of `consumers` consumers on one channel, so that together they hold at
/// most `prefetch` unsettled deliveries. Per-consumer limits (RabbitMQ's cheaper, default kind; a
/// channel-wide limit costs the broker noticeably more per message) split the window exactly; only
/// when it is smaller than the number of consumers (a per-consumer 0 would mean unlimited) is the
/// limit channel-wide.
fn prefetch_limits(prefetch: usize, consumers: usize, quorum: bool) -> Vec<(u16, bool)> {
    let consumers = consumers.max(1);
    let prefetch = prefetch.clamp(1, usize::from(u16::MAX));
    // Quorum queues refuse a channel-wide (global) prefetch: each consumer takes at least one.
    if prefetch < consumers && !quorum {
        let global = u16::try_from(prefetch).unwrap_or(u16::MAX);
        return vec![(global, true); consumers];
    }
    (0..consumers)
        .map(|index| {
            let share = prefetch / consumers + usize::from(index < prefetch % consumers);
            (u16::try_from(share.max(1)).unwrap_or(u16::MAX), false)
        })
        .collect()
}

/// Closes the channel of a consumer that did not start. A step that timed out here may still
/// complete at RabbitMQ — a chaos run saw `basic.consume` on a quorum queue still recovering after
/// a restart answer late — and a consumer left on an open channel nobody reads holds its prefetch
/// of messages unacknowledged for as long as the connection lives (128 tasks stranded so).
/// Closing the channel cancels it and returns its messages to the queue.
struct CloseUnlessStarted(Option<Channel>);

impl Drop for CloseUnlessStarted {
    fn drop(&mut self) {
        let Some(channel) = self.0.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.close(200, "consumer not started".into()).await;
            });
        }
    }
}

/// Cancels the channel's consumers when the stream is dropped: no more deliveries arrive, while the
/// deliveries already handed out can still be acked on the channel. The channel itself closes when
/// the last of them is settled (see [`AckWindow`]); RabbitMQ then redelivers whatever was fetched but
/// never handed out.
struct CancelOnDrop {
    channel: Channel,
    tags: Vec<ShortString>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let channel = self.channel.clone();
        let tags = std::mem::take(&mut self.tags);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for tag in tags {
                    let _ = channel
                        .basic_cancel(tag, BasicCancelOptions::default())
                        .await;
                }
            });
        }
    }
}

struct Consumer {
    shared: Arc<Shared>,
    incoming: SelectAll<Incoming>,
    acks: AckWindow,
    _cancel: CancelOnDrop,
    failed: bool,
}

impl Consumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        if self.failed {
            return None;
        }
        loop {
            let (queue, delivery) = self.incoming.next().await?;
            let delivery = match delivery {
                Ok(delivery) => delivery,
                Err(error) => {
                    // Followed by the end of the stream: the worker consumes again (reconnecting).
                    self.failed = true;
                    return Some(Err(from_lapin("consume", error)));
                }
            };
            let headers = delivery.properties.headers().as_ref();
            let tag = delivery.delivery_tag;
            if let Some(reason) = text_header(headers, REFUSED_HEADERS_HEADER) {
                let (shared, acks) = (self.shared.clone(), self.acks.clone());
                settle_whole(&self.shared, async move {
                    if let Err(error) = refuse(&shared, &acks, &queue, delivery, reason).await {
                        tracing::warn!(error = %Report(&error), queue = %queue, "cannot dead-letter a message with refused headers; it will come back");
                        give_back(&acks, tag).await;
                    }
                })
                .await;
                continue;
            }
            // Quorum queues count returns too (`x-delivery-count`), but a returned message goes
            // back to the head of the queue: after a broker restart, consumers that connect and
            // are cut off again before they run anything bounce the same messages, and that count
            // reached the limit for messages no task ever ran. A copy counted here goes to the
            // tail instead, on either queue type.
            if delivery.redelivered {
                let (shared, acks) = (self.shared.clone(), self.acks.clone());
                settle_whole(&self.shared, async move {
                    if let Err(error) = recount(&shared, &acks, &queue, delivery).await {
                        tracing::warn!(error = %Report(&error), queue = %queue, "cannot count a redelivery; it will come back");
                        give_back(&acks, tag).await;
                    }
                })
                .await;
                continue;
            }
            self.shared.add_unacked(&queue, 1);
            let celery = if self.shared.settings.celery_format {
                crate::celery::from_amqp(&delivery, &queue)
            } else {
                None
            };
            let payload = Bytes::from(celery.unwrap_or(delivery.data));
            let acker = AmqpAcker {
                shared: self.shared.clone(),
                queue: queue.clone(),
                acks: self.acks.clone(),
                tag: Some(delivery.delivery_tag),
            };
            let redelivered =
                int_header(delivery.properties.headers().as_ref(), DELIVERIES_HEADER).is_some();
            return Some(Ok(Delivery::new(
                payload,
                queue,
                redelivered,
                Box::new(acker),
            )));
        }
    }
}

/// Runs the consumer's own settlement of a delivery (its copy or dead letter published, then the
/// original acked) to its end, on a task of its own: a worker that stops fetching drops the stream
/// wherever it is, and a copy published without its original's ack left the original to come back
/// when the channel closed — a second dead letter, or a second copy. The task holds the channel's
/// [`AckWindow`], so the channel stays open until the ack is sent, and the stopping worker waits
/// for it (`consumers_stopped`).
async fn settle_whole(shared: &Shared, settlement: impl Future<Output = ()> + Send + 'static) {
    if let Err(error) = shared.settlements.spawn(settlement).await {
        tracing::error!(%error, "a delivery's settlement did not finish; it will come back");
    }
}

/// Why a message delivered `deliveries` times without an ack is dead-lettered.
fn poison_reason(deliveries: i64) -> String {
    format!("poison message: delivered {deliveries} times without being acknowledged")
}

/// A redelivered message was delivered before and not acknowledged (its worker died, dropped it,
/// or shut down). Count that in a header — republishing a copy and acking the
/// original — and dead-letter it once it reached the delivery limit, so a message that kills
/// every worker does not cycle forever.
async fn recount(
    shared: &Shared,
    acks: &AckWindow,
    queue: &str,
    delivery: lapin::message::Delivery,
) -> Result<(), BrokerError> {
    let headers = delivery.properties.headers().as_ref();
    let previous = int_header(headers, DELIVERIES_HEADER).unwrap_or(0);
    let deliveries = u32::try_from(previous.saturating_add(1)).unwrap_or(u32::MAX);
    let max = shared.settings.max_deliveries;
    if deliveries >= max {
        let reason = poison_reason(i64::from(deliveries));
        tracing::warn!(queue, %reason, "dead-lettering message");
        shared
            .publish_dead_letter(queue, &delivery.data, &reason)
            .await?;
    } else {
        shared
            .publish_recounted(
                queue,
                &delivery.data,
                deliveries,
                delivery.properties.clone(),
            )
            .await?;
    }
    acks.ack_now(delivery.delivery_tag).await
}

/// Requeues a delivery the consumer could not settle itself (its recounted copy or dead letter was
/// not published), after a pause so that a broker refusing publishes is not asked again at once.
/// Left unsettled, it would stay on its channel, unacked, holding a prefetch slot until the
/// channel closed.
async fn give_back(acks: &AckWindow, tag: u64) {
    tokio::time::sleep(GIVE_BACK_AFTER).await;
    if let Err(error) = acks.requeue(tag).await {
        tracing::warn!(error = %Report(&error), "cannot requeue a delivery; it comes back when its channel closes");
    }
}

/// Dead-letters a message whose headers the connection refused (see [`crate::frames`]): it never
/// reaches a worker, whose task could not trust it anyway.
async fn refuse(
    shared: &Shared,
    acks: &AckWindow,
    queue: &str,
    delivery: lapin::message::Delivery,
    reason: String,
) -> Result<(), BrokerError> {
    tracing::warn!(queue, %reason, "dead-lettering message");
    shared
        .publish_dead_letter(queue, &delivery.data, &reason)
        .await?;
    acks.ack_now(delivery.delivery_tag).await
}

/// Settles one AMQP delivery through its channel's [`AckWindow`]. Dropped unsettled, it nacks with
/// requeue (and the channel closing would requeue it anyway).
struct AmqpAcker {
    shared: Arc<Shared>,
    queue: Arc<str>,
    acks: AckWindow,
    tag: Option<u64>,
}

impl AmqpAcker {
    fn take(&mut self) -> Option<u64> {
        let tag = self.tag.take();
        if tag.is_some() {
            self.shared.add_unacked(&self.queue, -1);
        }
        tag
    }
}

#[async_trait]
impl Acknowledger for AmqpAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        let Some(tag) = self.take() else {
            return Ok(());
        };
        self.acks.ack(tag).await
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), BrokerError> {
        let Some(tag) = self.take() else {
            return Ok(());
        };
        self.acks.requeue(tag).await
    }

    async fn dead_letter(
        mut self: Box<Self>,
        payload: Bytes,
        reason: String,
    ) -> Result<(), BrokerError> {
        let Some(tag) = self.take() else {
            return Ok(());
        };
        match self
            .shared
            .publish_dead_letter(&self.queue, &payload, &reason)
            .await
        {
            Ok(()) => self.acks.ack(tag).await,
            Err(error) => {
                let _ = self.acks.requeue(tag).await;
                Err(error)
            }
        }
    }
}

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        if let Some(tag) = self.take() {
            self.acks.requeue_later(tag);
        }
    }
}

impl fmt::Debug for AmqpAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpAcker")
            .field("queue", &self.queue)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::prefetch_limits;

    #[test]
    fn prefetch_is_split_exactly_among_consumers() {
        assert_eq!(prefetch_limits(256, 1, false), [(256, false)]);
        assert_eq!(
            prefetch_limits(10, 4, false),
            [(3, false), (3, false), (2, false), (2, false)]
        );
        let total: usize = prefetch_limits(1_000, 7, false)
            .iter()
            .map(|(share, _)| usize::from(*share))
            .sum();
        assert_eq!(total, 1_000);
    }

    #[test]
    fn a_window_smaller_than_the_consumers_is_channel_wide() {
        assert_eq!(prefetch_limits(2, 3, false), [(2, true); 3]);
        // Except on quorum queues, which refuse it: one each.
        assert_eq!(prefetch_limits(2, 3, true), [(1, false); 3]);
    }
}
