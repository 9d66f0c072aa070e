use std::time::Duration;

use celeriac_core::BrokerError;
use redis::RedisError;

/// Server errors that a restart or failover in progress explains, and that go away by themselves:
/// loading the dataset, a failover or resharding under way, a script running too long.
const PASSING_CODES: [&str; 6] = [
    "LOADING",
    "TRYAGAIN",
    "MASTERDOWN",
    "READONLY",
    "CLUSTERDOWN",
    "BUSY",
];

/// Maps a Redis client error to a [`BrokerError`], keeping what was being done. Connection problems
/// become transient errors, so workers reconnect and callers may retry.
pub(crate) fn from_redis(op: &'static str, error: RedisError) -> BrokerError {
    if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
        BrokerError::Disconnected { op }
    } else if let Some(code) = error.code().filter(|code| PASSING_CODES.contains(code)) {
        // The server's own words, code first (`LOADING Redis is loading the dataset in memory`).
        let reason = match error.detail() {
            Some(detail) => format!("{code} {detail}"),
            None => code.to_owned(),
        };
        BrokerError::Unavailable { op, reason }
    } else {
        BrokerError::Backend {
            context: format!("redis {op} failed"),
            source: Box::new(error),
        }
    }
}

/// Maps an error reply read without the `redis` client (see [`crate::bounded`]) like [`from_redis`].
pub(crate) fn from_error_reply(op: &'static str, reply: &str) -> BrokerError {
    let code = reply.split_whitespace().next().unwrap_or_default();
    if PASSING_CODES.contains(&code) {
        BrokerError::Unavailable {
            op,
            reason: reply.to_owned(),
        }
    } else {
        BrokerError::Backend {
            context: format!("redis {op} failed"),
            source: reply.to_owned().into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_loading_its_data_is_a_passing_condition() {
        for code in PASSING_CODES {
            // Built from the reply as the server sends it.
            let parsed = redis::parse_redis_value(format!("-{code} please wait\r\n").as_bytes())
                .expect("an error reply");
            let error = match parsed {
                redis::Value::ServerError(error) => RedisError::from(error),
                other => panic!("not an error: {other:?}"),
            };
            let mapped = from_redis("read", error);
            assert!(mapped.is_transient(), "{code}: {mapped}");
            assert!(
                mapped.to_string().contains(&format!("{code} please wait")),
                "{mapped}"
            );
            let read = from_error_reply("read", &format!("{code} please wait"));
            assert!(read.is_transient(), "{read}");
        }
    }
}
