//! `celeriac-bench results <broker>`: what results cost.
//!
//! - round trip: `delay(...).await?.get().await` one at a time against an idle in-process worker,
//!   p50/p90/p99 (and, with `--with-celery`, Python Celery's `delay(...).get()` on Redis in the same
//!   run, through `bench/celery/results.sh`);
//! - drain: the same number of tasks drained by one in-process worker with results stored and with
//!   `ignore_result`, alternating, medians of each.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use celeriac::redis::RedisResultBackend;
use celeriac::{App, AsyncResult, MemoryBroker};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::BrokerKind;
use crate::measure::{self, DONE, DrainShape, Percentiles, bench_noop};

/// Runs of `bench_echo` so far in this process.
static ECHOED: AtomicU64 = AtomicU64::new(0);

/// A no-op that keeps its result.
#[celeriac::task(name = "bench_echo")]
async fn bench_echo(n: u64) -> Result<u64, Infallible> {
    ECHOED.fetch_add(1, Ordering::Relaxed);
    Ok(n)
}

/// What the results bench measured.
#[derive(Debug, Serialize)]
pub(crate) struct ResultsReport {
    broker: BrokerKind,
    backend: String,
    machine: String,
    tasks: u64,
    rounds: usize,
    round_trip_ms: Percentiles,
    drain_ignored_per_sec: f64,
    drain_stored_per_sec: f64,
    /// Throughput lost by storing results: 1 − stored ÷ ignored.
    storing_cost: f64,
    /// CPU time per task without and with results stored.
    cpu_micros_per_task: crate::measure::CpuPerTask,
    celery: Option<CeleryRoundTrip>,
}

/// Python Celery's round trip, as `bench/celery/results.sh` prints it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CeleryRoundTrip {
    system: String,
    samples: usize,
    round_trip_ms: Percentiles,
}

/// How to run it.
#[derive(Debug)]
pub(crate) struct ResultsShape {
    pub(crate) tasks: u64,
    pub(crate) samples: usize,
    pub(crate) rounds: usize,
    pub(crate) concurrency: usize,
    pub(crate) with_celery: bool,
    /// With the RabbitMQ broker: RabbitMQ's RPC result backend instead of Redis.
    pub(crate) rpc: bool,
}

pub(crate) async fn run(
    broker: BrokerKind,
    broker_url: &str,
    redis_url: &str,
    shape: &ResultsShape,
) -> Result<ResultsReport, Box<dyn std::error::Error>> {
    let queue = format!("bench-results-{}", uuid::Uuid::new_v4().simple());
    let builder = App::builder()
        .register::<bench_noop>()
        .register::<bench_echo>();
    let backend = match (broker, shape.rpc) {
        (BrokerKind::Amqp, true) => ResultsOn::Rpc,
        (_, true) => return Err("--rpc needs the amqp broker".into()),
        _ => ResultsOn::Default,
    };
    let (app, backend) =
        app_with_results(builder, broker, broker_url, redis_url, &queue, backend).await?;
    eprintln!(
        "celeriac-bench results: {broker:?} broker, {backend} backend, {} tasks × {} rounds, {} samples",
        shape.tasks, shape.rounds, shape.samples
    );
    let round_trip = round_trip(&app, shape.samples).await?;
    let drain_shape = DrainShape {
        tasks: shape.tasks,
        concurrency: shape.concurrency,
        prefetch: shape.concurrency * 4,
        runtime: crate::WorkerRuntime::Multi,
        shards: 1,
        events: false,
    };
    let (mut ignored, mut stored) = (Vec::new(), Vec::new());
    let uses_redis = broker == BrokerKind::Redis || backend == "redis";
    let mut cpu = crate::measure::CpuRounds::new(uses_redis.then_some(redis_url));
    for _ in 0..shape.rounds {
        ignored.push(drain(&app, drain_shape, false, &mut cpu).await?);
        stored.push(drain(&app, drain_shape, true, &mut cpu).await?);
    }
    let (ignored, stored) = (median(ignored), median(stored));
    let celery = if shape.with_celery {
        Some(celery_round_trip(shape.samples).await?)
    } else {
        None
    };
    measure::purge(&app, &queue).await?;
    Ok(ResultsReport {
        broker,
        backend: backend.to_owned(),
        machine: crate::process::machine_description(),
        tasks: shape.tasks,
        rounds: shape.rounds,
        round_trip_ms: round_trip,
        drain_ignored_per_sec: ignored,
        drain_stored_per_sec: stored,
        storing_cost: 1.0 - stored / ignored,
        cpu_micros_per_task: cpu.medians(),
        celery,
    })
}

/// Which result backend a bench uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResultsOn {
    /// Memory with the memory broker, Redis with the others.
    Default,
    /// RabbitMQ's RPC backend (with the RabbitMQ broker).
    Rpc,
}

/// The app of a results bench on `broker` sending to `queue`: the memory backend with the memory
/// broker; otherwise the Redis backend at `redis_url`, under the bench's own key prefix, or with
/// [`ResultsOn::Rpc`] RabbitMQ's RPC backend. Results are kept ten minutes: the bench's are not
/// worth a day of Redis memory. Answers the backend's name.
pub(crate) async fn app_with_results(
    builder: celeriac::AppBuilder,
    broker: BrokerKind,
    broker_url: &str,
    redis_url: &str,
    queue: &str,
    on: ResultsOn,
) -> Result<(App, &'static str), Box<dyn std::error::Error>> {
    let builder = builder
        .default_queue(queue)
        .result_expires(Duration::from_secs(600));
    let (builder, backend) = match broker {
        BrokerKind::Memory => (builder.broker(MemoryBroker::new()), "memory"),
        BrokerKind::Redis => (
            builder
                .broker(measure::redis_broker(broker_url).await?)
                .result_backend(results_backend(redis_url).await?),
            "redis",
        ),
        BrokerKind::Amqp if on == ResultsOn::Rpc => (
            builder
                .broker(measure::amqp_broker(broker_url, 1).await?)
                .result_backend(celeriac::amqp::AmqpRpcBackend::new(broker_url)),
            "rpc",
        ),
        BrokerKind::Amqp => (
            builder
                .broker(measure::amqp_broker(broker_url, 1).await?)
                .result_backend(results_backend(redis_url).await?),
            "redis",
        ),
    };
    Ok((builder.build()?, backend))
}

/// `delay` → `get` one at a time against an idle worker.
async fn round_trip(app: &App, samples: usize) -> Result<Percentiles, Box<dyn std::error::Error>> {
    let worker = app.worker().concurrency(4).build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let mut millis = Vec::with_capacity(samples);
    for n in 0..samples as u64 + 10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let sent = Instant::now();
        let echoed = bench_echo::delay(app, n)
            .await?
            .get_timeout(Duration::from_secs(10))
            .await?;
        let elapsed = sent.elapsed();
        assert_eq!(echoed, n, "the result of another task");
        if n >= 10 {
            millis.push(elapsed.as_secs_f64() * 1e3);
        }
    }
    let _ = stop.send(());
    running.await??;
    Ok(Percentiles::from_millis(millis))
}

/// Sends `shape.tasks` tasks that store their result (or not), drains them with one in-process
/// worker, and answers tasks/s.
async fn drain(
    app: &App,
    shape: DrainShape,
    store: bool,
    cpu: &mut crate::measure::CpuRounds,
) -> Result<f64, Box<dyn std::error::Error>> {
    let tasks = shape.tasks;
    let mut sent = 0;
    let mut stored_ids = Vec::new();
    while sent < tasks {
        let batch = (tasks - sent).min(1_000);
        if store {
            stored_ids.extend(
                app.delay_batch::<bench_echo>((sent..sent + batch).map(|n| (n,)))
                    .await?,
            );
        } else {
            app.delay_batch::<bench_noop>((sent..sent + batch).map(|n| (n,)))
                .await?;
        }
        sent += batch;
    }
    let counter = if store { &ECHOED } else { &DONE };
    cpu.start().await?;
    let rate = tasks as f64 / measure::drain_counted(app, shape, counter).await?;
    cpu.stop(tasks, store).await?;
    // Each round starts from the same keyspace: this round's results go (outside the timing).
    for ids in stored_ids.chunks(1_000) {
        let forgotten = ids
            .iter()
            .map(|id| async move { AsyncResult::<u64>::from_id(app, *id).forget().await });
        futures::future::try_join_all(forgotten).await?;
    }
    Ok(rate)
}

/// The Redis result backend, under the bench's own key prefix.
async fn results_backend(url: &str) -> Result<RedisResultBackend, celeriac::BrokerError> {
    RedisResultBackend::builder(url)
        .key_prefix("celeriac-bench")
        .connect()
        .await
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `bench/celery/results.sh` (which makes its virtualenv on first use) and reads its answer.
async fn celery_round_trip(samples: usize) -> Result<CeleryRoundTrip, Box<dyn std::error::Error>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/celery/results.sh");
    let output = tokio::process::Command::new(script)
        .args(["--samples", &samples.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!("{script} failed: {}", output.status).into());
    }
    let line = String::from_utf8(output.stdout)?;
    let last = line
        .lines()
        .last()
        .ok_or("no output from the Celery script")?;
    Ok(serde_json::from_str(last)?)
}

pub(crate) fn print(report: &ResultsReport) {
    let l = &report.round_trip_ms;
    println!();
    println!(
        "results · {:?} broker · {} backend · {} · {} tasks × {} rounds",
        report.broker, report.backend, report.machine, report.tasks, report.rounds
    );
    println!(
        "{:<34}p50 {:.3} · p90 {:.3} · p99 {:.3} · max {:.3} ms",
        "delay → get round trip (celeriac)", l.p50, l.p90, l.p99, l.max
    );
    if let Some(celery) = &report.celery {
        let c = &celery.round_trip_ms;
        println!(
            "{:<34}p50 {:.3} · p90 {:.3} · p99 {:.3} · max {:.3} ms",
            format!("delay → get ({}) ", celery.system),
            c.p50,
            c.p90,
            c.p99,
            c.max
        );
    }
    println!(
        "{:<34}{:>12.0} tasks/s",
        "drain, ignore_result (median)", report.drain_ignored_per_sec
    );
    println!(
        "{:<34}{:>12.0} tasks/s",
        "drain, results stored (median)", report.drain_stored_per_sec
    );
    println!(
        "{:<34}{:>12.1} %",
        "cost of storing results",
        100.0 * report.storing_cost
    );
    report.cpu_micros_per_task.print();
}
