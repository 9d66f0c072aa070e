use std::time::Duration;

use celeriac_core::BrokerError;
use lapin::ErrorKind;
use lapin::protocol::AMQPErrorKind;

/// Maps a lapin error to a [`BrokerError`]: connection and channel problems become transient errors,
/// so workers reconnect and callers may retry.
pub(crate) fn from_lapin(op: &'static str, error: lapin::Error) -> BrokerError {
    match error.kind() {
        ErrorKind::IOError(_)
        | ErrorKind::InvalidConnectionState(_)
        | ErrorKind::InvalidChannelState(..)
        | ErrorKind::InvalidChannel(_)
        | ErrorKind::RuntimeShutdownError(_) => BrokerError::Disconnected { op },
        // A hard protocol error closes the whole connection (RabbitMQ's `CHANNEL_ERROR` on a
        // channel it has not opened yet, say): the link reconnects, and the operation can too.
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Hard(_)) => {
            BrokerError::Disconnected { op }
        }
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

#[cfg(test)]
mod tests {
    use lapin::protocol::{AMQPError, AMQPHardError, AMQPSoftError};

    use super::*;

    fn protocol(kind: AMQPErrorKind) -> lapin::Error {
        lapin::Error::from(ErrorKind::ProtocolError(AMQPError::new(
            kind,
            "CHANNEL_ERROR - expected 'channel.open'".into(),
        )))
    }

    #[test]
    fn a_hard_protocol_error_is_a_lost_connection_and_a_soft_one_is_not() {
        let hard = from_lapin(
            "set prefetch",
            protocol(AMQPErrorKind::Hard(AMQPHardError::CHANNELERROR)),
        );
        assert!(hard.is_transient(), "{hard:?}");
        let soft = from_lapin(
            "declare",
            protocol(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)),
        );
        assert!(!soft.is_transient(), "{soft:?}");
    }
}
