//! The revoked task ids a worker remembers: checked for every task that arrives, so the check
//! costs one atomic load while nothing is revoked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::TaskId;
use crate::coordination::MAX_SET_MEMBERS;

/// The coordination store's set of revoked task ids.
pub(crate) const STORE_KEY: &str = "revoked";

/// Revoked task ids, each until it lapses; at most [`MAX_SET_MEMBERS`].
#[derive(Default)]
pub(crate) struct RevokedSet {
    /// Whether `ids` may hold anything: the fast path of `contains`.
    any: AtomicBool,
    ids: Mutex<HashMap<TaskId, Instant>>,
}

impl RevokedSet {
    fn ids(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Instant>> {
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `id` is revoked.
    pub(crate) fn contains(&self, id: TaskId) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        self.ids().get(&id).is_some_and(|until| *until > now)
    }

    /// Remembers `id` for `keep_for` (or longer, if it was already).
    pub(crate) fn insert(&self, id: TaskId, keep_for: Duration) {
        let now = Instant::now();
        let mut ids = self.ids();
        let until = now + keep_for;
        let kept = ids.entry(id).or_insert(until);
        *kept = (*kept).max(until);
        if ids.len() > MAX_SET_MEMBERS {
            ids.retain(|_, until| *until > now);
            while ids.len() > MAX_SET_MEMBERS {
                let first = ids
                    .iter()
                    .min_by_key(|(_, until)| **until)
                    .map(|(id, _)| *id);
                match first {
                    Some(first) => ids.remove(&first),
                    None => break,
                };
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// The ids it remembers, sorted (lapsed ones are dropped first).
    pub(crate) fn ids_now(&self) -> Vec<TaskId> {
        let now = Instant::now();
        let mut ids = self.ids();
        ids.retain(|_, until| *until > now);
        let mut listed: Vec<TaskId> = ids.keys().copied().collect();
        listed.sort_unstable();
        listed
    }

    /// How many ids it remembers (lapsed ones are dropped first).
    pub(crate) fn len(&self) -> usize {
        let now = Instant::now();
        let mut ids = self.ids();
        ids.retain(|_, until| *until > now);
        ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn revokes_lapse_and_the_set_stays_bounded() {
        let revoked = RevokedSet::default();
        let (first, second) = (TaskId::new(), TaskId::new());
        assert!(!revoked.contains(first));
        revoked.insert(first, Duration::from_secs(10));
        revoked.insert(second, Duration::from_secs(60));
        // A shorter time does not cut a longer one.
        revoked.insert(second, Duration::from_secs(1));
        assert!(revoked.contains(first) && revoked.contains(second));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!revoked.contains(first) && revoked.contains(second));
        assert_eq!(revoked.len(), 1);

        for _ in 0..MAX_SET_MEMBERS {
            revoked.insert(TaskId::new(), Duration::from_secs(600));
        }
        assert_eq!(revoked.len(), MAX_SET_MEMBERS);
        // The one that lapses first went first.
        assert!(!revoked.contains(second));
    }
}
