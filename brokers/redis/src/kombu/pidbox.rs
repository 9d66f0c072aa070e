//! Celery's remote control on kombu's layout: requests arrive on the channel
//! `<global_keyprefix>/<db>.celery.pidbox` in kombu's envelope; replies are pushed on the list
//! `<global_keyprefix><routing key>.reply.celery.pidbox`, where the Python client waits. What they
//! say is translated by [`celeriac_core::celery::pidbox`].

use base64::Engine;
use celeriac_core::celery::pidbox;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A request on the pidbox channel: kombu's envelope around Celery's request.
#[derive(Deserialize)]
struct Envelope {
    body: String,
    #[serde(default)]
    headers: Option<Map<String, Value>>,
    #[serde(default)]
    properties: Option<Properties>,
}

#[derive(Deserialize)]
struct Properties {
    #[serde(default)]
    body_encoding: Option<String>,
}

/// celeriac's command for the request in kombu's `envelope`, if it is one to do now.
pub(super) fn command_for(envelope: &[u8], now: f64) -> Option<Vec<u8>> {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(envelope) else {
        tracing::debug!("skipping a Celery remote-control request that is not in kombu's envelope");
        return None;
    };
    let expires = envelope
        .headers
        .as_ref()
        .and_then(|headers| headers.get("expires"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let base64 = envelope
        .properties
        .and_then(|properties| properties.body_encoding)
        .is_some_and(|encoding| encoding == "base64");
    let body = if base64 {
        base64::engine::general_purpose::STANDARD
            .decode(envelope.body.as_bytes())
            .ok()?
    } else {
        envelope.body.into_bytes()
    };
    pidbox::command_for(&body, expires, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_read_out_of_kombus_envelope() {
        let body = json!({"method": "ping", "ticket": "t",
                          "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "rk"}});
        let envelope = |expires: f64| {
            json!({
                "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
                "content-type": "application/json",
                "headers": {"clock": 3, "expires": expires},
                "properties": {"delivery_mode": 2, "body_encoding": "base64"},
            })
            .to_string()
            .into_bytes()
        };
        let command: Value =
            serde_json::from_slice(&command_for(&envelope(0.0), 1_000.0).unwrap()).unwrap();
        assert_eq!(command["command"], "ping");
        // Expired, or not an envelope: nothing to do.
        assert_eq!(command_for(&envelope(999.0), 1_000.0), None);
        assert_eq!(command_for(b"[1]", 1_000.0), None);
    }
}
