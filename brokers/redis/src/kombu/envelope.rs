//! The check of a message taken off kombu's lists: is it a kombu envelope, and was it delivered
//! before? `take.lua` records messages without decoding them (decoding in Lua cost Redis more than
//! the rest of the take), so the consumer reads these two facts here, in one pass that skips what
//! it does not need.

use std::fmt;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, Visitor};

/// Why a taken message is not a kombu envelope (it is dead-lettered with this reason).
pub(super) const NOT_AN_ENVELOPE: &str = "not a kombu message: no properties.delivery_info";

/// Whether `item` was delivered before (kombu marks a restored message in `headers` and in
/// `properties.delivery_info`), or `Err` when it is not a kombu envelope: not a JSON object, or
/// without an object at `properties.delivery_info`.
pub(super) fn redelivered(item: &[u8]) -> Result<bool, &'static str> {
    if written_fresh(item) {
        return Ok(false);
    }
    // serde reads a struct from an array too; an envelope is an object.
    if item.trim_ascii_start().first() != Some(&b'{') {
        return Err(NOT_AN_ENVELOPE);
    }
    let envelope: Envelope = serde_json::from_slice(item).map_err(|_| NOT_AN_ENVELOPE)?;
    Ok(envelope.headers.0 || envelope.properties.delivery_info.0)
}

/// Whether `item` is a message as celeriac's Celery writer leaves it (its delivery information
/// where the writer puts it) that holds no `redelivered` mark: found with three scans of its bytes
/// instead of parsing it. Without a backslash no string can hide a quote or spell the key another
/// way, so the bytes say what the parse would. Anything else is parsed.
fn written_fresh(item: &[u8]) -> bool {
    static MARK: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"redelivered\""));
    super::layout::written_priority(item).is_some()
        && memchr::memchr(b'\\', item).is_none()
        && MARK.find(item).is_none()
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    headers: Marked,
    properties: Properties,
}

#[derive(Deserialize)]
struct Properties {
    delivery_info: DeliveryInfo,
}

/// An object with `"redelivered": true` in it, or not. Anything else (null, a string) is not
/// marked, as kombu reads it.
#[derive(Default)]
struct Marked(bool);

impl<'de> Deserialize<'de> for Marked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MarkVisitor).map(Marked)
    }
}

/// `properties.delivery_info`: an object (kombu reads its exchange and routing key from it), so
/// read as a map; anything else is refused.
struct DeliveryInfo(bool);

impl<'de> Deserialize<'de> for DeliveryInfo {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MarkVisitor).map(DeliveryInfo)
    }
}

/// Whether an object holds `"redelivered": true`; any other value holds no mark.
struct MarkVisitor;

impl<'de> Visitor<'de> for MarkVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut marked = false;
        while let Some(MarkKey(is_mark)) = map.next_key()? {
            if is_mark {
                marked |= map.next_value::<serde_json::Value>()? == serde_json::Value::Bool(true);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(marked)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Whether an object's key is `redelivered`, compared where it lies in the message: no key is
/// copied (serde's `Cow<str>` copies every one, and Celery's headers have twenty).
struct MarkKey(bool);

impl<'de> Deserialize<'de> for MarkKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = MarkKey;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }

            fn visit_bytes<E>(self, key: &[u8]) -> Result<MarkKey, E> {
                Ok(MarkKey(key == b"redelivered"))
            }

            fn visit_str<E>(self, key: &str) -> Result<MarkKey, E> {
                Ok(MarkKey(key == "redelivered"))
            }
        }
        // As bytes: serde_json then skips checking that each key is UTF-8 (the worker reads the
        // message in full later, and refuses one that is not).
        deserializer.deserialize_bytes(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_envelope_is_not_redelivered() {
        let fresh = br#"{"body": "W10=", "headers": {"task": "t", "retries": 0}, "properties": {"delivery_info": {"exchange": "", "routing_key": "q"}, "priority": 0}}"#;
        assert_eq!(redelivered(fresh), Ok(false));
        let no_headers = br#"{"properties":{"delivery_info":{}}}"#;
        assert_eq!(redelivered(no_headers), Ok(false));
    }

    #[test]
    fn kombus_marks_of_a_restored_message_are_read_in_either_place() {
        let in_headers = br#"{"headers": {"redelivered": true}, "properties": {"delivery_info": {"routing_key": "q"}}}"#;
        let in_info =
            br#"{"headers": null, "properties": {"delivery_info": {"redelivered": true}}}"#;
        let not_true = br#"{"headers": {"redelivered": "yes"}, "properties": {"delivery_info": {"redelivered": false}}}"#;
        assert_eq!(redelivered(in_headers), Ok(true));
        assert_eq!(redelivered(in_info), Ok(true));
        assert_eq!(redelivered(not_true), Ok(false));
        let escaped_key =
            br#"{"headers": {"redeliver\u0065d": true}, "properties": {"delivery_info": {}}}"#;
        assert_eq!(redelivered(escaped_key), Ok(true));
    }

    #[test]
    fn written_messages_are_read_without_a_parse_unless_marked() {
        let written = |headers: &str| {
            format!(
                r#"{{"body":"W10=","content-encoding":"utf-8","content-type":"application/json","headers":{{{headers}}},"properties":{{"correlation_id":"c","delivery_mode":2,"delivery_info":{{"exchange":"","routing_key":"q"}},"priority":0,"body_encoding":"base64","delivery_tag":"0b9f0e0c-3c1e-4c59-9f0e-7a3c2b1d4e5f"}}}}"#
            )
        };
        let fresh = written(r#""task":"t""#);
        assert!(written_fresh(fresh.as_bytes()));
        assert_eq!(redelivered(fresh.as_bytes()), Ok(false));
        // Marked (or possibly marked, behind an escape): parsed, and read as the parse reads it.
        for (headers, marked) in [
            (r#""redelivered":true"#, true),
            (r#""redelivered":false"#, false),
            (r#""redeliver\u0065d":true"#, true),
            (r#""task":"a \"quoted\" name""#, false),
        ] {
            let message = written(headers);
            assert!(!written_fresh(message.as_bytes()), "{message}");
            assert_eq!(redelivered(message.as_bytes()), Ok(marked), "{message}");
        }
    }

    #[test]
    fn what_is_not_an_envelope_is_refused_with_the_reason() {
        for item in [
            &b"not json"[..],
            b"{}",
            b"[1, 2]",
            br#"[null, {"delivery_info": {}}]"#,
            br#"{"properties": {}}"#,
            br#"{"properties": {"delivery_info": "celery"}}"#,
            br#"{"properties": {"delivery_info": [1]}}"#,
            br#"{"properties": {"delivery_info": {}}} trailing"#,
            br#"{"properties": {"delivery_info": {}}"#,
        ] {
            assert_eq!(
                redelivered(item),
                Err(NOT_AN_ENVELOPE),
                "{}",
                String::from_utf8_lossy(item)
            );
        }
    }
}
