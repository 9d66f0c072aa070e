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

use std::borrow::Cow;

use base64::Engine;
use serde_json::value::RawValue;

use super::CeleryError;

/// A message's body as bytes, decoded as `body_encoding` says; only JSON bodies are accepted (as a
/// Celery worker accepts by default). `body` is the body's JSON as it came in the message.
pub(super) fn body_bytes(
    body: &RawValue,
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
    let raw = body.get();
    if !raw.starts_with('"') {
        // A body left as JSON (as some tools write it) is its own bytes.
        return Ok(raw.as_bytes().to_vec());
    }
    // base64 has no escapes: the usual body is read where it lies.
    let text = match raw[1..raw.len() - 1].contains('\\') {
        false => Cow::Borrowed(&raw[1..raw.len() - 1]),
        true => Cow::Owned(
            serde_json::from_str::<String>(raw)
                .map_err(|error| CeleryError::Body(error.to_string()))?,
        ),
    };
    match body_encoding {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|error| CeleryError::Body(format!("bad base64: {error}"))),
        None | Some("utf-8") => Ok(text.into_owned().into_bytes()),
        Some(other) => Err(CeleryError::Body(format!(
            "unknown body encoding `{other}`"
        ))),
    }
}
