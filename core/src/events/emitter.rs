//! A worker's side of events: a bounded buffer that runs hand events to, a task that publishes them
//! in batches, and the heartbeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Batch, EVENTS_TOPIC, EventBus, EventKind, Stamped, host, timestamp};
use crate::error::Report;

/// Events waiting to be published, at most; more are dropped and counted.
const BUFFER: usize = 8_192;

/// Events per publish, at most.
const BATCH: usize = 512;

/// How long a stopping worker waits for its last events to go out.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// The counter of events a worker dropped because its buffer was full or its bus failed.
const EVENTS_DROPPED: &str = "celeriac_events_dropped_total";

/// A worker's events: who it is, and where its events go.
pub(crate) struct Emitter {
    hostname: Arc<str>,
    pid: u32,
    sender: mpsc::Sender<Stamped>,
    /// Runs going on now (for heartbeats).
    active: AtomicU64,
    dropped: AtomicU64,
}

/// What runs beside a worker that sends events, and stops with it.
pub(crate) struct EventTasks {
    publisher: JoinHandle<()>,
    heartbeat: JoinHandle<()>,
    stop: CancellationToken,
}

impl Emitter {
    /// Starts sending events to `bus` as `hostname` (default `celeriac@<host>:<pid>`), with a
    /// heartbeat every `freq` carrying what `processed` counts. Says the worker is online.
    pub(crate) fn start(
        bus: Arc<dyn EventBus>,
        hostname: Option<String>,
        freq: Duration,
        online: EventKind,
        processed: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> (Arc<Self>, EventTasks) {
        let (emitter, publisher) = Self::publishing(bus, hostname);
        let concurrency = match &online {
            EventKind::WorkerOnline { concurrency, .. } => *concurrency,
            _ => 0,
        };
        emitter.emit(online);
        let stop = CancellationToken::new();
        let heartbeat = tokio::spawn({
            let (emitter, stop) = (emitter.clone(), stop.clone());
            async move {
                let mut ticks = tokio::time::interval(freq);
                ticks.tick().await;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = ticks.tick() => {}
                    }
                    emitter.emit(EventKind::WorkerHeartbeat {
                        concurrency,
                        active: emitter.active.load(Ordering::Relaxed),
                        processed: processed(),
                        freq: freq.as_secs_f64(),
                        loadavg: host::loadavg(),
                        rss_bytes: host::rss_bytes(),
                    });
                }
            }
        });
        let tasks = EventTasks {
            publisher,
            heartbeat,
            stop,
        };
        (emitter, tasks)
    }

    /// An emitter whose events a task of its own publishes to `bus` until the emitter is dropped
    /// (or a `worker-offline` event is out). A producer's (`task-sent`) has no heartbeat.
    pub(crate) fn publishing(
        bus: Arc<dyn EventBus>,
        hostname: Option<String>,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let pid = std::process::id();
        let hostname = hostname.unwrap_or_else(|| format!("celeriac@{}:{pid}", host::hostname()));
        let (sender, receiver) = mpsc::channel(BUFFER);
        let emitter = Arc::new(Self {
            hostname: hostname.into(),
            pid,
            sender,
            active: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let publisher = tokio::spawn(publish(bus, receiver, Arc::downgrade(&emitter)));
        (emitter, publisher)
    }

    /// Hands an event to the publisher; drops it (counted) if the buffer is full.
    pub(crate) fn emit(&self, kind: EventKind) {
        let event = Stamped {
            timestamp: timestamp(),
            kind,
        };
        if self.sender.try_send(event).is_err() {
            self.drop_events(1);
        }
    }

    /// A run started.
    pub(crate) fn started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// A run ended.
    pub(crate) fn ended(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
    }

    fn drop_events(&self, n: u64) {
        if self.dropped.fetch_add(n, Ordering::Relaxed) == 0 {
            tracing::warn!(
                "dropping worker events: the event buffer is full or the broker refuses them (counted in {EVENTS_DROPPED})"
            );
        }
        ::metrics::counter!(EVENTS_DROPPED).increment(n);
    }
}

impl Drop for EventTasks {
    fn drop(&mut self) {
        // A worker whose run was dropped does not go on beating.
        self.stop.cancel();
        self.heartbeat.abort();
        self.publisher.abort();
    }
}

impl EventTasks {
    /// Stops the heartbeat, says the worker is offline, and waits (a little) for the last events
    /// to go out.
    pub(crate) async fn stop(mut self, emitter: Arc<Emitter>, processed: u64) {
        self.stop.cancel();
        let _ = (&mut self.heartbeat).await;
        emitter.emit(EventKind::WorkerOffline { processed });
        // The publisher stops after publishing that event.
        if tokio::time::timeout(FLUSH_WITHIN, &mut self.publisher)
            .await
            .is_err()
        {
            tracing::warn!("the worker's last events were not all published");
        }
        self.publisher.abort();
    }
}

/// Publishes buffered events, each batch of those waiting as one message, until the worker's
/// offline event is out.
async fn publish(
    bus: Arc<dyn EventBus>,
    mut receiver: mpsc::Receiver<Stamped>,
    emitter: std::sync::Weak<Emitter>,
) {
    let mut events = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut events, BATCH).await > 0 {
        let Some(emitter) = emitter.upgrade() else {
            return;
        };
        let last = events
            .iter()
            .any(|event| matches!(event.kind, EventKind::WorkerOffline { .. }));
        let count = events.len() as u64;
        let batch = Batch::new(&emitter.hostname, emitter.pid, std::mem::take(&mut events));
        // About 120 bytes an event: one allocation for the batch.
        let mut encoded = Vec::with_capacity(128 * batch.events.len() + 64);
        let published = match serde_json::to_writer(&mut encoded, &batch) {
            Ok(()) => bus.publish(EVENTS_TOPIC, vec![Bytes::from(encoded)]).await,
            Err(error) => Err(crate::BrokerError::Invalid(error.to_string())),
        };
        if let Err(error) = published {
            tracing::debug!(error = %Report(&error), "cannot publish worker events");
            emitter.drop_events(count);
        }
        events = batch.events;
        events.clear();
        if last {
            return;
        }
    }
}
