//! Worker events on every broker (embedded, and the real Redis and RabbitMQ): each task's story in
//! order, heartbeats, a clean stop; a worker killed with SIGKILL shown offline after three missed
//! heartbeats.

use std::time::Duration;

use celeriac::events::{Event, EventKind, Monitor};
use celeriac::{App, AppBuilder, TaskContext, TaskError, TaskId};
use celeriac_tests::harness::{amqp_url, redis_url, skipped, unique_queue};
use futures::StreamExt;

#[celeriac::task(name = "ev_ok")]
async fn ok() {}

#[celeriac::task(name = "ev_flaky", max_retries = 1)]
async fn flaky(ctx: TaskContext) -> Result<(), TaskError> {
    Err(ctx.retry_in(Duration::from_millis(50)))
}

/// Runs a worker with events on `app`'s broker — one task that succeeds, one that fails, retries
/// and fails for good — and checks what a subscriber saw.
async fn story(app: AppBuilder, queue: &str) {
    let app = app
        .default_queue(queue)
        .register::<ok>()
        .register::<flaky>()
        .build()
        .expect("the app builds");
    let mut events = Box::pin(
        celeriac::events::subscribe(&app)
            .await
            .expect("the broker carries events"),
    );
    let fine = ok::delay(&app).await.expect("sent").id();
    let failing = flaky::delay(&app).await.expect("sent").id();
    let worker = app
        .worker()
        .events(true)
        .hostname(format!("events-{queue}"))
        .heartbeat_interval(Duration::from_millis(200))
        .build()
        .expect("the worker builds");
    let report = worker
        .run_until(tokio::time::sleep(Duration::from_millis(1_500)))
        .await
        .expect("the worker ran");
    assert_eq!(
        (report.succeeded, report.retried, report.dead_lettered),
        (1, 1, 1)
    );
    assert_eq!(report.events_dropped, 0, "{report:?}");

    let mut seen: Vec<Event> = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            let event = event.expect("an event celeriac can read");
            let last = matches!(event.kind, EventKind::WorkerOffline { .. });
            if event.hostname == format!("events-{queue}") {
                seen.push(event);
            }
            if last {
                break;
            }
        }
    })
    .await;
    assert!(collected.is_ok(), "no worker-offline within 10 s: {seen:?}");
    let kinds: Vec<&str> = seen.iter().map(|event| event.kind.name()).collect();
    assert_eq!(kinds.first(), Some(&"worker-online"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"worker-offline"), "{kinds:?}");
    let heartbeats: Vec<u64> = seen
        .iter()
        .filter_map(|event| match event.kind {
            EventKind::WorkerHeartbeat { processed, .. } => Some(processed),
            _ => None,
        })
        .collect();
    assert!(
        heartbeats.len() >= 4,
        "heartbeats every 200 ms for 1.5 s: {kinds:?}"
    );
    assert_eq!(
        heartbeats.last(),
        Some(&3),
        "three runs processed by the last heartbeat"
    );
    let by_task = |id: TaskId| -> Vec<&str> {
        seen.iter()
            .filter(|event| match &event.kind {
                EventKind::TaskReceived { uuid, .. }
                | EventKind::TaskStarted { uuid, .. }
                | EventKind::TaskSucceeded { uuid, .. }
                | EventKind::TaskRetried { uuid, .. }
                | EventKind::TaskFailed { uuid, .. } => *uuid == id,
                EventKind::TaskDeadLettered { uuid, .. } => *uuid == Some(id),
                _ => false,
            })
            .map(|event| event.kind.name())
            .collect()
    };
    assert_eq!(
        by_task(fine),
        ["task-received", "task-started", "task-succeeded"]
    );
    assert_eq!(
        by_task(failing),
        [
            "task-received",
            "task-started",
            "task-retried",
            "task-received",
            "task-started",
            "task-failed",
            "task-dead-lettered"
        ]
    );
    // Every task-received names the queue the message came from.
    let received: Vec<&str> = seen
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::TaskReceived { queue, .. } => Some(queue.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(received, [queue; 3], "{kinds:?}");
    let times: Vec<f64> = seen.iter().map(|event| event.timestamp).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_events_tell_each_tasks_story() {
    let queue = unique_queue("events");
    story(
        App::builder().broker_url(format!("memory://{queue}")),
        &queue,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_events_tell_each_tasks_story() {
    if skipped("redis") {
        return;
    }
    let queue = unique_queue("events");
    story(App::builder().broker_url(redis_url()), &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_events_tell_each_tasks_story() {
    if skipped("amqp") {
        return;
    }
    let queue = unique_queue("events");
    story(App::builder().broker_url(amqp_url()), &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_offline_after_three_missed_heartbeats() {
    if skipped("redis") {
        return;
    }
    let queue = unique_queue("events");
    // The test worker's broker keeps its keys, and so its event channel, under `celeriac-test`.
    let broker = celeriac::redis::RedisBroker::builder(&redis_url())
        .key_prefix("celeriac-test")
        .connect()
        .await
        .expect("Redis is required by this test: run scripts/test.sh, which starts it");
    let app = App::builder()
        .broker(broker)
        .build()
        .expect("the app builds");
    let monitor = Monitor::start(&app).await.expect("Redis carries events");
    // `celeriac-test-worker` sends events with a 300 ms heartbeat when asked.
    let mut child = {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac-test-worker"));
        command
            .args([
                redis_url(),
                queue.clone(),
                "30000".into(),
                "5".into(),
                "2".into(),
            ])
            .env("CELERIAC_TEST_WORKER_EVENTS", "300")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command.spawn().expect("start celeriac-test-worker")
    };
    let pid = child.id().unwrap_or_default();
    let hostname = format!("celeriac-test-worker-{pid}");
    let worker = |monitor: &Monitor| {
        monitor
            .workers()
            .into_iter()
            .find(|worker| worker.hostname == hostname)
    };
    let status = |monitor: &Monitor| worker(monitor).map(|worker| worker.online);
    // Online, with a heartbeat heard (it carries the worker's memory).
    let mut online = false;
    for _ in 0..200 {
        if worker(&monitor).is_some_and(|worker| worker.online && worker.rss_bytes.unwrap_or(0) > 0)
        {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(online, "the worker came online: {:?}", monitor.workers());
    let killed = tokio::time::Instant::now();
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let mut offline_after = None;
    for _ in 0..200 {
        if status(&monitor) == Some(false) {
            offline_after = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let offline_after = offline_after.expect("shown offline within 4 s");
    // Three heartbeats of 300 ms, give or take one and the test's polling.
    assert!(
        offline_after >= Duration::from_millis(500)
            && offline_after <= Duration::from_millis(1_600),
        "offline {offline_after:?} after the kill"
    );
}

/// A producer built with `task_events` says what it sent; one without says nothing.
async fn sent_events(make: impl Fn() -> AppBuilder, queue: &str) {
    let app = make()
        .default_queue(queue)
        .task_events(true)
        .register::<ok>()
        .build()
        .expect("the app builds");
    let mut events = Box::pin(
        celeriac::events::subscribe(&app)
            .await
            .expect("the broker carries events"),
    );
    let now = ok::delay(&app).await.expect("sent").id();
    let later = ok::delay(&app)
        .countdown(Duration::from_secs(60))
        .await
        .expect("sent")
        .id();
    let batch = app.delay_batch::<ok>([(), ()]).await.expect("sent");
    let quiet = make()
        .default_queue(queue)
        .register::<ok>()
        .build()
        .expect("builds");
    ok::delay(&quiet).await.expect("sent");
    let mut sent = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(event) = events.next().await {
            sent.push(event.expect("an event celeriac can read"));
        }
    })
    .await;
    let ids: Vec<(TaskId, bool)> = sent
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::TaskSent {
                uuid,
                name,
                queue: sent_to,
                eta,
                ..
            } => {
                assert_eq!((name.as_str(), sent_to.as_str()), ("ev_ok", queue));
                Some((*uuid, eta.is_some()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        ids,
        [
            (now, false),
            (later, true),
            (batch[0], false),
            (batch[1], false)
        ],
        "one task-sent per task this app sent, none from the other: {sent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_producers_send_task_sent_events_when_asked() {
    let queue = unique_queue("events");
    sent_events(
        || App::builder().broker_url(format!("memory://{queue}")),
        &queue,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_producers_send_task_sent_events_when_asked() {
    if skipped("redis") {
        return;
    }
    let queue = unique_queue("events");
    sent_events(|| App::builder().broker_url(redis_url()), &queue).await;
}
