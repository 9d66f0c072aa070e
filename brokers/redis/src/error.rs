use std::time::Duration;

use celeriac::BrokerError;
use redis::RedisError;

/// Maps a Redis client error to a [`BrokerError`], keeping what was being done. Connection problems
/// become transient errors, so workers reconnect and callers may retry.
pub(crate) fn from_redis(op: &'static str, error: RedisError) -> BrokerError {
    if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
        BrokerError::Disconnected { op }
    } else {
        BrokerError::Backend {
            context: format!("redis {op} failed"),
            source: Box::new(error),
        }
    }
}

/// Runs one Redis operation with the broker's operation timeout.
pub(crate) async fn bounded<T>(
    op: &'static str,
    after: Duration,
    operation: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(after, operation).await {
        Ok(result) => result.map_err(|error| from_redis(op, error)),
        Err(_) => Err(BrokerError::Timeout { op, after }),
    }
}

/// Whether a server error is `code` (e.g. `NOGROUP`, `BUSYGROUP`).
pub(crate) fn has_code(error: &RedisError, code: &str) -> bool {
    error.code() == Some(code)
}
