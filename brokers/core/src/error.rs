use std::time::Duration;

/// A boxed error from a broker's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a broker operation failed. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker could not be reached. `url` has its password redacted.
    #[error("cannot connect to broker at {url}")]
    Connect {
        /// The broker URL, password redacted.
        url: String,
        /// What the client library reported.
        #[source]
        source: BoxError,
    },
    /// The connection was lost during the operation.
    #[error("connection to the broker was lost during {op}")]
    Disconnected {
        /// The operation that was under way.
        op: &'static str,
    },
    /// The operation did not complete in time.
    #[error("broker operation {op} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// The broker is up but cannot serve the operation for now: it is loading its data after a
    /// restart, a failover is under way, or the like. Transient: retry later.
    #[error("the broker cannot serve {op} for now: {reason}")]
    Unavailable {
        /// The operation that was refused.
        op: &'static str,
        /// What the broker answered.
        reason: String,
    },
    /// The broker refused the message (e.g. a publisher-confirm nack).
    #[error("broker rejected the message: {reason}")]
    Rejected {
        /// The broker's reason.
        reason: String,
    },
    /// The broker cannot do what was asked (see [`Broker::capabilities`](crate::Broker::capabilities)).
    /// Repeating the request cannot help.
    #[error("the {system} broker does not support {feature}")]
    Unsupported {
        /// The broker's messaging system (`redis`, `rabbitmq`, …).
        system: &'static str,
        /// What was asked for.
        feature: &'static str,
    },
    /// An invalid argument, such as an empty queue name.
    #[error("invalid broker request: {0}")]
    Invalid(String),
    /// Any other failure of the broker's client library, with what was being done.
    #[error("{context}")]
    Backend {
        /// What was being done.
        context: String,
        /// What the client library reported.
        #[source]
        source: BoxError,
    },
}

impl BrokerError {
    /// The error for a request the `system` broker cannot serve.
    ///
    /// ```
    /// use celeriac::BrokerError;
    ///
    /// let error = BrokerError::unsupported("redis", "priorities");
    /// assert_eq!(error.to_string(), "the redis broker does not support priorities");
    /// assert!(error.is_invalid_request());
    /// ```
    pub fn unsupported(system: &'static str, feature: &'static str) -> Self {
        Self::Unsupported { system, feature }
    }

    /// Whether retrying the operation later (after reconnecting) may succeed.
    ///
    /// ```
    /// use celeriac::BrokerError;
    ///
    /// assert!(BrokerError::Disconnected { op: "publish" }.is_transient());
    /// assert!(!BrokerError::Invalid("empty queue name".into()).is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Disconnected { .. }
                | Self::Timeout { .. }
                | Self::Unavailable { .. }
        )
    }

    /// Whether the request itself is wrong, so that repeating it can never succeed whatever the
    /// broker does (an empty queue name, say). A worker stops only on such an error; it rides out
    /// every other one, since a restart or repair of the broker may cure it.
    ///
    /// ```
    /// use celeriac::BrokerError;
    ///
    /// assert!(BrokerError::Invalid("empty queue name".into()).is_invalid_request());
    /// assert!(!BrokerError::Disconnected { op: "consume" }.is_invalid_request());
    /// ```
    pub fn is_invalid_request(&self) -> bool {
        matches!(self, Self::Invalid(_) | Self::Unsupported { .. })
    }
}

/// Shows an error with each of its causes once: `message: cause: cause…`.
///
/// celeriac's errors follow the Rust convention — `Display` is the error's own message, its causes are
/// its [`source`](std::error::Error::source) chain — so that a reporter (this, `anyhow`'s `{:#}`, …)
/// prints every cause exactly once. Log errors through it.
///
/// ```
/// use celeriac::BrokerError;
/// use celeriac::error::Report;
///
/// let error = BrokerError::Backend {
///     context: "XADD to queue `sms`".into(),
///     source: std::io::Error::other("connection reset").into(),
/// };
/// assert_eq!(error.to_string(), "XADD to queue `sms`");
/// assert_eq!(Report(&error).to_string(), "XADD to queue `sms`: connection reset");
/// ```
#[derive(Clone, Copy)]
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
