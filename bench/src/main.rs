//! celeriac's benchmark harness.
//!
//! Run with `cargo run -p celeriac-bench --release -- <memory|redis|amqp|sms> [--tasks N] [--quick]`.
//!
//! For each broker it measures, in one invocation:
//! - publish: N no-op tasks sent in batches (`delay_batch`) and one by one (`delay`, 64 at a time);
//! - drain: one worker process (concurrency C) runs all N; tasks/s, its peak RSS and CPU time;
//! - latency: one task at a time at low load, enqueue-to-start p50/p90/p99/max;
//! - ceiling (real brokers): a minimal raw client loop doing the same broker operations, and the
//!   ratio celeriac ÷ ceiling.
//!
//! Results print as a table and, with `--json FILE`, as JSON.

mod ceiling;
mod chaos;
mod chord;
mod coordination;
mod events;
mod measure;
mod process;
mod raw_amqp;
mod results;
mod scale;
mod sms;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Which broker to benchmark.
/// A drain with an opt-in feature beside one without it.
#[derive(clap::Args, Debug)]
struct FeatureRun {
    /// Broker to benchmark.
    #[arg(value_enum)]
    broker: BrokerKind,
    /// Tasks per drain.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// Rounds of each kind (alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum BrokerKind {
    Memory,
    Redis,
    Amqp,
}

impl BrokerKind {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Amqp => "amqp",
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "celeriac benchmarks: throughput, latency, footprint, and raw-client ceilings")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Broker to benchmark.
    #[arg(value_enum, default_value = "memory")]
    broker: BrokerKind,
    /// Number of no-op tasks for the throughput phases.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// Worker concurrency for the drain phase.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Prefetch of the drain worker and of the raw consumer (default: 4 × concurrency, as Celery).
    #[arg(long)]
    prefetch: Option<usize>,
    /// Runtime of the drain worker process (Redis, RabbitMQ; the memory broker drains in process).
    #[arg(long, value_enum, default_value = "multi")]
    worker_runtime: WorkerRuntime,
    /// RabbitMQ queues per celeriac queue (`AmqpBrokerBuilder::shards`); the raw ceiling then uses
    /// as many queues and 4 publishing channels.
    #[arg(long, default_value_t = 1)]
    amqp_shards: usize,
    /// Tasks sent one at a time for the latency phase.
    #[arg(long, default_value_t = 1_000)]
    latency_samples: usize,
    /// A smoke run: 2 000 tasks, 100 latency samples.
    #[arg(long)]
    quick: bool,
    /// Redis URL.
    #[arg(
        long,
        env = "CELERIAC_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0"
    )]
    redis_url: String,
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "CELERIAC_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

impl Cli {
    /// The URL of `broker` (none for the embedded one).
    fn broker_url(&self, broker: BrokerKind) -> &str {
        match broker {
            BrokerKind::Memory => "",
            BrokerKind::Redis => &self.redis_url,
            BrokerKind::Amqp => &self.amqp_url,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The SMS demo under load: 200 clients, a gateway taking 2 s per SMS; queued vs inline.
    Sms {
        /// Concurrent clients.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Requests per client in the queued variant.
        #[arg(long, default_value_t = 25)]
        requests: usize,
        /// Pause of each client between two requests, in milliseconds.
        #[arg(long, default_value_t = 100)]
        think_ms: u64,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// What raw `lapin` alone does against RabbitMQ in a given shape: confirmed publishes/s and
    /// batch-acked consumes/s (e.g. `--channels 4 --queues 4 --prefetch 1024`).
    AmqpRaw {
        #[command(flatten)]
        shape: raw_amqp::RawShape,
    },
    /// What results cost: `delay` → `get` round trip p50/p99 at low load, and drain throughput with
    /// results stored vs `ignore_result` (memory: memory backend; redis and amqp: Redis backend).
    Results {
        /// Broker to benchmark.
        #[arg(value_enum)]
        broker: BrokerKind,
        /// Tasks per drain round.
        #[arg(long, default_value_t = 50_000)]
        tasks: u64,
        /// Drain rounds of each kind (alternating); medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Round trips measured.
        #[arg(long, default_value_t = 1_000)]
        samples: usize,
        /// Worker concurrency for the drain rounds.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Also measure Python Celery's round trip on Redis (bench/celery/results.sh).
        #[arg(long)]
        with_celery: bool,
        /// With the amqp broker: RabbitMQ's RPC result backend (`rpc://`) instead of Redis.
        #[arg(long)]
        rpc: bool,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// What the coordination store's checks cost: a unique task's claim to its producer (`delay`
    /// plain vs unique, 64 in flight; refused duplicates), and a cluster-wide rate limit's slot to
    /// its worker (drain plain vs limited far above the reachable rate). Memory: the broker's
    /// store; redis: the broker's Redis; amqp: Redis at --redis-url.
    Coordination {
        /// Broker to benchmark.
        #[arg(value_enum)]
        broker: BrokerKind,
        /// Sends per round of each kind.
        #[arg(long, default_value_t = 50_000)]
        tasks: u64,
        /// Rounds of each kind (alternating); medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// What worker events cost: the drain of no-ops by a worker sending events beside one that
    /// sends none, alternating rounds (target: ≥ 85 %).
    Events(FeatureRun),
    /// What signed messages cost: the drain of signed no-ops (verified by the worker) beside
    /// unsigned ones, alternating rounds.
    Signing(FeatureRun),
    /// What Celery's wire format costs: the drain of no-ops sent and run in Celery's format
    /// (`celery_compat()`: on Redis, kombu's layout) beside celeriac's own, alternating rounds
    /// (target: ≥ 50 %).
    Celery(FeatureRun),
    /// The wall time of `chord(group of N no-ops, callback)` with one in-process worker (memory:
    /// memory backend; redis and amqp: Redis backend), beside Python Celery's same chord.
    Chord {
        /// Broker to benchmark.
        #[arg(value_enum)]
        broker: BrokerKind,
        /// Members of the chord.
        #[arg(long, default_value_t = 10_000)]
        members: u64,
        /// Chords run; the median is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Worker concurrency.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Also run Python Celery's same chord on the same broker (bench/celery/chord.sh).
        #[arg(long)]
        with_celery: bool,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Faults while tasks drain: worker processes SIGKILLed at random moments, the broker
    /// restarted (Redis: a private server with `appendfsync always`; RabbitMQ: `rabbitmqctl
    /// stop_app`/`start_app` on the local node), then every task's runs counted: lost,
    /// duplicates, time to recover after each fault.
    Chaos {
        /// Broker to torment (redis or amqp).
        #[arg(value_enum)]
        broker: BrokerKind,
        /// Tasks sent before the workers start; each records its runs.
        #[arg(long, default_value_t = 100_000)]
        tasks: u64,
        /// Worker processes killed with SIGKILL (each replaced at once).
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Broker restarts.
        #[arg(long, default_value_t = 0)]
        broker_restarts: usize,
        /// Worker processes at once.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Concurrency of each worker process.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seed of the faults' order and victims.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How long each task takes, in microseconds (a longer drain for a small run).
        #[arg(long, default_value_t = 0)]
        task_us: u64,
        /// RabbitMQ: quorum queues (`AmqpBrokerBuilder::queue_type`) instead of classic ones.
        #[arg(long)]
        quorum: bool,
        /// Seconds to wait for the last tasks after the last fault.
        #[arg(long, default_value_t = 120)]
        deadline_secs: u64,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// How cost grows with the work: drain with 1, 2, 4 worker processes; one worker on 1, 100,
    /// 1 000 queues; a large backlog drained (tasks/s, worker peak RSS); broker memory per queued
    /// task.
    Scale {
        /// Broker to measure (redis or amqp).
        #[arg(value_enum)]
        broker: BrokerKind,
        /// Tasks per point of the worker and queue curves, and for the memory measure.
        #[arg(long, default_value_t = 100_000)]
        tasks: u64,
        /// Tasks of the backlog drained by one worker process.
        #[arg(long, default_value_t = 1_000_000)]
        backlog: u64,
        /// Concurrency of each worker.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Also write the results as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// Internal: a worker process of the chaos run.
    #[command(hide = true)]
    ChaosWorker {
        #[arg(long, value_enum)]
        broker: BrokerKind,
        #[arg(long)]
        url: String,
        #[arg(long)]
        queue: String,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        task_us: u64,
        #[arg(long)]
        quorum: bool,
        #[arg(long)]
        runs: std::path::PathBuf,
    },
    /// Internal: the worker process of the drain phase.
    #[command(hide = true)]
    DrainWorker {
        #[arg(long, value_enum)]
        broker: BrokerKind,
        #[arg(long)]
        url: String,
        #[arg(long)]
        queue: String,
        #[arg(long)]
        tasks: u64,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        prefetch: usize,
        #[arg(long, value_enum)]
        runtime: WorkerRuntime,
        #[arg(long)]
        shards: usize,
    },
}

/// The tokio runtime of the drain worker process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum WorkerRuntime {
    /// `new_multi_thread` (one thread per core): what `#[tokio::main]` gives.
    #[default]
    Multi,
    /// `new_current_thread`: one thread, no cross-thread wake-ups; for I/O-bound tasks.
    Current,
}

impl WorkerRuntime {
    fn name(self) -> &'static str {
        match self {
            Self::Multi => "multi",
            Self::Current => "current",
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
struct Report {
    broker: BrokerKind,
    tasks: u64,
    concurrency: usize,
    prefetch: usize,
    worker_runtime: WorkerRuntime,
    amqp_shards: usize,
    machine: String,
    publish_batched_per_sec: f64,
    publish_single_per_sec: f64,
    drain_per_sec: f64,
    worker_peak_rss_mib: f64,
    worker_cpu_us_per_task: f64,
    latency_ms: measure::Percentiles,
    ceiling: Option<ceiling::Ceiling>,
}

/// The allocator a production worker binary would pick: glibc malloc is a large share of the
/// per-task cost (cross-thread frees), see docs/benchmarks.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let runtime = match cli.command {
        Some(Command::DrainWorker {
            runtime: WorkerRuntime::Current,
            ..
        }) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(run_command(cli))
}

async fn run_command(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(Command::Sms {
        clients,
        requests,
        think_ms,
        json,
    }) = &cli.command
    {
        let think = std::time::Duration::from_millis(*think_ms);
        let report = sms::run(*clients, *requests, think).await?;
        print_sms(&report);
        write_json(json.as_deref(), &report)?;
        return Ok(());
    }
    if let Some(Command::Results {
        broker,
        tasks,
        rounds,
        samples,
        concurrency,
        with_celery,
        rpc,
        json,
    }) = &cli.command
    {
        let url = cli.broker_url(*broker);
        let shape = results::ResultsShape {
            tasks: *tasks,
            samples: *samples,
            rounds: (*rounds).max(1),
            concurrency: *concurrency,
            with_celery: *with_celery,
            rpc: *rpc,
        };
        let report = results::run(*broker, url, &cli.redis_url, &shape).await?;
        results::print(&report);
        write_json(json.as_deref(), &report)?;
        return Ok(());
    }
    let feature_run = match &cli.command {
        Some(Command::Events(run)) => Some((events::Feature::Events, run)),
        Some(Command::Signing(run)) => Some((events::Feature::Signing, run)),
        Some(Command::Celery(run)) => Some((events::Feature::Celery, run)),
        _ => None,
    };
    if let Some((
        feature,
        FeatureRun {
            broker,
            tasks,
            rounds,
            json,
        },
    )) = feature_run
    {
        let url = cli.broker_url(*broker);
        let report = events::run(feature, *broker, url, *tasks, (*rounds).max(1)).await?;
        events::print(&report);
        write_json(json.as_deref(), &report)?;
        return Ok(());
    }
    if let Some(Command::Coordination {
        broker,
        tasks,
        rounds,
        json,
    }) = &cli.command
    {
        let report = coordination::run(
            *broker,
            cli.broker_url(*broker),
            &cli.redis_url,
            *tasks,
            (*rounds).max(1),
        )
        .await?;
        coordination::print(&report);
        write_json(json.as_deref(), &report)?;
        return Ok(());
    }
    if let Some(Command::Chord {
        broker,
        members,
        rounds,
        concurrency,
        with_celery,
        json,
    }) = &cli.command
    {
        let shape = chord::ChordShape {
            members: *members,
            rounds: (*rounds).max(1),
            concurrency: *concurrency,
            with_celery: *with_celery,
        };
        let report = chord::run(*broker, cli.broker_url(*broker), &cli.redis_url, &shape).await?;
        chord::print(&report);
        write_json(json.as_deref(), &report)?;
        return Ok(());
    }
    if let Some(Command::Scale {
        broker,
        tasks,
        backlog,
        concurrency,
        json,
    }) = &cli.command
    {
        let shape = scale::ScaleShape {
            tasks: *tasks,
            backlog: *backlog,
            concurrency: *concurrency,
        };
        let report = scale::run(*broker, cli.broker_url(*broker), shape).await?;
        scale::print(&report);
        write_json(json.as_deref(), &report)?;
        return Ok(());
    }
    if let Some(Command::Chaos {
        broker,
        tasks,
        kills,
        broker_restarts,
        workers,
        concurrency,
        seed,
        task_us,
        quorum,
        deadline_secs,
        json,
    }) = &cli.command
    {
        let shape = chaos::ChaosShape {
            tasks: *tasks,
            kills: *kills,
            broker_restarts: *broker_restarts,
            workers: *workers,
            concurrency: *concurrency,
            seed: *seed,
            task_us: *task_us,
            quorum: *quorum,
            deadline: std::time::Duration::from_secs(*deadline_secs),
        };
        let report = chaos::run(*broker, &cli.amqp_url, shape).await?;
        chaos::print(&report);
        write_json(json.as_deref(), &report)?;
        return Ok(());
    }
    if let Some(Command::ChaosWorker {
        broker,
        url,
        queue,
        concurrency,
        task_us,
        quorum,
        runs,
    }) = &cli.command
    {
        return chaos::chaos_worker(*broker, url, queue, *concurrency, *task_us, *quorum, runs)
            .await;
    }
    if let Some(Command::AmqpRaw { shape }) = &cli.command {
        let (publish, drain) = raw_amqp::publish_and_drain(&cli.amqp_url, shape).await?;
        println!(
            "raw lapin · {} messages · {} channel(s) · {} queue(s) · prefetch {} · {} · queue version {}",
            shape.tasks,
            shape.channels,
            shape.queues,
            shape.prefetch,
            if shape.transient {
                "transient"
            } else {
                "persistent"
            },
            shape
                .queue_version
                .map_or_else(|| "default".to_owned(), |v| v.to_string())
        );
        println!("confirmed publish {publish:>9.0} msg/s · batch-ack drain {drain:>9.0} msg/s");
        return Ok(());
    }
    if let Some(Command::DrainWorker {
        broker,
        url,
        queue,
        tasks,
        concurrency,
        prefetch,
        runtime,
        shards,
    }) = cli.command
    {
        let shape = measure::DrainShape {
            tasks,
            concurrency,
            prefetch,
            runtime,
            shards,
            events: false,
        };
        let drained = process::drain_worker(broker, &url, &queue, shape).await?;
        println!("{}", serde_json::to_string(&drained)?);
        return Ok(());
    }
    let (tasks, samples) = if cli.quick {
        (cli.tasks.min(2_000), cli.latency_samples.min(100))
    } else {
        (cli.tasks, cli.latency_samples)
    };
    let report = run(&cli, tasks, samples).await?;
    print_table(&report);
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

async fn run(cli: &Cli, tasks: u64, samples: usize) -> Result<Report, Box<dyn std::error::Error>> {
    let machine = process::machine_description();
    eprintln!(
        "celeriac-bench: {:?}, {tasks} tasks, concurrency {} on {machine}",
        cli.broker, cli.concurrency
    );
    let url = cli.broker_url(cli.broker);
    let (app, queue) = measure::app(cli.broker, url, cli.amqp_shards).await?;
    let shape = measure::DrainShape {
        tasks,
        concurrency: cli.concurrency,
        prefetch: cli.prefetch.unwrap_or(cli.concurrency * 4),
        runtime: cli.worker_runtime,
        shards: cli.amqp_shards,
        events: false,
    };
    let publish_batched = measure::publish_batched(&app, tasks).await?;
    let drain = match cli.broker {
        BrokerKind::Memory => measure::drain_in_process(&app, shape).await?,
        broker => process::drain_in_child(broker, url, &queue, shape).await?,
    };
    let publish_single = measure::publish_single(&app, tasks.min(20_000)).await?;
    measure::purge(&app, &queue).await?;
    let latency = measure::latency(&app, samples).await?;
    let ceiling = match cli.broker {
        BrokerKind::Memory => None,
        BrokerKind::Redis => Some(ceiling::redis(url, tasks).await?),
        BrokerKind::Amqp => {
            let raw = raw_amqp::RawShape::ceiling(tasks, shape.prefetch, shape.shards);
            Some(raw_amqp::ceiling(url, &raw).await?)
        }
    };
    Ok(Report {
        broker: cli.broker,
        tasks,
        concurrency: cli.concurrency,
        prefetch: shape.prefetch,
        worker_runtime: shape.runtime,
        amqp_shards: shape.shards,
        machine,
        publish_batched_per_sec: publish_batched,
        publish_single_per_sec: publish_single,
        drain_per_sec: tasks as f64 / drain.seconds,
        worker_peak_rss_mib: drain.peak_rss_kib as f64 / 1024.0,
        worker_cpu_us_per_task: drain.cpu_seconds * 1e6 / tasks as f64,
        latency_ms: latency,
        ceiling,
    })
}

/// Writes `report` as pretty JSON to `path`, if one was asked for (`--json`).
fn write_json(
    path: Option<&std::path::Path>,
    report: &impl serde::Serialize,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}

fn print_table(report: &Report) {
    let rate = |per_sec: f64| format!("{per_sec:>12.0} tasks/s");
    println!();
    println!(
        "broker {:?} · {} tasks · concurrency {} · prefetch {} · worker runtime {} · shards {}",
        report.broker,
        report.tasks,
        report.concurrency,
        report.prefetch,
        report.worker_runtime.name(),
        report.amqp_shards
    );
    println!(
        "{:<34}{}",
        "publish, batched",
        rate(report.publish_batched_per_sec)
    );
    println!(
        "{:<34}{}",
        "publish, one by one (64 in flight)",
        rate(report.publish_single_per_sec)
    );
    println!("{:<34}{}", "drain, one worker", rate(report.drain_per_sec));
    println!(
        "{:<34}{:>12.1} MiB",
        "worker peak RSS", report.worker_peak_rss_mib
    );
    println!(
        "{:<34}{:>12.1} µs",
        "worker CPU per task", report.worker_cpu_us_per_task
    );
    let l = &report.latency_ms;
    println!(
        "{:<34}p50 {:.3} · p90 {:.3} · p99 {:.3} · max {:.3} ms",
        "enqueue-to-start (low load)", l.p50, l.p90, l.p99, l.max
    );
    if let Some(ceiling) = &report.ceiling {
        println!(
            "{:<34}{}",
            "ceiling: raw publish (pipelined)",
            rate(ceiling.publish_per_sec)
        );
        println!(
            "{:<34}{}",
            "ceiling: raw drain",
            rate(ceiling.drain_per_sec)
        );
        if let Some(batched) = ceiling.drain_batch_ack_per_sec {
            println!("{:<34}{}", "ceiling: raw drain, batch acks", rate(batched));
        }
        // Against the best the raw client did: batch acks where it measured them.
        let best_drain = ceiling
            .drain_batch_ack_per_sec
            .unwrap_or(ceiling.drain_per_sec)
            .max(ceiling.drain_per_sec);
        println!(
            "{:<34}{:>12.0} % publish · {:.0} % drain",
            "celeriac ÷ ceiling",
            100.0 * report.publish_batched_per_sec / ceiling.publish_per_sec,
            100.0 * report.drain_per_sec / best_drain
        );
    }
}

fn print_sms(report: &sms::SmsReport) {
    println!();
    println!(
        "POST /sms_codes/{{mobile}} · {} concurrent clients · {} ms between requests · gateway {} ms per SMS",
        report.clients, report.think_ms, report.gateway_latency_ms
    );
    for (name, variant) in [
        ("through celeriac", &report.queued),
        ("celeriac, no pause", &report.queued_saturated),
        ("SMS sent inline", &report.inline),
    ] {
        let l = &variant.latency_ms;
        println!(
            "{name:<20} {:>6} requests ({} failed) · {:>8.0} req/s · p50 {:.2} · p90 {:.2} · p99 {:.2} · max {:.2} ms",
            variant.requests,
            variant.failures,
            variant.requests_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.max
        );
    }
}
