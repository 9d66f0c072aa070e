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

use crate::control::ReservedTask;

/// Fetched deliveries not yet taken by a lane, oldest first.
#[derive(Default)]
pub(super) struct Waiting {
    /// `(number, payload, queue)`, numbered from 0 in fetch order.
    noted: Mutex<VecDeque<(u64, Bytes, Arc<str>)>>,
    /// Deliveries noted so far: the next one's number.
    fetched: AtomicU64,
    /// Deliveries the lanes took so far.
    taken: AtomicU64,
}

impl Waiting {
    /// Notes a delivery the fetch loop is about to hand to the lanes.
    pub(super) fn fetched(&self, payload: &Bytes, queue: &Arc<str>) {
        let taken = self.taken.load(Ordering::Acquire);
        let number = self.fetched.fetch_add(1, Ordering::Relaxed);
        let mut noted = self.lock();
        // Forget the ones lanes took: what stays is bounded by the waiting ones.
        while noted.front().is_some_and(|(older, _, _)| *older < taken) {
            noted.pop_front();
        }
        noted.push_back((number, payload.clone(), queue.clone()));
    }

    /// Counts a delivery a lane took.
    pub(super) fn taken(&self) {
        self.taken.fetch_add(1, Ordering::Release);
    }

    /// The deliveries waiting, oldest first, read with `open`; those it cannot read are left out.
    pub(super) fn list<E>(
        &self,
        open: impl Fn(&[u8]) -> Result<crate::Envelope, E>,
    ) -> Vec<ReservedTask> {
        let taken = self.taken.load(Ordering::Acquire);
        let waiting: Vec<(Bytes, Arc<str>)> = self
            .lock()
            .iter()
            .filter(|(number, _, _)| *number >= taken)
            .map(|(_, payload, queue)| (payload.clone(), queue.clone()))
            .collect();
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

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Bytes, Arc<str>)>> {
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
        let waiting = Waiting::default();
        let queue: Arc<str> = "celery".into();
        assert!(names(&waiting).is_empty());
        for task in ["a", "b", "c"] {
            waiting.fetched(&message(task), &queue);
        }
        assert_eq!(names(&waiting), ["a", "b", "c"]);
        waiting.taken();
        assert_eq!(names(&waiting), ["b", "c"]);
        // Noting another forgets the taken ones; undecodable bytes are left out of the list.
        waiting.fetched(&Bytes::from_static(b"not an envelope"), &queue);
        waiting.fetched(&message("d"), &queue);
        assert_eq!(waiting.lock().len(), 4);
        assert_eq!(names(&waiting), ["b", "c", "d"]);
        for _ in 0..4 {
            waiting.taken();
        }
        waiting.fetched(&message("e"), &queue);
        assert_eq!(waiting.lock().len(), 1);
        let listed = waiting.list(open);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].queue.as_str()),
            ("e", "celery")
        );
    }
}
