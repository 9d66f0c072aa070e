//! The in-process result backend.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use self::chords::Chords;
use crate::{BrokerError, ChordJoin, ChordPart, ResultBackend, StoredResult};

mod chords;

/// Results kept in this process's memory: the result backend of the embedded broker.
///
/// An app whose broker is `memory://…` (or a `MemoryBroker`) uses the
/// broker's own one unless given another, so a web handler and a worker of one process share
/// results as they share queues. It keeps at most [`capacity`](Self::with_capacity) results
/// (100 000 by default), dropping the oldest first, each for the app's `result_expires`.
///
/// ```
/// use std::time::Duration;
/// use celeriac::result::{MemoryResultBackend, ResultBackend};
/// use celeriac::{ResultState, StoredResult};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::BrokerError> {
/// let backend = MemoryResultBackend::with_capacity(1_000);
/// let day = Duration::from_secs(86_400);
/// backend.store("id", StoredResult::new(ResultState::Success, b"first".to_vec()), day).await?;
/// // A second run of the same task cannot turn its success into a failure:
/// let stored = backend.store("id", StoredResult::new(ResultState::Failure, b"second".to_vec()), day).await?;
/// assert!(!stored);
/// assert_eq!(backend.wait_ready("id").await?.body.as_ref(), b"first");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryResultBackend {
    inner: Arc<Mutex<Inner>>,
    chords: Arc<Mutex<Chords>>,
}

#[derive(Default)]
struct Inner {
    capacity: usize,
    records: HashMap<String, Entry>,
    /// Ids in the order they were first stored (with the generation of that store), oldest first.
    order: VecDeque<(String, u64)>,
    next_generation: u64,
    /// Callers waiting for a ready record, by id.
    waiters: HashMap<String, watch::Sender<Option<StoredResult>>>,
    /// `waiters.len()` after the last sweep of abandoned waits.
    swept_at: usize,
}

struct Entry {
    stored: StoredResult,
    expires: Instant,
    generation: u64,
}

impl MemoryResultBackend {
    /// The default number of results kept.
    pub const DEFAULT_CAPACITY: usize = 100_000;

    /// An empty backend keeping up to [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) results.
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// An empty backend keeping up to `capacity` results (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let inner = Inner {
            capacity: capacity.max(1),
            ..Inner::default()
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
            chords: Arc::default(),
        }
    }

    /// How many results it holds (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether it holds no result.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn chords(&self) -> MutexGuard<'_, Chords> {
        self.chords.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryResultBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn live(&self, id: &str, now: Instant) -> Option<&StoredResult> {
        self.records
            .get(id)
            .filter(|entry| entry.expires > now)
            .map(|entry| &entry.stored)
    }

    /// Drops expired records at the front, then the oldest ones while over capacity.
    fn sweep(&mut self, now: Instant) {
        while let Some((id, generation)) = self.order.front() {
            let current = self
                .records
                .get(id)
                .filter(|entry| entry.generation == *generation);
            match current {
                // Stale order entry: the record was forgotten or stored anew since.
                None => {}
                Some(entry) if entry.expires <= now || self.records.len() > self.capacity => {
                    self.records.remove(id);
                }
                Some(_) => break,
            }
            self.order.pop_front();
        }
    }
}

#[async_trait]
impl ResultBackend for MemoryResultBackend {
    fn system(&self) -> &'static str {
        "memory"
    }

    fn redacted_url(&self) -> String {
        "memory://".to_owned()
    }

    async fn store(
        &self,
        id: &str,
        result: StoredResult,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(current) = inner.live(id, now)
            && !result.state.replaces(current.state)
        {
            return Ok(false);
        }
        let ready = result.state.is_ready();
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let expires = now + ttl;
        inner.order.push_back((id.to_owned(), generation));
        if ready && let Some(waiters) = inner.waiters.remove(id) {
            waiters.send_replace(Some(result.clone()));
        }
        inner.records.insert(
            id.to_owned(),
            Entry {
                stored: result,
                expires,
                generation,
            },
        );
        inner.sweep(now);
        Ok(true)
    }

    async fn fetch(&self, id: &str) -> Result<Option<StoredResult>, BrokerError> {
        Ok(self.lock().live(id, Instant::now()).cloned())
    }

    async fn wait_ready(&self, id: &str) -> Result<StoredResult, BrokerError> {
        let mut receiver = {
            let mut inner = self.lock();
            if let Some(stored) = inner
                .live(id, Instant::now())
                .filter(|s| s.state.is_ready())
            {
                return Ok(stored.clone());
            }
            if inner.waiters.len() >= 2 * inner.swept_at.max(512) {
                inner
                    .waiters
                    .retain(|_, sender| sender.receiver_count() > 0);
                inner.swept_at = inner.waiters.len();
            }
            inner
                .waiters
                .entry(id.to_owned())
                .or_insert_with(|| watch::channel(None).0)
                .subscribe()
        };
        let ready = receiver
            .wait_for(Option::is_some)
            .await
            .map_err(|_| BrokerError::Disconnected { op: "wait_ready" })?;
        ready
            .clone()
            .ok_or(BrokerError::Disconnected { op: "wait_ready" })
    }

    async fn forget(&self, id: &str) -> Result<(), BrokerError> {
        self.lock().records.remove(id);
        Ok(())
    }

    fn joins_chords(&self) -> bool {
        true
    }

    async fn keep_chord_size(
        &self,
        chord: &str,
        size: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.chords().keep_size(chord, size, ttl);
        Ok(true)
    }

    async fn join_chord(
        &self,
        part: ChordPart<'_>,
        output: Bytes,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        Ok(self
            .chords()
            .join(part.chord, part.index, part.size, output, ttl))
    }

    async fn chord_fired(&self, chord: &str, ttl: Duration) -> Result<(), BrokerError> {
        self.chords().fired(chord, ttl);
        Ok(())
    }

    async fn fail_chord(
        &self,
        part: ChordPart<'_>,
        error: &str,
        ttl: Duration,
    ) -> Result<ChordJoin, BrokerError> {
        Ok(if self.chords().fail(part.chord, part.index, ttl) {
            ChordJoin::Failed(error.to_owned())
        } else {
            ChordJoin::Waiting
        })
    }
}

impl fmt::Debug for MemoryResultBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("MemoryResultBackend")
            .field("results", &inner.records.len())
            .field("capacity", &inner.capacity)
            .field("waiting", &inner.waiters.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResultState;

    fn stored(state: ResultState, body: &'static [u8]) -> StoredResult {
        StoredResult::new(state, body)
    }

    #[tokio::test(start_paused = true)]
    async fn expires_after_its_ttl_and_keeps_its_capacity() {
        let backend = MemoryResultBackend::with_capacity(3);
        let ttl = Duration::from_secs(60);
        for id in ["a", "b", "c", "d"] {
            backend
                .store(id, stored(ResultState::Success, b"x"), ttl)
                .await
                .unwrap();
        }
        assert_eq!(backend.len(), 3, "the oldest is dropped past capacity");
        assert!(backend.fetch("a").await.unwrap().is_none());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(backend.fetch("d").await.unwrap().is_none(), "expired");
        backend
            .store("e", stored(ResultState::Success, b"x"), ttl)
            .await
            .unwrap();
        assert_eq!(
            backend.len(),
            1,
            "expired records are swept on the next store"
        );
    }

    #[tokio::test]
    async fn wakes_every_waiter_once_ready() {
        let backend = MemoryResultBackend::new();
        let waiters: Vec<_> = (0..10)
            .map(|_| {
                let backend = backend.clone();
                tokio::spawn(async move { backend.wait_ready("id").await })
            })
            .collect();
        tokio::task::yield_now().await;
        let day = Duration::from_secs(86_400);
        backend
            .store("id", stored(ResultState::Retry, b"r"), day)
            .await
            .unwrap();
        backend
            .store("id", stored(ResultState::Failure, b"f"), day)
            .await
            .unwrap();
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap().unwrap().body.as_ref(), b"f");
        }
    }

    #[tokio::test]
    async fn never_makes_an_outcome_worse() {
        let backend = MemoryResultBackend::new();
        let day = Duration::from_secs(86_400);
        assert!(
            backend
                .store("id", stored(ResultState::Started, b"s"), day)
                .await
                .unwrap()
        );
        assert!(
            backend
                .store("id", stored(ResultState::Failure, b"f"), day)
                .await
                .unwrap()
        );
        assert!(
            !backend
                .store("id", stored(ResultState::Retry, b"r"), day)
                .await
                .unwrap()
        );
        assert!(
            backend
                .store("id", stored(ResultState::Success, b"1"), day)
                .await
                .unwrap()
        );
        assert!(
            !backend
                .store("id", stored(ResultState::Success, b"2"), day)
                .await
                .unwrap()
        );
        assert!(
            !backend
                .store("id", stored(ResultState::Failure, b"f"), day)
                .await
                .unwrap()
        );
        assert_eq!(
            backend.fetch("id").await.unwrap().unwrap().body.as_ref(),
            b"1"
        );
        backend.forget("id").await.unwrap();
        assert!(backend.fetch("id").await.unwrap().is_none());
    }
}
