//! A live web dashboard (feature `dashboard`; `celeriac dashboard` on the command line): workers
//! online and offline with their load, throughput and memory; queues with ready, delayed,
//! unacked and dead-lettered messages over time; recent tasks with their state, run time and
//! error; a page per task; dead letters with buttons to requeue or purge them.
//!
//! It is live without a refresh (server-sent events, one snapshot a second) and gathers what it
//! shows the way the CLI does: workers answer `stats` every two seconds over
//! [remote control](crate::control) (so every worker shows, events or not), queues are asked
//! for their counts, and tasks come from [worker events](crate::events) (workers started with
//! `-E` / `.events(true)`).
//!
//! Safe to expose: it refuses to listen beyond loopback without [`Auth`] (a bearer token or basic
//! auth, compared in constant time); every change (requeue, purge) is a POST carrying the page's
//! CSRF token; the page renders task data as text only, under a Content-Security-Policy that
//! allows no inline script; task arguments are never shown.
//!
//! ```no_run
//! # #![allow(dead_code)] // shown, not run
//! use celeriac::dashboard::{Auth, Dashboard};
//!
//! # async fn run(app: celeriac::App) -> Result<(), celeriac::dashboard::DashboardError> {
//! Dashboard::builder(app)
//!     .bind("0.0.0.0:5555".parse().expect("an address"))
//!     .auth(Auth::token("a long random secret from your vault")?)
//!     .build()?
//!     .serve()
//!     .await
//! # }
//! ```

mod auth;
mod collect;
mod result_view;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

pub use self::auth::Auth;
use self::collect::Collector;
#[cfg(feature = "fuzzing")]
pub(crate) use self::collect::fuzz_observe;
use crate::App;

/// Why the dashboard cannot start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// It was asked to listen beyond loopback without authentication.
    #[error(
        "refusing to serve the dashboard on {addr} without authentication: bind to 127.0.0.1, or give --token / --basic-auth"
    )]
    Unprotected {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The token or password is unusable.
    #[error("dashboard authentication: {0}")]
    WeakSecret(String),
    /// The address cannot be listened on.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Serving stopped on an error.
    #[error("the dashboard stopped: {0}")]
    Serve(std::io::Error),
}

/// Configures a [`Dashboard`].
#[derive(Debug)]
#[must_use]
pub struct DashboardBuilder {
    app: App,
    bind: SocketAddr,
    auth: Option<Auth>,
    queues: Vec<String>,
}

impl DashboardBuilder {
    /// Where to listen (default `127.0.0.1:5555`). Beyond loopback, [`auth`](Self::auth) is
    /// required.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Who may see it and act.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Queues to show besides those the workers consume.
    pub fn queues<I, Q>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = Q>,
        Q: Into<String>,
    {
        self.queues.extend(queues.into_iter().map(Into::into));
        self
    }

    /// Checks the address against the authentication.
    pub fn build(self) -> Result<Dashboard, DashboardError> {
        if self.auth.is_none() && !self.bind.ip().is_loopback() {
            return Err(DashboardError::Unprotected { addr: self.bind });
        }
        Ok(Dashboard {
            app: self.app,
            bind: self.bind,
            auth: self.auth,
            queues: self.queues,
        })
    }
}

/// The dashboard of one app's broker; see the [module](self).
#[derive(Debug)]
pub struct Dashboard {
    app: App,
    bind: SocketAddr,
    auth: Option<Auth>,
    queues: Vec<String>,
}

impl Dashboard {
    /// Starts configuring a dashboard of `app`'s broker (and result backend, for task states).
    pub fn builder(app: App) -> DashboardBuilder {
        DashboardBuilder {
            app,
            bind: SocketAddr::from(([127, 0, 0, 1], 5555)),
            auth: None,
            queues: Vec::new(),
        }
    }

    /// Listens and serves until SIGINT or SIGTERM.
    pub async fn serve(self) -> Result<(), DashboardError> {
        let addr = self.bind;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DashboardError::Bind { addr, source })?;
        self.serve_on(listener, crate::worker::shutdown_signal())
            .await
    }

    /// Serves on `listener` until `shutdown` completes (for tests and embedding).
    pub async fn serve_on(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        let collector = Arc::new(Collector::start(self.app.clone(), self.queues));
        let router = routes::router(self.app, collector.clone(), self.auth);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "dashboard listening");
        }
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        collector.stop();
        served.map_err(DashboardError::Serve)
    }
}
