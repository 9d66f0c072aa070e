//! Cluster-wide rate limits on every coordination store: in memory, in Redis shared by several
//! workers, and with RabbitMQ through a Redis store (127.0.0.1, or `CELERIAC_REDIS_URL` /
//! `CELERIAC_AMQP_URL`). Each test keeps its budgets under a key prefix of its own.

use celeriac::redis::RedisCoordination;
use celeriac::{App, AppBuilder, BuildError};
use celeriac_tests::harness::{amqp_url, redis_url, skipped, unique_queue};
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
