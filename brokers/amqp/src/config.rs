use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) operation_timeout: Duration,
    pub(crate) max_deliveries: u32,
    pub(crate) max_priority: Option<u8>,
    pub(crate) publisher_channels: usize,
    pub(crate) shards: usize,
    /// Set by the builder; else the URL's `frame_max`; else [`DEFAULT_FRAME_MAX`].
    pub(crate) frame_max: Option<u32>,
    /// Certificates (PEM) trusted for `amqps://` besides the system's roots. Public data.
    pub(crate) tls_roots_pem: Option<String>,
    /// The connection's heartbeat in seconds, instead of the URL's or the server's.
    pub(crate) heartbeat: Option<u16>,
    /// Celery's task messages go out and come in as Celery sends them (see `crate::celery`).
    pub(crate) celery_format: bool,
    /// The kind of queue declared for tasks and dead letters.
    pub(crate) queue_type: QueueType,
}

impl Settings {
    /// Whether delays use Celery's native delayed delivery (Celery's format on quorum queues, as
    /// Celery ≥ 5.5 does) instead of celeriac's wait queues.
    pub(crate) fn native_delays(&self) -> bool {
        self.celery_format && self.queue_type == QueueType::Quorum
    }
}

/// The kind of RabbitMQ queue celeriac declares for tasks (and for their dead letters), chosen
/// with [`AmqpBrokerBuilder::queue_type`](crate::AmqpBrokerBuilder::queue_type) or the URL's
/// `?queue_type=classic|quorum`.
///
/// ```
/// use celeriac_amqp::QueueType;
///
/// assert_eq!(QueueType::default(), QueueType::Classic);
/// assert_eq!(QueueType::Quorum.as_str(), "quorum");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum QueueType {
    /// A classic queue: one node holds it. Takes priorities (`max_priority`).
    #[default]
    Classic,
    /// A quorum queue (`x-queue-type: quorum`, RabbitMQ ≥ 3.8): replicated with Raft across the
    /// cluster, surviving the loss of a minority of nodes. No priorities.
    Quorum,
}

impl QueueType {
    /// The name RabbitMQ and Celery give it (`x-queue-type`, `task_default_queue_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The largest AMQP frame we offer RabbitMQ by default: its own default. Offering it when
/// connecting lets lapin size its buffers (32 frames each way) once; left to the server's tune, lapin
/// enlarges them after the handshake and a worker peaked at 19 MiB instead of 15.
pub(crate) const DEFAULT_FRAME_MAX: u32 = 128 * 1024;
/// AMQP 0-9-1's smallest allowed `frame_max` (`frame-min-size`).
pub(crate) const MIN_FRAME_MAX: u32 = 4096;

impl Settings {
    pub(crate) fn capabilities(&self) -> celeriac_core::Capabilities {
        let mut capabilities = celeriac_core::Capabilities::none()
            .delays(None)
            .dead_letters()
            .stats();
        if let Some(max) = self.max_priority {
            capabilities = capabilities.priorities(max);
        }
        if self.shards == 1 {
            capabilities = capabilities.fifo();
        }
        capabilities
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(5),
            max_deliveries: 5,
            max_priority: None,
            publisher_channels: 4,
            shards: 1,
            frame_max: None,
            tls_roots_pem: None,
            heartbeat: None,
            celery_format: false,
            queue_type: QueueType::Classic,
        }
    }
}

/// The queue type the URL's first node asks for (`?queue_type=quorum`; `classic`, or no such
/// option, is the default); what is wrong otherwise.
pub(crate) fn queue_type(url: &celeriac_core::RedactedUrl) -> Result<QueueType, String> {
    let Some(first) = url.nodes().into_iter().next() else {
        return Ok(QueueType::Classic);
    };
    let Ok(parsed) = url::Url::parse(first.secret()) else {
        // Said when connecting, by the URL parser.
        return Ok(QueueType::Classic);
    };
    let asked = parsed
        .query_pairs()
        .find(|(name, _)| name == "queue_type")
        .map(|(_, value)| value.into_owned());
    match asked.as_deref() {
        None | Some("classic") => Ok(QueueType::Classic),
        Some("quorum") => Ok(QueueType::Quorum),
        Some(other) => Err(format!(
            "`queue_type={other}` in the URL: RabbitMQ queues here are `classic` or `quorum`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use celeriac_core::RedactedUrl;

    use super::{QueueType, queue_type};

    #[test]
    fn the_url_chooses_the_queue_type() {
        let of = |url: &str| queue_type(&RedactedUrl::new(url));
        assert_eq!(of("amqp://h/%2f"), Ok(QueueType::Classic));
        assert_eq!(
            of("amqp://h/%2f?queue_type=classic"),
            Ok(QueueType::Classic)
        );
        assert_eq!(
            of("amqp://h/%2f?heartbeat=5&queue_type=quorum"),
            Ok(QueueType::Quorum)
        );
        assert_eq!(
            of("amqp://h/%2f?queue_type=quorum;amqp://k/%2f"),
            Ok(QueueType::Quorum)
        );
        let wrong = of("amqp://u:hunter2@h/%2f?queue_type=stream").unwrap_err();
        assert!(wrong.contains("queue_type=stream"), "{wrong}");
        assert!(!wrong.contains("hunter2"), "{wrong}");
    }
}
