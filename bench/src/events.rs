//! `celeriac-bench events <broker>` and `celeriac-bench signing <broker>`: what an opt-in feature
//! costs a worker — the drain of no-ops with the feature beside the drain without it, alternating
//! rounds, medians.
//!
//! - Events: the worker sends events. A subscriber listens throughout, so the events are really
//!   carried (on Redis and RabbitMQ, through the server); it counts the messages without decoding
//!   them, which is a monitor's work elsewhere.
//! - Signing: the tasks are signed (HMAC-SHA256) by their producer, and the worker verifies each
//!   before decoding it.
//! - Celery's format: the tasks are sent and read in Celery's wire format (on Redis, kombu's
//!   layout), beside celeriac's own.
//!
//! Each round also times the sends before its drain (`delay_batch`, batches of 10 000), and the
//! CPU time per task of the worker's process and of Redis.

use celeriac::{App, MemoryBroker};
use futures::StreamExt;
use serde::Serialize;

use crate::results::median;
use crate::{BrokerKind, measure};

/// The feature measured.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Feature {
    Events,
    Signing,
    /// Celery's wire format (and, on Redis, kombu's layout) against celeriac's own.
    Celery,
}

#[derive(Debug, Serialize)]
pub(crate) struct FeatureReport {
    feature: Feature,
    broker: BrokerKind,
    machine: String,
    tasks: u64,
    rounds: usize,
    drain_without_per_sec: f64,
    drain_with_per_sec: f64,
    /// With ÷ without (events: target ≥ 0.85).
    ratio: f64,
    /// What the feature adds to each task, in microseconds (from the two medians).
    cost_micros_per_task: f64,
    /// Messages (batches of events) the subscriber received over the rounds with events.
    batches_received: u64,
    /// Events the workers dropped (their buffer full), of the three a task makes.
    events_dropped: u64,
    /// CPU time per task without and with the feature.
    cpu_micros_per_task: measure::CpuPerTask,
    /// The sends before each drain (`delay_batch`, batches of 10 000), tasks a second, medians.
    publish_without_per_sec: f64,
    publish_with_per_sec: f64,
}

pub(crate) async fn run(
    feature: Feature,
    broker: BrokerKind,
    broker_url: &str,
    tasks: u64,
    rounds: usize,
) -> Result<FeatureReport, Box<dyn std::error::Error>> {
    let queue = format!("bench-{feature:?}-{}", uuid::Uuid::new_v4().simple()).to_lowercase();
    let broker_choice = match broker {
        BrokerKind::Memory => Broker::Memory(MemoryBroker::new()),
        BrokerKind::Redis => Broker::Redis(measure::redis_broker(broker_url).await?),
        BrokerKind::Amqp => Broker::Amqp(measure::amqp_broker(broker_url, 1).await?),
    };
    let builder = || {
        let builder = App::builder()
            .default_queue(&queue)
            .register::<crate::measure::bench_noop>();
        match &broker_choice {
            Broker::Memory(broker) => builder.broker(broker.clone()),
            Broker::Redis(broker) => builder.broker(broker.clone()),
            Broker::Amqp(broker) => builder.broker(broker.clone()),
        }
    };
    let app = builder().build()?;
    // Signing: the same broker, the tasks signed by their producer and checked by the worker.
    let key = celeriac::signing::SigningKey::new("bench", [7u8; 32])?;
    let signed = builder().sign_with(key).build()?;
    // Celery's format: on Redis, the broker of kombu's layout as well (its own queue's lists); on
    // RabbitMQ, messages as Celery sends them there (the body alone, headers as an AMQP table).
    let celery = match (&broker_choice, feature) {
        (Broker::Redis(_), Feature::Celery) => App::builder()
            .default_queue(&queue)
            .register::<crate::measure::bench_noop>()
            .broker(celeriac::redis::KombuBroker::connect(broker_url).await?)
            .celery_compat()
            .build()?,
        (Broker::Amqp(_), Feature::Celery) => App::builder()
            .default_queue(&queue)
            .register::<crate::measure::bench_noop>()
            .broker(
                celeriac_amqp::AmqpBroker::builder(broker_url)
                    .celery_format(true)
                    .connect()
                    .await?,
            )
            .celery_compat()
            .build()?,
        _ => builder().celery_compat().build()?,
    };
    eprintln!("celeriac-bench {feature:?}: {broker:?} broker, {tasks} tasks × {rounds} rounds");
    // A subscriber counting the messages that arrive (each a batch of events), so that events are
    // really carried; decoding them is a monitor's work, in its own process.
    let bus = app
        .broker()
        .event_bus()
        .await?
        .ok_or("this broker carries no events")?;
    let mut events = bus.subscribe(celeriac::events::EVENTS_TOPIC).await?;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(event) = events.next().await {
                if event.is_ok() {
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    });
    let mut shape = measure::DrainShape {
        tasks,
        concurrency: 64,
        prefetch: 256,
        runtime: crate::WorkerRuntime::Multi,
        shards: 1,
        events: false,
    };
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut published_without, mut published_with) = (Vec::new(), Vec::new());
    let on_redis = matches!(broker_choice, Broker::Redis(_));
    let mut cpu = measure::CpuRounds::new(on_redis.then_some(broker_url));
    let dropped_before = measure::EVENTS_DROPPED.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..rounds {
        for on in [false, true] {
            shape.events = on && matches!(feature, Feature::Events);
            let app = match feature {
                Feature::Signing if on => &signed,
                Feature::Celery if on => &celery,
                _ => &app,
            };
            // In batches: one batch of 100 000 of Celery's larger messages outlasts RabbitMQ's
            // confirm timeout on two cores.
            let publishing = std::time::Instant::now();
            for start in (0..tasks).step_by(10_000) {
                let end = (start + 10_000).min(tasks);
                app.delay_batch::<crate::measure::bench_noop>((start..end).map(|n| (n,)))
                    .await?;
            }
            let published = tasks as f64 / publishing.elapsed().as_secs_f64();
            match on {
                true => published_with.push(published),
                false => published_without.push(published),
            }
            cpu.start().await?;
            let rate = tasks as f64 / measure::drain(app, shape).await?;
            cpu.stop(tasks, on).await?;
            if on {
                with.push(rate)
            } else {
                without.push(rate)
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    counting.abort();
    let (without, with) = (median(without), median(with));
    Ok(FeatureReport {
        feature,
        broker,
        machine: crate::process::machine_description(),
        tasks,
        rounds,
        drain_without_per_sec: without,
        drain_with_per_sec: with,
        ratio: with / without,
        cost_micros_per_task: (1.0 / with - 1.0 / without) * 1e6,
        batches_received: received.load(std::sync::atomic::Ordering::Relaxed),
        events_dropped: measure::EVENTS_DROPPED.load(std::sync::atomic::Ordering::Relaxed)
            - dropped_before,
        cpu_micros_per_task: cpu.medians(),
        publish_without_per_sec: median(published_without),
        publish_with_per_sec: median(published_with),
    })
}

pub(crate) fn print(report: &FeatureReport) {
    let feature = match report.feature {
        Feature::Events => "events",
        Feature::Signing => "signing",
        Feature::Celery => "Celery's format",
    };
    println!();
    println!(
        "{feature} · {:?} broker · {} · {} tasks × {} rounds",
        report.broker, report.machine, report.tasks, report.rounds
    );
    println!(
        "{:<34}{:>12.0} tasks/s",
        format!("drain, no {feature} (median)"),
        report.drain_without_per_sec
    );
    println!(
        "{:<34}{:>12.0} tasks/s",
        format!("drain, {feature} (median)"),
        report.drain_with_per_sec
    );
    match report.feature {
        Feature::Events => println!(
            "{:<34}{:>12.2} (target ≥ 0.85)",
            "with ÷ without", report.ratio
        ),
        Feature::Signing => println!("{:<34}{:>12.2}", "with ÷ without", report.ratio),
        Feature::Celery => println!(
            "{:<34}{:>12.2} (target ≥ 0.50)",
            "Celery's ÷ celeriac's", report.ratio
        ),
    }
    println!(
        "{:<34}{:>12.2} µs",
        "cost per task", report.cost_micros_per_task
    );
    report.cpu_micros_per_task.print();
    println!(
        "{:<34}{:>12.0} tasks/s without, {:.0} with ({:.2})",
        "publish, batches of 10 000 (median)",
        report.publish_without_per_sec,
        report.publish_with_per_sec,
        report.publish_with_per_sec / report.publish_without_per_sec
    );
    if matches!(report.feature, Feature::Events) {
        println!(
            "{:<34}{:>12}",
            "event batches received", report.batches_received
        );
        let made = 3 * report.tasks * report.rounds as u64;
        println!(
            "{:<34}{:>12} of {made}",
            "events dropped by the worker", report.events_dropped
        );
    }
}

/// The broker both apps share.
enum Broker {
    Memory(MemoryBroker),
    Redis(celeriac::redis::RedisBroker),
    Amqp(celeriac::amqp::AmqpBroker),
}
