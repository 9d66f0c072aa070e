//! The gateways on their own: the HTTP gateway against a real local webhook, the flaky gateway's
//! failures, the console gateway's log file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use sms_verification::gateway::{
    ConsoleGateway, FlakyGateway, GatewayError, HttpGateway, SmsGateway,
};

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

async fn webhook(status: StatusCode) -> (String, Received) {
    let received: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/sms",
            post(
                move |State(received): State<Received>, Json(body): Json<serde_json::Value>| async move {
                    received.lock().unwrap().push(body);
                    status
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn the_http_gateway_posts_json_to_the_webhook() {
    let (url, received) = webhook(StatusCode::OK).await;
    let gateway = HttpGateway::new(url, Duration::from_secs(5)).unwrap();
    gateway
        .send("13800138000", "Your code is 123456")
        .await
        .unwrap();
    let received = received.lock().unwrap().clone();
    assert_eq!(
        received,
        [serde_json::json!({"mobile": "13800138000", "text": "Your code is 123456"})]
    );
}

#[tokio::test]
async fn a_failing_webhook_or_no_webhook_is_an_error() {
    let (url, _) = webhook(StatusCode::BAD_GATEWAY).await;
    let gateway = HttpGateway::new(url, Duration::from_secs(5)).unwrap();
    let error = gateway.send("13800138000", "x").await.unwrap_err();
    assert!(
        matches!(error, GatewayError::Refused(ref m) if m.contains("502")),
        "{error}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = HttpGateway::new(
        format!("http://127.0.0.1:{port}/sms"),
        Duration::from_secs(2),
    )
    .unwrap();
    let error = gateway.send("13800138000", "x").await.unwrap_err();
    assert!(matches!(error, GatewayError::Unreachable(_)), "{error}");
}

#[tokio::test(start_paused = true)]
async fn the_flaky_gateway_fails_then_delivers_after_its_latency() {
    let console = ConsoleGateway::default();
    let flaky = FlakyGateway::new(console.clone(), 0.0, Duration::from_secs(2)).fail_first(1);
    let started = tokio::time::Instant::now();
    assert!(flaky.send("13800138000", "a").await.is_err());
    flaky.send("13800138000", "b").await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(4));
    assert_eq!(console.sent().len(), 1);
    let always = FlakyGateway::new(ConsoleGateway::default(), 1.0, Duration::ZERO);
    assert!(always.send("13800138000", "c").await.is_err());
}

#[tokio::test]
async fn the_console_gateway_appends_to_its_log_file() {
    let path = std::env::temp_dir().join(format!("sms-log-{}.txt", uuid::Uuid::new_v4().simple()));
    let console = ConsoleGateway::with_log_file(&path);
    console.send("13800138000", "first").await.unwrap();
    console.send("13900139000", "second").await.unwrap();
    let log = std::fs::read_to_string(&path).unwrap();
    assert_eq!(log, "13800138000\tfirst\n13900139000\tsecond\n");
    std::fs::remove_file(&path).unwrap();
}
