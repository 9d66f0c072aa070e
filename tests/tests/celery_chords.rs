//! Chords built in Python (Celery 5.7) whose members run on Rust workers, alone or beside Python
//! workers: the members are joined in Celery's Redis keys (`celery-taskset-meta-<group>.j` …),
//! so each language's members count, the callback is sent once, in Celery's format, to whichever
//! worker serves its queue, and a failed member fails the chord as Celery reports it. And chords
//! built in Rust, sent in Celery's format, whose members and callback Python workers run too; and
//! groups one language saves (`celery-taskset-meta-<group>`) and the other restores.

use std::sync::Mutex;
use std::time::Duration;

use celeriac::canvas::{GroupResult, chord, group};
use celeriac::{App, AsyncResult, TaskError, TaskId};
use celeriac_tests::harness::{BackgroundWorker, require_python_celery, unique_queue};
use celeriac_tests::python_celery::{celery_app_with_results, python_canvas, python_worker};
use serde_json::json;

/// The members the Rust `tasks.add` ran: (x, y).
static ADDED: Mutex<Vec<(i64, i64)>> = Mutex::new(Vec::new());

/// The callbacks the Rust `tasks.xsum` ran.
static SUMMED: Mutex<Vec<Vec<i64>>> = Mutex::new(Vec::new());

#[celeriac::task(name = "tasks.add")]
async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    ADDED.lock().unwrap().push((x, y));
    Ok(x + y)
}

#[celeriac::task(name = "tasks.xsum")]
async fn xsum(numbers: Vec<i64>) -> Result<i64, TaskError> {
    SUMMED.lock().unwrap().push(numbers.clone());
    Ok(numbers.iter().sum())
}

/// A Rust worker on `queue`, in Celery's format, with Celery's result backend; and its app.
fn rust_worker(queue: &str) -> (App, BackgroundWorker) {
    let app = celery_app_with_results(queue)
        .register::<add>()
        .register::<xsum>()
        .build()
        .expect("app");
    let worker = app.worker().concurrency(4).build().expect("worker");
    (app, BackgroundWorker::start(worker))
}

/// A chord whose members and callback all run on a Rust worker: the callback gets the members'
/// results in group order, once, and Python's `get()` of the chord reads its sum. A chord whose
/// member fails (a string for a number) is failed, and the callback never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_chord_runs_on_a_rust_worker() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("py_chord");
    let (app, running) = rust_worker(&queue);
    let chord = python_canvas(&python, &queue, "chord", &[]).await;
    let failed = python_canvas(&python, &queue, "chord_fail", &[]).await;
    // Python raises the failed member's error; the chord's own result says which member it was.
    let chord_id: TaskId = failed["id"]
        .as_str()
        .expect("the chord's id")
        .parse()
        .expect("a UUID");
    let chord_result = AsyncResult::<i64>::from_id(&app, chord_id)
        .get_timeout(Duration::from_secs(30))
        .await;
    running.stop().await;
    assert_eq!(chord["sum"], 12, "{chord}");
    let summed = SUMMED.lock().unwrap().clone();
    assert_eq!(
        summed
            .iter()
            .filter(|numbers| **numbers == [0, 2, 4, 6])
            .count(),
        1,
        "the callback ran once, with the results in group order: {summed:?}"
    );
    let error = failed["error"].as_str().expect("the chord failed");
    assert!(error.contains(r#"string "x", expected i64"#), "{error}");
    let chord_error = chord_result.expect_err("the chord failed").to_string();
    assert!(
        chord_error.contains("Dependency") && chord_error.contains(r#"string "x""#),
        "{chord_error}"
    );
    assert!(
        !summed.iter().any(|numbers| numbers.len() == 2),
        "the failed chord's callback did not run: {summed:?}"
    );
}

/// One chord, its members alternately on a Rust and a Python worker and its callback on the
/// Python one: both languages' members are counted in the one join, and the callback the last
/// member sends (in either language) runs on Python with all six results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chords_members_in_both_languages_join_as_one() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("chord_rust");
    let python_queue = unique_queue("chord_python");
    let mut python_side = python_worker(&python, &python_queue, "solo", &[], &[]);
    let (_, running) = rust_worker(&queue);
    let mixed = python_canvas(
        &python,
        &queue,
        "chord_mixed",
        &[("INTEROP_PY_QUEUE", python_queue.as_str())],
    )
    .await;
    running.stop().await;
    python_side.start_kill().expect("stop the Python worker");
    let _ = python_side.wait().await;
    assert_eq!(mixed, json!({"sum": 615}));
    ran_alternately(100);
}

/// A chord built in Rust by an app in Celery's format: its size is in Celery's keys before its
/// members go out, so its members, alternately on the Rust worker and on a Python one, join as
/// one; the callback runs once, on Python, with the six results in group order; and Rust's typed
/// `get()` and Python's `AsyncResult.get()` both read its sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chord_built_in_rust_runs_across_languages() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("rs_chord");
    let python_queue = unique_queue("rs_chord_python");
    let mut python_side = python_worker(&python, &python_queue, "solo", &[], &[]);
    let (app, running) = rust_worker(&queue);
    let members = group((0..6).map(|i| {
        let member = add::s(i, 1000);
        if i % 2 == 1 {
            member.queue(python_queue.clone())
        } else {
            member
        }
    }));
    let summed = chord(members, xsum::partial().queue(python_queue.clone()))
        .delay(&app)
        .await
        .expect("the chord is sent");
    let sum = summed.get_timeout(Duration::from_secs(30)).await;
    let id = summed.id().to_string();
    let python_reads =
        python_canvas(&python, &queue, "result", &[("INTEROP_RESULT_ID", &id)]).await;
    running.stop().await;
    python_side.start_kill().expect("stop the Python worker");
    let _ = python_side.wait().await;
    assert_eq!(sum.expect("the chord's sum"), 6015);
    assert_eq!(python_reads, json!({"result": 6015}));
    ran_alternately(1000);
}

/// Asserts that, of the six members `add(i, y)`, the even ones ran on the Rust worker and the odd
/// ones not, and that the callback (with all six results) did not run on Rust.
fn ran_alternately(y: i64) {
    let added = ADDED.lock().unwrap().clone();
    for i in 0..6 {
        assert_eq!(
            added.contains(&(i, y)),
            i % 2 == 0,
            "member ({i}, {y}) ran on Rust only if even: {added:?}"
        );
    }
    let summed = SUMMED.lock().unwrap().clone();
    assert!(
        !summed.iter().any(|numbers| numbers.len() == 6),
        "the callback ran on the Python worker: {summed:?}"
    );
}

/// Saved groups cross languages: a group Python sends and saves (its members run on the Rust
/// worker) restores in Rust by its id, typed, with Python's member ids in order; a group Rust
/// sends in Celery's format and saves restores in Python, whose `get()` reads its results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_groups_restore_across_languages() {
    let Some(python) = require_python_celery() else {
        return;
    };
    let queue = unique_queue("saved_group");
    let (app, running) = rust_worker(&queue);
    let python_saved = python_canvas(&python, &queue, "group_saved", &[]).await;
    let id: TaskId = python_saved["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("the group's id");
    let restored = GroupResult::<i64>::restore(&app, id)
        .await
        .expect("restore")
        .expect("Python saved the group");
    let ids: Vec<String> = restored.ids().map(|id| id.to_string()).collect();
    assert_eq!(json!(ids), python_saved["ids"]);
    let outputs = restored.get_timeout(Duration::from_secs(30)).await;

    let sent = group((0..4).map(|i| add::s(i, 10)))
        .delay(&app)
        .await
        .expect("sent");
    sent.save().await.expect("saved");
    let group_id = sent.id().to_string();
    let python_reads = python_canvas(
        &python,
        &queue,
        "restore",
        &[("INTEROP_GROUP_ID", &group_id)],
    )
    .await;
    running.stop().await;
    assert_eq!(outputs.expect("the outputs"), [0, 2, 4, 6, 8]);
    assert_eq!(python_reads, json!({"results": [10, 11, 12, 13]}));
}
