//! The Redis coordination store: claims as keys with an expiry, taken and released by Lua scripts.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use celeriac_core::{BrokerError, Claim, CoordinationStore, MAX_SET_MEMBERS, Record, RedactedUrl};
use tokio::sync::{mpsc, oneshot};

use crate::acks::copy;
use crate::client_options::{ClientOptions, client_option_setters};
use crate::error::bounded;
use crate::scripts::SCRIPTS;
use crate::server::Conn;

/// Rounds of claim-then-look before a claim gives up on a key that keeps changing hands.
const CLAIM_ATTEMPTS: usize = 3;

/// Claims kept in Redis, shared by every producer and worker that reaches it: the coordination
/// store unique tasks need.
///
/// Each claim is one key, `<prefix>:<claim key>`, holding the holder's id with the claim's expiry:
/// a claim is one `SET NX PX` (and, when the key is held, a `GET` and `PTTL` for its holder and
/// time left). A release deletes the key, in a script, only if it still names the releasing holder.
/// A rate limit is one key too, `<prefix>:rate:…`, holding its next free slot; a script reserves
/// slots on Redis's clock, so workers on machines whose clocks differ still share one budget. The
/// reservations of a worker's concurrent runs go out together: one script call reserves
/// consecutive slots for all of a limit's runs in a batch.
///
/// An app whose broker is Redis uses one on the broker's connection without being told
/// ([`RedisBroker::coordination`](crate::RedisBroker::coordination)); any other app is given one
/// by URL (`AppBuilder::coordination_url("redis://…")`) or built here:
///
/// ```no_run
/// use celeriac_redis::RedisCoordination;
///
/// # async fn run() -> Result<(), celeriac::Error> {
/// let claims = RedisCoordination::builder("redis://127.0.0.1:6379/2")
///     .key_prefix("shop")
///     .connect()
///     .await?;
/// let app = celeriac::App::builder()
///     .broker_url("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .coordination(claims)
///     .build()?;
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisCoordination {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    url: RedactedUrl,
    key_prefix: String,
    timeout: Duration,
    /// The batching task of rate-limit reservations, started by the first one.
    reservations: OnceLock<mpsc::UnboundedSender<Reservation>>,
}

/// Configures a [`RedisCoordination`].
#[derive(Debug)]
#[must_use]
pub struct RedisCoordinationBuilder {
    options: ClientOptions,
}

impl RedisCoordinationBuilder {
    client_option_setters!("claims are `<prefix>:<claim key>`");

    /// Connects. Fails if the URL is invalid or the server cannot be reached in time.
    pub async fn connect(self) -> Result<RedisCoordination, BrokerError> {
        let conn = self.options.connect_any().await?;
        let ClientOptions {
            url,
            key_prefix,
            timeout,
            ..
        } = self.options;
        Ok(RedisCoordination::new(conn, url, key_prefix, timeout))
    }
}

impl RedisCoordination {
    /// Connects with default settings to `redis://…`, `rediss://…` or a Redis Cluster
    /// (`redis+cluster://host:port;redis+cluster://…`).
    pub async fn connect(url: &str) -> Result<Self, BrokerError> {
        Self::builder(url).connect().await
    }

    /// Starts configuring a store for `url`.
    pub fn builder(url: &str) -> RedisCoordinationBuilder {
        RedisCoordinationBuilder {
            options: ClientOptions::new(url),
        }
    }

    pub(crate) fn new(conn: Conn, url: RedactedUrl, key_prefix: String, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                url,
                key_prefix,
                timeout,
                reservations: OnceLock::new(),
            }),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.inner.key_prefix)
    }
}

impl fmt::Debug for RedisCoordination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCoordination")
            .field("url", &self.inner.url)
            .field("key_prefix", &self.inner.key_prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl CoordinationStore for RedisCoordination {
    fn redacted_url(&self) -> String {
        self.inner.url.redacted().to_owned()
    }

    async fn claim(
        &self,
        key: &str,
        holder: &str,
        hold_for: Duration,
    ) -> Result<Claim, BrokerError> {
        let millis = millis(hold_for);
        let key = self.key(key);
        let mut conn = self.inner.conn.clone();
        // A key that lapses between a refused claim and the look at its holder is claimed again:
        // a few rounds at most, however busy the key.
        for _ in 0..CLAIM_ATTEMPTS {
            // A plain `SET NX PX`, no script: the common case (the key is free) is one command.
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(holder).arg("NX").arg("PX").arg(millis);
            let claimed =
                bounded::<Option<()>>("claim", self.inner.timeout, set.query_async(&mut conn))
                    .await?;
            if claimed.is_some() {
                return Ok(Claim::Claimed);
            }
            let mut look = redis::pipe();
            look.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
            let (current, left) = bounded::<(Option<String>, i64)>(
                "claim",
                self.inner.timeout,
                look.query_async(&mut conn),
            )
            .await?;
            if let Some(current) = current {
                return Ok(Claim::Held {
                    holder: current,
                    left: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
                });
            }
        }
        Err(BrokerError::Unavailable {
            op: "claim",
            reason: format!("key {key} was taken and released {CLAIM_ATTEMPTS} times in a row"),
        })
    }

    async fn release(&self, key: &str, holder: &str) -> Result<bool, BrokerError> {
        let mut invocation = SCRIPTS.release.key(self.key(key));
        invocation.arg(holder);
        let mut conn = self.inner.conn.clone();
        let released = bounded::<i64>(
            "release",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(released == 1)
    }

    async fn reserve_slot(&self, key: &str, interval: Duration) -> Result<Duration, BrokerError> {
        let reservations = self.inner.reservations.get_or_init(|| {
            let (conn, timeout) = (self.inner.conn.clone(), self.inner.timeout);
            crate::batching::start(MAX_BATCH, MAX_IN_FLIGHT, move |batch| {
                reserve_batch(conn.clone(), timeout, batch)
            })
        });
        let (done, answer) = oneshot::channel();
        let request = Reservation {
            key: self.key(key),
            interval_micros: u64::try_from(interval.as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
            done,
        };
        if reservations.send(request).is_err() {
            return Err(BrokerError::Disconnected { op: "reserve_slot" });
        }
        answer
            .await
            .unwrap_or(Err(BrokerError::Disconnected { op: "reserve_slot" }))
    }

    async fn renew(
        &self,
        key: &str,
        holder: &str,
        hold_for: Duration,
        record: Option<Record<'_>>,
    ) -> Result<bool, BrokerError> {
        let mut invocation = SCRIPTS.renew.key(self.key(key));
        invocation.arg(holder).arg(millis(hold_for));
        if let Some(record) = record {
            invocation.key(self.key(record.key)).arg(record.value);
        }
        let mut conn = self.inner.conn.clone();
        let renewed = bounded::<i64>(
            "renew",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(renewed == 1)
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
        let mut get = redis::cmd("GET");
        get.arg(self.key(key));
        let mut conn = self.inner.conn.clone();
        bounded("read", self.inner.timeout, get.query_async(&mut conn)).await
    }

    async fn remember(
        &self,
        key: &str,
        member: &str,
        keep_for: Duration,
    ) -> Result<(), BrokerError> {
        let mut invocation = SCRIPTS.remember.key(self.key(key));
        invocation
            .arg(member)
            .arg(millis(keep_for))
            .arg(MAX_SET_MEMBERS);
        let mut conn = self.inner.conn.clone();
        bounded(
            "remember",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await
    }

    async fn members(&self, key: &str) -> Result<Vec<(String, Duration)>, BrokerError> {
        let invocation = SCRIPTS.members.key(self.key(key));
        let mut conn = self.inner.conn.clone();
        let members: Vec<(String, i64)> = bounded(
            "members",
            self.inner.timeout,
            invocation.invoke_async(&mut conn),
        )
        .await?;
        Ok(members
            .into_iter()
            .map(|(member, left)| {
                let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
                (member, left)
            })
            .collect())
    }
}

/// `duration` in whole milliseconds, at least one (what Redis's expiries take).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One slot to reserve, for the batching task.
struct Reservation {
    key: String,
    interval_micros: u64,
    done: SlotAnswer,
}

/// Where a reservation's caller waits for the wait until its slot.
type SlotAnswer = oneshot::Sender<Result<Duration, BrokerError>>;

/// Most reservations per batch.
const MAX_BATCH: usize = 1_000;

/// Most batches awaiting their replies at once.
const MAX_IN_FLIGHT: usize = 8;

/// Reserves the slots of one batch — one script call per limit, for all of that limit's runs at
/// once, consecutive slots — and answers each caller with the wait until its own.
async fn reserve_batch(conn: Conn, timeout: Duration, batch: Vec<Reservation>) {
    let mut by_limit: HashMap<(String, u64), Vec<SlotAnswer>> = HashMap::new();
    for reservation in batch {
        by_limit
            .entry((reservation.key, reservation.interval_micros))
            .or_default()
            .push(reservation.done);
    }
    for ((key, interval), callers) in by_limit {
        let mut invocation = SCRIPTS.reserve_slot.key(&key);
        invocation.arg(interval).arg(callers.len());
        let mut conn = conn.clone();
        let first =
            bounded::<i64>("reserve_slot", timeout, invocation.invoke_async(&mut conn)).await;
        match first {
            Ok(first) => {
                let first = u64::try_from(first).unwrap_or(0);
                for (index, done) in callers.into_iter().enumerate() {
                    let wait = first.saturating_add(interval.saturating_mul(index as u64));
                    let _ = done.send(Ok(Duration::from_micros(wait)));
                }
            }
            Err(error) => {
                for done in callers {
                    let _ = done.send(Err(copy(&error, "redis slot reservation failed")));
                }
            }
        }
    }
}
