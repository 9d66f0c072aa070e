//! The SMS verification-code service — celeriac's flagship example, and the Rust version of the Celery
//! flow in `shared/seeds/`: the web request stores a code and enqueues `ccp_send_sms_code`, answering
//! at once; a worker drives a slow, flaky SMS gateway with retries and back-off.
//!
//! Run with `cargo run -p sms-verification` (everything in one process on the embedded broker), or as
//! separate processes: `sms-verification web --broker redis://127.0.0.1:6379` and
//! `sms-verification worker --broker redis://127.0.0.1:6379`.

pub mod gateway;
pub mod http;
pub mod mobile;
pub mod store;
pub mod tasks;

use std::sync::Arc;

use celeriac::Broker;

/// Why a broker URL could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BrokerUrlError {
    /// Not `memory`, `redis://`, `rediss://`, `amqp://` or `amqps://`.
    #[error(
        "unsupported broker URL scheme in `{0}`: use memory, redis://, rediss://, amqp:// or amqps://"
    )]
    Unsupported(String),
    /// The broker could not be reached.
    #[error(transparent)]
    Broker(#[from] celeriac::BrokerError),
}

/// Connects to the broker a URL names: `memory`, `redis://…` or `amqp://…`.
pub async fn broker_from_url(url: &str) -> Result<Arc<dyn Broker>, BrokerUrlError> {
    let scheme = url.split_once("://").map_or(url, |(scheme, _)| scheme);
    Ok(match scheme {
        "memory" => Arc::new(celeriac::MemoryBroker::new()),
        "redis" | "rediss" => Arc::new(celeriac_redis::RedisBroker::connect(url).await?),
        "amqp" | "amqps" => Arc::new(celeriac_amqp::AmqpBroker::connect(url).await?),
        _ => {
            let shown = hide_credentials(url);
            return Err(BrokerUrlError::Unsupported(shown));
        }
    })
}

/// Hides anything between `://` and `@` (credentials) of a URL we could not parse.
fn hide_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}://***{}", &url[..start], &url[at..]),
        _ => url.to_owned(),
    }
}
