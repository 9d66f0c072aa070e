//! rusty-celery (crate `celery`) under the scenarios of celeriac-bench: publish N no-op tasks one by
//! one, drain them with one consumer, and enqueue-to-start latency one task at a time.
//!
//! Usage: `cargo run --release -- <rusty-celery|apalis> <redis|amqp> [tasks]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use celery::prelude::*;
use tokio::sync::mpsc;

static DONE: AtomicU64 = AtomicU64::new(0);
static PROBE: OnceLock<mpsc::UnboundedSender<Instant>> = OnceLock::new();

#[celery::task]
fn bench_noop(_n: u64) -> TaskResult<()> {
    DONE.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[celery::task]
fn bench_probe() -> TaskResult<()> {
    if let Some(probe) = PROBE.get() {
        let _ = probe.send(Instant::now());
    }
    Ok(())
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| {
                v.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::task::LocalSet::new().run_until(run()).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("apalis") {
        let tasks: u64 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(20_000);
        return match args.get(2).map(String::as_str) {
            Some("amqp") => apalis_amqp_bench(tasks).await,
            _ => apalis_redis_bench(tasks).await,
        };
    }
    let broker = args.get(2).map(String::as_str).unwrap_or("redis");
    let tasks: u64 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let queue = format!("peers-{}", std::process::id());
    let app = match broker {
        "amqp" => celery::app!(
            broker = AMQPBroker { std::env::var("CELERIAC_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()) },
            tasks = [bench_noop, bench_probe],
            task_routes = ["*" => "peers"],
            prefetch_count = 256,
            heartbeat = Some(10),
        ).await?,
        _ => celery::app!(
            broker = RedisBroker { std::env::var("CELERIAC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into()) },
            tasks = [bench_noop, bench_probe],
            task_routes = ["*" => "peers"],
            prefetch_count = 256,
            heartbeat = Some(10),
        ).await?,
    };
    let _ = queue;
    let started = Instant::now();
    for n in 0..tasks {
        app.send_task(bench_noop::new(n)).await?;
    }
    let publish = tasks as f64 / started.elapsed().as_secs_f64();

    // rusty-celery's consumer future is not `Send`: run it on this thread.
    let consumer = app.clone();
    tokio::task::spawn_local(async move { consumer.consume_from(&["peers"]).await });
    let drain = drained(tasks).await?;

    let (sender, mut starts) = mpsc::unbounded_channel();
    let _ = PROBE.set(sender);
    let mut millis = Vec::new();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let sent = Instant::now();
        app.send_task(bench_probe::new()).await?;
        match tokio::time::timeout(Duration::from_secs(10), starts.recv()).await {
            Ok(Some(at)) => millis.push((at - sent).as_secs_f64() * 1e3),
            _ => break,
        }
    }
    print_result("rusty-celery-0.5", broker, tasks, publish, drain, millis);
    std::process::exit(0);
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ApalisNoop {
    n: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ApalisProbe {}

async fn apalis_noop(_task: ApalisNoop) -> Result<(), apalis::prelude::BoxDynError> {
    DONE.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn apalis_probe(_task: ApalisProbe) -> Result<(), apalis::prelude::BoxDynError> {
    if let Some(probe) = PROBE.get() {
        let _ = probe.send(Instant::now());
    }
    Ok(())
}

/// The apalis scenario on any of its backends: push N tasks one by one, drain them with one worker
/// (default settings), then enqueue-to-start latency one task at a time on a second queue.
macro_rules! apalis_scenario {
    ($broker:literal, $tasks:expr, $noop:expr, $probe:expr, $samples:expr, $wait:expr) => {{
        use apalis::prelude::*;
        let tasks: u64 = $tasks;
        let mut storage = $noop;
        let started = Instant::now();
        for n in 0..tasks {
            storage.push(ApalisNoop { n }).await?;
        }
        let publish = tasks as f64 / started.elapsed().as_secs_f64();

        let worker = WorkerBuilder::new("bench-noop")
            .backend(storage)
            .build(apalis_noop);
        tokio::spawn(async move { worker.run().await });
        let drain = drained(tasks).await?;

        let (sender, mut starts) = mpsc::unbounded_channel();
        let _ = PROBE.set(sender);
        let (mut probes, mut probe_worker) = $probe;
        // A first probe, sent through the worker's own backend before the worker starts and not
        // counted: apalis-amqp 1.0 panics in `poll_next` (an unwrap on its consumer) when a worker
        // starts on a backend that has not opened its channel yet.
        probe_worker.push(ApalisProbe {}).await?;
        let worker = WorkerBuilder::new("bench-probe")
            .backend(probe_worker)
            .build(apalis_probe);
        tokio::spawn(async move { worker.run().await });
        let _ = tokio::time::timeout($wait, starts.recv()).await;
        let mut millis = Vec::new();
        for _ in 0..$samples {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let sent = Instant::now();
            probes.push(ApalisProbe {}).await?;
            match tokio::time::timeout($wait, starts.recv()).await {
                Ok(Some(at)) => millis.push((at - sent).as_secs_f64() * 1e3),
                _ => break,
            }
        }
        print_result("apalis-1.0", $broker, tasks, publish, drain, millis);
        std::process::exit(0);
    }};
}

/// apalis 1.0 with apalis-redis.
async fn apalis_redis_bench(tasks: u64) -> Result<(), Box<dyn std::error::Error>> {
    use apalis_redis::{Config, RedisStorage};

    let url =
        std::env::var("CELERIAC_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let run = std::process::id();
    let conn = apalis_redis::connect(url.as_str()).await?;
    let storage: RedisStorage<ApalisNoop, _> = RedisStorage::new(conn.clone())
        .with_config(Config::default().queue(&format!("peers-noop-{run}")));
    let probes: RedisStorage<ApalisProbe, _> =
        RedisStorage::new(conn).with_config(Config::default().queue(&format!("peers-probe-{run}")));
    // Its worker parks when a fetch comes back empty and wakes on its heartbeat (30 s by default):
    // a few samples, each allowed a minute.
    apalis_scenario!(
        "redis",
        tasks,
        storage,
        (probes.clone(), probes),
        5,
        Duration::from_secs(65)
    )
}

/// apalis 1.0 with apalis-amqp.
async fn apalis_amqp_bench(tasks: u64) -> Result<(), Box<dyn std::error::Error>> {
    use apalis_amqp::{AmqpBackend, Config};

    let url = std::env::var("CELERIAC_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let run = std::process::id();
    fn backend<M: Send + 'static>(
        url: &str,
        queue: String,
    ) -> Result<AmqpBackend<M>, apalis_amqp::Error> {
        AmqpBackend::new_from_addr(url).map(|b| b.with_config(Config::default().queue(queue)))
    }
    let storage: AmqpBackend<ApalisNoop> = backend(&url, format!("peers-noop-{run}"))?;
    let probes: AmqpBackend<ApalisProbe> = backend(&url, format!("peers-probe-{run}"))?;
    let probe_worker: AmqpBackend<ApalisProbe> = backend(&url, format!("peers-probe-{run}"))?;
    apalis_scenario!(
        "amqp",
        tasks,
        storage,
        (probes, probe_worker),
        100,
        Duration::from_secs(10)
    )
}

/// Waits until `tasks` no-op runs were counted (5 minutes at most); returns tasks/s.
async fn drained(tasks: u64) -> Result<f64, Box<dyn std::error::Error>> {
    let target = DONE.load(Ordering::Relaxed) + tasks;
    let started = Instant::now();
    while DONE.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "drain stalled at {} of {tasks}",
                tasks + DONE.load(Ordering::Relaxed) - target
            )
            .into());
        }
    }
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

/// Prints one JSON line with the figures of a run.
fn print_result(
    system: &str,
    broker: &str,
    tasks: u64,
    publish: f64,
    drain: f64,
    mut millis: Vec<f64>,
) {
    millis.sort_by(f64::total_cmp);
    let at = |q: f64| {
        millis
            .get(((millis.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        serde_json::json!({
            "system": system, "broker": broker, "tasks": tasks,
            "publish_per_sec": publish.round(), "drain_per_sec": drain.round(),
            "latency_ms": {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "samples": millis.len()},
            "peak_rss_mib_in_process": peak_rss_mib(),
        })
    );
}
