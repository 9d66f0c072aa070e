//! The tasks of `celeriac-test-cli`, an app binary made with `celeriac::cli::run`, which the CLI
//! tests drive as a user would: `celeriac-test-cli --broker URL worker …`, `… inspect active`.

use std::time::Duration;

/// Sleeps `millis` milliseconds: a long task to inspect and revoke.
#[celeriac::task(name = "cli_sleep")]
pub async fn cli_sleep(millis: u64) -> Result<u64, std::io::Error> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(millis)
}

/// Fails for good at once: dead-lettered.
#[celeriac::task(name = "cli_fail", max_retries = 0)]
pub async fn cli_fail(note: String) -> Result<(), std::io::Error> {
    Err(std::io::Error::other(format!(
        "cli_fail always fails: {note}"
    )))
}

/// Registers the tasks.
pub fn tasks(app: celeriac::AppBuilder) -> celeriac::AppBuilder {
    app.register::<cli_sleep>().register::<cli_fail>()
}
