//! RabbitMQ's RPC result backend (Celery's `rpc://`): each result is sent to its caller's reply
//! queue, so a RabbitMQ-only deployment gets results without Redis.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use celeriac_core::{
    BrokerError, MemoryResultBackend, RedactedUrl, Report, ResultBackend, StoredResult,
};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Settings;
use crate::error::bounded;
use crate::link::{Publication, Shared, text_header};

/// The header naming the task a reply is the result of.
const ID_HEADER: &str = "x-celeriac-task-id";
/// How long a reply queue outlives its last consumer (its process gone) before RabbitMQ deletes it.
const REPLY_QUEUE_EXPIRES: Duration = Duration::from_secs(3600);
/// Pause between attempts to consume the reply queue again after the connection was lost.
const RECONSUME_PAUSE: Duration = Duration::from_millis(500);
/// Results received and kept in this process, at most.
const KEPT: usize = 100_000;
/// How long a received result is kept in this process.
const KEPT_FOR: Duration = Duration::from_secs(86_400);

/// Results sent back to their caller over RabbitMQ (Celery's `rpc://` backend).
///
/// Each process that sends tasks has a reply queue (`celeriac.reply.<random>`, deleted by RabbitMQ
/// an hour after the process stops consuming it); the app writes its name in every message, and the
/// worker sends the task's result there. The caller keeps what it receives in memory, where
/// [`AsyncResult::get`](https://docs.rs/celeriac/latest/celeriac/struct.AsyncResult.html) finds it,
/// woken by the reply consumer (no polling).
///
/// So only the process that sent a task gets its result: `AsyncResult::from_id` in another process
/// waits in vain, and a result that arrives after its caller stopped is lost with the queue. Chords
/// need a backend that joins them (memory or Redis): an app with this one refuses them. Use the Redis
/// backend when results must be shared.
///
/// An app whose broker is `amqp://…` gets it with `result_backend_url("rpc://")`.
///
/// ```no_run
/// # async fn run() -> Result<(), celeriac::Error> {
/// use celeriac::App;
///
/// let app = App::builder()
///     .broker_url("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .result_backend_url("rpc://")
///     .build()?;
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpRpcBackend {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    reply_queue: String,
    /// Results travel as Celery's RPC backend sends them (see `AmqpRpcBackend::celery_format`).
    celery: bool,
    /// What this process received, and the callers waiting on it.
    received: MemoryResultBackend,
    /// Set once the reply queue is declared and consumed.
    ready: watch::Sender<bool>,
    consuming: OnceLock<()>,
    /// The worker side: results to send, to the task that sends them.
    sends: OnceLock<mpsc::UnboundedSender<Reply>>,
}

/// A result to send to a reply queue, and who waits for the broker's confirm.
struct Reply {
    queue: String,
    id: String,
    bytes: Vec<u8>,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

impl AmqpRpcBackend {
    /// The backend for the RabbitMQ server at `url` (`amqp://…` or `amqps://…`). It connects on
    /// first use, with its own connection.
    pub fn new(url: &str) -> Self {
        let settings = Settings::default();
        Self {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared::new(RedactedUrl::new(url), settings)),
                reply_queue: format!("celeriac.reply.{}", uuid::Uuid::new_v4().simple()),
                celery: false,
                received: MemoryResultBackend::with_capacity(KEPT),
                ready: watch::channel(false).0,
                consuming: OnceLock::new(),
                sends: OnceLock::new(),
            }),
        }
    }

    /// Sends and reads results as Celery's `rpc://` backend does (default off): the result meta
    /// alone (`{"status": …, "result": …, …}`, which an app built with `celery_compat()` stores),
    /// with the task's id as `correlation_id`. Python callers then get Rust workers' results, and
    /// Rust callers Python workers'. `celery_compat()` with `result_backend_url("rpc://")` turns
    /// this on.
    ///
    /// ```
    /// let results = celeriac_amqp::AmqpRpcBackend::new("amqp://127.0.0.1/%2f").celery_format(true);
    /// # let _ = results;
    /// ```
    #[must_use]
    pub fn celery_format(mut self, on: bool) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.celery = on,
            None => {
                tracing::warn!("celery_format must be set before the backend is cloned; ignored")
            }
        }
        self
    }

    /// This process's reply queue.
    pub fn reply_queue(&self) -> &str {
        &self.inner.reply_queue
    }

    /// Declares and consumes the reply queue (once, by a task of its own), and waits until it is.
    async fn consuming(&self) -> Result<(), BrokerError> {
        self.inner.consuming.get_or_init(|| {
            tokio::spawn(consume(Arc::downgrade(&self.inner)));
        });
        let timeout = self.inner.shared.timeout();
        let mut ready = self.inner.ready.subscribe();
        match tokio::time::timeout(timeout, ready.wait_for(|ready| *ready)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BrokerError::Disconnected {
                op: "consume replies",
            }),
            Err(_) => Err(BrokerError::Timeout {
                op: "consume replies",
                after: timeout,
            }),
        }
    }

    /// The sender of replies, started on first use.
    fn sends(&self) -> &mpsc::UnboundedSender<Reply> {
        self.inner.sends.get_or_init(|| {
            let (sends, received) = mpsc::unbounded_channel();
            tokio::spawn(send_replies(
                self.inner.shared.clone(),
                self.inner.celery,
                received,
            ));
            sends
        })
    }
}

/// Declares the reply queue and hands what arrives on it to `inner`'s store, again after each
/// connection loss, until the backend is dropped.
async fn consume(inner: Weak<Inner>) {
    loop {
        let Some(backend) = inner.upgrade() else {
            return;
        };
        let consumer = match start_consumer(&backend).await {
            Ok(consumer) => consumer,
            Err(error) => {
                tracing::warn!(queue = %backend.reply_queue, error = %Report(&error), "cannot consume the reply queue; trying again");
                drop(backend);
                tokio::time::sleep(RECONSUME_PAUSE).await;
                continue;
            }
        };
        backend.ready.send_replace(true);
        drop(backend);
        let mut consumer = consumer;
        while let Some(delivery) = consumer.next().await {
            let Some(backend) = inner.upgrade() else {
                return;
            };
            match delivery {
                Ok(delivery) => receive(&backend, &delivery).await,
                Err(error) => {
                    tracing::warn!(error = %error, "the reply consumer stopped");
                    break;
                }
            }
        }
        if let Some(backend) = inner.upgrade() {
            backend.ready.send_replace(false);
        }
        tokio::time::sleep(RECONSUME_PAUSE).await;
    }
}

/// Declares the reply queue (not durable, kept an hour after its last consumer) and consumes it
/// without acks: a reply is kept here as soon as it arrives.
async fn start_consumer(backend: &Inner) -> Result<lapin::Consumer, BrokerError> {
    let shared = &backend.shared;
    let link = shared.link().await?;
    let timeout = shared.timeout();
    let channel = bounded("open channel", timeout, link.connection.create_channel()).await?;
    let mut arguments = FieldTable::default();
    let expires = i64::try_from(REPLY_QUEUE_EXPIRES.as_millis()).unwrap_or(i64::MAX);
    arguments.insert(
        ShortString::from("x-expires"),
        AMQPValue::LongLongInt(expires),
    );
    let options = QueueDeclareOptions {
        durable: false,
        auto_delete: false,
        exclusive: false,
        ..QueueDeclareOptions::default()
    };
    bounded(
        "declare reply queue",
        timeout,
        channel.queue_declare(backend.reply_queue.as_str().into(), options, arguments),
    )
    .await?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    bounded(
        "consume reply queue",
        timeout,
        channel.basic_consume(
            backend.reply_queue.as_str().into(),
            "".into(),
            options,
            FieldTable::default(),
        ),
    )
    .await
}

/// Keeps one reply. Anything that is not a celeriac reply (or, in Celery's format, Celery's) is
/// logged and dropped.
async fn receive(backend: &Inner, delivery: &lapin::message::Delivery) {
    let data = &delivery.data;
    let read = match text_header(delivery.properties.headers().as_ref(), ID_HEADER) {
        Some(id) => StoredResult::from_bytes(data).map(|result| (id, result)),
        // Celery's reply: the meta, named by its correlation id.
        None if backend.celery => match delivery.properties.correlation_id() {
            Some(id) => celeriac_core::celery::results::stored_meta(id.as_str(), data.clone())
                .map(|result| (id.to_string(), result)),
            None => {
                tracing::warn!(queue = %backend.reply_queue, "a message without a correlation id on the reply queue; dropped");
                return;
            }
        },
        None => {
            tracing::warn!(queue = %backend.reply_queue, "a message without a task id on the reply queue; dropped");
            return;
        }
    };
    match read {
        Ok((id, result)) => {
            if let Err(error) = backend.received.store(&id, result, KEPT_FOR).await {
                tracing::warn!(task.id = %id, error = %Report(&error), "cannot keep a reply");
            }
        }
        Err(error) => {
            tracing::warn!(queue = %backend.reply_queue, error = %Report(&error), "a reply celeriac cannot read; dropped");
        }
    }
}

/// Sends the replies it is given, each batch of those waiting at once together, confirmed.
async fn send_replies(
    shared: Arc<Shared>,
    celery: bool,
    mut replies: mpsc::UnboundedReceiver<Reply>,
) {
    let mut batch = Vec::new();
    while replies.recv_many(&mut batch, 256).await > 0 {
        let sent = async {
            let link = shared.link().await?;
            let publications = batch
                .iter()
                .map(|reply| {
                    let mut headers = FieldTable::default();
                    headers.insert(
                        ShortString::from(ID_HEADER),
                        AMQPValue::LongString(LongString::from(reply.id.as_bytes())),
                    );
                    let mut publication =
                        Publication::with_headers(&reply.queue, &reply.bytes, headers);
                    if celery {
                        // As Celery's RPC backend sends it: named by its correlation id.
                        publication.properties = publication
                            .properties
                            .with_correlation_id(reply.id.as_str().into())
                            .with_content_type("application/json".into())
                            .with_content_encoding("utf-8".into());
                    }
                    publication
                })
                .collect();
            shared.publish(&link, publications).await
        }
        .await;
        // Errors are not `Clone`: each waiter gets its own, with the same text.
        let report = sent.as_ref().err().map(|error| Report(error).to_string());
        for reply in batch.drain(..) {
            let outcome = match &report {
                None => Ok(()),
                Some(reason) => Err(BrokerError::Unavailable {
                    op: "send reply",
                    reason: reason.clone(),
                }),
            };
            let _ = reply.done.send(outcome);
        }
    }
}

#[async_trait]
impl ResultBackend for AmqpRpcBackend {
    fn system(&self) -> &'static str {
        "rabbitmq"
    }

    fn redacted_url(&self) -> String {
        format!("rpc:// on {}", self.inner.shared.url.redacted())
    }

    fn reply_to(&self) -> Option<String> {
        Some(self.inner.reply_queue.clone())
    }

    async fn prepare(&self) -> Result<(), BrokerError> {
        self.consuming().await
    }

    /// Without a reply queue nobody waits for the result: there is nowhere to store it.
    async fn store(
        &self,
        id: &str,
        result: StoredResult,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.store_reply(id, None, result, ttl).await
    }

    async fn store_reply(
        &self,
        id: &str,
        reply_to: Option<&str>,
        result: StoredResult,
        _ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let Some(queue) = reply_to else {
            return Ok(false);
        };
        let (done, confirmed) = oneshot::channel();
        let reply = Reply {
            queue: queue.to_owned(),
            id: id.to_owned(),
            // Celery's reply is the meta alone (which the app stored in Celery's format).
            bytes: if self.inner.celery {
                result.body.to_vec()
            } else {
                result.to_bytes()
            },
            done,
        };
        let gone = || BrokerError::Disconnected { op: "send reply" };
        self.sends().send(reply).map_err(|_| gone())?;
        confirmed.await.map_err(|_| gone())??;
        Ok(true)
    }

    async fn fetch(&self, id: &str) -> Result<Option<StoredResult>, BrokerError> {
        self.inner.received.fetch(id).await
    }

    async fn wait_ready(&self, id: &str) -> Result<StoredResult, BrokerError> {
        self.consuming().await?;
        self.inner.received.wait_ready(id).await
    }

    async fn forget(&self, id: &str) -> Result<(), BrokerError> {
        self.inner.received.forget(id).await
    }

    /// Refused, as Celery's `rpc://` refuses it: results go to their caller, so there is nowhere to
    /// keep a group for another process.
    async fn save_group(
        &self,
        _group: &str,
        _members: &[String],
        _ttl: Duration,
    ) -> Result<(), BrokerError> {
        Err(self.no_saved_groups())
    }

    /// Refused, as [`save_group`](Self::save_group) is.
    async fn restore_group(&self, _group: &str) -> Result<Option<Vec<String>>, BrokerError> {
        Err(self.no_saved_groups())
    }
}

impl AmqpRpcBackend {
    fn no_saved_groups(&self) -> BrokerError {
        BrokerError::unsupported(
            self.system(),
            "saved groups (results go to their caller only)",
        )
    }
}

impl fmt::Debug for AmqpRpcBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpRpcBackend")
            .field("url", &self.inner.shared.url)
            .field("reply_queue", &self.inner.reply_queue)
            .finish_non_exhaustive()
    }
}
