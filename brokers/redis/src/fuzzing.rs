//! Entry points for the fuzz targets in `tests/fuzz` (feature `fuzzing`).
//!
//! Not an API: these functions exist so that the fuzzers reach the parsers that read what Redis
//! (or another program writing to it, such as Python's kombu) hands a worker, and change without
//! notice. None of them may panic, whatever the bytes.

use bytes::Bytes;
use celeriac_core::DeadLetter;

/// Reads `bytes` as the reply to a worker's `XREADGROUP`, with `budget` bytes of fields per entry,
/// and returns the payloads of the entries a worker would decode.
pub fn xreadgroup_reply(bytes: &[u8], budget: usize) -> Vec<Vec<u8>> {
    let Ok(reply) = crate::bounded::read_reply_from(bytes, budget) else {
        return Vec::new();
    };
    crate::reply::stream_entries(reply)
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .filter_map(|entry| entry.payload)
        .collect()
}

/// What a worker on kombu's layout is handed for a list item: the message to decode.
pub fn kombu_list_item(bytes: &[u8]) -> Bytes {
    crate::kombu::fuzzing::list_item(Bytes::copy_from_slice(bytes))
}

/// Reads `bytes` as a dead-letter record on kombu's layout.
pub fn kombu_dead_record(bytes: &[u8]) -> Option<DeadLetter> {
    crate::kombu::fuzzing::dead_record(bytes)
}

/// Reads `bytes` as an entry of kombu's `unacked` hash, as the restore sweep does: the message it
/// would put back.
pub fn kombu_unacked_entry(bytes: &[u8]) -> Option<Vec<u8>> {
    crate::kombu::fuzzing::unacked_entry(bytes)
}

/// Reads `bytes` as a message on kombu's pidbox channel: the command a worker would run.
pub fn kombu_pidbox_request(bytes: &[u8]) -> Option<Vec<u8>> {
    crate::kombu::fuzzing::pidbox_request(bytes)
}
