//! Choosing a coordination store: given, by URL (`memory://`, `redis://`, `rediss://`), or the
//! broker's own.

use std::sync::Arc;

use crate::BuildError;
use crate::broker::RedactedUrl;
use crate::coordination::CoordinationStore;

pub(super) enum CoordinationChoice {
    Given(Arc<dyn CoordinationStore>),
    Url(String),
}

impl CoordinationChoice {
    pub(super) fn into_store(self) -> Result<Arc<dyn CoordinationStore>, BuildError> {
        match self {
            Self::Given(store) => Ok(store),
            Self::Url(url) => from_url(&url),
        }
    }
}

/// The store at `url`.
pub(super) fn from_url(url: &str) -> Result<Arc<dyn CoordinationStore>, BuildError> {
    let redacted = RedactedUrl::new(url);
    let invalid = |reason: String| BuildError::CoordinationUrl {
        url: redacted.redacted().to_owned(),
        reason,
    };
    let parsed = ::url::Url::parse(super::broker_url::first_node(url))
        .map_err(|error| invalid(redacted.scrub(&error.to_string())))?;
    match parsed.scheme() {
        "memory" => Ok(Arc::new(super::broker_url::memory_coordination(&parsed))),
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" | "redis+sentinel"
        | "rediss+sentinel" => {
            #[cfg(feature = "redis")]
            {
                Ok(Arc::new(redis::LazyRedisCoordination::new(redacted)))
            }
            #[cfg(not(feature = "redis"))]
            {
                Err(invalid(
                    "needs the `redis` feature of celeriac: `cargo add celeriac --features redis`"
                        .to_owned(),
                ))
            }
        }
        other => Err(invalid(format!(
            "unknown scheme `{other}`: use memory://, redis://, rediss:// or redis+cluster:// \
             (RabbitMQ holds no claims)"
        ))),
    }
}

#[cfg(feature = "redis")]
mod redis {
    use std::time::Duration;

    use async_trait::async_trait;
    use celeriac_redis::RedisCoordination;

    use crate::broker::{BrokerError, RedactedUrl};
    use crate::coordination::{Claim, CoordinationStore, Record};
    use crate::lazy::LazyClient;

    /// The Redis coordination store, connected on first use.
    #[derive(Debug)]
    pub(super) struct LazyRedisCoordination(LazyClient<RedisCoordination>);

    impl LazyRedisCoordination {
        pub(super) fn new(url: RedactedUrl) -> Self {
            Self(LazyClient::new(url, |url| {
                Box::pin(async move { RedisCoordination::connect(&url).await })
            }))
        }
    }

    #[async_trait]
    impl CoordinationStore for LazyRedisCoordination {
        fn redacted_url(&self) -> String {
            self.0.url().redacted().to_owned()
        }

        async fn claim(
            &self,
            key: &str,
            holder: &str,
            hold_for: Duration,
        ) -> Result<Claim, BrokerError> {
            self.0.connected().await?.claim(key, holder, hold_for).await
        }

        async fn release(&self, key: &str, holder: &str) -> Result<bool, BrokerError> {
            self.0.connected().await?.release(key, holder).await
        }

        async fn reserve_slot(
            &self,
            key: &str,
            interval: Duration,
        ) -> Result<Duration, BrokerError> {
            self.0.connected().await?.reserve_slot(key, interval).await
        }

        async fn renew(
            &self,
            key: &str,
            holder: &str,
            hold_for: Duration,
            record: Option<Record<'_>>,
        ) -> Result<bool, BrokerError> {
            let store = self.0.connected().await?;
            store.renew(key, holder, hold_for, record).await
        }

        async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, BrokerError> {
            self.0.connected().await?.read(key).await
        }

        async fn remember(
            &self,
            key: &str,
            member: &str,
            keep_for: Duration,
        ) -> Result<(), BrokerError> {
            let store = self.0.connected().await?;
            store.remember(key, member, keep_for).await
        }

        async fn members(&self, key: &str) -> Result<Vec<(String, Duration)>, BrokerError> {
            self.0.connected().await?.members(key).await
        }
    }
}
