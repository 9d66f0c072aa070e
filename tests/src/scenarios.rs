//! Failure scenarios every real broker must survive, written once and run against each (with worker
//! processes of the `celeriac-test-worker` helper that the caller starts).

use std::time::Duration;

use celeriac::{App, SendOptions};
use tokio::process::Child;

use crate::harness::{
    BackgroundWorker, completed_runs, done_count, eventually, stop_gracefully, within,
};

/// Tasks of the SIGKILL scenario.
pub const SIGKILL_TASKS: u64 = 40;

/// A worker holding tasks is killed with SIGKILL; a second worker completes every task, none lost.
/// `broker_sees_unacked` says whether the broker reports other processes' unacked deliveries
/// (Redis does; RabbitMQ's AMQP interface does not), to check the victim really held tasks.
pub async fn sigkill_loses_no_task(
    app: &App,
    queue: &str,
    broker_sees_unacked: bool,
    spawn: impl Fn() -> Child,
) {
    for n in 0..SIGKILL_TASKS {
        app.send_task("record_run", &(n, 300u64), SendOptions::new())
            .await
            .expect("enqueue");
    }
    let mut doomed = spawn();
    eventually(
        Duration::from_secs(30),
        "the first worker to be busy",
        || async {
            let busy = !broker_sees_unacked
                || app
                    .broker()
                    .stats(queue)
                    .await
                    .is_ok_and(|s| s.unacked >= 4);
            busy && done_count(queue).await >= 4
        },
    )
    .await;
    doomed.kill().await.expect("SIGKILL"); // no graceful shutdown, no requeue
    if broker_sees_unacked {
        let held = app.broker().stats(queue).await.expect("stats").unacked;
        assert!(held > 0, "the killed worker should have held tasks");
    }
    assert!(
        done_count(queue).await < SIGKILL_TASKS,
        "the first worker finished everything before it was killed"
    );

    let mut survivor = spawn();
    eventually(
        Duration::from_secs(60),
        "every task to complete",
        || async { done_count(queue).await == SIGKILL_TASKS },
    )
    .await;
    // Graceful: the survivor settles everything it ran before exiting.
    let status = stop_gracefully(&mut survivor).await;
    assert!(status.success(), "{status}");
    assert_eq!(done_count(queue).await, SIGKILL_TASKS, "a task was lost");
    let stats = app.broker().stats(queue).await.expect("stats");
    assert_eq!((stats.ready, stats.delayed, stats.dead_lettered), (0, 0, 0));
}

/// Tasks of the long-task soak, and how many worker processes share them (each runs a third).
pub const LONG_TASKS: u64 = 12;
const LONG_TASK_WORKERS: usize = 3;

/// The long-task soak: tasks lasting ten visibility timeouts (`visibility_ms`), all running at once
/// on three worker processes that `spawn` starts, with room to spare (concurrency
/// [`LONG_TASKS`]` / 2` each), one of which is killed with SIGKILL mid-run. Every task completes,
/// and none completes twice: the killed worker's tasks run again on the spare room (their runs
/// there never completed); the others keep their leases for all ten timeouts — a lapsed one would
/// be taken over by that spare room and complete twice.
pub async fn long_tasks_run_once_under_kills(
    app: &App,
    queue: &str,
    visibility_ms: u64,
    spawn: impl Fn() -> Child,
) {
    for n in 0..LONG_TASKS {
        app.send_task("record_run", &(n, 10 * visibility_ms), SendOptions::new())
            .await
            .expect("enqueue");
    }
    let mut workers: Vec<Child> = (0..LONG_TASK_WORKERS).map(|_| spawn()).collect();
    eventually(
        Duration::from_secs(30),
        "every task to be running",
        || async {
            app.broker()
                .stats(queue)
                .await
                .is_ok_and(|stats| stats.ready == 0 && stats.unacked == LONG_TASKS)
        },
    )
    .await;
    workers[0].kill().await.expect("SIGKILL");
    assert_eq!(
        done_count(queue).await,
        0,
        "the tasks are ten visibility timeouts long: none can be done yet"
    );
    eventually(
        Duration::from_secs(30 * visibility_ms / 1000 + 60),
        "every task to complete",
        || async { done_count(queue).await == LONG_TASKS },
    )
    .await;
    for worker in &mut workers[1..] {
        let status = stop_gracefully(worker).await;
        assert!(status.success(), "{status}");
    }
    assert_eq!(
        completed_runs(queue).await,
        LONG_TASKS,
        "a task completed twice: a live worker's lease lapsed"
    );
    let stats = app.broker().stats(queue).await.expect("stats");
    assert_eq!((stats.ready, stats.unacked, stats.dead_lettered), (0, 0, 0));
}

/// A message that aborts every worker taking it is dead-lettered after `max_deliveries` (2, set by the
/// caller's `spawn`) instead of cycling forever, and the next worker survives.
pub async fn poison_message_is_dead_lettered(app: &App, queue: &str, spawn: impl Fn() -> Child) {
    app.send_task("crash_worker", &(), SendOptions::new())
        .await
        .expect("enqueue");
    for attempt in 1..=2 {
        let mut worker = spawn();
        let status = within(
            Duration::from_secs(30),
            "the poison task to kill its worker",
            worker.wait(),
        )
        .await
        .expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(6),
            "attempt {attempt}: the worker should have been aborted by its task, got {status}"
        );
    }
    let mut third = spawn();
    eventually(
        Duration::from_secs(30),
        "the poison message to be dead-lettered",
        || async {
            // Dead-lettering writes the copy, then removes the original: wait for both.
            app.broker()
                .stats(queue)
                .await
                .is_ok_and(|stats| stats.dead_lettered == 1 && stats.ready == 0)
        },
    )
    .await;
    assert!(
        third.try_wait().expect("try_wait").is_none(),
        "the third worker must survive"
    );
    // A graceful stop (SIGTERM) lets it finish settling what it holds.
    let status = stop_gracefully(&mut third).await;
    assert!(status.success(), "{status}");
    let dead = app
        .broker()
        .dead_letters(queue, 10)
        .await
        .expect("dead_letters");
    assert_eq!(
        dead[0].reason,
        "poison message: delivered 2 times without being acknowledged"
    );
    // Reading dead letters takes them and gives them back; a quorum queue counts a returned
    // message again a moment later.
    eventually(
        Duration::from_secs(10),
        "one dead letter and nothing ready after the worker stopped",
        || async {
            app.broker()
                .stats(queue)
                .await
                .is_ok_and(|stats| (stats.ready, stats.dead_lettered) == (0, 1))
        },
    )
    .await;
}

static COUNTED: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Counts its runs per queue, for [`worker_drains_sent_tasks`].
#[celeriac::task(name = "celeriac_tests_counted")]
pub async fn counted(ctx: celeriac::TaskContext, _n: u32) {
    *COUNTED
        .lock()
        .expect("lock")
        .entry(ctx.queue().to_owned())
        .or_default() += 1;
}

fn counted_on(queue: &str) -> usize {
    COUNTED
        .lock()
        .expect("lock")
        .get(queue)
        .copied()
        .unwrap_or(0)
}

/// The whole path through a broker: 500 tasks in one batch and one with a countdown, drained by a
/// worker; every task runs once and the queue ends empty.
pub async fn worker_drains_sent_tasks(builder: celeriac::AppBuilder, queue: &str) {
    let app = builder
        .default_queue(queue)
        .register::<counted>()
        .build()
        .expect("app");
    app.delay_batch::<counted>((0..500).map(|n| (n,)))
        .await
        .expect("delay_batch");
    counted::delay(&app, 7)
        .countdown(Duration::from_millis(300))
        .await
        .expect("a delayed send");
    let worker = app.worker().concurrency(8).build().expect("worker");
    let running = BackgroundWorker::start(worker);
    eventually(Duration::from_secs(30), "501 runs", || async {
        counted_on(queue) >= 501
    })
    .await;
    let report = running.stop().await;
    assert_eq!(report.succeeded, 501);
    assert_eq!(counted_on(queue), 501);
    assert_eq!(app.broker().len(queue).await.expect("len"), 0);
}

#[celeriac::task(name = "celeriac_tests_far_off")]
async fn far_off() {}

/// A task due in 1 000 years waits, whether sent with `delay` or written straight into the queue
/// (where a worker finds it early and puts it back): nothing runs, nothing is dead-lettered, and
/// both are counted as delayed until purged.
pub async fn far_future_eta_waits(builder: celeriac::AppBuilder, queue: &str) {
    let app = builder
        .default_queue(queue)
        .register::<far_off>()
        .build()
        .expect("app");
    let millennium = std::time::SystemTime::now() + Duration::from_secs(1_000 * 365 * 24 * 3600);
    far_off::delay(&app)
        .eta(millennium)
        .await
        .expect("a far-off ETA is accepted");
    let mut early = celeriac::Envelope::new(
        "celeriac_tests_far_off",
        queue,
        celeriac::CodecExt::encode(app.codec(), &()).expect("encode"),
        app.codec().content_type(),
    );
    early.eta = Some(millennium);
    app.broker()
        .publish(celeriac::broker::Outgoing::new(
            queue,
            early.to_bytes().expect("encode"),
        ))
        .await
        .expect("publish");
    let worker = app.worker().concurrency(1).build().expect("worker");
    let running = BackgroundWorker::start(worker);
    eventually(
        Duration::from_secs(20),
        "both tasks to wait as delayed",
        || async {
            let stats = app.broker().stats(queue).await.expect("stats");
            stats.ready == 0 && stats.delayed == 2
        },
    )
    .await;
    let report = running.stop().await;
    assert_eq!((report.succeeded, report.dead_lettered), (0, 0));
    assert_eq!(
        app.broker()
            .stats(queue)
            .await
            .expect("stats")
            .dead_lettered,
        0
    );
    assert_eq!(app.broker().purge(queue).await.expect("purge"), 2);
}
