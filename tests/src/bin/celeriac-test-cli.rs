//! An app's own binary made with `celeriac::cli::run`: every verb of the `celeriac` command, plus
//! `worker` and `beat` with the tasks of `celeriac_tests::cli` compiled in.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter("warn")
        .init();
    celeriac::cli::run(celeriac_tests::cli::tasks).await
}
