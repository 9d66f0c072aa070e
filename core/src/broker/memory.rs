use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Acknowledger, Broker, BrokerError, Capabilities, ConsumeOptions, DeadLetter, Delivery,
    DeliveryStream, Outgoing, PrefetchSlot, PrefetchWindow, QueueStats,
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
    /// Every queue by name. Consumers and deliveries hold their queue's cell directly, so only
    /// publishing and the admin calls look names up.
    queues: RwLock<HashMap<String, Arc<QueueCell>>>,
    /// Woken whenever a message becomes ready.
    ready: Notify,
    /// The result backend apps of this broker use unless given another.
    results: std::sync::OnceLock<crate::result::MemoryResultBackend>,
    /// The coordination store apps of this broker use unless given another.
    coordination: crate::coordination::MemoryCoordination,
    /// Where this broker's workers publish events.
    events: crate::events::MemoryEventBus,
}

/// One queue: its messages behind a lock, and the unacked count outside it (an ack is one atomic
/// decrement, no lock).
struct QueueCell {
    name: Arc<str>,
    state: Mutex<Queue>,
    unacked: AtomicU64,
}

impl QueueCell {
    fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            state: Mutex::new(Queue::default()),
            unacked: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave a queue half-updated (every update is a single
        // push or pop), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Default)]
struct Queue {
    ready: [VecDeque<Message>; PRIORITY_LEVELS],
    ready_len: usize,
    delayed: BinaryHeap<Reverse<Delayed>>,
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
    fn promote_due(&mut self) -> bool {
        if self.delayed.is_empty() {
            return false;
        }
        let now = Instant::now();
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

    /// The in-memory result backend that goes with this broker: an app built on the broker uses it
    /// unless given another, so every app sharing the broker shares results too.
    pub fn result_backend(&self) -> crate::result::MemoryResultBackend {
        self.inner.results.get_or_init(Default::default).clone()
    }

    /// The in-memory coordination store that goes with this broker (unique tasks' claims): an app
    /// built on the broker uses it unless given another.
    pub fn coordination(&self) -> crate::coordination::MemoryCoordination {
        self.inner.coordination.clone()
    }
}

impl Inner {
    fn find(&self, name: &str) -> Option<Arc<QueueCell>> {
        let queues = self
            .queues
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queues.get(name).cloned()
    }

    /// The queue named `name`, created empty if needed.
    fn queue(&self, name: &str) -> Arc<QueueCell> {
        if let Some(cell) = self.find(name) {
            return cell;
        }
        let mut queues = self
            .queues
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        queues
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(QueueCell::new(name)))
            .clone()
    }

    /// Takes the next ready message from one of `queues`, starting at `start` for fairness; otherwise
    /// reports the earliest time a delayed message becomes due.
    fn try_take(
        queues: &[Arc<QueueCell>],
        start: usize,
    ) -> Result<(usize, Message), Option<Instant>> {
        let mut next_due: Option<Instant> = None;
        for offset in 0..queues.len() {
            let index = (start + offset) % queues.len();
            let cell = &queues[index];
            let mut queue = cell.lock();
            queue.promote_due();
            if let Some(message) = queue.pop_ready() {
                cell.unacked.fetch_add(1, Ordering::Relaxed);
                return Ok((index, message));
            }
            if let Some(due) = queue.next_due() {
                next_due = Some(next_due.map_or(due, |current| current.min(due)));
            }
        }
        Err(next_due)
    }
}

enum Settlement {
    Ack,
    Requeue,
    DeadLetter(String),
}

struct MemoryAcker {
    inner: Arc<Inner>,
    cell: Arc<QueueCell>,
    message: Option<Message>,
    _slot: PrefetchSlot,
}

impl MemoryAcker {
    fn settle(&mut self, outcome: Settlement) {
        let Some(message) = self.message.take() else {
            return;
        };
        self.cell.unacked.fetch_sub(1, Ordering::Relaxed);
        match outcome {
            Settlement::Ack => drop(message),
            Settlement::Requeue => {
                let redelivered = Message {
                    redelivered: true,
                    ..message
                };
                self.cell.lock().push_ready(redelivered, true);
                self.inner.ready.notify_waiters();
            }
            Settlement::DeadLetter(reason) => {
                let dead = DeadLetter::new(&*self.cell.name, message.payload, reason, clock::now());
                self.cell.lock().dead.push_back(dead);
            }
        }
    }
}

impl fmt::Debug for MemoryAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAcker")
            .field("queue", &self.cell.name)
            .finish_non_exhaustive()
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // Dropped unsettled: the at-least-once contract says it is delivered again.
        self.settle(Settlement::Requeue);
    }
}

#[async_trait]
impl Acknowledger for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.settle(Settlement::Ack);
        Ok(())
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.settle(Settlement::Requeue);
        Ok(())
    }

    async fn dead_letter(
        mut self: Box<Self>,
        _payload: Bytes,
        reason: String,
    ) -> Result<(), BrokerError> {
        self.settle(Settlement::DeadLetter(reason));
        Ok(())
    }
}

struct Consumer {
    inner: Arc<Inner>,
    queues: Vec<Arc<QueueCell>>,
    window: Arc<PrefetchWindow>,
    turn: usize,
}

impl Consumer {
    async fn next_delivery(&mut self) -> Delivery {
        let slot = self.window.acquire().await;
        loop {
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match Inner::try_take(&self.queues, self.turn) {
                Ok((index, message)) => {
                    self.turn = index + 1;
                    let cell = self.queues[index].clone();
                    let payload = message.payload.clone();
                    let redelivered = message.redelivered;
                    let queue = cell.name.clone();
                    let acker = MemoryAcker {
                        inner: self.inner.clone(),
                        cell,
                        message: Some(message),
                        _slot: slot,
                    };
                    return Delivery::new(payload, queue, redelivered, Box::new(acker));
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

    async fn event_bus(&self) -> Result<Option<Arc<dyn crate::events::EventBus>>, BrokerError> {
        Ok(Some(Arc::new(self.inner.events.clone())))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .priorities(PRIORITY_LEVELS as u8 - 1)
            .delays(None)
            .dead_letters()
            .stats()
            .fifo()
    }

    async fn publish(&self, message: Outgoing) -> Result<(), BrokerError> {
        self.publish_batch(vec![message]).await
    }

    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
        let now = Instant::now();
        let mut any = false;
        let mut cell: Option<Arc<QueueCell>> = None;
        for outgoing in messages {
            let cell = match &cell {
                Some(current) if *current.name == *outgoing.queue => current,
                _ => cell.insert(self.inner.queue(&outgoing.queue)),
            };
            let message = Message {
                payload: outgoing.payload,
                priority: usize::from(outgoing.priority.unwrap_or(0)).min(PRIORITY_LEVELS - 1),
                redelivered: false,
            };
            let mut queue = cell.lock();
            match outgoing.not_before.map(clock::instant_at) {
                Some(at) if at > now => {
                    let seq = queue.next_seq;
                    queue.next_seq += 1;
                    // A waiting consumer may need to wake earlier than it planned.
                    queue.delayed.push(Reverse(Delayed { at, seq, message }));
                }
                _ => queue.push_ready(message, false),
            }
            any = true;
        }
        if any {
            self.inner.ready.notify_waiters();
        }
        Ok(())
    }

    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        let consumer = Consumer {
            inner: self.inner.clone(),
            queues: queues.iter().map(|queue| self.inner.queue(queue)).collect(),
            window: PrefetchWindow::new(options.prefetch_count()),
            turn: 0,
        };
        let stream = futures::stream::unfold(consumer, |mut consumer| async move {
            let delivery = consumer.next_delivery().await;
            Some((Ok(delivery), consumer))
        });
        Ok(Box::pin(stream))
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let Some(cell) = self.inner.find(queue) else {
            return Ok(QueueStats::default());
        };
        let (stats, promoted) = {
            let mut queue = cell.lock();
            let promoted = queue.promote_due();
            let mut stats = QueueStats::default();
            stats.ready = queue.ready_len as u64;
            stats.delayed = queue.delayed.len() as u64;
            stats.unacked = cell.unacked.load(Ordering::Relaxed);
            stats.dead_lettered = queue.dead.len() as u64;
            (stats, promoted)
        };
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
        Ok(self
            .inner
            .find(queue)
            .map(|cell| cell.lock().dead.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn requeue_dead_letters(&self, queue: &str, limit: usize) -> Result<u64, BrokerError> {
        let Some(cell) = self.inner.find(queue) else {
            return Ok(0);
        };
        let moved = {
            let mut queue = cell.lock();
            let mut moved = 0;
            while moved < limit
                && let Some(dead) = queue.dead.pop_front()
            {
                let message = Message {
                    payload: dead.payload,
                    priority: 0,
                    redelivered: false,
                };
                queue.push_ready(message, false);
                moved += 1;
            }
            moved
        };
        if moved > 0 {
            self.inner.ready.notify_waiters();
        }
        Ok(moved as u64)
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        let Some(cell) = self.inner.find(queue) else {
            return Ok(0);
        };
        let mut queue = cell.lock();
        let purged = queue.ready_len + queue.delayed.len();
        queue.ready.iter_mut().for_each(VecDeque::clear);
        queue.ready_len = 0;
        queue.delayed.clear();
        Ok(purged as u64)
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        let Some(cell) = self.inner.find(queue) else {
            return Ok(0);
        };
        let mut queue = cell.lock();
        let purged = queue.dead.len();
        queue.dead.clear();
        Ok(purged as u64)
    }
}

impl fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queues = self.inner.queues.read().map_or(0, |queues| queues.len());
        f.debug_struct("MemoryBroker")
            .field("queues", &queues)
            .finish()
    }
}
