use std::time::Duration;

use crate::{App, Error, WorkerReport};

/// Runs a worker of `app` until every queue it consumes is empty and nothing is in flight — retries
/// and countdowns included — and returns its report: the test harness for tasks (Celery's
/// `task_always_eager`, with the real worker's retry and dead-letter decisions). Use it with
/// tokio's paused clock (`#[tokio::test(start_paused = true)]`) and the in-memory broker, so back-off
/// delays take no real time.
///
/// ```
/// use celeriac::{App, MemoryBroker};
///
/// #[celeriac::task(max_retries = 2, retry_backoff = 10)]
/// async fn flaky(mobile: String) -> Result<(), std::io::Error> {
///     Err(std::io::Error::other(format!("gateway down for {mobile}")))
/// }
///
/// # fn main() -> Result<(), celeriac::Error> {
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let app = App::builder().broker(MemoryBroker::new()).register::<flaky>().build()?;
/// flaky::delay(&app, "13800138000".into()).await?;
///
/// let report = celeriac::testing::run_until_idle(&app).await?;
/// // This input retries twice, then is dead-lettered.
/// assert_eq!((report.succeeded, report.retried, report.dead_lettered), (0, 2, 1));
/// # Ok(()) })
/// # }
/// ```
///
/// The broker must report statistics ([`Capabilities::stats`](crate::broker::Capabilities)); a task
/// that retries forever never lets the queue go idle.
pub async fn run_until_idle(app: &App) -> Result<WorkerReport, Error> {
    let worker = app.worker().build()?;
    let queues = worker.queues().to_vec();
    let broker = app.broker().clone();
    let idle = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let mut waiting = 0;
            for queue in &queues {
                waiting += match broker.stats(queue).await {
                    Ok(stats) => stats.ready + stats.delayed + stats.unacked,
                    Err(_) => 1,
                };
            }
            if waiting == 0 {
                break;
            }
        }
    };
    Ok(worker.run_until(idle).await?)
}
