//! Electing a leader with RabbitMQ alone: a single-active-consumer queue, and the record carried by
//! the messages in it.
//!
//! Every candidate consumes the queue `celeriac.election.<name>` (declared with
//! `x-single-active-consumer`): RabbitMQ delivers to one consumer at a time, and to the next one
//! only when that one's channel closes (its process exited or died, or missed two heartbeats).
//! Each candidate puts a *token* in the queue when it joins. The consumer that receives tokens is
//! the leader: it holds them unacknowledged. The leader's record travels in the token: to write
//! one, it publishes a new token (numbered one higher, confirmed) and then acks the old one; its
//! successor receives every token held and keeps the highest-numbered one.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use celeriac_core::{BrokerError, Election, RedactedUrl, Report, Term};
use futures::StreamExt;
use lapin::Acker;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::Settings;
use crate::error::{bounded, from_lapin};
use crate::link::{Link, Publication, Shared, int_header};

/// The header numbering tokens.
const SEQUENCE_HEADER: &str = "x-celeriac-election-sequence";

/// A leader publishes its token again at least this often, though its record has not changed:
/// RabbitMQ closes a channel that holds a delivery unacknowledged for 30 minutes by default.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// An election held in a RabbitMQ single-active-consumer queue, for deployments without Redis.
///
/// A beat on a RabbitMQ broker with no coordination store uses one without being told; build one
/// to choose the lease. The lease is the election connection's heartbeat: RabbitMQ hands the
/// queue to the next candidate when the leader's connection closes, or misses two heartbeats
/// (about the lease) while its process hangs.
///
/// ```no_run
/// use std::time::Duration;
/// use celeriac_amqp::AmqpElection;
///
/// # async fn run(app: celeriac::App) -> Result<(), celeriac::Error> {
/// let election = AmqpElection::new("amqp://guest:guest@127.0.0.1:5672/%2f", "beat")
///     .lease(Duration::from_secs(6));
/// let beat = app.beat().election(election).build()?;
/// beat.run().await;
/// # Ok(()) }
/// ```
///
/// Its record is fenced by the leader's connection: a leader whose connection RabbitMQ closed
/// cannot publish a token. What it sends elsewhere (its ticks, to the app's broker) is not: a
/// leader paused between writing down a round of ticks and sending them may send them after its
/// successor sent them again. A worker with a coordination store drops such a second copy; without
/// one it runs twice. See the guide's periodic-tasks page.
#[derive(Clone)]
pub struct AmqpElection {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Shared,
    queue: String,
    lease: Duration,
    /// This candidate's consumer, once it joined.
    seat: tokio::sync::Mutex<Option<Seat>>,
}

/// A candidate's place in the queue: its channel and consumer, and the tokens it received.
struct Seat {
    link: Arc<Link>,
    channel: Channel,
    /// Unique to this seat: what proves a term began on it.
    id: String,
    received: Arc<Mutex<Vec<Token>>>,
    reader: JoinHandle<()>,
    /// The highest-numbered token held, once this seat leads.
    held: Option<Token>,
    /// When `held` was published.
    published_at: Instant,
}

struct Token {
    sequence: i64,
    record: Vec<u8>,
    /// `None` for a token this seat published and has not received back yet.
    acker: Option<Acker>,
}

impl AmqpElection {
    /// The election `name` on the RabbitMQ at `url` (`amqp://…`, `amqps://…`), with a 10-second
    /// lease. Connects when it first campaigns.
    pub fn new(url: &str, name: &str) -> Self {
        Self::with_settings(RedactedUrl::new(url), Settings::default(), name)
    }

    pub(crate) fn with_settings(url: RedactedUrl, mut settings: Settings, name: &str) -> Self {
        let lease = Duration::from_secs(10);
        settings.publisher_channels = 1;
        settings.heartbeat = Some(heartbeat_for(lease));
        Self {
            inner: Arc::new(Inner {
                shared: Shared::new(url, settings),
                queue: format!("celeriac.election.{name}"),
                lease,
                seat: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// How long a hung leader keeps leading: about twice the connection's heartbeat, which is
    /// half of this (at least a second). A leader that exits or dies is replaced at once.
    #[must_use]
    pub fn lease(self, lease: Duration) -> Self {
        let inner = &self.inner;
        let mut settings = inner.shared.settings.clone();
        settings.heartbeat = Some(heartbeat_for(lease));
        Self {
            inner: Arc::new(Inner {
                shared: Shared::new(inner.shared.url.clone(), settings),
                queue: inner.queue.clone(),
                lease,
                seat: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Joins the queue: a consumer of its own, and a token.
    async fn sit(&self) -> Result<Seat, BrokerError> {
        let shared = &self.inner.shared;
        let timeout = shared.timeout();
        let link = shared.link().await?;
        let channel = bounded("open channel", timeout, link.connection.create_channel()).await?;
        match self.sit_on(link, channel.clone()).await {
            Ok(seat) => Ok(seat),
            Err(error) => {
                // A consume that timed out here may still have begun at the broker: closing the
                // channel ends it, whatever lapin kept of it.
                if let Err(close) = bounded(
                    "close",
                    timeout,
                    channel.close(200, "failed to join".into()),
                )
                .await
                {
                    tracing::debug!(error = %Report(&close), "closing a failed election channel");
                }
                Err(error)
            }
        }
    }

    async fn sit_on(&self, link: Arc<Link>, channel: Channel) -> Result<Seat, BrokerError> {
        let timeout = self.inner.shared.timeout();
        let mut arguments = FieldTable::default();
        arguments.insert(
            ShortString::from("x-single-active-consumer"),
            AMQPValue::Boolean(true),
        );
        bounded(
            "declare election queue",
            timeout,
            channel.queue_declare(
                self.inner.queue.as_str().into(),
                QueueDeclareOptions::durable(),
                arguments,
            ),
        )
        .await?;
        bounded(
            "set prefetch",
            timeout,
            channel.basic_qos(64, BasicQosOptions::default()),
        )
        .await?;
        let mut consumer = bounded(
            "consume election queue",
            timeout,
            channel.basic_consume(
                self.inner.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let reader = tokio::spawn({
            let received = received.clone();
            async move {
                while let Some(Ok(delivery)) = consumer.next().await {
                    let sequence =
                        int_header(delivery.properties.headers().as_ref(), SEQUENCE_HEADER)
                            .unwrap_or(0);
                    lock(&received).push(Token {
                        sequence,
                        record: delivery.data,
                        acker: Some(delivery.acker),
                    });
                }
            }
        });
        // Seated before anything else can fail: a seat dropped stops its reader, which cancels the
        // consumer. A reader left running would hold the tokens it receives, unacknowledged and
        // unread, for as long as this process lives: no candidate could lead.
        let seat = Seat {
            link,
            channel,
            id: uuid::Uuid::new_v4().to_string(),
            received,
            reader,
            held: None,
            published_at: Instant::now(),
        };
        // A token of our own, so that a queue emptied by a broker that lost it gets one.
        self.publish(&seat.link, 0, &[]).await?;
        Ok(seat)
    }

    async fn publish(&self, link: &Link, sequence: i64, record: &[u8]) -> Result<(), BrokerError> {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from(SEQUENCE_HEADER),
            AMQPValue::LongLongInt(sequence),
        );
        let token = Publication::with_headers(&self.inner.queue, record, headers);
        self.inner.shared.publish(link, vec![token]).await
    }

    /// Writes `record` in a new token, then acks the one held.
    async fn replace_token(&self, seat: &mut Seat, record: &[u8]) -> Result<(), BrokerError> {
        let sequence = seat.held.as_ref().map_or(0, |token| token.sequence) + 1;
        self.publish(&seat.link, sequence, record).await?;
        seat.published_at = Instant::now();
        if let Some(old) = seat.held.take() {
            ack(old.acker.as_ref()).await?;
        }
        seat.held = Some(Token {
            sequence,
            record: record.to_vec(),
            // Replaced by the token itself when it comes back to this seat (see `absorb`).
            acker: None,
        });
        Ok(())
    }
}

impl Seat {
    fn alive(&self) -> bool {
        self.link.connection.status().connected()
            && self.channel.status().connected()
            && !self.reader.is_finished()
    }

    /// Takes the tokens received: keeps the highest-numbered one, acks the others. A token this
    /// seat published comes back with the number it holds already, and takes its place. Answers
    /// whether this seat holds a token (it leads).
    async fn absorb(&mut self) -> Result<bool, BrokerError> {
        let received = std::mem::take(&mut *lock(&self.received));
        for token in received {
            let keep = self
                .held
                .as_ref()
                .is_none_or(|held| token.sequence >= held.sequence);
            let drop = if keep {
                self.held.replace(token)
            } else {
                Some(token)
            };
            if let Some(extra) = drop {
                ack(extra.acker.as_ref()).await?;
            }
        }
        Ok(self.held.is_some())
    }
}

impl Drop for Seat {
    /// Stops the reader: its consumer, dropped, is cancelled; the channel, once its last handle
    /// is dropped, is closed (lapin closes an open channel no one holds).
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn ack(acker: Option<&Acker>) -> Result<(), BrokerError> {
    let Some(acker) = acker.filter(|acker| acker.usable()) else {
        return Ok(());
    };
    acker
        .ack(BasicAckOptions::default())
        .await
        .map(|_| ())
        .map_err(|error| from_lapin("ack election token", error))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The heartbeat (seconds) that makes RabbitMQ drop a hung leader after about `lease`.
fn heartbeat_for(lease: Duration) -> u16 {
    u16::try_from((lease.as_secs() / 2).max(1)).unwrap_or(u16::MAX)
}

impl fmt::Debug for AmqpElection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpElection")
            .field("url", &self.inner.shared.url)
            .field("queue", &self.inner.queue)
            .field("lease", &self.inner.lease)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Election for AmqpElection {
    fn redacted_url(&self) -> String {
        self.inner.shared.url.redacted().to_owned()
    }

    fn lease(&self) -> Duration {
        self.inner.lease
    }

    async fn campaign(&self) -> Result<Option<Term>, BrokerError> {
        let mut current = self.inner.seat.lock().await;
        if !current.as_ref().is_some_and(Seat::alive) {
            *current = None;
            let seat = self.sit().await?;
            // Tokens held for the queue reach the new active consumer within a round trip.
            tokio::time::sleep(Duration::from_millis(100)).await;
            *current = Some(seat);
        }
        let Some(seat) = current.as_mut() else {
            return Ok(None);
        };
        if !seat.absorb().await? {
            return Ok(None);
        }
        let record = seat
            .held
            .as_ref()
            .filter(|token| token.sequence > 0)
            .map(|token| token.record.clone());
        Ok(Some(Term::new(seat.id.clone(), record)))
    }

    async fn renew(&self, term: &Term) -> Result<bool, BrokerError> {
        let mut current = self.inner.seat.lock().await;
        let Some(seat) = current.as_mut().filter(|seat| seat.id == term.token()) else {
            return Ok(false);
        };
        if !seat.alive() || !seat.absorb().await? {
            return Ok(false);
        }
        if seat.published_at.elapsed() >= REFRESH_EVERY {
            let record = seat
                .held
                .as_ref()
                .map(|token| token.record.clone())
                .unwrap_or_default();
            self.replace_token(seat, &record).await?;
        }
        Ok(true)
    }

    async fn record(&self, term: &Term, record: &[u8]) -> Result<bool, BrokerError> {
        let mut current = self.inner.seat.lock().await;
        let Some(seat) = current.as_mut().filter(|seat| seat.id == term.token()) else {
            return Ok(false);
        };
        if !seat.alive() || !seat.absorb().await? {
            return Ok(false);
        }
        self.replace_token(seat, record).await?;
        Ok(true)
    }

    async fn resign(&self, term: Term) -> Result<(), BrokerError> {
        let mut current = self.inner.seat.lock().await;
        if let Some(seat) = current.take_if(|seat| seat.id == term.token()) {
            // Closing the channel hands every token held to the next candidate.
            if let Err(error) = seat.channel.close(200, "resigned".into()).await {
                tracing::debug!(error = %Report(&from_lapin("close", error)), "closing the election channel");
            }
        }
        Ok(())
    }
}
