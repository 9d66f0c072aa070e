//! `celeriac-bench scale`: how cost grows with the work, on one broker.
//!
//! - **worker processes**: `--tasks` no-ops queued, then drained by 1, 2 and 4 worker processes
//!   (each runs its share and stops; the wall time is the slowest one's);
//! - **queues**: `--tasks` no-ops spread evenly over 1, 100 and 1 000 queues, drained by one worker
//!   (in this process) consuming all of them;
//! - **backlog**: `--backlog` no-ops queued, then drained by one worker process: tasks/s and its
//!   peak RSS;
//! - **broker memory per queued task**: what the broker's memory grew by while `--tasks` no-ops
//!   were queued, divided by them (Redis: `used_memory`; RabbitMQ: the queue's own `memory` as
//!   `rabbitmqctl list_queues` reports it).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use celeriac::{App, SendOptions};
use serde::Serialize;

use crate::BrokerKind;
use crate::measure::{self, DONE, DrainShape, bench_noop};

/// What to measure.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ScaleShape {
    pub(crate) tasks: u64,
    pub(crate) backlog: u64,
    pub(crate) concurrency: usize,
}

/// One point of a curve.
#[derive(Debug, Serialize)]
pub(crate) struct Point {
    /// Worker processes, or queues.
    pub(crate) n: usize,
    pub(crate) tasks_per_sec: f64,
}

/// What a scale run measured.
#[derive(Debug, Serialize)]
pub(crate) struct ScaleReport {
    pub(crate) broker: &'static str,
    pub(crate) machine: String,
    pub(crate) shape: ScaleShape,
    pub(crate) by_worker_processes: Vec<Point>,
    pub(crate) by_queues: Vec<Point>,
    pub(crate) backlog_tasks_per_sec: f64,
    pub(crate) backlog_worker_peak_rss_mib: f64,
    pub(crate) broker_bytes_per_queued_task: Option<f64>,
}

const WORKER_PROCESSES: [usize; 3] = [1, 2, 4];
const QUEUES: [usize; 3] = [1, 100, 1_000];

pub(crate) async fn run(
    broker: BrokerKind,
    url: &str,
    shape: ScaleShape,
) -> Result<ScaleReport, Box<dyn std::error::Error>> {
    if broker == BrokerKind::Memory {
        return Err("scale measures worker processes and broker memory: use redis or amqp".into());
    }
    let drain = |tasks: u64| DrainShape {
        tasks,
        concurrency: shape.concurrency,
        prefetch: shape.concurrency * 4,
        runtime: crate::WorkerRuntime::Multi,
        shards: 1,
        events: false,
    };

    let mut by_worker_processes = Vec::new();
    for processes in WORKER_PROCESSES {
        let (app, queue) = measure::app(broker, url, 1).await?;
        let tasks = shape.tasks - shape.tasks % processes as u64;
        measure::publish_batched(&app, tasks).await?;
        // Each process stops after its share, less what a stopping worker may still run (it
        // finishes what it holds); this process then runs the few left, timed too.
        let margin = 2 * (shape.concurrency * 4) as u64;
        let share = drain((tasks / processes as u64).saturating_sub(margin).max(1));
        let children = (0..processes)
            .map(|_| crate::process::drain_in_child(broker, url, &queue, share))
            .collect::<Vec<_>>();
        let (mut slowest, mut ran) = (0.0_f64, 0_u64);
        for drained in futures::future::join_all(children).await {
            let drained = drained?;
            slowest = slowest.max(drained.seconds);
            ran += drained.runs;
        }
        let left = tasks.saturating_sub(ran);
        let finishing = if left > 0 {
            measure::drain(&app, drain(left)).await?
        } else {
            0.0
        };
        by_worker_processes.push(Point {
            n: processes,
            tasks_per_sec: tasks as f64 / (slowest + finishing),
        });
        measure::purge(&app, &queue).await?;
    }

    let mut by_queues = Vec::new();
    for count in QUEUES {
        let (app, queue) = measure::app(broker, url, 1).await?;
        let queues: Vec<String> = (0..count).map(|index| format!("{queue}-{index}")).collect();
        let tasks = shape.tasks - shape.tasks % count as u64;
        spread(&app, &queues, tasks).await?;
        let seconds = drain_queues(&app, &queues, drain(tasks)).await?;
        by_queues.push(Point {
            n: count,
            tasks_per_sec: tasks as f64 / seconds,
        });
        for queue in &queues {
            measure::purge(&app, queue).await?;
        }
    }

    let (app, queue) = measure::app(broker, url, 1).await?;
    let before = broker_memory(broker, url, &queue).await?;
    measure::publish_batched(&app, shape.tasks).await?;
    let after = broker_memory(broker, url, &queue).await?;
    // A RabbitMQ queue is declared on first use: not listed before, it held nothing.
    let broker_bytes_per_queued_task =
        after.map(|after| after.saturating_sub(before.unwrap_or(0)) as f64 / shape.tasks as f64);
    measure::purge(&app, &queue).await?;

    let (app, queue) = measure::app(broker, url, 1).await?;
    measure::publish_batched(&app, shape.backlog).await?;
    let backlog = crate::process::drain_in_child(broker, url, &queue, drain(shape.backlog)).await?;
    measure::purge(&app, &queue).await?;

    Ok(ScaleReport {
        broker: broker.name(),
        machine: crate::process::machine_description(),
        shape: shape.clone(),
        by_worker_processes,
        by_queues,
        backlog_tasks_per_sec: shape.backlog as f64 / backlog.seconds,
        backlog_worker_peak_rss_mib: backlog.peak_rss_kib as f64 / 1024.0,
        broker_bytes_per_queued_task,
    })
}

/// Sends `tasks` no-ops spread evenly over `queues`, 64 sends in flight.
async fn spread(
    app: &App,
    queues: &[String],
    tasks: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut senders = tokio::task::JoinSet::new();
    for lane in 0..64_u64 {
        let (app, queues) = (app.clone(), queues.to_vec());
        senders.spawn(async move {
            let mut n = lane;
            while n < tasks {
                let queue = &queues[(n % queues.len() as u64) as usize];
                app.apply_async::<bench_noop>((n,), SendOptions::new().queue(queue.clone()))
                    .await?;
                n += 64;
            }
            Ok::<_, celeriac::EnqueueError>(())
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    Ok(())
}

/// One worker in this process consuming every queue of `queues` until `shape.tasks` ran; seconds.
async fn drain_queues(
    app: &App,
    queues: &[String],
    shape: DrainShape,
) -> Result<f64, celeriac::Error> {
    let target = DONE.load(Ordering::Relaxed) + shape.tasks;
    let worker = app
        .worker()
        .queues(queues.iter().cloned())
        .concurrency(shape.concurrency)
        .prefetch(shape.prefetch)
        .build()?;
    let started = Instant::now();
    worker
        .run_until(async {
            while DONE.load(Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The broker's memory now, in bytes: Redis's `used_memory`, or the RabbitMQ queue's `memory`.
async fn broker_memory(
    broker: BrokerKind,
    url: &str,
    queue: &str,
) -> Result<Option<u64>, Box<dyn std::error::Error>> {
    match broker {
        BrokerKind::Redis => {
            let mut conn = redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?;
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut conn)
                .await?;
            Ok(info
                .lines()
                .find_map(|line| line.strip_prefix("used_memory:"))
                .and_then(|bytes| bytes.trim().parse().ok()))
        }
        BrokerKind::Amqp => {
            // Give RabbitMQ's statistics a moment to catch up with the publishes.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let listing = tokio::process::Command::new("rabbitmqctl")
                .args([
                    "list_queues",
                    "--quiet",
                    "--no-table-headers",
                    "name",
                    "memory",
                ])
                .output()
                .await?;
            Ok(String::from_utf8_lossy(&listing.stdout)
                .lines()
                .filter_map(|line| line.split_once('\t'))
                .find(|(name, _)| *name == queue)
                .and_then(|(_, bytes)| bytes.trim().parse().ok()))
        }
        BrokerKind::Memory => Ok(None),
    }
}

pub(crate) fn print(report: &ScaleReport) {
    println!(
        "\nscale · broker {} · {} tasks per curve point · backlog {} · concurrency {} · {}",
        report.broker,
        report.shape.tasks,
        report.shape.backlog,
        report.shape.concurrency,
        report.machine
    );
    for point in &report.by_worker_processes {
        println!(
            "drain, {} worker process(es)           {:>9.0} tasks/s",
            point.n, point.tasks_per_sec
        );
    }
    for point in &report.by_queues {
        println!(
            "drain, one worker on {:>4} queue(s)      {:>9.0} tasks/s",
            point.n, point.tasks_per_sec
        );
    }
    println!(
        "backlog drain                           {:>9.0} tasks/s · worker peak RSS {:.1} MiB",
        report.backlog_tasks_per_sec, report.backlog_worker_peak_rss_mib
    );
    match report.broker_bytes_per_queued_task {
        Some(bytes) => println!("broker memory per queued task           {bytes:>9.0} bytes"),
        None => println!("broker memory per queued task           (not measured)"),
    }
}
