//! Reads one task's result in its own process, as a web process would: `celeriac-test-result
//! <redis url> <task id> <timeout ms>`. Waits for it (push, through the Redis result backend), then
//! prints `ok <output>` or `error <ResultError>` and exits 0, or exits 2 on bad arguments.

use std::process::ExitCode;
use std::time::Duration;

use celeriac::{App, AsyncResult, TaskId};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, id, timeout_ms] = args.as_slice() else {
        eprintln!("usage: celeriac-test-result <redis url> <task id> <timeout ms>");
        return ExitCode::from(2);
    };
    let (Ok(id), Ok(timeout_ms)) = (id.parse::<TaskId>(), timeout_ms.parse::<u64>()) else {
        eprintln!("a task id (UUID) and a timeout in milliseconds, please");
        return ExitCode::from(2);
    };
    let app = match App::builder()
        .broker_url(url)
        .result_backend_url(url)
        .build()
    {
        Ok(app) => app,
        Err(error) => {
            eprintln!("{}", celeriac::error::Report(&error));
            return ExitCode::from(2);
        }
    };
    let result = AsyncResult::<i64>::from_id(&app, id);
    match result.get_timeout(Duration::from_millis(timeout_ms)).await {
        Ok(output) => println!("ok {output}"),
        Err(error) => println!("error {}", celeriac::error::Report(&error)),
    }
    ExitCode::SUCCESS
}
