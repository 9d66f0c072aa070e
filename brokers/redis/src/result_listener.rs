//! Wake-ups for callers waiting on results: one pub/sub connection per backend, subscribed to the
//! backend's results channel while anyone in the process waits (or, for Celery's format, to the
//! channel of each task waited on).
//!
//! Writers publish the ids of the results they stored on one channel, once per batch (not once per
//! result: that would cost Redis a command per task). The listener hands each id to the callers
//! waiting on it, who read the key again — a notification is a hint, the key holds the truth. If
//! the connection drops, the listener reconnects, subscribes again and tells every waiter to read
//! its key again, so nothing published meanwhile is missed.

use std::collections::HashMap;
use std::time::Duration;

use celeriac_core::BrokerError;
use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::error::bounded;

/// What the backend asks of its listener.
pub(crate) enum Command {
    /// Wake me when task `id`'s result may have been stored.
    Watch(String, oneshot::Sender<Watched>),
    /// One waiter on task `id` is gone.
    Unwatch(String),
}

type Watched = Result<(watch::Receiver<()>, watch::Receiver<u64>), BrokerError>;

/// Starts a listener on `channels` (it runs until `stop`); the sender is its command channel.
pub(crate) fn start(
    client: redis::Client,
    url: String,
    timeout: Duration,
    channels: Channels,
    stop: CancellationToken,
) -> mpsc::UnboundedSender<Command> {
    let (commands, receiver) = mpsc::unbounded_channel();
    let listener = Listener::new(client, url, timeout, channels);
    tokio::spawn(listener.run(receiver, stop));
    commands
}

/// Registers a wait on task `id`; the subscription is confirmed by Redis when this returns.
pub(crate) async fn watch(
    listener: &mpsc::UnboundedSender<Command>,
    id: &str,
) -> Result<Watch, BrokerError> {
    let (reply, answer) = oneshot::channel();
    let gone = || BrokerError::Disconnected { op: "subscribe" };
    listener
        .send(Command::Watch(id.to_owned(), reply))
        .map_err(|_| gone())?;
    let (published, epoch) = answer.await.map_err(|_| gone())??;
    Ok(Watch {
        listener: listener.clone(),
        id: id.to_owned(),
        published,
        epoch,
    })
}

/// A caller's wait on one task; dropping it ends the wait.
pub(crate) struct Watch {
    listener: mpsc::UnboundedSender<Command>,
    id: String,
    /// Changes each time the task's id is announced: read the key then.
    published: watch::Receiver<()>,
    /// Changes each time the pub/sub connection is made anew: read the key then.
    epoch: watch::Receiver<u64>,
}

impl Watch {
    /// Marks every change so far as seen (call before reading the key).
    pub(crate) fn mark_seen(&mut self) {
        self.published.borrow_and_update();
        self.epoch.borrow_and_update();
    }

    /// Waits for the next reason to read the key again.
    pub(crate) async fn changed(&mut self) -> Result<(), BrokerError> {
        let changed = tokio::select! {
            changed = self.published.changed() => changed,
            changed = self.epoch.changed() => changed,
        };
        changed.map_err(|_| BrokerError::Disconnected { op: "wait_ready" })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let id = std::mem::take(&mut self.id);
        let _ = self.listener.send(Command::Unwatch(id));
    }
}

/// The callers waiting on one task.
struct Waiting {
    count: usize,
    published: watch::Sender<()>,
}

/// Where stored results are announced.
pub(crate) enum Channels {
    /// One channel for every task; a message holds the ids stored (one per line).
    Shared(String),
    /// A channel per task, the prefix followed by its id (Celery's `celery-task-meta-<id>`); a
    /// message holds the result itself.
    PerTask(String),
}

impl Channels {
    /// The channel that announces task `id`.
    fn of(&self, id: &str) -> String {
        match self {
            Self::Shared(channel) => channel.clone(),
            Self::PerTask(prefix) => format!("{prefix}{id}"),
        }
    }
}

/// Owns the pub/sub connection: every command and every message goes through it, one at a time.
pub(crate) struct Listener {
    client: redis::Client,
    url: String,
    timeout: Duration,
    channels: Channels,
    waiting: HashMap<String, Waiting>,
    epoch: watch::Sender<u64>,
}

impl Listener {
    pub(crate) fn new(
        client: redis::Client,
        url: String,
        timeout: Duration,
        channels: Channels,
    ) -> Self {
        Self {
            client,
            url,
            timeout,
            channels,
            waiting: HashMap::new(),
            epoch: watch::channel(0).0,
        }
    }

    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) {
        let mut pause = Duration::from_millis(100);
        loop {
            let connected = tokio::select! {
                () = stop.cancelled() => return,
                connected = self.connect() => connected,
            };
            let (mut sink, mut messages) = match connected {
                Ok(connection) => {
                    pause = Duration::from_millis(100);
                    connection
                }
                Err(error) => {
                    tracing::warn!(url = %self.url, error = %celeriac_core::Report(&error), "cannot reach redis for result notifications; retrying");
                    // Meanwhile a new waiter is told at once rather than left hanging.
                    let wait = tokio::time::sleep(pause);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = &mut wait => break,
                            command = commands.recv() => match command {
                                Some(command) => self.refuse(command, &error),
                                None => return,
                            },
                        }
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            // Every waiter reads its key again: a result may have been stored while disconnected.
            self.epoch.send_modify(|epoch| *epoch += 1);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    command = commands.recv() => {
                        let Some(command) = command else { return };
                        if self.obey(command, &mut sink).await.is_err() {
                            break;
                        }
                    }
                    message = messages.next() => {
                        let Some(message) = message else { break };
                        match &self.channels {
                            Channels::Shared(_) => self.announce(message.get_payload_bytes()),
                            Channels::PerTask(prefix) => {
                                let channel = message.get_channel_name();
                                if let Some(id) = channel.strip_prefix(prefix.as_str()) {
                                    self.announce(id.as_bytes());
                                }
                            }
                        }
                    }
                }
            }
            tracing::warn!(url = %self.url, "lost the redis connection for result notifications; reconnecting");
        }
    }

    /// Opens the pub/sub connection, subscribed to the channels of those who wait.
    async fn connect(&self) -> Result<(PubSubSink, PubSubStream), BrokerError> {
        let pubsub = bounded("subscribe", self.timeout, self.client.get_async_pubsub()).await?;
        let (mut sink, stream) = pubsub.split();
        let channels: Vec<String> = match &self.channels {
            Channels::Shared(channel) if !self.waiting.is_empty() => vec![channel.clone()],
            Channels::Shared(_) => Vec::new(),
            Channels::PerTask(_) => self.waiting.keys().map(|id| self.channels.of(id)).collect(),
        };
        if !channels.is_empty() {
            bounded("subscribe", self.timeout, sink.subscribe(channels)).await?;
        }
        Ok((sink, stream))
    }

    /// Carries out a command; an error means the connection is gone.
    async fn obey(&mut self, command: Command, sink: &mut PubSubSink) -> Result<(), BrokerError> {
        match command {
            Command::Watch(id, reply) => {
                let subscribe = match self.channels {
                    Channels::Shared(_) => self.waiting.is_empty(),
                    Channels::PerTask(_) => !self.waiting.contains_key(&id),
                };
                if subscribe
                    && let Err(error) = bounded(
                        "subscribe",
                        self.timeout,
                        sink.subscribe(self.channels.of(&id)),
                    )
                    .await
                {
                    let shown = BrokerError::Unavailable {
                        op: "subscribe",
                        reason: celeriac_core::Report(&error).to_string(),
                    };
                    let _ = reply.send(Err(shown));
                    return Err(error);
                }
                let waiting = self.waiting.entry(id).or_insert_with(|| Waiting {
                    count: 0,
                    published: watch::channel(()).0,
                });
                waiting.count += 1;
                let _ = reply.send(Ok((waiting.published.subscribe(), self.epoch.subscribe())));
            }
            Command::Unwatch(id) => {
                let unsubscribe = self.forget(&id)
                    && match self.channels {
                        Channels::Shared(_) => self.waiting.is_empty(),
                        Channels::PerTask(_) => true,
                    };
                if unsubscribe {
                    let channel = self.channels.of(&id);
                    bounded("unsubscribe", self.timeout, sink.unsubscribe(channel)).await?;
                }
            }
        }
        Ok(())
    }

    /// Drops one waiter on `id`; whether it was the last one.
    fn forget(&mut self, id: &str) -> bool {
        let Some(waiting) = self.waiting.get_mut(id) else {
            return false;
        };
        waiting.count -= 1;
        if waiting.count == 0 {
            self.waiting.remove(id);
            return true;
        }
        false
    }

    /// Answers a command while there is no connection.
    fn refuse(&mut self, command: Command, error: &BrokerError) {
        match command {
            Command::Watch(_, reply) => {
                let _ = reply.send(Err(BrokerError::Unavailable {
                    op: "subscribe",
                    reason: celeriac_core::Report(error).to_string(),
                }));
            }
            Command::Unwatch(id) => {
                self.forget(&id);
            }
        }
    }

    /// Wakes the callers waiting on the ids announced (one per line).
    fn announce(&self, payload: &[u8]) {
        for id in payload.split(|byte| *byte == b'\n') {
            let waiting = std::str::from_utf8(id)
                .ok()
                .and_then(|id| self.waiting.get(id));
            if let Some(waiting) = waiting {
                waiting.published.send_replace(());
            }
        }
    }
}
