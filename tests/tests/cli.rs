//! The command line, run as a user runs it, against real Redis and RabbitMQ: an app binary made
//! with `celeriac::cli::run` (`celeriac-test-cli`) runs a worker; its other verbs, with `--json`
//! parsed here, inspect the worker, revoke and stop its task, list, show, requeue and purge dead
//! letters, purge a queue and shut the worker down; exit codes mean what they say.

use std::process::Stdio;
use std::time::Duration;

use celeriac::{App, ResultError};
use celeriac_tests::cli::{cli_fail, cli_sleep, tasks};
use celeriac_tests::harness::{
    BackgroundWorker, amqp_url, eventually, redis_url, skipped, unique_queue, within,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_celeriac-test-cli");

/// Runs the binary with `urls` (the global options) and `args`; answers its exit code and stdout.
async fn cli(urls: &[String], args: &[&str]) -> (i32, String) {
    let output = tokio::process::Command::new(BIN)
        .args(urls)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("CELERIAC_BROKER_URL")
        .output()
        .await
        .expect("run celeriac-test-cli");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stdout.contains("guest:guest") && !stderr.contains("guest:guest"),
        "a password in the output: {stdout} {stderr}"
    );
    (output.status.code().unwrap_or(-1), stdout)
}

/// Runs `args` with `--json`, expecting exit code 0, and parses the output.
async fn json(urls: &[String], args: &[&str]) -> Value {
    let mut with_json = vec!["--json"];
    with_json.extend_from_slice(args);
    let (code, stdout) = cli(urls, &with_json).await;
    assert_eq!(code, 0, "`{}` failed: {stdout}", args.join(" "));
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

fn replies_of<'a>(replies: &'a Value, hostname: &str) -> Vec<&'a Value> {
    replies
        .as_array()
        .map(|replies| {
            replies
                .iter()
                .filter(|reply| reply["hostname"] == hostname)
                .collect()
        })
        .unwrap_or_default()
}

async fn scenario(urls: Vec<String>, app: App, queue: &str) {
    let dead_queue = format!("{queue}-dead");
    let name = format!("{queue}@cli");
    let mut worker = tokio::process::Command::new(BIN)
        .args(&urls)
        .args(["worker", "-c", "2", "--hostname", &name, "-Q"])
        .arg(format!("{queue},{dead_queue}"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");
    eventually(
        Duration::from_secs(30),
        "the worker to answer a ping",
        || async { cli(&urls, &["inspect", "ping", "-d", &name]).await.0 == 0 },
    )
    .await;

    // `inspect active` shows the long task on this worker.
    let long = app
        .delay::<cli_sleep>((600_000,))
        .queue(queue)
        .await
        .expect("sent");
    let id = long.id().to_string();
    eventually(
        Duration::from_secs(20),
        "the long task in `inspect active`",
        || async {
            let active = json(&urls, &["inspect", "active", "-d", &name]).await;
            replies_of(&active, &name).iter().any(|reply| {
                reply["tasks"]
                    .as_array()
                    .is_some_and(|tasks| tasks.iter().any(|task| task["id"] == id.as_str()))
            })
        },
    )
    .await;
    // A lane is free: nothing waits for one.
    let reserved = json(&urls, &["inspect", "reserved", "-d", &name]).await;
    assert_eq!(reserved[0]["tasks"], serde_json::json!([]), "{reserved}");
    let status = json(&urls, &["status"]).await;
    let ours = replies_of(&status, &name);
    assert_eq!(ours.len(), 1, "{status}");
    assert_eq!(ours[0]["active"], 1);
    assert_eq!(ours[0]["concurrency"], 2);
    let registered = json(&urls, &["inspect", "registered", "-d", &name]).await;
    assert_eq!(
        registered[0]["tasks"],
        serde_json::json!(["cli_fail", "cli_sleep"])
    );
    let queues = json(&urls, &["queues", queue]).await;
    assert_eq!(queues[0]["queue"], queue);
    assert_eq!(queues[0]["ready"], 0);

    // `revoke --terminate` stops it; its result says revoked.
    let revoked = json(&urls, &["revoke", &id, "--terminate"]).await;
    assert_eq!(revoked["remembered"], true);
    let stopped = revoked["replies"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|reply| reply[0] == name.as_str())
        .map(|reply| reply[1]["terminated"].clone());
    assert_eq!(stopped, Some(serde_json::json!([id])), "{revoked}");
    match long.get_timeout(Duration::from_secs(20)).await {
        Err(ResultError::Revoked { .. }) => {}
        other => panic!("the revoked task's result: {other:?}"),
    }
    let listed = json(&urls, &["inspect", "revoked", "-d", &name]).await;
    // (It also lists what earlier runs revoked in the shared store, still remembered.)
    assert!(
        listed[0]["ids"]
            .as_array()
            .is_some_and(|ids| ids.contains(&serde_json::json!(id))),
        "{listed}"
    );

    // Dead letters: three tasks fail for good; list, show, requeue one (it fails again: still
    // three), purge another queue's.
    let mut failed = Vec::new();
    for index in 0..3 {
        let sent = app
            .delay::<cli_fail>((format!("letter {index}"),))
            .queue(queue)
            .await
            .expect("sent");
        failed.push(sent.id().to_string());
    }
    eventually(Duration::from_secs(20), "three dead letters", || async {
        json(&urls, &["dlq", "list", queue])
            .await
            .as_array()
            .map(Vec::len)
            == Some(3)
    })
    .await;
    let listed = json(&urls, &["dlq", "list", queue]).await;
    for letter in listed.as_array().into_iter().flatten() {
        assert_eq!(letter["task"], "cli_fail");
        assert!(failed.contains(&letter["id"].as_str().unwrap_or_default().to_owned()));
    }
    let shown = json(&urls, &["dlq", "show", queue, &failed[1]]).await;
    assert!(
        shown["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("letter 1")),
        "{shown}"
    );
    let (code, _) = cli(
        &urls,
        &["dlq", "show", queue, &celeriac::TaskId::new().to_string()],
    )
    .await;
    assert_eq!(code, 3, "no such dead letter");
    let requeued = json(&urls, &["dlq", "requeue", queue, "--limit", "1"]).await;
    assert_eq!(requeued["requeued"], 1);
    eventually(
        Duration::from_secs(20),
        "the requeued letter dead again",
        || async {
            let queues = json(&urls, &["queues", queue]).await;
            queues[0]["dead_lettered"] == 3 && queues[0]["ready"] == 0 && queues[0]["unacked"] == 0
        },
    )
    .await;
    for index in 0..2 {
        app.delay::<cli_fail>((format!("other {index}"),))
            .queue(&dead_queue)
            .await
            .expect("sent");
    }
    eventually(
        Duration::from_secs(20),
        "two dead letters on the other queue",
        || async { json(&urls, &["queues", &dead_queue]).await[0]["dead_lettered"] == 2 },
    )
    .await;
    let (code, _) = cli(&urls, &["dlq", "purge", &dead_queue]).await;
    assert_eq!(code, 2, "purging without --force when nobody can confirm");
    let purged = json(&urls, &["dlq", "purge", &dead_queue, "--force"]).await;
    assert_eq!(purged["purged"], 2);

    // `control shutdown` stops the worker process, cleanly.
    let shutdown = json(&urls, &["control", "shutdown", "-d", &name]).await;
    assert_eq!(shutdown[0]["reply"], "shutting-down");
    let exited = within(Duration::from_secs(30), "the worker to exit", worker.wait())
        .await
        .expect("wait for the worker");
    assert!(exited.success(), "the worker exited with {exited}");

    // With no worker: requeue every dead letter, each once; then purge the queue.
    let requeued = json(&urls, &["dlq", "requeue", queue]).await;
    assert_eq!(requeued["requeued"], 3);
    let again = json(&urls, &["dlq", "requeue", queue]).await;
    assert_eq!(again["requeued"], 0);
    let queues = json(&urls, &["queues", queue]).await;
    assert_eq!(
        (
            queues[0]["ready"].clone(),
            queues[0]["dead_lettered"].clone()
        ),
        (3.into(), 0.into())
    );
    let purged = json(&urls, &["purge", queue, "--force"]).await;
    assert_eq!(purged["purged"], 3);

    // Exit codes: nobody answers (3); a rate the command line cannot read (2).
    let (code, _) = cli(
        &urls,
        &["--timeout", "0.3", "inspect", "ping", "-d", "nobody"],
    )
    .await;
    assert_eq!(code, 3);
    let (code, _) = cli(&urls, &["control", "rate-limit", "cli_fail", "lots"]).await;
    assert_eq!(code, 2);
}

fn app(urls: &[String]) -> App {
    let mut builder = tasks(App::builder());
    let mut options = urls.iter();
    while let (Some(option), Some(url)) = (options.next(), options.next()) {
        builder = match option.as_str() {
            "--broker" => builder.broker_url(url),
            "--result-backend" => builder.result_backend_url(url),
            "--coordination" => builder.coordination_url(url),
            _ => builder,
        };
    }
    builder.build().expect("the app builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_inspects_revokes_requeues_and_shuts_down() {
    if skipped("redis") {
        return;
    }
    let urls = vec![
        "--broker".to_owned(),
        redis_url(),
        "--result-backend".to_owned(),
        redis_url(),
    ];
    scenario(urls.clone(), app(&urls), &unique_queue("cli-redis")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_cli_inspects_revokes_requeues_and_shuts_down() {
    if skipped("amqp") {
        return;
    }
    let urls = vec![
        "--broker".to_owned(),
        amqp_url(),
        "--result-backend".to_owned(),
        redis_url(),
        "--coordination".to_owned(),
        redis_url(),
    ];
    scenario(urls.clone(), app(&urls), &unique_queue("cli-amqp")).await;
}

#[tokio::test]
async fn bad_command_lines_and_unreachable_brokers_have_their_exit_codes() {
    let (code, _) = cli(&[], &["status"]).await;
    assert_eq!(code, 2, "no broker");
    let (code, _) = cli(&["--broker".into(), "bogus://x".into()], &["status"]).await;
    assert_eq!(code, 2, "a bad URL");
    let (code, _) = cli(&[], &["inspect", "dance"]).await;
    assert_eq!(code, 2, "an unknown verb");
    let (code, stdout) = cli(&[], &["--help"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("dlq"), "{stdout}");
    let unreachable = vec![
        "--broker".to_owned(),
        "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
    ];
    let (code, stdout) = cli(&unreachable, &["--json", "queues", "celery"]).await;
    assert_eq!(code, 1, "{stdout}");
    let error: Value = serde_json::from_str(&stdout).expect("the error as JSON");
    assert_eq!(error["code"], 1);
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|text| text.contains("guest:***"))
    );
}

/// Ctrl-C during `dlq requeue` lets the batch under way finish and stops there: whole batches
/// moved, the count it reports is what moved, and every other letter is still dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_requeue_stops_between_batches_and_loses_nothing() {
    if skipped("redis") {
        return;
    }
    const LETTERS: u64 = 20_000;
    const BATCH: u64 = 500;
    let urls = vec!["--broker".to_owned(), redis_url()];
    let queue = unique_queue("cli-interrupt");
    let app = tasks(App::builder())
        .broker_url(redis_url())
        .default_queue(&queue)
        .build()
        .expect("the app builds");
    app.delay_batch::<cli_fail>((0..LETTERS).map(|n| (n.to_string(),)))
        .await
        .expect("sent");
    let worker = BackgroundWorker::start(
        app.worker()
            .concurrency(64)
            .prefetch(256)
            .build()
            .expect("the worker builds"),
    );
    eventually(
        Duration::from_secs(60),
        "every task dead-lettered",
        || async {
            app.broker()
                .stats(&queue)
                .await
                .is_ok_and(|stats| stats.dead_lettered == LETTERS)
        },
    )
    .await;
    worker.stop().await;

    let requeue = tokio::process::Command::new(BIN)
        .args(&urls)
        .args(["--json", "dlq", "requeue", &queue])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("CELERIAC_BROKER_URL")
        .kill_on_drop(true)
        .spawn()
        .expect("start celeriac-test-cli");
    // Interrupted once the first batch is back in the queue.
    eventually(
        Duration::from_secs(30),
        "a first batch requeued",
        || async {
            app.broker()
                .stats(&queue)
                .await
                .is_ok_and(|stats| stats.ready > 0)
        },
    )
    .await;
    let pid = requeue.id().expect("running").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(signalled.success());
    let output = within(
        Duration::from_secs(30),
        "the requeue to stop",
        requeue.wait_with_output(),
    )
    .await
    .expect("the requeue's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    let error: Value = serde_json::from_str(&stdout).expect("a JSON error");
    let message = error["error"].as_str().unwrap_or_default();
    let moved: u64 = message
        .strip_prefix("interrupted after requeueing ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no count in {message:?}"));
    assert!(
        moved > 0 && moved < LETTERS && moved.is_multiple_of(BATCH),
        "moved {moved}"
    );
    let stats = app.broker().stats(&queue).await.expect("stats");
    assert_eq!((stats.ready, stats.dead_lettered), (moved, LETTERS - moved));
    app.broker().purge(&queue).await.expect("purge");
    app.broker()
        .purge_dead_letters(&queue)
        .await
        .expect("purge dead letters");
}
