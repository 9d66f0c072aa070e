use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::RateLimit;

/// Spaces runs of one task evenly: each run reserves the next free slot and waits for it.
pub(super) struct RateLimiter {
    interval: Duration,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub(super) fn new(limit: RateLimit) -> Self {
        Self {
            interval: limit.interval(),
            next_free: Mutex::new(None),
        }
    }

    /// Waits until this run may start.
    pub(super) async fn acquire(&self) {
        let slot = {
            let now = Instant::now();
            let mut next_free = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let slot = next_free.map_or(now, |next| next.max(now));
            *next_free = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}
