//! Writes the fuzz targets' seed inputs into `corpus/<target>/seed-*`: real messages of each kind,
//! made by celeriac's own writers where it has them. The fuzzers start from these; what they add,
//! minimised, is committed beside them.
//!
//! `cargo run -p celeriac-fuzz --example seeds`

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, gen_frame};
use celeriac::codec::{BincodeCodec, CodecExt, JsonCodec};
use celeriac::{Codec, Envelope};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut seeds = Seeds { root, written: 0 };
    envelope(&mut seeds)?;
    codecs(&mut seeds)?;
    redis_reply(&mut seeds)?;
    kombu(&mut seeds)?;
    amqp_frame(&mut seeds)?;
    celery_wire(&mut seeds)?;
    events(&mut seeds)?;
    regressions()?;
    println!(
        "wrote {} seeds under {}",
        seeds.written,
        seeds.root.display()
    );
    Ok(())
}

struct Seeds {
    root: PathBuf,
    written: usize,
}

impl Seeds {
    fn add(&mut self, target: &str, data: &[u8]) -> std::io::Result<()> {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir)?;
        let count = std::fs::read_dir(&dir)?
            .filter(|entry| {
                entry
                    .as_ref()
                    .is_ok_and(|entry| entry.file_name().to_string_lossy().starts_with("seed-"))
            })
            .count();
        std::fs::write(dir.join(format!("seed-{count:03}")), data)?;
        self.written += 1;
        Ok(())
    }
}

const TASK_ID: &str = "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1b";

fn envelopes() -> Result<Vec<Envelope>, Box<dyn std::error::Error>> {
    let json = JsonCodec::new();
    let bincode = BincodeCodec::new();
    let plain = Envelope::new(
        "ccp_send_sms_code",
        "sms",
        bincode.encode(&("13800138000", 424_242u32))?,
        BincodeCodec::CONTENT_TYPE,
    );
    let mut full = Envelope::new(
        "report",
        "reports",
        json.encode(&(7, "seven", [1.5, 2.5]))?,
        JsonCodec::CONTENT_TYPE,
    );
    full.retries = 2;
    full.eta = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_500_000));
    full.expires = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_600_000));
    full.priority = Some(7);
    full.time_limit = Some(Duration::from_millis(7_500));
    full.parent_id = Some(TASK_ID.parse()?);
    full.root_id = Some(TASK_ID.parse()?);
    full.headers
        .insert("traceparent".into(), "00-abc-def-01".into());
    full.args_schema = Some(0xfeed_f00d);
    full.store_result = true;
    full.reply_to = Some("amq.rabbitmq.reply-to.g2dkAA".into());
    Ok(vec![plain, full])
}

fn celery_message(args: &str, embed: &str) -> String {
    use base64::Engine;
    let body = format!("[{args}, {{\"mobile\": \"13800138000\"}}, {embed}]");
    let body = base64::engine::general_purpose::STANDARD.encode(body);
    format!(
        r#"{{"body": "{body}", "content-encoding": "utf-8", "content-type": "application/json", "headers": {{"lang": "py", "task": "ccp_send_sms_code", "id": "{TASK_ID}", "shadow": null, "eta": "2026-11-30T06:12:00.123456+00:00", "expires": null, "group": null, "group_index": null, "retries": 1, "timelimit": [null, 30.5], "root_id": "{TASK_ID}", "parent_id": null, "argsrepr": "('13800138000',)", "kwargsrepr": "{{}}", "origin": "gen1@shop", "ignore_result": false}}, "properties": {{"correlation_id": "{TASK_ID}", "reply_to": "c0ffee", "delivery_mode": 2, "delivery_info": {{"exchange": "", "routing_key": "celery"}}, "priority": 0, "body_encoding": "base64", "delivery_tag": "{TASK_ID}"}}}}"#
    )
}

const NO_EMBED: &str = r#"{"callbacks": null, "errbacks": null, "chain": null, "chord": null}"#;
const CHAIN_EMBED: &str = r#"{"callbacks": [{"task": "log", "args": [], "kwargs": {}, "options": {"task_id": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1c"}, "subtask_type": null, "immutable": true}], "errbacks": null, "chain": [{"task": "double", "args": [], "kwargs": {}, "options": {"task_id": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1d", "queue": "math", "countdown": 1.5}, "subtask_type": null, "immutable": false}], "chord": {"task": "tsum", "args": [], "kwargs": {}, "options": {"task_id": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1e"}, "subtask_type": null, "immutable": false}}"#;

fn envelope(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    for envelope in envelopes()? {
        seeds.add("envelope", &envelope.to_bytes()?)?;
        if let Some(message) = celeriac::fuzzing::celery_message(&envelope) {
            seeds.add("envelope", &message)?;
        }
    }
    seeds.add(
        "envelope",
        celery_message(r#"["13800138000"]"#, NO_EMBED).as_bytes(),
    )?;
    seeds.add("envelope", celery_message("[2, 3]", CHAIN_EMBED).as_bytes())?;
    seeds.add("envelope", b"not an envelope")?;
    Ok(())
}

fn codecs(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let codecs: [&dyn Codec; 2] = [&BincodeCodec::new(), &JsonCodec::new()];
    for codec in codecs {
        seeds.add("codecs", &codec.encode(&("13800138000", 424_242u32))?)?;
        seeds.add("codecs", &codec.encode(&vec![Some(1i64), None, Some(-7)])?)?;
        seeds.add(
            "codecs",
            &codec.encode(&(
                vec!["a", "b"],
                [("k", 1u64)]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ))?,
        )?;
    }
    // The order type's shape, in JSON (as Python would send it) and as bincode writes it.
    seeds.add(
        "codecs",
        br#"{"mobile": "13800138000", "code": 1, "tags": {"a": [1, 2]}, "kind": {"Call": {"seconds": -3, "retry": true}}, "note": {"text": "call back", "at": [1764500000, -60]}}"#,
    )?;
    seeds.add(
        "codecs",
        &[
            11, b'1', b'3', b'8', 0, 0, 0, 0, 0, 0, 0, 0, 42, 1, 1, b'a', 2, 1, 2, 1, 7, 0,
        ],
    )?;
    Ok(())
}

/// A RESP bulk string.
fn bulk(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", text.len()).as_bytes());
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn redis_reply(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let payload = envelopes()?[0].to_bytes()?;
    let mut reply = vec![64u8];
    reply.extend_from_slice(b"*1\r\n*2\r\n");
    bulk(&mut reply, b"{celeriac:sms}");
    reply.extend_from_slice(b"*2\r\n*2\r\n");
    bulk(&mut reply, b"1764500000000-0");
    reply.extend_from_slice(b"*4\r\n");
    bulk(&mut reply, b"p");
    bulk(&mut reply, &payload);
    bulk(&mut reply, b"r");
    bulk(&mut reply, b"1");
    reply.extend_from_slice(b"*2\r\n");
    bulk(&mut reply, b"1764500000000-1");
    reply.extend_from_slice(b"*2\r\n");
    bulk(&mut reply, b"p");
    bulk(&mut reply, &vec![b'x'; 2_000]);
    seeds.add("redis_reply", &reply)?;
    seeds.add("redis_reply", b"\x10*-1\r\n")?;
    seeds.add(
        "redis_reply",
        b"\x10-NOGROUP No such key or consumer group\r\n",
    )?;
    seeds.add("redis_reply", b"\x10*2\r\n:1\r\n+OK\r\n")?;
    Ok(())
}

fn kombu(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let message = celery_message(r#"["13800138000"]"#, NO_EMBED);
    let with = |kind: u8, data: &[u8]| [&[kind][..], data].concat();
    seeds.add("kombu", &with(0, message.as_bytes()))?;
    seeds.add(
        "kombu",
        &with(0, celery_message("[2, 3]", CHAIN_EMBED).as_bytes()),
    )?;
    // celeriac's own message wrapped for kombu's lists.
    {
        use base64::Engine;
        let payload = envelopes()?[0].to_bytes()?;
        let body = base64::engine::general_purpose::STANDARD.encode(payload);
        let wrapped = format!(
            r#"{{"body":"{body}","content-type":"application/x-celeriac","properties":{{"delivery_info":{{"exchange":"","routing_key":"sms"}},"priority":3}}}}"#
        );
        seeds.add("kombu", &with(0, wrapped.as_bytes()))?;
    }
    let reason = "unknown task `x`";
    let record = format!("1764500000000 {} {reason}{message}", reason.len());
    seeds.add("kombu", &with(1, record.as_bytes()))?;
    seeds.add("kombu", &with(1, b"99999999999999999 3 abc{}"))?;
    let unacked = format!(r#"[{message}, "", "celery"]"#);
    seeds.add("kombu", &with(2, unacked.as_bytes()))?;
    {
        use base64::Engine;
        let request = r#"{"method": "ping", "arguments": {}, "destination": null, "pattern": null, "matcher": null, "ticket": "t-1", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "rk-1"}}"#;
        let body = base64::engine::general_purpose::STANDARD.encode(request);
        let envelope = format!(
            r#"{{"body": "{body}", "content-encoding": "utf-8", "content-type": "application/json", "headers": {{"clock": 3, "expires": 1764500010.5}}, "properties": {{"delivery_mode": 2, "body_encoding": "base64", "delivery_info": {{"exchange": "celery.pidbox", "routing_key": ""}}}}}}"#
        );
        seeds.add("kombu", &with(3, envelope.as_bytes()))?;
    }
    Ok(())
}

fn header_frame(properties: BasicProperties) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let frame = AMQPFrame::Header(
        1,
        AMQPContentHeader {
            class_id: 60,
            body_size: 11,
            properties,
        },
    );
    let (bytes, _) = cookie_factory::r#gen(gen_frame(&frame), Vec::new())?;
    Ok(bytes)
}

/// Headers nested `depth` levels deep (the headers table is level 1), tables and arrays in turn.
fn nested_headers(depth: usize) -> FieldTable {
    let mut value = AMQPValue::LongString(LongString::from("bottom"));
    for level in 1..depth {
        value = if level % 2 == 0 {
            AMQPValue::FieldArray(FieldArray::from(vec![value]))
        } else {
            let mut table = FieldTable::default();
            table.insert("n".into(), value);
            AMQPValue::FieldTable(table)
        };
    }
    let mut deep = FieldTable::default();
    deep.insert("deep".into(), value);
    deep
}

fn amqp_frame(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let mut celery = FieldTable::default();
    celery.insert("lang".into(), AMQPValue::LongString(LongString::from("py")));
    celery.insert(
        "task".into(),
        AMQPValue::LongString(LongString::from("add")),
    );
    celery.insert(
        "id".into(),
        AMQPValue::LongString(LongString::from(TASK_ID)),
    );
    celery.insert("retries".into(), AMQPValue::LongLongInt(1));
    celery.insert(
        "timelimit".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::Void,
            AMQPValue::Double(30.5),
        ])),
    );
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(celery)
        .with_correlation_id(TASK_ID.into())
        .with_priority(0)
        .with_delivery_mode(2);
    seeds.add("amqp_frame", &header_frame(properties)?)?;
    // Headers nested deeper than the transport lets lapin read.
    let deep = nested_headers(70);
    seeds.add(
        "amqp_frame",
        &header_frame(BasicProperties::default().with_headers(deep))?,
    )?;
    seeds.add("amqp_frame", b"\x08\x00\x00\x00\x00\x00\x00\xce")?;
    seeds.add("amqp_frame", b"\x03\x00\x01\x00\x00\x00\x02{}\xce")?;
    Ok(())
}

fn celery_wire(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let with = |kind: u8, data: &[u8]| [&[kind][..], data].concat();
    for request in [
        r#"{"method": "ping", "arguments": {}, "destination": null, "ticket": "t-1", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "rk-1"}}"#,
        r#"{"method": "revoke", "arguments": {"task_id": ["9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1b"], "terminate": true, "signal": "SIGTERM"}, "destination": ["celery@vm"], "ticket": "t-2", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "rk-2"}}"#,
        r#"{"method": "rate_limit", "arguments": {"task_name": "add", "rate_limit": "10/m"}, "destination": null}"#,
    ] {
        seeds.add("celery_wire", &with(0, request.as_bytes()))?;
        if let Some(command) =
            celeriac_core::celery::pidbox::command_for(request.as_bytes(), 0.0, 1.0)
        {
            let command: serde_json::Value = serde_json::from_slice(&command)?;
            if let Some(topic) = command.get("reply_to").and_then(|topic| topic.as_str()) {
                let reply = r#"{"v": 1, "hostname": "sms@vm", "pid": 42, "reply": {"ok": "pong"}}"#;
                seeds.add(
                    "celery_wire",
                    &with(1, format!("{topic}\n{reply}").as_bytes()),
                )?;
            }
        }
    }
    seeds.add("celery_wire", &with(2, EVENTS.as_bytes()))?;
    seeds.add(
        "celery_wire",
        &with(3, br#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-30T06:12:00.123456+00:00", "task_id": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1b"}"#),
    )?;
    seeds.add(
        "celery_wire",
        &with(3, br#"{"status": "FAILURE", "result": {"exc_type": "ValueError", "exc_message": ["bad"], "exc_module": "builtins"}, "traceback": "Traceback ..."}"#),
    )?;
    seeds.add(
        "celery_wire",
        &with(
            4,
            format!("[[\"13800138000\"], {{\"code\": 7}}, {NO_EMBED}]\n[5]").as_bytes(),
        ),
    )?;
    Ok(())
}

/// Inputs like those that found bugs, kept apart from the corpus (which minimising may prune) in
/// `regressions/<target>/`; the corpus replay runs them too.
fn regressions() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let write = |target: &str, name: &str, data: &[u8]| -> std::io::Result<()> {
        std::fs::create_dir_all(root.join(target))?;
        std::fs::write(root.join(target).join(name), data)
    };
    // Headers nested too deep, behind property flags with bit 0 set ("another flags word"),
    // which lapin ignores and the header check once honoured, looking two bytes too far.
    let deep = nested_headers(200);
    let mut frame = header_frame(BasicProperties::default().with_headers(deep))?;
    frame[7 + 13] |= 1;
    write("amqp_frame", "flag-bit-0-deep-headers", &frame)?;
    // A length prefix claiming 252 MB in a 5-byte message.
    write(
        "codecs",
        "lying-length-prefix",
        &[0xFC, 0x0F, 0x0F, 0x0F, 0x0F],
    )?;
    let mut envelope = b"CLR\x05".to_vec();
    envelope.extend_from_slice(&[0xFC, 0x0F, 0x0F, 0x0F, 0x0F]);
    write("envelope", "lying-length-prefix", &envelope)?;
    // Times out of range.
    let message = celery_message(r#"["13800138000"]"#, NO_EMBED);
    for (name, eta) in [
        ("eta-before-1970", "1012-11-30T10:53:20.000000+00:00"),
        ("eta-past-chrono", "+262142-12-31T23:59:59.999999+00:00"),
    ] {
        let dated = message.replace("2026-11-30T06:12:00.123456+00:00", eta);
        write("envelope", name, dated.as_bytes())?;
    }
    write(
        "events",
        "timestamps-out-of-range",
        br#"{"v": 1, "hostname": "w", "pid": 1, "events": [{"type": "task-failed", "timestamp": 1e300, "uuid": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1b", "name": "t", "runtime": 0.5, "exception": "boom"}, {"type": "worker-heartbeat", "timestamp": 1e13, "concurrency": 1, "active": 1, "processed": 0, "freq": 1e300}]}"#,
    )?;
    write(
        "kombu",
        "dead-letter-past-chrono",
        b"\x0199999999999999999 3 abc{}",
    )?;
    // Entries over the budget stating sizes near `i64::MAX`, and a stated length with no budget.
    let mut reply = vec![0u8];
    reply.extend_from_slice(b"*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n");
    reply.extend_from_slice(b"$9223372036854775807\r\n$9223372036854775807\r\n");
    write("redis_reply", "huge-skipped-sizes", &reply)?;
    write(
        "redis_reply",
        "no-budget-huge-bulk",
        b"\xff$9000000000\r\nabc",
    )?;
    Ok(())
}

const EVENTS: &str = r#"{"v": 1, "hostname": "sms@vm", "pid": 42, "events": [{"type": "worker-online", "timestamp": 1764500000.5, "concurrency": 8, "queues": ["sms"], "freq": 2.0, "sw_ident": "celeriac", "sw_ver": "0.1.0", "sw_sys": "Linux"}, {"type": "task-received", "timestamp": 1764500000.6, "uuid": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1b", "name": "ccp_send_sms_code", "queue": "sms", "retries": 0}, {"type": "task-started", "timestamp": 1764500000.7, "uuid": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1b", "name": "ccp_send_sms_code"}, {"type": "task-succeeded", "timestamp": 1764500000.8, "uuid": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1b", "name": "ccp_send_sms_code", "runtime": 0.1}, {"type": "worker-heartbeat", "timestamp": 1764500002.5, "concurrency": 8, "active": 0, "processed": 1, "freq": 2.0, "loadavg": [0.1, 0.2, 0.3], "rss_bytes": 1048576}, {"type": "worker-offline", "timestamp": 1764500003.5, "processed": 1}]}"#;

fn events(seeds: &mut Seeds) -> Result<(), Box<dyn std::error::Error>> {
    seeds.add("events", EVENTS.as_bytes())?;
    seeds.add(
        "events",
        br#"{"v": 1, "hostname": "w", "pid": 1, "events": [{"type": "task-failed", "timestamp": 1e300, "uuid": "9b7b6a7e-2c1d-4f3e-8a5b-6c7d8e9f0a1b", "name": "t", "runtime": 0.5, "exception": "boom"}, {"type": "worker-heartbeat", "timestamp": -5, "concurrency": 1, "active": 1, "processed": 0, "freq": 1e300}]}"#,
    )?;
    Ok(())
}
