//! kombu's JSON envelope as celeriac writes it: written field by field from the envelope, without
//! maps of JSON values (building them cost a producer more than the rest of a send together).
//! A null protocol header is left out: Celery reads headers with `.get`, so a missing one is the
//! same to it, and each message is smaller.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::SerializeMap;

/// One task message, ready to be written.
#[derive(Serialize)]
pub(super) struct Outgoing<'a> {
    /// `[args, kwargs, embed]` in base64 (`properties.body_encoding`).
    pub(super) body: &'a str,
    #[serde(rename = "content-encoding")]
    pub(super) content_encoding: &'static str,
    #[serde(rename = "content-type")]
    pub(super) content_type: &'static str,
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

impl Serialize for OutgoingHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// Celery's `stamps`: an empty object.
        struct NoStamps;
        impl Serialize for NoStamps {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_map(Some(0))?.end()
            }
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("lang", "rs")?;
        map.serialize_entry("task", self.task)?;
        map.serialize_entry("id", self.id)?;
        if let Some(eta) = &self.eta {
            map.serialize_entry("eta", eta)?;
        }
        if let Some(expires) = &self.expires {
            map.serialize_entry("expires", expires)?;
        }
        if let Some(group) = &self.group {
            map.serialize_entry("group", group)?;
        }
        if let Some(index) = self.group_index {
            map.serialize_entry("group_index", &index)?;
        }
        map.serialize_entry("retries", &self.retries)?;
        map.serialize_entry("timelimit", &(self.hard_time_limit, None::<f64>))?;
        map.serialize_entry("root_id", self.root_id)?;
        if let Some(parent) = &self.parent_id {
            map.serialize_entry("parent_id", parent)?;
        }
        map.serialize_entry("argsrepr", super::convert::REDACTED)?;
        map.serialize_entry("kwargsrepr", super::convert::REDACTED)?;
        map.serialize_entry("origin", self.origin)?;
        map.serialize_entry("ignore_result", &self.ignore_result)?;
        map.serialize_entry("replaced_task_nesting", &0)?;
        map.serialize_entry("stamps", &NoStamps)?;
        for (name, value) in self.application {
            if !super::convert::PROTOCOL_HEADERS.contains(&name.as_str()) {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

/// The properties celeriac writes.
#[derive(Serialize)]
pub(super) struct OutgoingProperties<'a> {
    pub(super) correlation_id: &'a str,
    pub(super) reply_to: &'a str,
    pub(super) delivery_mode: u8,
    /// Milliseconds as a string: AMQP's per-message TTL (meaningless on Redis).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) expiration: Option<String>,
    pub(super) delivery_info: OutgoingDeliveryInfo<'a>,
    pub(super) priority: i64,
    pub(super) body_encoding: &'static str,
    pub(super) delivery_tag: &'a str,
}

/// Where the message is published: the default exchange, routed by the queue's name.
#[derive(Serialize)]
pub(super) struct OutgoingDeliveryInfo<'a> {
    pub(super) exchange: &'static str,
    pub(super) routing_key: &'a str,
}
