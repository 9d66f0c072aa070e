//! Batched settlement of one consumer channel's deliveries.
//!
//! Acks are sent as `basic.ack` with `multiple = true` for the longest prefix of delivery tags that are
//! all settled, one frame for many messages. A delivery still running holds the prefix back, so when
//! many later acks pile up behind it they are sent one by one instead, and the prefetch window keeps
//! moving. Nacks (requeue) go out at once. Every settle command passes through one task, in order, so
//! a multiple-ack never covers a tag that was meant to be nacked. Callers wait until their own ack was
//! sent.
//!
//! Acks are coalesced: the prefix is sent once it holds a quarter of the prefetch window, or
//! [`ACK_DELAY`] after its first ack, whichever comes first. One frame per many messages is what
//! keeps RabbitMQ's own CPU (on the same machine, often) from being the bottleneck; the delay only
//! widens, by at most that much, the window in which a crash makes RabbitMQ redeliver a task that
//! had already finished — which at-least-once delivery allows anyway.

use std::collections::BTreeMap;
use std::time::Duration;

use celeriac::BrokerError;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::from_lapin;

/// Acks waiting behind a running delivery before they are sent one by one.
const RELIEVE_AFTER: usize = 32;

/// The longest an ack waits for others to share its frame.
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(1);

type Done = oneshot::Sender<Result<(), BrokerError>>;

enum Command {
    Delivered(u64),
    /// An ack, and whether it must go out now rather than wait for others.
    Ack(u64, Done, bool),
    Nack(u64, Option<Done>),
}

/// The handle deliveries settle through; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AckWindow {
    commands: mpsc::UnboundedSender<Command>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    AckedUnsent,
    Settled,
}

impl AckWindow {
    /// Starts the settling task of `channel`, whose prefetch window is `prefetch` deliveries. When
    /// every handle is gone (the consumer and all its deliveries), it closes the channel.
    pub(crate) fn start(channel: Channel, prefetch: usize) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let flush_at = (prefetch / 4).max(1);
        tokio::spawn(run(channel, receiver, flush_at));
        Self { commands }
    }

    /// Records a delivery before it is handed out (in delivery order).
    pub(crate) fn delivered(&self, tag: u64) {
        let _ = self.commands.send(Command::Delivered(tag));
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
        self.commands
            .send(Command::Ack(tag, done, now))
            .map_err(|_| BrokerError::Disconnected { op: "ack" })?;
        sent.await
            .unwrap_or(Err(BrokerError::Disconnected { op: "ack" }))
    }

    /// Nacks `tag` with requeue, returning once sent.
    pub(crate) async fn requeue(&self, tag: u64) -> Result<(), BrokerError> {
        let (done, sent) = oneshot::channel();
        self.commands
            .send(Command::Nack(tag, Some(done)))
            .map_err(|_| BrokerError::Disconnected { op: "requeue" })?;
        sent.await
            .unwrap_or(Err(BrokerError::Disconnected { op: "requeue" }))
    }

    /// Nacks `tag` with requeue without waiting (for deliveries dropped unsettled).
    pub(crate) fn requeue_later(&self, tag: u64) {
        let _ = self.commands.send(Command::Nack(tag, None));
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

async fn run(channel: Channel, mut commands: mpsc::UnboundedReceiver<Command>, flush_at: usize) {
    let mut window: BTreeMap<u64, State> = BTreeMap::new();
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut batch = Vec::with_capacity(256);
    // When the oldest unsent ack of the settled prefix must go out at the latest.
    let mut flush_by: Option<Instant> = None;
    loop {
        let received = match flush_by {
            Some(at) => tokio::select! {
                received = commands.recv_many(&mut batch, 1_024) => received,
                () = tokio::time::sleep_until(at) => usize::MAX,
            },
            None => commands.recv_many(&mut batch, 1_024).await,
        };
        let mut flush_now = false;
        if received == 0 {
            // Every delivery is settled or was never handed out; the latter go back to the queue
            // as the channel closes. Acks whose callers stopped waiting still go out first.
            for (&tag, _) in window
                .iter()
                .filter(|(_, state)| **state == State::AckedUnsent)
            {
                let _ = send_ack(&channel, tag, false).await;
            }
            let _ = channel.close(200, "consumer done".into()).await;
            break;
        }
        for command in batch.drain(..) {
            match command {
                Command::Delivered(tag) => {
                    window.insert(tag, State::Running);
                }
                Command::Ack(tag, done, now) => {
                    window.insert(tag, State::AckedUnsent);
                    waiting.insert(tag, done);
                    flush_now |= now;
                }
                Command::Nack(tag, done) => {
                    let options = BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    };
                    let result = channel
                        .basic_nack(tag, options)
                        .await
                        .map_err(|error| from_lapin("requeue", error));
                    window.insert(tag, State::Settled);
                    if let Some(done) = done {
                        let _ = done.send(result);
                    }
                }
            }
        }

        // The settled prefix: one multiple-ack covers it, once it is big enough or old enough.
        let mut highest_unsent = None;
        let mut unsent = 0;
        for (&tag, &state) in &window {
            match state {
                State::Running => break,
                State::AckedUnsent => {
                    highest_unsent = Some(tag);
                    unsent += 1;
                }
                State::Settled => {}
            }
        }
        let due = flush_now || flush_by.is_some_and(|at| Instant::now() >= at);
        match highest_unsent {
            Some(tag) if unsent >= flush_at || due => {
                let result = send_ack(&channel, tag, true).await;
                window = window.split_off(&(tag + 1));
                let rest = waiting.split_off(&(tag + 1));
                for (_, done) in std::mem::replace(&mut waiting, rest) {
                    let _ = done.send(copy(&result));
                }
                flush_by = None;
            }
            Some(_) => {
                flush_by.get_or_insert_with(|| Instant::now() + ACK_DELAY);
            }
            None => flush_by = None,
        }
        // Settled entries at the front with nothing to ack (nacked ones) are done with.
        while window
            .first_key_value()
            .is_some_and(|(_, state)| *state == State::Settled)
        {
            window.pop_first();
        }

        // Acks stuck behind a running delivery: send them one by one.
        let stuck: Vec<u64> = window
            .iter()
            .skip_while(|(_, state)| **state != State::Running)
            .filter(|(_, state)| **state == State::AckedUnsent)
            .map(|(tag, _)| *tag)
            .collect();
        if stuck.len() >= RELIEVE_AFTER || (flush_now && !stuck.is_empty()) {
            for tag in stuck {
                let result = send_ack(&channel, tag, false).await;
                window.insert(tag, State::Settled);
                if let Some(done) = waiting.remove(&tag) {
                    let _ = done.send(result);
                }
            }
        }
    }
}
