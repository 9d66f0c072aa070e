//! Coordination between processes: claims on keys that hold for a while, for unique tasks, and
//! rate-limit budgets shared by every worker.
//!
//! A [`CoordinationStore`] is shared by every producer and worker of a deployment: Redis, or this
//! process's memory for the embedded broker. celeriac asks it for a [claim](CoordinationStore::claim)
//! when a unique task is sent, and [releases](CoordinationStore::release) it when the task has run
//! if the task asks for that.

mod memory;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub use self::memory::MemoryCoordination;
use crate::BrokerError;

/// Where claims on keys are kept, shared by every process that must agree on them.
///
/// Object-safe: the app holds an `Arc<dyn CoordinationStore>`. Both operations are atomic in the
/// store: of any number of concurrent claims of a free key, exactly one is [`Claim::Claimed`].
///
/// ```
/// use std::time::Duration;
/// use celeriac::coordination::{Claim, CoordinationStore, MemoryCoordination};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::BrokerError> {
/// let store = MemoryCoordination::new();
/// let minute = Duration::from_secs(60);
/// assert_eq!(store.claim("sms:13800138000", "task-1", minute).await?, Claim::Claimed);
/// let Claim::Held { holder, left } = store.claim("sms:13800138000", "task-2", minute).await? else {
///     panic!("the key is held");
/// };
/// assert_eq!(holder, "task-1");
/// assert!(left <= minute);
/// // Only the holder releases it.
/// assert!(!store.release("sms:13800138000", "task-2").await?);
/// assert!(store.release("sms:13800138000", "task-1").await?);
/// assert_eq!(store.claim("sms:13800138000", "task-2", minute).await?, Claim::Claimed);
///
/// // A limit of one run per second: the first slot is now, the next a second later.
/// let second = Duration::from_secs(1);
/// assert_eq!(store.reserve_slot("rate:report", second).await?, Duration::ZERO);
/// assert!(store.reserve_slot("rate:report", second).await? > Duration::from_millis(900));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait CoordinationStore: Send + Sync + fmt::Debug + 'static {
    /// Where the store is, with any password replaced by `***`.
    fn redacted_url(&self) -> String;

    /// Claims `key` for `holder` for `hold_for`, unless someone holds it: then answers who, and for
    /// how much longer. A claim lapses by itself after `hold_for`.
    async fn claim(
        &self,
        key: &str,
        holder: &str,
        hold_for: Duration,
    ) -> Result<Claim, BrokerError>;

    /// Releases `key` if `holder` holds it; answers whether it did. A claim that lapsed, or that
    /// another holder took since, is left alone.
    async fn release(&self, key: &str, holder: &str) -> Result<bool, BrokerError>;

    /// Reserves the next free slot of the limit `key`, whose slots are `interval` apart, on the
    /// store's own clock; answers how long until that slot (zero: now). Each call takes one slot:
    /// of any number of concurrent callers, no two get the same one.
    async fn reserve_slot(&self, key: &str, interval: Duration) -> Result<Duration, BrokerError>;

    /// Extends `holder`'s claim on `key` to `hold_for` from now and, if `record` is given, writes
    /// that record, both at once and only if `holder` still holds `key`; answers whether it did.
    /// A claim that lapsed, or that another holder took since, is left alone and nothing is
    /// written: the claim fences the record (a leader that lost its lease cannot overwrite what
    /// its successor wrote).
    async fn renew(
        &self,
        key: &str,
        holder: &str,
        hold_for: Duration,
        record: Option<Record<'_>>,
    ) -> Result<bool, BrokerError>;

    /// The record last written at `key` by [`renew`](Self::renew), if any. Records do not lapse.
    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError>;

    /// Adds `member` to the set `key` for `keep_for` (a member added again keeps the later
    /// time). Members lapse by themselves; a set holds at most [`MAX_SET_MEMBERS`], the ones
    /// that lapse first leaving first. Revoked task ids are remembered this way.
    async fn remember(
        &self,
        key: &str,
        member: &str,
        keep_for: Duration,
    ) -> Result<(), BrokerError>;

    /// The members of the set `key` that have not lapsed, each with the time it has left.
    async fn members(&self, key: &str) -> Result<Vec<(String, Duration)>, BrokerError>;
}

/// The most members a set of [`CoordinationStore::remember`] holds.
pub const MAX_SET_MEMBERS: usize = 50_000;

/// A record to write with a [`CoordinationStore::renew`]: `value` at `key`.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Where it is kept.
    pub key: &'a str,
    /// What is kept.
    pub value: &'a [u8],
}

/// The answer to a [`CoordinationStore::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is now the caller's.
    Claimed,
    /// Someone holds the key.
    Held {
        /// Who holds it (for unique tasks: the id of the task that was sent).
        holder: String,
        /// How long until the claim lapses.
        left: Duration,
    },
}
