//! Celery's task messages on RabbitMQ, for brokers built with
//! [`celery_format`](crate::AmqpBrokerBuilder::celery_format): Python Celery and celeriac share
//! queues.
//!
//! celeriac's Celery mode writes a task message as kombu's JSON envelope (`{"body", "headers",
//! "properties", …}`), which is what the message is on Redis. On RabbitMQ Celery sends the body
//! alone (`[args, kwargs, embed]`), with the protocol's headers as an AMQP table and
//! `correlation_id`, `reply_to`, `priority` as properties. So an envelope is unpacked into that
//! when published, and a delivery with Celery's headers is packed into an envelope for the worker.

use base64::Engine;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::Value;

/// Headers celeriac's RabbitMQ broker adds for itself; not part of the task's headers.
const OWN_HEADERS: [&str; 1] = [crate::link::DELIVERIES_HEADER];

/// Whether header `name` is the broker's bookkeeping rather than the task's: celeriac's own, or
/// RabbitMQ's dead-lettering record (`x-death` …), which a delayed message gathers at every level
/// of the delayed delivery it passes through.
fn bookkeeping(name: &str) -> bool {
    OWN_HEADERS.contains(&name)
        || name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// The body and properties Celery publishes for `payload`, if it is kombu's envelope around a
/// task message; `None` otherwise (it is then published as it is).
pub(crate) fn to_amqp(payload: &[u8]) -> Option<(Vec<u8>, BasicProperties)> {
    if payload.first() != Some(&b'{') {
        return None;
    }
    let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(payload) else {
        return None;
    };
    let Some(Value::Object(headers)) = envelope.get("headers") else {
        return None;
    };
    if !headers.contains_key("task") {
        return None;
    }
    let properties = envelope.get("properties").and_then(Value::as_object);
    let property = |name: &str| properties.and_then(|properties| properties.get(name));
    let body = envelope.get("body")?.as_str()?;
    let body = if property("body_encoding").and_then(Value::as_str) == Some("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?
    } else {
        body.as_bytes().to_vec()
    };
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(ShortString::from);
    // A null header is what a missing one is to Celery (it reads them with `.get`): not sent,
    // every message is smaller for RabbitMQ and for each consumer to parse.
    let present = headers.iter().filter(|(_, value)| !value.is_null());
    let mut amqp = BasicProperties::default().with_headers(table(present));
    if let Some(content_type) = text(envelope.get("content-type")) {
        amqp = amqp.with_content_type(content_type);
    }
    if let Some(encoding) = text(envelope.get("content-encoding")) {
        amqp = amqp.with_content_encoding(encoding);
    }
    if let Some(id) = text(property("correlation_id")) {
        amqp = amqp.with_correlation_id(id);
    }
    if let Some(reply_to) =
        text(property("reply_to")).filter(|reply_to| !reply_to.as_str().is_empty())
    {
        amqp = amqp.with_reply_to(reply_to);
    }
    if let Some(priority) = property("priority").and_then(Value::as_u64) {
        amqp = amqp.with_priority(priority.min(255) as u8);
    }
    if let Some(expiration) = text(property("expiration")) {
        amqp = amqp.with_expiration(expiration);
    }
    Some((body, amqp))
}

/// kombu's envelope around a delivery from `queue` that carries Celery's task headers (protocol
/// 2: `task` and `id`), as celeriac's worker reads Celery's messages; `None` for anything else.
pub(crate) fn from_amqp(delivery: &lapin::message::Delivery, queue: &str) -> Option<Vec<u8>> {
    from_parts(
        &delivery.properties,
        &delivery.data,
        delivery.exchange.as_str(),
        delivery.delivery_tag,
        queue,
    )
}

/// [`from_amqp`] for a delivery's parts. The envelope is written directly, not built as a map of
/// JSON values: building one cost a worker more than reading it back.
pub(crate) fn from_parts(
    properties: &BasicProperties,
    data: &[u8],
    exchange: &str,
    delivery_tag: u64,
    queue: &str,
) -> Option<Vec<u8>> {
    let headers = properties.headers().as_ref()?;
    if !headers.contains_key("task") || !headers.contains_key("id") {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + ENVELOPE_WITHOUT_FIELDS);
    out.extend_from_slice(br#"{"body":""#);
    let body = base64::engine::general_purpose::STANDARD.encode(data);
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(br#"","content-encoding":"#);
    json(
        &mut out,
        text(properties.content_encoding()).unwrap_or("utf-8"),
    )?;
    out.extend_from_slice(br#","content-type":"#);
    json(
        &mut out,
        text(properties.content_type()).unwrap_or("application/json"),
    )?;
    out.extend_from_slice(br#","headers":{"#);
    let mut first = true;
    for (name, value) in headers.inner() {
        if bookkeeping(name.as_str()) {
            continue;
        }
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        json(&mut out, name.as_str())?;
        out.push(b':');
        json(&mut out, &AsJson(value))?;
    }
    out.extend_from_slice(br#"},"properties":{"correlation_id":"#);
    json(&mut out, &text(properties.correlation_id()))?;
    out.extend_from_slice(br#","reply_to":"#);
    json(&mut out, &text(properties.reply_to()))?;
    out.extend_from_slice(br#","delivery_mode":"#);
    json(&mut out, &properties.delivery_mode().unwrap_or(2))?;
    out.extend_from_slice(br#","priority":"#);
    json(&mut out, &properties.priority().unwrap_or(0))?;
    out.extend_from_slice(br#","delivery_info":{"exchange":"#);
    json(&mut out, exchange)?;
    out.extend_from_slice(br#","routing_key":"#);
    json(&mut out, queue)?;
    out.extend_from_slice(br#"},"body_encoding":"base64","delivery_tag":""#);
    out.extend_from_slice(delivery_tag.to_string().as_bytes());
    out.extend_from_slice(b"\"}}");
    Some(out)
}

/// An envelope's length without its body and headers, with room for ids and names.
const ENVELOPE_WITHOUT_FIELDS: usize = 640;

/// A property's text, if set.
fn text(value: &Option<ShortString>) -> Option<&str> {
    value.as_ref().map(ShortString::as_str)
}

/// A value as serde_json writes it (a string escaped as JSON needs).
fn json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) -> Option<()> {
    serde_json::to_writer(&mut *out, value).ok()
}

/// An AMQP value as the JSON py-amqp's Python value would be written as.
struct AsJson<'a>(&'a AMQPValue);

impl serde::Serialize for AsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // JSON has no infinities and no NaN: they are written as `null`.
        let float = |value: f64| value.is_finite().then_some(value);
        match self.0 {
            AMQPValue::Void => serializer.serialize_unit(),
            AMQPValue::Boolean(flag) => serializer.serialize_bool(*flag),
            AMQPValue::ShortShortInt(n) => serializer.serialize_i8(*n),
            AMQPValue::ShortShortUInt(n) => serializer.serialize_u8(*n),
            AMQPValue::ShortInt(n) => serializer.serialize_i16(*n),
            AMQPValue::ShortUInt(n) => serializer.serialize_u16(*n),
            AMQPValue::LongInt(n) => serializer.serialize_i32(*n),
            AMQPValue::LongUInt(n) => serializer.serialize_u32(*n),
            AMQPValue::LongLongInt(n) => serializer.serialize_i64(*n),
            AMQPValue::Timestamp(n) => serializer.serialize_u64(*n),
            AMQPValue::Float(n) => float(f64::from(*n)).serialize(serializer),
            AMQPValue::Double(n) => float(*n).serialize(serializer),
            AMQPValue::DecimalValue(decimal) => {
                float(f64::from(decimal.value) / 10f64.powi(i32::from(decimal.scale)))
                    .serialize(serializer)
            }
            AMQPValue::ShortString(text) => serializer.serialize_str(text.as_str()),
            AMQPValue::LongString(text) => {
                serializer.serialize_str(&String::from_utf8_lossy(text.as_bytes()))
            }
            AMQPValue::ByteArray(bytes) => serializer
                .serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes.as_slice())),
            AMQPValue::FieldArray(items) => {
                serializer.collect_seq(items.as_slice().iter().map(AsJson))
            }
            AMQPValue::FieldTable(table) => serializer.collect_map(
                table
                    .inner()
                    .iter()
                    .map(|(name, value)| (name.as_str(), AsJson(value))),
            ),
        }
    }
}

/// JSON object fields as an AMQP table, as py-amqp writes Python's values.
fn table<'a>(fields: impl Iterator<Item = (&'a String, &'a Value)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in fields {
        // AMQP names a field in at most 255 bytes.
        if name.len() <= 255 {
            table.insert(ShortString::from(name.as_str()), amqp_value(value));
        }
    }
    table
}

fn amqp_value(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(flag) => AMQPValue::Boolean(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => AMQPValue::LongLongInt(integer),
            None => AMQPValue::Double(number.as_f64().unwrap_or(0.0)),
        },
        Value::String(text) => AMQPValue::LongString(LongString::from(text.as_str())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(amqp_value).collect::<Vec<_>>(),
        )),
        Value::Object(object) => AMQPValue::FieldTable(table(object.iter())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_delivery_with_celery_s_headers_reads_as_kombu_s_envelope() {
        let (body, properties) = to_amqp(ENVELOPE.as_bytes()).unwrap();
        let properties = properties
            .with_delivery_mode(2)
            .with_reply_to("re\"plies".into());
        let envelope = from_parts(&properties, &body, "", 42, "wire_celery").unwrap();
        let envelope: Value = serde_json::from_slice(&envelope).unwrap();
        let python: Value = serde_json::from_str(ENVELOPE).unwrap();
        assert_eq!(envelope["body"], python["body"]);
        assert_eq!(envelope["content-type"], json!("application/json"));
        // Null headers were not sent; every other one reads back as Python wrote it.
        let mut headers = python["headers"].as_object().unwrap().clone();
        headers.retain(|_, value| !value.is_null());
        assert_eq!(envelope["headers"], Value::Object(headers));
        assert_eq!(
            envelope["properties"],
            json!({"correlation_id": "671de41f-6526-45cf-b699-c60cdc0edc9a",
                   "reply_to": "re\"plies", "delivery_mode": 2, "priority": 5,
                   "delivery_info": {"exchange": "", "routing_key": "wire_celery"},
                   "body_encoding": "base64", "delivery_tag": "42"})
        );
        // Without a correlation id or reply queue, those are null.
        let bare = BasicProperties::default().with_headers(properties.headers().clone().unwrap());
        let envelope = from_parts(&bare, b"[[], {}, {}]", "x", 1, "q").unwrap();
        let envelope: Value = serde_json::from_slice(&envelope).unwrap();
        assert_eq!(envelope["properties"]["correlation_id"], Value::Null);
        assert_eq!(envelope["properties"]["reply_to"], Value::Null);
        assert_eq!(envelope["content-encoding"], json!("utf-8"));
    }

    /// Captured from Celery 5.7 on Redis: `add.apply_async((4, 5), countdown=30, expires=600,
    /// priority=5, headers={"x-custom": "v"})`.
    const ENVELOPE: &str = r#"{"body": "W1s0LCA1XSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "671de41f-6526-45cf-b699-c60cdc0edc9a", "shadow": null, "eta": "2026-11-29T12:12:48.735265+00:00", "expires": "2026-11-29T12:22:18.735265+00:00", "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "671de41f-6526-45cf-b699-c60cdc0edc9a", "parent_id": null, "argsrepr": "(4, 5)", "kwargsrepr": "{}", "origin": "gen12739@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}, "x-custom": "v"}, "properties": {"correlation_id": "671de41f-6526-45cf-b699-c60cdc0edc9a", "reply_to": "936f6d5d-be85-38d2-84d4-6198fba96ac6", "delivery_mode": 2, "expiration": "600000", "delivery_info": {"exchange": "", "routing_key": "wire_celery"}, "priority": 5, "body_encoding": "base64", "delivery_tag": "f91b4ed6-9e95-4190-914a-cdaade561d15"}}"#;

    #[test]
    fn an_envelope_goes_out_as_celery_publishes_on_rabbitmq() {
        let (body, properties) = to_amqp(ENVELOPE.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"[[4, 5], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
        );
        assert_eq!(
            properties.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(
            properties.correlation_id().as_ref().unwrap().as_str(),
            "671de41f-6526-45cf-b699-c60cdc0edc9a"
        );
        assert_eq!(properties.priority(), &Some(5));
        assert_eq!(properties.expiration().as_ref().unwrap().as_str(), "600000");
        let headers = properties.headers().as_ref().unwrap();
        assert_eq!(
            headers.inner().get("task"),
            Some(&AMQPValue::LongString("tasks.add".into()))
        );
        // Null headers are left out, as missing ones read the same in Celery.
        assert_eq!(headers.inner().get("shadow"), None);
        assert_eq!(
            headers.inner().get("timelimit"),
            Some(&AMQPValue::FieldArray(
                vec![AMQPValue::Void, AMQPValue::Void].into()
            ))
        );
        assert_eq!(
            headers.inner().get("stamps"),
            Some(&AMQPValue::FieldTable(FieldTable::default()))
        );
        // What is not Celery's envelope goes out as it is.
        assert!(to_amqp(b"\x05binary").is_none());
        assert!(to_amqp(br#"{"body": "e30=", "headers": {}}"#).is_none());
    }

    #[test]
    fn rabbitmqs_dead_lettering_record_is_not_a_task_header() {
        let mut headers = FieldTable::default();
        headers.insert("task".into(), AMQPValue::LongString("tasks.add".into()));
        headers.insert("id".into(), AMQPValue::LongString("1".into()));
        headers.insert("x-custom".into(), AMQPValue::LongString("v".into()));
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(FieldTable::default())].into()),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("celery_delayed_2".into()),
        );
        headers.insert(
            "x-last-death-reason".into(),
            AMQPValue::LongString("expired".into()),
        );
        let properties = BasicProperties::default().with_headers(headers);
        let envelope = from_parts(
            &properties,
            b"[[], {}, {}]",
            "celery_delayed_delivery",
            7,
            "q",
        )
        .expect("a Celery message");
        let envelope: Value = serde_json::from_slice(&envelope).unwrap();
        let names: Vec<&String> = envelope["headers"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["id", "task", "x-custom"]);
    }

    #[test]
    fn amqp_values_read_back_as_the_json_they_came_from() {
        let json = json!({"n": 5, "big": 1_u64 << 40, "f": 1.5, "s": "x", "t": true, "v": null,
                          "a": [1, "two", null], "o": {"k": [{}]}});
        let Value::Object(object) = &json else {
            unreachable!()
        };
        let back =
            serde_json::to_value(AsJson(&AMQPValue::FieldTable(table(object.iter())))).unwrap();
        assert_eq!(back, json);
        // What JSON cannot hold reads as null.
        let nan = serde_json::to_vec(&AsJson(&AMQPValue::Double(f64::NAN))).unwrap();
        assert_eq!(nan, b"null");
    }
}
