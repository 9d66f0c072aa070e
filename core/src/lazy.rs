//! A client connected on first use, so that `AppBuilder::build` stays synchronous: the Redis
//! result backend and coordination store given by URL.

#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use crate::broker::{BrokerError, RedactedUrl};

/// How to connect to a URL.
pub(crate) type Connect<T> = fn(String) -> BoxFuture<'static, Result<T, BrokerError>>;

/// A `T` connected to `url` on first use.
///
/// The connection is made by a task of its own, which every caller waiting for it shares: it never
/// depends on one caller's future being polled. (A worker lane that stores a success does so in a
/// future it polls between runs; had that future owned the connection attempt, a run of the same
/// lane waiting for the connection to store a retry would wait forever.) After a failure, the next
/// caller tries again; after a success, the client is kept.
pub(crate) struct LazyClient<T> {
    url: RedactedUrl,
    connect: Connect<T>,
    client: OnceLock<T>,
    connecting: Mutex<Option<Connecting<T>>>,
}

/// A connection attempt in progress, shared by everyone waiting for it. Its error is kept as its
/// report (errors are not `Clone`).
type Connecting<T> = Shared<BoxFuture<'static, Result<T, String>>>;

impl<T: Clone + Send + Sync + 'static> LazyClient<T> {
    pub(crate) fn new(url: RedactedUrl, connect: Connect<T>) -> Self {
        Self {
            url,
            connect,
            client: OnceLock::new(),
            connecting: Mutex::new(None),
        }
    }

    pub(crate) fn url(&self) -> &RedactedUrl {
        &self.url
    }

    /// The client, connecting first if no one has yet.
    pub(crate) async fn connected(&self) -> Result<&T, BrokerError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let attempt = self
            .connecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| self.attempt())
            .clone();
        let outcome = attempt.await;
        *self
            .connecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        match outcome {
            Ok(client) => Ok(self.client.get_or_init(|| client)),
            Err(report) => Err(BrokerError::Connect {
                url: self.url.redacted().to_owned(),
                source: report.into(),
            }),
        }
    }

    fn attempt(&self) -> Connecting<T> {
        let connect = tokio::spawn(
            (self.connect)(self.url.secret().to_owned()).map(|connected| {
                connected.map_err(|error| match &error {
                    // Wrapped again by `connected`, with the same URL: keep only the causes.
                    BrokerError::Connect { source, .. } => {
                        crate::error::Report(&**source).to_string()
                    }
                    other => crate::error::Report(other).to_string(),
                })
            }),
        );
        let joined = async move {
            connect
                .await
                .unwrap_or_else(|_| Err("the connection attempt was cancelled".into()))
        };
        (Box::pin(joined) as BoxFuture<'static, _>).shared()
    }
}

impl<T> fmt::Debug for LazyClient<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyClient")
            .field("url", &self.url)
            .field("connected", &self.client.get().is_some())
            .finish()
    }
}
