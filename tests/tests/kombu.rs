//! The broker on kombu's Redis layout (Python Celery's) against a real Redis: the shared contract
//! suite, and what kombu's other participants see and leave behind. Python Celery itself is in
//! `celery_python.rs`.

use std::sync::Arc;
use std::time::Duration;

use celeriac::Broker;
use celeriac::broker::{ConsumeOptions, Outgoing};
use celeriac_tests::harness::{eventually, redis_url, require_kombu, unique_queue, within};
use futures::StreamExt;
use redis::AsyncCommands;

async fn kombu() -> Option<Arc<dyn Broker>> {
    Some(Arc::new(
        require_kombu("celeriac-test-kombu-contract:", |builder| builder).await?,
    ))
}

celeriac::broker_contract_tests!(kombu);

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A Celery message as Python's kombu writes it (spacing and all), for `queue`.
fn python_message(queue: &str, tag: &str, priority: u8) -> String {
    format!(
        r#"{{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {{"lang": "py", "task": "tasks.add", "id": "{tag}"}}, "properties": {{"correlation_id": "{tag}", "reply_to": "", "delivery_mode": 2, "delivery_info": {{"exchange": "", "routing_key": "{queue}"}}, "priority": {priority}, "body_encoding": "base64", "delivery_tag": "{tag}"}}}}"#
    )
}

/// A message taken is recorded as kombu records it: `unacked[tag] = [envelope, exchange,
/// routing_key]` (the anonymous exchange and the queue's name: a restore puts it back where it was
/// taken from) and `unacked_index[tag] = delivery time`; an ack removes both.
#[tokio::test]
async fn a_held_message_is_recorded_as_kombu_records_it() {
    let Some(broker) = require_kombu("celeriac-test-kombu-record:", |b| b).await else {
        return;
    };
    let queue = unique_queue("record");
    let message_tag = uuid::Uuid::new_v4().to_string();
    let message = python_message(&queue, &message_tag, 0);
    let mut conn = redis().await;
    let _: () = conn
        .lpush(format!("celeriac-test-kombu-record:{queue}"), &message)
        .await
        .unwrap();
    let mut stream = broker
        .consume(std::slice::from_ref(&queue), ConsumeOptions::default())
        .await
        .unwrap();
    let delivery = within(Duration::from_secs(5), "the message", stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&delivery.payload()[..], message.as_bytes());
    assert!(!delivery.redelivered());
    let entries: std::collections::HashMap<String, String> = conn
        .hgetall("celeriac-test-kombu-record:unacked")
        .await
        .unwrap();
    let held: Vec<(&String, serde_json::Value)> = entries
        .iter()
        .map(|(tag, entry)| (tag, serde_json::from_str(entry).unwrap()))
        .filter(|(_, entry): &(&String, serde_json::Value)| {
            entry[0]["headers"]["id"] == message_tag.as_str()
        })
        .collect();
    let [(tag, entry)] = held.as_slice() else {
        panic!("one unacked entry holds the message: {entries:?}");
    };
    assert_eq!(entry[0]["headers"]["task"], "tasks.add");
    assert_eq!(entry[1], "");
    assert_eq!(entry[2], queue.as_str());
    let score: Option<f64> = conn
        .zscore("celeriac-test-kombu-record:unacked_index", *tag)
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        score.is_some_and(|score| (now - score).abs() < 60.0),
        "{score:?}"
    );
    delivery.ack().await.unwrap();
    let entry: Option<String> = conn
        .hget("celeriac-test-kombu-record:unacked", *tag)
        .await
        .unwrap();
    let score: Option<f64> = conn
        .zscore("celeriac-test-kombu-record:unacked_index", *tag)
        .await
        .unwrap();
    assert_eq!((entry, score), (None, None));
}

/// Python producers' priorities are served in kombu's order: the queue's own list (0–2) first,
/// then `\x06\x163`, `\x06\x166`, `\x06\x169`.
#[tokio::test]
async fn python_priorities_are_served_in_kombus_order() {
    let Some(broker) = require_kombu("celeriac-test-kombu-priority:", |b| b).await else {
        return;
    };
    let queue = unique_queue("priority");
    let mut conn = redis().await;
    for (priority, suffix) in [
        (9, "\x06\x169"),
        (6, "\x06\x166"),
        (3, "\x06\x163"),
        (0, ""),
    ] {
        let tag = format!("tag-{priority}");
        let _: () = conn
            .lpush(
                format!("celeriac-test-kombu-priority:{queue}{suffix}"),
                python_message(&queue, &tag, priority),
            )
            .await
            .unwrap();
    }
    assert_eq!(broker.len(&queue).await.unwrap(), 4);
    let mut stream = broker
        .consume(
            std::slice::from_ref(&queue),
            ConsumeOptions::default().prefetch(4),
        )
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let delivery = within(Duration::from_secs(5), "a message", stream.next())
            .await
            .unwrap()
            .unwrap();
        let message: serde_json::Value = serde_json::from_slice(delivery.payload()).unwrap();
        order.push(message["properties"]["priority"].as_u64().unwrap());
        delivery.ack().await.unwrap();
    }
    assert_eq!(order, [0, 3, 6, 9]);
}

/// A message a crashed worker (of either language) left in `unacked` is put back by the restore
/// sweep once older than the visibility timeout, marked redelivered, at the head of its queue —
/// and one held by a live celeriac worker is not, however long it is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_restores_what_a_dead_worker_held_and_spares_what_a_live_one_holds() {
    let Some(broker) = require_kombu("celeriac-test-kombu-sweep:", |b| b).await else {
        return;
    };
    let queue = unique_queue("sweep");
    let mut conn = redis().await;
    // A live consumer holds one message for three visibility timeouts.
    broker
        .publish(Outgoing::new(queue.clone(), b"held".to_vec()))
        .await
        .unwrap();
    let mut live = broker
        .consume(
            std::slice::from_ref(&queue),
            ConsumeOptions::default().prefetch(1),
        )
        .await
        .unwrap();
    let held = within(Duration::from_secs(5), "the held message", live.next())
        .await
        .unwrap()
        .unwrap();
    // A dead worker's message: recorded an hour ago, in no list.
    let tag = uuid::Uuid::new_v4().to_string();
    let entry = format!(r#"[{}, "", "{queue}"]"#, python_message(&queue, &tag, 0));
    let _: () = conn
        .hset("celeriac-test-kombu-sweep:unacked", &tag, entry)
        .await
        .unwrap();
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 3600.0;
    let _: () = conn
        .zadd("celeriac-test-kombu-sweep:unacked_index", &tag, an_hour_ago)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "the dead worker's message back in its queue",
        || async { broker.len(&queue).await.unwrap() == 1 },
    )
    .await;
    let restored: String = redis()
        .await
        .lindex(format!("celeriac-test-kombu-sweep:{queue}"), -1)
        .await
        .unwrap();
    let restored: serde_json::Value = serde_json::from_str(&restored).unwrap();
    assert_eq!(restored["headers"]["redelivered"], true);
    assert_eq!(restored["properties"]["delivery_info"]["redelivered"], true);
    // The live consumer's message stays held through three visibility timeouts (2 s each).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        broker.len(&queue).await.unwrap(),
        1,
        "only the dead worker's message was restored"
    );
    assert_eq!(broker.stats(&queue).await.unwrap().unacked, 1);
    drop(live);
    held.ack().await.unwrap();
    let mut next = broker
        .consume(std::slice::from_ref(&queue), ConsumeOptions::default())
        .await
        .unwrap();
    let again = within(Duration::from_secs(5), "the restored message", next.next())
        .await
        .unwrap()
        .unwrap();
    assert!(again.redelivered());
    again.ack().await.unwrap();
}

/// Bytes that are not kombu's envelope on a queue (a foreign or broken producer) are
/// dead-lettered with the reason, never lost, and the consumer carries on.
#[tokio::test]
async fn garbage_on_a_list_is_dead_lettered_and_the_next_message_arrives() {
    let Some(broker) = require_kombu("celeriac-test-kombu-garbage:", |b| b).await else {
        return;
    };
    let queue = unique_queue("garbage");
    let mut conn = redis().await;
    // Refused while taken (not an object), then by the consumer (not JSON; no delivery_info).
    for garbage in [
        "not json",
        "[1, 2]",
        r#"{"body": "x", }"#,
        r#"{"body": "x"}"#,
    ] {
        let _: () = conn
            .lpush(format!("celeriac-test-kombu-garbage:{queue}"), garbage)
            .await
            .unwrap();
    }
    broker
        .publish(Outgoing::new(queue.clone(), b"good".to_vec()))
        .await
        .unwrap();
    let mut stream = broker
        .consume(std::slice::from_ref(&queue), ConsumeOptions::default())
        .await
        .unwrap();
    let delivery = within(Duration::from_secs(5), "the good message", stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&delivery.payload()[..], b"good");
    delivery.ack().await.unwrap();
    let letters = broker.dead_letters(&queue, 10).await.unwrap();
    let payloads: Vec<&[u8]> = letters.iter().map(|letter| &letter.payload[..]).collect();
    assert_eq!(
        payloads,
        [
            &b"not json"[..],
            b"[1, 2]",
            br#"{"body": "x", }"#,
            br#"{"body": "x"}"#
        ]
    );
    assert!(
        letters
            .iter()
            .all(|letter| letter.reason.contains("not a kombu message"))
    );
}

/// Celery's result backend: a waiter wakes when a result is stored by another process (here a
/// raw `SET` + `PUBLISH`, as Python's backend writes it), and a first success is never replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_results_wake_waiters_and_keep_the_first_success() {
    use celeriac::result::ResultBackend;
    use celeriac::{ResultState, StoredResult};
    if celeriac_tests::harness::skipped("redis") {
        return;
    }
    let prefix = "celeriac-test-celery-results:";
    let backend = celeriac_redis::CeleryResultBackend::builder(&redis_url())
        .global_keyprefix(prefix)
        .connect()
        .await
        .expect("Redis is required by this test (scripts/test.sh starts it)");
    let id = uuid::Uuid::new_v4().to_string();
    let waiting = tokio::spawn({
        let backend = backend.clone();
        let id = id.clone();
        async move { backend.wait_ready(&id).await }
    });
    // Whether the waiter subscribed before the write or reads after it, it sees the result.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let key = format!("{prefix}celery-task-meta-{id}");
    let meta = format!(
        r#"{{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": "2026-11-30T12:00:00.000000+00:00", "task_id": "{id}"}}"#
    );
    let mut conn = redis().await;
    let _: () = conn.set_ex(&key, &meta, 600).await.unwrap();
    let _: () = conn.publish(&key, &meta).await.unwrap();
    let stored = within(Duration::from_secs(5), "the waiter to wake", waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.state, ResultState::Success);
    assert_eq!(&stored.body[..], meta.as_bytes());
    // A second run's failure, or a second success, does not replace the first success.
    let failure = StoredResult::new(ResultState::Failure, br#"{"status": "FAILURE"}"#.to_vec());
    assert!(
        !backend
            .store(&id, failure, Duration::from_secs(60))
            .await
            .unwrap()
    );
    let again = StoredResult::new(
        ResultState::Success,
        br#"{"status": "SUCCESS", "result": 6}"#.to_vec(),
    );
    assert!(
        !backend
            .store(&id, again, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        &backend.fetch(&id).await.unwrap().unwrap().body[..],
        meta.as_bytes()
    );
    backend.forget(&id).await.unwrap();
    assert!(backend.fetch(&id).await.unwrap().is_none());
    // Garbage under the key is an error, not a panic.
    let _: () = conn.set_ex(&key, "garbage", 600).await.unwrap();
    assert!(backend.fetch(&id).await.is_err());
    let _: () = conn.del(&key).await.unwrap();
}

/// A message far larger than the consumer's limit (huge kwargs from a Python producer) is
/// dead-lettered inside Redis, unread by the worker, with the reason; the next one arrives.
#[tokio::test]
async fn a_huge_message_is_dead_lettered_unread() {
    let Some(broker) = require_kombu("celeriac-test-kombu-huge:", |b| b).await else {
        return;
    };
    let queue = unique_queue("huge");
    let huge = python_message(&queue, "huge-tag", 0).replace(
        r#""content-encoding": "utf-8""#,
        &format!(
            r#""content-encoding": "utf-8", "padding": "{}""#,
            "x".repeat(3 << 20)
        ),
    );
    let mut conn = redis().await;
    let _: () = conn
        .lpush(format!("celeriac-test-kombu-huge:{queue}"), &huge)
        .await
        .unwrap();
    broker
        .publish(Outgoing::new(queue.clone(), b"next".to_vec()))
        .await
        .unwrap();
    let mut stream = broker
        .consume(std::slice::from_ref(&queue), ConsumeOptions::default())
        .await
        .unwrap();
    let delivery = within(Duration::from_secs(5), "the next message", stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&delivery.payload()[..], b"next");
    delivery.ack().await.unwrap();
    let letters = broker.dead_letters(&queue, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("exceeds"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].payload.len(), huge.len());
}

#[celeriac::task(name = "kombu_url_task")]
async fn kombu_url_task(n: u32) -> Result<u32, celeriac::TaskError> {
    Ok(n)
}

/// `?layout=kombu` picks kombu's layout by URL (as the `celeriac` command needs, to read a Celery
/// deployment's queues), with kombu's transport options as query parameters; a bad one is a
/// clear error without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layout_and_its_options_come_from_the_url() {
    if celeriac_tests::harness::skipped("redis") {
        return;
    }
    let queue = unique_queue("by_url");
    let url = format!(
        "{}?layout=kombu&global_keyprefix=celeriac-test-kombu-url:&visibility_timeout=60",
        redis_url()
    );
    let app = celeriac::App::builder()
        .broker_url(&url)
        .default_queue(&queue)
        .register::<kombu_url_task>()
        .build()
        .unwrap();
    kombu_url_task::delay(&app, 7).await.unwrap();
    let waiting: u64 = redis()
        .await
        .llen(format!("celeriac-test-kombu-url:{queue}"))
        .await
        .unwrap();
    assert_eq!(
        waiting, 1,
        "the task waits in kombu's list, under the prefix"
    );
    assert_eq!(app.broker().len(&queue).await.unwrap(), 1);
    let report = app
        .worker()
        .build()
        .unwrap()
        .run_until(async {
            eventually(Duration::from_secs(10), "the task to run", || async {
                app.broker().len(&queue).await.is_ok_and(|len| len == 0)
            })
            .await;
        })
        .await
        .unwrap();
    assert_eq!(report.succeeded, 1);

    let bad = celeriac::App::builder()
        .broker_url("redis://:hunter2@127.0.0.1:6379/0?layout=kombu&visibility_timeout=soon")
        .build()
        .unwrap();
    let error = bad.broker().len("celery").await.unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(text.contains("visibility_timeout `soon`"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
