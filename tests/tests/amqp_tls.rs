//! `amqps://` against the real RabbitMQ: a TLS-terminating proxy on a free port, with a certificate
//! for `localhost` signed by a CA made for the test, forwards to RabbitMQ's plain port. The broker
//! connects through it when it trusts the CA, and refuses to when it does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use celeriac::BrokerError;
use celeriac_amqp::AmqpBroker;
use celeriac_tests::harness::{amqp_url, require_amqp, unique_queue};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};
use tokio::net::{TcpListener, TcpStream};

/// A key pair and a certificate for `common_name`, signed by `issuer` (self-signed without one).
fn certificate(
    common_name: &str,
    issuer: Option<&(X509, PKey<Private>)>,
) -> Result<(X509, PKey<Private>), ErrorStack> {
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", common_name)?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    builder.set_serial_number(&*BigNum::from_u32(fastrand::u32(1..))?.to_asn1_integer()?)?;
    builder.set_subject_name(&name)?;
    builder.set_pubkey(&key)?;
    builder.set_not_before(&*Asn1Time::days_from_now(0)?)?;
    builder.set_not_after(&*Asn1Time::days_from_now(1)?)?;
    match issuer {
        None => {
            builder.set_issuer_name(&name)?;
            builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
            builder.sign(&key, MessageDigest::sha256())?;
        }
        Some((ca, ca_key)) => {
            builder.set_issuer_name(ca.subject_name())?;
            let names = SubjectAlternativeName::new()
                .dns("localhost")
                .build(&builder.x509v3_context(Some(ca), None))?;
            builder.append_extension(names)?;
            builder.sign(ca_key, MessageDigest::sha256())?;
        }
    }
    Ok((builder.build(), key))
}

/// A TLS proxy in front of RabbitMQ: its port, the CA's certificate (PEM), and how many TLS
/// handshakes it completed.
async fn tls_proxy(rabbitmq: String) -> (u16, String, Arc<AtomicUsize>) {
    let ca = certificate("celeriac test CA", None).unwrap();
    let (leaf, leaf_key) = certificate("localhost", Some(&ca)).unwrap();
    let identity = native_tls::Identity::from_pkcs8(
        &leaf.to_pem().unwrap(),
        &leaf_key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let acceptor =
        tokio_native_tls::TlsAcceptor::from(native_tls::TlsAcceptor::new(identity).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (acceptor, counted, rabbitmq) =
                (acceptor.clone(), counted.clone(), rabbitmq.clone());
            tokio::spawn(async move {
                // A client that refuses our certificate ends here, with the handshake.
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut server) = TcpStream::connect(&rabbitmq).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    let ca_pem = String::from_utf8(ca.0.to_pem().unwrap()).unwrap();
    (port, ca_pem, handshakes)
}

/// The test's RabbitMQ URL (credentials, vhost) with `amqps://localhost:<port>` in front, and the
/// `host:port` of RabbitMQ itself.
fn through_proxy(port: u16) -> (String, String) {
    let plain = url::Url::parse(&amqp_url()).unwrap();
    let rabbitmq = format!(
        "{}:{}",
        plain.host_str().unwrap(),
        plain.port().unwrap_or(5672)
    );
    let rest = plain.as_str().trim_start_matches("amqp://");
    let mut tls = url::Url::parse(&format!("amqps://{rest}")).unwrap();
    tls.set_host(Some("localhost")).unwrap();
    tls.set_port(Some(port)).unwrap();
    (tls.to_string(), rabbitmq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_works_when_the_ca_is_trusted_and_fails_when_it_is_not() {
    // The plain broker first: in CI an absent RabbitMQ fails here instead of passing silently.
    let Some(_plain) = require_amqp(|builder| builder).await else {
        return;
    };
    let (_, rabbitmq) = through_proxy(0);
    let (port, ca, handshakes) = tls_proxy(rabbitmq).await;
    let (url, _) = through_proxy(port);

    let broker = AmqpBroker::builder(&url)
        .tls_root_certificates(ca)
        .connect()
        .await
        .unwrap();
    let queue = unique_queue("amqps");
    celeriac_tests::contract::publish_then_consume_then_ack(Arc::new(broker), &queue).await;
    assert!(handshakes.load(Ordering::SeqCst) >= 1, "no TLS handshake");

    // Without the CA the certificate is not trusted: a connect error, before any login, that
    // keeps the password hidden.
    let mut untrusting = url::Url::parse(&url).unwrap();
    untrusting.set_password(Some("hunter2")).unwrap();
    let error = AmqpBroker::connect(untrusting.as_str()).await.unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(matches!(error, BrokerError::Connect { .. }), "{text}");
    assert!(text.contains("certificate verify failed"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
