//! kombu's JSON envelope: how Celery's task message (protocol 2) travels on Redis and kombu's
//! other virtual transports.
//!
//! ```text
//! {"body": "<base64 of [args, kwargs, embed]>", "content-encoding": "utf-8",
//!  "content-type": "application/json", "headers": {"task": …, "id": …, …},
//!  "properties": {"correlation_id": …, "reply_to": …, "delivery_mode": 2,
//!                 "delivery_info": {"exchange": "", "routing_key": "<queue>"}, "priority": 0,
//!                 "body_encoding": "base64", "delivery_tag": "<uuid>"}}
//! ```
//!
//! Readers must not depend on the order of keys or on spacing (Python's `json.dumps` writes
//! `", "` and `": "`); unknown keys are kept where they may matter (headers, properties).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::CeleryError;

/// One message, as kombu's JSON envelope.
#[derive(Debug, Deserialize, Serialize)]
pub(super) struct KombuMessage {
    /// The body, encoded as `properties.body_encoding` says (base64, for kombu).
    pub(super) body: Value,
    #[serde(rename = "content-encoding", default)]
    pub(super) content_encoding: Option<String>,
    #[serde(rename = "content-type", default)]
    pub(super) content_type: Option<String>,
    #[serde(default)]
    pub(super) headers: Map<String, Value>,
    #[serde(default)]
    pub(super) properties: Properties,
}

/// A message's properties (AMQP's basic properties, and kombu's own).
#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct Properties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) delivery_mode: Option<u8>,
    /// Milliseconds as a string: AMQP's per-message TTL (meaningless on Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expiration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) delivery_info: Option<DeliveryInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) body_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) delivery_tag: Option<String>,
    /// Any other property, kept as it came.
    #[serde(flatten)]
    pub(super) other: Map<String, Value>,
}

/// Where the message was published: kombu needs it to acknowledge and restore the message.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct DeliveryInfo {
    #[serde(default)]
    pub(super) exchange: String,
    #[serde(default)]
    pub(super) routing_key: String,
    #[serde(flatten)]
    pub(super) other: Map<String, Value>,
}

impl KombuMessage {
    /// Reads kombu's JSON envelope (the worker reads [`super::incoming::Incoming`]).
    #[cfg(test)]
    pub(super) fn from_json(bytes: &[u8]) -> Result<Self, CeleryError> {
        serde_json::from_slice(bytes).map_err(|error| CeleryError::Envelope(error.to_string()))
    }

    /// Writes kombu's JSON envelope.
    pub(super) fn to_json(&self) -> Result<Vec<u8>, CeleryError> {
        serde_json::to_vec(self).map_err(|error| CeleryError::Envelope(error.to_string()))
    }

    /// Sets the body to `bytes`, in base64.
    pub(super) fn set_body(&mut self, bytes: &[u8]) {
        self.body = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        self.properties.body_encoding = Some("base64".into());
    }
}

/// A message's body as bytes, decoded as `body_encoding` says; only JSON bodies are accepted (as a
/// Celery worker accepts by default).
pub(super) fn body_bytes(
    body: &Value,
    content_type: Option<&str>,
    body_encoding: Option<&str>,
) -> Result<Vec<u8>, CeleryError> {
    if let Some(content_type) = content_type
        && content_type != "application/json"
    {
        return Err(CeleryError::Body(format!(
            "content type `{content_type}` is not accepted (only `application/json`)"
        )));
    }
    match (body, body_encoding) {
        (Value::String(text), Some("base64")) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|error| CeleryError::Body(format!("bad base64: {error}"))),
        (Value::String(text), None | Some("utf-8")) => Ok(text.as_bytes().to_vec()),
        (Value::String(_), Some(other)) => Err(CeleryError::Body(format!(
            "unknown body encoding `{other}`"
        ))),
        // A body left as JSON (as some tools write it) is its own bytes.
        (body, _) => serde_json::to_vec(body).map_err(|error| CeleryError::Body(error.to_string())),
    }
}
