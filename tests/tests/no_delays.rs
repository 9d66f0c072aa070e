//! A broker that cannot delay messages (kombu's Redis layout, as Celery uses it: the ETA travels
//! in the message and the worker waits) makes the worker hold an early task until it is due, as
//! Celery's workers do: not run early, not sent back to the broker in a loop, and back in the queue
//! if the worker stops while holding it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use celeriac::async_trait;
use celeriac::broker::{
    Broker, BrokerError, Capabilities, ConsumeOptions, DeliveryStream, Outgoing, QueueStats,
};
use celeriac::{App, MemoryBroker, State};
use celeriac_tests::harness::BackgroundWorker;
use tokio::time::Instant;

/// The embedded broker, saying it cannot delay and delivering at once what it is asked to delay.
#[derive(Clone, Debug, Default)]
struct NoDelays {
    inner: MemoryBroker,
    published: Arc<AtomicU64>,
}

#[async_trait]
impl Broker for NoDelays {
    fn system(&self) -> &'static str {
        "memory"
    }

    fn redacted_url(&self) -> String {
        "memory://no-delays".into()
    }

    async fn publish(&self, mut message: Outgoing) -> Result<(), BrokerError> {
        self.published.fetch_add(1, Ordering::SeqCst);
        message.not_before = None;
        self.inner.publish(message).await
    }

    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        self.inner.consume(queues, options).await
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.inner.capabilities();
        capabilities.delays = false;
        capabilities.max_delay = None;
        capabilities
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        self.inner.stats(queue).await
    }
}

/// When `later` ran, on tokio's clock.
#[derive(Clone, Default)]
struct Ran(Arc<std::sync::Mutex<Vec<Instant>>>);

#[celeriac::task]
async fn later(ran: State<Ran>) -> Result<(), std::io::Error> {
    ran.0
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Instant::now());
    Ok(())
}

fn app(broker: &NoDelays, ran: &Ran) -> App {
    App::builder()
        .broker(broker.clone())
        .state(ran.clone())
        .register::<later>()
        .build()
        .expect("the app builds")
}

#[tokio::test(start_paused = true)]
async fn an_early_task_is_held_by_the_worker_until_it_is_due() {
    let (broker, ran) = (NoDelays::default(), Ran::default());
    let app = app(&broker, &ran);
    let sent_at = Instant::now();
    later::delay(&app)
        .countdown(Duration::from_secs(30))
        .await
        .expect("sent");
    let report = celeriac::testing::run_until_idle(&app)
        .await
        .expect("the worker runs");
    assert_eq!(report.succeeded, 1);
    let runs = ran.0.lock().map(|runs| runs.clone()).unwrap_or_default();
    assert_eq!(runs.len(), 1);
    let waited = runs[0] - sent_at;
    assert!(
        waited >= Duration::from_secs(29) && waited < Duration::from_secs(32),
        "ran after {waited:?}"
    );
    // Held, not sent back to the broker to wait.
    assert_eq!(broker.published.load(Ordering::SeqCst), 1);
}

/// A short wait too (a retry's back-off of half a second): without delays in the broker, no
/// tolerance for early delivery applies.
#[tokio::test(start_paused = true)]
async fn a_task_due_in_less_than_a_second_waits_for_its_time() {
    let (broker, ran) = (NoDelays::default(), Ran::default());
    let app = app(&broker, &ran);
    let sent_at = Instant::now();
    later::delay(&app)
        .countdown(Duration::from_millis(500))
        .await
        .expect("sent");
    celeriac::testing::run_until_idle(&app)
        .await
        .expect("the worker runs");
    let runs = ran.0.lock().map(|runs| runs.clone()).unwrap_or_default();
    assert_eq!(runs.len(), 1);
    let waited = runs[0] - sent_at;
    assert!(
        waited >= Duration::from_millis(490) && waited < Duration::from_secs(2),
        "ran after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_task_goes_back_to_the_queue_when_the_worker_stops() {
    let (broker, ran) = (NoDelays::default(), Ran::default());
    let app = app(&broker, &ran);
    later::delay(&app)
        .countdown(Duration::from_secs(3600))
        .await
        .expect("sent");
    let worker = BackgroundWorker::start(app.worker().build().expect("the worker builds"));
    // Taken and held.
    for _ in 0..100 {
        let stats = broker.stats("celery").await.expect("stats");
        if stats.unacked == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(broker.stats("celery").await.expect("stats").unacked, 1);
    let report = worker.stop().await;
    assert_eq!(report.succeeded, 0);
    let stats = broker.stats("celery").await.expect("stats");
    assert_eq!((stats.ready, stats.unacked), (1, 0));
    assert!(ran.0.lock().map(|runs| runs.is_empty()).unwrap_or(false));
}
