use std::time::Duration;

use celeriac_core::BrokerError;
use lapin::ErrorKind;

/// Maps a lapin error to a [`BrokerError`]: connection and channel problems become transient errors,
/// so workers reconnect and callers may retry.
pub(crate) fn from_lapin(op: &'static str, error: lapin::Error) -> BrokerError {
    match error.kind() {
        ErrorKind::IOError(_)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::RuntimeShutdownError(_) => BrokerError::Disconnected { op },
        _ => BrokerError::Backend {
            context: format!("rabbitmq {op} failed"),
            source: Box::new(error),
        },
    }
}

/// Runs one AMQP operation with the broker's operation timeout.
pub(crate) async fn bounded<T>(
    op: &'static str,
    after: Duration,
    operation: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(after, operation).await {
        Ok(result) => result.map_err(|error| from_lapin(op, error)),
        Err(_) => Err(BrokerError::Timeout { op, after }),
    }
}
