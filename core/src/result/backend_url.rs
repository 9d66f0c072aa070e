//! Choosing a result backend by URL: `memory://`, `redis://`, `rediss://`, `rpc://`.

use std::sync::Arc;
#[cfg(feature = "redis")]
use std::time::Duration;

#[cfg(feature = "redis")]
use async_trait::async_trait;

use super::ResultBackend;
#[cfg(feature = "redis")]
use super::StoredResult;
use crate::BuildError;
#[cfg(feature = "redis")]
use crate::broker::BrokerError;
use crate::broker::RedactedUrl;

/// Where the app's result backend comes from, as given to the builder.
pub(crate) enum ResultBackendChoice {
    Given(Arc<dyn ResultBackend>),
    Url(String),
}

impl ResultBackendChoice {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Given(backend) => backend.redacted_url(),
            Self::Url(url) => RedactedUrl::new(url).redacted().to_owned(),
        }
    }

    /// The backend; `broker_url` is the app's broker URL when it was given as one (`rpc://` sends
    /// results over that RabbitMQ). With `celery_format`, a `redis://` URL keeps results as
    /// Celery's Redis backend does.
    pub(crate) fn into_backend(
        self,
        broker_url: Option<&str>,
        celery_format: bool,
    ) -> Result<Arc<dyn ResultBackend>, BuildError> {
        match self {
            Self::Given(backend) => Ok(backend),
            Self::Url(url) => from_url(&url, broker_url, celery_format),
        }
    }
}

fn from_url(
    url: &str,
    broker_url: Option<&str>,
    celery_format: bool,
) -> Result<Arc<dyn ResultBackend>, BuildError> {
    let redacted = RedactedUrl::new(url);
    let invalid = |reason: String| BuildError::ResultBackendUrl {
        url: redacted.redacted().to_owned(),
        reason,
    };
    let parsed =
        ::url::Url::parse(url).map_err(|error| invalid(redacted.scrub(&error.to_string())))?;
    match parsed.scheme() {
        "memory" => Ok(Arc::new(crate::app::memory_results(&parsed))),
        "redis" | "rediss" => {
            #[cfg(feature = "redis")]
            {
                if celery_format {
                    return Ok(Arc::new(LazyRedis::celery(redacted)));
                }
                Ok(Arc::new(LazyRedis::new(redacted)))
            }
            #[cfg(not(feature = "redis"))]
            {
                let _ = celery_format;
                Err(invalid(
                    "needs the `redis` feature of celeriac: `cargo add celeriac --features redis`"
                        .to_owned(),
                ))
            }
        }
        "rpc" => rpc(broker_url, celery_format).map_err(|reason| invalid(reason.to_owned())),
        other => Err(invalid(format!(
            "unknown scheme `{other}`: use memory://, redis://, rediss:// or rpc://"
        ))),
    }
}

/// RabbitMQ's RPC backend on the app's broker, which must be an `amqp://` or `amqps://` URL;
/// with `celery_format`, its results travel as Celery's `rpc://` backend sends them.
fn rpc(
    broker_url: Option<&str>,
    celery_format: bool,
) -> Result<Arc<dyn ResultBackend>, &'static str> {
    let Some(broker_url) = broker_url.filter(|url| url.starts_with("amqp")) else {
        return Err(
            "rpc:// sends results over the app's RabbitMQ broker: give the broker as an \
                    amqp:// or amqps:// URL (or build `celeriac::amqp::AmqpRpcBackend::new(url)` \
                    and pass it to `result_backend`)",
        );
    };
    #[cfg(feature = "amqp")]
    {
        Ok(Arc::new(
            celeriac_amqp::AmqpRpcBackend::new(broker_url).celery_format(celery_format),
        ))
    }
    #[cfg(not(feature = "amqp"))]
    {
        let _ = (broker_url, celery_format);
        Err("needs the `amqp` feature of celeriac: `cargo add celeriac --features amqp`")
    }
}

/// A result backend on Redis, connected on first use: celeriac's own
/// ([`RedisResultBackend`](celeriac_redis::RedisResultBackend), which joins chords) or Celery's
/// ([`CeleryResultBackend`](celeriac_redis::CeleryResultBackend)).
#[cfg(feature = "redis")]
#[derive(Debug)]
struct LazyRedis<B: ResultBackend + Clone> {
    backend: crate::lazy::LazyClient<B>,
    /// What `B::joins_chords` answers, known before connecting.
    joins_chords: bool,
}

#[cfg(feature = "redis")]
impl LazyRedis<celeriac_redis::RedisResultBackend> {
    fn new(url: RedactedUrl) -> Self {
        Self {
            backend: crate::lazy::LazyClient::new(url, |url| {
                Box::pin(async move { celeriac_redis::RedisResultBackend::connect(&url).await })
            }),
            joins_chords: true,
        }
    }
}

#[cfg(feature = "redis")]
impl LazyRedis<celeriac_redis::CeleryResultBackend> {
    fn celery(url: RedactedUrl) -> Self {
        Self {
            backend: crate::lazy::LazyClient::new(url, |url| {
                Box::pin(async move { celeriac_redis::CeleryResultBackend::connect(&url).await })
            }),
            // Celery's chords, in Celery's keys.
            joins_chords: true,
        }
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl<B: ResultBackend + Clone> ResultBackend for LazyRedis<B> {
    fn system(&self) -> &'static str {
        "redis"
    }

    fn redacted_url(&self) -> String {
        self.backend.url().redacted().to_owned()
    }

    async fn store(
        &self,
        id: &str,
        result: StoredResult,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        self.backend.connected().await?.store(id, result, ttl).await
    }

    async fn fetch(&self, id: &str) -> Result<Option<StoredResult>, BrokerError> {
        self.backend.connected().await?.fetch(id).await
    }

    async fn wait_ready(&self, id: &str) -> Result<StoredResult, BrokerError> {
        self.backend.connected().await?.wait_ready(id).await
    }

    async fn forget(&self, id: &str) -> Result<(), BrokerError> {
        self.backend.connected().await?.forget(id).await
    }

    fn joins_chords(&self) -> bool {
        self.joins_chords
    }

    async fn save_group(
        &self,
        group: &str,
        members: &[String],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let backend = self.backend.connected().await?;
        backend.save_group(group, members, ttl).await
    }

    async fn restore_group(&self, group: &str) -> Result<Option<Vec<String>>, BrokerError> {
        self.backend.connected().await?.restore_group(group).await
    }

    async fn forget_group(&self, group: &str) -> Result<(), BrokerError> {
        self.backend.connected().await?.forget_group(group).await
    }

    async fn keep_chord_size(
        &self,
        chord: &str,
        size: u32,
        ttl: Duration,
    ) -> Result<bool, BrokerError> {
        let backend = self.backend.connected().await?;
        backend.keep_chord_size(chord, size, ttl).await
    }

    async fn join_chord(
        &self,
        part: super::ChordPart<'_>,
        output: bytes::Bytes,
        ttl: Duration,
    ) -> Result<super::ChordJoin, BrokerError> {
        let backend = self.backend.connected().await?;
        backend.join_chord(part, output, ttl).await
    }

    async fn chord_fired(&self, chord: &str, ttl: Duration) -> Result<(), BrokerError> {
        self.backend
            .connected()
            .await?
            .chord_fired(chord, ttl)
            .await
    }

    async fn fail_chord(
        &self,
        part: super::ChordPart<'_>,
        error: &str,
        ttl: Duration,
    ) -> Result<super::ChordJoin, BrokerError> {
        self.backend
            .connected()
            .await?
            .fail_chord(part, error, ttl)
            .await
    }
}
