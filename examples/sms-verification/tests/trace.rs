//! One trace from the SMS example's HTTP handler to the task's run: the handler's server span,
//! celeriac's producer span for the send (whose W3C `traceparent` travels in the message), and
//! the worker's consumer span for the run share one trace id, each the parent of the next.
//! Spans are recorded by `tracing-opentelemetry` into OpenTelemetry's in-memory exporter.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use celeriac::{App, MemoryBroker};
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use sms_verification::gateway::ConsoleGateway;
use sms_verification::http::{AppState, Limits, router};
use sms_verification::store::MemoryStore;
use sms_verification::tasks::{Gateway, ccp_send_sms_code};
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

fn span_of_kind(spans: &[SpanData], kind: SpanKind) -> &SpanData {
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_ref()).collect();
    spans
        .iter()
        .find(|span| span.span_kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} span among {names:?}"))
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|pair| pair.key.as_str() == key)
        .map(|pair| pair.value.to_string())
}

// One thread: the subscriber set for this test sees the handler, the worker and their tasks.
#[tokio::test(flavor = "current_thread")]
async fn one_trace_runs_from_the_http_handler_to_the_sms_task() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("sms-trace-test")));
    let _recording = tracing::subscriber::set_default(subscriber);

    let console = ConsoleGateway::default();
    let app = App::builder()
        .broker(MemoryBroker::new())
        .state(Gateway(Arc::new(console.clone())))
        .register::<ccp_send_sms_code>()
        .build()
        .expect("the app builds");
    let state = AppState {
        app: app.clone(),
        store: Arc::new(MemoryStore::default()),
        limits: Limits::default(),
        metrics: None,
    };
    let request = Request::post("/sms_codes/13800138000")
        .body(Body::empty())
        .expect("a request");
    let response = router(state).oneshot(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);

    let worker = app
        .worker()
        .concurrency(1)
        .build()
        .expect("the worker builds");
    let sent = console.clone();
    let report = worker
        .run_until(async move {
            for _ in 0..200 {
                if !sent.sent().is_empty() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the worker ran");
    assert_eq!(report.succeeded, 1);
    provider.force_flush().expect("flushed");

    let spans = exporter.get_finished_spans().expect("the recorded spans");
    let http = span_of_kind(&spans, SpanKind::Server);
    let send = span_of_kind(&spans, SpanKind::Producer);
    let run = span_of_kind(&spans, SpanKind::Consumer);
    let trace = http.span_context.trace_id();
    assert_eq!(
        send.span_context.trace_id(),
        trace,
        "the send is in the request's trace"
    );
    assert_eq!(
        run.span_context.trace_id(),
        trace,
        "the run is in the request's trace"
    );
    assert_eq!(send.parent_span_id, http.span_context.span_id());
    assert_eq!(run.parent_span_id, send.span_context.span_id());
    assert_eq!(run.name, "process celery");
    assert_eq!(
        attribute(run, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attribute(send, "messaging.destination.name").as_deref(),
        Some("celery")
    );
    assert_eq!(
        attribute(run, "messaging.message.id"),
        attribute(send, "messaging.message.id"),
    );
}
