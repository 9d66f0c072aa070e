//! SMS gateways: where the worker sends messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

/// Why an SMS could not be sent. Any of these makes the task retry with back-off.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The provider did not accept the message.
    #[error("SMS gateway refused the message: {0}")]
    Refused(String),
    /// The provider could not be reached.
    #[error("SMS gateway unreachable: {0}")]
    Unreachable(String),
}

/// Sends one SMS.
#[async_trait]
pub trait SmsGateway: Send + Sync + 'static {
    /// Sends `text` to `mobile`.
    async fn send(&self, mobile: &str, text: &str) -> Result<(), GatewayError>;
}

/// One message a gateway sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentSms {
    /// The recipient.
    pub mobile: String,
    /// The text.
    pub text: String,
}

/// Logs every message (the default) and keeps a record of them; optionally appends each to a file,
/// one `mobile<TAB>text` line per message, so other processes can read what was sent.
#[derive(Clone, Debug, Default)]
pub struct ConsoleGateway {
    sent: Arc<Mutex<Vec<SentSms>>>,
    log_file: Option<std::path::PathBuf>,
}

impl ConsoleGateway {
    /// A console gateway that also appends each message to `path`.
    pub fn with_log_file(path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            log_file: Some(path.into()),
            ..Self::default()
        }
    }

    /// Every message sent so far.
    pub fn sent(&self) -> Vec<SentSms> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[async_trait]
impl SmsGateway for ConsoleGateway {
    async fn send(&self, mobile: &str, text: &str) -> Result<(), GatewayError> {
        tracing::info!(%mobile, "SMS sent: {text}");
        if let Some(path) = &self.log_file {
            use std::io::Write;
            let line = format!("{mobile}\t{text}\n");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| file.write_all(line.as_bytes()))
                .map_err(|error| {
                    GatewayError::Unreachable(format!("cannot write the SMS log: {error}"))
                })?;
        }
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(SentSms {
                mobile: mobile.to_owned(),
                text: text.to_owned(),
            });
        Ok(())
    }
}

/// A gateway for demos and tests: waits `latency`, then fails with `failure_rate` probability (or for
/// the first `fail_first` messages), and otherwise hands over to `inner`.
#[derive(Debug)]
pub struct FlakyGateway<G> {
    inner: G,
    failure_rate: f64,
    latency: Duration,
    fail_first: Mutex<u32>,
}

impl<G: SmsGateway> FlakyGateway<G> {
    /// Fails with probability `failure_rate` (0–1) after `latency`.
    pub fn new(inner: G, failure_rate: f64, latency: Duration) -> Self {
        Self {
            inner,
            failure_rate: failure_rate.clamp(0.0, 1.0),
            latency,
            fail_first: Mutex::new(0),
        }
    }

    /// Also fails the first `count` sends, whatever the rate (deterministic, for tests).
    #[must_use]
    pub fn fail_first(self, count: u32) -> Self {
        *self.fail_first.lock().unwrap_or_else(|p| p.into_inner()) = count;
        self
    }
}

#[async_trait]
impl<G: SmsGateway> SmsGateway for FlakyGateway<G> {
    async fn send(&self, mobile: &str, text: &str) -> Result<(), GatewayError> {
        tokio::time::sleep(self.latency).await;
        let forced = {
            let mut left = self.fail_first.lock().unwrap_or_else(|p| p.into_inner());
            let forced = *left > 0;
            *left = left.saturating_sub(1);
            forced
        };
        if forced || fastrand::f64() < self.failure_rate {
            tracing::warn!(%mobile, "flaky gateway: simulated failure");
            return Err(GatewayError::Unreachable("simulated timeout".into()));
        }
        self.inner.send(mobile, text).await
    }
}

/// Posts `{"mobile": …, "text": …}` as JSON to a provider's webhook; any non-2xx answer is a failure.
#[derive(Clone, Debug)]
pub struct HttpGateway {
    url: String,
    client: reqwest::Client,
}

impl HttpGateway {
    /// A gateway posting to `url`, giving up on one attempt after `timeout`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<Self, GatewayError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|error| GatewayError::Unreachable(error.to_string()))?;
        Ok(Self {
            url: url.into(),
            client,
        })
    }
}

#[async_trait]
impl SmsGateway for HttpGateway {
    async fn send(&self, mobile: &str, text: &str) -> Result<(), GatewayError> {
        let response = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({ "mobile": mobile, "text": text }))
            .send()
            .await
            .map_err(|error| GatewayError::Unreachable(error.without_url().to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(GatewayError::Refused(format!("HTTP {}", response.status())))
        }
    }
}
