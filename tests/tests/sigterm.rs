//! A worker stopped by SIGTERM finishes or requeues every task. In its own test binary because it
//! signals its own process (tokio's handler catches the signal once `Worker::run` listens for it).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use celeriac::broker::ConsumeOptions;
use celeriac::codec::DecodeLimits;
use celeriac::{App, Envelope, TaskContext, TaskId};
use celeriac_tests::harness::{eventually, within};
use futures::StreamExt;

static STARTED: AtomicUsize = AtomicUsize::new(0);
static FINISHED: Mutex<Vec<TaskId>> = Mutex::new(Vec::new());

#[celeriac::task(name = "sleeps_for")]
async fn sleeps_for(ctx: TaskContext, millis: u64) {
    STARTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    FINISHED.lock().unwrap().push(ctx.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_or_requeues_every_task() {
    let app = App::builder()
        .broker(celeriac::MemoryBroker::new())
        .register::<sleeps_for>()
        .build()
        .unwrap();
    let mut ids = Vec::new();
    // Three quick tasks and three that outlast the grace period run; four wait in the queue.
    for millis in [200, 200, 200, 60_000, 60_000, 60_000, 10, 10, 10, 10] {
        ids.push(sleeps_for::delay(&app, millis).await.unwrap());
    }
    let worker = app
        .worker()
        .concurrency(6)
        .grace_period(Duration::from_secs(2))
        .build()
        .unwrap();
    let running = tokio::spawn(worker.run());
    eventually(Duration::from_secs(10), "six tasks to start", || async {
        STARTED.load(Ordering::SeqCst) == 6
    })
    .await;

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let report = within(Duration::from_secs(20), "the worker to stop", running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((report.succeeded, report.requeued), (3, 3), "{report:?}");

    let finished: Vec<TaskId> = FINISHED.lock().unwrap().clone();
    let stats = app.broker().stats("celery").await.unwrap();
    assert_eq!((stats.ready, stats.unacked, stats.dead_lettered), (7, 0, 0));
    let mut stream = app
        .broker()
        .consume(
            &["celery".to_owned()],
            ConsumeOptions::default().prefetch(100),
        )
        .await
        .unwrap();
    let mut queued = Vec::new();
    for _ in 0..7 {
        let delivery = stream.next().await.unwrap().unwrap();
        queued.push(
            Envelope::from_bytes(delivery.payload(), &DecodeLimits::default())
                .unwrap()
                .id,
        );
        delivery.ack().await.unwrap();
    }
    let finished_set: HashSet<_> = finished.iter().copied().collect();
    let queued_set: HashSet<_> = queued.iter().copied().collect();
    assert!(
        finished_set.is_disjoint(&queued_set),
        "a task both ran and was requeued"
    );
    let all: HashSet<_> = finished_set.union(&queued_set).copied().collect();
    assert_eq!(
        all,
        ids.iter().map(|result| result.id()).collect::<HashSet<_>>(),
        "every task ran once or is back in its queue"
    );
    assert_eq!(finished.len() + queued.len(), 10);
}
