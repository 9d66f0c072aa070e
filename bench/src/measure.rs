//! The celeriac side of each measurement.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use celeriac::{App, MemoryBroker};
use celeriac_redis::RedisBroker;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::BrokerKind;

/// Runs of the no-op task so far in this process.
pub(crate) static DONE: AtomicU64 = AtomicU64::new(0);
static PROBE: OnceLock<mpsc::UnboundedSender<Instant>> = OnceLock::new();

/// The no-op task the throughput phases send.
#[celeriac::task(name = "bench_noop")]
pub(crate) async fn bench_noop(_n: u64) {
    DONE.fetch_add(1, Ordering::Relaxed);
}

/// Reports when it starts, for the latency phase.
#[celeriac::task(name = "bench_probe")]
async fn bench_probe() {
    if let Some(probe) = PROBE.get() {
        let _ = probe.send(Instant::now());
    }
}

/// An app on the chosen broker, with a fresh queue (`shards`: RabbitMQ queues per queue).
pub(crate) async fn app(
    broker: BrokerKind,
    url: &str,
    shards: usize,
) -> Result<(App, String), Box<dyn std::error::Error>> {
    let queue = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let builder = App::builder()
        .default_queue(queue.clone())
        .register::<bench_noop>()
        .register::<bench_probe>();
    let builder = match broker {
        BrokerKind::Memory => builder.broker(MemoryBroker::new()),
        BrokerKind::Redis => builder.broker(redis_broker(url).await?),
        BrokerKind::Amqp => builder.broker(amqp_broker(url, shards).await?),
    };
    Ok((builder.build()?, queue))
}

pub(crate) async fn redis_broker(url: &str) -> Result<RedisBroker, celeriac::BrokerError> {
    RedisBroker::builder(url)
        .key_prefix("celeriac-bench")
        .connect()
        .await
}

/// Redis's CPU time so far (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`), in seconds: with the
/// worker's own, what a task costs on a machine whose throughput swings with its neighbours.
pub(crate) async fn redis_cpu_seconds(url: &str) -> Result<f64, Box<dyn std::error::Error>> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|seconds| seconds.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_user:") + field("used_cpu_sys:"))
}

/// CPU time per task, in microseconds, medians of a bench's rounds without and with what it
/// measures: the worker's process, and Redis's own when Redis takes part. On a shared machine
/// whose throughput swings with its neighbours, it tells where a feature's cost lands.
#[derive(Debug, Default, Serialize)]
pub(crate) struct CpuPerTask {
    worker_without: f64,
    worker_with: f64,
    redis_without: Option<f64>,
    redis_with: Option<f64>,
}

impl CpuPerTask {
    pub(crate) fn print(&self) {
        println!(
            "{:<34}{:>12.2} µs without, {:.2} µs with",
            "worker CPU per task (median)", self.worker_without, self.worker_with
        );
        if let (Some(without), Some(with)) = (self.redis_without, self.redis_with) {
            println!(
                "{:<34}{:>12.2} µs without, {:.2} µs with",
                "Redis CPU per task (median)", without, with
            );
        }
    }
}

/// The CPU time of the rounds of a bench, per task: [`start`](Self::start) before a drain,
/// [`stop`](Self::stop) after it.
pub(crate) struct CpuRounds {
    /// The Redis whose CPU time is read, if Redis takes part.
    redis_url: Option<String>,
    started: (f64, Option<f64>),
    worker: [Vec<f64>; 2],
    redis: [Vec<f64>; 2],
}

impl CpuRounds {
    pub(crate) fn new(redis_url: Option<&str>) -> Self {
        Self {
            redis_url: redis_url.map(str::to_owned),
            started: (0.0, None),
            worker: Default::default(),
            redis: Default::default(),
        }
    }

    async fn read(&self) -> Result<(f64, Option<f64>), Box<dyn std::error::Error>> {
        let redis = match &self.redis_url {
            Some(url) => Some(redis_cpu_seconds(url).await?),
            None => None,
        };
        Ok((crate::process::cpu_seconds(), redis))
    }

    pub(crate) async fn start(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        self.started = self.read().await?;
        Ok(())
    }

    /// Records the round since [`start`](Self::start): `tasks` drained, `with` or without what
    /// the bench measures.
    pub(crate) async fn stop(
        &mut self,
        tasks: u64,
        with: bool,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (worker, redis) = self.read().await?;
        let per_task = |seconds: f64| seconds * 1e6 / tasks as f64;
        let side = usize::from(with);
        self.worker[side].push(per_task(worker - self.started.0));
        if let (Some(now), Some(before)) = (redis, self.started.1) {
            self.redis[side].push(per_task(now - before));
        }
        Ok(())
    }

    pub(crate) fn medians(self) -> CpuPerTask {
        let [worker_without, worker_with] = self.worker.map(crate::results::median);
        let [redis_without, redis_with] = self
            .redis
            .map(|rounds| (!rounds.is_empty()).then(|| crate::results::median(rounds)));
        CpuPerTask {
            worker_without,
            worker_with,
            redis_without,
            redis_with,
        }
    }
}

pub(crate) async fn amqp_broker(
    url: &str,
    shards: usize,
) -> Result<celeriac_amqp::AmqpBroker, celeriac::BrokerError> {
    celeriac_amqp::AmqpBroker::builder(url)
        .shards(shards)
        .connect()
        .await
}

/// Sends `tasks` no-op tasks in batches of 1 000; returns tasks/s.
pub(crate) async fn publish_batched(app: &App, tasks: u64) -> Result<f64, celeriac::Error> {
    let started = Instant::now();
    let mut sent = 0;
    while sent < tasks {
        let batch = (tasks - sent).min(1_000);
        app.delay_batch::<bench_noop>((sent..sent + batch).map(|n| (n,)))
            .await?;
        sent += batch;
    }
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

/// Sends `tasks` tasks with `delay`, 64 in flight at a time (as concurrent web requests would);
/// returns tasks/s. The tasks are purged afterwards.
pub(crate) async fn publish_single(
    app: &App,
    tasks: u64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for lane in 0..64u64 {
        let app = app.clone();
        senders.spawn(async move {
            let mut n = lane;
            while n < tasks {
                bench_noop::delay(&app, n).await?;
                n += 64;
            }
            Ok::<_, celeriac::EnqueueError>(())
        });
    }
    while let Some(result) = senders.join_next().await {
        result??;
    }
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn purge(app: &App, queue: &str) -> Result<(), celeriac::BrokerError> {
    app.broker().purge(queue).await.map(|_| ())
}

/// What the drain phase measured.
#[derive(Debug, Serialize, serde::Deserialize)]
pub(crate) struct Drained {
    pub(crate) seconds: f64,
    /// Tasks run: `tasks` at least (a worker told to stop finishes what it started).
    pub(crate) runs: u64,
    pub(crate) peak_rss_kib: u64,
    pub(crate) cpu_seconds: f64,
}

/// How the drain phase runs: tasks to run, worker concurrency, prefetch and runtime.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DrainShape {
    pub(crate) tasks: u64,
    pub(crate) concurrency: usize,
    pub(crate) prefetch: usize,
    pub(crate) runtime: crate::WorkerRuntime,
    /// RabbitMQ queues per celeriac queue.
    pub(crate) shards: usize,
    /// Whether the worker sends events.
    pub(crate) events: bool,
}

/// Events the workers of [`drain_counted`] dropped, all told.
pub(crate) static EVENTS_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Runs a worker in this process until `shape.tasks` no-op runs completed.
pub(crate) async fn drain(app: &App, shape: DrainShape) -> Result<f64, celeriac::Error> {
    drain_counted(app, shape, &DONE).await
}

/// Runs a worker in this process until `counter` rose by `shape.tasks`; returns the seconds taken,
/// the worker's graceful stop included.
pub(crate) async fn drain_counted(
    app: &App,
    shape: DrainShape,
    counter: &AtomicU64,
) -> Result<f64, celeriac::Error> {
    let tasks = shape.tasks;
    let target = counter.load(Ordering::Relaxed) + tasks;
    let worker = app
        .worker()
        .concurrency(shape.concurrency)
        .prefetch(shape.prefetch)
        .events(shape.events)
        .build()?;
    let started = Instant::now();
    let report = worker
        .run_until(async {
            while counter.load(Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    EVENTS_DROPPED.fetch_add(report.events_dropped, Ordering::Relaxed);
    if report.succeeded < tasks {
        eprintln!(
            "warning: only {} of {tasks} tasks succeeded",
            report.succeeded
        );
    }
    Ok(seconds)
}

pub(crate) async fn drain_in_process(
    app: &App,
    shape: DrainShape,
) -> Result<Drained, Box<dyn std::error::Error>> {
    let cpu_before = crate::process::cpu_seconds();
    let done_before = DONE.load(Ordering::Relaxed);
    let seconds = drain(app, shape).await?;
    Ok(Drained {
        seconds,
        runs: DONE.load(Ordering::Relaxed) - done_before,
        peak_rss_kib: crate::process::peak_rss_kib(),
        cpu_seconds: crate::process::cpu_seconds() - cpu_before,
    })
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

/// Sends one probe at a time to an idle worker and measures how long until it starts.
pub(crate) async fn latency(
    app: &App,
    samples: usize,
) -> Result<Percentiles, Box<dyn std::error::Error>> {
    let (sender, mut starts) = mpsc::unbounded_channel();
    let _ = PROBE.set(sender);
    let worker = app.worker().concurrency(4).build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let mut millis = Vec::with_capacity(samples);
    for sample in 0..samples + 10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let sent = Instant::now();
        bench_probe::delay(app).await?;
        let Some(started) = starts.recv().await else {
            break;
        };
        if sample >= 10 {
            millis.push((started - sent).as_secs_f64() * 1e3);
        }
    }
    let _ = stop.send(());
    running.await??;
    Ok(Percentiles::from_millis(millis))
}

impl Percentiles {
    /// Percentiles of samples in milliseconds.
    pub(crate) fn from_millis(mut millis: Vec<f64>) -> Self {
        millis.sort_by(f64::total_cmp);
        let at = |q: f64| {
            millis
                .get(((millis.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        Self {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: millis.last().copied().unwrap_or(0.0),
        }
    }
}
