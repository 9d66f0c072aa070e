//! Workflows end to end on every broker and result backend pair that joins chords: in memory, Redis
//! broker and backend, RabbitMQ broker with the Redis backend (127.0.0.1, or `CELERIAC_REDIS_URL` /
//! `CELERIAC_AMQP_URL`); and the chord crash test: a worker SIGKILLed again and again while it runs
//! a chord of 2 000 members.

use std::time::Duration;

use celeriac::{App, AppBuilder};
use celeriac_tests::harness::{
    amqp_url, eventually, redis_connection, redis_url, rpc_app, skipped, stop_gracefully,
    unique_queue,
};
use celeriac_tests::workflows;

/// The chord size of the join tests.
const CHORD: i64 = 1_000;

fn memory(queue: &str) -> AppBuilder {
    App::builder()
        .broker_url(format!("memory://{queue}"))
        .default_queue(queue)
}

/// An app on `broker` with its results in Redis for five minutes (tests leave no day-long keys).
fn with_redis_results(broker: &str, queue: &str) -> AppBuilder {
    App::builder()
        .broker_url(broker)
        .result_backend_url(redis_url())
        .result_expires(Duration::from_secs(300))
        .default_queue(queue)
}

fn redis_broker() -> Option<String> {
    (!skipped("redis")).then(redis_url)
}

fn amqp_broker() -> Option<String> {
    (!skipped("redis") && !skipped("amqp")).then(amqp_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_chains_and_callbacks() {
    workflows::chains_and_callbacks(memory(&unique_queue("wf"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_groups_and_chords() {
    workflows::groups_and_chords(memory(&unique_queue("wf")), CHORD, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_failing_member_fails_the_chord() {
    let queue = unique_queue("wf");
    workflows::a_failing_member_fails_the_chord(memory(&queue), &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_chains_and_callbacks() {
    let Some(url) = redis_broker() else { return };
    workflows::chains_and_callbacks(with_redis_results(&url, &unique_queue("wf"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_groups_and_chords() {
    let Some(url) = redis_broker() else { return };
    workflows::groups_and_chords(with_redis_results(&url, &unique_queue("wf")), CHORD, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_failing_member_fails_the_chord() {
    let Some(url) = redis_broker() else { return };
    let queue = unique_queue("wf");
    workflows::a_failing_member_fails_the_chord(with_redis_results(&url, &queue), &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_chains_and_callbacks() {
    let Some(url) = amqp_broker() else { return };
    workflows::chains_and_callbacks(with_redis_results(&url, &unique_queue("wf"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_groups_and_chords() {
    let Some(url) = amqp_broker() else { return };
    workflows::groups_and_chords(with_redis_results(&url, &unique_queue("wf")), CHORD, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_failing_member_fails_the_chord() {
    let Some(url) = amqp_broker() else { return };
    let queue = unique_queue("wf");
    workflows::a_failing_member_fails_the_chord(with_redis_results(&url, &queue), &queue).await;
}

#[tokio::test]
async fn memory_backend_joins_chords() {
    let backend = celeriac::result::MemoryResultBackend::new();
    workflows::backend_joins_chords(std::sync::Arc::new(backend)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_joins_chords() {
    let Some(url) = redis_broker() else { return };
    let backend = celeriac::redis::RedisResultBackend::builder(&url)
        .key_prefix("celeriac-test")
        .connect()
        .await
        .expect("Redis is required by this test: run scripts/test.sh, which starts it");
    workflows::backend_joins_chords(std::sync::Arc::new(backend)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_rpc_chains_and_callbacks() {
    let Some(builder) = rpc_app(&unique_queue("wf-rpc")) else {
        return;
    };
    workflows::chains_and_callbacks(builder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_rpc_groups_and_no_chords() {
    let Some(builder) = rpc_app(&unique_queue("wf-rpc")) else {
        return;
    };
    workflows::groups_and_chords(builder, CHORD, false).await;
}

/// Members of the crash test's chord.
const CRASH_CHORD: i64 = 2_000;
/// How many times the crash test kills its worker.
const KILLS: u32 = 4;

/// A chord of 2 000 members whose worker is SIGKILLed at random moments, `KILLS` times, while it
/// runs them: the callback runs once, with all 2 000 outputs in order.
/// `builder` is on the broker the worker process reaches at `broker` (with its key prefix).
async fn a_chord_survives_its_worker_being_killed(broker: &str, builder: AppBuilder) {
    let queue = unique_queue("wf-crash");
    let app = workflows::with_crash_tasks(builder)
        .result_backend_url(redis_url())
        .result_expires(Duration::from_secs(300))
        .default_queue(&queue)
        .build()
        .expect("an app");
    let (result, member_runs, callback_runs) = workflows::send_crash_chord(&app, CRASH_CHORD).await;
    let mut conn = redis_connection().await;
    let counter = |key: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("GET")
                .arg(&key)
                .query_async::<Option<u64>>(&mut conn)
                .await
                .expect("GET")
                .unwrap_or(0)
        }
    };
    let spawn = || {
        celeriac_tests::harness::worker_process(
            env!("CARGO_BIN_EXE_celeriac-test-worker"),
            broker,
            &queue,
            1_000,
            100,
            8,
        )
    };
    let mut rng = fastrand::Rng::new();
    let mut threshold = 0;
    for _ in 0..KILLS {
        threshold += rng.u64(150..400);
        let mut doomed = spawn();
        eventually(Duration::from_secs(60), "members to run", || {
            let runs = counter(member_runs.clone());
            async move { runs.await >= threshold }
        })
        .await;
        doomed.kill().await.expect("SIGKILL");
    }
    assert_eq!(
        counter(callback_runs.clone()).await,
        0,
        "killed before the end"
    );
    let mut survivor = spawn();
    let expected: i64 = (0..CRASH_CHORD).sum();
    let total = result.get_timeout(Duration::from_secs(120)).await;
    let status = stop_gracefully(&mut survivor).await;
    assert!(status.success(), "{status}");
    assert_eq!(total.expect("the callback's output"), expected);
    assert_eq!(
        counter(callback_runs.clone()).await,
        1,
        "the callback ran once"
    );
    let runs = counter(member_runs.clone()).await;
    assert!(runs >= CRASH_CHORD as u64, "{runs} member runs");
    let _: () = redis::cmd("DEL")
        .arg(&member_runs)
        .arg(&callback_runs)
        .query_async(&mut conn)
        .await
        .expect("DEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_chord_survives_its_worker_being_killed() {
    let Some(broker) = celeriac_tests::harness::require_redis(|b| b).await else {
        return;
    };
    let builder = App::builder().broker(broker);
    a_chord_survives_its_worker_being_killed(&redis_url(), builder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_a_chord_survives_its_worker_being_killed() {
    let Some(url) = amqp_broker() else { return };
    a_chord_survives_its_worker_being_killed(&url, App::builder().broker_url(&url)).await;
}
