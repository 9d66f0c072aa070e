//! A beat process for the failover tests: one entry, `tick`, sending `beat_tick(run)` every second
//! to `queue`. The tests kill it, pause it, and read its log for when it leads.
//!
//! Usage: `celeriac-test-beat <broker-url> <queue> <beat-name> <lease-ms> <run> <store|broker>`:
//! `store` elects through the Redis coordination store (`CELERIAC_REDIS_URL`), `broker` through the
//! broker's own election (RabbitMQ's single-active-consumer queue).

use std::process::ExitCode;
use std::time::Duration;

use celeriac::App;
use celeriac::beat::Entry;
use celeriac_tests::beat::beat_tick;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(std::env::var("CELERIAC_TEST_BEAT_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, queue, name, lease_ms, run, election] = args.as_slice() else {
        eprintln!(
            "usage: celeriac-test-beat <broker-url> <queue> <beat-name> <lease-ms> <run> <store|broker>"
        );
        return ExitCode::from(2);
    };
    let Ok(lease_ms) = lease_ms.parse::<u64>() else {
        eprintln!("lease-ms must be a number");
        return ExitCode::from(2);
    };
    let mut app = App::builder().broker_url(url).default_queue(queue);
    if election == "store" {
        app = app.coordination_url(celeriac_tests::harness::redis_url());
    }
    let beat = app.build().and_then(|app| {
        app.beat()
            .name(name)
            .lease(Duration::from_millis(lease_ms))
            .entry(Entry::every(
                "tick",
                Duration::from_secs(1),
                beat_tick::s(run.clone()),
            ))
            .build()
    });
    match beat {
        Ok(beat) => {
            let report = beat.run().await;
            eprintln!("celeriac-test-beat: {report:?}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("celeriac-test-beat: {error}");
            ExitCode::FAILURE
        }
    }
}
