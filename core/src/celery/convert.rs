//! Celery's task message to celeriac's [`Envelope`] and back.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::canvas::GroupPlace;
use super::incoming::{Header, Incoming};
use super::outgoing::{Outgoing, OutgoingHeaders, OutgoingProperties};
use super::{ARGS_CONTENT_TYPE, CeleryError};
use crate::codec::CodecError;
use crate::{Envelope, TaskId};

/// An ETA further ahead than this is refused as absurd (a Celery worker would hold such a task
/// in memory for good).
const MAX_ETA_AHEAD: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// The highest priority Celery uses (0–9); higher values are lowered to it.
const MAX_PRIORITY: i64 = 9;

/// The headers of protocol 2 that are not application headers.
pub(super) const PROTOCOL_HEADERS: [&str; 20] = [
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
    "redelivered",
];

/// What `argsrepr` and `kwargsrepr` say: arguments are not written where logs and monitors show
/// them (they may be personal data, such as a phone number).
pub(super) const REDACTED: &str = "(redacted)";

/// Reads a Celery task message (kombu's JSON envelope) as an envelope.
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, CodecError> {
    decode_message(bytes).map_err(CeleryError::decoding)
}

fn decode_message(bytes: &[u8]) -> Result<Envelope, CeleryError> {
    let message: Incoming<'_> =
        serde_json::from_slice(bytes).map_err(|error| CeleryError::Envelope(error.to_string()))?;
    let headers = &message.headers;
    let task = match &headers.task {
        Some(Header::Text(task)) if !task.is_empty() => task.as_ref().to_owned(),
        Some(_) => return Err(CeleryError::header("task", "not a task name")),
        None => return Err(CeleryError::header("task", "missing")),
    };
    let id = match &headers.id {
        Some(Header::Text(id)) => task_id("id", id)?,
        Some(_) => return Err(CeleryError::header("id", "not a string")),
        None => return Err(CeleryError::header("id", "missing")),
    };
    let queue = match &message.properties.delivery_info {
        Some(info) if !info.routing_key.is_empty() => info.routing_key.clone(),
        _ => {
            return Err(CeleryError::header(
                "delivery_info",
                "no routing key (kombu needs it to acknowledge the message)",
            ));
        }
    };
    let (args, embed) = body(&super::message::body_bytes(
        message.body,
        message.content_type.as_deref(),
        message.properties.body_encoding.as_deref(),
    )?)?;
    let group = match &headers.group {
        None => None,
        Some(group) if group.is_null() => None,
        Some(Header::Text(group)) => Some(GroupPlace {
            group: task_id("group", group)?,
            index: match &headers.group_index {
                None => None,
                Some(index) if index.is_null() => None,
                Some(index) => Some(
                    index
                        .as_u64()
                        .and_then(|index| u32::try_from(index).ok())
                        .ok_or_else(|| {
                            CeleryError::header("group_index", format!("not an index: {index}"))
                        })?,
                ),
            },
        }),
        Some(_) => return Err(CeleryError::header("group", "not a string")),
    };
    let workflow = match &embed {
        Some(embed) => super::canvas::from_embed(embed, &queue, group)?,
        None => None,
    };

    let mut envelope = Envelope::new(task, queue, args, ARGS_CONTENT_TYPE);
    if let Some(place) = group.filter(|_| workflow.as_ref().is_none_or(|w| w.chord.is_none())) {
        // A plain group's member keeps its place should it be sent again (a retry).
        place.keep_in(&mut envelope.headers);
    }
    envelope.workflow = workflow.map(Box::new);
    envelope.id = id;
    envelope.retries = match &headers.retries {
        None => 0,
        Some(retries) if retries.is_null() => 0,
        Some(value) => value
            .as_u64()
            .and_then(|retries| u32::try_from(retries).ok())
            .ok_or_else(|| CeleryError::header("retries", format!("not a count: {value}")))?,
    };
    let now = crate::clock::now();
    envelope.eta = time(headers.eta.as_ref(), "eta")?;
    if let Some(eta) = envelope.eta
        && eta
            .duration_since(now)
            .is_ok_and(|ahead| ahead > MAX_ETA_AHEAD)
    {
        return Err(CeleryError::header(
            "eta",
            "more than ten years ahead: refused as absurd",
        ));
    }
    envelope.expires = time(headers.expires.as_ref(), "expires")?;
    envelope.time_limit = time_limit(headers.timelimit.as_ref())?;
    envelope.parent_id = optional_id(headers.parent_id.as_ref(), "parent_id")?;
    envelope.root_id = optional_id(headers.root_id.as_ref(), "root_id")?;
    envelope.store_result = !matches!(
        headers.ignore_result,
        Some(Header::Other(Value::Bool(true)))
    );
    envelope.priority = message
        .properties
        .priority
        .map(|priority| priority.clamp(0, MAX_PRIORITY) as u8);
    envelope.reply_to = message
        .properties
        .reply_to
        .filter(|reply_to| !reply_to.is_empty());
    for (name, value) in message.headers.application {
        envelope.headers.insert(name, value.into_string());
    }
    Ok(envelope)
}

/// The body's `[args, kwargs]` (as JSON bytes) and its `embed`, `None` when it sets no workflow
/// field (a task in no chain, group or chord: nearly every message).
fn body(bytes: &[u8]) -> Result<(Vec<u8>, Option<Value>), CeleryError> {
    // The usual body, read without building `args` and `kwargs` as values: they are kept as
    // they came, `[args,kwargs]`, and bound to the task's parameters when it runs.
    if let Ok((args, kwargs, embed)) =
        serde_json::from_slice::<(&RawValue, &RawValue, &RawValue)>(bytes)
        && let Some(embed) = embed_of(embed)
    {
        let mut both = Vec::with_capacity(args.get().len() + kwargs.get().len() + 3);
        if push_args_and_kwargs(&mut both, args, kwargs) {
            both.push(b']');
            return Ok((both, embed));
        }
    }
    // Anything else is read again, to say what is wrong with it.
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|error| CeleryError::Body(format!("not JSON: {error}")))?;
    let Value::Array(mut parts) = body else {
        return Err(CeleryError::Body(
            "not an array `[args, kwargs, embed]`".into(),
        ));
    };
    if parts.len() != 3 {
        return Err(CeleryError::Body(format!(
            "an array of {} element(s), not `[args, kwargs, embed]`",
            parts.len()
        )));
    }
    let embed = parts.pop().unwrap_or_default();
    let kwargs = parts.pop().unwrap_or_default();
    let args = parts.pop().unwrap_or_default();
    if !args.is_array() {
        return Err(CeleryError::Body("`args` is not an array".into()));
    }
    if !kwargs.is_object() {
        return Err(CeleryError::Body("`kwargs` is not an object".into()));
    }
    if !(embed.is_object() || embed.is_null()) {
        return Err(CeleryError::Body("`embed` is not an object".into()));
    }
    let args = serde_json::to_vec(&[args, kwargs])
        .map_err(|error| CeleryError::Body(error.to_string()))?;
    Ok((args, Some(embed)))
}

/// `embed` as [`body`] answers it: `Some(None)` for `null` or an object whose workflow fields are
/// all null or missing (found without building a map of values), `Some(Some(embed))` for any
/// other object, `None` for what is not an object.
fn embed_of(embed: &RawValue) -> Option<Option<Value>> {
    /// Which of `embed`'s workflow fields are set; the others are skipped unread.
    #[derive(serde::Deserialize)]
    struct Set {
        #[serde(default)]
        callbacks: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        errbacks: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        chain: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        chord: Option<serde::de::IgnoredAny>,
    }
    let raw = embed.get();
    if raw == "null" {
        return Some(None);
    }
    if !raw.starts_with('{') {
        return None;
    }
    if let Ok(set) = serde_json::from_str::<Set>(raw)
        && set.callbacks.is_none()
        && set.errbacks.is_none()
        && set.chain.is_none()
        && set.chord.is_none()
    {
        return Some(None);
    }
    serde_json::from_str::<Value>(raw).ok().map(Some)
}

fn task_id(name: &'static str, text: &str) -> Result<TaskId, CeleryError> {
    text.parse().map_err(|_| {
        CeleryError::header(
            name,
            format!("`{text}` is not a UUID (celeriac's task ids are UUIDs)"),
        )
    })
}

fn optional_id(
    value: Option<&Header<'_>>,
    name: &'static str,
) -> Result<Option<TaskId>, CeleryError> {
    match value {
        None => Ok(None),
        Some(value) if value.is_null() => Ok(None),
        Some(Header::Text(text)) => task_id(name, text).map(Some),
        Some(other) => Err(CeleryError::header(name, format!("not an id: {other}"))),
    }
}

/// An ISO 8601 time header (without an offset: UTC), if set.
fn time(value: Option<&Header<'_>>, name: &'static str) -> Result<Option<SystemTime>, CeleryError> {
    let text = match value {
        None => return Ok(None),
        Some(value) if value.is_null() => return Ok(None),
        Some(Header::Text(text)) => text,
        Some(other) => {
            return Err(CeleryError::header(
                name,
                format!("not an ISO 8601 time: {other}"),
            ));
        }
    };
    parse_iso(text)
        .map(Some)
        .map_err(|reason| CeleryError::header(name, reason))
}

/// An ISO 8601 time as Celery writes it (without an offset: UTC).
pub(super) fn parse_iso(text: &str) -> Result<SystemTime, String> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|time| time.and_utc())
        })
        .map_err(|error| format!("`{text}` is not an ISO 8601 time: {error}"))?;
    // A time before 1970 is due (an ETA) or over (an expiry) as much as 1970 is, and only times
    // from 1970 on can be sent on (found by fuzzing: one could be read, not written again).
    Ok(SystemTime::from(parsed).max(UNIX_EPOCH))
}

/// `time` in ISO 8601, UTC, to the microsecond, as Python's `isoformat()` writes it.
pub(super) fn iso(time: SystemTime) -> String {
    crate::clock::calendar(time).to_rfc3339_opts(SecondsFormat::Micros, false)
}

/// `[hard, soft]` in seconds, either null: the lower one set.
fn time_limit(value: Option<&Header<'_>>) -> Result<Option<Duration>, CeleryError> {
    let limits = match value {
        None => return Ok(None),
        Some(value) if value.is_null() => return Ok(None),
        Some(Header::Other(Value::Array(limits))) if limits.len() <= 2 => limits,
        Some(other) => {
            return Err(CeleryError::header(
                "timelimit",
                format!("not `[hard, soft]`: {other}"),
            ));
        }
    };
    let mut lowest: Option<Duration> = None;
    for limit in limits {
        if limit.is_null() {
            continue;
        }
        let seconds = limit
            .as_f64()
            .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
            .ok_or_else(|| {
                CeleryError::header("timelimit", format!("not a number of seconds: {limit}"))
            })?;
        let limit = Duration::try_from_secs_f64(seconds)
            .map_err(|error| CeleryError::header("timelimit", error.to_string()))?;
        lowest = Some(lowest.map_or(limit, |lowest| lowest.min(limit)));
    }
    Ok(lowest)
}

/// Writes `envelope` as a Celery task message (kombu's JSON envelope) that a Python worker runs.
pub(crate) fn encode(envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
    encode_message(envelope).map_err(CeleryError::encoding)
}

fn encode_message(envelope: &Envelope) -> Result<Vec<u8>, CeleryError> {
    let (embed, group) = match envelope.workflow.as_deref() {
        Some(workflow) => {
            let (embed, group) = super::canvas::to_embed(workflow)?;
            let embed =
                serde_json::to_vec(&embed).map_err(|error| CeleryError::Body(error.to_string()))?;
            (std::borrow::Cow::Owned(embed), group)
        }
        None => (std::borrow::Cow::Borrowed(NO_WORKFLOW), None),
    };
    // A chord's member has its place in its workflow; a plain group's, in its headers.
    let group = group.or_else(|| GroupPlace::kept_in(&envelope.headers));
    let body = body_of(envelope, &embed)?;
    let body = base64::engine::general_purpose::STANDARD.encode(body);

    let id = envelope.id.to_string();
    let root = envelope.root_id.map(|root| root.to_string());
    let expiration = envelope.expires.map(|expires| {
        let left = expires
            .duration_since(crate::clock::now())
            .unwrap_or(Duration::ZERO);
        left.as_millis().to_string()
    });
    let delivery_tag = uuid::Uuid::new_v4().to_string();
    let message = Outgoing {
        body: &body,
        headers: OutgoingHeaders {
            task: &envelope.task,
            id: &id,
            eta: envelope.eta.map(iso),
            expires: envelope.expires.map(iso),
            group: group.map(|place| place.group.to_string()),
            group_index: group.and_then(|place| place.index),
            retries: envelope.retries,
            hard_time_limit: envelope.time_limit.map(|limit| limit.as_secs_f64()),
            root_id: root.as_deref().unwrap_or(&id),
            parent_id: envelope.parent_id.map(|parent| parent.to_string()),
            origin: origin(),
            ignore_result: !envelope.store_result,
            application: &envelope.headers,
        },
        properties: OutgoingProperties {
            correlation_id: &id,
            reply_to: envelope.reply_to.as_deref().unwrap_or_default(),
            expiration,
            routing_key: &envelope.queue,
            priority: i64::from(envelope.priority.unwrap_or(0)),
            delivery_tag: &delivery_tag,
        },
    };
    // Sized for the whole message at once: grown from serde_json's default, the buffer moved
    // three times a message.
    let headers: usize = envelope
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 6)
        .sum();
    let mut written = Vec::with_capacity(
        MESSAGE_WITHOUT_FIELDS + body.len() + envelope.task.len() + envelope.queue.len() + headers,
    );
    message
        .write(&mut written)
        .map_err(|error| CeleryError::Envelope(error.to_string()))?;
    Ok(written)
}

/// A message's length without its body, task name, queue and application headers, with room for
/// ids, times, a reply queue and the host's name (one with every field set is about 810 bytes).
const MESSAGE_WITHOUT_FIELDS: usize = 896;

/// Writes `[args,kwargs` (no closing bracket: a body goes on with `embed`) if `args` is an array
/// and `kwargs` an object, as they came; false, writing nothing, otherwise.
fn push_args_and_kwargs(out: &mut Vec<u8>, args: &RawValue, kwargs: &RawValue) -> bool {
    let (args, kwargs) = (args.get(), kwargs.get());
    if !args.starts_with('[') || !kwargs.starts_with('{') {
        return false;
    }
    out.push(b'[');
    out.extend_from_slice(args.as_bytes());
    out.push(b',');
    out.extend_from_slice(kwargs.as_bytes());
    true
}

/// `embed` of a task in no workflow.
const NO_WORKFLOW: &[u8] = br#"{"callbacks":null,"errbacks":null,"chain":null,"chord":null}"#;

/// The body, `[args, kwargs, embed]`: Celery's arguments as they are kept (`[args,kwargs]`), or
/// JSON-encoded ones as `args`.
fn body_of(envelope: &Envelope, embed: &[u8]) -> Result<Vec<u8>, CeleryError> {
    let mut body = Vec::with_capacity(envelope.args.len() + embed.len() + 8);
    match envelope.content_type.as_str() {
        ARGS_CONTENT_TYPE => {
            let (args, kwargs) = serde_json::from_slice::<(&RawValue, &RawValue)>(&envelope.args)
                .map_err(|error| {
                CeleryError::Arguments(format!("not `[args, kwargs]`: {error}"))
            })?;
            if !push_args_and_kwargs(&mut body, args, kwargs) {
                return Err(CeleryError::Arguments(
                    "not `[args, kwargs]`: an array and an object".to_owned(),
                ));
            }
        }
        "application/json" => {
            let args: Value = serde_json::from_slice(&envelope.args)
                .map_err(|error| CeleryError::Arguments(error.to_string()))?;
            // Arguments are a tuple (an array); a lone value or none (`null`) is taken as one.
            let args = match args {
                Value::Array(_) => args,
                Value::Null => json!([]),
                other => json!([other]),
            };
            body.push(b'[');
            serde_json::to_writer(&mut body, &args)
                .map_err(|error| CeleryError::Arguments(error.to_string()))?;
            body.extend_from_slice(b",{}");
        }
        other => {
            return Err(CeleryError::Unsupported(format!(
                "arguments encoded as `{other}`: an app in Celery's format encodes them as JSON (`JsonCodec`)"
            )));
        }
    }
    body.push(b',');
    body.extend_from_slice(embed);
    body.push(b']');
    Ok(body)
}

/// Who sends: `celeriac<pid>@<host>`, as Celery's producers say `gen<pid>@<host>`.
fn origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        format!(
            "celeriac{}@{}",
            std::process::id(),
            crate::events::host_name()
        )
    })
}
