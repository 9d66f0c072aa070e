//! `celeriac-bench chord <broker>`: the wall time of `chord(group of N no-ops, callback)`, from
//! sending it to the callback's result, with one in-process worker; with `--with-celery`, Python
//! Celery's same chord on the same broker (Redis result backend) in the same run, through
//! `bench/celery/chord.sh`.

use std::convert::Infallible;
use std::time::Duration;

use celeriac::App;
use celeriac::canvas::{chord, group};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::BrokerKind;
use crate::results::{ResultsOn, app_with_results, median};

/// A chord member that does nothing but return its argument.
#[celeriac::task(name = "bench_chord_member")]
async fn bench_chord_member(n: u64) -> Result<u64, Infallible> {
    Ok(n)
}

/// The chord's callback: the sum of the members' outputs.
#[celeriac::task(name = "bench_chord_sum")]
async fn bench_chord_sum(parts: Vec<u64>) -> Result<u64, Infallible> {
    Ok(parts.iter().sum())
}

/// What the chord bench measured.
#[derive(Debug, Serialize)]
pub(crate) struct ChordReport {
    broker: BrokerKind,
    backend: String,
    machine: String,
    members: u64,
    concurrency: usize,
    /// Each round's wall time, in seconds.
    seconds: Vec<f64>,
    median_seconds: f64,
    celery: Option<CeleryChord>,
    /// Celery's median ÷ celeriac's.
    speedup: Option<f64>,
}

/// Python Celery's chord, as `bench/celery/chord.sh` prints it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CeleryChord {
    system: String,
    members: u64,
    seconds: Vec<f64>,
    median_seconds: f64,
}

/// How to run it.
#[derive(Debug)]
pub(crate) struct ChordShape {
    pub(crate) members: u64,
    pub(crate) rounds: usize,
    pub(crate) concurrency: usize,
    pub(crate) with_celery: bool,
}

pub(crate) async fn run(
    broker: BrokerKind,
    broker_url: &str,
    redis_url: &str,
    shape: &ChordShape,
) -> Result<ChordReport, Box<dyn std::error::Error>> {
    let queue = format!("bench-chord-{}", uuid::Uuid::new_v4().simple());
    let builder = App::builder()
        .register::<bench_chord_member>()
        .register::<bench_chord_sum>();
    let (app, backend) = app_with_results(
        builder,
        broker,
        broker_url,
        redis_url,
        &queue,
        ResultsOn::Default,
    )
    .await?;
    eprintln!(
        "celeriac-bench chord: {broker:?} broker, {backend} backend, {} members × {} rounds",
        shape.members, shape.rounds
    );
    let worker = app.worker().concurrency(shape.concurrency).build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let expected: u64 = (0..shape.members).sum();
    let mut seconds = Vec::with_capacity(shape.rounds);
    for _ in 0..shape.rounds {
        let started = Instant::now();
        let members = group((0..shape.members).map(bench_chord_member::s));
        let total = chord(members, bench_chord_sum::partial())
            .delay(&app)
            .await?
            .get_timeout(Duration::from_secs(600))
            .await?;
        seconds.push(started.elapsed().as_secs_f64());
        assert_eq!(
            total, expected,
            "the chord's callback summed something else"
        );
    }
    let _ = stop.send(());
    running.await??;
    let median_seconds = median(seconds.clone());
    let celery = if shape.with_celery {
        Some(celery_chord(broker, broker_url, shape).await?)
    } else {
        None
    };
    Ok(ChordReport {
        broker,
        backend: backend.to_owned(),
        machine: crate::process::machine_description(),
        members: shape.members,
        concurrency: shape.concurrency,
        speedup: celery
            .as_ref()
            .map(|celery| celery.median_seconds / median_seconds),
        seconds,
        median_seconds,
        celery,
    })
}

/// Runs `bench/celery/chord.sh` (which makes its virtualenv on first use) on the same broker.
async fn celery_chord(
    broker: BrokerKind,
    broker_url: &str,
    shape: &ChordShape,
) -> Result<CeleryChord, Box<dyn std::error::Error>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/celery/chord.sh");
    let mut command = tokio::process::Command::new(script);
    command.args([
        "--members",
        &shape.members.to_string(),
        "--rounds",
        &shape.rounds.to_string(),
    ]);
    if broker == BrokerKind::Amqp {
        command.args(["--broker", broker_url]);
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!("{script} failed: {}", output.status).into());
    }
    let text = String::from_utf8(output.stdout)?;
    let last = text
        .lines()
        .last()
        .ok_or("no output from the Celery script")?;
    Ok(serde_json::from_str(last)?)
}

pub(crate) fn print(report: &ChordReport) {
    println!();
    println!(
        "chord · {:?} broker · {} backend · {} · {} members · concurrency {}",
        report.broker, report.backend, report.machine, report.members, report.concurrency
    );
    println!(
        "{:<34}{:>10.3} s (median of {:?})",
        "celeriac", report.median_seconds, report.seconds
    );
    if let Some(celery) = &report.celery {
        println!(
            "{:<34}{:>10.3} s (median of {:?})",
            celery.system, celery.median_seconds, celery.seconds
        );
    }
    if let Some(speedup) = report.speedup {
        println!("{:<34}{:>10.1} ×", "celeriac is faster by", speedup);
    }
}
