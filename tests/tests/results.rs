//! Task results end to end: every outcome reaches its caller through each result backend — in
//! memory, and Redis (127.0.0.1:6379 or `CELERIAC_REDIS_URL`) with the Redis and RabbitMQ brokers.

use std::sync::Arc;
use std::time::Duration;

use celeriac::redis::RedisResultBackend;
use celeriac::result::{MemoryResultBackend, ResultBackend};
use celeriac::{App, AppBuilder, MemoryBroker};
use celeriac_tests::harness::{
    BackgroundWorker, amqp_url, redis_connection, redis_url, skipped, unique_queue,
};
use celeriac_tests::raw_amqp;
use celeriac_tests::results::{self, PATIENCE};

fn memory(name: &str) -> impl Fn() -> AppBuilder {
    let url = format!("memory://{name}");
    move || App::builder().broker_url(&url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_every_outcome_reaches_its_caller() {
    results::every_outcome_reaches_its_caller(memory(&unique_queue("results")), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_many_callers_wait_at_once() {
    let app = results::with_tasks(App::builder().broker(MemoryBroker::new()))
        .build()
        .unwrap();
    results::many_callers_wait_at_once(&app, 1_000).await;
}

#[tokio::test]
async fn memory_backend_keeps_the_rules() {
    results::backend_keeps_the_rules(Arc::new(MemoryResultBackend::new())).await;
}

#[tokio::test]
async fn apps_on_one_embedded_broker_share_its_results() {
    let broker = MemoryBroker::new();
    let web = App::builder().broker(broker.clone()).build().unwrap();
    let worker = App::builder().broker(broker).build().unwrap();
    let (web, worker) = (
        web.result_backend().unwrap(),
        worker.result_backend().unwrap(),
    );
    let stored = celeriac::StoredResult::new(celeriac::ResultState::Success, b"x".to_vec());
    worker
        .store("shared", stored.clone(), PATIENCE)
        .await
        .unwrap();
    assert_eq!(web.fetch("shared").await.unwrap(), Some(stored));
}

#[tokio::test]
async fn an_app_on_another_broker_has_no_backend_unless_given_one() {
    let app = App::builder()
        .broker_url("redis://127.0.0.1:1/0")
        .build()
        .unwrap();
    assert!(app.result_backend().is_none());
    let result = celeriac::AsyncResult::<i64>::from_id(&app, celeriac::TaskId::new());
    let error = result.get().await.unwrap_err();
    assert!(error.to_string().contains("result_backend_url"), "{error}");
}

/// An app on `broker` keeping its results in Redis at `results` (for five minutes: tests leave no
/// day-long keys behind), sending to `queue`.
fn with_redis_results(broker: &str, results: &str, queue: &str) -> AppBuilder {
    App::builder()
        .broker_url(broker)
        .result_backend_url(results)
        .result_expires(Duration::from_secs(300))
        .default_queue(queue)
}

fn redis_results_url() -> Option<String> {
    (!skipped("redis")).then(redis_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_and_backend_every_outcome_reaches_its_caller() {
    let Some(url) = redis_results_url() else {
        return;
    };
    let queue = unique_queue("results");
    results::every_outcome_reaches_its_caller(|| with_redis_results(&url, &url, &queue), true)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_broker_and_redis_backend_every_outcome_reaches_its_caller() {
    let Some(url) = redis_results_url() else {
        return;
    };
    if skipped("amqp") {
        return;
    }
    let queue = unique_queue("results");
    let broker = amqp_url();
    results::every_outcome_reaches_its_caller(|| with_redis_results(&broker, &url, &queue), true)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_many_callers_wait_at_once_on_one_connection() {
    let Some(url) = redis_results_url() else {
        return;
    };
    let app = results::with_tasks(with_redis_results(&url, &url, &unique_queue("results")))
        .build()
        .unwrap();
    results::many_callers_wait_at_once(&app, 1_000).await;
}

/// The Redis result backend with its keys under `prefix`; `None` only when Redis tests are skipped.
async fn redis_backend_under(prefix: &str) -> Option<RedisResultBackend> {
    let url = redis_results_url()?;
    Some(
        RedisResultBackend::builder(&url)
            .key_prefix(prefix)
            .connect()
            .await
            .expect("Redis is required by this test: run scripts/test.sh, which starts it"),
    )
}

async fn redis_backend() -> Option<RedisResultBackend> {
    redis_backend_under("celeriac-test").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_keeps_the_rules() {
    let Some(backend) = redis_backend().await else {
        return;
    };
    results::backend_keeps_the_rules(Arc::new(backend)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_results_expire_with_their_ttl() {
    let Some(backend) = redis_backend().await else {
        return;
    };
    let id = uuid::Uuid::new_v4().to_string();
    let stored = celeriac::StoredResult::new(celeriac::ResultState::Success, b"x".to_vec());
    backend
        .store(&id, stored, Duration::from_secs(90))
        .await
        .unwrap();
    let mut conn = redis_connection().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("celeriac-test:result:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((80_000..=90_000).contains(&ttl), "PTTL {ttl}");
}

/// A waiter whose pub/sub connection is killed still gets the result stored afterwards: the
/// backend reconnects, subscribes again and re-reads the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_survives_its_pubsub_connection_being_killed() {
    let prefix = unique_queue("celeriac-test-kill");
    let Some(backend) = redis_backend_under(&prefix).await else {
        return;
    };
    let id = uuid::Uuid::new_v4().to_string();
    let waiter = {
        let (backend, id) = (backend.clone(), id.clone());
        tokio::spawn(async move { backend.wait_ready(&id).await })
    };
    let mut conn = redis_connection().await;
    // Wait until the subscription exists, then kill every pub/sub connection.
    let channel = format!("{prefix}:results");
    celeriac_tests::harness::eventually(PATIENCE, "the waiter to subscribe", || {
        let (mut conn, channel) = (conn.clone(), channel.clone());
        async move {
            let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            counts.first().is_some_and(|(_, n)| *n > 0)
        }
    })
    .await;
    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored = celeriac::StoredResult::new(celeriac::ResultState::Success, b"after".to_vec());
    backend.store(&id, stored, PATIENCE).await.unwrap();
    let woken = celeriac_tests::harness::within(PATIENCE, "the waiter", waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(woken.body.as_ref(), b"after");
}

/// Another process waits on a task's result by id — before any worker ran it — and gets it the
/// moment the worker here stores it; a failure reaches it the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_waits_on_a_result_by_id() {
    let Some(url) = redis_results_url() else {
        return;
    };
    let app = results::with_tasks(with_redis_results(&url, &url, &unique_queue("results")))
        .build()
        .unwrap();
    let sum = results::add::delay(&app, 20, 22).await.unwrap();
    let failing = results::always_fails::delay(&app, 3).await.unwrap();
    let reader = |id: celeriac::TaskId| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_celeriac-test-result"))
            .args([url.clone(), id.to_string(), "20000".to_owned()])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
    };
    let (sum_read, failure_read) = (reader(sum.id()), reader(failing.id()));
    let readers = tokio::spawn(async move { (sum_read.await, failure_read.await) });
    // The readers are waiting (or about to): only now does a worker run the tasks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let worker = BackgroundWorker::start(app.worker().build().unwrap());
    let (sum_read, failure_read) =
        celeriac_tests::harness::within(PATIENCE * 2, "the readers", readers)
            .await
            .unwrap();
    worker.stop().await;
    let sum_read = String::from_utf8(sum_read.unwrap().stdout).unwrap();
    assert_eq!(sum_read.trim(), "ok 42");
    let failure_read = String::from_utf8(failure_read.unwrap().stdout).unwrap();
    assert!(
        failure_read.contains("failed after 2 retries")
            && failure_read.contains("gateway said no to 3"),
        "{failure_read}"
    );
}

/// A caller whose future started the Redis connection and is then left unpolled (a worker lane's
/// pending store while the lane runs its next task) must not hold up other callers: the connection
/// is made by a task of its own. (It once was made in the first caller's future, and a lane storing a
/// retry then waited forever for its own unpolled success store.)
///
/// One thread: the connecting task cannot finish before the first poll returns (on two, a busy
/// machine once let it, and the first fetch was ready at once).
#[tokio::test(flavor = "current_thread")]
async fn a_caller_left_unpolled_does_not_hold_up_the_connection() {
    let Some(url) = redis_results_url() else {
        return;
    };
    let app = App::builder()
        .broker_url("memory://")
        .result_backend_url(&url)
        .build()
        .unwrap();
    let backend = app.result_backend().unwrap().clone();
    let mut first = Box::pin(backend.fetch("celeriac-test-first"));
    assert!(
        futures::poll!(first.as_mut()).is_pending(),
        "connecting takes a round trip"
    );
    let second = tokio::time::timeout(PATIENCE, backend.fetch("celeriac-test-second")).await;
    assert!(matches!(second, Ok(Ok(None))), "{second:?}");
    drop(first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_rpc_every_outcome_reaches_its_caller() {
    let queue = unique_queue("results-rpc");
    let Some(builder) = celeriac_tests::harness::rpc_app(&queue) else {
        return;
    };
    drop(builder);
    let make = || celeriac_tests::harness::rpc_app(&queue).expect("not skipped");
    results::every_outcome_reaches_its_caller(make, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_rpc_many_callers_wait_at_once() {
    let Some(builder) = celeriac_tests::harness::rpc_app(&unique_queue("results-rpc")) else {
        return;
    };
    let app = results::with_tasks(builder).build().unwrap();
    results::many_callers_wait_at_once(&app, 1_000).await;
}

#[tokio::test]
async fn rpc_needs_an_amqp_broker_url() {
    let error = App::builder()
        .broker_url("memory://")
        .result_backend_url("rpc://")
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("rpc://"), "{error}");
    let shown = celeriac::error::Report(&error).to_string();
    assert!(shown.contains("amqp://"), "{shown}");
}

/// Junk on the reply queue (no task id, a body celeriac did not write, a header table nested
/// thousands deep) is dropped, and the reply consumer keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_rpc_replies_survive_junk_on_the_reply_queue() {
    let Some(builder) = celeriac_tests::harness::rpc_app(&unique_queue("results-rpc")) else {
        return;
    };
    let app = results::with_tasks(builder).build().unwrap();
    let worker = BackgroundWorker::start(app.worker().build().unwrap());
    // The first send declares the reply queue.
    let first = results::add::delay(&app, 1, 1).await.unwrap();
    assert_eq!(first.get_timeout(PATIENCE).await.unwrap(), 2);
    let reply_queue = app.result_backend().unwrap().reply_to().unwrap();
    let address = amqp_url()
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let no_headers = 0u32.to_be_bytes();
    raw_amqp::publish(&address, &reply_queue, &no_headers, b"no task id").await;
    let mut with_id = Vec::new();
    let name = b"x-celeriac-task-id";
    with_id.push(name.len() as u8);
    with_id.extend_from_slice(name);
    with_id.push(b'S');
    with_id.extend_from_slice(&(3u32).to_be_bytes());
    with_id.extend_from_slice(b"abc");
    let mut table = (with_id.len() as u32).to_be_bytes().to_vec();
    table.extend(with_id);
    raw_amqp::publish(&address, &reply_queue, &table, b"\xffnot a record").await;
    raw_amqp::publish(
        &address,
        &reply_queue,
        &raw_amqp::nested_table(5_000),
        b"deep",
    )
    .await;
    let after = results::add::delay(&app, 20, 22).await.unwrap();
    assert_eq!(after.get_timeout(PATIENCE).await.unwrap(), 42);
    worker.stop().await;
}
