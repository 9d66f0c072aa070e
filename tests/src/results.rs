//! Result scenarios every result backend must pass, run against each (memory, Redis, …) by
//! `tests/results.rs`.

use std::time::{Duration, SystemTime};

use std::sync::Arc;

use celeriac::result::ResultBackend;
use celeriac::{App, AppBuilder, AsyncResult, ResultError, ResultState, SendOptions, StoredResult};

use crate::harness::{BackgroundWorker, within};

/// Long enough for any result on a loaded CI machine; tests never wait it out when things work.
pub const PATIENCE: Duration = Duration::from_secs(20);

#[celeriac::task(name = "results_add")]
pub async fn add(a: i64, b: i64) -> Result<i64, std::convert::Infallible> {
    Ok(a + b)
}

#[celeriac::task(name = "results_always_fails", max_retries = 2, retry_delay = 0.05)]
pub async fn always_fails(code: u32) -> Result<u32, std::io::Error> {
    Err(std::io::Error::other(format!("gateway said no to {code}")))
}

#[celeriac::task(name = "results_fire_and_forget")]
pub async fn fire_and_forget() {}

#[celeriac::task(
    name = "results_kept_unit",
    ignore_result = false,
    track_started = true
)]
pub async fn kept_unit() -> Result<(), std::convert::Infallible> {
    Ok(())
}

/// Registers the scenario tasks.
pub fn with_tasks(builder: AppBuilder) -> AppBuilder {
    builder
        .register::<add>()
        .register::<always_fails>()
        .register::<fire_and_forget>()
        .register::<kept_unit>()
}

/// Every outcome reaches its caller as the right value or the right error. `builder` makes apps on
/// one broker and backend; with `shared`, a second app reads results by id, like another process
/// (not with a backend that sends each result to its caller alone, RabbitMQ's RPC one).
pub async fn every_outcome_reaches_its_caller(builder: impl Fn() -> AppBuilder, shared: bool) {
    let app = with_tasks(builder()).build().expect("an app");
    let worker = BackgroundWorker::start(app.worker().build().expect("a worker"));

    let sum = add::delay(&app, 2, 3).await.expect("sent");
    assert_eq!(sum.get_timeout(PATIENCE).await.expect("a sum"), 5);
    assert_eq!(sum.state().await.expect("a state"), ResultState::Success);
    assert!(sum.ready().await.expect("ready"));

    // Another app (another process, in effect) reads it by id; this one too.
    if shared {
        let elsewhere = with_tasks(builder()).build().expect("a second app");
        let by_id = AsyncResult::<i64>::from_id(&elsewhere, sum.id());
        assert_eq!(by_id.get_timeout(PATIENCE).await.expect("the same sum"), 5);
    }
    let by_id = AsyncResult::<i64>::from_id(&app, sum.id());
    assert_eq!(by_id.get_timeout(PATIENCE).await.expect("the same sum"), 5);

    // The wrong output type is a decode error naming the task and the type.
    let wrong = AsyncResult::<String>::from_id(&app, sum.id());
    match wrong.get_timeout(PATIENCE).await {
        Err(ResultError::Decode {
            task, type_name, ..
        }) => {
            assert_eq!(task, "results_add");
            assert!(type_name.contains("String"), "{type_name}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }

    let failing = always_fails::delay(&app, 7).await.expect("sent");
    match failing.get_timeout(PATIENCE).await {
        Err(ResultError::Failed {
            task,
            retries,
            message,
            id,
        }) => {
            assert_eq!(
                (task.as_str(), retries, id),
                ("results_always_fails", 2, failing.id())
            );
            assert!(message.contains("gateway said no to 7"), "{message}");
        }
        other => panic!("expected a failure after 2 retries, got {other:?}"),
    }
    assert_eq!(
        failing.state().await.expect("a state"),
        ResultState::Failure
    );

    let ignored = fire_and_forget::delay(&app).await.expect("sent");
    assert!(matches!(
        ignored.get().await,
        Err(ResultError::Ignored { .. })
    ));

    let kept = kept_unit::delay(&app).await.expect("sent");
    kept.get_timeout(PATIENCE)
        .await
        .expect("a kept unit result");

    let unknown = app
        .send_task("results_nobody_runs_this", &(1,), SendOptions::new())
        .await
        .expect("sent by name");
    match AsyncResult::<i64>::from_id(&app, unknown)
        .get_timeout(PATIENCE)
        .await
    {
        Err(ResultError::DeadLettered { reason, .. }) => {
            assert!(reason.contains("unknown task"), "{reason}");
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }

    let past = SystemTime::now() - Duration::from_secs(1);
    let late = add::delay(&app, 1, 1).expires_at(past).await.expect("sent");
    assert!(
        matches!(
            late.get_timeout(PATIENCE).await,
            Err(ResultError::Expired { .. })
        ),
        "an expired task says so"
    );
    assert_eq!(late.state().await.expect("a state"), ResultState::Revoked);

    sum.forget().await.expect("forgotten");
    assert_eq!(sum.state().await.expect("a state"), ResultState::Pending);
    assert!(matches!(
        sum.get_timeout(Duration::from_millis(200)).await,
        Err(ResultError::Timeout { .. })
    ));
    worker.stop().await;
}

/// `count` callers wait at once (on one connection, for backends that have one), and each gets its
/// own task's output.
pub async fn many_callers_wait_at_once(app: &App, count: i64) {
    let mut results = Vec::new();
    for n in 0..count {
        results.push(add::delay(app, n, 1).await.expect("sent"));
    }
    let waiting = futures::future::join_all(
        results
            .into_iter()
            .map(|result| tokio::spawn(async move { result.get_timeout(PATIENCE).await })),
    );
    let worker = BackgroundWorker::start(app.worker().concurrency(16).build().expect("a worker"));
    let outputs = within(PATIENCE * 2, "every result", waiting).await;
    for (n, output) in outputs.into_iter().enumerate() {
        let output = output.expect("a waiting task").expect("an output");
        assert_eq!(output, n as i64 + 1);
    }
    worker.stop().await;
}

/// The rules every backend keeps, checked on the backend directly: a stored outcome never gets
/// worse, waiters are woken by a ready record (not by progress), `forget` deletes.
pub async fn backend_keeps_the_rules(backend: Arc<dyn ResultBackend>) {
    let id = uuid::Uuid::new_v4().to_string();
    let day = Duration::from_secs(86_400);
    let record = |state, body: &'static [u8]| StoredResult::new(state, body);
    assert!(backend.fetch(&id).await.expect("fetch").is_none());

    let waiter = {
        let (backend, id) = (backend.clone(), id.clone());
        tokio::spawn(async move { backend.wait_ready(&id).await })
    };
    let store = |state, body| {
        let (backend, id) = (backend.clone(), id.clone());
        async move {
            backend
                .store(&id, record(state, body), day)
                .await
                .expect("store")
        }
    };
    assert!(store(ResultState::Started, b"started").await);
    assert!(store(ResultState::Retry, b"retry").await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "progress does not wake a waiter");
    assert!(store(ResultState::Failure, b"failed").await);
    let woken = within(PATIENCE, "the waiter", waiter)
        .await
        .expect("joined");
    assert_eq!(woken.expect("a record").body.as_ref(), b"failed");
    assert!(
        !store(ResultState::Retry, b"late retry").await,
        "progress never replaces an outcome"
    );
    assert!(
        store(ResultState::Success, b"first").await,
        "a success replaces a failure"
    );
    assert!(
        !store(ResultState::Success, b"second").await,
        "the first success stays"
    );
    assert!(!store(ResultState::Failure, b"failed again").await);
    let kept = backend.fetch(&id).await.expect("fetch").expect("a record");
    assert_eq!(
        (kept.state, kept.body.as_ref()),
        (ResultState::Success, &b"first"[..])
    );
    // A waiter arriving after the outcome gets it at once.
    let late = within(PATIENCE, "a late waiter", backend.wait_ready(&id)).await;
    assert_eq!(late.expect("a record").body.as_ref(), b"first");
    backend.forget(&id).await.expect("forget");
    assert!(backend.fetch(&id).await.expect("fetch").is_none());
}
