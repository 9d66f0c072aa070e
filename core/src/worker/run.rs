use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::Arc;

use super::lane::lane;
use super::{Worker, WorkerReport};
use crate::WorkerError;
use crate::broker::{ConsumeOptions, DeliveryStream};
use crate::error::Report;
use crate::events::{Emitter, EventKind, EventTasks};

/// Back-off between attempts to reach a broker that is down: 100 ms doubling to 30 s.
pub(super) struct Reconnect {
    next: Duration,
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    pub(super) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub(super) fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Worker {
    /// Starts sending events, if this worker sends them and its broker carries them.
    async fn start_events(&self) -> Option<(Arc<Emitter>, EventTasks)> {
        if !self.events.on {
            return None;
        }
        let bus = match self.shared.app.broker().event_bus().await {
            Ok(Some(bus)) => bus,
            Ok(None) => {
                tracing::warn!(broker = %self.shared.app.broker().redacted_url(), "this broker carries no events; the worker sends none");
                return None;
            }
            Err(error) => {
                tracing::warn!(error = %Report(&error), "cannot reach the broker's event bus; the worker sends no events");
                return None;
            }
        };
        let online = EventKind::WorkerOnline {
            concurrency: self.concurrency,
            queues: self.queues.clone(),
            freq: self.events.heartbeat.as_secs_f64(),
        };
        let shared = self.shared.clone();
        let (emitter, tasks) = Emitter::start(
            bus,
            self.shared.hostname.clone(),
            self.events.heartbeat,
            online,
            move || shared.report.processed(),
        );
        let _ = self.shared.events.set(emitter.clone());
        Some((emitter, tasks))
    }

    /// Runs until `shutdown` completes, then shuts down gracefully: stops fetching, lets running tasks
    /// finish for up to the grace period, requeues the rest. Returns what the worker did.
    ///
    /// Broker errors do not stop the worker: outages, a broker loading its data after a restart, a
    /// failover — it logs, waits with back-off (100 ms doubling to 30 s) and consumes again, logging
    /// at error level when the error is not a known passing one. Only a request that can never
    /// succeed ([`BrokerError::is_invalid_request`](crate::BrokerError::is_invalid_request), such as
    /// an invalid queue name) ends it, with [`WorkerError::Consume`].
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
    /// let app = App::builder().broker(celeriac::MemoryBroker::new()).register::<hello>().build()?;
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
        // The fetch loop runs as a task of the runtime, not in the caller's future: `main`'s
        // `block_on` is not a runtime worker thread, and every run it spawned from there would go
        // through the injection queue and wake a parked thread (a futex call per task).
        let stop_fetching = CancellationToken::new();
        let mut fetching = tokio::spawn(self.fetch_until(stop_fetching.clone()));
        tokio::pin!(shutdown);
        let outcome = tokio::select! {
            biased;
            outcome = &mut fetching => outcome,
            () = &mut shutdown => {
                stop_fetching.cancel();
                fetching.await
            }
        };
        match outcome {
            Ok(result) => result,
            Err(error) => match error.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                // Only a runtime shutting down cancels the loop; nothing is left to report.
                Err(_) => Err(WorkerError::Cancelled),
            },
        }
    }

    async fn fetch_until(
        self,
        stop_fetching: CancellationToken,
    ) -> Result<WorkerReport, WorkerError> {
        let options = ConsumeOptions::default()
            .prefetch(self.prefetch)
            .max_message_bytes(self.shared.app.decode_limits().max_bytes());
        let stop_now = CancellationToken::new();
        let events = self.start_events().await;
        let sampling = self.queue_depth_every.map(|every| {
            let (shared, queues) = (self.shared.clone(), self.queues.clone());
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    crate::metrics::sample_queue_depth(&**shared.app.broker(), &queues).await;
                }
            })
        });
        // `concurrency` lanes, each running one task at a time, take deliveries from this loop. The
        // channel holds up to `concurrency` fetched deliveries waiting for a free lane (the broker's
        // prefetch window bounds how many are unsettled in all), so a lane that finishes finds its
        // next delivery without a round trip through the fetch loop.
        let listener = match self.shared.control {
            Some(_) => {
                let listening = super::control::Listening {
                    queues: self.queues.clone(),
                    concurrency: self.concurrency,
                    prefetch: self.prefetch,
                    stop_fetching: stop_fetching.clone(),
                };
                Some(super::control::listen(self.shared.clone(), listening).await)
            }
            None => None,
        };
        let (hand_out, handed) = async_channel::bounded(self.concurrency);
        let lanes = TaskTracker::new();
        for index in 0..self.concurrency {
            lanes.spawn(lane(
                self.shared.clone(),
                index,
                handed.clone(),
                stop_fetching.clone(),
                stop_now.clone(),
            ));
        }
        drop(handed);
        let mut stream: Option<DeliveryStream> = None;
        let mut reconnect = Reconnect::new();
        let mut failure = None;
        let shutdown = stop_fetching.cancelled();
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
                    Err(source) if source.is_invalid_request() => {
                        tracing::error!(error = %Report(&source), queues = ?self.queues, "the broker refuses these queues; stopping");
                        failure = Some(WorkerError::Consume {
                            queues: self.queues.clone(),
                            source,
                        });
                        break;
                    }
                    Err(error) => {
                        let delay = reconnect.delay();
                        if error.is_transient() {
                            tracing::warn!(error = %Report(&error), retry_in = ?delay, "cannot consume, will retry");
                        } else {
                            // Not known to pass, but a restart or repair of the broker may cure
                            // it: say so loudly and keep trying rather than stop serving.
                            tracing::error!(error = %Report(&error), retry_in = ?delay, "cannot consume; will retry until the broker accepts (check its configuration if this persists)");
                        }
                        tokio::select! {
                            biased;
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(delay) => continue,
                        }
                    }
                }
            };
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break,
                next = deliveries.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    reconnect.reset();
                    if let Some(control) = &self.shared.control {
                        control
                            .waiting
                            .fetched(delivery.payload(), delivery.queue());
                    }
                    // Waits for a free lane. A delivery dropped here at shutdown is redelivered.
                    let handed_out = tokio::select! {
                        biased;
                        () = &mut shutdown => break,
                        sent = hand_out.send(delivery) => sent.is_ok(),
                    };
                    if !handed_out {
                        break;
                    }
                }
                Some(Err(error)) => {
                    let delay = reconnect.delay();
                    tracing::warn!(error = %Report(&error), retry_in = ?delay, "error from the broker while consuming");
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

        // Stop fetching: deliveries the broker had not handed over yet stay with it; the lanes put
        // back the one still waiting for a lane, finish their runs and their settlements.
        stop_fetching.cancel();
        drop(stream);
        hand_out.close();
        lanes.close();
        tracing::info!(grace_period = ?self.grace_period, "stopping: waiting for running tasks");
        if tokio::time::timeout(self.grace_period, lanes.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; requeueing the tasks still running");
            stop_now.cancel();
            lanes.wait().await;
        }
        if let Err(error) = self.shared.app.broker().consumers_stopped().await {
            tracing::warn!(error = %Report(&error), "cannot remove this worker's consumers from the broker");
        }
        if let Some(sampling) = sampling {
            sampling.abort();
        }
        if let Some(listener) = listener {
            listener.abort();
        }
        let mut report = self.shared.report.snapshot();
        if let Some((emitter, tasks)) = events {
            tasks
                .stop(emitter.clone(), self.shared.report.processed())
                .await;
            report.events_dropped = emitter.dropped();
        }
        tracing::info!(?report, "worker stopped");
        match failure {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}
