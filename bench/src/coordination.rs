//! `celeriac-bench coordination <broker>`: what the coordination store's checks cost.
//!
//! - A unique task's claim, to its producer: `delay` of a plain no-op beside `delay` of a unique one
//!   (every key distinct, so every send goes through), 64 sends in flight; and the rate of refused
//!   duplicates.
//! - A cluster-wide rate limit's slot, to its worker: the drain of plain no-ops beside the drain of
//!   no-ops limited cluster-wide to a rate far above what the worker reaches, so that every check
//!   answers "now".
//!
//! Alternating rounds, medians.

use std::sync::atomic::{AtomicU64, Ordering};

use celeriac::{App, EnqueueError, MemoryBroker};
use serde::Serialize;
use tokio::time::Instant;

use crate::results::median;
use crate::{BrokerKind, measure};

/// Unique per argument list for five minutes (each round sends its own keys).
#[celeriac::task(name = "bench_unique", unique_for = "5m")]
async fn bench_unique(round: u64, n: u64) {
    let _ = (round, n);
}

/// Runs of the rate-limited no-op so far in this process.
static LIMITED: AtomicU64 = AtomicU64::new(0);

/// A no-op limited cluster-wide to a million runs a second: every check passes at once.
#[celeriac::task(
    name = "bench_limited",
    rate_limit = "1000000/s",
    rate_limit_scope = "cluster"
)]
async fn bench_limited(_n: u64) {
    LIMITED.fetch_add(1, Ordering::Relaxed);
}

/// Sends in flight at once, as concurrent web requests would.
const IN_FLIGHT: u64 = 64;

/// What the coordination bench measured.
#[derive(Debug, Serialize)]
pub(crate) struct CoordinationReport {
    broker: BrokerKind,
    machine: String,
    tasks: u64,
    rounds: usize,
    plain_per_sec: f64,
    unique_per_sec: f64,
    /// Unique ÷ plain (target ≥ 0.5).
    ratio: f64,
    /// What a claim adds to each send, in µs of wall time per task at 64 in flight.
    added_us_per_task: f64,
    /// Sends refused as duplicates, per second (nothing reaches the broker).
    duplicates_per_sec: f64,
    drain_plain_per_sec: f64,
    drain_limited_per_sec: f64,
    /// Limited ÷ plain drain (target ≥ 0.7).
    drain_ratio: f64,
    /// What a slot check adds to each run, in µs of wall time per task.
    drain_added_us_per_task: f64,
}

pub(crate) async fn run(
    broker: BrokerKind,
    broker_url: &str,
    redis_url: &str,
    tasks: u64,
    rounds: usize,
) -> Result<CoordinationReport, Box<dyn std::error::Error>> {
    let queue = format!("bench-unique-{}", uuid::Uuid::new_v4().simple());
    let builder = App::builder()
        .default_queue(&queue)
        .register::<crate::measure::bench_noop>()
        .register::<bench_unique>()
        .register::<bench_limited>();
    let builder = match broker {
        BrokerKind::Memory => builder.broker(MemoryBroker::new()),
        // The broker's own Redis holds the claims.
        BrokerKind::Redis => builder.broker(measure::redis_broker(broker_url).await?),
        BrokerKind::Amqp => builder
            .broker(measure::amqp_broker(broker_url, 1).await?)
            .coordination(
                celeriac::redis::RedisCoordination::builder(redis_url)
                    .key_prefix("celeriac-bench")
                    .connect()
                    .await?,
            ),
    };
    let app = builder.build()?;
    eprintln!("celeriac-bench coordination: {broker:?} broker, {tasks} tasks × {rounds} rounds");
    let (mut plain, mut unique, mut duplicates) = (Vec::new(), Vec::new(), Vec::new());
    let (mut drained, mut limited) = (Vec::new(), Vec::new());
    let shape = measure::DrainShape {
        tasks,
        concurrency: 64,
        prefetch: 256,
        runtime: crate::WorkerRuntime::Multi,
        shards: 1,
        events: false,
    };
    for _ in 0..rounds {
        plain.push(measure::publish_single(&app, tasks).await?);
        measure::purge(&app, &queue).await?;
        let key_space = uuid::Uuid::new_v4().as_u64_pair().0;
        unique.push(send_unique(&app, tasks, key_space, false).await?);
        measure::purge(&app, &queue).await?;
        // The same keys again: every send is a duplicate.
        duplicates.push(send_unique(&app, tasks, key_space, true).await?);
        app.delay_batch::<crate::measure::bench_noop>((0..tasks).map(|n| (n,)))
            .await?;
        drained.push(tasks as f64 / measure::drain_counted(&app, shape, &measure::DONE).await?);
        app.delay_batch::<bench_limited>((0..tasks).map(|n| (n,)))
            .await?;
        limited.push(tasks as f64 / measure::drain_counted(&app, shape, &LIMITED).await?);
    }
    let (plain, unique) = (median(plain), median(unique));
    let (drained, limited) = (median(drained), median(limited));
    Ok(CoordinationReport {
        broker,
        machine: crate::process::machine_description(),
        tasks,
        rounds,
        plain_per_sec: plain,
        unique_per_sec: unique,
        ratio: unique / plain,
        added_us_per_task: 1e6 / unique - 1e6 / plain,
        duplicates_per_sec: median(duplicates),
        drain_plain_per_sec: drained,
        drain_limited_per_sec: limited,
        drain_ratio: limited / drained,
        drain_added_us_per_task: 1e6 / limited - 1e6 / drained,
    })
}

/// Sends `tasks` unique tasks keyed `(key_space, n)`, 64 in flight; returns sends/s. With
/// `expect_duplicates`, every send must be refused; otherwise every send must go through.
async fn send_unique(
    app: &App,
    tasks: u64,
    key_space: u64,
    expect_duplicates: bool,
) -> Result<f64, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for lane in 0..IN_FLIGHT {
        let app = app.clone();
        senders.spawn(async move {
            let mut n = lane;
            while n < tasks {
                match bench_unique::delay(&app, key_space, n).await {
                    Ok(_) if !expect_duplicates => {}
                    Err(EnqueueError::Duplicate(_)) if expect_duplicates => {}
                    Ok(_) => return Err("a duplicate went through".to_owned()),
                    Err(error) => return Err(celeriac::error::Report(&error).to_string()),
                }
                n += IN_FLIGHT;
            }
            Ok(())
        });
    }
    while let Some(result) = senders.join_next().await {
        result??;
    }
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

pub(crate) fn print(report: &CoordinationReport) {
    println!();
    println!(
        "coordination · {:?} broker · {} · {} tasks × {} rounds · {IN_FLIGHT} sends in flight",
        report.broker, report.machine, report.tasks, report.rounds
    );
    let rows = [
        ("delay, plain (median)", report.plain_per_sec),
        ("delay, unique (median)", report.unique_per_sec),
        ("duplicates refused (median)", report.duplicates_per_sec),
    ];
    for (label, rate) in rows {
        println!("{label:<34}{rate:>12.0} sends/s");
    }
    println!(
        "{:<34}{:>12.2} (target ≥ 0.50), +{:.1} µs per send",
        "unique ÷ plain", report.ratio, report.added_us_per_task
    );
    let rows = [
        ("drain, plain (median)", report.drain_plain_per_sec),
        (
            "drain, cluster rate limit (median)",
            report.drain_limited_per_sec,
        ),
    ];
    for (label, rate) in rows {
        println!("{label:<34}{rate:>12.0} tasks/s");
    }
    println!(
        "{:<34}{:>12.2} (target ≥ 0.70), +{:.1} µs per run",
        "rate-limited ÷ plain drain", report.drain_ratio, report.drain_added_us_per_task
    );
}
