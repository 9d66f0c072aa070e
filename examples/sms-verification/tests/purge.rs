//! The periodic purge of expired codes, under a beat: in process on the embedded broker (tokio's
//! paused clock), and in the all-in-one binary (with its metrics).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use celeriac::App;
use celeriac_tests::harness::free_port;
use sms_verification::store::{CodeStore, MemoryStore};
use sms_verification::tasks::{Codes, purge_expired_codes};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(start_paused = true)]
async fn the_beat_purges_expired_codes_every_minute() {
    let store = Arc::new(MemoryStore::default());
    let app = App::builder()
        .broker_url("memory://sms-purge")
        .state(Codes(store.clone()))
        .register::<purge_expired_codes>()
        .build()
        .expect("the app builds");
    for mobile in ["13800138000", "13800138001", "13800138002"] {
        store
            .put_code(mobile, "424242", Duration::from_secs(300))
            .await
            .expect("stored");
    }
    let beat = app
        .beat()
        .every(Duration::from_secs(60), purge_expired_codes::s())
        .build()
        .expect("the beat builds");
    let worker = app.worker().build().expect("the worker builds");
    let stop_at = tokio::time::Instant::now() + Duration::from_secs(361);
    let beating = tokio::spawn(beat.run_until(tokio::time::sleep_until(stop_at)));
    let working = tokio::spawn(worker.run_until(tokio::time::sleep_until(stop_at)));
    // Before they expire, every purge leaves them.
    tokio::time::sleep(Duration::from_secs(290)).await;
    assert_eq!(store.len(), 3);
    // Expired at 300 s; purged by the next minute's run, though no one asked for a code since.
    tokio::time::sleep(Duration::from_secs(70)).await;
    assert!(store.is_empty(), "{} codes left", store.len());
    let report = beating.await.expect("the beat ran");
    let worked = working
        .await
        .expect("the worker ran")
        .expect("the worker ran");
    // Ticks fall on the wall clock's minutes (so that every beat agrees on them): the 361 s window
    // holds six, or seven when it opened in the last second of a minute (a CI run once did); five
    // if the beat missed the first to start up.
    assert!((5..=7).contains(&report.sent), "{report:?}");
    assert_eq!(worked.succeeded, report.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_in_one_mode_runs_the_purge_under_its_beat() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sms-verification"))
        .args(["--listen", &listen, "--purge-every", "1s"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sms-verification");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let purges = tokio::time::timeout(Duration::from_secs(20), async {
        let mut purges = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("purged expired verification codes") {
                purges += 1;
                if purges == 2 {
                    break;
                }
            }
        }
        purges
    })
    .await
    .unwrap_or(0);
    // Its /metrics has the run times as histograms, and the queue's depth.
    let metrics = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a body");
    let _ = child.kill().await;
    assert_eq!(
        purges, 2,
        "the all-in-one process ran the purge twice within 20 s"
    );
    assert!(
        metrics.contains("celeriac_task_run_seconds_bucket{task=\"purge_expired_codes\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("celeriac_queue_depth{queue=\"celery\",state=\"ready\"}"),
        "{metrics}"
    );
}
