//! The demo as separate processes — `web` and `worker` — against real Redis and RabbitMQ: request a
//! code over HTTP, read it from the worker's SMS log, verify it over HTTP.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use celeriac_tests::harness::{amqp_url, free_port, redis_url, skipped};
use sms_verification::http::Answer;
use tokio::process::{Child, Command};

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sms-verification"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start sms-verification")
}

async fn post(client: &reqwest::Client, url: &str, body: Option<String>) -> (u16, Answer) {
    let mut request = client.post(url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

async fn web_is_up(client: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if client.get(format!("{base}/")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the web process did not start listening at {base}");
}

/// Reads the 6-digit code the worker's console gateway logged for `mobile`, waiting up to 20 s.
async fn code_sent_to(sms_log: &std::path::Path, mobile: &str) -> Option<String> {
    for _ in 0..400 {
        let log = std::fs::read_to_string(sms_log).unwrap_or_default();
        let code = log
            .lines()
            .filter(|line| line.starts_with(mobile))
            .find_map(|line| {
                line.split(|c: char| !c.is_ascii_digit())
                    .find(|w| w.len() == 6)
                    .map(str::to_owned)
            });
        if code.is_some() {
            return code;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The web and worker processes on `broker`; `extra` goes to both (`--celery`, `--queue …`).
async fn demo_across_processes(broker: &str, extra: &[&str]) {
    let sms_log: PathBuf =
        std::env::temp_dir().join(format!("sms-{}.log", uuid::Uuid::new_v4().simple()));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");
    let redis = redis_url();
    let web_args = [
        "web",
        "--broker",
        broker,
        "--listen",
        &listen,
        "--redis",
        &redis,
        "--coordination",
        &redis,
    ];
    let _web = spawn(&[&web_args[..], extra].concat());
    let log = sms_log.to_string_lossy().into_owned();
    let worker_args = [
        "worker",
        "--broker",
        broker,
        "--coordination",
        &redis,
        "--sms-log",
        &log,
        "--concurrency",
        "4",
    ];
    let _worker = spawn(&[&worker_args[..], extra].concat());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    web_is_up(&client, &base).await;

    // A number unique to this run, so runs do not throttle each other through the shared Redis.
    let mobile = format!("139{:08}", fastrand::u32(0..100_000_000));
    let (status, answer) = post(&client, &format!("{base}/sms_codes/{mobile}"), None).await;
    assert_eq!(
        (status, answer.code.as_str()),
        (200, "0"),
        "{}",
        answer.errmsg
    );
    let (status, _) = post(&client, &format!("{base}/sms_codes/{mobile}"), None).await;
    assert_eq!(status, 429);

    let code = code_sent_to(&sms_log, &mobile).await;
    let code = code.expect("the worker sent the SMS");
    let verify = format!("{base}/sms_codes/{mobile}/verify");
    let (status, answer) = post(&client, &verify, Some(format!(r#"{{"code":"{code}"}}"#))).await;
    assert_eq!(status, 200, "{}", answer.errmsg);
    let (status, _) = post(&client, &verify, Some(format!(r#"{{"code":"{code}"}}"#))).await;
    assert_eq!(status, 400, "a code works once");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("sms_http_requests_total"), "{metrics}");
    let _ = std::fs::remove_file(&sms_log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_and_worker_processes_over_redis() {
    if skipped("redis") {
        return;
    }
    demo_across_processes(&redis_url(), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_and_worker_processes_over_rabbitmq() {
    if skipped("amqp") || skipped("redis") {
        return;
    }
    demo_across_processes(&amqp_url(), &[]).await;
}

/// The `--celery` mode: the same demo in Celery's wire format (kombu's layout on Redis, Celery's
/// result meta), on a queue of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_and_worker_processes_in_celerys_format() {
    if skipped("redis") {
        return;
    }
    let queue = celeriac_tests::harness::unique_queue("sms_celery");
    demo_across_processes(&redis_url(), &["--celery", "--queue", &queue]).await;
}

/// Keeping Django: the seed's own line, `ccp_send_sms_code.delay(mobile, sms_code)`, in a Python
/// script (`python/send_sms_code.py`), and the Rust worker in `--celery` mode sends the SMS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_django_producer_and_the_rust_worker() {
    let Some(python) = celeriac_tests::harness::require_python_celery() else {
        return;
    };
    let queue = celeriac_tests::harness::unique_queue("sms_django");
    let sms_log: PathBuf =
        std::env::temp_dir().join(format!("sms-{}.log", uuid::Uuid::new_v4().simple()));
    let log = sms_log.to_string_lossy().into_owned();
    let redis = redis_url();
    let _worker = spawn(&[
        "worker",
        "--celery",
        "--queue",
        &queue,
        "--broker",
        &redis,
        "--coordination",
        &redis,
        "--sms-log",
        &log,
    ]);
    let mobile = format!("137{:08}", fastrand::u32(0..100_000_000));
    let output = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/send_sms_code.py"
        ))
        .args([&mobile, "246810"])
        .env("CELERY_BROKER_URL", &redis)
        .env("CELERY_QUEUE", &queue)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .expect("run send_sms_code.py");
    assert!(
        output.status.success(),
        "send_sms_code.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let code = code_sent_to(&sms_log, &mobile).await;
    assert_eq!(
        code.as_deref(),
        Some("246810"),
        "the Rust worker sent the SMS"
    );
    let _ = std::fs::remove_file(&sms_log);
}
