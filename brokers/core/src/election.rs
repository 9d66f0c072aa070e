//! Electing one leader among any number of processes, for work only one may do at a time: the
//! periodic-task scheduler (beat) runs in many processes and only the leader sends.
//!
//! A leader holds a *term*. A term ends when the leader resigns, or when it fails to renew within
//! its lease (it crashed, hung, or lost its connection): then another process may lead. A term
//! comes with a small *record* that only the term's holder can write, and the next leader reads:
//! the beat keeps there what each schedule entry last sent. The record is fenced by the term: a
//! leader whose term ended without its knowing (paused past its lease, say) cannot overwrite what
//! its successor wrote.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::BrokerError;
use crate::coordination::{Claim, CoordinationStore, Record};

/// Where processes elect their one leader, and where the leader keeps its record.
///
/// Object-safe: a beat holds an `Arc<dyn Election>`. [`StoreElection`] elects through a
/// [`CoordinationStore`] (Redis, or this process's memory); `celeriac::amqp::AmqpElection` through
/// a RabbitMQ single-active-consumer queue.
#[async_trait]
pub trait Election: Send + Sync + fmt::Debug + 'static {
    /// Where the election is held, with any password replaced by `***`.
    fn redacted_url(&self) -> String;

    /// How long a term lasts without a renewal. Callers renew well within it (every third of it).
    fn lease(&self) -> Duration;

    /// Tries to lead: answers the new term, with the record the last leader wrote, if this process
    /// leads now; `None` if another does.
    async fn campaign(&self) -> Result<Option<Term>, BrokerError>;

    /// Extends `term` by a lease from now; answers whether it still held (false: it ended, and
    /// another process may lead).
    async fn renew(&self, term: &Term) -> Result<bool, BrokerError>;

    /// Writes `record` and extends `term`, only if `term` still holds; answers whether it did.
    async fn record(&self, term: &Term, record: &[u8]) -> Result<bool, BrokerError>;

    /// Ends `term` at once, so that another process may lead without waiting for the lease to
    /// lapse. Best effort: a term that cannot be ended lapses by itself.
    async fn resign(&self, term: Term) -> Result<(), BrokerError>;
}

/// A leader's term: what proves it leads, and the record its predecessor left.
#[derive(Clone, PartialEq, Eq)]
pub struct Term {
    token: String,
    record: Option<Vec<u8>>,
}

impl Term {
    /// A term proved by `token` (unique to this term among every candidate's), with the record
    /// read when it began.
    pub fn new(token: impl Into<String>, record: Option<Vec<u8>>) -> Self {
        Self {
            token: token.into(),
            record,
        }
    }

    /// What proves the term.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The record the last leader wrote, when this term began.
    pub fn record(&self) -> Option<&[u8]> {
        self.record.as_deref()
    }

    /// Takes the record out of the term (a leader parses it once).
    pub fn take_record(&mut self) -> Option<Vec<u8>> {
        self.record.take()
    }
}

impl fmt::Debug for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Term")
            .field("token", &self.token)
            .field("record_bytes", &self.record.as_ref().map(Vec::len))
            .finish()
    }
}

/// An election through a [`CoordinationStore`]: the leader holds a claim on `<name>:lease`, renews
/// it every third of the lease, and keeps its record at `<name>:record`, written only while its
/// claim holds (the store checks both at once).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use celeriac::coordination::MemoryCoordination;
/// use celeriac::election::{Election, StoreElection};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), celeriac::BrokerError> {
/// let store = Arc::new(MemoryCoordination::new());
/// let lease = Duration::from_secs(10);
/// let first = StoreElection::new(store.clone(), "beat", "process-1", lease);
/// let second = StoreElection::new(store, "beat", "process-2", lease);
///
/// let term = first.campaign().await?.expect("no one leads yet");
/// assert!(second.campaign().await?.is_none());
/// assert!(first.record(&term, b"sent up to 12:00").await?);
///
/// // The leader stops renewing: its lease lapses and the other process leads, with its record.
/// tokio::time::advance(lease).await;
/// let next = second.campaign().await?.expect("the lease lapsed");
/// assert_eq!(next.record(), Some(&b"sent up to 12:00"[..]));
/// // The old leader is fenced off.
/// assert!(!first.record(&term, b"stale").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct StoreElection {
    store: Arc<dyn CoordinationStore>,
    lease_key: String,
    record_key: String,
    candidate: String,
    lease: Duration,
}

impl StoreElection {
    /// The election `name` in `store`, with `candidate` (unique to this process) standing, and
    /// terms that last `lease` without a renewal.
    pub fn new(
        store: Arc<dyn CoordinationStore>,
        name: &str,
        candidate: impl Into<String>,
        lease: Duration,
    ) -> Self {
        // One hash tag, so that both keys live on one node of a Redis Cluster.
        Self {
            store,
            lease_key: format!("election:{{{name}}}:lease"),
            record_key: format!("election:{{{name}}}:record"),
            candidate: candidate.into(),
            lease,
        }
    }
}

impl fmt::Debug for StoreElection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreElection")
            .field("store", &self.store)
            .field("lease_key", &self.lease_key)
            .field("candidate", &self.candidate)
            .field("lease", &self.lease)
            .finish()
    }
}

#[async_trait]
impl Election for StoreElection {
    fn redacted_url(&self) -> String {
        self.store.redacted_url()
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    async fn campaign(&self) -> Result<Option<Term>, BrokerError> {
        let claim = self
            .store
            .claim(&self.lease_key, &self.candidate, self.lease)
            .await?;
        match claim {
            Claim::Claimed => {}
            // Still ours: a term this process lost track of (its renewal timed out, say).
            Claim::Held { holder, .. } if holder == self.candidate => {}
            Claim::Held { .. } => return Ok(None),
        }
        let record = self.store.read(&self.record_key).await?;
        Ok(Some(Term::new(self.candidate.clone(), record)))
    }

    async fn renew(&self, term: &Term) -> Result<bool, BrokerError> {
        self.store
            .renew(&self.lease_key, term.token(), self.lease, None)
            .await
    }

    async fn record(&self, term: &Term, record: &[u8]) -> Result<bool, BrokerError> {
        let record = Record {
            key: &self.record_key,
            value: record,
        };
        self.store
            .renew(&self.lease_key, term.token(), self.lease, Some(record))
            .await
    }

    async fn resign(&self, term: Term) -> Result<(), BrokerError> {
        self.store.release(&self.lease_key, term.token()).await?;
        Ok(())
    }
}
