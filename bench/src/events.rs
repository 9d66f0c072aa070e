//! `celeriac-bench events <broker>`: what worker events cost a worker — the drain of no-ops by a
//! worker that sends events beside one that sends none, alternating rounds, medians. A subscriber
//! listens throughout, so the events are really carried (on Redis and RabbitMQ, through the
//! server); it counts the messages without decoding them, which is a monitor's work elsewhere.

use celeriac::{App, MemoryBroker};
use futures::StreamExt;
use serde::Serialize;

use crate::results::median;
use crate::{BrokerKind, measure};

#[derive(Debug, Serialize)]
pub(crate) struct EventsReport {
    broker: BrokerKind,
    machine: String,
    tasks: u64,
    rounds: usize,
    drain_without_events_per_sec: f64,
    drain_with_events_per_sec: f64,
    /// With ÷ without (target ≥ 0.85).
    ratio: f64,
    /// Messages (batches of events) the subscriber received over the rounds with events.
    batches_received: u64,
}

pub(crate) async fn run(
    broker: BrokerKind,
    broker_url: &str,
    tasks: u64,
    rounds: usize,
) -> Result<EventsReport, Box<dyn std::error::Error>> {
    let queue = format!("bench-events-{}", uuid::Uuid::new_v4().simple());
    let builder = App::builder()
        .default_queue(&queue)
        .register::<crate::measure::bench_noop>();
    let builder = match broker {
        BrokerKind::Memory => builder.broker(MemoryBroker::new()),
        BrokerKind::Redis => builder.broker(measure::redis_broker(broker_url).await?),
        BrokerKind::Amqp => builder.broker(measure::amqp_broker(broker_url, 1).await?),
    };
    let app = builder.build()?;
    eprintln!("celeriac-bench events: {broker:?} broker, {tasks} tasks × {rounds} rounds");
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
    for _ in 0..rounds {
        for events in [false, true] {
            shape.events = events;
            app.delay_batch::<crate::measure::bench_noop>((0..tasks).map(|n| (n,)))
                .await?;
            let rate = tasks as f64 / measure::drain(&app, shape).await?;
            if events {
                with.push(rate)
            } else {
                without.push(rate)
            }
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    counting.abort();
    let (without, with) = (median(without), median(with));
    Ok(EventsReport {
        broker,
        machine: crate::process::machine_description(),
        tasks,
        rounds,
        drain_without_events_per_sec: without,
        drain_with_events_per_sec: with,
        ratio: with / without,
        batches_received: received.load(std::sync::atomic::Ordering::Relaxed),
    })
}

pub(crate) fn print(report: &EventsReport) {
    println!();
    println!(
        "events · {:?} broker · {} · {} tasks × {} rounds",
        report.broker, report.machine, report.tasks, report.rounds
    );
    println!(
        "{:<34}{:>12.0} tasks/s",
        "drain, no events (median)", report.drain_without_events_per_sec
    );
    println!(
        "{:<34}{:>12.0} tasks/s",
        "drain, events (median)", report.drain_with_events_per_sec
    );
    println!(
        "{:<34}{:>12.2} (target ≥ 0.85)",
        "with ÷ without", report.ratio
    );
    println!(
        "{:<34}{:>12}",
        "event batches received", report.batches_received
    );
}
