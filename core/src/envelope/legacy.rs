//! Envelopes of earlier formats, still decoded so messages queued by an older build run after an
//! upgrade: format 4 (format 5 without `workflow` and `reply_to`: no workflows or RPC results then), format 3 (format 4 without
//! `store_result`: nothing was stored then, and nothing is now), format 2 (fields that had no meaning yet: group, origin, shadow, ignore_result, reply_to,
//! a soft time limit) and format 1 (format 2 without `args_schema`). The dropped fields were never
//! set by any celeriac build, so nothing of meaning is lost in the conversion.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Envelope, TaskId};
use crate::codec::{CodecError, DecodeLimits};

const MAGIC_V4: [u8; 4] = *b"CLR\x04";
const MAGIC_V3: [u8; 4] = *b"CLR\x03";
const MAGIC_V2: [u8; 4] = *b"CLR\x02";
const MAGIC_V1: [u8; 4] = *b"CLR\x01";

#[derive(Serialize, Deserialize)]
struct TimeLimitsV2 {
    soft: Option<Duration>,
    hard: Option<Duration>,
}

/// The format-2 layout, field for field.
#[derive(Serialize, Deserialize)]
struct EnvelopeV2 {
    id: TaskId,
    task: String,
    queue: String,
    args: Vec<u8>,
    content_type: String,
    retries: u32,
    eta: Option<SystemTime>,
    expires: Option<SystemTime>,
    priority: Option<u8>,
    time_limit: TimeLimitsV2,
    created_at: SystemTime,
    parent_id: Option<TaskId>,
    root_id: Option<TaskId>,
    group_id: Option<TaskId>,
    origin: Option<String>,
    shadow: Option<String>,
    ignore_result: bool,
    reply_to: Option<String>,
    headers: BTreeMap<String, String>,
    args_schema: Option<u64>,
}

impl From<EnvelopeV2> for Envelope {
    fn from(old: EnvelopeV2) -> Self {
        Envelope {
            id: old.id,
            task: old.task,
            queue: old.queue,
            args: old.args,
            content_type: old.content_type,
            retries: old.retries,
            eta: old.eta,
            expires: old.expires,
            priority: old.priority,
            time_limit: old.time_limit.hard,
            created_at: old.created_at,
            parent_id: old.parent_id,
            root_id: old.root_id,
            headers: old.headers,
            args_schema: old.args_schema,
            store_result: false,
            workflow: None,
            reply_to: None,
        }
    }
}

/// Decodes a format-1, 2, 3 or 4 envelope; `None` when `bytes` is none of them.
pub(super) fn decode(bytes: &[u8], limits: &DecodeLimits) -> Option<Result<Envelope, CodecError>> {
    // Formats 3 and 4 lack only the last fields: `store_result` (`false`, one zero byte),
    // `workflow` and `reply_to` (`None`, one zero byte each).
    let missing = if bytes.starts_with(&MAGIC_V4) {
        Some(2)
    } else if bytes.starts_with(&MAGIC_V3) {
        Some(3)
    } else {
        None
    };
    if let Some(missing) = missing {
        let mut body = bytes[MAGIC_V4.len()..].to_vec();
        body.resize(body.len() + missing, 0);
        return Some(crate::codec::bincode::decode_typed::<Envelope>(
            &body, limits,
        ));
    }
    let decoded = if let Some(body) = bytes.strip_prefix(&MAGIC_V2) {
        crate::codec::bincode::decode_typed::<EnvelopeV2>(body, limits)
    } else if let Some(body) = bytes.strip_prefix(&MAGIC_V1) {
        // Format 1 lacks only the last field: it reads as format 2 with `args_schema` absent
        // (bincode's `None` is one zero byte).
        let mut body = body.to_vec();
        body.push(0);
        crate::codec::bincode::decode_typed::<EnvelopeV2>(&body, limits)
    } else {
        return None;
    };
    Some(decoded.map(Envelope::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> EnvelopeV2 {
        let mut headers = BTreeMap::new();
        headers.insert("k".to_owned(), "v".to_owned());
        EnvelopeV2 {
            id: TaskId::new(),
            task: "t".into(),
            queue: "q".into(),
            args: vec![1, 2, 3],
            content_type: "application/json".into(),
            retries: 2,
            eta: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            expires: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
            priority: Some(7),
            time_limit: TimeLimitsV2 {
                soft: Some(Duration::from_secs(5)),
                hard: Some(Duration::from_millis(7500)),
            },
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000),
            parent_id: Some(TaskId::new()),
            root_id: Some(TaskId::new()),
            group_id: None,
            origin: None,
            shadow: None,
            ignore_result: false,
            reply_to: None,
            headers,
            args_schema: Some(0xfeed_f00d),
        }
    }

    fn check(decoded: &Envelope, old: &EnvelopeV2, schema: Option<u64>) {
        assert_eq!(decoded.id, old.id);
        assert_eq!((decoded.task.as_str(), decoded.queue.as_str()), ("t", "q"));
        assert_eq!(decoded.args, [1, 2, 3]);
        assert_eq!(decoded.retries, 2);
        assert_eq!((decoded.eta, decoded.expires), (old.eta, old.expires));
        assert_eq!(decoded.priority, Some(7));
        assert_eq!(decoded.time_limit, Some(Duration::from_millis(7500)));
        assert_eq!(decoded.created_at, old.created_at);
        assert_eq!(
            (decoded.parent_id, decoded.root_id),
            (old.parent_id, old.root_id)
        );
        assert_eq!(decoded.headers, old.headers);
        assert_eq!(decoded.args_schema, schema);
    }

    #[test]
    fn format_2_messages_still_decode() {
        let old = v2();
        let mut bytes = MAGIC_V2.to_vec();
        bytes.extend(crate::codec::bincode::encode_typed(&old).unwrap());
        let decoded = Envelope::from_bytes(&bytes, &DecodeLimits::default()).unwrap();
        check(&decoded, &old, Some(0xfeed_f00d));
    }

    #[test]
    fn format_1_messages_still_decode() {
        let mut old = v2();
        old.args_schema = None;
        let body = crate::codec::bincode::encode_typed(&old).unwrap();
        // Format 1: the same fields but the last (`None`: one zero byte), under magic version 1.
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&body[..body.len() - 1]);
        let decoded = Envelope::from_bytes(&bytes, &DecodeLimits::default()).unwrap();
        check(&decoded, &old, None);
    }

    #[test]
    fn format_3_messages_still_decode() {
        let mut envelope: Envelope = v2().into();
        envelope.store_result = true;
        let body = crate::codec::bincode::encode_typed(&envelope).unwrap();
        // Format 3: format 5 without its last three fields (`store_result`, `workflow`,
        // `reply_to`: a byte each).
        let mut bytes = MAGIC_V3.to_vec();
        bytes.extend_from_slice(&body[..body.len() - 3]);
        let decoded = Envelope::from_bytes(&bytes, &DecodeLimits::default()).unwrap();
        assert!(!decoded.store_result);
        envelope.store_result = false;
        assert_eq!(decoded, envelope);
    }

    #[test]
    fn format_4_messages_still_decode() {
        let mut envelope: Envelope = v2().into();
        envelope.store_result = true;
        let body = crate::codec::bincode::encode_typed(&envelope).unwrap();
        // Format 4: format 5 without its last two fields (`workflow`, `reply_to`: a byte each).
        let mut bytes = MAGIC_V4.to_vec();
        bytes.extend_from_slice(&body[..body.len() - 2]);
        let decoded = Envelope::from_bytes(&bytes, &DecodeLimits::default()).unwrap();
        assert_eq!(decoded, envelope);
    }

    #[test]
    fn a_truncated_format_2_message_is_an_error() {
        let mut bytes = MAGIC_V2.to_vec();
        bytes.extend(crate::codec::bincode::encode_typed(&v2()).unwrap());
        for cut in 0..bytes.len() {
            assert!(Envelope::from_bytes(&bytes[..cut], &DecodeLimits::default()).is_err());
        }
    }
}
