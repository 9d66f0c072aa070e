//! kombu's JSON envelope as celeriac writes it: written field by field from the envelope, without
//! maps of JSON values (building them cost a producer more than the rest of a send together), and
//! without serde: ids, times, numbers, base64 and this module's names cannot hold a character JSON
//! escapes and are written as they are; only the strings that come from users (the task's name,
//! the queue, the reply queue, the host, application headers) go through serde_json's escaping.
//! A null protocol header is left out: Celery reads headers with `.get`, so a missing one is the
//! same to it, and each message is smaller.

use std::collections::BTreeMap;

/// One task message, ready to be written.
pub(super) struct Outgoing<'a> {
    /// `[args, kwargs, embed]` in base64 (`properties.body_encoding`).
    pub(super) body: &'a str,
    pub(super) headers: OutgoingHeaders<'a>,
    pub(super) properties: OutgoingProperties<'a>,
}

/// Protocol 2's headers (those that are set), then the application's.
pub(super) struct OutgoingHeaders<'a> {
    pub(super) task: &'a str,
    pub(super) id: &'a str,
    pub(super) eta: Option<String>,
    pub(super) expires: Option<String>,
    pub(super) group: Option<String>,
    pub(super) group_index: Option<u32>,
    pub(super) retries: u32,
    /// The hard time limit, in seconds (the soft one is always null).
    pub(super) hard_time_limit: Option<f64>,
    pub(super) root_id: &'a str,
    pub(super) parent_id: Option<String>,
    pub(super) origin: &'a str,
    pub(super) ignore_result: bool,
    /// Headers that are not protocol 2's.
    pub(super) application: &'a BTreeMap<String, String>,
}

/// The properties celeriac writes.
pub(super) struct OutgoingProperties<'a> {
    pub(super) correlation_id: &'a str,
    pub(super) reply_to: &'a str,
    /// Milliseconds as a string: AMQP's per-message TTL (meaningless on Redis).
    pub(super) expiration: Option<String>,
    /// The queue: the routing key on the default exchange.
    pub(super) routing_key: &'a str,
    pub(super) priority: i64,
    pub(super) delivery_tag: &'a str,
}

impl Outgoing<'_> {
    /// Appends the message to `out` as JSON. The delivery information, the priority and the tag
    /// come last: the Redis broker reads the priority from there (`celeriac-redis`'s kombu layout).
    pub(super) fn write(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let headers = &self.headers;
        out.extend_from_slice(b"{\"body\":");
        plain(out, self.body);
        out.extend_from_slice(
            br#","content-encoding":"utf-8","content-type":"application/json","headers":{"lang":"rs","task":"#,
        );
        json(out, headers.task)?;
        field(out, "id");
        plain(out, headers.id);
        if let Some(eta) = &headers.eta {
            field(out, "eta");
            plain(out, eta);
        }
        if let Some(expires) = &headers.expires {
            field(out, "expires");
            plain(out, expires);
        }
        if let Some(group) = &headers.group {
            field(out, "group");
            plain(out, group);
        }
        if let Some(index) = headers.group_index {
            field(out, "group_index");
            json(out, &index)?;
        }
        field(out, "retries");
        json(out, &headers.retries)?;
        field(out, "timelimit");
        json(out, &(headers.hard_time_limit, None::<f64>))?;
        field(out, "root_id");
        plain(out, headers.root_id);
        if let Some(parent) = &headers.parent_id {
            field(out, "parent_id");
            plain(out, parent);
        }
        field(out, "argsrepr");
        plain(out, super::convert::REDACTED);
        field(out, "kwargsrepr");
        plain(out, super::convert::REDACTED);
        field(out, "origin");
        json(out, headers.origin)?;
        field(out, "ignore_result");
        json(out, &headers.ignore_result)?;
        out.extend_from_slice(br#","replaced_task_nesting":0,"stamps":{}"#);
        for (name, value) in headers.application {
            if !super::convert::PROTOCOL_HEADERS.contains(&name.as_str()) {
                out.push(b',');
                json(out, name)?;
                out.push(b':');
                json(out, value)?;
            }
        }
        let properties = &self.properties;
        out.extend_from_slice(br#"},"properties":{"correlation_id":"#);
        plain(out, properties.correlation_id);
        field(out, "reply_to");
        json(out, properties.reply_to)?;
        out.extend_from_slice(br#","delivery_mode":2"#);
        if let Some(expiration) = &properties.expiration {
            field(out, "expiration");
            plain(out, expiration);
        }
        out.extend_from_slice(br#","delivery_info":{"exchange":"","routing_key":"#);
        json(out, properties.routing_key)?;
        out.extend_from_slice(br#"},"priority":"#);
        json(out, &properties.priority)?;
        out.extend_from_slice(br#","body_encoding":"base64","delivery_tag":"#);
        plain(out, properties.delivery_tag);
        out.extend_from_slice(b"}}");
        Ok(())
    }
}

/// `,"name":` — a field after the object's first.
fn field(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    plain(out, name);
    out.push(b':');
}

/// A string JSON needs no escapes for (an id, a time, base64, a name of this module), as it is.
fn plain(out: &mut Vec<u8>, text: &str) {
    debug_assert!(
        text.bytes()
            .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\'),
        "{text:?} needs escapes"
    );
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// A value as serde_json writes it: a string escaped as JSON needs, a number, a flag, a pair.
fn json(
    out: &mut Vec<u8>,
    value: &(impl serde::Serialize + ?Sized),
) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *out, value)
}
