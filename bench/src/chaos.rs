//! `celeriac-bench chaos`: tasks that record every run, worker processes SIGKILLed at random
//! moments, the broker restarted; then what ran, what was lost and what ran twice.
//!
//! Each worker process appends the number of every task it runs to a file of its own (one
//! `write` per run, so a run recorded survives its process being killed). Faults are spread over
//! the drain by progress: with `F` faults, one falls at each `i / (F + 1)` of the work, in a
//! seeded random order of kinds and a random victim. After the last fault the drain goes on until
//! every task has run at least once, or the deadline passes; then the records are counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use celeriac::App;
use futures::StreamExt;
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::BrokerKind;

/// The file this worker process records its runs in.
static RUNS: OnceLock<Mutex<std::fs::File>> = OnceLock::new();

/// How long each task takes before it records its run, in microseconds (`--task-us`).
static TASK_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records that task `n` ran.
#[celeriac::task(name = "bench_chaos_record")]
pub(crate) async fn bench_chaos_record(n: u64) -> Result<(), std::io::Error> {
    use std::io::Write;
    let work = TASK_US.load(std::sync::atomic::Ordering::Relaxed);
    if work > 0 {
        tokio::time::sleep(Duration::from_micros(work)).await;
    }
    if let Some(file) = RUNS.get() {
        let mut file = file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        file.write_all(format!("{n}\n").as_bytes())?;
    }
    Ok(())
}

/// What to do to the system under test.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ChaosShape {
    pub(crate) tasks: u64,
    pub(crate) kills: usize,
    pub(crate) broker_restarts: usize,
    pub(crate) workers: usize,
    pub(crate) concurrency: usize,
    pub(crate) seed: u64,
    /// How long each task takes, in microseconds.
    pub(crate) task_us: u64,
    /// RabbitMQ: quorum queues instead of classic ones.
    pub(crate) quorum: bool,
    /// Give up waiting for the last tasks after this long past the last fault.
    pub(crate) deadline: Duration,
}

/// One fault and how long the system took to get over it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Recovery {
    pub(crate) fault: &'static str,
    /// Share of the tasks recorded when it struck.
    pub(crate) at_progress: f64,
    /// From the fault to the first run after it that it concerned: the replacement worker's first
    /// run after a kill, any run after a broker restart.
    pub(crate) recovered_ms: Option<u64>,
}

/// What a chaos run found.
#[derive(Debug, Serialize)]
pub(crate) struct ChaosReport {
    pub(crate) broker: &'static str,
    pub(crate) machine: String,
    pub(crate) shape: ChaosShape,
    /// Runs recorded, duplicates included.
    pub(crate) runs: u64,
    /// Tasks that ran at least once.
    pub(crate) distinct: u64,
    /// Tasks that never ran, even on a fresh worker after the run: gone from the broker.
    pub(crate) lost: u64,
    /// Tasks the run's workers did not get within the deadline but a fresh worker then ran:
    /// still on the broker, out of the workers' reach (counted in `distinct`).
    pub(crate) stranded: u64,
    /// When tasks were missing at the deadline: the broker's own view of the queue then, before
    /// the run's workers were stopped (RabbitMQ: ready, unacknowledged, consumers, from
    /// `rabbitmqctl list_queues`), telling messages left in the queue from messages held
    /// unacknowledged by a live worker.
    pub(crate) queue_at_deadline: Option<String>,
    /// Runs beyond each task's first.
    pub(crate) duplicates: u64,
    /// The most duplicates the faults can explain: a killed worker's prefetch (4 × concurrency)
    /// each kill, every worker's at each broker restart. More would be a bug.
    pub(crate) duplicates_bound: u64,
    /// Runs that were no task sent (a corrupt record): always 0.
    pub(crate) unknown: u64,
    pub(crate) seconds: f64,
    pub(crate) recoveries: Vec<Recovery>,
}

/// A broker's server for the run: a private Redis it starts (and restarts), or RabbitMQ at a URL,
/// restarted with `rabbitmqctl stop_app` / `start_app` on the local node.
enum Server {
    Redis(PrivateRedis),
    Amqp { url: String },
}

impl Server {
    fn url(&self) -> String {
        match self {
            Self::Redis(redis) => redis.url(),
            Self::Amqp { url } => url.clone(),
        }
    }

    async fn stop(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Self::Redis(redis) => redis.stop().await,
            Self::Amqp { .. } => rabbitmqctl(&["stop_app"]).await,
        }
    }

    async fn start(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Self::Redis(redis) => redis.launch().await,
            Self::Amqp { .. } => rabbitmqctl(&["start_app"]).await,
        }
    }
}

impl Server {
    /// The broker's view of `queue`, where the command can ask for it (RabbitMQ).
    async fn describe_queue(&self, queue: &str) -> Option<String> {
        let Self::Amqp { .. } = self else {
            return None;
        };
        let output = Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name", "messages_ready"])
            .args(["messages_unacknowledged", "consumers"])
            .output()
            .await
            .ok()?;
        let listing = String::from_utf8_lossy(&output.stdout);
        let line = listing
            .lines()
            .find(|line| line.split_whitespace().next() == Some(queue))?;
        let values: Vec<&str> = line.split_whitespace().skip(1).collect();
        let [ready, unacked, consumers] = values.as_slice() else {
            return Some(line.to_owned());
        };
        Some(format!(
            "{ready} ready, {unacked} unacknowledged, {consumers} consumers"
        ))
    }
}

async fn rabbitmqctl(arguments: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let status = Command::new("rabbitmqctl")
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .map_err(|error| format!("rabbitmqctl {arguments:?} (is RabbitMQ local?): {error}"))?;
    if !status.success() {
        return Err(format!("rabbitmqctl {arguments:?} failed: {status}").into());
    }
    Ok(())
}

/// A `redis-server` of the run's own, on a spare port, with its own directory, writing every
/// command to its append-only file before answering (`appendfsync always`), so that a restart
/// loses nothing it acknowledged.
pub(crate) struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    server: Option<Child>,
}

impl PrivateRedis {
    pub(crate) async fn start() -> Result<Self, Box<dyn std::error::Error>> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("celeriac-chaos-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let mut redis = Self {
            port,
            dir,
            server: None,
        };
        redis.launch().await?;
        Ok(redis)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    async fn launch(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let server = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("redis-server (is it installed?): {error}"))?;
        self.server = Some(server);
        let started = Instant::now();
        loop {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut connection) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err("the private redis-server did not answer within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: what it acknowledged is in its append-only file, for `launch` to read again.
    pub(crate) async fn stop(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        if let Some(mut server) = self.server.take() {
            server.start_kill()?;
            server.wait().await?;
        }
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(server) = &mut self.server {
            let _ = server.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A worker process and the file it records its runs in.
struct WorkerProcess {
    child: Child,
    runs: PathBuf,
}

/// Where a worker process's log goes: a file `worker-<serial>.log` in `$CELERIAC_CHAOS_LOGS` when
/// set (the worker then logs at `$RUST_LOG`, `info` by default), else nowhere.
fn worker_log(serial: usize) -> Result<std::process::Stdio, Box<dyn std::error::Error>> {
    let Some(dir) = std::env::var_os(WORKER_LOGS) else {
        return Ok(std::process::Stdio::null());
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let file = std::fs::File::create(dir.join(format!("worker-{serial:04}.log")))?;
    Ok(file.into())
}

/// The environment variable naming a directory for the worker processes' logs.
const WORKER_LOGS: &str = "CELERIAC_CHAOS_LOGS";

fn spawn_worker(
    broker: BrokerKind,
    url: &str,
    queue: &str,
    runs_dir: &Path,
    shape: &ChaosShape,
    serial: usize,
) -> Result<WorkerProcess, Box<dyn std::error::Error>> {
    let runs = runs_dir.join(format!("runs-{serial:04}"));
    let child = Command::new(std::env::current_exe()?)
        .args(["chaos-worker", "--broker", broker.name(), "--url", url])
        .args([
            "--queue",
            queue,
            "--concurrency",
            &shape.concurrency.to_string(),
        ])
        .args(["--task-us", &shape.task_us.to_string()])
        .args(shape.quorum.then_some("--quorum"))
        .arg("--runs")
        .arg(&runs)
        .stdout(std::process::Stdio::null())
        .stderr(worker_log(serial)?)
        .kill_on_drop(true)
        .spawn()?;
    Ok(WorkerProcess { child, runs })
}

/// An app on `url` for the chaos queue: Redis with a short visibility timeout, so that what a
/// killed worker held comes back within seconds.
async fn app(
    broker: BrokerKind,
    url: &str,
    queue: &str,
    quorum: bool,
) -> Result<App, Box<dyn std::error::Error>> {
    let builder = App::builder()
        .default_queue(queue)
        .register::<bench_chaos_record>();
    let builder = match broker {
        BrokerKind::Redis => builder.broker(
            celeriac_redis::RedisBroker::builder(url)
                .key_prefix("celeriac-chaos")
                .visibility_timeout(Duration::from_secs(3))
                .connect()
                .await?,
        ),
        BrokerKind::Amqp => builder.broker(
            celeriac_amqp::AmqpBroker::builder(url)
                .queue_type(if quorum {
                    celeriac_amqp::QueueType::Quorum
                } else {
                    celeriac_amqp::QueueType::Classic
                })
                .connect()
                .await?,
        ),
        BrokerKind::Memory => return Err("chaos needs worker processes: redis or amqp".into()),
    };
    Ok(builder.build()?)
}

/// The worker process: records every run in `runs` until it is killed.
pub(crate) async fn chaos_worker(
    broker: BrokerKind,
    url: &str,
    queue: &str,
    concurrency: usize,
    task_us: u64,
    quorum: bool,
    runs: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(WORKER_LOGS).is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    TASK_US.store(task_us, std::sync::atomic::Ordering::Relaxed);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(runs)?;
    let _ = RUNS.set(Mutex::new(file));
    let app = app(broker, url, queue, quorum).await?;
    app.worker().concurrency(concurrency).build()?.run().await?;
    Ok(())
}

/// Bytes the records of tasks `0..tasks` take, once each.
fn record_bytes(tasks: u64) -> u64 {
    (0..tasks).map(|n| n.to_string().len() as u64 + 1).sum()
}

fn recorded_bytes(workers: &[PathBuf]) -> u64 {
    workers
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// Runs of each task, from every record file in `dir`.
fn count_runs(dir: &Path, tasks: u64) -> std::io::Result<(Vec<u32>, u64)> {
    let mut runs = vec![0u32; usize::try_from(tasks).unwrap_or(usize::MAX)];
    let mut unknown = 0;
    for entry in std::fs::read_dir(dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        for line in text.lines() {
            match line.parse::<usize>().ok().and_then(|n| runs.get_mut(n)) {
                Some(count) => *count += 1,
                None => unknown += 1,
            }
        }
    }
    Ok((runs, unknown))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Restart,
}

pub(crate) async fn run(
    broker: BrokerKind,
    amqp_url: &str,
    shape: ChaosShape,
) -> Result<ChaosReport, Box<dyn std::error::Error>> {
    let mut server = match broker {
        BrokerKind::Redis => Server::Redis(PrivateRedis::start().await?),
        BrokerKind::Amqp => Server::Amqp {
            url: amqp_url.to_owned(),
        },
        BrokerKind::Memory => return Err("chaos needs worker processes: redis or amqp".into()),
    };
    let url = server.url();
    // `bench-`: the test script removes what earlier runs left on the shared RabbitMQ.
    let queue = format!("bench-chaos-{}", uuid::Uuid::new_v4().simple());
    let runs_dir = std::env::temp_dir().join(&queue);
    std::fs::create_dir_all(&runs_dir)?;
    let producer = app(broker, &url, &queue, shape.quorum).await?;
    let batches: Vec<_> = (0..shape.tasks)
        .step_by(1_000)
        .map(|start| start..(start + 1_000).min(shape.tasks))
        .collect();
    let sent = futures::stream::iter(batches)
        .map(|batch| {
            let producer = &producer;
            async move {
                producer
                    .delay_batch::<bench_chaos_record>(batch.map(|n| (n,)))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    if let Some(error) = sent.into_iter().find_map(Result::err) {
        return Err(format!("sending the tasks: {error}").into());
    }
    drop(producer);

    let mut rng = fastrand::Rng::with_seed(shape.seed);
    let mut faults: Vec<Fault> = std::iter::repeat_n(Fault::Kill, shape.kills)
        .chain(std::iter::repeat_n(Fault::Restart, shape.broker_restarts))
        .collect();
    rng.shuffle(&mut faults);
    let total = record_bytes(shape.tasks);
    let started = Instant::now();
    let mut serial = 0;
    let mut workers = Vec::new();
    for _ in 0..shape.workers.max(1) {
        workers.push(spawn_worker(
            broker, &url, &queue, &runs_dir, &shape, serial,
        )?);
        serial += 1;
    }
    let mut recoveries: Vec<Recovery> = Vec::new();
    // Pending recoveries: (index in `recoveries`, when, file to watch (None: any), bytes then).
    let mut watching: Vec<(usize, Instant, Option<PathBuf>, u64)> = Vec::new();
    let mut next_fault = 0;
    let mut last_fault_at = started;
    let mut sizes: HashMap<PathBuf, u64> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let files: Vec<PathBuf> = workers.iter().map(|worker| worker.runs.clone()).collect();
        let all_files: Vec<PathBuf> = std::fs::read_dir(&runs_dir)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .collect();
        let recorded = recorded_bytes(&all_files);
        for path in &files {
            sizes.insert(path.clone(), std::fs::metadata(path).map_or(0, |m| m.len()));
        }
        watching.retain(|(index, at, file, before)| {
            let now_bytes = match file {
                Some(file) => sizes.get(file).copied().unwrap_or(0),
                None => recorded,
            };
            if now_bytes > *before {
                recoveries[*index] = Recovery {
                    recovered_ms: Some(at.elapsed().as_millis() as u64),
                    ..recoveries[*index].clone()
                };
                false
            } else {
                true
            }
        });
        if next_fault < faults.len()
            && recorded * (faults.len() as u64 + 1) >= total * (next_fault as u64 + 1)
        {
            let fault = faults[next_fault];
            next_fault += 1;
            let at = Instant::now();
            last_fault_at = at;
            let at_progress = recorded as f64 / total as f64;
            match fault {
                Fault::Kill => {
                    let victim = rng.usize(..workers.len());
                    workers[victim].child.start_kill()?;
                    workers[victim].child.wait().await?;
                    let replacement =
                        spawn_worker(broker, &url, &queue, &runs_dir, &shape, serial)?;
                    serial += 1;
                    watching.push((recoveries.len(), at, Some(replacement.runs.clone()), 0));
                    workers[victim] = replacement;
                    recoveries.push(Recovery {
                        fault: "worker SIGKILL",
                        at_progress,
                        recovered_ms: None,
                    });
                }
                Fault::Restart => {
                    server.stop().await?;
                    // Runs under way when it stopped finish within microseconds: what is
                    // recorded after this came from the broker after its restart.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let down = recorded_bytes(&all_files);
                    server.start().await?;
                    watching.push((recoveries.len(), at, None, down));
                    recoveries.push(Recovery {
                        fault: "broker restart",
                        at_progress,
                        recovered_ms: None,
                    });
                }
            }
            continue;
        }
        if next_fault == faults.len() && recorded >= total {
            let (runs, _) = count_runs(&runs_dir, shape.tasks)?;
            if runs.iter().all(|&count| count > 0) {
                break;
            }
        }
        if next_fault == faults.len() && last_fault_at.elapsed() > shape.deadline {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let queue_at_deadline = if count_runs(&runs_dir, shape.tasks)?.0.contains(&0) {
        server.describe_queue(&queue).await
    } else {
        None
    };
    for worker in &mut workers {
        let _ = worker.child.start_kill();
        let _ = worker.child.wait().await;
    }
    // Tasks the workers never ran may still be on the broker, out of their reach: one fresh
    // worker, on its own, tells those (stranded) from tasks gone from the broker (lost).
    let (runs, _) = count_runs(&runs_dir, shape.tasks)?;
    let missing = runs.iter().filter(|&&count| count == 0).count() as u64;
    let mut stranded = 0;
    if missing > 0 {
        let mut fresh = spawn_worker(broker, &url, &queue, &runs_dir, &shape, serial)?;
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (runs, _) = count_runs(&runs_dir, shape.tasks)?;
            if runs.iter().all(|&count| count > 0) {
                break;
            }
        }
        let _ = fresh.child.start_kill();
        let _ = fresh.child.wait().await;
        let fresh_runs = count_runs(&runs_dir, shape.tasks)?.0;
        stranded = missing - fresh_runs.iter().filter(|&&count| count == 0).count() as u64;
    }
    let (runs, unknown) = count_runs(&runs_dir, shape.tasks)?;
    let _ = std::fs::remove_dir_all(&runs_dir);
    let distinct = runs.iter().filter(|&&count| count > 0).count() as u64;
    let duplicates_bound = (shape.kills + shape.broker_restarts * shape.workers.max(1)) as u64
        * 4
        * shape.concurrency as u64;
    let all_runs: u64 = runs.iter().map(|&count| u64::from(count)).sum();
    Ok(ChaosReport {
        broker: broker.name(),
        machine: crate::process::machine_description(),
        shape,
        runs: all_runs,
        distinct,
        lost: runs.len() as u64 - distinct,
        stranded,
        queue_at_deadline,
        duplicates: all_runs - distinct,
        duplicates_bound,
        unknown,
        seconds,
        recoveries,
    })
}

pub(crate) fn print(report: &ChaosReport) {
    let shape = &report.shape;
    println!(
        "chaos · {} · {} tasks · {} worker processes × concurrency {} · {} kills · {} broker restarts · seed {}",
        report.broker,
        shape.tasks,
        shape.workers,
        shape.concurrency,
        shape.kills,
        shape.broker_restarts,
        shape.seed
    );
    println!("  {}", report.machine);
    println!(
        "  runs {} · ran {} · lost {} · stranded {} · duplicates {} (faults explain ≤ {}) · in {:.1} s",
        report.runs,
        report.distinct,
        report.lost,
        report.stranded,
        report.duplicates,
        report.duplicates_bound,
        report.seconds
    );
    if let Some(queue) = &report.queue_at_deadline {
        println!("  queue at the deadline: {queue}");
    }
    // Each fault kind: how many, and how long until the first run it concerned (the JSON report
    // has every fault, with when it struck).
    for fault in ["worker SIGKILL", "broker restart"] {
        let mut times: Vec<u64> = report
            .recoveries
            .iter()
            .filter(|recovery| recovery.fault == fault)
            .filter_map(|recovery| recovery.recovered_ms)
            .collect();
        let count = report
            .recoveries
            .iter()
            .filter(|r| r.fault == fault)
            .count();
        if count == 0 {
            continue;
        }
        times.sort_unstable();
        let unseen = count - times.len();
        match (times.get(times.len() / 2), times.last()) {
            (Some(median), Some(max)) => println!(
                "  {fault} × {count}: back in {median} ms (median), {max} ms (max){}",
                if unseen > 0 {
                    format!("; {unseen} with no run after them (the work was done)")
                } else {
                    String::new()
                }
            ),
            _ => println!("  {fault} × {count}: no run seen after any (the work was done)"),
        }
    }
}
