//! The Redis broker against a real Redis server (127.0.0.1:6379 or `CELERIAC_REDIS_URL`): the shared
//! contract suite, leases for long tasks, and connection handling. Crash, poison-message and outage
//! tests are in `redis_failures.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use celeriac::{App, Broker};
use celeriac_redis::RedisBroker;
use celeriac_tests::harness::{require_redis, unique_queue};
use celeriac_tests::scenarios;

async fn redis() -> Option<Arc<dyn Broker>> {
    Some(Arc::new(require_redis(|builder| builder).await?))
}

celeriac::broker_contract_tests!(redis);

static LONG_RUNS: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "outlasts_its_lease")]
async fn outlasts_its_lease() {
    LONG_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// A task running 3× the visibility timeout keeps its lease: with two workers on the queue it runs
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_longer_than_the_visibility_timeout_runs_once() {
    let Some(broker) = require_redis(|b| b.visibility_timeout(Duration::from_secs(1))).await else {
        return;
    };
    let queue = unique_queue("long_task");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .register::<outlasts_its_lease>()
        .build()
        .unwrap();
    outlasts_its_lease::delay(&app).await.unwrap();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let worker = app.worker().concurrency(2).build().unwrap();
        workers.push(tokio::spawn(
            worker.run_until(tokio::time::sleep(Duration::from_secs(6))),
        ));
    }
    let mut succeeded = 0;
    for worker in workers {
        succeeded += worker.await.unwrap().unwrap().succeeded;
    }
    assert_eq!(
        LONG_RUNS.load(Ordering::SeqCst),
        1,
        "the long task ran more than once"
    );
    assert_eq!(succeeded, 1);
    let stats = app.broker().stats(&queue).await.unwrap();
    assert_eq!((stats.ready, stats.unacked, stats.dead_lettered), (0, 0, 0));
}

#[tokio::test]
async fn unreachable_redis_is_a_connect_error_without_the_password() {
    let error = RedisBroker::builder("redis://:hunter2@127.0.0.1:1/0")
        .operation_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(error.is_transient(), "{text}");
    assert!(text.contains("redis://:***@127.0.0.1:1/0"), "{text}");
    assert!(text.contains("refused"), "the cause is named: {text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn invalid_urls_are_errors_without_the_password() {
    let error = RedisBroker::connect("http://:hunter2@127.0.0.1/")
        .await
        .unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn debug_output_hides_the_password() {
    let Some(broker) = require_redis(|b| b).await else {
        return;
    };
    let debug = format!("{broker:?}");
    assert!(debug.contains("RedisBroker"), "{debug}");
    let with_password = RedisBroker::builder("redis://:hunter2@127.0.0.1:6379/0");
    assert!(!format!("{with_password:?}").contains("hunter2"));
}

/// The whole path through Redis: batch publish, a countdown, a worker draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_drains_tasks_sent_through_redis() {
    let Some(broker) = require_redis(|b| b).await else {
        return;
    };
    let queue = unique_queue("drain");
    scenarios::worker_drains_sent_tasks(App::builder().broker(broker), &queue).await;
}

// ===== consumers in the stream's consumer group =====

#[celeriac::task(name = "celeriac_tests_nothing")]
async fn nothing() {}

/// The consumers registered in the group of `queue`'s stream (none before the group exists).
async fn group_consumers(queue: &str) -> Vec<String> {
    let mut conn = celeriac_tests::harness::redis_connection().await;
    // No group yet (NOGROUP) reads as no consumer.
    let consumers: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(format!("celeriac-test:{{{queue}}}:ready"))
        .arg("celeriac")
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    consumers
        .into_iter()
        .filter_map(|consumer| match consumer.get("name") {
            Some(redis::Value::BulkString(name)) => {
                Some(String::from_utf8_lossy(name).into_owned())
            }
            _ => None,
        })
        .collect()
}

/// Every worker used to leave its consumer in the group, even after a clean stop: 100 restarts, 101
/// entries. A clean stop now removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stopped_cleanly_leave_no_consumer_in_the_group() {
    let Some(broker) = require_redis(|b| b).await else {
        return;
    };
    let queue = unique_queue("retire");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .register::<nothing>()
        .build()
        .unwrap();
    for round in 1..=3 {
        nothing::delay(&app).await.unwrap();
        let worker = app.worker().concurrency(2).build().unwrap();
        let running = celeriac_tests::harness::BackgroundWorker::start(worker);
        celeriac_tests::harness::eventually(Duration::from_secs(20), "the task to run", || async {
            app.broker().len(&queue).await.unwrap() == 0
                && !group_consumers(&queue).await.is_empty()
        })
        .await;
        let report = running.stop().await;
        assert_eq!(report.succeeded, 1);
        assert_eq!(
            group_consumers(&queue).await,
            Vec::<String>::new(),
            "round {round}"
        );
    }
}

/// A consumer that left without retiring (its worker was killed) and owns nothing is deleted by the
/// live consumers once it has been idle for ten visibility timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_left_behind_are_reaped() {
    let Some(broker) = require_redis(|b| b.visibility_timeout(Duration::from_millis(300))).await
    else {
        return;
    };
    let queue = unique_queue("reap");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .register::<nothing>()
        .build()
        .unwrap();
    nothing::delay(&app).await.unwrap(); // creates the stream and, with the worker, its group
    let worker = app.worker().concurrency(1).build().unwrap();
    let running = celeriac_tests::harness::BackgroundWorker::start(worker);
    celeriac_tests::harness::eventually(Duration::from_secs(20), "the group", || async {
        !group_consumers(&queue).await.is_empty()
    })
    .await;
    let mut conn = celeriac_tests::harness::redis_connection().await;
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(format!("celeriac-test:{{{queue}}}:ready"))
        .arg("celeriac")
        .arg("ghost")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(group_consumers(&queue).await.contains(&"ghost".to_owned()));
    celeriac_tests::harness::eventually(
        Duration::from_secs(30),
        "the ghost to be reaped",
        || async {
            let consumers = group_consumers(&queue).await;
            !consumers.contains(&"ghost".to_owned()) && consumers.len() == 1
        },
    )
    .await;
    running.stop().await;
    assert!(group_consumers(&queue).await.is_empty());
}

/// A task due in 1 000 years, sent or written straight into the stream, waits; it is not run early
/// or dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_due_in_a_thousand_years_waits() {
    let Some(broker) = require_redis(|b| b).await else {
        return;
    };
    scenarios::far_future_eta_waits(App::builder().broker(broker), &unique_queue("far-eta")).await;
}

/// A consumer of more queues than it has free prefetch slots asks each queue for one entry at
/// least; what comes beyond its slots is held and delivered as slots free up, at once — not left
/// pending until the visibility timeout (60 s here) lets it be taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_of_more_queues_than_slots_gets_every_message_promptly() {
    use celeriac::broker::{ConsumeOptions, Outgoing};
    use futures::StreamExt;
    let Some(broker) = require_redis(|b| b.visibility_timeout(Duration::from_secs(60))).await
    else {
        return;
    };
    let queues: Vec<String> = (0..20).map(|_| unique_queue("many")).collect();
    let messages = queues
        .iter()
        .flat_map(|queue| (0..5).map(move |n| Outgoing::new(queue.clone(), vec![n])))
        .collect();
    broker.publish_batch(messages).await.unwrap();
    let mut stream = broker
        .consume(&queues, ConsumeOptions::default().prefetch(4))
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(20), async {
        let mut received = 0;
        while received < 100 {
            let delivery = stream.next().await.expect("a delivery").expect("no error");
            delivery.ack().await.expect("acked");
            received += 1;
        }
        received
    })
    .await
    .expect("every message within 20 s, far less than the visibility timeout");
    assert_eq!(received, 100);
    drop(stream);
    for queue in &queues {
        let stats = broker.stats(queue).await.unwrap();
        assert_eq!((stats.ready, stats.unacked), (0, 0), "{queue}");
    }
}

static STOPPED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "counted_noop")]
async fn counted_noop(n: u32) {
    let _ = n;
    STOPPED_RUNS.fetch_add(1, Ordering::SeqCst);
}

/// A worker stopped mid-drain puts back what it had fetched and not run (its prefetch) before it
/// returns: nothing stays unacknowledged waiting for the visibility timeout (60 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_mid_drain_puts_its_prefetch_back() {
    let Some(broker) = require_redis(|b| b.visibility_timeout(Duration::from_secs(60))).await
    else {
        return;
    };
    let queue = unique_queue("stopped_mid_drain");
    let app = App::builder()
        .broker(broker)
        .default_queue(queue.clone())
        .register::<counted_noop>()
        .build()
        .unwrap();
    app.delay_batch::<counted_noop>((0..2_000).map(|n| (n,)))
        .await
        .unwrap();
    // Five stops in a row: a stop usually cuts a read short.
    let mut succeeded = 0;
    for round in 1..=5 {
        let worker = app.worker().concurrency(64).prefetch(256).build().unwrap();
        let report = worker
            .run_until(async {
                while STOPPED_RUNS.load(Ordering::SeqCst) < 100 * round {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .unwrap();
        succeeded += report.succeeded;
        let stats = app.broker().stats(&queue).await.unwrap();
        assert_eq!(stats.unacked, 0, "round {round}: {stats:?}");
        assert_eq!(stats.ready, 2_000 - succeeded, "round {round}: {stats:?}");
    }
}
