//! The quickstart depends on `celeriac` alone (features `redis`, `amqp`); the same binary runs on the
//! embedded broker, Redis and RabbitMQ, switched by `CELERIAC_BROKER_URL` and nothing else.

use std::process::Command;

use celeriac_tests::harness::{amqp_url, redis_url, require_amqp, require_redis};

/// Runs the quickstart on `url` and checks its task ran twice (a failure, then the retry).
fn runs_on(url: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("CELERIAC_BROKER_URL", url)
        .env("NO_COLOR", "1")
        .output()
        .expect("the quickstart binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "on {url}: {stdout}\n{stderr}");
    assert!(stdout.contains("enqueued task "), "on {url}: {stdout}");
    assert!(
        stdout.contains("SMS to 13800138000: your code is 424242 (attempt 2)"),
        "on {url}, the retry did not run: {stdout}\n{stderr}"
    );
}

#[test]
fn the_embedded_broker_is_the_url_memory() {
    runs_on("memory://");
}

#[tokio::test]
async fn redis_is_the_url_redis() {
    if require_redis(|builder| builder).await.is_some() {
        runs_on(&redis_url());
    }
}

#[tokio::test]
async fn rabbitmq_is_the_url_amqp() {
    if require_amqp(|builder| builder).await.is_some() {
        runs_on(&amqp_url());
    }
}

#[test]
fn a_broker_url_with_a_password_never_shows_it() {
    let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env(
            "CELERIAC_BROKER_URL",
            "kafka://admin:hunter2@127.0.0.1:9092",
        )
        .output()
        .expect("the quickstart binary starts");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success());
    assert!(all.contains("unknown scheme `kafka`"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}
