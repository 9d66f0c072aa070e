//! Choosing a broker by URL: `memory://`, `redis://`, `rediss://`, `amqp://`, `amqps://`.
//! `redis://…?layout=kombu` (or an app with `celery_compat`) is kombu's layout, Python Celery's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::BuildError;
use crate::broker::{
    Broker, BrokerError, Capabilities, ConsumeOptions, DeadLetter, DeliveryStream, MemoryBroker,
    Outgoing, QueueStats, RedactedUrl,
};
use crate::result::MemoryResultBackend;

/// Where the app's broker comes from, as given to the builder.
pub(super) enum BrokerChoice {
    Given(Arc<dyn Broker>),
    Url(String),
    EnvMissing(String),
}

impl BrokerChoice {
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Given(broker) => broker.redacted_url(),
            Self::Url(url) => RedactedUrl::new(url).redacted().to_owned(),
            Self::EnvMissing(var) => format!("${var} (unset)"),
        }
    }

    /// The broker. With `celery_layout`, a `redis://` URL stands for kombu's layout (Python
    /// Celery's), so that Python workers share the queues.
    pub(super) fn into_broker(self, celery_layout: bool) -> Result<Arc<dyn Broker>, BuildError> {
        match self {
            Self::Given(broker) => Ok(broker),
            Self::Url(url) => from_url(&url, celery_layout),
            Self::EnvMissing(var) => Err(BuildError::BrokerEnvMissing { var }),
        }
    }

    /// The broker's URL, when it was given as one.
    pub(super) fn url(&self) -> Option<&str> {
        match self {
            Self::Url(url) => Some(url),
            _ => None,
        }
    }

    /// The result backend that goes with this broker when the app names none: the embedded
    /// broker's own, for `memory://` URLs. (A [`MemoryBroker`] given by value is seen by the builder.)
    /// The coordination store that goes with a broker given by URL: the memory broker's own, or
    /// Redis at the Redis broker's URL. RabbitMQ holds no claims.
    pub(super) fn default_coordination(
        &self,
    ) -> Option<Arc<dyn crate::coordination::CoordinationStore>> {
        let Self::Url(url) = self else { return None };
        let scheme = ::url::Url::parse(first_node(url)).ok()?.scheme().to_owned();
        match scheme.as_str() {
            "memory" | "redis" | "rediss" | "redis+cluster" | "rediss+cluster"
            | "redis+sentinel" | "rediss+sentinel" => super::coordination_url::from_url(url).ok(),
            _ => None,
        }
    }

    pub(super) fn default_result_backend(&self) -> Option<MemoryResultBackend> {
        let Self::Url(url) = self else { return None };
        let parsed = ::url::Url::parse(url).ok()?;
        (parsed.scheme() == "memory").then(|| memory_results(&parsed))
    }
}

/// One process-wide in-memory broker per `memory://` URL, so every app of the process built from the
/// same URL shares its queues (as a web handler and a worker in one process expect).
fn memory_broker(name: &str) -> MemoryBroker {
    static BROKERS: OnceLock<Mutex<HashMap<String, MemoryBroker>>> = OnceLock::new();
    let brokers = BROKERS.get_or_init(Default::default);
    let mut brokers = brokers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    brokers.entry(name.to_owned()).or_default().clone()
}

/// The name of the embedded broker a `memory://name` URL stands for.
fn memory_name(url: &::url::Url) -> String {
    url.host_str().unwrap_or_default().to_owned() + url.path()
}

/// The results of the embedded broker a `memory://name` URL stands for.
pub(crate) fn memory_results(url: &::url::Url) -> MemoryResultBackend {
    memory_broker(&memory_name(url)).result_backend()
}

pub(super) fn memory_coordination(url: &::url::Url) -> crate::coordination::MemoryCoordination {
    memory_broker(&memory_name(url)).coordination()
}

fn from_url(url: &str, celery_layout: bool) -> Result<Arc<dyn Broker>, BuildError> {
    let redacted = RedactedUrl::new(url);
    let invalid = |reason: String| BuildError::BrokerUrl {
        url: redacted.redacted().to_owned(),
        reason,
    };
    let parsed = ::url::Url::parse(first_node(url))
        .map_err(|error| invalid(redacted.scrub(&error.to_string())))?;
    let feature_off = |feature: &'static str| BuildError::BrokerFeatureDisabled {
        url: redacted.redacted().to_owned(),
        feature,
    };
    match parsed.scheme() {
        "memory" => Ok(Arc::new(memory_broker(&memory_name(&parsed)))),
        #[cfg(not(feature = "redis"))]
        "redis" | "rediss" if celery_layout => Err(feature_off("redis")),
        "redis+cluster" | "rediss+cluster" | "redis+sentinel" | "rediss+sentinel"
            if celery_layout =>
        {
            Err(invalid(
                "Celery's Redis layout (kombu) is celeriac's on one Redis server only: use \
                 redis:// or amqp://"
                    .to_owned(),
            ))
        }
        "redis+cluster" | "rediss+cluster" | "redis+sentinel" | "rediss+sentinel" => {
            #[cfg(feature = "redis")]
            {
                Ok(Arc::new(LazyBroker::new(redacted, redis_connector())))
            }
            #[cfg(not(feature = "redis"))]
            {
                Err(feature_off("redis"))
            }
        }
        "redis" | "rediss" => {
            #[cfg(feature = "redis")]
            {
                let kombu = parsed
                    .query_pairs()
                    .any(|(name, value)| name == "layout" && value == "kombu");
                let connector = if celery_layout || kombu {
                    kombu_connector()
                } else {
                    redis_connector()
                };
                Ok(Arc::new(LazyBroker::new(redacted, connector)))
            }
            #[cfg(not(feature = "redis"))]
            {
                Err(feature_off("redis"))
            }
        }
        "amqp" | "amqps" => {
            #[cfg(feature = "amqp")]
            {
                let connector = if celery_layout {
                    amqp_celery_connector()
                } else {
                    amqp_connector()
                };
                Ok(Arc::new(LazyBroker::new(redacted, connector)))
            }
            #[cfg(not(feature = "amqp"))]
            {
                Err(feature_off("amqp"))
            }
        }
        other => {
            let _ = feature_off;
            Err(invalid(format!(
                "unknown scheme `{other}`: use memory://, redis://, rediss://, redis+cluster://, \
                 redis+sentinel://, amqp:// or amqps://"
            )))
        }
    }
}

/// The first URL of a `;`-separated node list (the whole URL if it is one node): the list's
/// scheme and options are the first node's.
pub(super) fn first_node(url: &str) -> &str {
    url.split(';').next().unwrap_or(url)
}

#[cfg_attr(not(any(feature = "redis", feature = "amqp")), allow(dead_code))]
type Connect = fn(String) -> BoxFuture<'static, Result<Arc<dyn Broker>, BrokerError>>;

/// How to reach one kind of broker.
#[derive(Clone, Copy)]
#[cfg_attr(not(any(feature = "redis", feature = "amqp")), allow(dead_code))]
struct Connector {
    system: &'static str,
    capabilities: Capabilities,
    connect: Connect,
    /// An election held in the broker at a URL, if it holds them (see `Broker::election`).
    election: Option<ElectionAt>,
}

/// The election named `name`, with terms of `lease`, in the broker at `url`: `(url, name, lease)`.
type ElectionAt = fn(&str, &str, Duration) -> Arc<dyn crate::election::Election>;

#[cfg(feature = "redis")]
fn redis_connector() -> Connector {
    Connector {
        system: "redis",
        capabilities: celeriac_redis::RedisBroker::CAPABILITIES,
        connect: |url| {
            Box::pin(async move {
                let broker = celeriac_redis::RedisBroker::connect(&url).await?;
                Ok(Arc::new(broker) as Arc<dyn Broker>)
            })
        },
        election: None,
    }
}

/// kombu's Redis layout, which Python Celery's workers read (see `AppBuilder::celery_compat`).
#[cfg(feature = "redis")]
fn kombu_connector() -> Connector {
    Connector {
        system: "redis",
        capabilities: celeriac_redis::KombuBroker::CAPABILITIES,
        connect: |url| {
            Box::pin(async move {
                let broker = celeriac_redis::KombuBroker::connect(&url).await?;
                Ok(Arc::new(broker) as Arc<dyn Broker>)
            })
        },
        election: None,
    }
}

#[cfg(feature = "amqp")]
fn amqp_connector() -> Connector {
    Connector {
        system: "rabbitmq",
        capabilities: celeriac_amqp::AmqpBroker::builder("amqp://").capabilities(),
        connect: |url| {
            Box::pin(async move {
                let broker = celeriac_amqp::AmqpBroker::connect(&url).await?;
                Ok(Arc::new(broker) as Arc<dyn Broker>)
            })
        },
        election: Some(|url, name, lease| {
            Arc::new(celeriac_amqp::AmqpElection::new(url, name).lease(lease))
        }),
    }
}

/// RabbitMQ with Celery's task messages as Celery sends them (see `AppBuilder::celery_compat`).
#[cfg(feature = "amqp")]
fn amqp_celery_connector() -> Connector {
    Connector {
        connect: |url| {
            Box::pin(async move {
                let broker = celeriac_amqp::AmqpBroker::builder(&url)
                    .celery_format(true)
                    .connect()
                    .await?;
                Ok(Arc::new(broker) as Arc<dyn Broker>)
            })
        },
        ..amqp_connector()
    }
}

/// A broker chosen by URL, connected on first use (so that `AppBuilder::build` stays synchronous).
/// A failed connection is an error of the operation that tried it, and the next one tries again.
// Without the `redis` and `amqp` features, nothing builds one.
#[cfg_attr(not(any(feature = "redis", feature = "amqp")), allow(dead_code))]
struct LazyBroker {
    url: RedactedUrl,
    connector: Connector,
    broker: tokio::sync::OnceCell<Arc<dyn Broker>>,
}

#[cfg_attr(not(any(feature = "redis", feature = "amqp")), allow(dead_code))]
impl LazyBroker {
    fn new(url: RedactedUrl, connector: Connector) -> Self {
        Self {
            url,
            connector,
            broker: tokio::sync::OnceCell::new(),
        }
    }

    async fn connected(&self) -> Result<&Arc<dyn Broker>, BrokerError> {
        self.broker
            .get_or_try_init(|| (self.connector.connect)(self.url.secret().to_owned()))
            .await
    }
}

impl std::fmt::Debug for LazyBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyBroker")
            .field("url", &self.url)
            .field("connected", &self.broker.initialized())
            .finish()
    }
}

#[async_trait]
impl Broker for LazyBroker {
    fn system(&self) -> &'static str {
        self.connector.system
    }

    fn redacted_url(&self) -> String {
        self.url.redacted().to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        match self.broker.get() {
            Some(broker) => broker.capabilities(),
            None => self.connector.capabilities,
        }
    }

    async fn publish(&self, message: Outgoing) -> Result<(), BrokerError> {
        self.connected().await?.publish(message).await
    }

    async fn publish_batch(&self, messages: Vec<Outgoing>) -> Result<(), BrokerError> {
        self.connected().await?.publish_batch(messages).await
    }

    async fn consume(
        &self,
        queues: &[String],
        options: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        self.connected().await?.consume(queues, options).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        self.connected().await?.stats(queue).await
    }

    async fn len(&self, queue: &str) -> Result<u64, BrokerError> {
        self.connected().await?.len(queue).await
    }

    async fn dead_letters(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BrokerError> {
        self.connected().await?.dead_letters(queue, limit).await
    }

    async fn requeue_dead_letters(&self, queue: &str, limit: usize) -> Result<u64, BrokerError> {
        self.connected()
            .await?
            .requeue_dead_letters(queue, limit)
            .await
    }

    async fn purge(&self, queue: &str) -> Result<u64, BrokerError> {
        self.connected().await?.purge(queue).await
    }

    async fn purge_dead_letters(&self, queue: &str) -> Result<u64, BrokerError> {
        self.connected().await?.purge_dead_letters(queue).await
    }

    async fn consumers_stopped(&self) -> Result<(), BrokerError> {
        match self.broker.get() {
            Some(broker) => broker.consumers_stopped().await,
            None => Ok(()),
        }
    }

    async fn event_bus(&self) -> Result<Option<Arc<dyn crate::events::EventBus>>, BrokerError> {
        self.connected().await?.event_bus().await
    }

    fn election(&self, name: &str, lease: Duration) -> Option<Arc<dyn crate::election::Election>> {
        self.connector
            .election
            .map(|election| election(self.url.secret(), name, lease))
    }
}
