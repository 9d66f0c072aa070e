//! W3C trace context across the queue (feature `opentelemetry`).
//!
//! A send made inside a span that OpenTelemetry records (an HTTP handler's, say) opens a
//! producer span, `send <queue>`, and writes its context into the task's headers as W3C
//! `traceparent` (and `tracestate`). The worker's run span, `process <queue>`, continues that
//! trace: one trace from the request to the task's run, across processes and machines. Spans
//! carry OpenTelemetry's messaging attributes (`messaging.system`, `messaging.operation.type`,
//! `messaging.destination.name`, `messaging.message.id`).
//!
//! celeriac only writes and reads the context; install `tracing-opentelemetry`'s layer with the
//! exporter of your choice (OTLP, Jaeger, …) in each process:
//!
//! ```
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! #[celeriac::task]
//! async fn send_sms(mobile: String) -> Result<(), std::io::Error> {
//!     # let _ = mobile;
//!     Ok(())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Your exporter here (OTLP, …); this one only keeps spans in memory.
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("shop")));
//! let _recording = tracing::subscriber::set_default(subscriber);
//!
//! let app = celeriac::App::builder().broker_url("memory://otel-doc").register::<send_sms>().build()?;
//! let request = tracing::info_span!("POST /sms_codes");
//! let send = async { send_sms::delay(&app, "13800138000".into()).await };
//! tracing::Instrument::instrument(send, request).await?;
//!
//! // The message carries the request's trace.
//! use futures::StreamExt;
//! let queues = ["celery".to_owned()];
//! let mut deliveries = app.broker().consume(&queues, Default::default()).await?;
//! let delivery = deliveries.next().await.ok_or("no message")??;
//! let envelope = celeriac::Envelope::from_bytes(delivery.payload(), app.decode_limits())?;
//! assert!(envelope.headers[celeriac::trace_context::TRACEPARENT].starts_with("00-"));
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::Envelope;

/// The header of a W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

struct Writer<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Reader<'a>(&'a BTreeMap<String, String>);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The producer span of sending `envelope`, whose context goes into its headers when a trace is
/// being recorded (a message sent again, as a retry, gets its new sender's context).
pub(crate) fn send_span(envelope: &mut Envelope, system: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "celeriac.send",
        otel.name = %format_args!("send {}", envelope.queue),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.destination.name = %envelope.queue,
        messaging.message.id = %envelope.id,
        task.name = %envelope.task,
    );
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut Writer(&mut envelope.headers));
    }
    span
}

/// Makes `span` (a run's) continue the trace `headers` carry, if any.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    if headers.contains_key(TRACEPARENT) {
        let parent = TraceContextPropagator::new().extract(&Reader(headers));
        // Fails only when no OpenTelemetry layer records `span`: nothing to continue then.
        let _ = span.set_parent(parent);
    }
}
