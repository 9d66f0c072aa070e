//! The deliveries a worker fetched that wait for a free lane: what remote control's `reserved`
//! lists.
//!
//! The fetch loop notes each delivery (a reference count on its bytes, no copy) before it hands
//! it to the lanes; a lane counts each one it takes. The lanes' channel is first in, first out, so
//! the deliveries noted and not yet counted are exactly those waiting: at most `concurrency` in
//! the channel and one the fetch loop holds for a free lane. Deliveries the broker's client
//! prefetched but the loop has not taken are not seen here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use crossbeam_utils::CachePadded;

use crate::control::ReservedTask;

/// Fetched deliveries not yet taken by a lane, oldest first.
///
/// Kept cheap for the fetch loop, which notes every delivery: its lock is its own (the listing
/// takes it only when asked), it never reads what the lanes count, and it keeps its own copy of
/// a queue's name, made when the name changes, rather than share the delivery's with the lanes.
/// Each lane counts what it takes on a cache line of its own.
pub(super) struct Waiting {
    noted: CachePadded<Mutex<Noted>>,
    /// Deliveries each lane took so far.
    taken: Box<[CachePadded<AtomicU64>]>,
}

struct Noted {
    /// The newest deliveries noted, with their queues, oldest first: the last `fetched - taken`
    /// of them wait (never more than the capacity).
    entries: VecDeque<(Bytes, Arc<str>)>,
    /// The most that can wait: `concurrency + 1`.
    capacity: usize,
    /// Deliveries noted so far.
    fetched: u64,
    /// The queue of the newest delivery, this bookkeeping's own copy.
    queue: Arc<str>,
}

impl Waiting {
    /// Bookkeeping for a worker whose lanes' channel holds `concurrency` deliveries: with the one
    /// the fetch loop holds, at most `concurrency + 1` wait.
    pub(super) fn new(concurrency: usize) -> Self {
        Self {
            noted: CachePadded::new(Mutex::new(Noted {
                entries: VecDeque::with_capacity(concurrency + 1),
                capacity: concurrency + 1,
                fetched: 0,
                queue: Arc::from(""),
            })),
            taken: (0..concurrency)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Notes a delivery the fetch loop is about to hand to the lanes.
    pub(super) fn fetched(&self, payload: &Bytes, queue: &str) {
        let mut noted = self.lock();
        if *noted.queue != *queue {
            noted.queue = Arc::from(queue);
        }
        let queue = noted.queue.clone();
        // Full: the oldest was taken (no more than the capacity wait, this one included).
        if noted.entries.len() >= noted.capacity {
            noted.entries.pop_front();
        }
        noted.entries.push_back((payload.clone(), queue));
        noted.fetched += 1;
    }

    /// Counts a delivery lane `lane` took.
    pub(super) fn taken(&self, lane: usize) {
        if let Some(taken) = self.taken.get(lane) {
            taken.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The deliveries waiting, oldest first, read with `open`; those it cannot read are left out.
    pub(super) fn list<E>(
        &self,
        open: impl Fn(&[u8]) -> Result<crate::Envelope, E>,
    ) -> Vec<ReservedTask> {
        let waiting: Vec<(Bytes, Arc<str>)> = {
            let noted = self.lock();
            // Read under the lock: every delivery noted before it was counted when taken.
            let taken: u64 = self
                .taken
                .iter()
                .map(|taken| taken.load(Ordering::Relaxed))
                .sum();
            let count = usize::try_from(noted.fetched.saturating_sub(taken))
                .unwrap_or(usize::MAX)
                .min(noted.entries.len());
            noted
                .entries
                .iter()
                .skip(noted.entries.len() - count)
                .map(|(payload, queue)| (payload.clone(), queue.clone()))
                .collect()
        };
        waiting
            .into_iter()
            .filter_map(|(payload, queue)| {
                let envelope = open(&payload).ok()?;
                Some(ReservedTask {
                    id: envelope.id,
                    name: envelope.task,
                    queue: queue.to_string(),
                    retries: envelope.retries,
                })
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Noted> {
        self.noted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;
    use crate::codec::DecodeLimits;

    fn message(task: &str) -> Bytes {
        let envelope = Envelope::new(task, "celery", Vec::new(), "application/x-bincode");
        Bytes::from(envelope.to_bytes().unwrap_or_default())
    }

    fn open(bytes: &[u8]) -> Result<Envelope, crate::codec::CodecError> {
        Envelope::from_bytes(bytes, &DecodeLimits::default())
    }

    fn names(waiting: &Waiting) -> Vec<String> {
        waiting
            .list(open)
            .into_iter()
            .map(|task| task.name)
            .collect()
    }

    #[test]
    fn lists_what_no_lane_took_in_fetch_order() {
        // Three lanes: at most four wait.
        let waiting = Waiting::new(3);
        let (celery, sms) = ("celery", "sms");
        assert!(names(&waiting).is_empty());
        for task in ["a", "b", "c"] {
            waiting.fetched(&message(task), celery);
        }
        assert_eq!(names(&waiting), ["a", "b", "c"]);
        waiting.taken(0);
        assert_eq!(names(&waiting), ["b", "c"]);
        // Bytes that are not an envelope are left out of the list; the oldest noted goes when
        // the notes are full.
        waiting.fetched(&Bytes::from_static(b"not an envelope"), celery);
        waiting.fetched(&message("d"), celery);
        assert_eq!(waiting.lock().entries.len(), 4);
        assert_eq!(names(&waiting), ["b", "c", "d"]);
        // Lanes count apart; the list adds them up.
        for lane in [1, 2, 1, 0] {
            waiting.taken(lane);
        }
        assert!(names(&waiting).is_empty());
        waiting.fetched(&message("e"), sms);
        assert_eq!(waiting.lock().entries.len(), 4);
        let listed = waiting.list(open);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].queue.as_str()),
            ("e", "sms")
        );
        // A queue's name is copied once while its deliveries follow each other (a broker may
        // make a copy per delivery).
        waiting.fetched(&message("f"), &String::from("sms"));
        let noted = waiting.lock();
        assert!(Arc::ptr_eq(&noted.entries[2].1, &noted.entries[3].1));
    }
}
