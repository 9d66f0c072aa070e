//! Celery's messages as Python Celery 5.7 wrote them (captured on Redis, byte for byte), read and
//! written here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{ARGS_CONTENT_TYPE, decode, encode};
use crate::{Envelope, TaskId};

/// `add.delay(2, 3)`.
const ADD: &str = r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "52220322-6490-4d37-a26d-85757b423078", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "52220322-6490-4d37-a26d-85757b423078", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen12739@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "52220322-6490-4d37-a26d-85757b423078", "reply_to": "936f6d5d-be85-38d2-84d4-6198fba96ac6", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "wire_celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "e0b5487b-e149-47f4-a057-945eb77ebc2e"}}"#;

/// `add.apply_async((4, 5), countdown=30, expires=600, priority=5, headers={"x-custom": "v"})`.
const ADD_LATER: &str = r#"{"body": "W1s0LCA1XSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "671de41f-6526-45cf-b699-c60cdc0edc9a", "shadow": null, "eta": "2026-11-29T12:12:48.735265+00:00", "expires": "2026-11-29T12:22:18.735265+00:00", "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "671de41f-6526-45cf-b699-c60cdc0edc9a", "parent_id": null, "argsrepr": "(4, 5)", "kwargsrepr": "{}", "origin": "gen12739@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}, "x-custom": "v"}, "properties": {"correlation_id": "671de41f-6526-45cf-b699-c60cdc0edc9a", "reply_to": "936f6d5d-be85-38d2-84d4-6198fba96ac6", "delivery_mode": 2, "expiration": "600000", "delivery_info": {"exchange": "", "routing_key": "wire_celery"}, "priority": 5, "body_encoding": "base64", "delivery_tag": "f91b4ed6-9e95-4190-914a-cdaade561d15"}}"#;

/// The message a Python worker's `self.retry(countdown=5, …)` sent (its body shown decoded).
const RETRIED: &str = r#"{"body": [[1], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}], "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.flaky_cap", "id": "a89bfb46-1aae-4109-9db1-5f3d0b1ae957", "shadow": null, "eta": "2026-11-29T12:15:53.352888+00:00", "expires": null, "group": null, "group_index": null, "retries": 1, "timelimit": [null, null], "root_id": "a89bfb46-1aae-4109-9db1-5f3d0b1ae957", "parent_id": "a89bfb46-1aae-4109-9db1-5f3d0b1ae957", "argsrepr": "(1,)", "kwargsrepr": "{}", "origin": "gen22557@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "a89bfb46-1aae-4109-9db1-5f3d0b1ae957", "reply_to": "9a624081-4c32-3a6b-8e85-b916bbcf6629", "origin": "gen22557@vm", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "wire_capture"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "8dfedc17-2236-45e5-833b-5d50d5e8dbcb"}}"#;

fn decoded(message: &str) -> Envelope {
    decode(message.as_bytes()).unwrap_or_else(|error| panic!("{}", crate::error::Report(&error)))
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|error| panic!("{error}"))
}

fn at(text: &str) -> SystemTime {
    SystemTime::from(
        chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|error| panic!("{error}")),
    )
}

fn id(text: &str) -> TaskId {
    text.parse().unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn python_s_delay_reads_as_an_envelope() {
    let envelope = decoded(ADD);
    assert_eq!(envelope.task, "tasks.add");
    assert_eq!(envelope.id, id("52220322-6490-4d37-a26d-85757b423078"));
    assert_eq!(envelope.queue, "wire_celery");
    assert_eq!(envelope.content_type, ARGS_CONTENT_TYPE);
    assert_eq!(json_of(&envelope.args), json!([[2, 3], {}]));
    assert_eq!(envelope.retries, 0);
    assert_eq!((envelope.eta, envelope.expires), (None, None));
    assert_eq!(envelope.root_id, Some(envelope.id));
    assert_eq!(envelope.parent_id, None);
    assert_eq!(envelope.priority, Some(0));
    assert_eq!(envelope.time_limit, None);
    assert!(envelope.store_result);
    assert_eq!(
        envelope.reply_to.as_deref(),
        Some("936f6d5d-be85-38d2-84d4-6198fba96ac6")
    );
    // The protocol's own headers are not application headers.
    assert!(envelope.headers.is_empty(), "{:?}", envelope.headers);
}

#[test]
fn times_priority_and_custom_headers_are_kept() {
    let envelope = decoded(ADD_LATER);
    assert_eq!(json_of(&envelope.args), json!([[4, 5], {}]));
    assert_eq!(envelope.eta, Some(at("2026-11-29T12:12:48.735265+00:00")));
    assert_eq!(
        envelope.expires,
        Some(at("2026-11-29T12:22:18.735265+00:00"))
    );
    assert_eq!(envelope.priority, Some(5));
    assert_eq!(
        envelope.headers.get("x-custom").map(String::as_str),
        Some("v")
    );

    let retried = decoded(RETRIED);
    assert_eq!(retried.retries, 1);
    assert_eq!(retried.queue, "wire_capture");
    assert_eq!(retried.parent_id, Some(retried.id));
    assert_eq!(json_of(&retried.args), json!([[1], {}]));
}

/// Rewrites a header of `message`.
fn with_header(message: &str, name: &str, value: Value) -> String {
    let mut json: Value = serde_json::from_str(message).unwrap_or_default();
    json["headers"][name] = value;
    json.to_string()
}

/// Rewrites the body of `message` (written as it is, not in base64).
fn with_body(message: &str, body: Value) -> String {
    let mut json: Value = serde_json::from_str(message).unwrap_or_default();
    json["body"] = Value::String(body.to_string());
    json["properties"]["body_encoding"] = json!("utf-8");
    json.to_string()
}

#[test]
fn hostile_celery_messages_are_refused_with_the_reason() {
    let mut bad_base64: Value = serde_json::from_str(ADD).unwrap_or_default();
    bad_base64["body"] = json!("@@@ not base64 @@@");
    let mut weird_type: Value = serde_json::from_str(ADD).unwrap_or_default();
    weird_type["content-type"] = json!("application/x-python-serialize");
    let mut no_route: Value = serde_json::from_str(ADD).unwrap_or_default();
    no_route["properties"]["delivery_info"] = Value::Null;
    let chord = json!([[1], {}, {"chord": {"task": "tasks.xsum", "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}}]);
    let cases = [
        (with_body(ADD, json!({"not": "a list"})), "not an array"),
        (
            with_body(ADD, json!([[1, 2], {}])),
            "an array of 2 element(s)",
        ),
        (
            with_body(ADD, json!([{"a": 1}, {}, {}])),
            "`args` is not an array",
        ),
        (
            with_body(ADD, json!([[], [], {}])),
            "`kwargs` is not an object",
        ),
        (
            with_body(ADD, json!([[], {}, 3])),
            "`embed` is not an object",
        ),
        (
            with_body(ADD, chord),
            "a chord's member without its `group` and `group_index` headers",
        ),
        (bad_base64.to_string(), "bad base64"),
        (weird_type.to_string(), "is not accepted"),
        (no_route.to_string(), "no routing key"),
        (
            with_header(ADD, "eta", json!("not-a-date")),
            "is not an ISO 8601 time",
        ),
        (
            with_header(ADD, "eta", json!("9999-01-01T00:00:00")),
            "refused as absurd",
        ),
        (
            with_header(ADD, "expires", json!(12)),
            "not an ISO 8601 time",
        ),
        (
            with_header(ADD, "id", json!("my-custom-id")),
            "is not a UUID",
        ),
        (with_header(ADD, "task", Value::Null), "not a task name"),
        (with_header(ADD, "retries", json!(-1)), "not a count"),
        (
            with_header(ADD, "timelimit", json!([-5, null])),
            "not a number of seconds",
        ),
        (
            with_header(ADD, "timelimit", json!("soon")),
            "not `[hard, soft]`",
        ),
        (
            r#"{"task": "tasks.add", "args": [1]}"#.to_owned(),
            "not a celeriac envelope nor a Celery message",
        ),
        (
            "{".to_owned(),
            "not a celeriac envelope nor a Celery message",
        ),
    ];
    for (message, expected) in cases {
        let error = decode(message.as_bytes())
            .map(|envelope| format!("decoded: {envelope:?}"))
            .unwrap_or_else(|error| crate::error::Report(&error).to_string());
        assert!(
            error.contains(expected),
            "{message}\n→ {error}\n(expected {expected:?})"
        );
    }
    // An ETA without an offset is UTC; a null embed is no workflow.
    let naive = decoded(&with_header(
        ADD,
        "eta",
        json!("2026-11-29T12:12:48.735265"),
    ));
    assert_eq!(naive.eta, Some(at("2026-11-29T12:12:48.735265+00:00")));
    decoded(&with_body(ADD, json!([[], {}, null])));
}

#[test]
fn an_envelope_is_written_as_python_writes_a_task() {
    let python: Value = serde_json::from_str(ADD).unwrap_or_default();
    let mut envelope = Envelope::new(
        "tasks.add",
        "wire_celery",
        b"[2,3]".to_vec(),
        "application/json",
    );
    envelope.retries = 2;
    envelope.eta = Some(UNIX_EPOCH + Duration::from_micros(1_795_954_495_678_853));
    envelope.expires = Some(crate::clock::now() + Duration::from_secs(600));
    envelope.priority = Some(6);
    envelope.time_limit = Some(Duration::from_millis(2500));
    envelope.parent_id = Some(TaskId::new());
    envelope.root_id = Some(TaskId::new());
    envelope.headers.insert("x-custom".into(), "v".into());
    envelope.reply_to = Some("replies".into());
    let written = encode(&envelope).unwrap_or_else(|error| panic!("{error}"));
    let ours = json_of(&written);

    // Every header and property Python writes, and no other but ours.
    let keys = |value: &Value| -> Vec<String> {
        let mut keys: Vec<String> = value
            .as_object()
            .map(|map| map.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    // Null ones are left out (Celery reads headers with `.get`): here the group's and these.
    let left_out = ["group", "group_index", "shadow", "stamped_headers"];
    let mut expected_headers: Vec<String> = keys(&python["headers"])
        .into_iter()
        .filter(|name| !left_out.contains(&name.as_str()))
        .collect();
    expected_headers.push("x-custom".into());
    expected_headers.sort();
    assert_eq!(keys(&ours["headers"]), expected_headers);
    let mut expected_properties = keys(&python["properties"]);
    expected_properties.push("expiration".into());
    expected_properties.sort();
    assert_eq!(keys(&ours["properties"]), expected_properties);
    assert_eq!(
        ours["properties"]["delivery_info"],
        json!({"exchange": "", "routing_key": "wire_celery"})
    );
    // The Redis broker reads the priority from the message's end, where the writer leaves it
    // (`celeriac-redis`'s kombu layout): the delivery information, the priority, the tag last.
    let tag = ours["properties"]["delivery_tag"]
        .as_str()
        .unwrap_or_default();
    let end = format!(
        r#""delivery_info":{{"exchange":"","routing_key":"wire_celery"}},"priority":6,"body_encoding":"base64","delivery_tag":"{tag}"}}}}"#
    );
    assert_eq!(tag.len(), 36);
    assert!(
        written.ends_with(end.as_bytes()),
        "{}",
        String::from_utf8_lossy(&written)
    );
    assert_eq!(ours["headers"]["argsrepr"], json!("(redacted)"));
    assert_eq!(ours["headers"]["timelimit"], json!([2.5, null]));
    assert_eq!(
        ours["headers"]["eta"],
        json!("2026-11-29T12:14:55.678853+00:00")
    );
    let expiration: u64 = ours["properties"]["expiration"]
        .as_str()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_default();
    assert!((599_000..=600_000).contains(&expiration), "{expiration}");
    // The body is always the 3-element array a Python worker unpacks.
    let message: super::incoming::Incoming<'_> =
        serde_json::from_slice(&written).unwrap_or_else(|error| panic!("{error}"));
    let body = super::message::body_bytes(
        message.body,
        message.content_type.as_deref(),
        message.properties.body_encoding.as_deref(),
    )
    .unwrap_or_default();
    assert_eq!(
        json_of(&body),
        json!([[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}])
    );

    // And it reads back as the same envelope.
    let back = decoded(std::str::from_utf8(&written).unwrap_or_default());
    assert_eq!(back.id, envelope.id);
    assert_eq!(
        (back.task.as_str(), back.queue.as_str()),
        ("tasks.add", "wire_celery")
    );
    assert_eq!(json_of(&back.args), json!([[2, 3], {}]));
    assert_eq!(back.retries, 2);
    assert_eq!(back.eta, envelope.eta);
    assert_eq!(back.priority, Some(6));
    assert_eq!(back.time_limit, envelope.time_limit);
    assert_eq!(
        (back.parent_id, back.root_id),
        (envelope.parent_id, envelope.root_id)
    );
    assert_eq!(back.headers, envelope.headers);
    assert_eq!(back.reply_to.as_deref(), Some("replies"));
    assert!(!back.store_result);
    // Written again, Celery's arguments stay Celery's.
    let again = json_of(&encode(&back).unwrap_or_default());
    assert_eq!(again["headers"]["id"], json!(envelope.id.to_string()));
}

#[test]
fn what_celery_s_format_cannot_carry_is_refused() {
    let bincode = Envelope::new("t", "q", vec![1, 2], "application/x-bincode");
    let error = encode(&bincode).map(|_| ()).unwrap_err();
    assert!(
        crate::error::Report(&error)
            .to_string()
            .contains("JsonCodec")
    );
    // One argument, and none, are arrays too.
    let one = Envelope::new("t", "q", b"\"x\"".to_vec(), "application/json");
    let none = Envelope::new("t", "q", b"null".to_vec(), "application/json");
    for (envelope, args) in [(one, json!(["x"])), (none, json!([]))] {
        let back = decoded(
            std::str::from_utf8(&encode(&envelope).unwrap_or_default()).unwrap_or_default(),
        );
        assert_eq!(json_of(&back.args), json!([args, {}]));
    }
}

#[test]
fn a_plain_group_s_member_keeps_its_place_when_sent_again() {
    let group = "a829edec-0000-4000-8000-000000000004";
    let member = with_header(ADD, "group", json!(group));
    let member = with_header(&member, "group_index", json!(3));
    let envelope = decoded(&member);
    assert!(envelope.workflow.is_none(), "a plain group has no workflow");
    // A retry writes it again: still in its group, at its place, as Celery's retry keeps it.
    let again = json_of(&encode(&envelope).unwrap_or_default());
    assert_eq!(again["headers"]["group"], json!(group));
    assert_eq!(again["headers"]["group_index"], json!(3));

    // What a group built in Rust gives its members, written as Celery does.
    let mut ours = Envelope::new(
        "tasks.add",
        "q",
        b"[[1, 2], {}]".to_vec(),
        ARGS_CONTENT_TYPE,
    );
    super::place_in_group(&mut ours, id(group), 0);
    let written = json_of(&encode(&ours).unwrap_or_default());
    assert_eq!(written["headers"]["group"], json!(group));
    assert_eq!(written["headers"]["group_index"], json!(0));
    // A message in no group says so.
    let alone = Envelope::new(
        "tasks.add",
        "q",
        b"[[1, 2], {}]".to_vec(),
        ARGS_CONTENT_TYPE,
    );
    let alone = json_of(&encode(&alone).unwrap_or_default());
    assert_eq!(alone["headers"]["group"], Value::Null);
}

#[test]
fn embeds_and_escaped_headers_read_as_their_values() {
    // No workflow field set, whatever the spacing or other keys: no workflow.
    for embed in [
        json!(null),
        json!({}),
        json!({"callbacks": null, "errbacks": null, "chain": null, "chord": null, "group_id": "x"}),
    ] {
        let envelope = decoded(&with_body(ADD, json!([[2], {}, embed])));
        assert!(envelope.workflow.is_none(), "{embed}");
    }
    // A set field, after others or repeated (the last one counts, as Python reads it): a workflow.
    let link = json!([{"task": "tasks.double", "args": [], "kwargs": {}, "options": {},
                       "subtask_type": null, "immutable": false}]);
    let after_others = json!([[2], {}, {"x": [1, {"y": null}], "chain": null, "callbacks": link}]);
    let repeated =
        format!(r#"[[2], {{}}, {{"callbacks": null, "callbacks": {link}, "chain": null}}]"#);
    for body in [after_others.to_string(), repeated] {
        let mut message: Value = serde_json::from_str(ADD).unwrap_or_default();
        message["body"] = Value::String(body.clone());
        message["properties"]["body_encoding"] = json!("utf-8");
        let envelope = decoded(&message.to_string());
        let workflow = envelope.workflow.unwrap_or_else(|| panic!("{body}"));
        assert_eq!(workflow.link.len(), 1, "{body}");
    }
    // Escaped strings (which cannot be borrowed from the message) read as what they say.
    let escaped = ADD
        .replace(r#""task": "tasks.add""#, r#""task": "tasks.\u0061dd""#)
        .replace(r#""body": "W1sy"#, r#""body": "\u0057\u0031sy"#);
    let envelope = decoded(&escaped);
    assert_eq!(envelope.task, "tasks.add");
    assert_eq!(json_of(&envelope.args), json!([[2, 3], {}]));
    // A header of the wrong type is shown as JSON in the reason.
    let error = decode(with_header(ADD, "retries", json!("two")).as_bytes())
        .map(|_| String::new())
        .unwrap_or_else(|error| crate::error::Report(&error).to_string());
    assert!(error.contains(r#"not a count: "two""#), "{error}");
}
