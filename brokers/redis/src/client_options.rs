//! What the Redis result backend's and coordination store's builders share: where to connect, the
//! key prefix, the operation timeout and extra TLS roots.

use std::time::Duration;

use celeriac_core::{BrokerError, RedactedUrl};
use redis::aio::ConnectionManager;

/// Where and how a Redis client connects.
#[derive(Debug)]
pub(crate) struct ClientOptions {
    pub(crate) url: RedactedUrl,
    pub(crate) key_prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) tls_roots_pem: Option<String>,
}

impl ClientOptions {
    /// The defaults for `url`: prefix `celeriac`, 5 s per operation, the system's TLS roots.
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: RedactedUrl::new(url),
            key_prefix: "celeriac".to_owned(),
            timeout: Duration::from_secs(5),
            tls_roots_pem: None,
        }
    }

    /// Connects. Fails if the URL is invalid or the server cannot be reached in time.
    pub(crate) async fn connect(&self) -> Result<(redis::Client, ConnectionManager), BrokerError> {
        let client = crate::client_for(&self.url, self.tls_roots_pem.as_deref())?;
        let conn = crate::manager(&client, &self.url, self.timeout)
            .await
            .map_err(|source| BrokerError::Connect {
                url: self.url.redacted().to_owned(),
                source,
            })?;
        Ok((client, conn))
    }
}

impl ClientOptions {
    /// Connects to a server or, for `redis+cluster://` URLs, a Redis Cluster. Fails if the URL is
    /// invalid or no node can be reached in time.
    pub(crate) async fn connect_any(&self) -> Result<crate::server::Conn, BrokerError> {
        let server = crate::server::Server::open(&self.url, self.tls_roots_pem.as_deref())?;
        server.connect_or_error(&self.url, self.timeout).await
    }
}

/// The setters of a builder that keeps its [`ClientOptions`] in a field `options`; `$keys`
/// documents what the key prefix prefixes.
macro_rules! client_option_setters {
    ($keys:literal) => {
        #[doc = concat!("Prefix of every key (default `celeriac`): ", $keys, ".")]
        pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
            self.options.key_prefix = prefix.into();
            self
        }

        /// Timeout of each Redis operation (default 5 s).
        pub fn operation_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.timeout = timeout;
            self
        }

        /// Also trusts the CA certificates in `pem` for `rediss://` URLs (see
        /// [`RedisBrokerBuilder::tls_root_certificates`](crate::RedisBrokerBuilder::tls_root_certificates)).
        pub fn tls_root_certificates(mut self, pem: impl Into<String>) -> Self {
            self.options.tls_roots_pem = Some(pem.into());
            self
        }
    };
}
pub(crate) use client_option_setters;
