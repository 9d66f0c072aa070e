//! A TLS-terminating proxy for testing `amqps://` and `rediss://` against the real, plain-text
//! servers: a CA made for the test signs a certificate for `localhost`, and the proxy forwards each
//! connection it accepted over TLS to the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509, X509NameBuilder};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; it stops with the test's runtime.
#[derive(Debug)]
pub struct TlsProxy {
    port: u16,
    ca_pem: String,
    handshakes: Arc<AtomicUsize>,
}

impl TlsProxy {
    /// Starts a proxy on a free port of 127.0.0.1 in front of `server` (`host:port`).
    pub async fn start(server: String) -> Self {
        let ca = certificate("celeriac test CA", None).expect("a CA certificate");
        let (leaf, leaf_key) = certificate("localhost", Some(&ca)).expect("a server certificate");
        let identity = native_tls::Identity::from_pkcs8(
            &leaf.to_pem().expect("PEM"),
            &leaf_key.private_key_to_pem_pkcs8().expect("PKCS#8"),
        )
        .expect("a TLS identity");
        let acceptor = tokio_native_tls::TlsAcceptor::from(
            native_tls::TlsAcceptor::new(identity).expect("a TLS acceptor"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("its address").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (acceptor, counted, server) =
                    (acceptor.clone(), counted.clone(), server.clone());
                tokio::spawn(async move {
                    // A client that refuses our certificate ends here, with the handshake.
                    let Ok(mut client) = acceptor.accept(client).await else {
                        return;
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut server) = TcpStream::connect(&server).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        let ca_pem = String::from_utf8(ca.0.to_pem().expect("PEM")).expect("ASCII");
        Self {
            port,
            ca_pem,
            handshakes,
        }
    }

    /// `url` (a plain `amqp://` or `redis://` URL of the server) turned into its TLS form through
    /// this proxy: `amqps://…@localhost:<port>/…`, credentials and path kept.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let mut tls = url::Url::parse(&format!("{scheme}s://{rest}")).expect("a valid URL");
        tls.set_host(Some("localhost")).expect("a host");
        tls.set_port(Some(self.port)).expect("a port");
        tls.to_string()
    }

    /// The certificate of the CA that signed the proxy's certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// How many TLS handshakes the proxy completed.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

/// The `host:port` of a plain server URL (`default_port` when it names none).
pub fn server_address(url: &str, default_port: u16) -> String {
    let parsed = url::Url::parse(url).expect("a valid URL");
    format!(
        "{}:{}",
        parsed.host_str().expect("a host"),
        parsed.port().unwrap_or(default_port)
    )
}

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
