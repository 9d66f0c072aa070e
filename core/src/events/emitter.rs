//! A worker's side of events: a bounded buffer that runs hand events to, a task that publishes them
//! in batches, and the heartbeat.
//!
//! Handing an event over costs a clock read and a push under a lock of the thread's own shard (two
//! threads sharing one buffer cost a worker draining no-ops a tenth of its throughput in cache
//! traffic alone). The publisher is not woken for each event, but when a shard holds a batch, when
//! an event other than a run's own arrives (a worker's, a failure), or every [`FLUSH_EVERY`]. It
//! takes every shard's events at once and publishes them in time order.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::record::{Entry, Timeline, write_batch};
use super::{EVENTS_TOPIC, EventBus, EventKind, Record, host};
use crate::error::Report;

/// Events waiting to be published, at most; more are dropped and counted.
const BUFFER: usize = 16_384;

/// Events per message, at most.
const BATCH: usize = 512;

/// Room for a message of `events` events: about 150 bytes an event.
const fn batch_bytes(events: usize) -> usize {
    160 * events + 64
}

/// Room for a message of a full batch.
const FULL_BATCH_BYTES: usize = batch_bytes(BATCH);

/// How long a run's event waits for its batch, at most.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// How long a stopping worker waits for its last events to go out.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// The counter of events a worker dropped because its buffer was full or its bus failed.
const EVENTS_DROPPED: &str = "celeriac_events_dropped_total";

/// A worker's events: who it is, and where its events go.
pub(crate) struct Emitter {
    hostname: Arc<str>,
    pid: u32,
    /// Events waiting for the publisher, spread by thread.
    shards: Box<[Shard]>,
    /// Events a shard holds, at most.
    shard_capacity: usize,
    /// Wakes the publisher before its next round.
    flush: Arc<Notify>,
    dropped: AtomicU64,
}

/// The events some threads handed over, and their runs going on, on a cache line of its own.
#[repr(align(128))]
struct Shard {
    waiting: Mutex<Vec<Entry>>,
    /// Runs started less runs ended here (a run may end on another thread: only the sum counts).
    active: AtomicI64,
}

thread_local! {
    /// This thread's shard number (modulo the shards), taken when it first emits.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The next thread's shard number.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// What runs beside a worker that sends events, and stops with it.
pub(crate) struct EventTasks {
    publisher: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    stop: CancellationToken,
}

impl Emitter {
    /// Starts sending events to `bus` as `hostname`, with a heartbeat every `freq` carrying what
    /// `processed` counts. Says the worker is online.
    pub(crate) fn start(
        bus: Arc<dyn EventBus>,
        hostname: Arc<str>,
        freq: Duration,
        online: EventKind,
        processed: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> (Arc<Self>, EventTasks) {
        let (emitter, publisher) = Self::publishing(bus, hostname);
        let concurrency = match &online {
            EventKind::WorkerOnline { concurrency, .. } => *concurrency,
            _ => 0,
        };
        emitter.emit(online);
        let stop = CancellationToken::new();
        let heartbeat = tokio::spawn({
            let (emitter, stop) = (emitter.clone(), stop.clone());
            async move {
                let mut ticks = tokio::time::interval(freq);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = ticks.tick() => {}
                    }
                    emitter.emit(EventKind::WorkerHeartbeat {
                        concurrency,
                        active: emitter.active(),
                        processed: processed(),
                        freq: freq.as_secs_f64(),
                        loadavg: host::loadavg(),
                        rss_bytes: host::rss_bytes(),
                    });
                }
            }
        });
        let tasks = EventTasks {
            publisher,
            heartbeat,
            stop,
        };
        (emitter, tasks)
    }

    /// An emitter whose events a task of its own publishes to `bus` until the emitter is dropped
    /// (or a `worker-offline` event is out). A producer's (`task-sent`) has no heartbeat.
    pub(crate) fn publishing(
        bus: Arc<dyn EventBus>,
        hostname: Arc<str>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let pid = std::process::id();
        // Twice the threads a multi-threaded runtime has by default: few threads share one.
        let count = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .saturating_mul(2)
            .clamp(2, 64);
        let shards = (0..count)
            .map(|_| Shard {
                waiting: Mutex::new(Vec::with_capacity(BATCH)),
                active: AtomicI64::new(0),
            })
            .collect();
        let emitter = Arc::new(Self {
            hostname,
            pid,
            shards,
            shard_capacity: BUFFER.div_ceil(count).max(BATCH),
            flush: Arc::new(Notify::new()),
            dropped: AtomicU64::new(0),
        });
        let publisher = tokio::spawn(publish(
            bus,
            Arc::downgrade(&emitter),
            emitter.flush.clone(),
        ));
        (emitter, publisher)
    }

    /// Hands an event to the publisher; drops it (counted) if the buffer is full.
    pub(crate) fn emit(&self, record: impl Into<Record>) {
        self.emit_at(record, tokio::time::Instant::now());
    }

    /// Hands over an event that happened at `at`.
    pub(crate) fn emit_at(&self, record: impl Into<Record>, at: tokio::time::Instant) {
        let record = record.into();
        let urgent = matches!(record, Record::Other(_));
        let entry = Entry { at, record };
        let own = self.shard_number();
        let mut waiting = lock(&self.shards[own].waiting);
        if waiting.len() >= self.shard_capacity {
            drop(waiting);
            self.spill(own, entry);
            return;
        }
        waiting.push(entry);
        let full = waiting.len().is_multiple_of(BATCH);
        drop(waiting);
        if urgent || full {
            self.flush.notify_one();
        }
    }

    /// Hands over an event whose thread's shard `own` is full to another shard with room (one
    /// thread may run most of the runs while the publisher waits for a core); drops it, counted,
    /// only when every shard is full.
    #[cold]
    fn spill(&self, own: usize, entry: Entry) {
        self.flush.notify_one();
        let count = self.shards.len();
        for number in (1..count).map(|step| (own + step) % count) {
            let mut waiting = lock(&self.shards[number].waiting);
            if waiting.len() < self.shard_capacity {
                waiting.push(entry);
                return;
            }
        }
        self.drop_events(1);
    }

    /// Events dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A run started.
    pub(crate) fn started(&self) {
        self.shard().active.fetch_add(1, Ordering::Relaxed);
    }

    /// A run ended.
    pub(crate) fn ended(&self) {
        self.shard().active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Runs going on now.
    fn active(&self) -> u64 {
        let sum: i64 = self
            .shards
            .iter()
            .map(|shard| shard.active.load(Ordering::Relaxed))
            .sum();
        u64::try_from(sum).unwrap_or(0)
    }

    /// The calling thread's shard.
    fn shard(&self) -> &Shard {
        &self.shards[self.shard_number()]
    }

    /// The calling thread's shard's number.
    fn shard_number(&self) -> usize {
        let number = SHARD.with(|shard| {
            shard.get().unwrap_or_else(|| {
                let number = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
                shard.set(Some(number));
                number
            })
        });
        number % self.shards.len()
    }

    /// Moves every event waiting to `taken`, and their positions there in time order. Every
    /// shard is held at once, so that of two events one thread handed over after the other, the
    /// later is never taken alone — but only while its vector is swapped for an empty one: a
    /// thread handing an event over meanwhile waits a moment, not while the events are copied
    /// (a thread that blocks on the lock sleeps, and its runs with it).
    fn take_waiting(&self, taken: &mut Taken) {
        {
            let mut held: Vec<_> = self
                .shards
                .iter()
                .map(|shard| lock(&shard.waiting))
                .collect();
            for waiting in held.iter_mut().filter(|waiting| !waiting.is_empty()) {
                let empty = taken
                    .empty
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(BATCH));
                taken.full.push(std::mem::replace(&mut **waiting, empty));
            }
        }
        let from = taken.entries.len();
        let shards_with_events = taken.full.len();
        for mut full in taken.full.drain(..) {
            taken.entries.append(&mut full);
            taken.empty.push(full);
        }
        let Taken { entries, order, .. } = taken;
        order.extend(from..entries.len());
        if shards_with_events > 1 {
            // Positions, not the events, are sorted: a sort needs room for half of what it sorts,
            // and room for the events was fresh pages every time. Each shard's events are in
            // order already: the sort merges runs, keeping events at the same time in shard order.
            order[from..].sort_by_key(|&position| entries[position].at);
        }
    }

    fn drop_events(&self, n: u64) {
        if self.dropped.fetch_add(n, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "dropping worker events: the event buffer is full or the broker refuses them (counted in {EVENTS_DROPPED})"
            );
        }
        ::metrics::counter!(EVENTS_DROPPED).increment(n);
    }
}

impl Drop for EventTasks {
    fn drop(&mut self) {
        // A worker whose run was dropped does not go on beating.
        self.stop.cancel();
        self.heartbeat.abort();
        self.publisher.abort();
    }
}

impl EventTasks {
    /// Stops the heartbeat, says the worker is offline, and waits (a little) for the last events
    /// to go out.
    pub(crate) async fn stop(mut self, emitter: Arc<Emitter>, processed: u64) {
        self.stop.cancel();
        let _ = (&mut self.heartbeat).await;
        emitter.emit(EventKind::WorkerOffline { processed });
        // The publisher stops after publishing that event.
        if tokio::time::timeout(FLUSH_WITHIN, &mut self.publisher)
            .await
            .is_err()
        {
            tracing::warn!("the worker's last events were not all published");
        }
        self.publisher.abort();
    }
}

/// Publishes the events waiting, at most [`BATCH`] to a message, until the worker's offline event
/// is out (or the emitter is dropped).
async fn publish(bus: Arc<dyn EventBus>, emitter: std::sync::Weak<Emitter>, flush: Arc<Notify>) {
    let mut taken = Taken::default();
    let mut rooms = Rooms::default();
    loop {
        let Some(emitter) = emitter.upgrade() else {
            return;
        };
        emitter.take_waiting(&mut taken);
        let last = taken.entries.iter().any(|entry| entry.record.is_offline());
        let timeline = Timeline::now();
        for batch in taken.order.chunks(BATCH) {
            let mut encoded = rooms.take(batch_bytes(batch.len()));
            let mut writer = (&mut encoded).writer();
            let written = write_batch(
                &mut writer,
                &emitter.hostname,
                emitter.pid,
                batch.iter().map(|&position| &taken.entries[position]),
                &timeline,
            );
            let published = match written {
                Ok(()) => {
                    let message = encoded.freeze();
                    rooms.published(message.clone());
                    bus.publish(EVENTS_TOPIC, vec![message]).await
                }
                Err(error) => Err(crate::BrokerError::Invalid(error.to_string())),
            };
            if let Err(error) = published {
                tracing::debug!(error = %Report(&error), "cannot publish worker events");
                emitter.drop_events(batch.len() as u64);
            }
        }
        taken.entries.clear();
        taken.order.clear();
        if last {
            return;
        }
        // Not kept while waiting: a dropped worker's emitter goes, and this task with it.
        drop(emitter);
        tokio::select! {
            () = flush.notified() => {}
            () = tokio::time::sleep(FLUSH_EVERY) => {}
        }
    }
}

/// What the publisher took from the shards, and the vectors it swaps with theirs.
#[derive(Default)]
struct Taken {
    entries: Vec<Entry>,
    /// Positions in `entries`, in time order.
    order: Vec<usize>,
    /// Shards' vectors just taken.
    full: Vec<Vec<Entry>>,
    /// Empty vectors (with their room) to give the shards.
    empty: Vec<Vec<Entry>>,
}

/// The room the publisher writes messages in: a message's once every reader has let go of it.
/// A new room per message cost fresh pages from the allocator again and again (a fifth of the
/// publisher's time, most of it the kernel zeroing them).
#[derive(Default)]
struct Rooms {
    /// The messages published last, oldest first.
    published: VecDeque<Bytes>,
}

impl Rooms {
    /// Messages kept to write again, at most.
    const KEPT: usize = 8;

    /// Empty room for `bytes` bytes: the oldest message's if nobody reads it any more. A new room
    /// holds a full batch, so that it never grows when it is written again.
    fn take(&mut self, bytes: usize) -> BytesMut {
        if let Some(oldest) = self.published.pop_front() {
            match oldest.try_into_mut() {
                Ok(mut room) => {
                    room.clear();
                    room.reserve(bytes);
                    return room;
                }
                // Still read: kept for a later turn.
                Err(oldest) => self.published.push_front(oldest),
            }
        }
        BytesMut::with_capacity(bytes.max(FULL_BATCH_BYTES))
    }

    /// Keeps `message` (shared with its readers) to write again once they are done with it.
    fn published(&mut self, message: Bytes) {
        if self.published.len() == Self::KEPT {
            self.published.pop_front();
        }
        self.published.push_back(message);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use futures::StreamExt;

    use super::*;
    use crate::TaskId;
    use crate::events::{Batch, MemoryEventBus};

    /// A message's room is written again once its readers let go of it, and never before.
    #[test]
    fn a_room_is_written_again_once_its_readers_let_go() {
        let mut rooms = Rooms::default();
        let mut room = rooms.take(16);
        room.extend_from_slice(b"first message");
        let first = room.freeze();
        rooms.published(first.clone());

        let second = rooms.take(16);
        assert_ne!(second.as_ptr(), first.as_ptr(), "a room still read");
        let address = first.as_ptr();
        drop(first);
        let third = rooms.take(16);
        assert_eq!(third.as_ptr(), address);
        assert!(third.is_empty());
        assert!(third.capacity() >= FULL_BATCH_BYTES);
    }

    /// One thread hands over more than its shard holds before the publisher runs: the rest go
    /// to the other shards, and only events beyond the whole buffer are dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_shard_spills_into_the_others_before_events_are_dropped() {
        let bus = Arc::new(MemoryEventBus::new());
        let (emitter, _publisher) = Emitter::publishing(bus, "w".into());
        let started = |emitter: &Emitter| {
            emitter.emit(Record::Started {
                uuid: TaskId::new(),
                name: "t",
            });
        };
        // The publisher runs on this thread only when the test waits: not before the end.
        for _ in 0..emitter.shard_capacity + 10 {
            started(&emitter);
        }
        assert_eq!(emitter.dropped(), 0);
        let room = emitter.shard_capacity * emitter.shards.len();
        for _ in emitter.shard_capacity + 10..room + 3 {
            started(&emitter);
        }
        assert_eq!(emitter.dropped(), 3);
        let waiting: usize = emitter
            .shards
            .iter()
            .map(|shard| lock(&shard.waiting).len())
            .sum();
        assert_eq!(waiting, room);
    }

    /// Runs hop between threads (and so shards) mid-run: each run's events still arrive in the
    /// order they happened, and every batch is in time order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn events_from_many_threads_arrive_in_order() {
        let bus = Arc::new(MemoryEventBus::new());
        let mut messages = bus
            .subscribe(EVENTS_TOPIC)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (emitter, publisher) = Emitter::publishing(bus, "w".into());
        let runs: Vec<TaskId> = (0..2_000).map(|_| TaskId::new()).collect();
        // Their events fit the buffer, even if one thread runs every task while the publisher
        // waits for a core (a loaded machine): its shard spills into the others.
        assert!(3 * runs.len() <= emitter.shard_capacity * emitter.shards.len());
        // Read while the events are published, as a monitor does: the bus keeps only so many
        // messages for a subscriber that does not read.
        let all = 3 * runs.len();
        let reading = tokio::spawn(async move {
            let mut seen: HashMap<TaskId, Vec<&'static str>> = HashMap::new();
            let mut offline = false;
            // The publisher sweeps its shards one after another, so the offline event can go out
            // a batch before the last runs' events: read until every event is in.
            while !offline || seen.values().map(Vec::len).sum::<usize>() < all {
                let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "events missing: {} of {all}",
                            seen.values().map(Vec::len).sum::<usize>()
                        )
                    })
                    .unwrap_or_else(|| {
                        panic!(
                            "the bus ended early, {} events of {all} seen",
                            seen.values().map(Vec::len).sum::<usize>()
                        )
                    })
                    .unwrap_or_else(|e| panic!("{e}"));
                let batch: Batch =
                    serde_json::from_slice(&message).unwrap_or_else(|e| panic!("{e}"));
                let events: Vec<_> = batch.into_events().collect();
                assert!(
                    events
                        .windows(2)
                        .all(|pair| pair[0].timestamp <= pair[1].timestamp)
                );
                for event in events {
                    match event.kind {
                        EventKind::TaskReceived { uuid, .. }
                        | EventKind::TaskStarted { uuid, .. }
                        | EventKind::TaskSucceeded { uuid, .. } => {
                            seen.entry(uuid).or_default().push(event.kind.name());
                        }
                        EventKind::WorkerOffline { .. } => offline = true,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            seen
        });
        let emitting = runs.iter().map(|&uuid| {
            let emitter = emitter.clone();
            tokio::spawn(async move {
                emitter.emit(Record::Received {
                    uuid,
                    name: "t",
                    queue: "q",
                    retries: 0,
                });
                tokio::task::yield_now().await;
                emitter.emit(Record::Started { uuid, name: "t" });
                tokio::task::yield_now().await;
                emitter.emit(Record::Succeeded {
                    uuid,
                    name: "t",
                    runtime: 0.0,
                });
            })
        });
        for emitted in futures::future::join_all(emitting).await {
            emitted.unwrap_or_else(|e| panic!("{e}"));
        }
        emitter.emit(EventKind::WorkerOffline {
            processed: runs.len() as u64,
        });
        publisher.await.unwrap_or_else(|e| panic!("{e}"));
        let seen = reading.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seen.len(), runs.len());
        for uuid in &runs {
            assert_eq!(
                seen.get(uuid).map(Vec::as_slice),
                Some(&["task-received", "task-started", "task-succeeded"][..]),
                "{uuid}"
            );
        }
        assert_eq!(emitter.dropped(), 0);
    }
}
