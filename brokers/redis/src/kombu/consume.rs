//! Consuming from kombu's lists: a message is taken and recorded in `unacked` in one script, held
//! messages renew their delivery time so that no restore sweep (ours or a Python worker's) takes
//! them, and a dropped delivery goes back at once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use celeriac_core::{
    Acknowledger, BrokerError, ConsumeOptions, Delivery, DeliveryStream, PrefetchSlot,
    PrefetchWindow, Report,
};
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::envelope;
use super::layout::{dead_record, epoch_seconds, from_list_item, to_list_item};
use super::{End, KombuInner, SCRIPTS};
use crate::error::bounded;

/// How long one `BRPOP` blocks: how late a consumer notices that its stream was dropped.
const BLOCK: Duration = Duration::from_secs(1);

/// The most messages one `take.lua` call takes (each needs a free prefetch slot).
const TAKE_BATCH: usize = 128;

/// Base64 and kombu's envelope around a message: the list limit is this much above the consumer's.
fn list_limit(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_add(max_message_bytes / 3 + 3)
        .saturating_add(16 * 1024)
}

/// One consumer's queues and the deliveries it holds.
pub(super) struct Consumer {
    broker: Arc<KombuInner>,
    queues: Vec<Queue>,
    /// `BRPOP`'s keys and `take.lua`'s, one set per rotation, so that no queue starves the others.
    rotations: Vec<Rotation>,
    /// Delivery tags held unsettled, whose delivery time is renewed.
    held: Mutex<HeldTags>,
    window: Arc<PrefetchWindow>,
    list_limit: usize,
}

/// Delivery tags; hashed with foldhash (tags are not attacker-chosen keys: `take.lua` makes them
/// from a prefix of ours).
type HeldTags = HashSet<String, foldhash::fast::RandomState>;

struct Queue {
    name: Arc<str>,
    dead: String,
}

struct Rotation {
    /// `unacked`, `unacked_index`, then (list, dead-letter list) pairs.
    take_keys: Vec<String>,
    /// The queue each pair belongs to.
    pair_queue: Vec<usize>,
    /// `take.lua`'s trailing arguments: each pair's queue name as a JSON string (the routing key
    /// its `unacked` entry restores to).
    pair_routing: Vec<String>,
    /// The lists, as `BRPOP` is given them, and the pair each is.
    list_pair: HashMap<String, usize>,
    lists: Vec<String>,
}

/// What one `take.lua` call took: the messages to deliver, and how many it took in all (those
/// that were not kombu envelopes are dead-lettered, not delivered).
struct TakeOutcome {
    taken: Vec<Taken>,
    took: usize,
}

/// A message taken off a list and recorded.
struct Taken {
    item: Bytes,
    queue: usize,
    tag: String,
    redelivered: bool,
}

pub(super) async fn consume(
    broker: Arc<KombuInner>,
    queues: &[String],
    options: ConsumeOptions,
) -> Result<DeliveryStream, BrokerError> {
    let layout = &broker.layout;
    let queue_list: Vec<Queue> = queues
        .iter()
        .map(|name| Queue {
            name: Arc::from(name.as_str()),
            dead: layout.dead(name),
        })
        .collect();
    let rotations = (0..queues.len())
        .map(|first| {
            let mut rotation = Rotation {
                take_keys: vec![layout.unacked.clone(), layout.unacked_index.clone()],
                pair_queue: Vec::new(),
                pair_routing: Vec::new(),
                list_pair: HashMap::new(),
                lists: Vec::new(),
            };
            for offset in 0..queues.len() {
                let queue = (first + offset) % queues.len();
                for list in layout.lists(&queues[queue]) {
                    rotation.take_keys.push(list.clone());
                    rotation.take_keys.push(queue_list[queue].dead.clone());
                    rotation.pair_queue.push(queue);
                    rotation
                        .pair_routing
                        .push(serde_json::Value::from(queues[queue].as_str()).to_string());
                    rotation
                        .list_pair
                        .insert(list.clone(), rotation.pair_queue.len());
                    rotation.lists.push(list);
                }
            }
            rotation
        })
        .collect();
    let blocking = broker.blocking_connection().await?;
    let consumer = Arc::new(Consumer {
        broker: broker.clone(),
        queues: queue_list,
        rotations,
        held: Mutex::default(),
        window: PrefetchWindow::new(options.prefetch_count()),
        list_limit: list_limit(options.max_message_len()),
    });
    broker.start_sweeping();
    tokio::spawn(renew_held(Arc::downgrade(&consumer)));
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(fetch(consumer, blocking, sender));
    Ok(Box::pin(futures::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    )))
}

type Sender = mpsc::UnboundedSender<Result<Delivery, BrokerError>>;

/// Takes messages while the stream is wanted and prefetch slots are free.
async fn fetch(consumer: Arc<Consumer>, mut blocking: MultiplexedConnection, sender: Sender) {
    let mut rotation = 0;
    // A message popped by BRPOP but not yet recorded (the record failed): recorded first.
    let mut popped: Option<(usize, Bytes)> = None;
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            slot = consumer.window.acquire() => slot,
            () = sender.closed() => break,
        };
        let mut slots = vec![first];
        while slots.len() < TAKE_BATCH {
            match consumer.window.try_acquire() {
                Some(slot) => slots.push(slot),
                None => break,
            }
        }
        loop {
            if sender.is_closed() && popped.is_none() {
                return;
            }
            rotation = (rotation + 1) % consumer.rotations.len().max(1);
            let outcome = match consumer.take(rotation, popped.as_ref(), slots.len()).await {
                Ok(TakeOutcome { took: 0, .. }) => {
                    popped = None;
                    consumer.block(rotation, &mut blocking).await.map(|got| {
                        popped = got;
                        false
                    })
                }
                Ok(TakeOutcome { taken, .. }) => {
                    popped = None;
                    failures = 0;
                    // A closed stream hands a delivery back; dropping it restores the message.
                    for (taken, slot) in taken.into_iter().zip(slots.drain(..)) {
                        let _ = sender.send(Ok(consumer.delivery(taken, slot)));
                    }
                    Ok(true)
                }
                Err(error) => Err(error),
            };
            match outcome {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let transient = error.is_transient();
                    let _ = sender.send(Err(error));
                    if !transient && popped.is_none() {
                        return;
                    }
                    let pause = Duration::from_millis(100) * failures.min(50);
                    tokio::time::sleep(pause).await;
                    if let Ok(fresh) = consumer.broker.blocking_connection().await {
                        blocking = fresh;
                    }
                }
            }
        }
    }
}

impl Consumer {
    /// Takes up to `count` messages (recording `popped`, which BRPOP took, first) with
    /// `take.lua`.
    async fn take(
        &self,
        rotation: usize,
        popped: Option<&(usize, Bytes)>,
        count: usize,
    ) -> Result<TakeOutcome, BrokerError> {
        let rotation = &self.rotations[rotation];
        let settings = &self.broker.settings;
        let mut invocation = SCRIPTS.take.prepare_invoke();
        for key in &rotation.take_keys {
            invocation.key(key);
        }
        invocation
            .arg(epoch_seconds(SystemTime::now()))
            .arg(format!("{}:", uuid::Uuid::new_v4()))
            .arg(self.list_limit);
        match popped {
            Some((pair, item)) => invocation.arg(item.as_ref()).arg(*pair),
            None => invocation.arg("").arg(0),
        };
        invocation.arg(count);
        for routing in &rotation.pair_routing {
            invocation.arg(routing);
        }
        let mut conn = self.broker.conn.clone();
        let reply: Vec<redis::Value> = bounded(
            "take messages",
            settings.operation_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        let unexpected = || BrokerError::Invalid("unexpected reply from take.lua".to_owned());
        if !reply.len().is_multiple_of(3) {
            return Err(unexpected());
        }
        let took = reply.len() / 3;
        let mut taken = Vec::with_capacity(took);
        let mut fields = reply.into_iter();
        while let (Some(item), Some(pair), Some(tag)) =
            (fields.next(), fields.next(), fields.next())
        {
            let item: Vec<u8> = redis::from_redis_value(item).map_err(|_| unexpected())?;
            let pair: usize = redis::from_redis_value(pair).map_err(|_| unexpected())?;
            let tag: String = redis::from_redis_value(tag).map_err(|_| unexpected())?;
            let queue = pair
                .checked_sub(1)
                .and_then(|pair| rotation.pair_queue.get(pair))
                .copied()
                .ok_or_else(|| BrokerError::Invalid(format!("take.lua answered pair {pair}")))?;
            match envelope::redelivered(&item) {
                Ok(redelivered) => {
                    self.held().insert(tag.clone());
                    taken.push(Taken {
                        item: Bytes::from(item),
                        queue,
                        tag,
                        redelivered,
                    });
                }
                Err(reason) => self.refuse(queue, &tag, &item, reason).await,
            }
        }
        Ok(TakeOutcome { taken, took })
    }

    /// Dead-letters a taken message that is not a kombu envelope. If that fails the message stays
    /// recorded and a restore sweep brings it back to be refused again.
    async fn refuse(&self, queue: usize, tag: &str, item: &[u8], reason: &str) {
        let queue = &self.queues[queue];
        let record = dead_record(reason, item, SystemTime::now());
        if let Err(error) = self.broker.dead_letter(tag, &queue.dead, &record).await {
            tracing::warn!(error = %Report(&error), queue = %queue.name, tag, "cannot dead-letter a message that is not a kombu envelope; a restore sweep will bring it back");
        }
    }

    /// Waits up to [`BLOCK`] for a message on any list; returns it with its pair.
    async fn block(
        &self,
        rotation: usize,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<(usize, Bytes)>, BrokerError> {
        let rotation = &self.rotations[rotation];
        let mut command = redis::cmd("BRPOP");
        command.arg(&rotation.lists).arg(BLOCK.as_secs_f64());
        let reply: Option<(String, Vec<u8>)> = bounded(
            "wait for a message",
            BLOCK + self.broker.settings.operation_timeout,
            command.query_async(conn),
        )
        .await?;
        Ok(reply.and_then(|(list, item)| {
            let pair = *rotation.list_pair.get(&list)?;
            Some((pair, Bytes::from(item)))
        }))
    }

    fn delivery(self: &Arc<Self>, taken: Taken, slot: PrefetchSlot) -> Delivery {
        let queue = &self.queues[taken.queue];
        let acker = KombuAcker {
            consumer: self.clone(),
            queue: taken.queue,
            tag: taken.tag,
            settled: false,
            slot: Some(slot),
        };
        Delivery::new(
            from_list_item(taken.item),
            queue.name.clone(),
            taken.redelivered,
            Box::new(acker),
        )
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HeldTags> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Renews the delivery time of the consumer's held messages every third of the visibility
/// timeout, until the consumer and its deliveries are gone.
async fn renew_held(consumer: Weak<Consumer>) {
    let period = match consumer.upgrade() {
        Some(consumer) => consumer.broker.settings.visibility_timeout / 3,
        None => return,
    };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        let Some(consumer) = consumer.upgrade() else {
            return;
        };
        let tags: Vec<String> = consumer.held().iter().cloned().collect();
        if tags.is_empty() {
            continue;
        }
        let mut invocation = SCRIPTS.touch.key(&consumer.broker.layout.unacked_index);
        invocation.arg(epoch_seconds(SystemTime::now()));
        for tag in &tags {
            invocation.arg(tag);
        }
        let mut conn = consumer.broker.conn.clone();
        if let Err(error) = bounded::<u64>(
            "renew held messages",
            consumer.broker.settings.operation_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await
        {
            tracing::warn!(error = %Report(&error), held = tags.len(), "cannot renew held messages; a restore sweep may deliver them again");
        }
    }
}

/// Settles one delivery of kombu's lists.
struct KombuAcker {
    consumer: Arc<Consumer>,
    queue: usize,
    tag: String,
    settled: bool,
    /// The delivery's prefetch slot: freed as the acknowledgement goes out, not once Redis has
    /// answered it (an ack waits behind the take scripts ahead of it).
    slot: Option<PrefetchSlot>,
}

impl KombuAcker {
    fn settle(&mut self) -> String {
        self.settled = true;
        self.consumer.held().remove(&self.tag);
        std::mem::take(&mut self.tag)
    }
}

#[async_trait]
impl Acknowledger for KombuAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        let tag = self.settle();
        drop(self.slot.take());
        self.consumer.broker.ack(tag).await
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), BrokerError> {
        let tag = self.settle();
        self.consumer
            .broker
            .restore(&tag, End::Tail)
            .await
            .map(drop)
    }

    async fn dead_letter(
        mut self: Box<Self>,
        payload: Bytes,
        reason: String,
    ) -> Result<(), BrokerError> {
        let tag = self.settle();
        let queue = &self.consumer.queues[self.queue];
        let (item, _) = to_list_item(&queue.name, &payload);
        let record = dead_record(&reason, &item, SystemTime::now());
        self.consumer
            .broker
            .dead_letter(&tag, &queue.dead, &record)
            .await
    }
}

impl Drop for KombuAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let tag = self.settle();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let broker = self.consumer.broker.clone();
        runtime.spawn(async move {
            if let Err(error) = broker.restore(&tag, End::Head).await {
                tracing::warn!(error = %Report(&error), tag = %tag, "cannot restore a dropped delivery; a restore sweep will");
            }
        });
    }
}

impl fmt::Debug for KombuAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KombuAcker")
            .field("queue", &self.consumer.queues[self.queue].name)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_list_limit_allows_for_base64_and_the_envelope() {
        let limit = super::list_limit(1024 * 1024);
        assert!(limit > 1024 * 1024 * 4 / 3);
        assert_eq!(super::list_limit(usize::MAX), usize::MAX);
    }
}
