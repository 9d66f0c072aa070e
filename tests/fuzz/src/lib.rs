//! What the fuzz targets check, one function a target, each taking the fuzzer's bytes.
//!
//! Every function reads the bytes as something a worker, a producer or a monitor receives from a
//! broker (or from whoever can write to it), and panics only when celeriac breaks a promise: a
//! decoder panicking, refusing to read back what it wrote, or reading past its limits. The fuzz
//! targets in `fuzz_targets/` call them under libFuzzer (nightly, `cargo fuzz`); `tests/corpus.rs`
//! replays every input of the committed corpus through them on stable, as part of the test suite.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use celeriac::codec::{BincodeCodec, CodecError, CodecExt, DecodeLimits, JsonCodec};
use celeriac::{Codec, Envelope};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A target's check of one input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, with their checks (the corpus replay walks this list).
pub const TARGETS: &[(&str, Check)] = &[
    ("envelope", envelope),
    ("codecs", codecs),
    ("redis_reply", redis_reply),
    ("kombu", kombu),
    ("amqp_frame", amqp_frame),
    ("celery_wire", celery_wire),
    ("events", events),
];

/// A small limit, so that the limit's check is exercised by inputs the fuzzer can make.
const SMALL_LIMIT: usize = 256;

/// A message as a worker decodes it: celeriac's envelope, Celery's JSON message, or the legacy
/// layout. What decodes re-encodes, and reads back equal; nothing over the limit is read.
pub fn envelope(data: &[u8]) {
    let limits = DecodeLimits::default();
    if let Ok(envelope) = Envelope::from_bytes(data, &limits) {
        let bytes = envelope.to_bytes().expect("a decoded envelope encodes");
        let generous = DecodeLimits::default().max_message_bytes(bytes.len().max(data.len()));
        let again = Envelope::from_bytes(&bytes, &generous).expect("an encoded envelope decodes");
        assert_eq!(again, envelope, "an envelope reads back as it was written");
        // Celery's format may refuse it (arguments of another codec), but never panics.
        let _ = celeriac::fuzzing::celery_message(&envelope);
    }
    let small = DecodeLimits::default().max_message_bytes(SMALL_LIMIT);
    if data.len() > SMALL_LIMIT {
        assert!(matches!(
            Envelope::from_bytes(data, &small),
            Err(CodecError::TooLarge { .. })
        ));
    }
}

/// A task's arguments, shaped as real tasks' are.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    mobile: String,
    code: u32,
    tags: BTreeMap<String, Vec<u8>>,
    kind: Kind,
    note: Option<Box<Note>>,
}

/// Not recursive: with bincode, a recursive argument type has no depth limit (see
/// `docs/reliability.md`).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Note {
    text: String,
    at: Option<(u64, i32)>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Kind {
    Sms,
    Email(u8),
    Call { seconds: i64, retry: bool },
}

/// Task arguments through both codecs, as several argument types: what decodes round-trips, and
/// a workflow's argument splicing never panics.
pub fn codecs(data: &[u8]) {
    let limits = DecodeLimits::default();
    let codecs: [&dyn Codec; 2] = [&BincodeCodec::new(), &JsonCodec::new()];
    for codec in codecs {
        round_trip::<(String, u32)>(codec, data, &limits);
        round_trip::<Vec<Option<i64>>>(codec, data, &limits);
        round_trip::<Order>(codec, data, &limits);
        round_trip::<(Vec<String>, BTreeMap<String, u64>)>(codec, data, &limits);
        let (first, rest) = data.split_at(data.len() / 2);
        let _ = codec.prepend_arg(first, rest);
        let _ = codec.join_seq(&[first, rest]);
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    codec: &dyn Codec,
    data: &[u8],
    limits: &DecodeLimits,
) {
    if let Ok(value) = codec.decode::<T>(data, limits) {
        let bytes = codec.encode(&value).expect("a decoded value encodes");
        let again: T = codec
            .decode(
                &bytes,
                &DecodeLimits::default().max_message_bytes(usize::MAX),
            )
            .expect("an encoded value decodes");
        assert_eq!(
            again,
            value,
            "{} reads back what it wrote",
            codec.content_type()
        );
    }
}

/// A reply to a worker's `XREADGROUP`, read by celeriac's own bounded reader: no entry over the
/// budget is kept, and each payload kept goes to the envelope decoder.
pub fn redis_reply(data: &[u8]) {
    let Some((&budget, reply)) = data.split_first() else {
        return;
    };
    // 255: no budget, as the connection reads the replies to `AUTH` and `SELECT`.
    let budget = match budget {
        255 => usize::MAX,
        budget => usize::from(budget) * 16,
    };
    for payload in celeriac_redis::fuzzing::xreadgroup_reply(reply, budget) {
        assert!(
            payload.len() <= budget,
            "a payload of {} bytes was kept over a budget of {budget}",
            payload.len()
        );
        let _ = Envelope::from_bytes(&payload, &DecodeLimits::default());
    }
}

/// What Python's kombu (or anyone) writes in the Redis keys of Celery's layout: list items, dead
/// letter records, `unacked` entries, pidbox requests; the first byte picks which.
pub fn kombu(data: &[u8]) {
    let Some((&kind, data)) = data.split_first() else {
        return;
    };
    let limits = DecodeLimits::default();
    match kind % 4 {
        0 => {
            let message = celeriac_redis::fuzzing::kombu_list_item(data);
            let _ = Envelope::from_bytes(&message, &limits);
        }
        1 => {
            if let Some(dead) = celeriac_redis::fuzzing::kombu_dead_record(data) {
                let _ = celeriac::fuzzing::dead_letter(&dead);
            }
        }
        2 => {
            if let Some(message) = celeriac_redis::fuzzing::kombu_unacked_entry(data) {
                let _ = Envelope::from_bytes(&message, &limits);
            }
        }
        _ => {
            let _ = celeriac_redis::fuzzing::kombu_pidbox_request(data);
        }
    }
}

/// A frame from RabbitMQ, vetted by celeriac's transport before lapin parses it: lapin only ever
/// sees frames the transport passed, a replaced frame passes itself and says why, and a content
/// header's properties go on to the consumer's readers.
pub fn amqp_frame(data: &[u8]) {
    use celeriac_amqp::fuzzing;
    let Some(vetted) = fuzzing::vet(data) else {
        return;
    };
    if vetted.replaced {
        assert!(
            fuzzing::passes_unchanged(&vetted.frame),
            "a replaced frame passes the check"
        );
    }
    // A frame lapin cannot parse closes the connection, replaced or not (RabbitMQ never sends one).
    let Some(properties) = fuzzing::parse_content_header(&vetted.frame) else {
        return;
    };
    let refused = fuzzing::refused_reason(&properties);
    if vetted.replaced {
        assert!(refused.is_some(), "a replaced frame carries the reason");
    }
    if let Some(message) = fuzzing::celery_message(&properties, data) {
        let _ = Envelope::from_bytes(&message, &DecodeLimits::default());
    }
}

/// Celery's other messages as celeriac reads them: remote-control requests and the replies sent
/// for them, worker events turned into Celery's, result metas, and a task's arguments bound to
/// its parameters; the first byte picks which.
pub fn celery_wire(data: &[u8]) {
    use celeriac_core::celery::{events, pidbox, results};
    let Some((&kind, data)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            let _ = pidbox::command_for(data, 1_764_500_000.0, 1_764_500_001.0);
        }
        1 => {
            // A reply topic (as `command_for` makes them) on the first line, the reply after.
            let (topic, reply) = split_line(data);
            let _ = pidbox::celery_reply(&String::from_utf8_lossy(topic), reply, 7);
        }
        2 => {
            let _ = events::celery_events(data, &AtomicU64::new(0), -1.5);
        }
        3 => {
            let _ = results::stored_meta("fuzz", data.to_vec());
            let _ = celeriac::fuzzing::celery_result_meta(data);
        }
        _ => {
            let (body, previous) = split_line(data);
            let _ = celeriac::fuzzing::celery_arguments(body, &["mobile", "code"], previous);
        }
    }
}

/// A message on the events channel, as the monitor, the dashboard and `celeriac events` read it.
pub fn events(data: &[u8]) {
    let _ = celeriac::fuzzing::event_batch(data);
}

fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&byte| byte == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}
