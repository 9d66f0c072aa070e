//! Worker behaviour on the in-memory broker, mostly under tokio's paused clock: retries and their
//! schedule, dead letters, panics, time limits, expiry, concurrency, rate limits, bad input, shutdown.
//! What the app adds around runs (plain fns, layers, follow-ups, state) is in `app.rs`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use celeriac::broker::{ConsumeOptions, Outgoing};
use celeriac::codec::DecodeLimits;
use celeriac::{App, Envelope, MemoryBroker, SendOptions, TaskContext, TaskError, TaskId};
use celeriac_tests::harness::{BackgroundWorker, dead_letter_reasons, eventually};
use futures::StreamExt;
use tokio::time::Instant;

const LONG: Duration = Duration::from_secs(3600);

/// Runs a worker for `app` in the background.
fn start_worker(app: &App, concurrency: usize) -> BackgroundWorker {
    let worker = app
        .worker()
        .concurrency(concurrency)
        .grace_period(Duration::from_secs(5))
        .build()
        .unwrap();
    BackgroundWorker::start(worker)
}

// ===== a task declared with the macro, enqueued with delay, runs on a worker =====

static GREETED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[celeriac::task(name = "greet")]
async fn greet(name: String, times: u32) -> Result<usize, std::io::Error> {
    GREETED.lock().unwrap().push(name.repeat(times as usize));
    Ok(name.len())
}

#[tokio::test(start_paused = true)]
async fn delayed_task_runs_on_a_worker() {
    let app = App::builder()
        .broker(MemoryBroker::new())
        .register::<greet>()
        .build()
        .unwrap();
    let id: TaskId = greet::delay(&app, "ab".into(), 2).await.unwrap().id();
    assert_eq!(app.broker().len("celery").await.unwrap(), 1);
    let worker = start_worker(&app, 2);
    eventually(LONG, "the task to run", || async {
        !GREETED.lock().unwrap().is_empty()
    })
    .await;
    let report = worker.stop().await;
    assert_eq!(*GREETED.lock().unwrap(), ["abab"]);
    assert_eq!(report.succeeded, 1);
    let stats = app.broker().stats("celery").await.unwrap();
    assert_eq!((stats.ready, stats.unacked, stats.dead_lettered), (0, 0, 0));
    assert!(!id.to_string().is_empty());
}

// ===== retries: max_retries = 3, retry_backoff = 3, jitter off → runs at 0, 3, 9, 21 s =====

static ATTEMPTS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

#[derive(Debug, thiserror::Error)]
#[error("SMS gateway unavailable")]
struct GatewayDown;

#[celeriac::task(
    name = "always_fails",
    max_retries = 3,
    retry_backoff = 3,
    retry_jitter = false
)]
async fn always_fails(ctx: TaskContext, mobile: String) -> Result<(), GatewayDown> {
    assert_eq!(mobile, "13800138000");
    assert_eq!(ctx.retries() as usize, ATTEMPTS.lock().unwrap().len());
    ATTEMPTS.lock().unwrap().push(Instant::now());
    Err(GatewayDown)
}

#[tokio::test(start_paused = true)]
async fn failing_task_retries_at_0_3_9_21_seconds_then_dead_letters() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<always_fails>()
        .build()
        .unwrap();
    always_fails::delay(&app, "13800138000".into())
        .await
        .unwrap();
    let worker = start_worker(&app, 1);
    eventually(LONG, "the dead letter", || async {
        app.broker().stats("celery").await.unwrap().dead_lettered == 1
    })
    .await;
    let report = worker.stop().await;

    let attempts = ATTEMPTS.lock().unwrap().clone();
    let offsets: Vec<f64> = attempts
        .iter()
        .map(|t| (*t - attempts[0]).as_secs_f64())
        .collect();
    assert_eq!(offsets.len(), 4, "{offsets:?}");
    for (got, want) in offsets.iter().zip([0.0, 3.0, 9.0, 21.0]) {
        assert!(
            (got - want).abs() < 0.05,
            "runs at {offsets:?}, want 0, 3, 9, 21"
        );
    }
    assert_eq!((report.retried, report.dead_lettered), (3, 1));
    let reasons = dead_letter_reasons(&app, "celery").await;
    assert_eq!(
        reasons,
        ["task `always_fails` failed after 3 retries: SMS gateway unavailable"]
    );
    // The dead letter is the last attempt's message, with its retry count.
    let dead = app.broker().dead_letters("celery", 1).await.unwrap();
    let envelope = Envelope::from_bytes(&dead[0].payload, &DecodeLimits::default()).unwrap();
    assert_eq!(
        (envelope.task.as_str(), envelope.retries),
        ("always_fails", 3)
    );
    assert_eq!(app.broker().len("celery").await.unwrap(), 0);
}

// ===== explicit retry requests (Celery's self.retry) =====

static EXPLICIT: Mutex<Vec<(u32, Instant)>> = Mutex::new(Vec::new());

#[celeriac::task(name = "retries_once")]
async fn retries_once(ctx: TaskContext) -> Result<(), TaskError> {
    EXPLICIT
        .lock()
        .unwrap()
        .push((ctx.retries(), Instant::now()));
    if ctx.retries() == 0 {
        return Err(ctx.retry_in(Duration::from_secs(5)));
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn explicit_retry_request_runs_again_after_its_delay() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<retries_once>()
        .build()
        .unwrap();
    retries_once::delay(&app).await.unwrap();
    let worker = start_worker(&app, 1);
    eventually(LONG, "the second run", || async {
        EXPLICIT.lock().unwrap().len() == 2
    })
    .await;
    let report = worker.stop().await;
    let runs = EXPLICIT.lock().unwrap().clone();
    assert_eq!((runs[0].0, runs[1].0), (0, 1));
    let gap = runs[1].1 - runs[0].1;
    assert!(
        gap >= Duration::from_secs(5) && gap < Duration::from_millis(5050),
        "{gap:?}"
    );
    assert_eq!(
        (report.retried, report.succeeded, report.dead_lettered),
        (1, 1, 0)
    );
}

// ===== panics are caught, reported, and the worker keeps serving =====

static AFTER_PANIC: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "panics")]
async fn panics(kind: String) {
    if kind == "boom" {
        panic!("boom: {kind}");
    }
    AFTER_PANIC.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn panicking_task_is_dead_lettered_and_the_worker_keeps_serving() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<panics>()
        .build()
        .unwrap();
    panics::delay(&app, "boom".into()).await.unwrap();
    panics::delay(&app, "fine".into()).await.unwrap();
    let worker = start_worker(&app, 1);
    eventually(LONG, "the second task", || async {
        AFTER_PANIC.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually(LONG, "the dead letter", || async {
        app.broker().stats("celery").await.unwrap().dead_lettered == 1
    })
    .await;
    worker.stop().await;
    assert_eq!(
        dead_letter_reasons(&app, "celery").await,
        ["task `panics` failed: panicked: boom: boom"]
    );
}

// ===== time limits cancel the run and count as a failure =====

static STARTED_SLOW: AtomicUsize = AtomicUsize::new(0);
static FINISHED_SLOW: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "too_slow", time_limit = 2)]
async fn too_slow() {
    STARTED_SLOW.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    FINISHED_SLOW.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn time_limit_cancels_the_run_and_dead_letters_it() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<too_slow>()
        .build()
        .unwrap();
    too_slow::delay(&app).await.unwrap();
    let started = Instant::now();
    let worker = start_worker(&app, 1);
    eventually(LONG, "the dead letter", || async {
        app.broker().stats("celery").await.unwrap().dead_lettered == 1
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    worker.stop().await;
    assert_eq!(
        (
            STARTED_SLOW.load(Ordering::SeqCst),
            FINISHED_SLOW.load(Ordering::SeqCst)
        ),
        (1, 0)
    );
    assert_eq!(
        dead_letter_reasons(&app, "celery").await,
        ["task `too_slow` failed: time limit of 2s exceeded"]
    );
}

// ===== the concurrency bound is respected, and used =====

static RUNNING: AtomicUsize = AtomicUsize::new(0);
static MAX_RUNNING: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "occupies_a_slot")]
async fn occupies_a_slot(_n: u32) {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MAX_RUNNING.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    DONE.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn at_most_concurrency_tasks_run_at_once() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<occupies_a_slot>()
        .build()
        .unwrap();
    app.delay_batch::<occupies_a_slot>((0..20).map(|n| (n,)))
        .await
        .unwrap();
    let worker = start_worker(&app, 3);
    eventually(LONG, "every task", || async {
        DONE.load(Ordering::SeqCst) == 20
    })
    .await;
    worker.stop().await;
    assert_eq!(MAX_RUNNING.load(Ordering::SeqCst), 3);
}

// ===== rate limits space runs evenly =====

static RATE_LIMITED: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

#[celeriac::task(name = "rate_limited", rate_limit = "2/s")]
async fn rate_limited() {
    RATE_LIMITED.lock().unwrap().push(Instant::now());
}

#[tokio::test(start_paused = true)]
async fn rate_limit_spaces_runs() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<rate_limited>()
        .build()
        .unwrap();
    app.delay_batch::<rate_limited>(vec![(); 4]).await.unwrap();
    let worker = start_worker(&app, 4);
    eventually(LONG, "four runs", || async {
        RATE_LIMITED.lock().unwrap().len() == 4
    })
    .await;
    worker.stop().await;
    let runs = RATE_LIMITED.lock().unwrap().clone();
    let offsets: Vec<u128> = runs.iter().map(|t| (*t - runs[0]).as_millis()).collect();
    assert_eq!(offsets, [0, 500, 1000, 1500]);
}

// ===== expired tasks are not run, and are counted =====

static EXPIRING_RAN: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "expiring")]
async fn expiring() {
    EXPIRING_RAN.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn expired_tasks_are_discarded_and_counted() {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let app = App::builder()
                .broker(celeriac::MemoryBroker::new())
                .register::<expiring>()
                .build()
                .unwrap();
            expiring::delay(&app)
                .expires_in(Duration::from_secs(10))
                .await
                .unwrap();
            expiring::delay(&app)
                .expires_in(Duration::from_secs(600))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            let worker = app.worker().concurrency(1).build().unwrap();
            let report = worker
                .run_until(tokio::time::sleep(Duration::from_secs(1)))
                .await
                .unwrap();
            assert_eq!((report.expired, report.succeeded), (1, 1));
            assert_eq!(app.broker().len("celery").await.unwrap(), 0);
        });
    });
    assert_eq!(EXPIRING_RAN.load(Ordering::SeqCst), 1);
    let counters: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => {
                Some((key.key().name().to_owned(), n))
            }
            _ => None,
        })
        .collect();
    assert!(
        counters.contains(&("celeriac_tasks_expired_total".to_owned(), 1)),
        "{counters:?}"
    );
    assert!(
        counters.contains(&("celeriac_tasks_started_total".to_owned(), 1)),
        "{counters:?}"
    );
    assert!(
        counters.contains(&("celeriac_tasks_succeeded_total".to_owned(), 1)),
        "{counters:?}"
    );
}

// ===== bad input: garbage bytes, unknown tasks, wrong argument types =====

static SURVIVOR: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "survivor")]
async fn survivor(mobile: String, code: String) {
    assert!(!mobile.is_empty() && !code.is_empty());
    SURVIVOR.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(start_paused = true)]
async fn bad_messages_are_dead_lettered_with_a_reason_and_the_worker_keeps_serving() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<survivor>()
        .build()
        .unwrap();
    let broker = app.broker();
    broker
        .publish(Outgoing::new("celery", b"\x00\xffgarbage".to_vec()))
        .await
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let random: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(300).collect();
    broker
        .publish(Outgoing::new("celery", random))
        .await
        .unwrap();
    app.send_task("no_such_task", &("x",), SendOptions::new())
        .await
        .unwrap();
    app.send_task("survivor", &(42u64,), SendOptions::new())
        .await
        .unwrap();
    survivor::delay(&app, "13800138000".into(), "123456".into())
        .await
        .unwrap();

    let worker = start_worker(&app, 2);
    eventually(LONG, "the good task and four dead letters", || async {
        SURVIVOR.load(Ordering::SeqCst) == 1
            && app.broker().stats("celery").await.unwrap().dead_lettered == 4
    })
    .await;
    let report = worker.stop().await;
    assert_eq!((report.succeeded, report.dead_lettered), (1, 4));
    let reasons = dead_letter_reasons(&app, "celery").await;
    let count = |needle: &str| reasons.iter().filter(|r| r.contains(needle)).count();
    assert_eq!(count("undecodable message"), 2, "{reasons:?}");
    assert_eq!(count("unknown task `no_such_task`"), 1, "{reasons:?}");
    assert_eq!(
        count("task `survivor` failed: invalid task arguments"),
        1,
        "{reasons:?}"
    );
}

// ===== graceful shutdown: finish what fits in the grace period, requeue the rest =====

static FINISHED: Mutex<Vec<TaskId>> = Mutex::new(Vec::new());
static STARTED: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "sleepy")]
async fn sleepy(ctx: TaskContext, seconds: u64) {
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    FINISHED.lock().unwrap().push(ctx.id());
}

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_or_requeues_every_task() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<sleepy>()
        .build()
        .unwrap();
    // Four short tasks, four that outlast the grace period, four never started.
    let mut ids = Vec::new();
    for seconds in [1, 1, 1, 1, 600, 600, 600, 600, 1, 1, 1, 1] {
        ids.push(sleepy::delay(&app, seconds).await.unwrap());
    }
    let worker = app
        .worker()
        .concurrency(8)
        .grace_period(Duration::from_secs(10))
        .build()
        .unwrap();
    let shutdown = async {
        while STARTED.load(Ordering::SeqCst) < 8 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let report = worker.run_until(shutdown).await.unwrap();
    assert_eq!((report.succeeded, report.requeued), (4, 4));

    let finished: Vec<TaskId> = FINISHED.lock().unwrap().clone();
    let stats = app.broker().stats("celery").await.unwrap();
    assert_eq!((stats.ready, stats.unacked, stats.dead_lettered), (8, 0, 0));
    let mut queued = Vec::new();
    let mut stream = app
        .broker()
        .consume(
            &["celery".to_owned()],
            ConsumeOptions::default().prefetch(100),
        )
        .await
        .unwrap();
    for _ in 0..8 {
        let delivery = stream.next().await.unwrap().unwrap();
        queued.push(
            Envelope::from_bytes(delivery.payload(), &DecodeLimits::default())
                .unwrap()
                .id,
        );
        delivery.ack().await.unwrap();
    }
    let mut all: Vec<TaskId> = finished.iter().chain(&queued).copied().collect();
    assert_eq!(
        all.len(),
        12,
        "every task ran exactly once or is back in its queue"
    );
    all.sort();
    let mut expected: Vec<TaskId> = ids.iter().map(|result| result.id()).collect();
    expected.sort();
    assert_eq!(all, expected);
    let finished: HashSet<_> = finished.into_iter().collect();
    assert!(queued.iter().all(|id| !finished.contains(id)));
}

// ===== a rolling deploy: producer and worker built from different argument types =====

static CHARGED: Mutex<Vec<(u32, u32)>> = Mutex::new(Vec::new());

/// The task as the (old) producer was built: amounts in `u64`.
#[celeriac::task(name = "charge")]
async fn charge_v1(_account: u64, _cents: u64) {}

/// The task as the (new) worker is built: the same name, `u32` arguments. bincode writes 7 and 8 the
/// same way in both, so without a fingerprint the worker would run with values meant for another
/// type.
#[celeriac::task(name = "charge")]
async fn charge_v2(account: u32, cents: u32) {
    CHARGED.lock().unwrap().push((account, cents));
}

#[tokio::test(start_paused = true)]
async fn arguments_encoded_for_another_version_of_a_task_are_dead_lettered_naming_both() {
    let broker = MemoryBroker::new();
    let producer = App::builder()
        .broker(broker.clone())
        .register::<charge_v1>()
        .build()
        .unwrap();
    let worker_app = App::builder()
        .broker(broker)
        .register::<charge_v2>()
        .build()
        .unwrap();
    charge_v1::delay(&producer, 7, 8).await.unwrap();
    // A message sent by name has no fingerprint: it is decoded as before.
    producer
        .send_task("charge", &(1u32, 2u32), SendOptions::new())
        .await
        .unwrap();
    let running = start_worker(&worker_app, 1);
    eventually(LONG, "both messages to be settled", || async {
        worker_app.broker().len("celery").await.unwrap() == 0
    })
    .await;
    let report = running.stop().await;
    assert_eq!((report.succeeded, report.dead_lettered), (1, 1));
    assert_eq!(*CHARGED.lock().unwrap(), [(1, 2)]);
    let reasons = dead_letter_reasons(&worker_app, "celery").await;
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].contains("another version of the argument types")
            && reasons[0].contains("sender's schema")
            && reasons[0].contains("this worker's")
            && reasons[0].contains("(u32, u32)"),
        "{}",
        reasons[0]
    );
}
