//! Celery's wire format, in one process on the embedded broker: a task message as Python Celery
//! 5.7 writes it (captured byte for byte on Redis) runs a typed Rust task; arguments bind by
//! position and by name; bad ones are dead-lettered with the reason; an app in Celery's format
//! sends kombu's JSON envelope, retries in it, and its own workers run what it sends.
//!
//! The same messages through real Redis and RabbitMQ, and against Python Celery, come with the
//! kombu layout (see `celeriac::celery`).

use std::time::Duration;

use celeriac::broker::{ConsumeOptions, Outgoing};
use celeriac::{App, AsyncResult, MemoryBroker, TaskContext, TaskError, TaskId};
use futures::StreamExt;
use serde_json::{Value, json};

/// `add.delay(2, 3)` from Python Celery 5.7, as kombu put it on the Redis list `wire_celery`.
const PYTHON_ADD: &str = r#"{"body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d", "content-encoding": "utf-8", "content-type": "application/json", "headers": {"lang": "py", "task": "tasks.add", "id": "52220322-6490-4d37-a26d-85757b423078", "shadow": null, "eta": null, "expires": null, "group": null, "group_index": null, "retries": 0, "timelimit": [null, null], "root_id": "52220322-6490-4d37-a26d-85757b423078", "parent_id": null, "argsrepr": "(2, 3)", "kwargsrepr": "{}", "origin": "gen12739@vm", "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}}, "properties": {"correlation_id": "52220322-6490-4d37-a26d-85757b423078", "reply_to": "936f6d5d-be85-38d2-84d4-6198fba96ac6", "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": "wire_celery"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "e0b5487b-e149-47f4-a057-945eb77ebc2e"}}"#;

const QUEUE: &str = "wire_celery";

#[celeriac::task(name = "tasks.add")]
async fn add(x: u64, y: u64) -> Result<u64, std::io::Error> {
    Ok(x + y)
}

/// Fails its first run, asking to be retried in a second.
#[celeriac::task(name = "tasks.flaky", max_retries = 3)]
async fn flaky(ctx: TaskContext, n: u64) -> Result<u64, TaskError> {
    if ctx.retries() == 0 {
        Err(TaskError::retry_after(Duration::from_secs(1)))
    } else {
        Ok(n * 10)
    }
}

/// The captured message with a fresh id, task name and body `[args, kwargs, embed]`.
fn python_message(task: &str, body: Value) -> (TaskId, Vec<u8>) {
    let id = TaskId::new();
    let mut message: Value = serde_json::from_str(PYTHON_ADD).expect("the capture is JSON");
    message["headers"]["id"] = json!(id.to_string());
    message["headers"]["root_id"] = json!(id.to_string());
    message["headers"]["task"] = json!(task);
    message["body"] = json!(body.to_string());
    message["properties"]["body_encoding"] = json!("utf-8");
    (id, message.to_string().into_bytes())
}

fn app(celery_compat: bool) -> App {
    let builder = App::builder()
        .broker(MemoryBroker::new())
        .default_queue(QUEUE)
        .register::<add>()
        .register::<flaky>();
    let builder = if celery_compat {
        builder.celery_compat()
    } else {
        builder
    };
    builder.build().expect("the app builds")
}

async fn publish(app: &App, bytes: Vec<u8>) {
    app.broker()
        .publish(Outgoing::new(QUEUE, bytes))
        .await
        .expect("published");
}

#[tokio::test(start_paused = true)]
async fn python_s_messages_run_typed_tasks_and_bad_ones_are_dead_lettered() {
    let app = app(false);
    publish(&app, PYTHON_ADD.as_bytes().to_vec()).await;
    let by_name = python_message("tasks.add", json!([[], {"y": 30, "x": 12}, {}]));
    publish(&app, by_name.1).await;
    let mixed = python_message("tasks.add", json!([[100], {"y": 1}, null]));
    publish(&app, mixed.1).await;
    let bad = [
        (
            python_message("tasks.add", json!([["two", 3], {}, {}])),
            "invalid task arguments",
        ),
        (
            python_message("tasks.add", json!([[2], {}, {}])),
            "missing argument `y`",
        ),
        (
            python_message("tasks.add", json!([[2, 3], {"z": 1}, {}])),
            "unexpected keyword argument `z`",
        ),
        (
            python_message("tasks.mul", json!([[2, 3], {}, {}])),
            "unknown task `tasks.mul`",
        ),
        (
            python_message("tasks.add", json!([[2, 3], {}])),
            "not `[args, kwargs, embed]`",
        ),
        (
            python_message(
                "tasks.add",
                json!([[2, 3], {}, {"chord": {"task": "tasks.add", "args": [1], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false}}]),
            ),
            "a chord's member without its `group` and `group_index` headers",
        ),
    ];
    for ((_, bytes), _) in &bad {
        publish(&app, bytes.clone()).await;
    }

    let report = celeriac::testing::run_until_idle(&app)
        .await
        .expect("the worker runs");
    assert_eq!((report.succeeded, report.dead_lettered), (3, 6));

    let python_id: TaskId = "52220322-6490-4d37-a26d-85757b423078"
        .parse()
        .expect("a UUID");
    for (id, expected) in [(python_id, 5), (by_name.0, 42), (mixed.0, 101)] {
        let sum = AsyncResult::<u64>::from_id(&app, id).get().await;
        assert_eq!(sum.expect("a result"), expected);
    }
    let letters = app
        .broker()
        .dead_letters(QUEUE, 100)
        .await
        .expect("dead letters");
    assert_eq!(letters.len(), bad.len());
    for (_, expected) in bad {
        assert!(
            letters
                .iter()
                .any(|letter| letter.reason.contains(expected)),
            "no dead letter says {expected:?}: {:?}",
            letters
                .iter()
                .map(|letter| &letter.reason)
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_app_in_celery_s_format_sends_kombu_s_envelope_and_retries_in_it() {
    let app = app(true);
    let sent = add::delay(&app, 2, 3).await.expect("sent");

    // What went to the broker is kombu's JSON envelope, with the body a Python worker unpacks.
    let mut deliveries = app
        .broker()
        .consume(&[QUEUE.to_owned()], ConsumeOptions::default())
        .await
        .expect("consume");
    let delivery = deliveries.next().await.expect("a delivery").expect("ok");
    let message: Value = serde_json::from_slice(delivery.payload()).expect("JSON");
    assert_eq!(message["headers"]["task"], json!("tasks.add"));
    assert_eq!(message["headers"]["id"], json!(sent.id().to_string()));
    assert_eq!(message["properties"]["body_encoding"], json!("base64"));
    assert_eq!(
        message["properties"]["delivery_info"]["routing_key"],
        json!(QUEUE)
    );
    delivery.requeue().await.expect("requeued");
    drop(deliveries);

    let retried = flaky::delay(&app, 7).await.expect("sent");
    let report = celeriac::testing::run_until_idle(&app)
        .await
        .expect("the worker runs");
    assert_eq!((report.succeeded, report.retried), (2, 1));
    assert_eq!(sent.get().await.expect("a result"), 5);
    assert_eq!(retried.get().await.expect("a result"), 70);
}

#[celeriac::task(name = "tasks.xsum")]
async fn xsum(numbers: Vec<u64>) -> Result<u64, std::io::Error> {
    Ok(numbers.iter().sum())
}

/// A chord built in Rust by an app in Celery's format travels as Celery's producer sends one: its
/// size is kept by the result backend, under a group id of its own that each member carries in
/// `group`/`group_index`, and each member's `embed.chord` is the callback's signature, with the
/// chord's id as its `task_id`. The app's own worker joins it and sends the callback once.
#[tokio::test(start_paused = true)]
async fn a_chord_built_in_rust_travels_in_celery_s_format() {
    use celeriac::canvas::{chord, group};

    let app = App::builder()
        .broker(MemoryBroker::new())
        .default_queue(QUEUE)
        .celery_compat()
        .register::<add>()
        .register::<xsum>()
        .build()
        .expect("the app builds");
    let members = group((1..=3).map(|n| add::s(n, n)));
    let summed = chord(members, xsum::partial())
        .delay(&app)
        .await
        .expect("sent");

    let mut deliveries = app
        .broker()
        .consume(&[QUEUE.to_owned()], ConsumeOptions::default())
        .await
        .expect("consume");
    let (mut groups, mut indexes, mut held) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let delivery = deliveries.next().await.expect("a delivery").expect("ok");
        let message: Value = serde_json::from_slice(delivery.payload()).expect("JSON");
        let headers = &message["headers"];
        assert_eq!(headers["task"], json!("tasks.add"));
        indexes.push(headers["group_index"].as_u64().expect("a group index"));
        let group: TaskId = headers["group"]
            .as_str()
            .and_then(|group| group.parse().ok())
            .expect("a member names its group");
        assert_ne!(group, summed.id(), "the group's id is not the callback's");
        groups.push(group);
        let body = base64_body(&message);
        assert_eq!(body[2]["chord"]["task"], json!("tasks.xsum"));
        assert_eq!(
            body[2]["chord"]["options"]["task_id"],
            json!(summed.id().to_string())
        );
        held.push(delivery);
    }
    for delivery in held {
        delivery.requeue().await.expect("requeued");
    }
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1, 2]);
    drop(deliveries);
    assert!(
        groups.windows(2).all(|pair| pair[0] == pair[1]),
        "one group"
    );

    let report = celeriac::testing::run_until_idle(&app)
        .await
        .expect("the worker runs");
    assert_eq!(report.succeeded, 4, "three members and the callback, once");
    assert_eq!(summed.get().await.expect("a result"), 12);
}

/// The `[args, kwargs, embed]` body of kombu's envelope `message`.
fn base64_body(message: &Value) -> Value {
    use base64::Engine as _;
    let body = message["body"].as_str().expect("a body");
    let body = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("base64");
    serde_json::from_slice(&body).expect("a JSON body")
}
