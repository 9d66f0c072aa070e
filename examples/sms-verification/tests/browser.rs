//! A person's flow in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`,
//! which `scripts/test.sh` installs when missing) loads the page, sends a code, reads it, verifies it,
//! and sees the success message.

use std::sync::Arc;
use std::time::Duration;

use celeriac::{App, MemoryBroker};
use celeriac_tests::browser::{Browser, skipped};
use celeriac_tests::harness::BackgroundWorker;
use fantoccini::Locator;
use sms_verification::gateway::ConsoleGateway;
use sms_verification::http::{AppState, Limits, router};
use sms_verification::store::MemoryStore;
use sms_verification::tasks::{Gateway, ccp_send_sms_code};

async fn status_text(browser: &Browser, wanted: &str) -> String {
    browser.text_of("status", wanted).await
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

    let browser = Browser::start().await;
    let client = &browser.client;

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
    status_text(&browser, "Code sent").await;
    // The page follows the SMS task's AsyncResult until the worker reports it sent.
    browser.text_of("delivery", "Delivery: sent").await;
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
    let text = status_text(&browser, "Verified!").await;
    assert!(text.contains("The number is yours"), "{text}");

    browser.close().await;
    working.stop().await;
}
