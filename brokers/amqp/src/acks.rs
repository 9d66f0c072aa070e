//! Batched settlement of one consumer channel's deliveries.
//!
//! Acks are sent as `basic.ack` with `multiple = true` for the longest prefix of delivery tags that are
//! all settled, one frame for many messages. A delivery still running holds the prefix back, so when
//! many later acks pile up behind it they are sent one by one instead, and the prefetch window keeps
//! moving. Nacks (requeue) go out at once, always before a multiple-ack that spans them, so a
//! multiple-ack never covers a tag that was meant to be nacked. Callers wait until their own ack was
//! sent.
//!
//! Settling only records the tag in a shared [`Window`] (a short lock); the task that talks to
//! RabbitMQ is woken when something is due — a full batch, a nack, the delay's timer — not once per
//! delivery, because on a busy worker those wake-ups cost more than the acks themselves.
//!
//! Acks are coalesced: the prefix is sent once it holds a quarter of the prefetch window, or
//! [`ACK_DELAY`] after its first ack, whichever comes first. Acks stuck behind a running delivery go
//! out one by one once 32 pile up or [`STUCK_DELAY`] after the first, so no caller waits unbounded.
//! One frame per many messages is what
//! keeps RabbitMQ's own CPU (on the same machine, often) from being the bottleneck; the delay only
//! widens, by at most that much, the window in which a crash makes RabbitMQ redeliver a task that
//! had already finished — which at-least-once delivery allows anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use celeriac_core::BrokerError;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::from_lapin;
use crate::window::{Window, Work};

/// Acks waiting behind a running delivery before they are sent one by one.
const RELIEVE_AFTER: usize = 32;

/// The longest an ack waits for others to share its frame.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(1);

/// The longest an ack waits behind a running delivery before it is sent alone. Much longer than
/// [`ACK_DELAY`]: with many tasks in flight some earlier one is nearly always still running, and
/// sending every ack behind it alone would cost RabbitMQ a frame per message again.
const STUCK_DELAY: Duration = Duration::from_millis(50);

type Done = oneshot::Sender<Result<(), BrokerError>>;

/// What the handles and the settling task share.
struct Inner {
    window: Mutex<Window<Done>>,
    /// Set when the last handle is gone: the task sends what is left and closes the channel.
    closing: AtomicBool,
    wake: Notify,
}

impl Inner {
    fn window(&self) -> MutexGuard<'_, Window<Done>> {
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Tells the settling task when the last handle is dropped.
#[derive(Debug)]
struct LastHandle(Arc<Inner>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckWindow").finish_non_exhaustive()
    }
}

/// The handle deliveries settle through; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AckWindow {
    handle: Arc<LastHandle>,
}

impl AckWindow {
    /// Starts the settling task of `channel`, whose prefetch window is `prefetch` deliveries. When
    /// every handle is gone (the consumer and all its deliveries), it closes the channel.
    pub(crate) fn start(channel: Channel, prefetch: usize) -> Self {
        let inner = Arc::new(Inner {
            window: Mutex::new(Window::new((prefetch / 4).max(1), RELIEVE_AFTER)),
            closing: AtomicBool::new(false),
            wake: Notify::new(),
        });
        tokio::spawn(run(channel, inner.clone()));
        Self {
            handle: Arc::new(LastHandle(inner)),
        }
    }

    fn inner(&self) -> &Inner {
        &self.handle.0
    }

    /// Acks `tag`, returning once the ack covering it was sent (within [`ACK_DELAY`]).
    pub(crate) async fn ack(&self, tag: u64) -> Result<(), BrokerError> {
        self.send_ack(tag, false).await
    }

    /// Acks `tag` without waiting for other acks to share the frame: for the consumer's own
    /// settlements, which a message's next step (its recounted copy) must not overtake.
    pub(crate) async fn ack_now(&self, tag: u64) -> Result<(), BrokerError> {
        self.send_ack(tag, true).await
    }

    async fn send_ack(&self, tag: u64, now: bool) -> Result<(), BrokerError> {
        let (done, sent) = oneshot::channel();
        let wake = {
            let mut window = self.inner().window();
            window.ack(tag, done, now);
            window.wake_after_ack()
        };
        if wake {
            self.inner().wake.notify_one();
        }
        sent.await
            .unwrap_or(Err(BrokerError::Disconnected { op: "ack" }))
    }

    /// Nacks `tag` with requeue, returning once sent.
    pub(crate) async fn requeue(&self, tag: u64) -> Result<(), BrokerError> {
        let (done, sent) = oneshot::channel();
        self.inner().window().nack(tag, Some(done));
        self.inner().wake.notify_one();
        sent.await
            .unwrap_or(Err(BrokerError::Disconnected { op: "requeue" }))
    }

    /// Nacks `tag` with requeue without waiting (for deliveries dropped unsettled).
    pub(crate) fn requeue_later(&self, tag: u64) {
        self.inner().window().nack(tag, None);
        self.inner().wake.notify_one();
    }
}

fn copy(result: &Result<(), BrokerError>) -> Result<(), BrokerError> {
    match result {
        Ok(()) => Ok(()),
        Err(BrokerError::Disconnected { op }) => Err(BrokerError::Disconnected { op }),
        Err(other) => Err(BrokerError::Backend {
            context: "rabbitmq ack failed".to_owned(),
            source: other.to_string().into(),
        }),
    }
}

async fn send_ack(channel: &Channel, tag: u64, multiple: bool) -> Result<(), BrokerError> {
    channel
        .basic_ack(tag, BasicAckOptions { multiple })
        .await
        .map_err(|error| from_lapin("ack", error))
}

/// Sends `work`: nacks first, then the multiple-ack, then single acks; tells each caller.
async fn send(channel: &Channel, work: Work<Done>) {
    for (tag, done) in work.nacks {
        let options = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        let result = channel
            .basic_nack(tag, options)
            .await
            .map_err(|error| from_lapin("requeue", error));
        if let Some(done) = done {
            let _ = done.send(result);
        }
    }
    if let Some((tag, answered)) = work.multiple {
        let result = send_ack(channel, tag, true).await;
        for done in answered {
            let _ = done.send(copy(&result));
        }
    }
    for (tag, done) in work.singles {
        let _ = done.send(send_ack(channel, tag, false).await);
    }
}

async fn run(channel: Channel, inner: Arc<Inner>) {
    // When the prefix's oldest unsent ack, and the oldest stuck one, must go out at the latest.
    let mut flush_by: Option<Instant> = None;
    let mut relieve_by: Option<Instant> = None;
    loop {
        let deadline = match (flush_by, relieve_by) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match deadline {
            Some(at) => tokio::select! {
                () = inner.wake.notified() => {}
                () = tokio::time::sleep_until(at) => {}
            },
            None => inner.wake.notified().await,
        }
        if inner.closing.load(Ordering::Acquire) {
            // Every delivery is settled or was never handed out; the latter go back to the queue
            // as the channel closes. Acks whose callers stopped waiting still go out first.
            let work = inner.window().take_all();
            send(&channel, work).await;
            let _ = channel.close(200, "consumer done".into()).await;
            break;
        }
        let now = Instant::now();
        let flush = flush_by.is_some_and(|at| now >= at);
        let relieve = relieve_by.is_some_and(|at| now >= at);
        let (work, (waiting, stuck)) = {
            let mut window = inner.window();
            let work = window.take(flush, relieve);
            (work, window.rearm())
        };
        flush_by = if waiting {
            flush_by.filter(|_| !flush).or(Some(now + ACK_DELAY))
        } else {
            None
        };
        relieve_by = if stuck {
            relieve_by.filter(|_| !relieve).or(Some(now + STUCK_DELAY))
        } else {
            None
        };
        send(&channel, work).await;
    }
}
