//! Python Celery 5.7 and celeriac on one RabbitMQ: Python's `delay` runs on a Rust worker and a
//! Rust `delay` on a Python worker. Celery's messages travel as Celery sends them on RabbitMQ (the
//! body alone, the protocol's headers as an AMQP table), in queues declared as Celery declares
//! them; results go to Celery's Redis result backend.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;

use celeriac::{App, TaskError};
use celeriac_tests::harness::{
    BackgroundWorker, amqp_url, eventually, redis_url, require_python_celery, unique_queue,
};
use celeriac_tests::python_celery::{celery_app, python_runs, python_sends_with, python_worker};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;

/// The calls the Rust task ran: (mobile, sms_code).
static RAN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// The shop's task, in Rust, under the name Python sends it by.
#[celeriac::task(name = "ccp_send_sms_code")]
async fn ccp_send_sms_code(mobile: String, sms_code: String) -> Result<i32, TaskError> {
    RAN.lock().unwrap().push((mobile, sms_code));
    Ok(0)
}

/// Whether the Rust task ran for `mobile`.
fn ran_for(mobile: &str) -> bool {
    RAN.lock().unwrap().iter().any(|(ran, _)| ran == mobile)
}

/// Waits (30 s at most) until the Rust task ran for `mobile`.
async fn rust_ran(mobile: &str, what: &str) {
    eventually(Duration::from_secs(30), what, || async { ran_for(mobile) }).await;
}

/// The shop's app in Celery's format on the tests' RabbitMQ, with Celery's Redis result backend.
fn sms_app(queue: &str) -> App {
    sms_app_with_results(queue, &redis_url())
}

/// The shop's app in Celery's format on the tests' RabbitMQ, with the result backend at
/// `results` (`rpc://`: RabbitMQ's replies, as Celery's `rpc://` sends them).
fn sms_app_with_results(queue: &str, results: &str) -> App {
    celery_app(queue)
        .broker_url(amqp_url())
        .result_backend_url(results)
        .register::<ccp_send_sms_code>()
        .build()
        .expect("app")
}

/// Python's `delay`, `apply_async` with keyword arguments and a countdown, run on a Rust worker
/// over RabbitMQ, with Python reading a result; a call with a number for a string is
/// dead-lettered with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_delay_runs_on_a_rust_worker_over_rabbitmq() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("py_to_rust_amqp");
    let app = sms_app(&queue);
    // The queue exists before Python sends (Python declares it too, the same way).
    app.broker().stats(&queue).await.expect("declare the queue");
    let running = BackgroundWorker::start(app.worker().build().expect("worker"));
    let lines = python_sends_with(
        &python,
        &queue,
        &[("INTEROP_BROKER_URL", &amqp_url())],
        json!([
            {"args": ["1370000001", "111111"]},
            {"kwargs": {"mobile": "1370000002", "sms_code": "222222"}, "options": {"countdown": 1}},
            {"args": ["1370000003", "333333"], "get": true},
            {"args": ["1370000004", 4444]},
        ]),
    )
    .await;
    assert_eq!(lines[2]["result"], 0, "{lines:?}");
    rust_ran("1370000002", "the countdown task to run").await;
    let report = running.stop().await;
    let mut ran: Vec<_> = RAN
        .lock()
        .unwrap()
        .iter()
        .filter(|(mobile, _)| mobile.starts_with("137"))
        .cloned()
        .collect();
    ran.sort();
    assert_eq!(
        ran,
        [
            ("1370000001".to_owned(), "111111".to_owned()),
            ("1370000002".to_owned(), "222222".to_owned()),
            ("1370000003".to_owned(), "333333".to_owned()),
        ]
    );
    assert_eq!(report.dead_lettered, 1);
    let dead = app
        .broker()
        .dead_letters(&queue, 10)
        .await
        .expect("dead letters");
    assert!(
        dead[0].reason.contains("sms_code"),
        "the reason names the argument: {}",
        dead[0].reason
    );
    let stats = app.broker().stats(&queue).await.expect("stats");
    assert_eq!((stats.ready, stats.unacked), (0, 0));
}

/// A Rust `delay` (and one with a countdown) runs on a Python worker over RabbitMQ, with its
/// arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_delay_runs_on_a_python_worker_over_rabbitmq() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("rust_to_py_amqp");
    let app = sms_app(&queue);
    let amqp = amqp_url();
    let mut worker = python_worker(
        &python,
        &queue,
        "solo",
        &[("INTEROP_BROKER_URL", amqp.as_str())],
        &[],
    );
    ccp_send_sms_code::delay(&app, "1380000001".into(), "111111".into())
        .await
        .expect("delay");
    ccp_send_sms_code::delay(&app, "1380000002".into(), "222222".into())
        .countdown(Duration::from_secs(1))
        .await
        .expect("delay with a countdown");
    let runs = python_runs(&queue, 2, "the Python worker to run both").await;
    worker.start_kill().expect("stop the Python worker");
    let _ = worker.wait().await;
    let mut calls: Vec<(String, String)> = runs
        .iter()
        .map(|run| {
            (
                run["mobile"].as_str().unwrap_or_default().to_owned(),
                run["sms_code"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    calls.sort();
    assert_eq!(
        calls,
        [
            ("1380000001".to_owned(), "111111".to_owned()),
            ("1380000002".to_owned(), "222222".to_owned()),
        ]
    );
}

/// Results over RabbitMQ alone, as Celery's `rpc://` backend sends them: Python's `get()` of a
/// task a Rust worker ran, and a Rust typed `get()` of tasks a Python worker ran — a success and a
/// failure in Python's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_cross_languages_over_rabbitmq_rpc() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let amqp = amqp_url();
    let rpc = [
        ("INTEROP_BROKER_URL", amqp.as_str()),
        ("INTEROP_BACKEND_URL", "rpc://"),
    ];
    // Python calls, a Rust worker answers.
    let queue = unique_queue("rpc_py_to_rust");
    let app = sms_app_with_results(&queue, "rpc://");
    app.broker().stats(&queue).await.expect("declare the queue");
    let running = BackgroundWorker::start(app.worker().build().expect("worker"));
    let lines = python_sends_with(
        &python,
        &queue,
        &rpc,
        json!([{"args": ["1350000001", "111111"], "get": true}]),
    )
    .await;
    running.stop().await;
    assert_eq!(lines[0]["result"], 0, "{lines:?}");

    // Rust calls, a Python worker answers.
    let queue = unique_queue("rpc_rust_to_py");
    let app = sms_app_with_results(&queue, "rpc://");
    let mut worker = python_worker(&python, &queue, "solo", &rpc, &[]);
    let sent = ccp_send_sms_code::delay(&app, "1350000002".into(), "222222".into())
        .await
        .expect("delay");
    let failing = ccp_send_sms_code::delay(&app, "0".into(), "333333".into())
        .await
        .expect("delay");
    let value = sent.get_timeout(Duration::from_secs(30)).await;
    let failure = failing.get_timeout(Duration::from_secs(30)).await;
    worker.start_kill().expect("stop the Python worker");
    let _ = worker.wait().await;
    assert_eq!(value.expect("the Python task's result"), 0);
    let failure = failure.expect_err("the Python task failed").to_string();
    assert!(failure.contains("no such number: 0"), "{failure}");
}

/// Publishes `body` to `queue` as a Celery producer on RabbitMQ would, with Celery's task headers
/// for task `task` (`id` a fresh UUID) and `content_type`.
async fn publish_raw(queue: &str, task: AMQPValue, body: &[u8], content_type: &str) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let mut headers = FieldTable::default();
    headers.insert("task".into(), task);
    headers.insert(
        "id".into(),
        AMQPValue::LongString(uuid::Uuid::new_v4().to_string().as_str().into()),
    );
    headers.insert(
        "timelimit".into(),
        AMQPValue::FieldArray(vec![AMQPValue::Void, AMQPValue::Void].into()),
    );
    let properties = BasicProperties::default()
        .with_content_type(content_type.into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let _ = connection.close(200, "done".into()).await;
}

/// Hostile Celery-format input on RabbitMQ: a two-element body (which sends a Python worker into a
/// poison loop), a body that is not JSON, pickle, a task name that is not a string, and absurd
/// kwargs are each dead-lettered with the reason; the worker keeps serving and runs the good
/// message after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_celery_messages_on_rabbitmq_are_dead_lettered_with_the_reason() {
    if celeriac_tests::harness::skipped("amqp") {
        return;
    }
    let queue = unique_queue("hostile_amqp");
    let app = sms_app(&queue);
    app.broker().stats(&queue).await.expect("declare the queue");
    let name = || AMQPValue::LongString("ccp_send_sms_code".into());
    let json = "application/json";
    let huge = format!(
        r#"[["1360000009", "x"], {{"padding": "{}"}}, {{}}]"#,
        "z".repeat(2 << 20)
    );
    let bad: [(AMQPValue, &[u8], &str, &str); 5] = [
        (
            name(),
            br#"[["1360000001", "111111"], {}]"#,
            json,
            "[args, kwargs, embed]",
        ),
        (name(), b"\x80\x04not json", json, "JSON"),
        (
            name(),
            b"\x80\x04\x95pickle",
            "application/x-python-serialize",
            "not accepted",
        ),
        (AMQPValue::LongLongInt(7), br#"[[], {}, {}]"#, json, "task"),
        (name(), huge.as_bytes(), json, "exceeds the limit"),
    ];
    for (task, body, content_type, _) in &bad {
        publish_raw(&queue, task.clone(), body, content_type).await;
    }
    publish_raw(
        &queue,
        name(),
        br#"[["1360000002", "222222"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#,
        json,
    )
    .await;
    let report = celeriac::testing::run_until_idle(&app)
        .await
        .expect("the worker runs");
    assert_eq!((report.succeeded, report.dead_lettered), (1, 5));
    assert!(ran_for("1360000002"));
    let dead = app
        .broker()
        .dead_letters(&queue, 10)
        .await
        .expect("dead letters");
    let reasons: Vec<&str> = dead.iter().map(|letter| letter.reason.as_str()).collect();
    for (_, _, _, why) in &bad {
        assert!(
            reasons.iter().any(|reason| reason.contains(why)),
            "a reason mentions {why:?}: {reasons:#?}"
        );
    }
}

/// The shop's app in Celery's format on the tests' RabbitMQ, on quorum queues.
async fn quorum_app(queue: &str) -> App {
    let broker = celeriac::amqp::AmqpBroker::builder(&amqp_url())
        .celery_format(true)
        .queue_type(celeriac::amqp::QueueType::Quorum)
        .connect()
        .await
        .expect("connect to RabbitMQ");
    App::builder()
        .broker(broker)
        .celery_compat()
        .default_queue(queue)
        .register::<ccp_send_sms_code>()
        .build()
        .expect("app")
}

/// Quorum queues, as Celery ≥ 5.5 declares them with `task_default_queue_type = "quorum"`: a
/// Python producer's task runs on a Rust worker, and a Rust `delay` on a Python worker, each side
/// declaring the shared queue alike (`x-queue-type: quorum`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_are_shared_with_python() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let amqp = amqp_url();
    let quorum = [
        ("INTEROP_BROKER_URL", amqp.as_str()),
        ("INTEROP_QUEUE_TYPE", "quorum"),
    ];
    // Python sends, Rust runs.
    let queue = unique_queue("quorum_py_to_rust");
    let app = quorum_app(&queue).await;
    app.broker()
        .stats(&queue)
        .await
        .expect("declare the quorum queue");
    let running = BackgroundWorker::start(app.worker().build().expect("worker"));
    python_sends_with(
        &python,
        &queue,
        &quorum,
        json!([{"args": ["1340000001", "111111"]}]),
    )
    .await;
    rust_ran("1340000001", "the Rust worker to run it").await;
    running.stop().await;

    // Rust sends, Python runs.
    let queue = unique_queue("quorum_rust_to_py");
    let app = quorum_app(&queue).await;
    let mut worker = python_worker(&python, &queue, "solo", &quorum, &[]);
    ccp_send_sms_code::delay(&app, "1340000002".into(), "222222".into())
        .await
        .expect("delay");
    let runs = python_runs(&queue, 1, "the Python worker to run it").await;
    worker.start_kill().expect("stop the Python worker");
    let _ = worker.wait().await;
    assert_eq!(runs[0]["mobile"], "1340000002");
}

/// Countdowns on quorum queues wait in RabbitMQ, in Celery's native delayed delivery
/// (`celery_delayed_27` … `celery_delayed_0`), whichever language sends them: a Python countdown
/// (to a queue behind a topic exchange, which is when Celery uses it) reaches a Rust worker's
/// queue when due, and a Rust countdown reaches a Python worker once, although the Python worker
/// binds the queue to the delayed delivery a second way. Each side accepts the other's
/// declarations of the levels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_countdowns_wait_in_celerys_native_delayed_delivery() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let amqp = amqp_url();
    let topic = [
        ("INTEROP_BROKER_URL", amqp.as_str()),
        ("INTEROP_QUEUE_TYPE", "quorum"),
        ("INTEROP_EXCHANGE_TYPE", "topic"),
    ];
    let ready = |app: &App, queue: &str| {
        let (broker, queue) = (app.broker().clone(), queue.to_owned());
        async move { broker.stats(&queue).await.expect("stats").ready }
    };

    // Python sends with a countdown: RabbitMQ holds the message, no worker does.
    let queue = unique_queue("native_delay_py_to_rust");
    let app = quorum_app(&queue).await;
    assert_eq!(
        ready(&app, &queue).await,
        0,
        "the queue is declared and empty"
    );
    let sent = Instant::now();
    python_sends_with(
        &python,
        &queue,
        &topic,
        json!([{"args": ["1350000001", "111111"], "options": {"countdown": 5}}]),
    )
    .await;
    assert_eq!(
        ready(&app, &queue).await,
        0,
        "the message waits in the delayed delivery, not in the queue"
    );
    eventually(
        Duration::from_secs(30),
        "the message to reach the queue",
        || ready(&app, &queue).map(|ready| ready == 1),
    )
    .await;
    assert!(
        sent.elapsed() >= Duration::from_millis(3_500),
        "{:?}",
        sent.elapsed()
    );
    let running = BackgroundWorker::start(app.worker().build().expect("worker"));
    rust_ran("1350000001", "the Rust worker to run it").await;
    running.stop().await;

    // Rust sends with a countdown; a Python worker runs it once, when due.
    let queue = unique_queue("native_delay_rust_to_py");
    let app = quorum_app(&queue).await;
    let sent = Instant::now();
    ccp_send_sms_code::delay(&app, "1350000002".into(), "222222".into())
        .countdown(Duration::from_secs(6))
        .await
        .expect("delay with a countdown");
    assert_eq!(ready(&app, &queue).await, 0, "it waits in RabbitMQ");
    let log = std::env::temp_dir().join(format!("{queue}.log"));
    let log_arg = log.to_string_lossy().into_owned();
    let mut worker = python_worker(&python, &queue, "solo", &topic, &["--logfile", &log_arg]);
    let runs = python_runs(&queue, 1, "the Python worker to run it").await;
    assert!(
        sent.elapsed() >= Duration::from_secs(6),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(runs[0]["mobile"], "1350000002");
    // A copy would have reached the queue with the original: a message sent now runs after it.
    ccp_send_sms_code::delay(&app, "1350000003".into(), "333333".into())
        .await
        .expect("delay");
    let runs = python_runs(&queue, 1, "the Python worker to run the next").await;
    worker.start_kill().expect("stop the Python worker");
    let _ = worker.wait().await;
    assert_eq!(runs[0]["mobile"], "1350000003", "one run each: {runs:?}");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        !log_text.contains("Failed to"),
        "the Python worker took the delayed-delivery objects as declared: {log_text}"
    );
}
