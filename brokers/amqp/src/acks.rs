//! Batched settlement of one consumer channel's deliveries.
//!
//! Acks are sent as `basic.ack` with `multiple = true` for the longest prefix of delivery tags that are
//! all settled, one frame for many messages. A delivery still running holds the prefix back, so when
//! many later acks pile up behind it they are sent one by one instead, and the prefetch window keeps
//! moving. Nacks (requeue) go out at once. Every settle command passes through one task, in order, so
//! a multiple-ack never covers a tag that was meant to be nacked. Callers wait until their own ack was
//! sent.

use std::collections::BTreeMap;

use celeriac::BrokerError;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::{mpsc, oneshot};

use crate::error::from_lapin;

/// Acks waiting behind a running delivery before they are sent one by one.
const RELIEVE_AFTER: usize = 32;

type Done = oneshot::Sender<Result<(), BrokerError>>;

enum Command {
    Delivered(u64),
    Ack(u64, Done),
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
    /// Starts the settling task of `channel`; it ends when every handle is gone.
    pub(crate) fn start(channel: Channel) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(channel, receiver));
        Self { commands }
    }

    /// Records a delivery before it is handed out (in delivery order).
    pub(crate) fn delivered(&self, tag: u64) {
        let _ = self.commands.send(Command::Delivered(tag));
    }

    /// Acks `tag`, returning once the ack covering it was sent.
    pub(crate) async fn ack(&self, tag: u64) -> Result<(), BrokerError> {
        let (done, sent) = oneshot::channel();
        self.commands
            .send(Command::Ack(tag, done))
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

async fn run(channel: Channel, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut window: BTreeMap<u64, State> = BTreeMap::new();
    let mut waiting: BTreeMap<u64, Done> = BTreeMap::new();
    let mut batch = Vec::with_capacity(256);
    while commands.recv_many(&mut batch, 1_024).await > 0 {
        for command in batch.drain(..) {
            match command {
                Command::Delivered(tag) => {
                    window.insert(tag, State::Running);
                }
                Command::Ack(tag, done) => {
                    window.insert(tag, State::AckedUnsent);
                    waiting.insert(tag, done);
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

        // One multiple-ack for the settled prefix.
        let mut highest_unsent = None;
        while let Some((&tag, &state)) = window.first_key_value() {
            match state {
                State::Running => break,
                State::AckedUnsent => highest_unsent = Some(tag),
                State::Settled => {}
            }
            window.remove(&tag);
        }
        if let Some(tag) = highest_unsent {
            let result = send_ack(&channel, tag, true).await;
            let rest = waiting.split_off(&(tag + 1));
            for (_, done) in std::mem::replace(&mut waiting, rest) {
                let _ = done.send(copy(&result));
            }
        }

        // Acks stuck behind a running delivery: send them one by one.
        let stuck: Vec<u64> = window
            .iter()
            .filter(|(_, state)| **state == State::AckedUnsent)
            .map(|(tag, _)| *tag)
            .collect();
        if stuck.len() >= RELIEVE_AFTER {
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
