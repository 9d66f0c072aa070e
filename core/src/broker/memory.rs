use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{
    Acknowledger, Broker, BrokerError, ConsumeOptions, DeadLetter, Delivery, DeliveryStream,
    Outgoing, QueueStats, validate_queue, validate_queues,
};
use crate::clock;

const PRIORITY_LEVELS: usize = 10;

/// The embedded broker: the whole [`Broker`] contract in process, with no server.
///
/// It is the default for development, demos and tests: delayed delivery, priorities, prefetch,
/// redelivery of every delivery dropped unsettled, and a dead-letter queue per queue. Clones share
/// the same queues. Messages live in memory only: they do not survive the process.
///
/// Delays follow tokio's clock, so tests with `tokio::time::pause()` control them exactly.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use celeriac::broker::{Broker, MemoryBroker, Outgoing};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::BrokerError> {
/// let broker = MemoryBroker::new();
/// broker.publish(Outgoing::new("celery", b"now".to_vec())).await?;
/// let later = SystemTime::now() + Duration::from_secs(60);
/// broker.publish(Outgoing::new("celery", b"later".to_vec()).not_before(later)).await?;
/// let stats = broker.stats("celery").await?;
/// assert_eq!((stats.ready, stats.delayed), (1, 1));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    queues: Mutex<HashMap<String, Queue>>,
    /// Woken whenever a message becomes ready.
    ready: Notify,
}

#[derive(Default)]
struct Queue {
    ready: [VecDeque<Message>; PRIORITY_LEVELS],
    ready_len: usize,
    delayed: BinaryHeap<Reverse<Delayed>>,
    unacked: u64,
    dead: VecDeque<DeadLetter>,
    next_seq: u64,
}

struct Message {
    payload: Bytes,
    priority: usize,
    redelivered: bool,
}

struct Delayed {
    at: Instant,
    seq: u64,
    message: Message,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Queue {
    fn push_ready(&mut self, message: Message, front: bool) {
        let level = &mut self.ready[message.priority];
        if front {
            level.push_front(message);
        } else {
            level.push_back(message);
        }
        self.ready_len += 1;
    }

    /// Moves every delayed message whose time has come to the ready queue.
    fn promote_due(&mut self, now: Instant) -> bool {
        let mut promoted = false;
        while self.delayed.peek().is_some_and(|Reverse(d)| d.at <= now) {
            if let Some(Reverse(delayed)) = self.delayed.pop() {
                self.push_ready(delayed.message, false);
                promoted = true;
            }
        }
        promoted
    }

    fn pop_ready(&mut self) -> Option<Message> {
        let message = self.ready.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.ready_len -= 1;
        self.unacked += 1;
        Some(message)
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.peek().map(|Reverse(d)| d.at)
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        // A panic while holding this lock cannot leave a queue half-updated (every update is a single
        // push or pop), so a poisoned lock is safe to keep using.
        self.queues
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the next ready message from one of `queues`, starting at `start` for fairness; otherwise
    /// reports the earliest time a delayed message becomes due.
    fn try_take(
        &self,
        queues: &[Arc<str>],
        start: usize,
    ) -> Result<(usize, Message), Option<Instant>> {
        let now = Instant::now();
        let mut map = self.lock();
        let mut next_due: Option<Instant> = None;
        for offset in 0..queues.len() {
            let index = (start + offset) % queues.len();
            let Some(queue) = map.get_mut(&*queues[index]) else {
                continue;
            };
            queue.promote_due(now);
            if let Some(message) = queue.pop_ready() {
                return Ok((index, message));
            }
            if let Some(due) = queue.next_due() {
                next_due = Some(next_due.map_or(due, |current| current.min(due)));
            }
        }
        Err(next_due)
    }

    fn settle(&self, queue: &str, message: Message, outcome: Settlement) {
        let mut map = self.lock();
        if !map.contains_key(queue) {
            map.insert(queue.to_owned(), Queue::default());
        }
        let Some(entry) = map.get_mut(queue) else {
            return;
        };
        entry.unacked = entry.unacked.saturating_sub(1);
        match outcome {
            Settlement::Ack => {}
            Settlement::Requeue => {
                entry.push_ready(
                    Message {
                        redelivered: true,
                        ..message
                    },
                    true,
                );
                drop(map);
                self.ready.notify_waiters();
            }
            Settlement::DeadLetter(reason) => {
                entry.dead.push_back(DeadLetter::new(
                    queue,
                    message.payload,
                    reason,
                    clock::now(),
                ));
            }
        }
    }
}

enum Settlement {
    Ack,
    Requeue,
    DeadLetter(String),
}

struct MemoryAcker {
    inner: Arc<Inner>,
    queue: Arc<str>,
    message: Option<Message>,
    _prefetch_slot: OwnedSemaphorePermit,
}

impl MemoryAcker {
    fn settle(mut self, outcome: Settlement) {
        if let Some(message) = self.message.take() {
            self.inner.settle(&self.queue, message, outcome);
        }
    }
}

impl fmt::Debug for MemoryAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAcker")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // Dropped unsettled: the at-least-once contract says it is delivered again.
        if let Some(message) = self.message.take() {
            self.inner.settle(&self.queue, message, Settlement::Requeue);
        }
    }
}

#[async_trait]
impl Acknowledger for MemoryAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        (*self).settle(Settlement::Ack);
        Ok(())
    }

    async fn requeue(self: Box<Self>) -> Result<(), BrokerError> {
        (*self).settle(Settlement::Requeue);
        Ok(())
    }

    async fn dead_letter(
        self: Box<Self>,
        _payload: Bytes,
        reason: String,
    ) -> Result<(), BrokerError> {
        (*self).settle(Settlement::DeadLetter(reason));
        Ok(())
    }
}

struct Consumer {
    inner: Arc<Inner>,
    queues: Vec<Arc<str>>,
    prefetch: Arc<Semaphore>,
    turn: usize,
}

impl Consumer {
    async fn next_delivery(&mut self) -> Option<Delivery> {
        // The semaphore is never closed, so acquiring only fails if it were; end the stream then.
        let slot = self.prefetch.clone().acquire_owned().await.ok()?;
        loop {
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.inner.try_take(&self.queues, self.turn) {
                Ok((index, message)) => {
                    self.turn = index + 1;
                    let queue = self.queues[index].clone();
                    let payload = message.payload.clone();
                    let redelivered = message.redelivered;
                    let acker = MemoryAcker {
                        inner: self.inner.clone(),
                        queue: queue.clone(),
                        message: Some(message),
                        _prefetch_slot: slot,
                    };
                    return Some(Delivery::new(payload, queue, redelivered, Box::new(acker)));
                }
                Err(Some(due)) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
                Err(None) => notified.await,
            }
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn system(&self) -> &'static str {
        "memory"
    }

    fn redacted_url(&self) -> String {
        "memory://".to_owned()
    }

    async fn publish(&self, message: Outgoing) -> Result<(), BrokerError> {
        self.publish_batch(vec![message]).await
    }

    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
        for message in &messages {
            validate_queue(&message.queue)?;
        }
        let now = Instant::now();
        let mut any_ready = false;
        {
            let mut map = self.inner.lock();
            for outgoing in messages {
                let queue = map.entry(outgoing.queue).or_default();
                let message = Message {
                    payload: outgoing.payload,
                    priority: usize::from(outgoing.priority.unwrap_or(0)).min(PRIORITY_LEVELS - 1),
                    redelivered: false,
                };
                let at = outgoing.not_before.map(clock::instant_at);
                match at {
                    Some(at) if at > now => {
                        let seq = queue.next_seq;
                        queue.next_seq += 1;
                        queue.delayed.push(Reverse(Delayed { at, seq, message }));
                        // A waiting consumer may need to wake earlier than it planned.
                        any_ready = true;
                    }
                    _ => {
                        queue.push_ready(message, false);
                        any_ready = true;
                    }
                }
            }
        }
        if any_ready {
            self.inner.ready.notify_waiters();
        }
        Ok(())
    }

    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        validate_queues(queues)?;
        let consumer = Consumer {
            inner: self.inner.clone(),
            queues: queues
                .iter()
                .map(|queue| Arc::from(queue.as_str()))
                .collect(),
            prefetch: Arc::new(Semaphore::new(options.prefetch_count())),
            turn: 0,
        };
        let stream = futures::stream::unfold(consumer, |mut consumer| async move {
            let delivery = consumer.next_delivery().await?;
            Some((Ok(delivery), consumer))
        });
        Ok(Box::pin(stream))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let now = Instant::now();
        let mut map = self.inner.lock();
        let Some(queue) = map.get_mut(queue) else {
            return Ok(QueueStats::default());
        };
        let promoted = queue.promote_due(now);
        let stats = QueueStats {
            ready: queue.ready_len as u64,
            delayed: queue.delayed.len() as u64,
            unacked: queue.unacked,
            dead_lettered: queue.dead.len() as u64,
        };
        drop(map);
        if promoted {
            self.inner.ready.notify_waiters();
        }
        Ok(stats)
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        let map = self.inner.lock();
        Ok(map
            .get(queue)
            .map(|q| q.dead.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let mut map = self.inner.lock();
        let Some(queue) = map.get_mut(queue) else {
            return Ok(0);
        };
        let purged = queue.ready_len + queue.delayed.len();
        queue.ready.iter_mut().for_each(VecDeque::clear);
        queue.ready_len = 0;
        queue.delayed.clear();
        Ok(purged as u64)
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queues = self.inner.lock().len();
        f.debug_struct("MemoryBroker")
            .field("queues", &queues)
            .finish()
    }
}
