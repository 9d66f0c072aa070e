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
//! `", "` and `": "`). `incoming` reads it, `outgoing` writes it; this module
//! holds what both sides share.

use base64::Engine;
use serde_json::Value;

use super::CeleryError;

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
