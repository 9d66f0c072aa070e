//! End to end over HTTP, in process, on the embedded broker: request a code, read it from the console
//! gateway's record, verify it; throttling, expiry (paused clock), bad input, retries, broker down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use celeriac::broker::{
    Broker, BrokerError, ConsumeOptions, DeadLetter, DeliveryStream, Outgoing, QueueStats,
};
use celeriac::coordination::MemoryCoordination;
use celeriac::result::MemoryResultBackend;
use celeriac::{App, MemoryBroker};
use sms_verification::gateway::{ConsoleGateway, FlakyGateway, SmsGateway};
use sms_verification::http::{Answer, AppState, Limits, router};
use sms_verification::store::MemoryStore;
use sms_verification::tasks::{Gateway, ccp_send_sms_code};
use tower::ServiceExt;

struct Demo {
    router: axum::Router,
    app: App,
    console: ConsoleGateway,
}

fn demo_with(
    gateway: Arc<dyn SmsGateway>,
    console: ConsoleGateway,
    broker: Arc<dyn Broker>,
) -> Demo {
    let app = App::builder()
        .shared_broker(broker)
        .result_backend(MemoryResultBackend::new())
        .coordination(MemoryCoordination::new())
        .state(Gateway(gateway))
        .enqueue_timeout(Duration::from_secs(2))
        .register::<ccp_send_sms_code>()
        .build()
        .unwrap();
    let state = AppState {
        app: app.clone(),
        store: Arc::new(MemoryStore::default()),
        limits: Limits::default(),
        metrics: None,
    };
    Demo {
        router: router(state),
        app,
        console,
    }
}

fn demo() -> Demo {
    let console = ConsoleGateway::default();
    demo_with(
        Arc::new(console.clone()),
        console,
        Arc::new(MemoryBroker::new()),
    )
}

async fn post(router: &axum::Router, path: &str, body: Option<&str>) -> (StatusCode, Answer) {
    let mut request = Request::post(path);
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Body::from(body.unwrap_or("").to_owned()))
        .unwrap();
    send(router, request).await
}

async fn get(router: &axum::Router, path: &str) -> (StatusCode, Answer) {
    send(router, Request::get(path).body(Body::empty()).unwrap()).await
}

/// Sends `request` to the router and reads its JSON answer.
async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, Answer) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let answer: Answer =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"));
    (status, answer)
}

/// The delivery status (state, message) of the SMS task a sent code named, waiting up to `wait`
/// seconds.
async fn delivery(router: &axum::Router, sent: &Answer, wait: u64) -> (String, String) {
    let id = sent.task_id.as_deref().expect("a sent code names its task");
    let (status, answer) = get(router, &format!("/sms_tasks/{id}?wait={wait}")).await;
    assert_eq!(status, StatusCode::OK, "{}", answer.errmsg);
    (answer.state.expect("a state"), answer.errmsg)
}

/// Runs the app's worker until every queued task ran (or was dead-lettered).
async fn run_worker(app: &App, for_at_least: Duration) {
    let worker = app.worker().concurrency(4).build().unwrap();
    worker
        .run_until(tokio::time::sleep(for_at_least))
        .await
        .unwrap();
}

fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|word| word.len() == 6)
        .expect("a six-digit code in the SMS")
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn request_a_code_receive_it_and_verify_it_once() {
    let demo = demo();
    let (status, answer) = post(&demo.router, "/sms_codes/13800138000", None).await;
    assert_eq!(
        (status, answer.code.as_str(), answer.errmsg.as_str()),
        (StatusCode::OK, "0", "OK")
    );
    // The request answered before any SMS was sent: the task waits in the queue.
    assert!(demo.console.sent().is_empty());
    assert_eq!(demo.app.broker().len("celery").await.unwrap(), 1);
    assert_eq!(delivery(&demo.router, &answer, 0).await.0, "PENDING");

    run_worker(&demo.app, Duration::from_secs(1)).await;
    assert_eq!(delivery(&demo.router, &answer, 5).await.0, "SUCCESS");
    let sent = demo.console.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].mobile, "13800138000");
    let code = code_in(&sent[0].text);

    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, answer) = post(
        &demo.router,
        "/sms_codes/13800138000/verify",
        Some(&format!(r#"{{"code":"{wrong}"}}"#)),
    )
    .await;
    assert_eq!(
        (status, answer.errmsg.as_str()),
        (StatusCode::BAD_REQUEST, "wrong code")
    );
    let body = format!(r#"{{"code":"{code}"}}"#);
    let (status, _) = post(&demo.router, "/sms_codes/13800138000/verify", Some(&body)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = post(&demo.router, "/sms_codes/13800138000/verify", Some(&body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a code works once");
    assert!(answer.errmsg.contains("already used"), "{}", answer.errmsg);
}

#[tokio::test(start_paused = true)]
async fn a_second_request_within_60_seconds_is_throttled() {
    let demo = demo();
    assert_eq!(
        post(&demo.router, "/sms_codes/13900139000", None).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (status, answer) = post(&demo.router, "/sms_codes/13900139000", None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.retry_after, Some(40));
    // Another number is not affected.
    assert_eq!(
        post(&demo.router, "/sms_codes/13700137000", None).await.0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_secs(41)).await;
    assert_eq!(
        post(&demo.router, "/sms_codes/13900139000", None).await.0,
        StatusCode::OK
    );
}

#[tokio::test(start_paused = true)]
async fn codes_expire_after_300_seconds() {
    let demo = demo();
    assert_eq!(
        post(&demo.router, "/sms_codes/13800138001", None).await.0,
        StatusCode::OK
    );
    run_worker(&demo.app, Duration::from_secs(1)).await;
    let code = code_in(&demo.console.sent()[0].text);
    tokio::time::sleep(Duration::from_secs(300)).await;
    let (status, answer) = post(
        &demo.router,
        "/sms_codes/13800138001/verify",
        Some(&format!(r#"{{"code":"{code}"}}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.errmsg.contains("expired"), "{}", answer.errmsg);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let demo = demo();
    for bad in [
        "/sms_codes/12345",
        "/sms_codes/12800138000",
        "/sms_codes/1380013800a",
    ] {
        let (status, answer) = post(&demo.router, bad, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            answer.errmsg.contains("not a mainland-China mobile number"),
            "{}",
            answer.errmsg
        );
    }
    let verify = "/sms_codes/13800138000/verify";
    assert_eq!(
        post(&demo.router, verify, Some("not json")).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(&demo.router, verify, Some(r#"{"code": 123456}"#))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post(&demo.router, verify, Some(r#"{"code": "12ab56"}"#))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let huge = format!(r#"{{"code": "{}"}}"#, "1".repeat(10_000));
    assert_eq!(
        post(&demo.router, verify, Some(&huge)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Without a code sent first.
    let (status, answer) = post(&demo.router, verify, Some(r#"{"code": "123456"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer.errmsg.contains("never sent"), "{}", answer.errmsg);
}

#[tokio::test(start_paused = true)]
async fn a_gateway_failing_twice_delivers_exactly_one_sms_after_two_retries() {
    let console = ConsoleGateway::default();
    let flaky = FlakyGateway::new(console.clone(), 0.0, Duration::from_millis(200)).fail_first(2);
    let demo = demo_with(Arc::new(flaky), console, Arc::new(MemoryBroker::new()));
    let (status, sent) = post(&demo.router, "/sms_codes/13600136000", None).await;
    assert_eq!(status, StatusCode::OK);
    // Retries after at most 3 s and 6 s (jitter can only shorten them).
    let worker = demo.app.worker().concurrency(2).build().unwrap();
    let report = worker
        .run_until(tokio::time::sleep(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        (report.retried, report.succeeded, report.dead_lettered),
        (2, 1, 0)
    );
    assert_eq!(demo.console.sent().len(), 1);
    assert_eq!(delivery(&demo.router, &sent, 0).await.0, "SUCCESS");
}

#[tokio::test(start_paused = true)]
async fn a_gateway_that_keeps_failing_shows_a_failed_delivery_after_three_retries() {
    let console = ConsoleGateway::default();
    let broken = FlakyGateway::new(console.clone(), 0.0, Duration::from_millis(10)).fail_first(100);
    let demo = demo_with(Arc::new(broken), console, Arc::new(MemoryBroker::new()));
    let (status, sent) = post(&demo.router, "/sms_codes/13600136000", None).await;
    assert_eq!(status, StatusCode::OK);
    let waiting = {
        let router = demo.router.clone();
        tokio::spawn(async move { delivery(&router, &sent, 25).await })
    };
    let worker = demo.app.worker().concurrency(2).build().unwrap();
    let report = worker
        .run_until(tokio::time::sleep(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!((report.retried, report.dead_lettered), (3, 1));
    let (state, message) = waiting.await.unwrap();
    assert_eq!(state, "FAILURE", "{message}");
    assert!(message.contains("3 retries"), "{message}");
    assert!(demo.console.sent().is_empty());
}

#[tokio::test]
async fn a_status_request_gets_clear_errors() {
    let demo = demo();
    let (status, answer) = get(&demo.router, "/sms_tasks/not-a-task").await;
    assert_eq!(
        (status, answer.errmsg.as_str()),
        (StatusCode::BAD_REQUEST, "not a task id")
    );
    let id = celeriac::TaskId::new();
    let (status, _) = get(&demo.router, &format!("/sms_tasks/{id}?wait=soon")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // An unknown id is a task not finished yet, as Celery says.
    let (status, answer) = get(&demo.router, &format!("/sms_tasks/{id}")).await;
    assert_eq!(
        (status, answer.state.as_deref()),
        (StatusCode::OK, Some("PENDING"))
    );

    let no_results = App::builder()
        .broker_url("redis://127.0.0.1:1/0")
        .build()
        .unwrap();
    let state = AppState {
        app: no_results,
        store: Arc::new(MemoryStore::default()),
        limits: Limits::default(),
        metrics: None,
    };
    let (status, answer) = get(&router(state), &format!("/sms_tasks/{id}")).await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{}", answer.errmsg);
}

/// A broker that is down.
#[derive(Debug)]
struct DownBroker;

#[async_trait]
impl Broker for DownBroker {
    fn system(&self) -> &'static str {
        "down"
    }
    fn redacted_url(&self) -> String {
        "down://".into()
    }
    async fn publish(&self, _: Outgoing) -> Result<(), BrokerError> {
        Err(BrokerError::Disconnected { op: "publish" })
    }
    async fn consume(
        &self,
        _: &[String],
        _: ConsumeOptions,
    ) -> Result<DeliveryStream, BrokerError> {
        Err(BrokerError::Disconnected { op: "consume" })
    }
    async fn stats(&self, _: &str) -> Result<QueueStats, BrokerError> {
        Err(BrokerError::Disconnected { op: "stats" })
    }
    async fn dead_letters(&self, _: &str, _: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        Err(BrokerError::Disconnected { op: "dead_letters" })
    }
    async fn purge(&self, _: &str) -> Result<u64, BrokerError> {
        Err(BrokerError::Disconnected { op: "purge" })
    }
}

#[tokio::test]
async fn an_unreachable_broker_is_a_503_and_the_user_may_retry_at_once() {
    let console = ConsoleGateway::default();
    let demo = demo_with(Arc::new(console.clone()), console, Arc::new(DownBroker));
    let (status, answer) = post(&demo.router, "/sms_codes/13800138000", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.errmsg.contains("task queue is unavailable"),
        "{}",
        answer.errmsg
    );
    // Not throttled: the SMS was never queued.
    assert_eq!(
        post(&demo.router, "/sms_codes/13800138000", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn the_page_is_served() {
    let demo = demo();
    let response = demo
        .router
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let page = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(page.contains("Send code") && page.contains("/verify"));
}
