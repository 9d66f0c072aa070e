//! Cluster-wide rate limits on every coordination store: in memory, in Redis shared by several
//! workers, and with RabbitMQ through a Redis store (127.0.0.1, or `CELERIAC_REDIS_URL` /
//! `CELERIAC_AMQP_URL`). Each test keeps its budgets under a key prefix of its own.

use std::time::Duration;

use celeriac::redis::RedisCoordination;
use celeriac::{App, AppBuilder, BuildError, SendOptions};
use celeriac_tests::harness::{
    amqp_url, eventually, redis_connection, redis_url, require_redis, skipped, unique_queue,
    worker_process,
};
use celeriac_tests::rate_limits;

fn memory(queue: &str) -> AppBuilder {
    App::builder()
        .broker_url(format!("memory://{queue}"))
        .default_queue(queue)
}

/// A Redis store under a prefix of its own: budgets outlive a test run.
async fn store(prefix: &str) -> RedisCoordination {
    RedisCoordination::builder(&redis_url())
        .key_prefix(prefix)
        .connect()
        .await
        .expect("Redis is required by this test: run scripts/test.sh, which starts it")
}

/// An app on `broker` sending to `queue`, its budgets in Redis under a prefix of this test's own.
async fn with_redis_store(broker: String, queue: &str) -> AppBuilder {
    App::builder()
        .broker_url(broker)
        .coordination(store(&unique_queue("celeriac-test-rl")).await)
        .default_queue(queue)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_workers_share_one_budget() {
    let queue = unique_queue("rl");
    rate_limits::workers_share_one_budget(|| memory(&queue), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_workers_share_one_budget() {
    if skipped("redis") {
        return;
    }
    let queue = unique_queue("rl");
    let prefix = unique_queue("celeriac-test-rl");
    let claims = store(&prefix).await;
    rate_limits::workers_share_one_budget(
        || {
            App::builder()
                .broker_url(redis_url())
                .coordination(claims.clone())
                .default_queue(&queue)
        },
        4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_keys_have_their_own_budgets() {
    let queue = unique_queue("rl");
    rate_limits::keys_have_their_own_budgets(memory(&queue), &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_have_their_own_budgets() {
    if skipped("redis") {
        return;
    }
    let queue = unique_queue("rl");
    let builder = with_redis_store(redis_url(), &queue).await;
    rate_limits::keys_have_their_own_budgets(builder, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_keys_have_their_own_budgets() {
    if skipped("redis") || skipped("amqp") {
        return;
    }
    let queue = unique_queue("rl");
    let builder = with_redis_store(amqp_url(), &queue).await;
    rate_limits::keys_have_their_own_budgets(builder, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limited_tasks_never_hold_a_lane() {
    let queue = unique_queue("rl");
    rate_limits::limited_tasks_never_hold_a_lane(memory(&queue), &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_limited_tasks_never_hold_a_lane() {
    if skipped("redis") {
        return;
    }
    let queue = unique_queue("rl");
    let builder = with_redis_store(redis_url(), &queue).await;
    rate_limits::limited_tasks_never_hold_a_lane(builder, &queue).await;
}

#[test]
fn a_cluster_limit_without_a_store_is_refused_at_build_time() {
    let error = App::builder()
        .broker_url("amqp://guest:guest@127.0.0.1:5672/%2f")
        .register::<rate_limits::cluster_limited>()
        .build()
        .expect_err("no coordination store");
    assert!(matches!(
        error,
        BuildError::NoCoordinationStore {
            task: "rl_cluster",
            ..
        }
    ));
}

/// The shape: four worker processes share "50/s": 1 000 runs take 20 s (999 intervals of
/// 20 ms), 1 000 ± 5 % of them in the first 20 seconds; the slots handed out are 20 ms apart and no
/// run starts before its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_share_fifty_a_second() {
    let Some(broker) = require_redis(|builder| builder).await else {
        return;
    };
    let queue = unique_queue("rl-processes");
    let app = App::builder()
        .broker(broker)
        .default_queue(&queue)
        .build()
        .expect("the app builds");
    const RUNS: u64 = 1_000;
    for n in 0..RUNS {
        // The task lives in the worker binary: sent by name, as another service would.
        app.send_task("rl_process", &(queue.clone(), n), SendOptions::new())
            .await
            .expect("sent");
    }
    let bin = env!("CARGO_BIN_EXE_celeriac-test-worker");
    let mut workers: Vec<_> = (0..4)
        .map(|_| worker_process(bin, &redis_url(), &queue, 2_000, 5, 8))
        .collect();
    let list = format!("celeriac-test-rl:{queue}");
    let mut redis = redis_connection().await;
    eventually(Duration::from_secs(90), "1 000 limited runs", || {
        let (mut redis, list) = (redis.clone(), list.clone());
        async move {
            let len: u64 = redis::cmd("LLEN")
                .arg(&list)
                .query_async(&mut redis)
                .await
                .unwrap_or(0);
            len >= RUNS
        }
    })
    .await;
    for worker in &mut workers {
        let _ = worker.kill().await;
    }
    let recorded: Vec<String> = redis::cmd("LRANGE")
        .arg(&list)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("LRANGE");
    let _: () = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    let _ = app.broker().purge(&queue).await;
    // Each record is `<ran> <slot>` in µs since the epoch; slot 0 for a run admitted at once.
    let runs: Vec<(u64, u64)> = recorded
        .iter()
        .map(|record| {
            let (ran, slot) = record.split_once(' ').expect("`<ran> <slot>`");
            (
                ran.parse().expect("a run time"),
                slot.parse().expect("a slot time"),
            )
        })
        .collect();
    assert_eq!(runs.len() as u64, RUNS, "each task ran once");
    let mut micros: Vec<u64> = runs.iter().map(|(ran, _)| *ran).collect();
    micros.sort_unstable();
    // The measure: the runs of the first 20 seconds are 1 000 ± 5 %.
    let first_20_seconds = micros
        .iter()
        .take_while(|time| **time - micros[0] < 20_000_000)
        .count();
    assert!(
        (950..=1_050).contains(&first_20_seconds),
        "{first_20_seconds} runs in the first 20 s, not 1 000 ± 5 %"
    );
    let spread = Duration::from_micros(micros[micros.len() - 1] - micros[0]);
    assert!(
        spread >= Duration::from_millis(20 * (RUNS - 1) * 95 / 100),
        "1 000 runs took {spread:?}: faster than 50/s across the processes"
    );
    // The shared budget itself, whatever the machine's load: the slots handed out across the four
    // processes are 20 ms apart, so no second of slots holds more than 50 — give or take a few
    // where a worker, descheduled between Redis's answer and its clock read, dated a slot late. A
    // budget kept per process (200 a second) or handed out twice (100) is far above.
    let held: Vec<(u64, u64)> = runs.into_iter().filter(|(_, slot)| *slot != 0).collect();
    let mut slots: Vec<u64> = held.iter().map(|(_, slot)| *slot).collect();
    slots.sort_unstable();
    assert!(
        slots.len() as u64 >= RUNS * 9 / 10,
        "only {} of 1 000 runs were sent back for a slot",
        slots.len()
    );
    let busiest_second = (0..slots.len())
        .map(|index| {
            slots[index..]
                .iter()
                .take_while(|slot| **slot - slots[index] < 1_000_000)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        busiest_second <= 60,
        "{busiest_second} slots within one second"
    );
    // A run never starts before its slot (within the timer's millisecond), and it comes back soon
    // after it: a task sent back waits behind the queue's backlog (here, at first, the 1 000 tasks
    // asking for their slots), then for the broker's next move of due countdowns (~100 ms).
    let latest = held
        .iter()
        .map(|(ran, slot)| ran.saturating_sub(*slot))
        .max()
        .unwrap_or(0);
    eprintln!(
        "{} runs held slots, at most {busiest_second} in a second; the latest started {} ms after its slot",
        slots.len(),
        latest / 1_000
    );
    for (ran, slot) in &held {
        assert!(
            *ran + 2_000 >= *slot,
            "a run started {} µs before its slot",
            slot - ran
        );
    }
    assert!(
        latest < 5_000_000,
        "a run started {} ms after its slot",
        latest / 1_000
    );
}
