//! Headless Chromium for browser tests: Debian's `chromium` and `chromium-driver` (which
//! `scripts/test.sh` installs when missing), driven over WebDriver with fantoccini.

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use crate::harness::free_port;

/// Whether the user asked to skip browser tests (`CELERIAC_SKIP_BROWSER`); refused under CI.
pub fn skipped() -> bool {
    let asked = std::env::var_os("CELERIAC_SKIP_BROWSER").is_some();
    assert!(
        !asked || std::env::var_os("CI").is_none(),
        "skipping the browser tests is refused under CI"
    );
    if asked {
        eprintln!("SKIPPED: browser test (CELERIAC_SKIP_BROWSER)");
    }
    asked
}

/// A chromedriver process and a headless Chromium session on it; [`close`](Self::close) ends both.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: tokio::process::Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session (panics, saying what to install,
    /// when it cannot).
    pub async fn start() -> Self {
        let port = free_port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium chromium-driver; scripts/test.sh does it)");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
            }),
        );
        for _ in 0..100 {
            if let Ok(client) = ClientBuilder::native()
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                return Self { client, driver };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not accept a session within 10 s");
    }

    /// The text of the element with id `id` once it contains `wanted` (panics after 10 s, saying
    /// what it showed).
    pub async fn text_of(&self, id: &str, wanted: &str) -> String {
        let mut text = String::new();
        for _ in 0..200 {
            if let Ok(element) = self.client.find(Locator::Id(id)).await {
                text = element.text().await.unwrap_or_default();
                if text.contains(wanted) {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("#{id} never said {wanted:?}; it says {text:?}");
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill().await;
    }
}
