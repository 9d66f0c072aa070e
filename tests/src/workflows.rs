//! Workflow scenarios (chains, groups, chords, callbacks) every broker and result backend pair must
//! pass, run against each by `tests/workflows.rs`, and the tasks of the chord crash test's worker
//! process.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use celeriac::canvas::{Group, GroupResult, TaskFailure, chord, group};
use celeriac::{App, AppBuilder, AsyncResult, ResultError, TaskId};
use redis::aio::MultiplexedConnection;

use crate::harness::{BackgroundWorker, eventually};
use crate::results::PATIENCE;

#[celeriac::task(name = "wf_add")]
pub async fn add(a: i64, b: i64) -> Result<i64, std::convert::Infallible> {
    Ok(a + b)
}

#[celeriac::task(name = "wf_double")]
pub async fn double(n: i64) -> Result<i64, std::convert::Infallible> {
    Ok(2 * n)
}

#[celeriac::task(name = "wf_increment")]
pub async fn increment(n: i64) -> Result<i64, std::convert::Infallible> {
    Ok(n + 1)
}

#[celeriac::task(name = "wf_label")]
pub async fn label(n: i64, prefix: String) -> Result<String, std::convert::Infallible> {
    Ok(format!("{prefix}{n}"))
}

#[celeriac::task(name = "wf_sum")]
pub async fn sum(parts: Vec<i64>) -> Result<i64, std::convert::Infallible> {
    Ok(parts.iter().sum())
}

/// The callback of the chord tests: checks its parts arrived in member order (0, 1, 2, … plus
/// `offset`) and counts its runs under `key`.
#[celeriac::task(name = "wf_ordered_sum")]
pub async fn ordered_sum(parts: Vec<i64>, offset: i64, key: String) -> Result<i64, String> {
    count(&key);
    for (index, part) in parts.iter().enumerate() {
        if *part != index as i64 + offset {
            return Err(format!("part {index} is {part}: out of order"));
        }
    }
    Ok(parts.iter().sum())
}

/// Fails for good (no retries) when `n` is negative.
#[celeriac::task(name = "wf_refuse_negative")]
pub async fn refuse_negative(n: i64) -> Result<i64, String> {
    if n < 0 {
        return Err(format!("{n} is negative"));
    }
    Ok(n)
}

/// Counts its runs under `key`: a `link` callback.
#[celeriac::task(name = "wf_note")]
pub async fn note(n: i64, key: String) -> Result<i64, std::convert::Infallible> {
    count(&key);
    Ok(n)
}

/// Counts its runs under `key` and keeps the failure's text: a `link_error` callback.
#[celeriac::task(name = "wf_alert")]
pub async fn alert(failure: TaskFailure, key: String) -> Result<String, std::convert::Infallible> {
    count(&key);
    Ok(format!("{} failed: {}", failure.task, failure.error))
}

/// A task no worker of the scenarios registers (a step deployed nowhere yet).
#[celeriac::task(name = "wf_not_deployed")]
pub async fn not_deployed(n: i64) -> Result<i64, std::convert::Infallible> {
    Ok(n)
}

/// Run counts of the in-process tasks, by key (each test uses its own keys).
fn counts() -> &'static Mutex<HashMap<String, u32>> {
    static COUNTS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    COUNTS.get_or_init(Mutex::default)
}

fn count(key: &str) {
    let mut counts = counts().lock().unwrap_or_else(|e| e.into_inner());
    *counts.entry(key.to_owned()).or_default() += 1;
}

/// How many times a counting task ran under `key`.
pub fn runs(key: &str) -> u32 {
    let counts = counts().lock().unwrap_or_else(|e| e.into_inner());
    counts.get(key).copied().unwrap_or(0)
}

/// Registers the scenario tasks.
pub fn with_tasks(builder: AppBuilder) -> AppBuilder {
    builder
        .register::<add>()
        .register::<double>()
        .register::<increment>()
        .register::<label>()
        .register::<sum>()
        .register::<ordered_sum>()
        .register::<refuse_negative>()
        .register::<note>()
        .register::<alert>()
}

fn key(name: &str) -> String {
    format!("{name}-{}", TaskId::new())
}

/// Chains of 3 and of 100 links pass each output on; a failing link stops its chain, whose result
/// names that link; `link` and `link_error` callbacks run with the output or the failure.
pub async fn chains_and_callbacks(builder: AppBuilder) {
    let app = with_tasks(builder).build().expect("an app");
    let worker = BackgroundWorker::start(app.worker().concurrency(8).build().expect("a worker"));

    let three = add::s(2, 3)
        .then(double::partial())
        .then(label::partial("total: ".to_owned()));
    let three = three.delay(&app).await.expect("sent");
    assert_eq!(
        three.get_timeout(PATIENCE).await.expect("an output"),
        "total: 10"
    );

    let mut hundred = add::s(0, 1).then(increment::partial());
    for _ in 2..100 {
        hundred = hundred.then(increment::partial());
    }
    assert_eq!(hundred.len(), 100);
    let hundred = hundred.delay(&app).await.expect("sent");
    assert_eq!(
        hundred.get_timeout(PATIENCE * 2).await.expect("an output"),
        100
    );

    // A full signature ignores the previous output (Celery's `si`).
    let ignoring = add::s(1, 1)
        .then(add::s(40, 2))
        .delay(&app)
        .await
        .expect("sent");
    assert_eq!(ignoring.get_timeout(PATIENCE).await.expect("an output"), 42);

    // The second link fails: the chain's result names it, the third never runs.
    let (failing_link, after) = (TaskId::new(), key("after-failure"));
    let stopped = add::s(-5, 1)
        .then(refuse_negative::partial().task_id(failing_link))
        .then(note::partial(after.clone()));
    match stopped
        .delay(&app)
        .await
        .expect("sent")
        .get_timeout(PATIENCE)
        .await
    {
        Err(ResultError::Failed {
            task, id, message, ..
        }) => {
            assert_eq!((task.as_str(), id), ("wf_refuse_negative", failing_link));
            assert!(message.contains("-4 is negative"), "{message}");
        }
        other => panic!("expected the second link's failure, got {other:?}"),
    }

    // A step no worker knows is dead-lettered, and the chain's result says so.
    let undeployed = add::s(1, 2)
        .then(not_deployed::partial())
        .delay(&app)
        .await
        .expect("sent");
    match undeployed.get_timeout(PATIENCE).await {
        Err(ResultError::DeadLettered { task, reason, .. }) => {
            assert_eq!(task, "wf_not_deployed");
            assert!(reason.contains("unknown task"), "{reason}");
        }
        other => panic!("expected a dead-lettered step, got {other:?}"),
    }

    // `link` gets the output; `link_error` the failure, once.
    let (linked, alerted) = (key("link"), key("link-error"));
    let alert_id = TaskId::new();
    let ok = add::s(3, 4).link(note::partial(linked.clone()));
    assert_eq!(
        ok.delay(&app)
            .await
            .expect("sent")
            .get_timeout(PATIENCE)
            .await
            .expect("7"),
        7
    );
    let failing = refuse_negative::s(-1)
        .link_error(alert::partial(alerted.clone()).task_id(alert_id))
        .link(note::partial(linked.clone()));
    let failing = failing.delay(&app).await.expect("sent");
    assert!(matches!(
        failing.get_timeout(PATIENCE).await,
        Err(ResultError::Failed { .. })
    ));
    let alert = AsyncResult::<String>::from_id(&app, alert_id);
    assert_eq!(
        alert.get_timeout(PATIENCE).await.expect("the alert ran"),
        "wf_refuse_negative failed: -1 is negative"
    );
    eventually(PATIENCE, "the link callback to run", || async {
        runs(&linked) == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(runs(&linked), 1, "a failed task's `link` never runs");
    assert_eq!(runs(&alerted), 1);
    assert_eq!(runs(&after), 0, "a stopped chain's later links never run");
}

/// A group of `size` gives its outputs in order; a chord of `size` runs its callback once, with
/// every output in member order; an empty chord runs its callback with none. Without `chords` (a
/// backend that does not join them), a chord is refused when sent, saying why.
pub async fn groups_and_chords(builder: AppBuilder, size: i64, chords: bool) {
    let app = with_tasks(builder).build().expect("an app");
    let worker = BackgroundWorker::start(app.worker().concurrency(16).build().expect("a worker"));

    let sums = group((0..size).map(|n| add::s(n, n)))
        .delay(&app)
        .await
        .expect("sent");
    assert_eq!(sums.len(), size as usize);
    let outputs = sums.get_timeout(PATIENCE * 3).await.expect("every output");
    assert_eq!(outputs, (0..size).map(|n| 2 * n).collect::<Vec<_>>());
    saved_groups_restore(&app, &sums, &outputs, chords).await;

    let callback_runs = key("chord");
    let members = group((0..size).map(|n| add::s(n, 1)));
    let chord = chord(members, ordered_sum::partial(1, callback_runs.clone()));
    if !chords {
        let refused = chord.delay(&app).await.expect_err("refused");
        assert!(refused.to_string().contains("joins chords"), "{refused}");
        worker.stop().await;
        return;
    }
    let total = chord.delay(&app).await.expect("sent");
    let expected: i64 = (1..=size).sum();
    assert_eq!(
        total.get_timeout(PATIENCE * 3).await.expect("the total"),
        expected
    );

    let nothing = celeriac::canvas::chord(Group::new(), sum::partial());
    let nothing = nothing.delay(&app).await.expect("sent");
    assert_eq!(nothing.get_timeout(PATIENCE).await.expect("zero"), 0);
    worker.stop().await;
    assert_eq!(runs(&callback_runs), 1, "the callback ran once");
}

/// A saved group restores by its id alone, with its members in order, until deleted; a backend
/// that keeps nothing for others (`rpc://`, where `keeps` is false) refuses to save it.
async fn saved_groups_restore(app: &App, sent: &GroupResult<i64>, outputs: &[i64], keeps: bool) {
    let restore = || GroupResult::<i64>::restore(app, sent.id());
    if !keeps {
        let refused = sent.save().await.expect_err("refused");
        assert!(
            format!("{:?}", refused).contains("saved groups"),
            "{refused:?}"
        );
        return;
    }
    assert!(restore().await.expect("restore").is_none(), "not saved yet");
    sent.save().await.expect("saved");
    let restored = restore().await.expect("restore").expect("kept");
    assert_eq!(restored.id(), sent.id());
    assert_eq!(
        restored.ids().collect::<Vec<_>>(),
        sent.ids().collect::<Vec<_>>()
    );
    assert_eq!(
        restored.get_timeout(PATIENCE).await.expect("outputs"),
        outputs
    );
    restored.delete().await.expect("deleted");
    assert!(restore().await.expect("restore").is_none(), "deleted");
}

/// A chord whose members fail (two of them) runs its `link_error` once and never its callback; its
/// result reports a failed member.
pub async fn a_failing_member_fails_the_chord(builder: AppBuilder, queue: &str) {
    let app = with_tasks(builder).build().expect("an app");
    let worker = BackgroundWorker::start(app.worker().concurrency(4).build().expect("a worker"));
    let (callback_runs, alerts) = (key("never"), key("chord-alert"));
    let members = group([3, -1, 4, -2, 5].map(refuse_negative::s));
    let failing = chord(members, ordered_sum::partial(0, callback_runs.clone()))
        .link_error(alert::partial(alerts.clone()));
    match failing
        .delay(&app)
        .await
        .expect("sent")
        .get_timeout(PATIENCE)
        .await
    {
        Err(ResultError::Failed { task, message, .. }) => {
            assert_eq!(task, "wf_refuse_negative");
            assert!(message.contains("is negative"), "{message}");
        }
        other => panic!("expected a member's failure, got {other:?}"),
    }
    eventually(PATIENCE, "the chord's error callback", || async {
        runs(&alerts) >= 1
    })
    .await;
    // Every message is settled (both failures dead-lettered, the rest acked) before the worker is
    // stopped: a lane that took a member but had not started it when the stop began would put it
    // back. Then nothing is left to run: no second alert is queued.
    eventually(
        PATIENCE,
        "both failing members dead-lettered and the rest acked",
        || async {
            app.broker().stats(queue).await.is_ok_and(|stats| {
                stats.dead_lettered == 2 && stats.ready == 0 && stats.unacked == 0
            })
        },
    )
    .await;
    let report = worker.stop().await;
    let stats = app.broker().stats(queue).await.expect("stats");
    assert_eq!((stats.ready, stats.delayed), (0, 0), "{report:?}");
    assert_eq!(runs(&alerts), 1, "the error callback ran once");
    assert_eq!(runs(&callback_runs), 0, "the callback never ran");
}

/// The run recorder of the crash test's worker process (a Redis connection), set by that process.
pub static RECORDER: OnceLock<MultiplexedConnection> = OnceLock::new();

/// A chord member of the crash test: sleeps `sleep_ms`, counts its run in Redis, returns `n`.
#[celeriac::task(name = "wf_crash_member")]
pub async fn crash_member(n: i64, sleep_ms: u64, runs_key: String) -> Result<i64, String> {
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    let mut conn = RECORDER.get().ok_or("no recorder")?.clone();
    redis::cmd("INCR")
        .arg(&runs_key)
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(n)
}

/// The crash test's callback: counts its runs in Redis under `runs_key`, and fails unless its
/// parts are 0, 1, 2, … in order.
#[celeriac::task(name = "wf_crash_collect")]
pub async fn crash_collect(parts: Vec<i64>, runs_key: String) -> Result<i64, String> {
    let mut conn = RECORDER.get().ok_or("no recorder")?.clone();
    redis::cmd("INCR")
        .arg(&runs_key)
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(index) = (0..parts.len()).find(|&i| parts[i] != i as i64) {
        return Err(format!("part {index} is {}: out of order", parts[index]));
    }
    Ok(parts.iter().sum())
}

/// Registers the crash test's tasks.
pub fn with_crash_tasks(builder: AppBuilder) -> AppBuilder {
    builder
        .register::<crash_member>()
        .register::<crash_collect>()
}

/// Sends the crash test's chord of `size` members to `app`: its result, and the Redis keys counting
/// member and callback runs.
pub async fn send_crash_chord(app: &App, size: i64) -> (AsyncResult<i64>, String, String) {
    let (member_runs, callback_runs) = (
        format!("celeriac-test-member-runs:{}", TaskId::new()),
        format!("celeriac-test-callback-runs:{}", TaskId::new()),
    );
    let members = group((0..size).map(|n| crash_member::s(n, 10, member_runs.clone())));
    let chord = chord(members, crash_collect::partial(callback_runs.clone()));
    (
        chord.delay(app).await.expect("sent"),
        member_runs,
        callback_runs,
    )
}

/// The chord join every backend that joins chords keeps, checked on the backend directly: members
/// counted once by index (a repeated member keeps its first output), exactly one `Complete` among
/// writers racing, repeats answered `Complete` again only until the callback is marked sent, and
/// one first failure.
pub async fn backend_joins_chords(backend: std::sync::Arc<dyn celeriac::result::ResultBackend>) {
    use celeriac::result::{ChordJoin, ChordPart};
    let chord = TaskId::new().to_string();
    let task = TaskId::new().to_string();
    let task = task.as_str();
    let ttl = Duration::from_secs(300);
    let output = |n: u32| bytes::Bytes::from(n.to_le_bytes().to_vec());
    assert!(backend.joins_chords());
    let size = 200;
    // Every member written twice, all at once: one writer completes the chord.
    let writes = (0..size).chain(0..size).map(|member| {
        let (backend, chord) = (backend.clone(), chord.clone());
        async move {
            backend
                .join_chord(
                    ChordPart::new(&chord, member, size, task),
                    output(member),
                    ttl,
                )
                .await
        }
    });
    let joins = futures::future::join_all(writes).await;
    let complete: Vec<_> = joins
        .into_iter()
        .map(|join| join.expect("a join"))
        .filter_map(|join| match join {
            ChordJoin::Complete(outputs) => Some(outputs),
            ChordJoin::Waiting => None,
            other => panic!("a chord of successes cannot fail: {other:?}"),
        })
        .collect();
    // The completing write, and maybe repeats racing after it, before anyone marked it sent.
    assert!(!complete.is_empty(), "nobody completed the chord");
    for outputs in &complete {
        assert_eq!(outputs, &(0..size).map(output).collect::<Vec<_>>());
    }
    // A repeat before the callback is marked sent is answered `Complete` (its first sender may have
    // died); after, `Waiting`.
    let repeat = backend
        .join_chord(ChordPart::new(&chord, 7, size, task), output(99), ttl)
        .await
        .expect("a join");
    assert!(matches!(repeat, ChordJoin::Complete(_)), "{repeat:?}");
    backend.chord_fired(&chord, ttl).await.expect("marked sent");
    let repeat = backend
        .join_chord(ChordPart::new(&chord, 7, size, task), output(99), ttl)
        .await
        .expect("a join");
    assert_eq!(repeat, ChordJoin::Waiting);

    // Without repeats, exactly one writer completes.
    let other = TaskId::new().to_string();
    let writes = (0..size).map(|member| {
        let (backend, chord) = (backend.clone(), other.clone());
        async move {
            backend
                .join_chord(
                    ChordPart::new(&chord, member, size, task),
                    output(member),
                    ttl,
                )
                .await
        }
    });
    let completions = futures::future::join_all(writes)
        .await
        .into_iter()
        .filter(|join| matches!(join, Ok(ChordJoin::Complete(_))))
        .count();
    assert_eq!(completions, 1);

    let fails = |join: ChordJoin| matches!(join, ChordJoin::Failed(_));
    assert!(fails(
        backend
            .fail_chord(ChordPart::new(&chord, 3, size, task), "boom", ttl)
            .await
            .expect("failed")
    ));
    assert!(!fails(
        backend
            .fail_chord(ChordPart::new(&chord, 4, size, task), "boom", ttl)
            .await
            .expect("failed")
    ));
    assert!(fails(
        backend
            .fail_chord(ChordPart::new(&chord, 3, size, task), "boom", ttl)
            .await
            .expect("the same member again")
    ));
}
