//! What Celery's monitoring tools see of a Rust worker, on Redis (kombu's layout) and on
//! RabbitMQ: Flower's worker list and worker page, and `celery inspect` / `celery control` over
//! Celery's remote control (kombu's pidbox). The Python side is `tests/python/`;
//! `scripts/test.sh` installs it.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use celeriac::{App, TaskError};
use celeriac_tests::harness::{
    BackgroundWorker, amqp_url, eventually, redis_url, require_python_celery, unique_queue,
};
use celeriac_tests::python_celery::{
    celery_app, http_get, python_command, python_inspect, python_sends,
};
use serde_json::json;

/// The mobiles the Rust task was called for.
static RAN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Holds the runs for mobiles starting `hold` until permits are added.
static HOLD: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

/// The shop's task, in Rust, under the name Python sends it by.
#[celeriac::task(name = "ccp_send_sms_code")]
async fn ccp_send_sms_code(mobile: String, sms_code: String) -> Result<i32, TaskError> {
    let _ = sms_code;
    if mobile.starts_with("hold") {
        let _ = HOLD.acquire().await.map(|permit| permit.forget());
    }
    RAN.lock().unwrap().push(mobile);
    Ok(0)
}

/// The shop's app, in Celery's format, on `queue`.
fn sms_app(queue: &str) -> App {
    sms_app_on(&redis_url(), queue)
}

/// The shop's app, in Celery's format, on `queue` of the broker at `broker_url`.
fn sms_app_on(broker_url: &str, queue: &str) -> App {
    celery_app(queue)
        .broker_url(broker_url)
        .register::<ccp_send_sms_code>()
        .build()
        .expect("app")
}

/// Flower (2.2, from PyPI) on `broker_url` lists a Rust worker online with the tasks it ran
/// counted (the worker's events also go out in Celery's format), and its worker page shows what
/// the worker answers over Celery's remote control; `celery inspect ping` reaches it too.
async fn flower_sees_a_rust_worker(python: &std::path::Path, broker_url: &str, name: &str) {
    let queue = unique_queue(name);
    let port = celeriac_tests::harness::free_port();
    let mut flower = python_command(python, &queue)
        .env("INTEROP_BROKER_URL", broker_url)
        .args(["-m", "celery", "-A", "interop", "flower"])
        .args([format!("--port={port}"), "--address=127.0.0.1".to_owned()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Flower");
    let app = sms_app_on(broker_url, &queue);
    let hostname = format!("rust-{name}-{}@celeriac-test", std::process::id());
    let worker = app
        .worker()
        .events(true)
        .hostname(hostname.clone())
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .expect("worker");
    let running = BackgroundWorker::start(worker);
    let listed = |page: &str| -> Option<serde_json::Value> {
        let page: serde_json::Value = serde_json::from_str(page).ok()?;
        page["data"]
            .as_array()?
            .iter()
            .find(|worker| worker["hostname"] == hostname.as_str())
            .cloned()
    };
    // Flower has the worker's heartbeats (so it listens) before the task's events go out.
    let mut online = false;
    for _ in 0..150 {
        if let Some(page) = http_get(port, "/workers?json=1").await
            && listed(&page).is_some_and(|worker| worker["status"] == true)
        {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(online, "Flower lists the Rust worker online");
    ccp_send_sms_code::delay(&app, "1320000001".into(), "424242".into())
        .await
        .expect("delay");
    let mut seen = None;
    for _ in 0..150 {
        if let Some(page) = http_get(port, "/workers?json=1").await
            && let Some(worker) = listed(&page)
            && worker["status"] == true
            && worker["task-succeeded"] == 1
        {
            seen = Some(worker);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The worker page asks the worker over the pidbox (`stats`, `registered`, `active_queues`,
    // `conf`, …) and 404s without its `stats`.
    let page = http_get(port, &format!("/worker/{hostname}")).await;
    // And `celery inspect`, on the same broker.
    let inspected = python_inspect(python, broker_url, &hostname, &["ping"]).await;
    running.stop().await;
    flower.start_kill().expect("stop Flower");
    let _ = flower.wait().await;
    assert_eq!(
        inspected["ping"][hostname.as_str()],
        json!({"ok": "pong"}),
        "{inspected}"
    );
    let worker = seen.expect("Flower lists the Rust worker online, with one task succeeded");
    assert_eq!(worker["sw_ident"], "rs-celeriac");
    assert_eq!(worker["task-received"], 1);
    let page = page.expect("Flower answers the worker page");
    for shown in ["(tokio tasks)", "ccp_send_sms_code", queue.as_str()] {
        assert!(
            page.contains(shown),
            "the worker page shows {shown:?}: {}",
            page.get(page.find("tab-pool").unwrap_or(0)..)
                .unwrap_or(&page)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flower_sees_a_rust_worker_on_redis() {
    if let Some(python) = require_python_celery() {
        flower_sees_a_rust_worker(&python, &redis_url(), "flower").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flower_sees_a_rust_worker_on_rabbitmq() {
    if let Some(python) = require_python_celery() {
        flower_sees_a_rust_worker(&python, &amqp_url(), "flower_amqp").await;
    }
}

/// `celery inspect` reaches a Rust worker: it answers `ping`, `stats`, `registered`,
/// `active_queues`, `conf` and the task lists in Celery's shapes, and nobody else's requests;
/// `celery control revoke` makes it drop the task when it arrives (and `inspect revoked` list
/// it), and `rate_limit` sets its
/// limit (an unknown task is Celery's `error` reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_inspect_and_control_reach_a_rust_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("pidbox");
    let app = sms_app(&queue);
    let hostname = format!("rust-pidbox-{}@celeriac-test", std::process::id());
    let worker = app
        .worker()
        .hostname(hostname.clone())
        .concurrency(3)
        .build()
        .expect("worker");
    let running = BackgroundWorker::start(worker);
    let mut answers = json!(null);
    for _ in 0..10 {
        answers = python_inspect(
            &python,
            &redis_url(),
            &hostname,
            &[
                "ping",
                "stats",
                "registered",
                "active_queues",
                "conf",
                "active",
                "reserved",
                "scheduled",
                "revoked",
            ],
        )
        .await;
        if !answers["ping"].is_null() {
            break;
        }
    }
    let of = |method: &str| answers[method][hostname.as_str()].clone();
    assert_eq!(of("ping"), json!({"ok": "pong"}), "{answers}");
    let stats = of("stats");
    assert_eq!(stats["pid"], std::process::id(), "{stats}");
    assert_eq!(stats["pool"]["max-concurrency"], 3, "{stats}");
    assert_eq!(stats["broker"]["transport"], "redis", "{stats}");
    assert!(
        stats["prefetch_count"]
            .as_u64()
            .is_some_and(|prefetch| prefetch >= 3),
        "{stats}"
    );
    assert_eq!(of("registered"), json!(["ccp_send_sms_code"]));
    assert_eq!(of("active_queues")[0]["name"], queue.as_str());
    assert_eq!(of("conf")["task_default_queue"], queue.as_str());
    for empty in ["active", "reserved", "scheduled"] {
        assert_eq!(of(empty), json!([]), "{empty}");
    }
    // Three held runs fill the three lanes: `inspect reserved` lists the two sent next, which
    // wait for a lane, in Celery's shape; they run once the lanes are free.
    let mut waiting = Vec::new();
    for index in 0..5 {
        let sent = app
            .delay::<ccp_send_sms_code>((format!("hold-{index}"), "000000".into()))
            .await
            .expect("sent");
        waiting.push(json!(sent.id().to_string()));
    }
    let waiting = waiting.split_off(3);
    let reserved = || async {
        let answers = python_inspect(&python, &redis_url(), &hostname, &["reserved"]).await;
        answers["reserved"][hostname.as_str()].clone()
    };
    eventually(
        Duration::from_secs(30),
        "`inspect reserved` to list the two waiting tasks",
        || async {
            reserved()
                .await
                .as_array()
                .is_some_and(|tasks| tasks.iter().map(|task| &task["id"]).eq(waiting.iter()))
        },
    )
    .await;
    // Held: the list stays as it was.
    let reserved = reserved().await;
    assert_eq!(reserved[0]["name"], "ccp_send_sms_code", "{reserved}");
    assert_eq!(reserved[0]["hostname"], hostname.as_str(), "{reserved}");
    assert_eq!(reserved[0]["time_start"], json!(null), "{reserved}");
    assert_eq!(
        reserved[0]["delivery_info"]["routing_key"],
        queue.as_str(),
        "{reserved}"
    );
    HOLD.add_permits(5);
    eventually(Duration::from_secs(30), "the held tasks to run", || async {
        let ran = RAN.lock().unwrap();
        (0..5).all(|index| ran.contains(&format!("hold-{index}")))
    })
    .await;

    // Revokes are shared through the broker and outlive a test run: earlier runs' ids may be
    // listed, so the list is checked below for the fresh id this test revokes.
    assert!(of("revoked").is_array(), "{answers}");
    // Another worker's name: the Rust worker stays silent.
    let elsewhere = python_inspect(&python, &redis_url(), "nobody@nowhere", &["ping"]).await;
    assert_eq!(elsewhere["ping"], json!(null), "{elsewhere}");

    let revoked = uuid::Uuid::new_v4().to_string();
    let answers = python_inspect(
        &python,
        &redis_url(),
        &hostname,
        &[
            &format!("revoke:{revoked}"),
            "rate_limit:ccp_send_sms_code:100/m",
            "rate_limit:no_such_task:1/s",
        ],
    )
    .await;
    assert_eq!(
        answers[format!("revoke:{revoked}")],
        json!([{hostname.as_str(): {"ok": "tasks flagged as revoked"}}])
    );
    // `inspect revoked` lists it now.
    let listed = python_inspect(&python, &redis_url(), &hostname, &["revoked"]).await;
    assert!(
        listed["revoked"][hostname.as_str()]
            .as_array()
            .is_some_and(|ids| ids.contains(&json!(revoked.as_str()))),
        "{listed}"
    );
    assert_eq!(
        answers["rate_limit:ccp_send_sms_code:100/m"],
        json!([{hostname.as_str(): {"ok": "new rate limit set successfully"}}])
    );
    assert!(
        answers["rate_limit:no_such_task:1/s"][0][hostname.as_str()]["error"]
            .as_str()
            .is_some_and(|error| error.contains("no_such_task")),
        "{answers}"
    );
    // The revoked id is dropped when it comes; the next task runs.
    python_sends(
        &python,
        &queue,
        json!([
            {"args": ["1310000001", "111111"], "options": {"task_id": revoked}},
            {"args": ["1310000002", "222222"]},
        ]),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the second task to run",
        || async {
            RAN.lock()
                .unwrap()
                .iter()
                .any(|mobile| mobile == "1310000002")
        },
    )
    .await;
    let report = running.stop().await;
    assert_eq!(report.revoked, 1);
    assert!(
        !RAN.lock()
            .unwrap()
            .iter()
            .any(|mobile| mobile == "1310000001")
    );
}
