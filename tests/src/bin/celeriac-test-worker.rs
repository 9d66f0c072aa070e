//! A worker process for the broker failure tests: they kill it with SIGKILL, or feed it a task that
//! aborts it, and check that no task is lost; the chord crash test's members and callback, and the
//! cross-process rate-limit test's task, run here too. Runs are recorded, and results kept, in Redis (`CELERIAC_REDIS_URL`).
//!
//! Usage: `celeriac-test-worker <broker-url> <queue> <visibility-ms> <max-deliveries> <concurrency>`
//! (with `CELERIAC_TEST_WORKER_EVENTS=<ms>`, it sends events with a heartbeat that often)
//! where the broker URL is `redis://…` or `amqp://…`, or `celery+redis://…` for Celery's format on
//! kombu's layout (the interop tests), where `ccp_send_sms_code` hangs, as with a gateway that
//! never answers.

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use celeriac::{App, Broker, TaskContext};
use celeriac_amqp::AmqpBroker;
use celeriac_redis::RedisBroker;
use redis::aio::MultiplexedConnection;

static RECORDER: OnceLock<MultiplexedConnection> = OnceLock::new();

/// Sleeps, then records `n` in the Redis set `celeriac-test-done:<queue>` and counts the run.
#[celeriac::task(name = "record_run")]
async fn record_run(ctx: TaskContext, n: u64, sleep_ms: u64) -> Result<(), redis::RedisError> {
    tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    let Some(conn) = RECORDER.get() else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "no recorder",
        )));
    };
    let mut conn = conn.clone();
    redis::pipe()
        .cmd("SADD")
        .arg(format!("celeriac-test-done:{}", ctx.queue()))
        .arg(n)
        .ignore()
        .cmd("INCR")
        .arg(format!("celeriac-test-runs:{}", ctx.queue()))
        .ignore()
        .query_async::<()>(&mut conn)
        .await
}

/// Limited to 50 runs a second per `run` across every worker process; records when it ran and the
/// slot it held, if it was sent back for one (µs since the epoch, `<ran> <slot>`, slot 0 for a run
/// admitted at once) in the Redis list `celeriac-test-rl:<run>`.
#[celeriac::task(name = "rl_process", rate_limit = "50/s", rate_limit_key = "run")]
async fn rl_process(ctx: TaskContext, run: String, n: u64) -> Result<(), redis::RedisError> {
    let _ = n;
    let Some(conn) = RECORDER.get() else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "no recorder",
        )));
    };
    let micros = |time: std::time::SystemTime| {
        time.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_micros())
    };
    let ran = micros(std::time::SystemTime::now());
    let slot = ctx.eta().map_or(0, micros);
    let mut conn = conn.clone();
    redis::cmd("RPUSH")
        .arg(format!("celeriac-test-rl:{run}"))
        .arg(format!("{ran} {slot}"))
        .query_async::<()>(&mut conn)
        .await
}

/// The shop's task with an SMS gateway that never answers (`celery+redis://` only).
#[celeriac::task(name = "ccp_send_sms_code")]
async fn ccp_send_sms_code_hanging(mobile: String, sms_code: String) {
    let _ = (mobile, sms_code);
    std::future::pending::<()>().await;
}

/// Kills the worker process that runs it, as a poison message would.
#[celeriac::task(name = "crash_worker")]
fn crash_worker() {
    std::process::abort();
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, queue, visibility_ms, max_deliveries, concurrency] = args.as_slice() else {
        eprintln!(
            "usage: celeriac-test-worker <redis-url> <queue> <visibility-ms> <max-deliveries> <concurrency>"
        );
        return ExitCode::from(2);
    };
    let (Ok(visibility_ms), Ok(max_deliveries), Ok(concurrency)) = (
        visibility_ms.parse::<u64>(),
        max_deliveries.parse::<u32>(),
        concurrency.parse::<usize>(),
    ) else {
        eprintln!("visibility-ms, max-deliveries and concurrency must be numbers");
        return ExitCode::from(2);
    };
    match run(url, queue, visibility_ms, max_deliveries, concurrency).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("celeriac-test-worker: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    url: &str,
    queue: &str,
    visibility_ms: u64,
    max_deliveries: u32,
    concurrency: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let recorder = redis::Client::open(celeriac_tests::harness::redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let _ = RECORDER.set(recorder.clone());
    let _ = celeriac_tests::workflows::RECORDER.set(recorder);
    if let Some(url) = url.strip_prefix("celery+") {
        let broker = celeriac_redis::KombuBroker::builder(url)
            .visibility_timeout(Duration::from_millis(visibility_ms))
            .connect()
            .await?;
        let app = App::builder()
            .broker(broker)
            .celery_compat()
            .default_queue(queue)
            .register::<ccp_send_sms_code_hanging>()
            .build()?;
        app.worker().concurrency(concurrency).build()?.run().await?;
        return Ok(());
    }
    let broker: std::sync::Arc<dyn Broker> = if url.starts_with("amqp") {
        std::sync::Arc::new(
            AmqpBroker::builder(url)
                .max_deliveries(max_deliveries)
                .connect()
                .await?,
        )
    } else {
        std::sync::Arc::new(
            RedisBroker::builder(url)
                .key_prefix("celeriac-test")
                .visibility_timeout(Duration::from_millis(visibility_ms))
                .max_deliveries(max_deliveries)
                .connect()
                .await?,
        )
    };
    let app = App::builder()
        .shared_broker(broker)
        .default_queue(queue)
        .result_backend_url(celeriac_tests::harness::redis_url())
        .result_expires(Duration::from_secs(300))
        .coordination_url(celeriac_tests::harness::redis_url())
        .register::<record_run>()
        .register::<rl_process>()
        .register::<crash_worker>();
    let app = celeriac_tests::workflows::with_crash_tasks(app).build()?;
    let mut worker = app.worker().concurrency(concurrency);
    // Events with a heartbeat every so many milliseconds, as `celeriac-test-worker-<pid>`.
    if let Some(every) = std::env::var("CELERIAC_TEST_WORKER_EVENTS")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
    {
        worker = worker
            .events(true)
            .heartbeat_interval(Duration::from_millis(every))
            .hostname(format!("celeriac-test-worker-{}", std::process::id()));
    }
    worker.build()?.run().await?;
    Ok(())
}
