//! celeriac in under 40 lines: a task, `delay`, and a worker, on the broker named by
//! `CELERIAC_BROKER_URL` (`memory://`, the embedded broker, when unset; `redis://…` or `amqp://…`).
//!
//! Run with `cargo run -p quickstart`.

use std::time::Duration;

use celeriac::{App, TaskContext};

#[celeriac::task(name = "ccp_send_sms_code", max_retries = 3, retry_backoff = 1)]
async fn ccp_send_sms_code(ctx: TaskContext, mobile: String, code: String) -> Result<(), String> {
    // A flaky SMS gateway: the first attempt fails, the retry (one back-off later) succeeds.
    if ctx.retries() == 0 {
        return Err(format!("gateway timeout sending to {mobile}"));
    }
    println!(
        "SMS to {mobile}: your code is {code} (attempt {})",
        ctx.retries() + 1
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), celeriac::Error> {
    tracing_subscriber::fmt()
        .with_env_filter("celeriac=info")
        .init();
    // The URL is the only thing that changes between the embedded broker, Redis and RabbitMQ.
    let url = std::env::var("CELERIAC_BROKER_URL").unwrap_or_else(|_| "memory://".into());
    let app = App::builder().broker_url(url).autodiscover().build()?;

    // What a web handler does: enqueue, get an id, answer at once.
    let id = ccp_send_sms_code::delay(&app, "13800138000".into(), "424242".into()).await?;
    println!("enqueued task {id}");

    // What a worker process does; here it stops after three seconds instead of on SIGTERM.
    let worker = app.worker().concurrency(4).build()?;
    let report = worker
        .run_until(tokio::time::sleep(Duration::from_secs(3)))
        .await?;
    println!("worker report: {report:?}");
    Ok(())
}
