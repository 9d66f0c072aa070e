//! What the app adds around a task's run, on the in-memory broker: plain fns on the blocking pool,
//! tower layers, follow-up tasks linked to their parent, enqueue errors, and app state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use celeriac::broker::{Broker, ConsumeOptions};
use celeriac::service::TaskRequest;
use celeriac::{App, MemoryBroker, SendOptions, State, TaskContext, TaskError, TaskId};
use celeriac_tests::harness::dead_letter_reasons;

/// Runs a worker of `app` for a second of (paused) time.
async fn run_for_a_second(app: &App) -> celeriac::WorkerReport {
    app.worker()
        .build()
        .unwrap()
        .run_until(tokio::time::sleep(Duration::from_secs(1)))
        .await
        .unwrap()
}

// ===== plain fns run on the blocking pool =====

static BLOCKING_THREAD: Mutex<Option<std::thread::ThreadId>> = Mutex::new(None);

#[celeriac::task(name = "cpu_bound")]
fn cpu_bound(n: u64) -> Result<u64, std::convert::Infallible> {
    *BLOCKING_THREAD.lock().unwrap() = Some(std::thread::current().id());
    Ok((0..n).sum())
}

#[tokio::test]
async fn plain_fn_tasks_run_off_the_async_thread() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<cpu_bound>()
        .build()
        .unwrap();
    cpu_bound::delay(&app, 1000).await.unwrap();
    let report = app
        .worker()
        .build()
        .unwrap()
        .run_until(async {
            while BLOCKING_THREAD.lock().unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    assert_eq!(report.succeeded, 1);
    assert_ne!(
        *BLOCKING_THREAD.lock().unwrap(),
        Some(std::thread::current().id())
    );
}

// ===== tower layers: first added is outermost =====

static LAYER_ORDER: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

#[celeriac::task(name = "layered")]
async fn layered() {
    LAYER_ORDER.lock().unwrap().push("task");
}

fn recording_layer(
    label: &'static str,
) -> impl tower::Layer<
    celeriac::service::BoxTaskService,
    Service = impl tower::Service<
        TaskRequest,
        Response = celeriac::service::TaskOutput,
        Error = TaskError,
        Future = impl Send,
    > + Clone
              + Send
              + Sync,
> + Send
+ Sync
+ Clone {
    tower::layer::layer_fn(move |inner: celeriac::service::BoxTaskService| {
        tower::service_fn(move |request: TaskRequest| {
            LAYER_ORDER.lock().unwrap().push(label);
            tower::ServiceExt::oneshot(inner.clone(), request)
        })
    })
}

#[tokio::test(start_paused = true)]
async fn layers_wrap_runs_with_the_first_added_outermost() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<layered>()
        .build()
        .unwrap();
    layered::delay(&app).await.unwrap();
    let worker = app
        .worker()
        .layer(recording_layer("first"))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)))
        .layer(recording_layer("second"))
        .build()
        .unwrap();
    let report = worker
        .run_until(tokio::time::sleep(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(*LAYER_ORDER.lock().unwrap(), ["first", "second", "task"]);
}

// ===== follow-up tasks are linked to their parent =====

static CHILD_CONTEXT: Mutex<Option<(Option<TaskId>, Option<TaskId>)>> = Mutex::new(None);

#[celeriac::task(name = "parent")]
async fn parent(ctx: TaskContext) -> Result<(), celeriac::EnqueueError> {
    ctx.delay::<child>(()).await?;
    Ok(())
}

#[celeriac::task(name = "child")]
async fn child(ctx: TaskContext) {
    *CHILD_CONTEXT.lock().unwrap() = Some((ctx.envelope().parent_id, ctx.envelope().root_id));
}

#[tokio::test(start_paused = true)]
async fn follow_up_tasks_carry_parent_and_root_ids() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<parent>()
        .register::<child>()
        .build()
        .unwrap();
    let parent_id = parent::delay(&app).await.unwrap().id();
    let report = run_for_a_second(&app).await;
    assert_eq!(report.succeeded, 2);
    assert_eq!(
        *CHILD_CONTEXT.lock().unwrap(),
        Some((Some(parent_id), Some(parent_id)))
    );
}

// ===== enqueue errors reach the caller =====

#[tokio::test]
async fn invalid_send_options_are_errors() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .build()
        .unwrap();
    let error = app
        .send_task("t", &(), SendOptions::new().priority(12))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid options for task `t`: priority 12 is above 9"
    );
    let error = app
        .send_task("t", &(), SendOptions::new().queue(""))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("queue name is empty"), "{error}");
}

#[test]
fn enqueue_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .build()
        .unwrap();
    assert_send(&cpu_bound::delay(&app, 1));
    assert_send(&app.delay::<cpu_bound>((1,)));
    assert_send(&app.send_task("cpu_bound", &(1,), SendOptions::new()));
    let broker = MemoryBroker::new();
    assert_send(&broker.consume(&[], ConsumeOptions::default()));
}

#[test]
fn duplicate_task_names_are_refused_at_build() {
    #[celeriac::task(name = "cpu_bound")]
    async fn impostor() {}
    let error = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<cpu_bound>()
        .register::<impostor>()
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "two different tasks are registered under the name `cpu_bound`: `app::cpu_bound` and \
         `app::duplicate_task_names_are_refused_at_build::impostor`"
    );
}

// ===== app state =====

struct Prefix(&'static str);

static STATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[celeriac::task(name = "uses_state")]
async fn uses_state(ctx: TaskContext, name: String) -> Result<(), TaskError> {
    let prefix = ctx.state::<Prefix>()?;
    STATED.lock().unwrap().push(format!("{}{name}", prefix.0));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn tasks_read_app_state_and_missing_state_is_a_dead_letter_not_a_retry_loop() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .state(Prefix("hello, "))
        .register::<uses_state>()
        .build()
        .unwrap();
    uses_state::delay(&app, "ada".into()).await.unwrap();
    let report = run_for_a_second(&app).await;
    assert_eq!(report.succeeded, 1);
    assert_eq!(*STATED.lock().unwrap(), ["hello, ada"]);

    let without = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<uses_state>()
        .build()
        .unwrap();
    uses_state::delay(&without, "bob".into()).await.unwrap();
    let report = run_for_a_second(&without).await;
    assert_eq!(
        (report.succeeded, report.retried, report.dead_lettered),
        (0, 0, 1)
    );
    let reasons = dead_letter_reasons(&without, "celery").await;
    assert!(
        reasons[0].contains("no state of type") && reasons[0].contains("Prefix"),
        "{reasons:?}"
    );
}

// ===== sending reads like Celery: options chain on `delay` =====

#[celeriac::task(name = "chained")]
async fn chained(mobile: String, code: String) {
    let _ = (mobile, code);
}

#[tokio::test]
async fn delay_takes_chained_options_and_its_future_is_send() {
    use std::future::IntoFuture;
    fn assert_send<F: Future + Send>(future: F) -> F {
        future
    }
    let broker = celeriac::MemoryBroker::new();
    let app = App::builder()
        .broker(broker.clone())
        .register::<chained>()
        .build()
        .unwrap();
    chained::delay(&app, "13800138000".into(), "1".into())
        .await
        .unwrap();
    let sending = chained::delay(&app, "13800138000".into(), "2".into())
        .countdown(Duration::from_secs(3))
        .queue("sms")
        .priority(5);
    // axum handlers need `Send` futures.
    assert_send(sending.into_future()).await.unwrap();
    let celery = broker.stats("celery").await.unwrap();
    let sms = broker.stats("sms").await.unwrap();
    assert_eq!((celery.ready, celery.delayed), (1, 0));
    assert_eq!((sms.ready, sms.delayed), (0, 1));
    let empty_queue = chained::delay(&app, "1".into(), "3".into()).queue("").await;
    assert!(
        matches!(
            empty_queue,
            Err(celeriac::EnqueueError::InvalidOptions { .. })
        ),
        "{empty_queue:?}"
    );
}

// ===== state declared by the task, checked when the app is built =====

#[derive(Clone)]
struct Greeting(Arc<str>);

static GREETED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[celeriac::task(name = "greets")]
async fn greets(ctx: TaskContext, State(greeting): State<Greeting>, name: String) {
    GREETED.lock().unwrap().push(format!(
        "{}, {name} (run {})",
        greeting.0,
        ctx.retries() + 1
    ));
}

#[celeriac::task(name = "greets_blocking")]
fn greets_blocking(name: String, State(greeting): State<Greeting>) -> Result<(), std::io::Error> {
    GREETED
        .lock()
        .unwrap()
        .push(format!("{} from a thread, {name}", greeting.0));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn state_parameters_are_checked_at_build_and_given_to_each_run() {
    let forgot = App::builder()
        .broker(MemoryBroker::new())
        .register::<greets_blocking>()
        .build()
        .unwrap_err();
    assert!(
        matches!(
            forgot,
            celeriac::BuildError::MissingState {
                task: "greets_blocking",
                state: "app::Greeting"
            }
        ),
        "{forgot:?}"
    );
    assert_eq!(
        forgot.to_string(),
        "task `greets_blocking` takes `State<app::Greeting>`, and the app has no `app::Greeting`: \
         give it one with `App::builder().state(…)`"
    );

    let app = App::builder()
        .broker(MemoryBroker::new())
        .state(Greeting("hello".into()))
        .register::<greets>()
        .register::<greets_blocking>()
        .build()
        .unwrap();
    greets::delay(&app, "ada".into()).await.unwrap();
    greets_blocking::delay(&app, "bob".into()).await.unwrap();
    let report = run_for_a_second(&app).await;
    assert_eq!(report.succeeded, 2);
    let mut greeted = GREETED.lock().unwrap().clone();
    greeted.sort();
    assert_eq!(greeted, ["hello from a thread, bob", "hello, ada (run 1)"]);
}

// ===== errors print each cause once =====

#[tokio::test]
async fn an_error_chain_names_each_cause_once_and_never_the_password() {
    let port = celeriac_tests::harness::free_port();
    let app = App::builder()
        .broker_url(format!("redis://:hunter2@127.0.0.1:{port}/0"))
        .enqueue_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let error = chained::delay(&app, "1".into(), "2".into())
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "cannot enqueue task `chained`");
    let report = celeriac::error::Report(&error).to_string();
    assert!(
        report.starts_with(&format!(
            "cannot enqueue task `chained`: cannot connect to broker at redis://:***@127.0.0.1:{port}/0: "
        )),
        "{report}"
    );
    assert_eq!(report.matches("cannot connect").count(), 1, "{report}");
    let mut messages = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(error) = cause {
        let message = error.to_string();
        assert!(
            messages
                .iter()
                .all(|earlier: &String| !earlier.contains(&message)),
            "`{message}` repeats an earlier message in {report}"
        );
        messages.push(message);
        cause = error.source();
    }
    assert!(messages.len() >= 3, "{report}");
    assert!(!report.contains("hunter2"), "{report}");
}

// ===== per-send options reach the run =====

static SEEN_HEADERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[celeriac::task(name = "slow_with_headers")]
async fn slow_with_headers(ctx: TaskContext, seconds: u64) {
    if let Some(request) = ctx.envelope().headers.get("request-id") {
        SEEN_HEADERS.lock().unwrap().push(request.clone());
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

#[tokio::test(start_paused = true)]
async fn a_send_carries_its_own_time_limit_and_headers_to_the_run() {
    let app = App::builder()
        .broker(MemoryBroker::new())
        .register::<slow_with_headers>()
        .build()
        .unwrap();
    slow_with_headers::delay(&app, 1)
        .header("request-id", "first")
        .await
        .unwrap();
    slow_with_headers::delay(&app, 30)
        .header("request-id", "second")
        .time_limit(Duration::from_secs(2))
        .await
        .unwrap();
    let report = celeriac::testing::run_until_idle(&app).await.unwrap();
    assert_eq!((report.succeeded, report.dead_lettered), (1, 1));
    let reasons = dead_letter_reasons(&app, "celery").await;
    assert!(reasons[0].contains("time limit of 2s"), "{reasons:?}");
    let mut seen = SEEN_HEADERS.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["first", "second"]);
}

// ===== the run path: one place catches panics, in user layers too =====

#[celeriac::task(name = "guarded")]
async fn guarded() {}

#[tokio::test(start_paused = true)]
async fn a_panicking_layer_fails_the_run_and_the_worker_lives_on() {
    let app = App::builder()
        .broker(MemoryBroker::new())
        .register::<guarded>()
        .build()
        .unwrap();
    guarded::delay(&app).await.unwrap();
    guarded::delay(&app).await.unwrap();
    let worker = app
        .worker()
        .concurrency(1)
        .layer(tower::layer::layer_fn(
            |inner: celeriac::service::BoxTaskService| {
                let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
                tower::service_fn(move |request: TaskRequest| {
                    let first = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                    assert!(!first, "a bug in a layer");
                    tower::ServiceExt::oneshot(inner.clone(), request)
                })
            },
        ))
        .build()
        .unwrap();
    let report = worker
        .run_until(tokio::time::sleep(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!((report.succeeded, report.dead_lettered), (1, 1));
    let reasons = dead_letter_reasons(&app, "celery").await;
    assert!(
        reasons[0].contains("panicked: a bug in a layer"),
        "{reasons:?}"
    );
}
