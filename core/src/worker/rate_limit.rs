use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::RateLimit;

/// Spaces runs of one task evenly: each run reserves the next free slot and waits for it. The
/// limit may change while the worker runs (remote control), or be none.
pub(super) struct RateLimiter {
    /// Nanoseconds between runs; zero: no limit.
    interval_nanos: AtomicU64,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    pub(super) fn new(limit: Option<RateLimit>) -> Self {
        let limiter = Self {
            interval_nanos: AtomicU64::new(0),
            next_free: Mutex::new(None),
        };
        limiter.set(limit);
        limiter
    }

    /// Changes the limit; runs waiting for a slot keep theirs.
    pub(super) fn set(&self, limit: Option<RateLimit>) {
        let nanos = limit.map_or(0, |limit| {
            u64::try_from(limit.interval().as_nanos())
                .unwrap_or(u64::MAX)
                .max(1)
        });
        self.interval_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Whether runs are limited at all.
    pub(super) fn is_limited(&self) -> bool {
        self.interval_nanos.load(Ordering::Relaxed) != 0
    }

    /// Waits until this run may start.
    pub(super) async fn acquire(&self) {
        let interval = Duration::from_nanos(self.interval_nanos.load(Ordering::Relaxed));
        if interval.is_zero() {
            return;
        }
        let slot = {
            let now = Instant::now();
            let mut next_free = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let slot = next_free.map_or(now, |next| next.max(now));
            *next_free = Some(slot + interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}
