//! kombu's JSON envelope as a worker reads it: borrowed where it can be, protocol 2's headers in
//! their own places and the application's apart, and what decoding does not use skipped unread
//! (the `argsrepr` a producer wrote, properties celeriac does not act on). Reading it into maps
//! of JSON values cost a worker more than the rest of Celery's format together.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// One task message, as the worker reads it.
#[derive(Deserialize)]
pub(super) struct Incoming<'a> {
    /// The body, encoded as `properties.body_encoding` says (base64, for kombu), as it came.
    #[serde(borrow)]
    pub(super) body: &'a RawValue,
    #[serde(rename = "content-type", default, borrow)]
    pub(super) content_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(super) headers: Headers<'a>,
    #[serde(default, borrow)]
    pub(super) properties: IncomingProperties<'a>,
}

/// The properties a worker acts on.
#[derive(Default, Deserialize)]
pub(super) struct IncomingProperties<'a> {
    #[serde(default)]
    pub(super) reply_to: Option<String>,
    #[serde(default)]
    pub(super) delivery_info: Option<IncomingDeliveryInfo>,
    #[serde(default)]
    pub(super) priority: Option<i64>,
    #[serde(default, borrow)]
    pub(super) body_encoding: Option<Cow<'a, str>>,
}

/// Where the message was published: its routing key is the queue it came through.
#[derive(Deserialize)]
pub(super) struct IncomingDeliveryInfo {
    #[serde(default)]
    pub(super) routing_key: String,
}

/// Protocol 2's headers that a worker reads (each as it came: the decoder checks their types), and
/// the application's headers.
#[derive(Default)]
pub(super) struct Headers<'a> {
    pub(super) task: Option<Header<'a>>,
    pub(super) id: Option<Header<'a>>,
    pub(super) group: Option<Header<'a>>,
    pub(super) group_index: Option<Header<'a>>,
    pub(super) retries: Option<Header<'a>>,
    pub(super) eta: Option<Header<'a>>,
    pub(super) expires: Option<Header<'a>>,
    pub(super) timelimit: Option<Header<'a>>,
    pub(super) root_id: Option<Header<'a>>,
    pub(super) parent_id: Option<Header<'a>>,
    pub(super) ignore_result: Option<Header<'a>>,
    /// Headers that are not protocol 2's, in the order they came.
    pub(super) application: Vec<(String, Header<'a>)>,
}

impl<'a> Headers<'a> {
    /// The place of protocol header `name`, `None` for one the worker does not read, or `Err(())`
    /// for a name that is not a protocol header.
    fn place(&mut self, name: &[u8]) -> Result<Option<&mut Option<Header<'a>>>, ()> {
        Ok(Some(match name {
            b"task" => &mut self.task,
            b"id" => &mut self.id,
            b"group" => &mut self.group,
            b"group_index" => &mut self.group_index,
            b"retries" => &mut self.retries,
            b"eta" => &mut self.eta,
            b"expires" => &mut self.expires,
            b"timelimit" => &mut self.timelimit,
            b"root_id" => &mut self.root_id,
            b"parent_id" => &mut self.parent_id,
            b"ignore_result" => &mut self.ignore_result,
            _ if super::convert::PROTOCOL_HEADERS
                .iter()
                .any(|header| header.as_bytes() == name) =>
            {
                return Ok(None);
            }
            _ => return Err(()),
        }))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Headers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(HeadersVisitor(PhantomData))
    }
}

struct HeadersVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for HeadersVisitor<'a> {
    type Value = Headers<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of headers")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers<'a>, A::Error> {
        let mut headers = Headers::default();
        while let Some(HeaderName(name)) = map.next_key()? {
            match headers.place(&name) {
                Ok(Some(place)) => *place = Some(map.next_value()?),
                Ok(None) => {
                    map.next_value::<IgnoredAny>()?;
                }
                Err(()) => {
                    let name = String::from_utf8(name.into_owned())
                        .map_err(|_| serde::de::Error::custom("a header's name is not UTF-8"))?;
                    let value = map.next_value()?;
                    headers.application.push((name, value));
                }
            }
        }
        Ok(headers)
    }
}

/// A header's value as it came: a string borrowed from the message where it has no escapes (most
/// headers are ids, names and times: no copy of each), anything else as a JSON value.
#[derive(Debug, PartialEq)]
pub(super) enum Header<'a> {
    Text(Cow<'a, str>),
    Other(Value),
}

impl Header<'_> {
    /// Whether it is JSON's `null` (Python's `None`).
    pub(super) fn is_null(&self) -> bool {
        matches!(self, Header::Other(Value::Null))
    }

    /// The value as a number of something (a count, an index).
    pub(super) fn as_u64(&self) -> Option<u64> {
        match self {
            Header::Other(value) => value.as_u64(),
            Header::Text(_) => None,
        }
    }

    /// The value as an application header keeps it: a string as it is, anything else as JSON.
    pub(super) fn into_string(self) -> String {
        match self {
            Header::Text(text) => text.into_owned(),
            Header::Other(value) => value.to_string(),
        }
    }
}

/// As JSON, as error messages show it.
impl fmt::Display for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Header::Text(text) => fmt::Display::fmt(&Value::from(text.as_ref()), f),
            Header::Other(value) => fmt::Display::fmt(value, f),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Header<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct HeaderVisitor<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for HeaderVisitor<'a> {
            type Value = Header<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header's value")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Header<'a>, E> {
                Ok(Header::Text(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Header<'a>, E> {
                Ok(Header::Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E>(self, text: String) -> Result<Header<'a>, E> {
                Ok(Header::Text(Cow::Owned(text)))
            }

            fn visit_bool<E>(self, value: bool) -> Result<Header<'a>, E> {
                Ok(Header::Other(Value::Bool(value)))
            }

            fn visit_i64<E>(self, value: i64) -> Result<Header<'a>, E> {
                Ok(Header::Other(Value::from(value)))
            }

            fn visit_u64<E>(self, value: u64) -> Result<Header<'a>, E> {
                Ok(Header::Other(Value::from(value)))
            }

            fn visit_f64<E>(self, value: f64) -> Result<Header<'a>, E> {
                Ok(Header::Other(Value::from(value)))
            }

            fn visit_unit<E>(self) -> Result<Header<'a>, E> {
                Ok(Header::Other(Value::Null))
            }

            fn visit_none<E>(self) -> Result<Header<'a>, E> {
                Ok(Header::Other(Value::Null))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Header<'a>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Header::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Header<'a>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Header::Other)
            }
        }
        deserializer.deserialize_any(HeaderVisitor(PhantomData))
    }
}

/// A header's name, borrowed from the message unless it has escapes (serde's own `Cow<str>`
/// always copies), read as bytes: serde_json then skips checking that the protocol's names are
/// UTF-8, and the application's are checked when kept.
struct HeaderName<'de>(Cow<'de, [u8]>);

impl<'de> Deserialize<'de> for HeaderName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = HeaderName<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header's name")
            }

            fn visit_borrowed_bytes<E>(self, name: &'de [u8]) -> Result<HeaderName<'de>, E> {
                Ok(HeaderName(Cow::Borrowed(name)))
            }

            fn visit_bytes<E>(self, name: &[u8]) -> Result<HeaderName<'de>, E> {
                Ok(HeaderName(Cow::Owned(name.to_owned())))
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<HeaderName<'de>, E> {
                Ok(HeaderName(Cow::Borrowed(name.as_bytes())))
            }

            fn visit_str<E>(self, name: &str) -> Result<HeaderName<'de>, E> {
                Ok(HeaderName(Cow::Owned(name.as_bytes().to_owned())))
            }
        }
        deserializer.deserialize_bytes(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str) -> Header<'_> {
        Header::Text(Cow::Borrowed(text))
    }

    #[test]
    fn protocol_headers_go_to_their_places_and_others_apart() {
        let message = br#"{"body": "W10=", "content-type": "application/json",
            "headers": {"task": "t", "id": "x", "retries": 2, "argsrepr": "(1, 2)",
                        "x-tenant": "shop", "x-tenant": "shop-2", "weight": 3},
            "properties": {"delivery_info": {"exchange": 7, "routing_key": "q"},
                           "body_encoding": "base64", "correlation_id": ["any"]}}"#;
        let incoming: Incoming<'_> = serde_json::from_slice(message).unwrap();
        assert_eq!(incoming.headers.task, Some(text("t")));
        assert_eq!(
            incoming.headers.retries,
            Some(Header::Other(Value::from(2)))
        );
        assert_eq!(incoming.headers.eta, None);
        assert_eq!(
            incoming.headers.application,
            [
                ("x-tenant".to_owned(), text("shop")),
                ("x-tenant".to_owned(), text("shop-2")),
                ("weight".to_owned(), Header::Other(Value::from(3))),
            ]
        );
        let info = incoming.properties.delivery_info.unwrap();
        assert_eq!(info.routing_key, "q");
        assert_eq!(incoming.properties.body_encoding.as_deref(), Some("base64"));
    }

    #[test]
    fn an_application_header_whose_name_is_not_utf8_is_refused() {
        // `\udc80` is a lone surrogate: JSON allows it escaped, UTF-8 cannot hold it.
        let message = br#"{"body": "", "headers": {"task": "t", "x-\udc80": 1}}"#;
        assert!(serde_json::from_slice::<Incoming<'_>>(message).is_err());
        let escaped = br#"{"body": "", "headers": {"x-t\u0065nant": "shop", "t\u0061sk": "t"}}"#;
        let incoming: Incoming<'_> = serde_json::from_slice(escaped).unwrap();
        assert_eq!(incoming.headers.task, Some(text("t")));
        assert_eq!(
            incoming.headers.application,
            [("x-tenant".to_owned(), text("shop"))]
        );
    }

    #[test]
    fn headers_that_are_not_an_object_are_refused() {
        for headers in ["null", "[]", "\"task\"", "{\"task\": }"] {
            let message = format!(r#"{{"body": "", "headers": {headers}}}"#);
            assert!(
                serde_json::from_str::<Incoming<'_>>(&message).is_err(),
                "{message}"
            );
        }
    }
}
