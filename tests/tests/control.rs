//! Remote control on every broker (embedded, and the real Redis and RabbitMQ): `ping`, `stats`,
//! `active` on the right worker, `reserved` in run order, `registered`, `active-queues`; a revoke that stops a running task
//! and records it revoked; a revoke of a queued task, remembered for a worker that starts later,
//! which drops it; a rate-limit change; a command celeriac cannot read; a shutdown.
//!
//! Other tests' workers listen on the same servers, so every command here names its workers.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use celeriac::control::Control;
use celeriac::events::CONTROL_TOPIC;
use celeriac::{App, AppBuilder, RateLimit, ResultError, ResultState};
use celeriac_tests::harness::{
    BackgroundWorker, amqp_url, eventually, redis_url, skipped, unique_queue, within,
};

/// Tags of the `ctl_mark` runs, with their test's queue.
static MARKED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn marked() -> Vec<String> {
    MARKED.lock().map(|marks| marks.clone()).unwrap_or_default()
}

#[celeriac::task(name = "ctl_sleep")]
async fn sleep_for(millis: u64) -> Result<u64, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(millis)
}

#[celeriac::task(name = "ctl_mark")]
async fn mark(tag: String) -> Result<String, std::io::Error> {
    if let Ok(mut marks) = MARKED.lock() {
        marks.push(tag.clone());
    }
    Ok(tag)
}

fn worker(app: &App, name: &str, queue: &str) -> BackgroundWorker {
    worker_with(app, name, queue, 2)
}

fn worker_with(app: &App, name: &str, queue: &str, concurrency: usize) -> BackgroundWorker {
    let worker = app
        .worker()
        .hostname(name)
        .queues([queue])
        .concurrency(concurrency)
        .queue_depth_interval(None)
        .build()
        .expect("the worker builds");
    BackgroundWorker::start(worker)
}

/// Waits until every worker in `control`'s destination answers a ping (they subscribe as they
/// start).
async fn until_listening(control: &Control, count: usize) {
    eventually(
        Duration::from_secs(20),
        "the workers to answer a ping",
        || async { control.ping().await.is_ok_and(|pongs| pongs.len() == count) },
    )
    .await;
}

async fn scenario(builder: AppBuilder, queue: &str) {
    let app = builder
        .default_queue(queue)
        .register::<sleep_for>()
        .register::<mark>()
        .build()
        .expect("the app builds");
    let (queue_a, queue_b, queue_c) = (
        format!("{queue}-a"),
        format!("{queue}-b"),
        format!("{queue}-c"),
    );
    let (name_a, name_b, name_c) = (
        format!("{queue}@a"),
        format!("{queue}@b"),
        format!("{queue}@c"),
    );
    let worker_a = worker(&app, &name_a, &queue_a);
    let worker_b = worker(&app, &name_b, &queue_b);
    let both = app
        .control()
        .destination([&name_a, &name_b])
        .timeout(Duration::from_secs(10));
    until_listening(&both, 2).await;

    // A long task on A's queue shows in A's `active`, not B's.
    let long = app
        .delay::<sleep_for>((600_000,))
        .queue(&queue_a)
        .await
        .expect("sent");
    eventually(
        Duration::from_secs(20),
        "A to run the long task",
        || async {
            let active = both.active().await.unwrap_or_default();
            active.iter().any(|reply| {
                reply.hostname == name_a && reply.value.iter().any(|task| task.id == long.id())
            }) && active
                .iter()
                .any(|reply| reply.hostname == name_b && reply.value.is_empty())
        },
    )
    .await;
    let stats = both.stats().await.expect("stats");
    let stats_a = stats
        .iter()
        .find(|reply| reply.hostname == name_a)
        .expect("A answers stats");
    assert_eq!(stats_a.value.active, 1);
    assert_eq!(stats_a.value.queues, std::slice::from_ref(&queue_a));
    assert_eq!(stats_a.value.concurrency, 2);
    assert!(!stats_a.value.broker.contains("guest:guest"), "no password");
    let registered = both.registered().await.expect("registered");
    assert_eq!(registered.len(), 2);
    assert!(
        registered
            .iter()
            .all(|reply| reply.value.contains(&"ctl_sleep".to_owned()))
    );
    let queues = both.active_queues().await.expect("active queues");
    let queues_b = queues.iter().find(|reply| reply.hostname == name_b);
    assert_eq!(
        queues_b.map(|reply| reply.value.clone()),
        Some(vec![queue_b.clone()])
    );

    // Revoke with terminate: A stops it, and its result says revoked.
    let revoke = both.revoke([long.id()], true).await.expect("revoke");
    let terminated: Vec<_> = revoke
        .replies
        .iter()
        .flat_map(|reply| reply.value.terminated.clone())
        .collect();
    assert_eq!(terminated, [long.id()]);
    match long.get_timeout(Duration::from_secs(20)).await {
        Err(ResultError::Revoked { id, .. }) => assert_eq!(id, long.id()),
        other => panic!("the terminated task's result: {other:?}"),
    }

    // A queued task revoked before any worker of its queue runs: C, started later, drops it.
    let doomed = app
        .delay::<mark>((format!("{queue}:doomed"),))
        .queue(&queue_c)
        .await
        .expect("sent");
    let revoke = both.revoke([doomed.id()], false).await.expect("revoke");
    assert!(revoke.remembered, "the app has a coordination store");
    assert!(
        revoke
            .replies
            .iter()
            .all(|reply| reply.value.remembered >= 1)
    );
    // `inspect revoked`: each worker that heard it lists the id.
    let listed = both.revoked().await.expect("revoked ids");
    assert_eq!(listed.len(), 2, "both workers answer");
    assert!(
        listed
            .iter()
            .all(|reply| reply.value.contains(&doomed.id())),
        "each lists the revoked id"
    );
    let worker_c = worker(&app, &name_c, &queue_c);
    app.delay::<mark>((format!("{queue}:after"),))
        .queue(&queue_c)
        .await
        .expect("sent");
    eventually(
        Duration::from_secs(20),
        "C to run the task after",
        || async { marked().contains(&format!("{queue}:after")) },
    )
    .await;
    assert!(
        !marked().contains(&format!("{queue}:doomed")),
        "a revoked task ran"
    );
    assert_eq!(
        doomed.state().await.expect("its state"),
        ResultState::Revoked
    );
    assert_eq!(worker_c.stop().await.revoked, 1);

    // Rate limits change per worker; bad ones are refused with a reason.
    let limit: RateLimit = "10/s".parse().expect("a rate");
    let set = both
        .rate_limit("ctl_mark", Some(limit))
        .await
        .expect("rate limit");
    assert_eq!(set.len(), 2);
    assert!(
        set.iter()
            .all(|reply| reply.value == Ok(Some("10/s".to_owned())))
    );
    // The new limit holds: five runs at 2/s take at least 1.5 s (slots 0.5 s apart).
    let slow: RateLimit = "2/s".parse().expect("a rate");
    let only_b = app
        .control()
        .destination([&name_b])
        .timeout(Duration::from_secs(10));
    only_b
        .rate_limit("ctl_mark", Some(slow))
        .await
        .expect("rate limit");
    let started = std::time::Instant::now();
    for index in 0..5 {
        app.delay::<mark>((format!("{queue}:slow-{index}"),))
            .queue(&queue_b)
            .await
            .expect("sent");
    }
    eventually(
        Duration::from_secs(30),
        "five rate-limited runs",
        || async {
            let marks = marked();
            (0..5).all(|index| marks.contains(&format!("{queue}:slow-{index}")))
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "five runs at 2/s took {:?}",
        started.elapsed()
    );
    let refused = both
        .rate_limit("no_such_task", None)
        .await
        .expect("rate limit");
    assert!(
        refused.iter().all(|reply| reply
            .value
            .as_ref()
            .is_err_and(|why| why.contains("unknown task"))),
        "{refused:?}"
    );

    reserved_lists_the_deliveries_waiting_for_a_lane(&app, queue).await;

    // A command celeriac cannot read is skipped; the workers still answer.
    let bus = app
        .broker()
        .event_bus()
        .await
        .expect("the bus")
        .expect("a bus");
    bus.publish(CONTROL_TOPIC, vec![Bytes::from_static(b"{\"command\": 42")])
        .await
        .expect("published");
    assert_eq!(both.ping().await.expect("ping").len(), 2);

    // Shutdown: A stops by itself (its own stop signal is never sent).
    let only_a = app
        .control()
        .destination([&name_a])
        .timeout(Duration::from_secs(10));
    let replies = only_a.shutdown().await.expect("shutdown");
    assert_eq!(replies.len(), 1);
    let report_a = within(Duration::from_secs(30), "A to shut down", worker_a.join())
        .await
        .expect("A stopped cleanly");
    assert_eq!(report_a.revoked, 1);
    let report_b = worker_b.stop().await;
    assert_eq!(report_b.revoked, 0);
}

/// `reserved`: a worker with one lane, busy, lists what it fetched and holds for that lane, in
/// the order it will run them; once the lane is free they run and the list empties.
async fn reserved_lists_the_deliveries_waiting_for_a_lane(app: &App, queue: &str) {
    let (queue_d, name_d) = (format!("{queue}-d"), format!("{queue}@d"));
    let worker_d = worker_with(app, &name_d, &queue_d, 1);
    let only_d = app
        .control()
        .destination([&name_d])
        .timeout(Duration::from_secs(10));
    until_listening(&only_d, 1).await;
    let long = app
        .delay::<sleep_for>((600_000,))
        .queue(&queue_d)
        .await
        .expect("sent");
    let mut waiting = Vec::new();
    for index in 0..3 {
        let sent = app
            .delay::<mark>((format!("{queue}:waiting-{index}"),))
            .queue(&queue_d)
            .await
            .expect("sent");
        waiting.push(sent.id());
    }
    // One lane: one delivery in its channel and one the fetch loop holds; the third waits in
    // the broker client's prefetch buffer, unlisted.
    eventually(
        Duration::from_secs(20),
        "D to list the two deliveries it holds, in order",
        || async {
            let reserved = only_d.reserved().await.unwrap_or_default();
            let listed: Vec<_> = reserved
                .iter()
                .flat_map(|reply| reply.value.iter().map(|task| task.id))
                .collect();
            listed == waiting[..2]
        },
    )
    .await;
    let reserved = only_d.reserved().await.expect("reserved");
    let first = &reserved[0].value[0];
    assert_eq!(
        (first.name.as_str(), first.queue.as_str(), first.retries),
        ("ctl_mark", queue_d.as_str(), 0)
    );
    let active = only_d.active().await.expect("active");
    assert!(
        active[0].value.iter().any(|task| task.id == long.id()),
        "the long task runs, not listed as reserved"
    );
    only_d.revoke([long.id()], true).await.expect("revoke");
    eventually(
        Duration::from_secs(20),
        "D to run what waited, then hold nothing",
        || async {
            let marks = marked();
            (0..3).all(|index| marks.contains(&format!("{queue}:waiting-{index}")))
                && only_d.reserved().await.is_ok_and(|reserved| {
                    reserved.len() == 1 && reserved.iter().all(|reply| reply.value.is_empty())
                })
        },
    )
    .await;
    assert_eq!(worker_d.stop().await.succeeded, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_remote_control_inspects_revokes_and_shuts_down() {
    let queue = unique_queue("ctl-mem");
    scenario(
        App::builder().broker_url(format!("memory://{queue}")),
        &queue,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_remote_control_inspects_revokes_and_shuts_down() {
    if skipped("redis") {
        return;
    }
    let queue = unique_queue("ctl-redis");
    let builder = App::builder()
        .broker_url(redis_url())
        .result_backend_url(redis_url());
    scenario(builder, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_remote_control_inspects_revokes_and_shuts_down() {
    if skipped("amqp") {
        return;
    }
    let queue = unique_queue("ctl-amqp");
    let builder = App::builder()
        .broker_url(amqp_url())
        .result_backend_url(redis_url())
        .coordination_url(redis_url());
    scenario(builder, &queue).await;
}

/// Without a coordination store a revoke is not remembered, but the workers listening drop it.
/// The worker's one lane is busy with a long task while the doomed one waits behind it, so the
/// revoke is in before the doomed task is looked at, however slow the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_without_a_store_revokes_for_the_workers_listening() {
    if skipped("amqp") {
        return;
    }
    let queue = unique_queue("ctl-amqp-bare");
    let app = App::builder()
        .broker_url(amqp_url())
        .default_queue(&queue)
        .register::<sleep_for>()
        .register::<mark>()
        .build()
        .expect("the app builds");
    let name = format!("{queue}@w");
    let control = app
        .control()
        .destination([&name])
        .timeout(Duration::from_secs(10));
    let running = worker_with(&app, &name, &queue, 1);
    until_listening(&control, 1).await;
    let long = app.delay::<sleep_for>((600_000,)).await.expect("sent");
    eventually(Duration::from_secs(20), "the long task to run", || async {
        let active = control.active().await.unwrap_or_default();
        active
            .iter()
            .any(|reply| reply.value.iter().any(|task| task.id == long.id()))
    })
    .await;
    let doomed = app
        .delay::<mark>((format!("{queue}:doomed"),))
        .await
        .expect("sent");
    let revoke = control.revoke([doomed.id()], false).await.expect("revoke");
    assert!(!revoke.remembered);
    assert_eq!(revoke.replies.len(), 1);
    let stop = control.revoke([long.id()], true).await.expect("revoke");
    assert_eq!(stop.replies[0].value.terminated, [long.id()]);
    app.delay::<mark>((format!("{queue}:after"),))
        .await
        .expect("sent");
    eventually(Duration::from_secs(30), "the task after to run", || async {
        marked().contains(&format!("{queue}:after"))
    })
    .await;
    assert!(
        !marked().contains(&format!("{queue}:doomed")),
        "a revoked task ran"
    );
    assert_eq!(running.stop().await.revoked, 2);
}
