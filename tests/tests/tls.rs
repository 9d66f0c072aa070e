//! `amqps://` and `rediss://` against the real servers, through a TLS-terminating proxy whose
//! certificate a CA made for the test signed: each broker connects and runs a contract case when it
//! trusts the CA, and refuses to connect when it does not, its password hidden.

use std::sync::Arc;

use celeriac::BrokerError;
use celeriac_amqp::AmqpBroker;
use celeriac_redis::RedisBroker;
use celeriac_tests::contract::publish_then_consume_then_ack;
use celeriac_tests::harness::{amqp_url, redis_url, require_amqp, require_redis, unique_queue};
use celeriac_tests::tls::{TlsProxy, server_address};

/// `url` with its password replaced by `hunter2`, for the connection that must fail before login.
fn with_marked_password(url: &str) -> String {
    let mut marked = url::Url::parse(url).unwrap();
    marked.set_password(Some("hunter2")).unwrap();
    marked.to_string()
}

fn assert_refused(error: &BrokerError) {
    let text = format!("{error} {error:?}");
    assert!(matches!(error, BrokerError::Connect { .. }), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_works_when_the_ca_is_trusted_and_fails_when_it_is_not() {
    // The plain broker first: in CI an absent RabbitMQ fails here instead of passing silently.
    let Some(_plain) = require_amqp(|builder| builder).await else {
        return;
    };
    let proxy = TlsProxy::start(server_address(&amqp_url(), 5672)).await;
    let url = proxy.url_for(&amqp_url());
    let broker = AmqpBroker::builder(&url)
        .tls_root_certificates(proxy.ca_pem())
        .connect()
        .await
        .unwrap();
    publish_then_consume_then_ack(Arc::new(broker), &unique_queue("amqps")).await;
    assert!(proxy.handshakes() >= 1, "no TLS handshake");

    let error = AmqpBroker::connect(&with_marked_password(&url))
        .await
        .unwrap_err();
    assert_refused(&error);
    assert!(
        error.to_string().contains("certificate verify failed"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_works_when_the_ca_is_trusted_and_fails_when_it_is_not() {
    let Some(_plain) = require_redis(|builder| builder).await else {
        return;
    };
    let proxy = TlsProxy::start(server_address(&redis_url(), 6379)).await;
    let url = proxy.url_for(&redis_url());
    let broker = RedisBroker::builder(&url)
        .key_prefix("celeriac-test")
        .tls_root_certificates(proxy.ca_pem())
        .connect()
        .await
        .unwrap();
    publish_then_consume_then_ack(Arc::new(broker), &unique_queue("rediss")).await;
    assert!(proxy.handshakes() >= 1, "no TLS handshake");

    let error = RedisBroker::connect(&with_marked_password(&url))
        .await
        .unwrap_err();
    assert_refused(&error);
    assert!(
        error.to_string().contains("certificate verify failed"),
        "{error}"
    );
}
