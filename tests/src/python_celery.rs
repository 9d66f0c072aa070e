//! Driving the Python side of the Celery interop tests (`tests/python/`): Celery producers,
//! workers and Flower, on the tests' Redis, in the virtualenv `scripts/test.sh` makes.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use redis::AsyncCommands;

use crate::harness::{eventually, python_dir, redis_url};

/// An app in Celery's format on the tests' Redis, sending to and serving `queue`.
pub fn celery_app(queue: &str) -> celeriac::AppBuilder {
    celeriac::App::builder()
        .broker_url(redis_url())
        .celery_compat()
        .default_queue(queue)
}

/// [`celery_app`] with Celery's result backend, on the tests' Redis too.
pub fn celery_app_with_results(queue: &str) -> celeriac::AppBuilder {
    celery_app(queue).result_backend_url(redis_url())
}

pub fn python_command(python: &Path, queue: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(python);
    command
        .current_dir(python_dir())
        .env("INTEROP_BROKER_URL", redis_url())
        .env("INTEROP_RECORD_URL", redis_url())
        .env("INTEROP_QUEUE", queue)
        .env("INTEROP_BACKEND_URL", redis_url())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    command
}

/// Sends `calls` from Python (see `tests/python/send.py`); returns its line for each call:
/// `{"id": …}`, with `"result"` or `"error"` for calls that wait for their result.
pub async fn python_sends(
    python: &Path,
    queue: &str,
    calls: serde_json::Value,
) -> Vec<serde_json::Value> {
    python_sends_with(python, queue, &[], calls).await
}

/// [`python_sends`] with `env` added to `interop.py`'s environment (another broker with
/// `INTEROP_BROKER_URL`, another result backend with `INTEROP_BACKEND_URL`).
pub async fn python_sends_with(
    python: &Path,
    queue: &str,
    env: &[(&str, &str)],
    calls: serde_json::Value,
) -> Vec<serde_json::Value> {
    let mut command = python_command(python, queue);
    command.envs(env.iter().copied());
    let output = command
        .arg("send.py")
        .arg(calls.to_string())
        .output()
        .await
        .expect("run send.py");
    assert!(
        output.status.success(),
        "send.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line from send.py"))
        .collect()
}

/// Starts a Python Celery worker on `queue` with pool `pool` (`interop.py`'s tasks), `env` and
/// `extra` arguments.
pub fn python_worker(
    python: &Path,
    queue: &str,
    pool: &str,
    env: &[(&str, &str)],
    extra: &[&str],
) -> tokio::process::Child {
    let mut command = python_command(python, queue);
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .args(["-m", "celery", "-A", "interop", "worker", "--pool", pool])
        .args([
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ])
        .args(["-Q", queue, "--loglevel", "WARNING"])
        // A name of its own: on RabbitMQ each worker holds an exclusive pidbox queue named after
        // it, and a second `celery@<host>` at once dies on the lock.
        .args(["-n", &format!("{queue}@%h")])
        .args(extra)
        .stdout(Stdio::null())
        .spawn()
        .expect("start a Python Celery worker")
}

/// Waits until the Python task has run `count` times for `queue` (`interop.py` records each run in
/// a Redis list), then returns the runs and removes the record.
pub async fn python_runs(queue: &str, count: u64, what: &str) -> Vec<serde_json::Value> {
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("celeriac-test-interop-ran:{queue}");
    eventually(Duration::from_secs(30), what, || {
        let mut conn = conn.clone();
        let key = key.clone();
        async move { conn.llen::<_, u64>(&key).await.unwrap_or(0) >= count }
    })
    .await;
    let runs: Vec<String> = conn.lrange(&key, 0, -1).await.unwrap();
    let _: () = conn.del(&key).await.unwrap();
    runs.iter()
        .map(|run| serde_json::from_str(run).expect("a run recorded as JSON"))
        .collect()
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0), the body; `None` while nothing listens.
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// Asks the worker `hostname` over Celery's remote control on the broker at `broker_url`, as
/// `celery inspect` and `celery control` do (see `tests/python/remote_control.py`):
/// `{"<method>": <replies>}` for each of `methods`.
pub async fn python_inspect(
    python: &Path,
    broker_url: &str,
    hostname: &str,
    methods: &[&str],
) -> serde_json::Value {
    let output = python_command(python, "celery")
        .env("INTEROP_BROKER_URL", broker_url)
        .arg("remote_control.py")
        .arg(hostname)
        .args(methods)
        .output()
        .await
        .expect("run remote_control.py");
    assert!(
        output.status.success(),
        "remote_control.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from remote_control.py")
}

/// Runs `python canvas.py <what>` (see `tests/python/canvas.py`): builds a Celery workflow on
/// `queue`, waits for its results and returns what it printed. `env` adds to its environment.
pub async fn python_canvas(
    python: &Path,
    queue: &str,
    what: &str,
    env: &[(&str, &str)],
) -> serde_json::Value {
    let mut command = python_command(python, queue);
    command.arg("canvas.py").arg(what);
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().await.expect("run canvas.py");
    assert!(
        output.status.success(),
        "canvas.py {what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON line from canvas.py")
}
