//! Hostile input, written into a queue the way a foreign or malicious producer would (raw bytes, not
//! through celeriac's publish), run against each real broker with a `celeriac-test-worker` process.

use std::time::Duration;

use celeriac::codec::{BincodeCodec, CodecExt};
use celeriac::{App, Envelope, SendOptions};
use tokio::process::Child;

use crate::harness::{done_count, eventually, stop_gracefully};

/// One hostile message: its bytes, and a word the reason it is dead-lettered with must contain.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// What the case is, for failure messages.
    pub name: &'static str,
    /// The raw message bytes.
    pub payload: Vec<u8>,
    /// Part of the expected dead-letter reason.
    pub reason: &'static str,
}

fn record_run(queue: &str, args: Vec<u8>) -> Envelope {
    Envelope::new("record_run", queue, args, BincodeCodec::CONTENT_TYPE)
}

/// The message-level cases every broker must survive: not an envelope, over the size limit, an
/// unknown task, arguments of the wrong types, and a valid message followed by extra bytes.
pub fn envelope_cases(queue: &str) -> Vec<Hostile> {
    let codec = BincodeCodec::new();
    let wrong_types = codec
        .encode(&("not a number", [1u8, 1, 1]))
        .expect("encode");
    let right = codec.encode(&(7u64, 0u64)).expect("encode");
    let mut trailing = record_run(queue, right).to_bytes().expect("encode");
    trailing.extend_from_slice(b"and then some");
    let mut unknown = record_run(queue, Vec::new());
    unknown.task = "no_such_task".into();
    vec![
        Hostile {
            name: "not an envelope",
            payload: br#"{"task": "record_run", "args": [1, 2]}"#.to_vec(),
            reason: "not a celeriac envelope",
        },
        Hostile {
            name: "over the size limit",
            payload: vec![b'x'; 2 * 1024 * 1024],
            reason: "exceeds the limit",
        },
        Hostile {
            name: "unknown task",
            payload: unknown.to_bytes().expect("encode"),
            reason: "unknown task",
        },
        Hostile {
            name: "wrong argument types",
            payload: record_run(queue, wrong_types).to_bytes().expect("encode"),
            reason: "invalid task arguments",
        },
        Hostile {
            name: "trailing bytes",
            payload: trailing,
            reason: "trailing bytes",
        },
    ]
}

/// Valid tasks sent after the hostile messages.
pub const VALID_TASKS: u64 = 20;

/// The worker's peak resident memory, from `/proc` (Linux).
pub fn peak_rss_mib(child: &Child) -> f64 {
    let pid = child.id().expect("a running worker");
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the worker's /proc status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kib / 1024.0
}

/// `hostile` messages are already in `queue` (written raw by the caller); valid `record_run` tasks
/// are sent behind them. A worker started with `spawn` dead-letters each hostile message with a
/// reason, runs every valid task, stays alive, and peaks under `max_rss_mib`.
pub async fn hostile_input_is_dead_lettered(
    app: &App,
    queue: &str,
    hostile: &[Hostile],
    max_rss_mib: f64,
    spawn: impl Fn() -> Child,
) {
    for n in 0..VALID_TASKS {
        app.send_task("record_run", &(n, 0u64), SendOptions::new())
            .await
            .expect("enqueue");
    }
    let mut worker = spawn();
    eventually(
        Duration::from_secs(60),
        "the valid tasks to run and the hostile ones to be dead-lettered",
        || async {
            let dead = app
                .broker()
                .stats(queue)
                .await
                .map_or(0, |s| s.dead_lettered);
            done_count(queue).await == VALID_TASKS && dead >= hostile.len() as u64
        },
    )
    .await;
    assert!(
        worker.try_wait().expect("try_wait").is_none(),
        "the worker must survive hostile input"
    );
    let rss = peak_rss_mib(&worker);
    assert!(
        rss <= max_rss_mib,
        "worker peaked at {rss:.1} MiB (bound {max_rss_mib} MiB)"
    );
    let status = stop_gracefully(&mut worker).await;
    assert!(status.success(), "{status}");
    let reasons: Vec<String> = app
        .broker()
        .dead_letters(queue, 100)
        .await
        .expect("dead letters")
        .into_iter()
        .map(|dead| dead.reason)
        .collect();
    assert_eq!(reasons.len(), hostile.len(), "{reasons:#?}");
    for case in hostile {
        assert!(
            reasons.iter().any(|reason| reason.contains(case.reason)),
            "{}: no dead letter says `{}`: {reasons:#?}",
            case.name,
            case.reason
        );
    }
    let stats = app.broker().stats(queue).await.expect("stats");
    assert_eq!((stats.ready, stats.delayed), (0, 0));
}
