//! Consuming: batched `XREADGROUP`, delayed-message promotion, lease extension and takeover, and the
//! single-use acknowledger of each delivery.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use celeriac_core::Report;
use celeriac_core::{
    Acknowledger, BrokerError, ConsumeOptions, Delivery, DeliveryStream, PrefetchSlot,
    PrefetchWindow,
};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::acks::{self, AckRequest};
use crate::bounded::Reply;
use crate::error::{bounded, from_redis, has_code};
use crate::keys::QueueKeys;
use crate::readers::{ReadGroup, Readers};
use crate::reply::stream_entries;
use crate::scripts::SCRIPTS;
use crate::server::Conn;
use crate::{Inner, epoch_millis};

/// The longest a read blocks waiting for messages.
const MAX_BLOCK: Duration = Duration::from_millis(500);
/// How often delayed messages are checked for promotion while messages flow.
const PROMOTE_EVERY: Duration = Duration::from_millis(100);
/// At most this many delayed messages are promoted per script call.
const PROMOTE_BATCH: usize = 1_000;

/// Entry ids held per queue; hashed with foldhash (ids are not attacker-chosen keys: Redis makes them).
type HeldIds = HashSet<String, foldhash::fast::RandomState>;

/// State shared by a consumer's stream, its deliveries and its lease-keeping task.
pub(crate) struct ConsumerShared {
    broker: Arc<Inner>,
    name: String,
    keys: Vec<QueueKeys>,
    /// Entries this consumer holds, per queue index: their leases are kept alive.
    held: Mutex<HashMap<usize, HeldIds>>,
    /// Set when the stream is dropped; the lease task ends once nothing is held.
    closed: AtomicBool,
    acks: mpsc::UnboundedSender<AckRequest>,
}

impl ConsumerShared {
    fn held(&self) -> MutexGuard<'_, HashMap<usize, HeldIds>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hold(&self, queue: usize, id: &str) {
        self.held().entry(queue).or_default().insert(id.to_owned());
    }

    fn release(&self, queue: usize, id: &str) {
        if let Some(ids) = self.held().get_mut(&queue) {
            ids.remove(id);
        }
    }

    async fn ensure_groups(&self, conn: &mut Conn) -> Result<(), BrokerError> {
        let timeout = self.broker.settings().operation_timeout;
        for keys in &self.keys {
            let created = tokio::time::timeout(
                timeout,
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&keys.ready)
                    .arg(&self.broker.settings().group)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async::<()>(conn),
            )
            .await
            .map_err(|_| BrokerError::Timeout {
                op: "create consumer group",
                after: timeout,
            })?;
            match created {
                Ok(()) => {}
                Err(error) if has_code(&error, "BUSYGROUP") => {}
                Err(error) => return Err(from_redis("create consumer group", error)),
            }
        }
        Ok(())
    }
}

pub(crate) async fn start(
    broker: Arc<Inner>,
    mut conn: Conn,
    keys: Vec<QueueKeys>,
    options: ConsumeOptions,
) -> Result<DeliveryStream, BrokerError> {
    let acks = acks::start(broker.clone(), keys.clone());
    let keys_len = keys.len();
    let shared = Arc::new(ConsumerShared {
        broker,
        name: format!("consumer-{}", uuid::Uuid::new_v4().simple()),
        acks,
        keys,
        held: Mutex::new(HashMap::new()),
        closed: AtomicBool::new(false),
    });
    shared.ensure_groups(&mut conn).await?;
    tokio::spawn(keep_leases(shared.clone()));
    let consumer = Consumer {
        shared: shared.clone(),
        conn,
        readers: Readers::new(keys_len),
        prefetch: PrefetchWindow::new(options.prefetch_count()),
        max_message_bytes: options.max_message_len(),
        buffer: VecDeque::new(),
        overflow: VecDeque::new(),
        next_reclaim: Instant::now(),
        next_promote: Instant::now(),
        _close: CloseOnDrop(shared),
    };
    let stream = futures::stream::unfold(consumer, |mut consumer| async move {
        let next = consumer.next().await?;
        Some((next, consumer))
    });
    Ok(Box::pin(stream))
}

struct CloseOnDrop(Arc<ConsumerShared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.broker.stopped().push(Stopped {
            name: self.0.name.clone(),
            keys: self.0.keys.clone(),
            shared: Arc::downgrade(&self.0),
        });
    }
}

/// A consumer whose stream was dropped and that is not retired yet: removed from its groups when the
/// worker says it stopped ([`Broker::consumers_stopped`](celeriac::Broker)), or by its lease task.
pub(crate) struct Stopped {
    pub(crate) name: String,
    pub(crate) keys: Vec<QueueKeys>,
    /// Its state while any delivery of it is alive.
    shared: std::sync::Weak<ConsumerShared>,
}

impl Stopped {
    /// How it may leave its groups now: giving back what it owns only if none of its deliveries
    /// is alive or unsettled (another worker on the same broker may still be running them).
    pub(crate) fn retire_mode(&self) -> Retire {
        let settled = self
            .shared
            .upgrade()
            .is_none_or(|shared| shared.held().values().all(HashSet::is_empty));
        if settled {
            Retire::GivingBack
        } else {
            Retire::IfIdle
        }
    }
}

/// How a consumer whose stream was dropped leaves its groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retire {
    /// Its deliveries may still be settling: it leaves only the groups where it owns no pending
    /// entry (what it owns is taken over when its leases lapse).
    IfIdle,
    /// Its worker stopped and every delivery it handed out is settled: what it still owns was
    /// read but never reached the worker (a read the stop cut short), and goes back to the queue
    /// at once rather than after the visibility timeout.
    GivingBack,
}

/// Removes consumer `name` from the group of each of `keys`, as `how` says.
pub(crate) async fn retire(
    broker: &Inner,
    name: &str,
    keys: &[QueueKeys],
    how: Retire,
) -> Result<(), BrokerError> {
    let settings = broker.settings();
    let mut conn = broker.conn();
    let give_back = if how == Retire::GivingBack { "1" } else { "0" };
    for keys in keys {
        let mut invocation = SCRIPTS.retire.key(&keys.ready);
        invocation.arg(&settings.group).arg(name).arg(give_back);
        let given = bounded::<u64>(
            "retire consumer",
            settings.operation_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        if how == Retire::GivingBack && given > 0 {
            tracing::debug!(queue = %keys.queue, given, "gave back entries read but never handed out");
        }
    }
    Ok(())
}

struct Consumer {
    shared: Arc<ConsumerShared>,
    /// A connection of its own for the consumer's scripts (reclaim, promote, dead letters), so a
    /// busy app connection does not delay them.
    conn: Conn,
    /// The connections blocking reads go through.
    readers: Readers,
    prefetch: Arc<PrefetchWindow>,
    /// Entries larger than this are not read: they are dead-lettered inside Redis.
    max_message_bytes: usize,
    buffer: VecDeque<Delivery>,
    /// Entries read beyond the free prefetch slots (a read of several queues asks each for at
    /// least one): held, their leases kept, and delivered first as slots free up.
    overflow: VecDeque<Unslotted>,
    next_reclaim: Instant,
    next_promote: Instant,
    _close: CloseOnDrop,
}

impl Consumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            if let Some(delivery) = self.buffer.pop_front() {
                return Some(Ok(delivery));
            }
            let first = self.prefetch.acquire().await;
            let mut slots = vec![first];
            while let Some(slot) = self.prefetch.try_acquire() {
                slots.push(slot);
            }
            match self.fetch(slots).await {
                Ok(deliveries) => self.buffer.extend(deliveries),
                Err(error) => return Some(Err(error)),
            }
        }
    }

    fn delivery(
        &self,
        queue: usize,
        id: String,
        payload: Vec<u8>,
        redelivered: bool,
        slot: PrefetchSlot,
    ) -> Delivery {
        self.shared.hold(queue, &id);
        let payload = Bytes::from(payload);
        let acker = RedisAcker {
            shared: self.shared.clone(),
            queue,
            id,
            payload: payload.clone(),
            settled: false,
            _slot: slot,
        };
        Delivery::new(
            payload,
            self.shared.keys[queue].queue.clone(),
            redelivered,
            Box::new(acker),
        )
    }

    fn slotted(&self, held: Unslotted, slot: PrefetchSlot) -> Delivery {
        self.delivery(held.queue, held.id, held.payload, held.redelivered, slot)
    }

    /// Fetches up to one delivery per slot: takeovers of lapsed leases first, then new messages.
    async fn fetch(&mut self, mut slots: Vec<PrefetchSlot>) -> Result<Vec<Delivery>, BrokerError> {
        let settings = self.shared.broker.settings().clone();
        let timeout = settings.operation_timeout;
        let now = Instant::now();
        let mut deliveries = Vec::new();
        while !slots.is_empty() {
            let Some(held) = self.overflow.pop_front() else {
                break;
            };
            let Some(slot) = slots.pop() else { break };
            deliveries.push(self.slotted(held, slot));
        }
        if slots.is_empty() {
            return Ok(deliveries);
        }

        if now >= self.next_reclaim {
            self.next_reclaim = now + settings.visibility_timeout / 2;
            for (queue, keys) in self.shared.keys.iter().enumerate() {
                if slots.is_empty() {
                    break;
                }
                let mut invocation = SCRIPTS.reclaim.key(&keys.ready);
                invocation
                    .key(&keys.dead)
                    .arg(&settings.group)
                    .arg(&self.shared.name)
                    .arg(u64::try_from(settings.visibility_timeout.as_millis()).unwrap_or(u64::MAX))
                    .arg(slots.len())
                    .arg(settings.max_deliveries)
                    .arg(epoch_millis(SystemTime::now()))
                    .arg(reap_after_ms(settings.visibility_timeout));
                let claimed: Vec<Vec<u8>> =
                    bounded("reclaim", timeout, invocation.invoke_async(&mut self.conn)).await?;
                for pair in claimed.chunks_exact(2) {
                    let Some(slot) = slots.pop() else { break };
                    let id = String::from_utf8_lossy(&pair[0]).into_owned();
                    tracing::info!(queue = %keys.queue, entry = %id, "took over a delivery whose lease lapsed");
                    deliveries.push(self.delivery(queue, id, pair[1].clone(), true, slot));
                }
            }
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
        }

        if now >= self.next_promote {
            let mut next = now + PROMOTE_EVERY;
            for keys in &self.shared.keys {
                let mut invocation = SCRIPTS.promote.key(&keys.delayed);
                invocation
                    .key(&keys.ready)
                    .arg(epoch_millis(SystemTime::now()))
                    .arg(PROMOTE_BATCH);
                let next_due: i64 = bounded(
                    "promote delayed",
                    timeout,
                    invocation.invoke_async(&mut self.conn),
                )
                .await?;
                if let Ok(due_ms) = u64::try_from(next_due) {
                    let wait = Duration::from_millis(
                        due_ms.saturating_sub(epoch_millis(SystemTime::now())),
                    );
                    next = next.min(Instant::now() + wait);
                }
            }
            self.next_promote = next;
        }

        let block = self
            .next_promote
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), MAX_BLOCK);
        let reply = match self.read(slots.len(), block).await? {
            Read::Entries(reply) => reply,
            Read::NoGroup => {
                // The server lost the group (restarted without persistence, or keys deleted).
                tracing::warn!("consumer group missing; creating it again");
                self.shared.ensure_groups(&mut self.conn).await?;
                return Ok(deliveries);
            }
        };
        for (stream, entries) in stream_entries(reply) {
            let Some(queue) = self
                .shared
                .keys
                .iter()
                .position(|keys| keys.ready.as_bytes() == stream)
            else {
                continue;
            };
            for entry in entries {
                if let Some(size) = entry.oversized {
                    self.dead_letter_unread(queue, &entry.id, size).await?;
                    continue;
                }
                // An entry not written by celeriac is handed over as empty bytes, so the worker
                // dead-letters it with a reason rather than it sitting pending forever.
                let held = Unslotted {
                    queue,
                    id: entry.id,
                    payload: entry.payload.unwrap_or_default(),
                    redelivered: entry.redelivered,
                };
                match slots.pop() {
                    Some(slot) => deliveries.push(self.slotted(held, slot)),
                    None => {
                        self.shared.hold(queue, &held.id);
                        self.overflow.push_back(held);
                    }
                }
            }
        }
        Ok(deliveries)
    }

    /// Reads up to `count` new entries, waiting up to `block` for some, on the consumer's bounded
    /// connections (see [`crate::bounded`] and [`crate::readers`]).
    async fn read(&mut self, count: usize, block: Duration) -> Result<Read, BrokerError> {
        let settings = self.shared.broker.settings();
        let streams: Vec<&str> = self
            .shared
            .keys
            .iter()
            .map(|keys| keys.ready.as_str())
            .collect();
        let read = ReadGroup {
            group: &settings.group,
            consumer: &self.shared.name,
            streams: &streams,
            max_entry_bytes: self.max_message_bytes,
            timeout: settings.operation_timeout,
            tls_roots_pem: settings.tls_roots_pem.as_deref(),
        };
        let reply = self
            .readers
            .read(self.shared.broker.server(), &read, count, block)
            .await?;
        match reply {
            Reply::Error(error) if error.starts_with("NOGROUP") => Ok(Read::NoGroup),
            Reply::Error(error) => Err(crate::error::from_error_reply("read", &error)),
            reply => Ok(Read::Entries(reply)),
        }
    }

    /// Dead-letters an entry that was over the size limit, inside Redis: the worker never had it.
    async fn dead_letter_unread(
        &mut self,
        queue: usize,
        id: &str,
        size: usize,
    ) -> Result<(), BrokerError> {
        let settings = self.shared.broker.settings();
        let keys = &self.shared.keys[queue];
        let reason = format!(
            "message of {size} bytes exceeds the limit of {} bytes (dead-lettered by the broker, \
             unread by the worker)",
            self.max_message_bytes
        );
        tracing::warn!(queue = %keys.queue, entry = %id, %reason, "dead-lettering message");
        let mut invocation = SCRIPTS.dead_letter_unread.key(&keys.ready);
        invocation
            .key(&keys.dead)
            .arg(&settings.group)
            .arg(id)
            .arg(reason)
            .arg(epoch_millis(SystemTime::now()));
        bounded::<u64>(
            "dead_letter",
            settings.operation_timeout,
            invocation.invoke_async(&mut self.conn),
        )
        .await
        .map(|_| ())
    }
}

/// An entry read and held, waiting for a prefetch slot.
struct Unslotted {
    queue: usize,
    id: String,
    payload: Vec<u8>,
    redelivered: bool,
}

/// What a read of new entries found.
enum Read {
    /// `XREADGROUP`'s reply (no entries, or some).
    Entries(Reply),
    /// The consumer group does not exist (any more).
    NoGroup,
}

/// How long a consumer of a group may go without reading before another consumer deletes it, if it
/// owns no pending entry: ten visibility timeouts. A live consumer reads at least every
/// [`MAX_BLOCK`], and one deleted by mistake is harmless: its next read creates it again.
fn reap_after_ms(visibility_timeout: Duration) -> u64 {
    u64::try_from((visibility_timeout * 10).as_millis()).unwrap_or(u64::MAX)
}

/// Extends the leases of held deliveries every third of the visibility timeout, until the stream is
/// dropped and nothing is held any more; then retires the consumer from its group.
async fn keep_leases(shared: Arc<ConsumerShared>) {
    let every = shared.broker.settings().visibility_timeout / 3;
    let timeout = shared.broker.settings().operation_timeout;
    let group = shared.broker.settings().group.clone();
    let mut conn = shared.broker.conn();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let held: Vec<(usize, Vec<String>)> = shared
            .held()
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(queue, ids)| (*queue, ids.iter().cloned().collect()))
            .collect();
        if held.is_empty() && shared.closed.load(Ordering::SeqCst) {
            break;
        }
        for (queue, ids) in held {
            let mut invocation = SCRIPTS.extend.key(&shared.keys[queue].ready);
            invocation.arg(&group).arg(&shared.name);
            for id in &ids {
                invocation.arg(id);
            }
            if let Err(error) =
                bounded::<u64>("extend leases", timeout, invocation.invoke_async(&mut conn)).await
            {
                tracing::warn!(error = %Report(&error), "cannot extend leases; other workers may take these tasks over");
            }
        }
    }
    match retire(&shared.broker, &shared.name, &shared.keys, Retire::IfIdle).await {
        // Retired: nothing left for `consumers_stopped` to do for this consumer.
        Ok(()) => shared
            .broker
            .stopped()
            .retain(|stopped| stopped.name != shared.name),
        Err(error) => tracing::debug!(error = %Report(&error), "cannot retire consumer"),
    }
}

/// Settles one delivery. Dropped unsettled, it puts its message back at once (when a runtime is
/// available) and otherwise lets its lease lapse, so another consumer takes it over.
struct RedisAcker {
    shared: Arc<ConsumerShared>,
    queue: usize,
    id: String,
    payload: Bytes,
    settled: bool,
    _slot: PrefetchSlot,
}

impl RedisAcker {
    async fn run(
        &mut self,
        op: &'static str,
        script: &redis::Script,
        extra: &[&[u8]],
    ) -> Result<(), BrokerError> {
        self.settled = true;
        let settings = self.shared.broker.settings();
        let keys = &self.shared.keys[self.queue];
        let mut conn = self.shared.broker.conn();
        let mut invocation = script.key(&keys.ready);
        if op == "dead_letter" {
            invocation.key(&keys.dead);
        }
        invocation.arg(&settings.group).arg(&self.id);
        for arg in extra {
            invocation.arg(*arg);
        }
        let result = bounded::<u64>(
            op,
            settings.operation_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await;
        self.shared.release(self.queue, &self.id);
        match result {
            Ok(0) => {
                tracing::debug!(entry = %self.id, op, "entry was no longer pending (taken over by another worker)");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

#[async_trait]
impl Acknowledger for RedisAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        self.settled = true;
        let (done, confirmed) = oneshot::channel();
        let request = AckRequest {
            queue: self.queue,
            id: self.id.clone(),
            done,
        };
        let outcome = match self.shared.acks.send(request) {
            Ok(()) => confirmed
                .await
                .unwrap_or(Err(BrokerError::Disconnected { op: "ack" })),
            Err(_) => Err(BrokerError::Disconnected { op: "ack" }),
        };
        // Held until confirmed: a stopping worker gives back what its consumer still owns only
        // once nothing is held, so an ack in flight is never taken for a stranded entry.
        self.shared.release(self.queue, &self.id);
        outcome
    }

    async fn requeue(mut self: Box<Self>) -> Result<(), BrokerError> {
        let payload = self.payload.clone();
        self.run("requeue", &SCRIPTS.requeue, &[&payload]).await
    }

    async fn dead_letter(
        mut self: Box<Self>,
        payload: Bytes,
        reason: String,
    ) -> Result<(), BrokerError> {
        let at = epoch_millis(SystemTime::now()).to_string();
        self.run(
            "dead_letter",
            &SCRIPTS.dead_letter,
            &[&payload, reason.as_bytes(), at.as_bytes()],
        )
        .await
    }
}

impl Drop for RedisAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let id = std::mem::take(&mut self.id);
        requeue_dropped(&self.shared, self.queue, id, self.payload.to_vec());
    }
}

/// Stops holding entry `id` of queue `queue` and puts it back at once (when a runtime is
/// available; otherwise its lease lapses and another consumer takes it over).
fn requeue_dropped(shared: &Arc<ConsumerShared>, queue: usize, id: String, payload: Vec<u8>) {
    shared.release(queue, &id);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let tracker = shared.broker.requeues().clone();
    let shared = shared.clone();
    tracker.spawn_on(async move {
        let settings = shared.broker.settings();
        let mut conn = shared.broker.conn();
        let mut invocation = SCRIPTS.requeue.key(&shared.keys[queue].ready);
        invocation.arg(&settings.group).arg(&id).arg(payload);
        if let Err(error) = bounded::<u64>(
            "requeue",
            settings.operation_timeout,
            invocation.invoke_async(&mut conn),
        )
        .await
        {
            tracing::warn!(error = %Report(&error), entry = %id, "cannot requeue a dropped delivery; its lease will lapse instead");
        }
    }, &runtime);
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Entries read beyond the prefetch slots were never handed out: put them back.
        for held in self.overflow.drain(..) {
            requeue_dropped(&self.shared, held.queue, held.id, held.payload);
        }
    }
}

impl fmt::Debug for RedisAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAcker")
            .field("queue", &self.shared.keys[self.queue].queue)
            .field("entry", &self.id)
            .finish_non_exhaustive()
    }
}
