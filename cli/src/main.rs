//! `celeriac`: operate celeriac workers from a shell — status, inspect, control, revoke, purge,
//! dead letters, live events. Verbs that run tasks (`worker`, `beat`) belong to your app's own
//! binary, which gets every verb from [`celeriac::cli::run`].

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    celeriac::cli::run(|app| app).await
}
