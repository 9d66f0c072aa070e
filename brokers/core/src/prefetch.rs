//! A consumer's prefetch window, for broker implementations.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Bounds how many of one consumer's deliveries are unsettled at once (contract rule 2 of
/// [`Broker`](super::Broker)). A consumer takes a [`PrefetchSlot`] per delivery and keeps it in the
/// delivery's acknowledger; settling or dropping the delivery frees the slot.
///
/// Cheaper than a semaphore permit per message: taking and freeing a slot are atomic operations,
/// and only freeing a slot of a full window wakes the (single) consumer waiting for one.
///
/// ```
/// use celeriac::broker::PrefetchWindow;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let window = PrefetchWindow::new(2);
/// let first = window.acquire().await;
/// let second = window.try_acquire().expect("a second slot");
/// assert!(window.try_acquire().is_none(), "the window is full");
/// drop(first);
/// assert!(window.try_acquire().is_some());
/// # drop(second); }
/// ```
pub struct PrefetchWindow {
    limit: usize,
    in_flight: AtomicUsize,
    freed: Notify,
}

impl PrefetchWindow {
    /// A window of `limit` deliveries (at least one).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            in_flight: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Takes a slot, waiting until one is free. Meant for one consumer task per window.
    pub async fn acquire(self: &Arc<Self>) -> PrefetchSlot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_acquire() {
                return slot;
            }
            freed.await;
        }
    }

    /// Takes a slot if one is free.
    pub fn try_acquire(self: &Arc<Self>) -> Option<PrefetchSlot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.limit).then_some(taken + 1)
            })
            .ok()
            .map(|_| PrefetchSlot {
                window: self.clone(),
            })
    }

    /// Slots taken and not freed yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl fmt::Debug for PrefetchWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefetchWindow")
            .field("limit", &self.limit)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// One unsettled delivery's place in a [`PrefetchWindow`]; dropping it frees the place.
pub struct PrefetchSlot {
    window: Arc<PrefetchWindow>,
}

impl Drop for PrefetchSlot {
    fn drop(&mut self) {
        if self.window.in_flight.fetch_sub(1, Ordering::AcqRel) == self.window.limit {
            self.window.freed.notify_one();
        }
    }
}

impl fmt::Debug for PrefetchSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrefetchSlot").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::PrefetchWindow;

    #[tokio::test(start_paused = true)]
    async fn a_waiting_consumer_wakes_when_a_slot_frees() {
        let window = PrefetchWindow::new(1);
        let held = window.acquire().await;
        let waiter = tokio::spawn({
            let window = window.clone();
            async move { window.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "the window is full");
        drop(held);
        let slot = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(window.in_flight(), 1);
        drop(slot);
        assert_eq!(window.in_flight(), 0);
    }
}
