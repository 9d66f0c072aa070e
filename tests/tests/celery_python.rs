//! Python Celery 5.7 and celeriac on one Redis, in kombu's layout: Python's
//! `ccp_send_sms_code.delay(mobile, code)` runs on a Rust worker, and a Rust `delay` runs on a
//! Python worker. The Python side is `tests/python/`; `scripts/test.sh` installs Celery in a
//! virtualenv under `target/`.

use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use celeriac::{App, Broker, TaskError};
use celeriac_tests::harness::{
    BackgroundWorker, eventually, redis_url, require_python_celery, unique_queue,
};
use celeriac_tests::python_celery::{
    celery_app, celery_app_with_results, python_canvas, python_command, python_runs, python_sends,
    python_worker,
};
use redis::AsyncCommands;

/// The calls the Rust task ran: (mobile, sms_code, redelivered).
static RAN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// The shop's task, in Rust, under the name Python sends it by.
#[celeriac::task(name = "ccp_send_sms_code")]
async fn ccp_send_sms_code(mobile: String, sms_code: String) -> Result<i32, TaskError> {
    RAN.lock().unwrap().push((mobile, sms_code));
    Ok(0)
}

fn ran_for(mobile_prefix: &str) -> Vec<(String, String)> {
    let mut ran: Vec<_> = RAN
        .lock()
        .unwrap()
        .iter()
        .filter(|(mobile, _)| mobile.starts_with(mobile_prefix))
        .cloned()
        .collect();
    ran.sort();
    ran
}

/// The shop's app, in Celery's format, on `queue`.
fn sms_app(queue: &str) -> App {
    celery_app(queue)
        .register::<ccp_send_sms_code>()
        .build()
        .expect("app")
}

/// The shop's own line, `ccp_send_sms_code.delay(mobile, sms_code)`, and `apply_async` with
/// keyword arguments, a priority and a countdown, all run on a Rust worker with their arguments;
/// a call with a missing argument and one with a number for a string are dead-lettered with the
/// reason, not run and not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_delay_runs_on_a_rust_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("py_to_rust");
    let app = sms_app(&queue);
    let sent = tokio::time::Instant::now();
    let lines = python_sends(
        &python,
        &queue,
        serde_json::json!([
            {"args": ["1390000001", "111111"]},
            {"kwargs": {"mobile": "1390000002", "sms_code": "222222"}},
            {"args": ["1390000003"], "kwargs": {"sms_code": "333333"}, "options": {"priority": 6}},
            {"args": ["1390000004", "444444"], "options": {"countdown": 2}},
            {"args": ["1390000005"], "send_task": true},
            {"args": [1390000006_u64, "666666"]},
        ]),
    )
    .await;
    assert_eq!(lines.len(), 6, "{lines:?}");
    let worker = app.worker().concurrency(4).build().expect("worker");
    let broker = app.broker().clone();
    let done_queue = queue.clone();
    let report = worker
        .run_until(async move {
            eventually(
                Duration::from_secs(20),
                "four runs and two dead letters",
                || async {
                    ran_for("139000000").len() == 4
                        && broker
                            .stats(&done_queue)
                            .await
                            .is_ok_and(|stats| stats.dead_lettered == 2)
                },
            )
            .await;
        })
        .await
        .expect("worker");
    assert_eq!(
        ran_for("139000000"),
        [
            ("1390000001".to_owned(), "111111".to_owned()),
            ("1390000002".to_owned(), "222222".to_owned()),
            ("1390000003".to_owned(), "333333".to_owned()),
            ("1390000004".to_owned(), "444444".to_owned()),
        ]
    );
    assert!(
        sent.elapsed() >= Duration::from_secs(2),
        "the countdown was honoured"
    );
    assert_eq!(report.succeeded, 4);
    let letters = app
        .broker()
        .dead_letters(&queue, 10)
        .await
        .expect("dead letters");
    let reasons: Vec<&str> = letters
        .iter()
        .map(|letter| letter.reason.as_str())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("missing argument `sms_code`")),
        "the missing argument is named: {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("argument `mobile`: invalid type: integer")),
        "the mistyped argument is named: {reasons:?}"
    );
    let stats = app.broker().stats(&queue).await.expect("stats");
    assert_eq!((stats.ready, stats.unacked), (0, 0));
}

/// A Rust `delay` (and one with a countdown) runs on a Python Celery worker, which acknowledges
/// it in kombu's way (nothing is left in `unacked`); the Rust caller gets Python's results typed,
/// and a Python exception as the task's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_delay_runs_on_a_python_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("rust_to_py");
    let app = App::builder()
        .broker_url(redis_url())
        .result_backend_url(redis_url())
        .celery_compat()
        .default_queue(&queue)
        .build()
        .expect("app");
    let first = ccp_send_sms_code::delay(&app, "1380000001".into(), "123456".into())
        .await
        .expect("delay");
    let second = ccp_send_sms_code::delay(&app, "1380000002".into(), "654321".into())
        .countdown(Duration::from_secs(1))
        .await
        .expect("delay with a countdown");
    let refused = ccp_send_sms_code::delay(&app, "0".into(), "000000".into())
        .await
        .expect("delay");
    let mut worker = python_worker(&python, &queue, "solo", &[], &[]);
    let runs = python_runs(&queue, 2, "the Python worker to run both").await;
    let mut seen: Vec<(String, String, String)> = runs
        .iter()
        .map(|run| {
            (
                run["mobile"].as_str().unwrap().to_owned(),
                run["sms_code"].as_str().unwrap().to_owned(),
                run["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "1380000001".to_owned(),
                "123456".to_owned(),
                first.id().to_string()
            ),
            (
                "1380000002".to_owned(),
                "654321".to_owned(),
                second.id().to_string()
            ),
        ]
    );
    // Python's results, typed: its return value, and its exception as a failure.
    assert_eq!(
        first
            .get_timeout(Duration::from_secs(30))
            .await
            .expect("first result"),
        0
    );
    assert_eq!(
        second
            .get_timeout(Duration::from_secs(30))
            .await
            .expect("second result"),
        0
    );
    match refused.get_timeout(Duration::from_secs(30)).await {
        Err(celeriac::ResultError::Failed { message, .. }) => {
            assert_eq!(message, "ValueError: no such number: 0");
        }
        other => panic!("expected Python's ValueError, got {other:?}"),
    }
    // Python acknowledged all three: kombu's `unacked` holds nothing of this queue.
    eventually(Duration::from_secs(10), "Python's acks", || async {
        app.broker()
            .stats(&queue)
            .await
            .is_ok_and(|stats| stats.ready == 0 && stats.unacked == 0)
    })
    .await;
    worker.start_kill().expect("stop the Python worker");
    let _ = worker.wait().await;
}

/// A task that fails, for Python's `AsyncResult.get()` to raise its error.
#[celeriac::task(name = "sms_gateway_down")]
async fn sms_gateway_down(mobile: String) -> Result<i32, TaskError> {
    Err(TaskError::msg(format!("the SMS gateway refused {mobile}")))
}

/// Python's `AsyncResult.get()` returns what a Rust task returned, and raises what one failed
/// with: the Rust worker stores Celery's result meta and publishes it where Python waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_gets_the_results_of_rust_tasks() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("py_gets");
    let app = celery_app_with_results(&queue)
        .register::<ccp_send_sms_code>()
        .register::<sms_gateway_down>()
        .build()
        .expect("app");
    let running = BackgroundWorker::start(app.worker().concurrency(2).build().expect("worker"));
    let lines = python_sends(
        &python,
        &queue,
        serde_json::json!([
            {"args": ["1370000001", "777777"], "options": {}, "get": true},
            {"send_task": "sms_gateway_down", "args": ["1370000002"], "get": true},
        ]),
    )
    .await;
    let report = running.stop().await;
    assert_eq!(lines[0]["result"], 0, "{lines:?}");
    let error = lines[1]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the SMS gateway refused 1370000002"),
        "Python raises the Rust task's error: {lines:?}"
    );
    assert_eq!((report.succeeded, report.dead_lettered), (1, 1));
}

/// The shop's task while the SMS gateway is down, in Rust: it asks to be retried in a second.
#[celeriac::task(name = "ccp_send_sms_code")]
async fn ccp_send_sms_code_gateway_down(
    mobile: String,
    sms_code: String,
) -> Result<i32, TaskError> {
    let _ = (mobile, sms_code);
    Err(TaskError::retry_after(Duration::from_secs(1)))
}

/// A retry crosses languages: a Python-sent task that a Rust worker retries goes back to the queue
/// as Celery's retry (same id, `retries` + 1, an ETA), and a Python worker runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_retry_of_a_python_task_runs_on_a_python_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("retry_crosses");
    let lines = python_sends(
        &python,
        &queue,
        serde_json::json!([{"args": ["1360000001", "135790"]}]),
    )
    .await;
    let id = lines[0]["id"].as_str().expect("an id").to_owned();
    let app = App::builder()
        .broker_url(redis_url())
        .celery_compat()
        .default_queue(&queue)
        .register::<ccp_send_sms_code_gateway_down>()
        .build()
        .expect("app");
    let worker = app.worker().build().expect("worker");
    let waiting_queue = queue.clone();
    let waiting_id = id.clone();
    let report = worker
        .run_until(async move {
            eventually(Duration::from_secs(10), "the retry in the queue", || {
                retry_waiting(waiting_queue.clone(), waiting_id.clone())
            })
            .await;
        })
        .await
        .expect("worker");
    assert_eq!(report.retried, 1);
    let mut worker = python_worker(&python, &queue, "solo", &[], &[]);
    let runs = python_runs(&queue, 1, "the Python worker to run the retry").await;
    worker.start_kill().expect("stop the Python worker");
    let _ = worker.wait().await;
    let run = &runs[0];
    assert_eq!(run["id"], id.as_str(), "the retry keeps the task's id");
    assert_eq!(run["retries"], 1, "Python sees the retry count");
    assert_eq!(run["mobile"], "1360000001");
}

/// Whether task `id`'s first retry waits in `queue`, on its list or held (unacknowledged) by a
/// worker until its ETA.
async fn retry_waiting(queue: String, id: String) -> bool {
    let Ok(mut conn) = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
    else {
        return false;
    };
    let listed: Vec<String> = conn.lrange(&queue, 0, -1).await.unwrap_or_default();
    let held: Vec<String> = conn.hvals("unacked").await.unwrap_or_default();
    listed
        .iter()
        .chain(&held)
        .any(|message| message.contains(&id) && message.contains("\"retries\":1"))
}

/// A Python worker SIGKILLed while it holds tasks: a Rust worker restores the ones kombu recorded
/// as unacknowledged (the prefetched ones) after the visibility timeout, and runs them. (The task
/// it was running is lost: Celery acknowledges a task when it starts, unless `acks_late`. The
/// threads pool lets the Python worker prefetch while its one thread hangs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_python_worker_held_runs_on_a_rust_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("py_killed");
    python_sends(
        &python,
        &queue,
        serde_json::json!([
            {"args": ["1350000000", "hang"]},
            {"args": ["1350000001", "111111"]},
            {"args": ["1350000002", "222222"]},
            {"args": ["1350000003", "333333"]},
        ]),
    )
    .await;
    let mut worker = python_worker(
        &python,
        &queue,
        "threads",
        &[],
        &["--concurrency", "1", "--prefetch-multiplier", "4"],
    );
    // The Python worker runs the hanging task and holds the three others, unacknowledged.
    let broker = celeriac_tests::harness::require_kombu("", |builder| builder)
        .await
        .expect("Redis is required by this test");
    eventually(
        Duration::from_secs(30),
        "the Python worker to hold three tasks",
        || async {
            broker
                .stats(&queue)
                .await
                .is_ok_and(|stats| stats.unacked == 3 && stats.ready == 0)
        },
    )
    .await;
    worker.start_kill().expect("SIGKILL the Python worker");
    let _ = worker.wait().await;

    let app = App::builder()
        .broker(broker)
        .celery_compat()
        .default_queue(&queue)
        .register::<ccp_send_sms_code>()
        .build()
        .expect("app");
    let report = app
        .worker()
        .build()
        .expect("worker")
        .run_until(async {
            eventually(
                Duration::from_secs(20),
                "the Rust worker to run the three",
                || async { ran_for("135000000").len() == 3 },
            )
            .await;
        })
        .await
        .expect("worker");
    assert_eq!(
        ran_for("135000000"),
        [
            ("1350000001".to_owned(), "111111".to_owned()),
            ("1350000002".to_owned(), "222222".to_owned()),
            ("1350000003".to_owned(), "333333".to_owned()),
        ]
    );
    assert_eq!(report.succeeded, 3);
    let stats = app.broker().stats(&queue).await.expect("stats");
    assert_eq!((stats.ready, stats.unacked), (0, 0));
}

/// For workflows: the Python tasks `tasks.add` and `tasks.mul`, in Rust.
#[celeriac::task(name = "tasks.add")]
async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    Ok(x + y)
}

/// The products the Rust `tasks.mul` computed, to tell which worker ran a step.
static PRODUCTS: Mutex<Vec<(i64, i64)>> = Mutex::new(Vec::new());

#[celeriac::task(name = "tasks.mul")]
async fn mul(x: i64, y: i64) -> Result<i64, TaskError> {
    PRODUCTS.lock().unwrap().push((x, y));
    Ok(x * y)
}

/// Runs `python canvas.py <what>` (see `tests/python/canvas.py`) while a Rust worker serves
/// `queue`; returns what it printed.
async fn python_workflow(
    python: &Path,
    queue: &str,
    what: &str,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let app = celery_app_with_results(queue)
        .register::<add>()
        .register::<mul>()
        .build()
        .expect("app");
    let running = BackgroundWorker::start(app.worker().concurrency(4).build().expect("worker"));
    let printed = python_canvas(python, queue, what, env).await;
    running.stop().await;
    printed
}

/// A chain built in Python runs on a Rust worker: each step's output goes first in the next
/// step's arguments (not into the immutable last one), steps keep the ids Python gave them, and
/// Python reads every step's result. A group's members run and Python joins their results, in
/// order. A `link` callback is sent with the output too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_chain_group_and_link_run_on_a_rust_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("py_chain");
    let chain = python_workflow(&python, &queue, "chain", &[]).await;
    assert_eq!(chain, serde_json::json!({"last": 101, "mul": 30}));
    let members = python_workflow(&python, &queue, "group", &[]).await;
    assert_eq!(members, serde_json::json!({"results": [0, 2, 4, 6, 8]}));
    let link = python_workflow(&python, &queue, "link", &[]).await;
    assert_eq!(link, serde_json::json!({"add": 3}));
    // The link's product was computed here (its result is not waited for in Python).
    eventually(Duration::from_secs(5), "the link's callback", || async {
        PRODUCTS.lock().unwrap().contains(&(3, 3))
    })
    .await;
    assert!(PRODUCTS.lock().unwrap().contains(&(3, 10)));
}

/// A chain handed over between languages: its first step runs on the Rust worker, which sends the
/// next step in Celery's format (with the rest of the chain) to a queue a Python worker serves;
/// Python finishes the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_worker_hands_a_chain_over_to_a_python_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("chain_rust");
    let python_queue = unique_queue("chain_python");
    let mut python_side = python_worker(&python, &python_queue, "solo", &[], &[]);
    let handover = python_workflow(
        &python,
        &queue,
        "handover",
        &[("INTEROP_PY_QUEUE", python_queue.as_str())],
    )
    .await;
    python_side.start_kill().expect("stop the Python worker");
    let _ = python_side.wait().await;
    assert_eq!(handover, serde_json::json!({"last": 101, "mul": 50}));
    assert!(
        !PRODUCTS.lock().unwrap().contains(&(5, 10)),
        "the Python worker computed the product, not the Rust one"
    );
}

/// A Rust worker SIGKILLed while it holds tasks (its SMS gateway never answers): a Python worker's
/// restore sweep finds them in kombu's `unacked` hash once the visibility timeout passed, and runs
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_killed_rust_worker_held_runs_on_a_python_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("rust_killed");
    python_sends(
        &python,
        &queue,
        serde_json::json!([
            {"args": ["1330000001", "111111"]},
            {"args": ["1330000002", "222222"]},
            {"args": ["1330000003", "333333"]},
        ]),
    )
    .await;
    let mut rust_worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"))
        .args([&format!("celery+{}", redis_url()), &queue, "2000", "5", "4"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start celeriac-test-worker");
    let broker = celeriac_tests::harness::require_kombu("", |builder| builder)
        .await
        .expect("Redis is required by this test");
    eventually(
        Duration::from_secs(20),
        "the Rust worker to hold the three",
        || async {
            broker
                .stats(&queue)
                .await
                .is_ok_and(|stats| stats.unacked == 3 && stats.ready == 0)
        },
    )
    .await;
    rust_worker.start_kill().expect("SIGKILL the Rust worker");
    let _ = rust_worker.wait().await;

    let mut python_side =
        python_worker(&python, &queue, "solo", &[("INTEROP_VISIBILITY", "2")], &[]);
    let runs = python_runs(&queue, 3, "the Python worker to run the three").await;
    python_side.start_kill().expect("stop the Python worker");
    let _ = python_side.wait().await;
    let mut mobiles: Vec<&str> = runs
        .iter()
        .map(|run| run["mobile"].as_str().unwrap_or_default())
        .collect();
    mobiles.sort();
    assert_eq!(mobiles, ["1330000001", "1330000002", "1330000003"]);
}

/// The ids the Rust error callback `tasks.note_failure` was given.
static FAILURES_NOTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[celeriac::task(name = "tasks.note_failure")]
async fn note_failure(task_id: String) -> Result<String, TaskError> {
    FAILURES_NOTED.lock().unwrap().push(task_id.clone());
    Ok(task_id)
}

/// A Python `link_error` on a task that fails on a Rust worker (an argument of the wrong type): the
/// failure reaches Python's `get()`, and the error callback runs, given the failed task's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_errback_runs_when_the_rust_task_fails() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("py_errback");
    let app = celery_app_with_results(&queue)
        .register::<add>()
        .register::<note_failure>()
        .build()
        .expect("app");
    let running = BackgroundWorker::start(app.worker().concurrency(2).build().expect("worker"));
    let output = python_command(&python, &queue)
        .args(["canvas.py", "errback"])
        .output()
        .await
        .expect("run canvas.py");
    assert!(
        output.status.success(),
        "canvas.py errback failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let id = outcome["id"].as_str().expect("an id").to_owned();
    eventually(Duration::from_secs(10), "the error callback", || async {
        FAILURES_NOTED.lock().unwrap().contains(&id)
    })
    .await;
    running.stop().await;
    let error = outcome["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("TaskError: ") && error.contains("argument `y`: invalid type"),
        "Python raises the Rust worker's reason: {outcome}"
    );
}
