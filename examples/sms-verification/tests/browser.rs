//! A person's flow in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`,
//! which `scripts/test.sh` installs when missing) loads the page, sends a code, reads it, verifies it,
//! and sees the success message.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use celeriac::{App, MemoryBroker};
use celeriac_tests::harness::{BackgroundWorker, free_port};
use fantoccini::{ClientBuilder, Locator};
use sms_verification::gateway::ConsoleGateway;
use sms_verification::http::{AppState, Limits, router};
use sms_verification::store::MemoryStore;
use sms_verification::tasks::{Gateway, ccp_send_sms_code};

fn skipped() -> bool {
    let asked = std::env::var_os("CELERIAC_SKIP_BROWSER").is_some();
    assert!(
        !asked || std::env::var_os("CI").is_none(),
        "skipping the browser test is refused under CI"
    );
    if asked {
        eprintln!("SKIPPED: browser test (CELERIAC_SKIP_BROWSER)");
    }
    asked
}

async fn status_text(client: &fantoccini::Client, wanted: &str) -> String {
    element_text(client, "status", wanted).await
}

async fn element_text(client: &fantoccini::Client, id: &str, wanted: &str) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = client
            .find(Locator::Id(id))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(wanted) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the page never said {wanted:?}; it says {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sends_and_verifies_a_code_in_chromium() {
    if skipped() {
        return;
    }
    // The demo, in process, on a real socket.
    let console = ConsoleGateway::default();
    let app = App::builder()
        .broker(MemoryBroker::new())
        .state(Gateway(Arc::new(console.clone())))
        .register::<ccp_send_sms_code>()
        .build()
        .unwrap();
    let worker = app.worker().concurrency(2).build().unwrap();
    let working = BackgroundWorker::start(worker);
    let state = AppState {
        app: app.clone(),
        store: Arc::new(MemoryStore::default()),
        limits: Limits::default(),
        metrics: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let site = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });

    let driver_port = free_port();
    let mut driver = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={driver_port}"))
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
                     "--disable-component-update", "--disable-sync"]
        }),
    );
    let mut client = None;
    for _ in 0..100 {
        match ClientBuilder::native()
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(connected) => {
                client = Some(connected);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let client = client.expect("chromedriver did not accept a session");

    client.goto(&site).await.unwrap();
    client
        .find(Locator::Id("mobile"))
        .await
        .unwrap()
        .send_keys("13800138000")
        .await
        .unwrap();
    client
        .find(Locator::Id("send"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    status_text(&client, "Code sent").await;
    // The page follows the SMS task's AsyncResult until the worker reports it sent.
    element_text(&client, "delivery", "Delivery: sent").await;
    let button = client
        .find(Locator::Id("send"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        button.starts_with("Send again in"),
        "the button counts down: {button:?}"
    );

    let mut code = None;
    for _ in 0..100 {
        if let Some(sms) = console.sent().first() {
            code = sms
                .text
                .split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() == 6)
                .map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = code.expect("the worker sent the SMS");
    client
        .find(Locator::Id("code"))
        .await
        .unwrap()
        .send_keys(&code)
        .await
        .unwrap();
    client
        .find(Locator::Id("verify"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = status_text(&client, "Verified!").await;
    assert!(text.contains("The number is yours"), "{text}");

    client.close().await.unwrap();
    driver.kill().await.unwrap();
    working.stop().await;
}
