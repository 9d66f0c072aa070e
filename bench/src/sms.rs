//! The flagship demo under load: `POST /sms_codes/{mobile}` from many concurrent clients while the SMS
//! gateway takes 2 s per message — once through celeriac (the request only enqueues), once with the
//! SMS sent inline in the request, to show why a task queue exists.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use celeriac::{App, MemoryBroker};
use serde::Serialize;
use sms_verification::gateway::{ConsoleGateway, FlakyGateway, SmsGateway};
use sms_verification::http::{AppState, Limits, router};
use sms_verification::mobile::{Mobile, new_code};
use sms_verification::store::{CodeStore, MemoryStore};
use sms_verification::tasks::{Gateway, ccp_send_sms_code};
use tokio::time::Instant;

use crate::measure::Percentiles;

/// Latencies of one variant.
#[derive(Debug, Serialize)]
pub(crate) struct Variant {
    pub(crate) requests: usize,
    pub(crate) failures: usize,
    pub(crate) requests_per_sec: f64,
    pub(crate) latency_ms: Percentiles,
}

/// Both variants.
#[derive(Debug, Serialize)]
pub(crate) struct SmsReport {
    pub(crate) clients: usize,
    pub(crate) think_ms: u64,
    pub(crate) gateway_latency_ms: u64,
    pub(crate) queued: Variant,
    pub(crate) queued_saturated: Variant,
    pub(crate) inline: Variant,
}

fn slow_gateway(latency: Duration) -> Arc<dyn SmsGateway> {
    Arc::new(FlakyGateway::new(ConsoleGateway::default(), 0.0, latency))
}

/// Runs `clients` concurrent clients, each sending `per_client` requests for fresh numbers.
async fn load(
    base: &str,
    clients: usize,
    per_client: usize,
    offset: usize,
    think: Duration,
) -> Variant {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default();
    let started = Instant::now();
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..clients {
        let client = client.clone();
        let base = base.to_owned();
        lanes.spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut failures = 0;
            // Spread the clients' first requests over one think time.
            tokio::time::sleep(think.mul_f64(lane as f64 / clients as f64)).await;
            for i in 0..per_client {
                if i > 0 {
                    tokio::time::sleep(think).await;
                }
                let mobile = format!("138{:08}", offset + lane * per_client + i);
                let sent = Instant::now();
                let ok = client
                    .post(format!("{base}/sms_codes/{mobile}"))
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success());
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                failures += usize::from(!ok);
            }
            (latencies, failures)
        });
    }
    let mut millis = Vec::new();
    let mut failures = 0;
    while let Some(Ok((latencies, failed))) = lanes.join_next().await {
        millis.extend(latencies);
        failures += failed;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = millis.len();
    Variant {
        requests,
        failures,
        requests_per_sec: requests as f64 / elapsed,
        latency_ms: Percentiles::from_millis(millis),
    }
}

#[derive(Clone)]
struct Inline {
    store: Arc<dyn CodeStore>,
    gateway: Arc<dyn SmsGateway>,
}

/// The same endpoint with the SMS sent before answering, as without a task queue.
async fn send_inline(State(inline): State<Inline>, Path(mobile): Path<String>) -> StatusCode {
    let Ok(mobile) = Mobile::parse(&mobile) else {
        return StatusCode::BAD_REQUEST;
    };
    let code = new_code();
    if inline
        .store
        .put_code(mobile.as_str(), &code, Duration::from_secs(300))
        .await
        .is_err()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    match inline
        .gateway
        .send(mobile.as_str(), &format!("Your code is {code}"))
        .await
    {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub(crate) async fn run(
    clients: usize,
    per_client: usize,
    think: Duration,
) -> Result<SmsReport, Box<dyn std::error::Error>> {
    let latency = Duration::from_secs(2);

    let app = App::builder()
        .broker(MemoryBroker::new())
        .state(Gateway(slow_gateway(latency)))
        .register::<ccp_send_sms_code>()
        .build()?;
    let worker = app.worker().concurrency(1_000).build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let working = tokio::spawn(worker.run_until(async {
        let _ = stopped.await;
    }));
    let state = AppState {
        app,
        store: Arc::new(MemoryStore::default()),
        limits: Limits::default(),
        metrics: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    let queued = load(&base, clients, per_client, 0, think).await;
    let queued_saturated = load(&base, clients, per_client, 10_000_000, Duration::ZERO).await;
    let _ = stop.send(());
    let _ = working.await;

    let inline = Inline {
        store: Arc::new(MemoryStore::default()),
        gateway: slow_gateway(latency),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let inline_router = axum::Router::new()
        .route("/sms_codes/{mobile}", post(send_inline))
        .with_state(inline);
    tokio::spawn(async move { axum::serve(listener, inline_router).await });
    let inline = load(&base, clients, 3, 50_000_000, think).await;

    Ok(SmsReport {
        clients,
        think_ms: u64::try_from(think.as_millis()).unwrap_or(u64::MAX),
        gateway_latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        queued,
        queued_saturated,
        inline,
    })
}
