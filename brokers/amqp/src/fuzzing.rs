//! Entry points for the fuzz targets in `tests/fuzz` (feature `fuzzing`).
//!
//! Not an API: these functions exist so that the fuzzers reach the code that reads what RabbitMQ
//! hands a worker, and change without notice. None of them may panic, whatever the bytes.

use lapin::BasicProperties;

use crate::frames::{self, Verdict};

/// The largest content-header frame the transport holds to vet (RabbitMQ's default `frame_max`).
pub const MAX_FRAME: usize = 128 * 1024;

/// A frame as the transport hands it to lapin.
#[derive(Debug)]
pub struct Vetted {
    /// The frame's bytes.
    pub frame: Vec<u8>,
    /// Whether its headers were refused and replaced by the reason.
    pub replaced: bool,
}

/// Vets the frame at the start of `bytes` as the transport does; `None` when `bytes` do not hold
/// a whole frame.
pub fn vet(bytes: &[u8]) -> Option<Vetted> {
    match frames::vet(bytes, MAX_FRAME) {
        Verdict::NeedMore => None,
        Verdict::Pass(len) => Some(Vetted {
            frame: bytes.get(..len)?.to_vec(),
            replaced: false,
        }),
        Verdict::Replace { frame, .. } => Some(Vetted {
            frame,
            replaced: true,
        }),
    }
}

/// Whether the transport passes `frame` on whole and unchanged.
pub fn passes_unchanged(frame: &[u8]) -> bool {
    frames::vet(frame, MAX_FRAME) == Verdict::Pass(frame.len())
}

/// lapin's parser (amq-protocol) on a frame: the properties of a content header, if it is one.
/// Only ever given frames the transport passed, as lapin only ever is.
pub fn parse_content_header(frame: &[u8]) -> Option<BasicProperties> {
    match amq_protocol::frame::parse_frame(frame) {
        Ok((_, amq_protocol::frame::AMQPFrame::Header(_, header))) => Some(header.properties),
        _ => None,
    }
}

/// Why the transport refused a message's headers, as the consumer reads it.
pub fn refused_reason(properties: &BasicProperties) -> Option<String> {
    crate::link::text_header(
        properties.headers().as_ref(),
        frames::REFUSED_HEADERS_HEADER,
    )
}

/// What a worker in Celery's format is handed for a delivery with these properties and `body`:
/// kombu's envelope, for the worker's decoder.
pub fn celery_message(properties: &BasicProperties, body: &[u8]) -> Option<Vec<u8>> {
    crate::celery::from_parts(properties, body, "", 1, "celery")
}
