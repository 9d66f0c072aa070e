//! Claims kept in this process's memory: the coordination store of the embedded broker.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Claim, CoordinationStore, MAX_SET_MEMBERS, Record};
use crate::BrokerError;

/// Claims held in this process's memory: enough when every producer runs in one process, as with
/// the embedded broker (an app whose broker is a `MemoryBroker` uses the broker's own one).
///
/// Claims lapse on tokio's clock, so tests may pause and advance it.
///
/// ```
/// use std::time::Duration;
/// use celeriac::coordination::{Claim, CoordinationStore, MemoryCoordination};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), celeriac::BrokerError> {
/// let store = MemoryCoordination::new();
/// store.claim("key", "first", Duration::from_secs(60)).await?;
/// tokio::time::advance(Duration::from_secs(61)).await;
/// assert_eq!(store.claim("key", "second", Duration::from_secs(60)).await?, Claim::Claimed);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryCoordination {
    claims: Arc<Mutex<Claims>>,
}

#[derive(Default)]
struct Claims {
    held: HashMap<String, (String, Instant)>,
    /// The next free slot of each rate limit.
    next_slot: HashMap<String, Instant>,
    /// Records written by `renew`.
    records: HashMap<String, Vec<u8>>,
    /// Sets written by `remember`: each member with when it lapses.
    sets: HashMap<String, HashMap<String, Instant>>,
    /// `held.len()` after the last sweep of lapsed claims.
    swept_at: usize,
}

impl MemoryCoordination {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn claims(&self) -> MutexGuard<'_, Claims> {
        // Every critical section leaves the map consistent: a panic elsewhere cannot corrupt it.
        self.claims.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Claims {
    /// Drops lapsed claims once the map has doubled since the last sweep: memory stays bounded by
    /// the live claims, at a cost amortized over the claims made.
    fn sweep(&mut self, now: Instant) {
        if self.held.len() + self.next_slot.len() >= 2 * self.swept_at.max(512) {
            self.held.retain(|_, (_, until)| *until > now);
            self.next_slot.retain(|_, next| *next > now);
            self.swept_at = self.held.len() + self.next_slot.len();
        }
    }
}

impl fmt::Debug for MemoryCoordination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCoordination")
            .field("claims", &self.claims().held.len())
            .finish()
    }
}

#[async_trait]
impl CoordinationStore for MemoryCoordination {
    fn redacted_url(&self) -> String {
        "memory://".to_owned()
    }

    async fn claim(
        &self,
        key: &str,
        holder: &str,
        hold_for: Duration,
    ) -> Result<Claim, BrokerError> {
        let now = Instant::now();
        let mut claims = self.claims();
        claims.sweep(now);
        if let Some((current, until)) = claims.held.get(key)
            && *until > now
        {
            return Ok(Claim::Held {
                holder: current.clone(),
                left: *until - now,
            });
        }
        claims
            .held
            .insert(key.to_owned(), (holder.to_owned(), now + hold_for));
        Ok(Claim::Claimed)
    }

    async fn release(&self, key: &str, holder: &str) -> Result<bool, BrokerError> {
        let now = Instant::now();
        let mut claims = self.claims();
        match claims.held.get(key) {
            Some((current, until)) if current == holder && *until > now => {
                claims.held.remove(key);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn reserve_slot(&self, key: &str, interval: Duration) -> Result<Duration, BrokerError> {
        let now = Instant::now();
        let mut claims = self.claims();
        claims.sweep(now);
        let next = claims.next_slot.entry(key.to_owned()).or_insert(now);
        let slot = (*next).max(now);
        *next = slot + interval;
        Ok(slot - now)
    }

    async fn renew(
        &self,
        key: &str,
        holder: &str,
        hold_for: Duration,
        record: Option<Record<'_>>,
    ) -> Result<bool, BrokerError> {
        let now = Instant::now();
        let mut claims = self.claims();
        match claims.held.get_mut(key) {
            Some((current, until)) if current == holder && *until > now => {
                *until = now + hold_for;
            }
            _ => return Ok(false),
        }
        if let Some(record) = record {
            claims
                .records
                .insert(record.key.to_owned(), record.value.to_vec());
        }
        Ok(true)
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        Ok(self.claims().records.get(key).cloned())
    }

    async fn remember(
        &self,
        key: &str,
        member: &str,
        keep_for: Duration,
    ) -> Result<(), BrokerError> {
        let now = Instant::now();
        let mut claims = self.claims();
        let set = claims.sets.entry(key.to_owned()).or_default();
        let until = now + keep_for;
        let kept = set.entry(member.to_owned()).or_insert(until);
        *kept = (*kept).max(until);
        if set.len() > MAX_SET_MEMBERS {
            set.retain(|_, until| *until > now);
            while set.len() > MAX_SET_MEMBERS {
                let first = set
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(member, _)| member.clone());
                match first {
                    Some(first) => set.remove(&first),
                    None => break,
                };
            }
        }
        Ok(())
    }

    async fn members(&self, key: &str) -> Result<Vec<(String, Duration)>, BrokerError> {
        let now = Instant::now();
        let mut claims = self.claims();
        let Some(set) = claims.sets.get_mut(key) else {
            return Ok(Vec::new());
        };
        set.retain(|_, until| *until > now);
        Ok(set
            .iter()
            .map(|(member, until)| (member.clone(), *until - now))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_claim_lapses_after_its_time_and_only_its_holder_releases_it() {
        let store = MemoryCoordination::new();
        let minute = Duration::from_secs(60);
        assert_eq!(
            store.claim("k", "a", minute).await.ok(),
            Some(Claim::Claimed)
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(
            store.claim("k", "b", minute).await.ok(),
            Some(Claim::Held {
                holder: "a".into(),
                left: Duration::from_secs(40)
            })
        );
        assert_eq!(store.release("k", "b").await.ok(), Some(false));
        tokio::time::advance(Duration::from_secs(40)).await;
        // Lapsed: the old holder cannot release the new claim.
        assert_eq!(
            store.claim("k", "b", minute).await.ok(),
            Some(Claim::Claimed)
        );
        assert_eq!(store.release("k", "a").await.ok(), Some(false));
        assert_eq!(store.release("k", "b").await.ok(), Some(true));
        assert_eq!(
            store.claim("k", "c", minute).await.ok(),
            Some(Claim::Claimed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_spaced_and_unused_time_is_not_saved_up() {
        let store = MemoryCoordination::new();
        let tick = Duration::from_millis(100);
        let reserved: Vec<Duration> =
            futures::future::join_all((0..5).map(|_| store.reserve_slot("rate", tick)))
                .await
                .into_iter()
                .map(|slot| slot.unwrap_or(Duration::MAX))
                .collect();
        assert_eq!(reserved, (0..5).map(|n| tick * n).collect::<Vec<_>>());
        // Another key has its own slots.
        assert_eq!(
            store.reserve_slot("other", tick).await.ok(),
            Some(Duration::ZERO)
        );
        // After an idle second, the next slot is now: no burst of saved-up slots.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            store.reserve_slot("rate", tick).await.ok(),
            Some(Duration::ZERO)
        );
        assert_eq!(store.reserve_slot("rate", tick).await.ok(), Some(tick));
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_live_holder_renews_and_writes_its_record() {
        let store = MemoryCoordination::new();
        let lease = Duration::from_secs(10);
        let write = |value: &'static [u8]| {
            Some(Record {
                key: "ledger",
                value,
            })
        };
        assert_eq!(
            store.claim("lease", "a", lease).await.ok(),
            Some(Claim::Claimed)
        );
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(
            store.renew("lease", "a", lease, write(b"1")).await.ok(),
            Some(true)
        );
        // Renewed: still held 8 s later, when the first claim would have lapsed.
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(matches!(
            store.claim("lease", "b", lease).await,
            Ok(Claim::Held { .. })
        ));
        assert_eq!(
            store.renew("lease", "b", lease, write(b"2")).await.ok(),
            Some(false)
        );
        assert_eq!(store.read("ledger").await.ok(), Some(Some(b"1".to_vec())));
        // Lapsed and taken by b: a cannot write over b's record any more.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(
            store.claim("lease", "b", lease).await.ok(),
            Some(Claim::Claimed)
        );
        assert_eq!(
            store.renew("lease", "a", lease, write(b"3")).await.ok(),
            Some(false)
        );
        assert_eq!(
            store.renew("lease", "b", lease, write(b"4")).await.ok(),
            Some(true)
        );
        assert_eq!(store.read("ledger").await.ok(), Some(Some(b"4".to_vec())));
        assert_eq!(store.read("nothing").await.ok(), Some(None));
    }

    #[tokio::test(start_paused = true)]
    async fn lapsed_claims_are_swept() {
        let store = MemoryCoordination::new();
        for n in 0..2_000 {
            store
                .claim(&n.to_string(), "x", Duration::from_secs(1))
                .await
                .ok();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for n in 0..1_100 {
            store
                .claim(&format!("new-{n}"), "x", Duration::from_secs(1))
                .await
                .ok();
        }
        assert!(store.claims().held.len() < 2_000, "lapsed claims were kept");
    }
}
