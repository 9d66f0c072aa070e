//! The drain phase in a separate worker process, and what the OS says about a process.

use crate::measure::{self, DrainShape, Drained};

/// Peak resident set size of this process, in KiB (`VmHWM`).
pub(crate) fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time of this process so far, in seconds.
pub(crate) fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/<pid>/stat, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A one-line description of this machine, for the record.
pub(crate) fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|name| name.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} cores, {cpu}")
}

/// Runs the drain phase in a child process (`drain-worker`), so its RSS and CPU are the worker's own.
pub(crate) async fn drain_in_child(
    broker: crate::BrokerKind,
    url: &str,
    queue: &str,
    shape: DrainShape,
) -> Result<Drained, Box<dyn std::error::Error>> {
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            "drain-worker",
            "--broker",
            broker.name(),
            "--url",
            url,
            "--queue",
            queue,
        ])
        .args([
            "--tasks",
            &shape.tasks.to_string(),
            "--concurrency",
            &shape.concurrency.to_string(),
            "--prefetch",
            &shape.prefetch.to_string(),
            "--runtime",
            shape.runtime.name(),
            "--shards",
            &shape.shards.to_string(),
        ])
        // mimalloc commits whole arenas up front by default; a worker that keeps its footprint small
        // turns that off (the setting docs/benchmarks.md recommends for worker binaries).
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "0")
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!(
            "drain worker failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The child's side: a worker on `queue` until `tasks` no-op tasks ran.
pub(crate) async fn drain_worker(
    broker: crate::BrokerKind,
    url: &str,
    queue: &str,
    shape: DrainShape,
) -> Result<Drained, Box<dyn std::error::Error>> {
    let builder = celeriac::App::builder();
    let builder = match broker {
        crate::BrokerKind::Amqp => builder.broker(measure::amqp_broker(url, shape.shards).await?),
        _ => builder.broker(measure::redis_broker(url).await?),
    };
    let app = builder
        .default_queue(queue)
        .register::<measure::bench_noop>()
        .build()?;
    let cpu_before = cpu_seconds();
    let done_before = measure::DONE.load(std::sync::atomic::Ordering::Relaxed);
    let seconds = measure::drain(&app, shape).await?;
    Ok(Drained {
        seconds,
        runs: measure::DONE.load(std::sync::atomic::Ordering::Relaxed) - done_before,
        peak_rss_kib: peak_rss_kib(),
        cpu_seconds: cpu_seconds() - cpu_before,
    })
}
