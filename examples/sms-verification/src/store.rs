//! Where codes live: Redis when a Redis URL is given, memory otherwise.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// A storage failure (Redis unreachable, …).
#[derive(Debug, thiserror::Error)]
#[error("code store unavailable: {0}")]
pub struct StoreError(pub String);

/// What verifying a code found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    /// It matched; it is now used up.
    Accepted,
    /// No code is pending for this number (never sent, expired, or already used).
    NoCode,
    /// A code is pending but this one is wrong.
    Mismatch,
}

/// Codes, with expiry. (Throttling is the SMS task's own: it is unique per number for a minute.)
#[async_trait]
pub trait CodeStore: Send + Sync + 'static {
    /// Stores `code` for `mobile` for `ttl`, replacing any earlier one.
    async fn put_code(&self, mobile: &str, code: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Checks `code`; a matching code is deleted, so it works once.
    async fn verify(&self, mobile: &str, code: &str) -> Result<Verification, StoreError>;
    /// Deletes the codes that expired; answers how many it deleted.
    async fn purge_expired(&self) -> Result<usize, StoreError>;
}

/// An in-memory store, with expiry on tokio's clock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    codes: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryStore {
    /// How many codes it holds, expired ones not purged yet included.
    pub fn len(&self) -> usize {
        lock(&self.codes).len()
    }

    /// Whether it holds no code.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl CodeStore for MemoryStore {
    async fn put_code(&self, mobile: &str, code: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut codes = lock(&self.codes);
        codes.retain(|_, (_, until)| *until > now);
        codes.insert(mobile.to_owned(), (code.to_owned(), now + ttl));
        Ok(())
    }

    async fn verify(&self, mobile: &str, code: &str) -> Result<Verification, StoreError> {
        let now = Instant::now();
        let mut codes = lock(&self.codes);
        match codes.get(mobile) {
            Some((_, until)) if *until <= now => {
                codes.remove(mobile);
                Ok(Verification::NoCode)
            }
            Some((stored, _)) if stored == code => {
                codes.remove(mobile);
                Ok(Verification::Accepted)
            }
            Some(_) => Ok(Verification::Mismatch),
            None => Ok(Verification::NoCode),
        }
    }

    async fn purge_expired(&self) -> Result<usize, StoreError> {
        let now = Instant::now();
        let mut codes = lock(&self.codes);
        let before = codes.len();
        codes.retain(|_, (_, until)| *until > now);
        Ok(before - codes.len())
    }
}

/// A Redis store: `sms:code:<mobile>` (`SET PX`), checked and deleted atomically by a Lua script.
#[derive(Clone)]
pub struct RedisStore {
    conn: redis::aio::ConnectionManager,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

const VERIFY: &str = r"
local stored = redis.call('GET', KEYS[1])
if not stored then return 0 end
if stored == ARGV[1] then redis.call('DEL', KEYS[1]); return 1 end
return 2
";

fn store_error(error: redis::RedisError) -> StoreError {
    StoreError(format!("{:?}", error.kind()))
}

impl RedisStore {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let conn = tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager())
            .await
            .map_err(|_| StoreError("no answer from redis".into()))?
            .map_err(store_error)?;
        Ok(Self { conn })
    }
}

#[async_trait]
impl CodeStore for RedisStore {
    async fn put_code(&self, mobile: &str, code: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(format!("sms:code:{mobile}"))
            .arg(code)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .query_async::<()>(&mut conn)
            .await
            .map_err(store_error)
    }

    async fn verify(&self, mobile: &str, code: &str) -> Result<Verification, StoreError> {
        let mut conn = self.conn.clone();
        let outcome: i64 = redis::Script::new(VERIFY)
            .key(format!("sms:code:{mobile}"))
            .arg(code)
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        Ok(match outcome {
            1 => Verification::Accepted,
            2 => Verification::Mismatch,
            _ => Verification::NoCode,
        })
    }

    /// Redis expires codes itself (`PX`): nothing is left to delete.
    async fn purge_expired(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}
