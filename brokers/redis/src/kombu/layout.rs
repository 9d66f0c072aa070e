//! kombu's Redis layout: which key holds what, and how messages that are not Celery's are carried.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use celeriac_core::{BrokerError, DeadLetter};
use serde_json::{Value, json};

/// kombu's separator between a queue's name and its priority step.
const SEPARATOR: &str = "\x06\x16";

/// kombu's priority steps: a message of priority p goes to the list of the highest step ≤ p; the
/// list of step 0 is the queue's own name.
const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// The content type of a message that is not Celery's (celeriac's own envelope, or any bytes),
/// carried in base64 inside kombu's envelope. Python workers refuse it as a content type they do
/// not accept.
pub(super) const WRAPPED_CONTENT_TYPE: &str = "application/x-celeriac";

/// The keys of one deployment (one database and `global_keyprefix`).
#[derive(Clone, Debug)]
pub(super) struct Layout {
    prefix: String,
    pub(super) unacked: String,
    pub(super) unacked_index: String,
    pub(super) unacked_mutex: String,
}

impl Layout {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            unacked: format!("{prefix}unacked"),
            unacked_index: format!("{prefix}unacked_index"),
            unacked_mutex: format!("{prefix}unacked_mutex"),
        }
    }

    /// The lists of `queue`, in the order kombu serves them (lowest priority step first).
    pub(super) fn lists(&self, queue: &str) -> [String; 4] {
        PRIORITY_STEPS.map(|step| self.list(queue, step))
    }

    /// The list a message of `priority` waits in.
    pub(super) fn list_for(&self, queue: &str, priority: Option<u8>) -> String {
        let priority = priority.unwrap_or(0).min(9);
        let step = PRIORITY_STEPS
            .iter()
            .rev()
            .find(|step| **step <= priority)
            .copied()
            .unwrap_or(0);
        self.list(queue, step)
    }

    fn list(&self, queue: &str, step: u8) -> String {
        if step == 0 {
            format!("{}{queue}", self.prefix)
        } else {
            format!("{}{queue}{SEPARATOR}{step}", self.prefix)
        }
    }

    /// celeriac's dead-letter list of `queue` (kombu has none; Python workers never read it).
    pub(super) fn dead(&self, queue: &str) -> String {
        format!("{}_celeriac.dead.{queue}", self.prefix)
    }

    /// kombu's bindings of a named exchange.
    pub(super) fn bindings(&self, exchange: &str) -> String {
        format!("{}_kombu.binding.{exchange}", self.prefix)
    }

    /// The queues a binding set's members route `routing_key` to. A member is
    /// `<routing key>\x06\x16<pattern>\x06\x16<queue>`; a direct exchange matches the routing key
    /// exactly, a topic exchange by AMQP's `*` and `#` patterns.
    pub(super) fn routed(members: &[String], routing_key: &str) -> Vec<String> {
        members
            .iter()
            .filter_map(|member| {
                let mut parts = member.split(SEPARATOR);
                let key = parts.next()?;
                let _pattern = parts.next()?;
                let queue = parts.next()?;
                topic_matches(key, routing_key).then(|| queue.to_owned())
            })
            .collect()
    }
}

/// Whether AMQP binding key `pattern` matches `key` (`*` one word, `#` zero or more).
fn topic_matches(pattern: &str, key: &str) -> bool {
    fn matches(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.first(), key.first()) {
            (None, None) => true,
            (Some(&"#"), _) => {
                matches(&pattern[1..], key) || (!key.is_empty() && matches(pattern, &key[1..]))
            }
            (Some(&"*"), Some(_)) => matches(&pattern[1..], &key[1..]),
            (Some(word), Some(other)) => word == other && matches(&pattern[1..], &key[1..]),
            _ => false,
        }
    }
    if !pattern.contains(['*', '#']) {
        return pattern == key;
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    matches(&pattern, &key)
}

/// Seconds since the Unix epoch, as kombu scores `unacked_index`.
pub(super) fn epoch_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// The message as it goes on a list, and the priority it is placed by: a kombu envelope as given
/// (Celery's task messages, which celeriac's Celery mode writes), placed by its own
/// `properties.priority` as kombu places it; anything else wrapped in one, without priority.
pub(super) fn to_list_item(queue: &str, payload: &Bytes) -> (Bytes, Option<u8>) {
    if let Some(priority) = written_priority(payload).or_else(|| kombu_priority(payload)) {
        return (payload.clone(), priority);
    }
    let wrapped = json!({
        "body": base64::engine::general_purpose::STANDARD.encode(payload),
        "content-encoding": "binary",
        "content-type": WRAPPED_CONTENT_TYPE,
        "headers": {},
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid::Uuid::new_v4().to_string(),
        },
    });
    (Bytes::from(wrapped.to_string()), None)
}

/// What a consumer is handed for a list item: a wrapped message's own bytes, a kombu envelope
/// whole (celeriac's worker reads Celery's messages from it).
pub(super) fn from_list_item(item: Bytes) -> Bytes {
    #[derive(serde::Deserialize)]
    struct Wrapped<'a> {
        #[serde(rename = "content-type")]
        content_type: Option<&'a str>,
        #[serde(borrow)]
        body: Option<std::borrow::Cow<'a, str>>,
    }
    if !looks_wrapped(&item) {
        return item;
    }
    let Ok(wrapped) = serde_json::from_slice::<Wrapped<'_>>(&item) else {
        return item;
    };
    if wrapped.content_type != Some(WRAPPED_CONTENT_TYPE) {
        return item;
    }
    wrapped
        .body
        .and_then(|body| {
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .ok()
        })
        .map_or(item, Bytes::from)
}

/// What follows the base64 body of a wrapped message: [`to_list_item`] writes its keys in this
/// order (a JSON object's keys sorted, as `serde_json` writes them).
const WRAPPED_AFTER_BODY: &[u8] =
    br#"","content-encoding":"binary","content-type":"application/x-celeriac""#;

/// Whether `item` begins as [`to_list_item`] writes a wrapped message: found without parsing it,
/// so that Celery's messages (which celeriac writes compact too) are not read once more here.
fn looks_wrapped(item: &[u8]) -> bool {
    let Some(body) = item.strip_prefix(b"{\"body\":\"") else {
        return false;
    };
    // Base64 has no quote: the first one ends the body.
    memchr::memchr(b'"', body).is_some_and(|end| body[end..].starts_with(WRAPPED_AFTER_BODY))
}

/// How celeriac's Celery writer (`celeriac::celery`) ends a message: the properties last, the
/// delivery information, the priority, then the body's encoding and a uuid delivery tag.
const WRITTEN_DELIVERY_INFO: &[u8] = br#""delivery_info":{"exchange":"","routing_key":"#;
const WRITTEN_BEFORE_PRIORITY: &[u8] = br#""},"priority":"#;
const WRITTEN_AFTER_PRIORITY: &[u8] = br#","body_encoding":"base64","delivery_tag":""#;
const WRITTEN_END: &[u8] = br#""}}"#;
/// A uuid's length as text.
const UUID_LEN: usize = 36;

/// [`kombu_priority`] of a message as celeriac's Celery writer leaves it, read from its last
/// hundred bytes instead of parsing all of it (`serde_json` walking ~700 bytes a send); `None`
/// for any other shape, which is then parsed in full.
pub(super) fn written_priority(payload: &[u8]) -> Option<Option<u8>> {
    if !payload.starts_with(b"{\"body\":\"") {
        return None;
    }
    let rest = payload.strip_suffix(WRITTEN_END)?;
    let (rest, tag) = rest.split_at(rest.len().checked_sub(UUID_LEN)?);
    if !tag
        .iter()
        .all(|byte| byte.is_ascii_hexdigit() || *byte == b'-')
    {
        return None;
    }
    let rest = rest.strip_suffix(WRITTEN_AFTER_PRIORITY)?;
    let digits_at = rest.iter().rposition(|byte| !byte.is_ascii_digit())? + 1;
    let (rest, digits) = rest.split_at(digits_at);
    // At most three digits, so the number fits; more (or none) is left to the full parse.
    if digits.is_empty() || digits.len() > 3 {
        return None;
    }
    let rest = rest.strip_suffix(WRITTEN_BEFORE_PRIORITY)?;
    // The routing key: a string without escapes, after the delivery information's opening.
    let key_at = memchr::memrchr(b'"', rest)?;
    if memchr::memchr(b'\\', &rest[key_at..]).is_some() {
        return None;
    }
    if !rest[..key_at].ends_with(WRITTEN_DELIVERY_INFO) {
        return None;
    }
    let priority = digits
        .iter()
        .fold(0u16, |number, digit| number * 10 + u16::from(digit - b'0'));
    Some(Some(priority.min(9) as u8))
}

/// `Some(priority)` if `payload` is kombu's JSON envelope with the delivery information kombu
/// needs; `None` if it is not one.
fn kombu_priority(payload: &[u8]) -> Option<Option<u8>> {
    #[derive(serde::Deserialize)]
    struct Probe {
        properties: Properties,
    }
    #[derive(serde::Deserialize)]
    struct Properties {
        #[serde(rename = "delivery_info")]
        _delivery_info: serde::de::IgnoredAny,
        #[serde(default)]
        priority: Option<serde_json::Number>,
    }
    if payload.first() != Some(&b'{') {
        return None;
    }
    let probe = serde_json::from_slice::<Probe>(payload).ok()?;
    Some(
        probe
            .properties
            .priority
            .and_then(|priority| priority.as_u64().map(|priority| priority.min(9) as u8)),
    )
}

/// A dead-letter record: `<at ms> <reason length> <reason><list item>` (Lua builds the same).
pub(super) fn dead_record(reason: &str, item: &[u8], at: SystemTime) -> Vec<u8> {
    let at = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let mut record = format!("{at} {} {reason}", reason.len()).into_bytes();
    record.extend_from_slice(item);
    record
}

/// Reads a dead-letter record of `queue`.
pub(super) fn read_dead_record(queue: &str, record: &[u8]) -> Result<DeadLetter, BrokerError> {
    let malformed = || BrokerError::Invalid(format!("malformed dead-letter record in `{queue}`"));
    let mut fields = record.splitn(3, |byte| *byte == b' ');
    let at: u64 = number(fields.next()).ok_or_else(malformed)?;
    let reason_len: usize = number(fields.next()).ok_or_else(malformed)?;
    let rest = fields.next().ok_or_else(malformed)?;
    let reason = rest.get(..reason_len).ok_or_else(malformed)?;
    let item = Bytes::copy_from_slice(&rest[reason_len..]);
    Ok(DeadLetter::new(
        queue,
        from_list_item(item),
        String::from_utf8_lossy(reason),
        UNIX_EPOCH + std::time::Duration::from_millis(at),
    ))
}

fn number<T: std::str::FromStr>(field: Option<&[u8]>) -> Option<T> {
    std::str::from_utf8(field?).ok()?.parse().ok()
}

/// An `unacked` entry (`[envelope, exchange, routing_key]`) made ready to be restored: the
/// envelope marked redelivered, as kombu marks it, with where it goes.
pub(super) struct Restorable {
    pub(super) message: Vec<u8>,
    pub(super) exchange: String,
    pub(super) routing_key: String,
    pub(super) priority: Option<u8>,
}

impl Restorable {
    pub(super) fn from_entry(entry: &[u8]) -> Result<Self, String> {
        let (mut message, exchange, routing_key): (Value, String, String) =
            serde_json::from_slice(entry).map_err(|error| error.to_string())?;
        let Some(object) = message.as_object_mut() else {
            return Err("the message is not a JSON object".to_owned());
        };
        if let Some(Value::Object(headers)) = object.get_mut("headers") {
            headers.insert("redelivered".to_owned(), Value::Bool(true));
        }
        let mut priority = None;
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            priority = properties
                .get("priority")
                .and_then(Value::as_u64)
                .map(|p| p.min(9) as u8);
            if let Some(Value::Object(info)) = properties.get_mut("delivery_info") {
                info.insert("redelivered".to_owned(), Value::Bool(true));
            }
        }
        Ok(Self {
            message: serde_json::to_vec(&message).map_err(|error| error.to_string())?,
            exchange,
            routing_key,
            priority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_go_to_kombus_lists() {
        let layout = Layout::new("p:");
        assert_eq!(layout.list_for("celery", None), "p:celery");
        assert_eq!(layout.list_for("celery", Some(2)), "p:celery");
        assert_eq!(layout.list_for("celery", Some(3)), "p:celery\x06\x163");
        assert_eq!(layout.list_for("celery", Some(8)), "p:celery\x06\x166");
        assert_eq!(layout.list_for("celery", Some(200)), "p:celery\x06\x169");
        assert_eq!(layout.lists("q")[0], "p:q");
        assert_eq!(layout.unacked, "p:unacked");
    }

    #[test]
    fn other_payloads_are_wrapped_and_unwrapped_intact() {
        for payload in [&b"plain"[..], b"", b"{not json", b"\x00\xff binary"] {
            let payload = Bytes::copy_from_slice(payload);
            let (item, priority) = to_list_item("q", &payload);
            assert_eq!(priority, None);
            assert_eq!(kombu_priority(&item), Some(Some(0)));
            assert_eq!(from_list_item(item), payload);
        }
    }

    #[test]
    fn kombu_envelopes_travel_as_they_are() {
        let message = Bytes::from_static(
            br#"{"body": "W10=", "content-type": "application/json", "headers": {}, "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}}}"#,
        );
        assert_eq!(to_list_item("q", &message), (message.clone(), None));
        let prioritised = Bytes::from_static(
            br#"{"body": "W10=", "properties": {"priority": 7, "delivery_info": {"exchange": "", "routing_key": "q"}}}"#,
        );
        assert_eq!(
            to_list_item("q", &prioritised),
            (prioritised.clone(), Some(7))
        );
        assert_eq!(from_list_item(message.clone()), message);
        // As celeriac writes Celery's messages: compact, the body first.
        let compact = Bytes::from_static(
            br#"{"body":"W10=","content-encoding":"utf-8","content-type":"application/json","headers":{},"properties":{"delivery_info":{"exchange":"","routing_key":"q"}}}"#,
        );
        assert!(!looks_wrapped(&compact));
        assert_eq!(from_list_item(compact.clone()), compact);
    }

    #[test]
    fn the_written_priority_is_read_from_the_end_as_a_full_parse_reads_it() {
        let written_to = |key: &str, priority: &str, tag: &str| {
            format!(
                r#"{{"body":"W10=","content-encoding":"utf-8","content-type":"application/json","headers":{{"lang":"rs","task":"t"}},"properties":{{"correlation_id":"c","reply_to":"","delivery_mode":2,"delivery_info":{{"exchange":"","routing_key":"{key}"}},"priority":{priority},"body_encoding":"base64","delivery_tag":"{tag}"}}}}"#
            )
        };
        let written = |priority: &str, tag: &str| written_to("q", priority, tag);
        let tag = "0b9f0e0c-3c1e-4c59-9f0e-7a3c2b1d4e5f";
        for (priority, expected) in [
            ("0", Some(0)),
            ("5", Some(5)),
            ("9", Some(9)),
            ("255", Some(9)),
        ] {
            let message = written(priority, tag);
            assert_eq!(written_priority(message.as_bytes()), Some(expected));
            assert_eq!(kombu_priority(message.as_bytes()), Some(expected));
            let message = Bytes::from(message);
            assert_eq!(to_list_item("q", &message), (message.clone(), expected));
        }
        // Shapes the writer does not leave are parsed in full, with the same answers.
        for (priority, tag) in [
            ("-1", tag),
            ("1000", tag),
            ("", tag),
            ("3", "not-a-uuid"),
            ("3", "0b9f0e0c-3c1e-4c59-9f0e-7a3c2b1d4e5\""),
        ] {
            let message = written(priority, tag);
            assert_eq!(written_priority(message.as_bytes()), None, "{message}");
        }
        // A routing key with an escape is left to the parse too, which reads it right.
        let escaped = written_to(r#"q\"},\"priority\":7"#, "3", tag);
        assert_eq!(written_priority(escaped.as_bytes()), None);
        assert_eq!(kombu_priority(escaped.as_bytes()), Some(Some(3)));
        let spaced = br#"{"body": "W10=", "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}, "priority": 4, "body_encoding": "base64", "delivery_tag": "0b9f0e0c-3c1e-4c59-9f0e-7a3c2b1d4e5f"}}"#;
        assert_eq!(written_priority(spaced), None);
        assert_eq!(kombu_priority(spaced), Some(Some(4)));
        // Without the delivery information, it is not kombu's envelope: wrapped, as before.
        let no_delivery_info = br#"{"body":"W10=","properties":{"priority":4,"body_encoding":"base64","delivery_tag":"0b9f0e0c-3c1e-4c59-9f0e-7a3c2b1d4e5f"}}"#;
        assert_eq!(written_priority(no_delivery_info), None);
        assert_eq!(kombu_priority(no_delivery_info), None);
    }

    #[test]
    fn the_wrapped_shape_is_what_to_list_item_writes() {
        let (item, _) = to_list_item("q", &Bytes::from_static(b"payload"));
        assert!(looks_wrapped(&item));
        // Anything that only starts like one is read in full, and kept whole if it is not one.
        let lookalike = Bytes::from_static(
            br#"{"body":"cGF5bG9hZA==","content-encoding":"binary","content-type":"application/x-celeriac-other"}"#,
        );
        assert_eq!(from_list_item(lookalike.clone()), lookalike);
    }

    #[test]
    fn dead_records_round_trip_and_malformed_ones_are_errors() {
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_123);
        let (item, _) = to_list_item("q", &Bytes::from_static(b"task"));
        let record = dead_record("a reason with spaces", &item, at);
        let letter = read_dead_record("q", &record).unwrap();
        assert_eq!(letter.reason, "a reason with spaces");
        assert_eq!(letter.payload, Bytes::from_static(b"task"));
        assert_eq!(letter.at, at);
        for bad in [&b""[..], b"12", b"12 x y", b"12 99 short"] {
            assert!(read_dead_record("q", bad).is_err());
        }
    }

    #[test]
    fn bindings_route_by_key_and_by_topic_pattern() {
        let members = vec![
            "sms\x06\x16\x06\x16sms_queue".to_owned(),
            "task.#\x06\x16\x06\x16all_tasks".to_owned(),
            "task.*.done\x06\x16\x06\x16done".to_owned(),
        ];
        assert_eq!(Layout::routed(&members, "sms"), ["sms_queue"]);
        assert_eq!(
            Layout::routed(&members, "task.a.done"),
            ["all_tasks", "done"]
        );
        assert_eq!(Layout::routed(&members, "task"), ["all_tasks"]);
        assert!(Layout::routed(&members, "other").is_empty());
    }

    #[test]
    fn restoring_marks_the_message_redelivered() {
        let entry = br#"[{"body": "W10=", "headers": {"task": "t"}, "properties": {"priority": 6, "delivery_info": {"exchange": "", "routing_key": "q"}}}, "", "q"]"#;
        let restorable = Restorable::from_entry(entry).unwrap();
        let message: Value = serde_json::from_slice(&restorable.message).unwrap();
        assert_eq!(message["headers"]["redelivered"], true);
        assert_eq!(message["properties"]["delivery_info"]["redelivered"], true);
        assert_eq!(restorable.priority, Some(6));
        assert_eq!(
            (
                restorable.exchange.as_str(),
                restorable.routing_key.as_str()
            ),
            ("", "q")
        );
        assert!(Restorable::from_entry(b"not json").is_err());
    }
}
