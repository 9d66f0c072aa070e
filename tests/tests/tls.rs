//! `amqps://` and `rediss://` against the real servers, through a TLS-terminating proxy whose
//! certificate a CA made for the test signed: each broker connects and runs a contract case when it
//! trusts the CA, and refuses to connect when it does not, its password hidden.

use std::sync::Arc;

use celeriac::testing::contract::publish_then_consume_then_ack;
use celeriac::{Broker, BrokerError};
use celeriac_amqp::AmqpBroker;
use celeriac_redis::RedisBroker;
use celeriac_tests::harness::{amqp_url, redis_url, require_amqp, require_redis, unique_queue};
use celeriac_tests::tls::{TlsProxy, server_address};

type Connected = Result<Arc<dyn Broker>, BrokerError>;

/// Puts a TLS proxy in front of the server of `plain_url`, runs a contract case on the broker that
/// `connect(url, Some(ca))` gives, then checks that `connect(url, None)` is refused before any login
/// (the password, replaced by `hunter2`, stays hidden).
async fn trusted_then_refused<F, Fut>(plain_url: &str, default_port: u16, case: &str, connect: F)
where
    F: Fn(String, Option<String>) -> Fut,
    Fut: Future<Output = Connected>,
{
    let proxy = TlsProxy::start(server_address(plain_url, default_port)).await;
    let url = proxy.url_for(plain_url);
    let broker = connect(url.clone(), Some(proxy.ca_pem().to_owned()))
        .await
        .expect("a broker that trusts the CA connects over TLS");
    publish_then_consume_then_ack(broker, &unique_queue(case)).await;
    assert!(proxy.handshakes() >= 1, "no TLS handshake");

    let mut marked = url::Url::parse(&url).unwrap();
    marked.set_password(Some("hunter2")).unwrap();
    let Err(error) = connect(marked.to_string(), None).await else {
        panic!("connected although the CA is not trusted");
    };
    let text = format!("{error} {error:?}");
    assert!(matches!(error, BrokerError::Connect { .. }), "{text}");
    assert!(text.contains("certificate verify failed"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_works_when_the_ca_is_trusted_and_fails_when_it_is_not() {
    // The plain broker first: in CI an absent RabbitMQ fails here instead of passing silently.
    let Some(_plain) = require_amqp(|builder| builder).await else {
        return;
    };
    trusted_then_refused(&amqp_url(), 5672, "amqps", |url, ca| async move {
        let mut builder = AmqpBroker::builder(&url);
        if let Some(ca) = ca {
            builder = builder.tls_root_certificates(ca);
        }
        Ok(Arc::new(builder.connect().await?) as Arc<dyn Broker>)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_works_when_the_ca_is_trusted_and_fails_when_it_is_not() {
    let Some(_plain) = require_redis(|builder| builder).await else {
        return;
    };
    trusted_then_refused(&redis_url(), 6379, "rediss", |url, ca| async move {
        let mut builder = RedisBroker::builder(&url).key_prefix("celeriac-test");
        if let Some(ca) = ca {
            builder = builder.tls_root_certificates(ca);
        }
        Ok(Arc::new(builder.connect().await?) as Arc<dyn Broker>)
    })
    .await;
}
