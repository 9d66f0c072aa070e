//! Entry points for the fuzz targets in `tests/fuzz` (feature `fuzzing`).
//!
//! Not an API: these functions exist so that the fuzzers reach code that is private to the crate,
//! and change without notice. Each takes bytes as they would arrive from a broker and must never
//! panic, whatever they are.

use std::collections::BTreeMap;

use crate::events::{Batch, Event};

/// Reads `bytes` as a message on the events channel, as [`Monitor`](crate::events::Monitor) and
/// the dashboard do, and folds its events into their state. Returns how many events it held.
pub fn event_batch(bytes: &[u8]) -> usize {
    let Ok(batch) = serde_json::from_slice::<Batch>(bytes) else {
        return 0;
    };
    let events: Vec<Event> = batch.into_events().collect();
    let now = tokio::time::Instant::now();
    let mut workers = BTreeMap::new();
    for event in &events {
        let _ = event.time();
        crate::events::monitor::observe(&mut workers, event.clone(), now);
    }
    for seen in workers.values() {
        let _ = crate::events::monitor::status_at(seen, now);
    }
    #[cfg(feature = "dashboard")]
    crate::dashboard::fuzz_observe(events.clone());
    events.len()
}

/// Summarises `dead` as the CLI's `dlq` verbs and the dashboard show it.
#[cfg(any(feature = "cli", feature = "dashboard"))]
pub fn dead_letter(dead: &crate::broker::DeadLetter) -> String {
    let limits = crate::codec::DecodeLimits::default();
    let letter = crate::broker::letter::Letter::read(dead, &limits);
    format!("{} {} {:?}", letter.when(), letter.reason, letter.task)
}

/// Reads `meta` as a Celery result meta, as `AsyncResult::get` does in Celery's format.
#[cfg(feature = "celery")]
pub fn celery_result_meta(meta: &[u8]) -> bool {
    crate::celery::from_meta(meta).is_ok()
}

/// Binds Celery's `[args, kwargs, embed]` body to a task's parameter names, as a worker does
/// before decoding the arguments; on success, also prepends `previous` (a chain's result) to them.
#[cfg(feature = "celery")]
pub fn celery_arguments(body: &[u8], names: &[&str], previous: &[u8]) -> Option<Vec<u8>> {
    let bound = crate::celery::bind(body, names).ok()?;
    let _ = crate::celery::prepend_result(previous, body);
    Some(bound)
}

/// `envelope` as Celery's task message (kombu's JSON envelope), for the fuzzers' seeds.
#[cfg(feature = "celery")]
pub fn celery_message(envelope: &crate::Envelope) -> Option<Vec<u8>> {
    crate::celery::encode(envelope).ok()
}
