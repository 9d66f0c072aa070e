use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::process::process;
use super::{Worker, WorkerReport};
use crate::WorkerError;
use crate::broker::{ConsumeOptions, DeliveryStream};

/// Back-off between attempts to reach a broker that is down: 100 ms doubling to 30 s.
struct Reconnect {
    next: Duration,
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Worker {
    /// Runs until `shutdown` completes, then shuts down gracefully: stops fetching, lets running tasks
    /// finish for up to the grace period, requeues the rest. Returns what the worker did.
    ///
    /// Broker outages do not stop the worker: it logs, waits with back-off and consumes again. Only a
    /// broker that refuses the queues outright (a non-transient error) ends it with an error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use celeriac::App;
    ///
    /// #[celeriac::task]
    /// async fn hello(name: String) {
    ///     println!("hello, {name}");
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), celeriac::Error> {
    /// let app = App::builder().register::<hello>().build()?;
    /// hello::delay(&app, "world".into()).await?;
    /// let worker = app.worker().build()?;
    /// let report = worker.run_until(tokio::time::sleep(Duration::from_millis(100))).await?;
    /// assert_eq!(report.succeeded, 1);
    /// # Ok(()) }
    /// ```
    pub async fn run_until<F>(self, shutdown: F) -> Result<WorkerReport, WorkerError>
    where
        F: Future<Output = ()> + Send,
    {
        crate::metrics::describe();
        tracing::info!(
            queues = ?self.queues,
            concurrency = self.concurrency,
            broker = %self.shared.app.broker().redacted_url(),
            "worker started"
        );
        let options = ConsumeOptions::default().prefetch(self.prefetch);
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let stop_now = CancellationToken::new();
        let running = TaskTracker::new();
        let mut stream: Option<DeliveryStream> = None;
        let mut reconnect = Reconnect::new();
        let mut failure = None;
        tokio::pin!(shutdown);

        loop {
            let Some(deliveries) = stream.as_mut() else {
                let consume = self.shared.app.broker().consume(&self.queues, options);
                let consumed = tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    consumed = consume => consumed,
                };
                match consumed {
                    Ok(deliveries) => {
                        reconnect.reset();
                        stream = Some(deliveries);
                        continue;
                    }
                    Err(error) if error.is_transient() => {
                        let delay = reconnect.delay();
                        tracing::warn!(%error, retry_in = ?delay, "cannot consume, will retry");
                        tokio::select! {
                            biased;
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(delay) => continue,
                        }
                    }
                    Err(source) => {
                        failure = Some(WorkerError::Consume {
                            queues: self.queues.clone(),
                            source,
                        });
                        break;
                    }
                }
            };
            let slot = tokio::select! {
                biased;
                () = &mut shutdown => break,
                slot = slots.clone().acquire_owned() => slot,
            };
            let Ok(slot) = slot else {
                // The semaphore is never closed; treat it as a shutdown if it ever were.
                break;
            };
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break,
                next = deliveries.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    reconnect.reset();
                    running.spawn(process(
                        self.shared.clone(),
                        delivery,
                        slot,
                        stop_now.clone(),
                    ));
                }
                Some(Err(error)) => {
                    let delay = reconnect.delay();
                    tracing::warn!(%error, retry_in = ?delay, "error from the broker while consuming");
                    drop(slot);
                    if !error.is_transient() {
                        stream = None;
                    }
                    tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                None => {
                    tracing::warn!("the broker closed the delivery stream; consuming again");
                    stream = None;
                }
            }
        }

        // Stop fetching: deliveries the broker had not handed over yet stay with it.
        drop(stream);
        running.close();
        let in_flight = running.len();
        if in_flight > 0 {
            tracing::info!(in_flight, grace_period = ?self.grace_period, "waiting for running tasks");
        }
        if tokio::time::timeout(self.grace_period, running.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_running = running.len(),
                "grace period over; requeueing the tasks still running"
            );
            stop_now.cancel();
            running.wait().await;
        }
        let report = self.shared.report.snapshot();
        tracing::info!(?report, "worker stopped");
        match failure {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}
