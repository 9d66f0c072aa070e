//! The web side: send a code, verify it, a small page, and `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use celeriac::{AsyncResult, EnqueueError, ResultError, ResultState, TaskId};

use crate::mobile::{Mobile, new_code};
use crate::store::{CodeStore, Verification};
use crate::tasks::ccp_send_sms_code;

/// Largest request body accepted (413 beyond it).
pub const MAX_BODY_BYTES: usize = 1024;

/// How long codes live. (How often a number may ask for one is the task's `unique_for`.)
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A code is valid this long (300 s).
    pub code_ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(300),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The celeriac app tasks are sent through.
    pub app: celeriac::App,
    /// Codes.
    pub store: Arc<dyn CodeStore>,
    /// Throttling and expiry.
    pub limits: Limits,
    /// Renders `/metrics` when a Prometheus recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("app", &self.app)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The JSON every endpoint answers with.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Answer {
    /// `"0"` on success, else the HTTP status.
    pub code: String,
    /// `"OK"` or what went wrong.
    pub errmsg: String,
    /// Seconds until a new code may be requested (429 only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry_after: Option<u64>,
    /// The id of the task sending the SMS (a sent code only): its delivery status is
    /// `GET /sms_tasks/{task_id}`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub task_id: Option<String>,
    /// The SMS task's state, as Celery spells it (`PENDING`, `RETRY`, `SUCCESS`, `FAILURE`; the
    /// status endpoint only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub state: Option<String>,
}

impl Answer {
    /// The answer for `status` with `message`; the other fields empty.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let code = if status.is_success() {
            "0".to_owned()
        } else {
            status.as_u16().to_string()
        };
        Self {
            code,
            errmsg: message.into(),
            retry_after: None,
            task_id: None,
            state: None,
        }
    }
}

/// The longest a status request may wait for the SMS task to finish.
pub const MAX_STATUS_WAIT: Duration = Duration::from_secs(25);

fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(Answer::new(status, message))).into_response()
}

fn ok() -> Response {
    answer(StatusCode::OK, "OK")
}

/// The router, without a socket (tests drive it in-process).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/sms_codes/{mobile}", post(send_code))
        .route("/sms_codes/{mobile}/verify", post(verify_code))
        .route("/sms_tasks/{task_id}", get(delivery_status))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn(count_requests))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("../static/index.html"))
}

/// `POST /sms_codes/{mobile}`: make a code, enqueue the SMS (refused within a minute of the last
/// one for this number), store the code, answer at once.
async fn send_code(State(state): State<AppState>, Path(mobile): Path<String>) -> Response {
    let mobile = match Mobile::parse(&mobile) {
        Ok(mobile) => mobile,
        Err(error) => return answer(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let code = new_code();
    // The send comes first: a refused duplicate must not replace the code the earlier SMS carries.
    // The code is stored a millisecond later, long before an SMS reaches a phone and is typed in.
    let sending = match ccp_send_sms_code::delay(&state.app, mobile.to_string(), code.clone()).await
    {
        Ok(sending) => sending,
        Err(EnqueueError::Duplicate(duplicate)) => return too_many_requests(duplicate.retry_after),
        Err(error) => {
            tracing::error!(error = %celeriac::error::Report(&error), "cannot enqueue the SMS task");
            return answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "the task queue is unavailable; please try again shortly",
            );
        }
    };
    if let Err(error) = state
        .store
        .put_code(mobile.as_str(), &code, state.limits.code_ttl)
        .await
    {
        // The SMS goes out with a code that will not verify; the user asks again after the minute.
        tracing::error!(%error, "cannot store the code of a queued SMS");
        return answer(StatusCode::SERVICE_UNAVAILABLE, error.to_string());
    }
    let body = Answer {
        task_id: Some(sending.id().to_string()),
        ..Answer::new(StatusCode::OK, "OK")
    };
    Json(body).into_response()
}

/// 429 with the whole seconds until the number may ask again, in the body and `Retry-After`.
fn too_many_requests(left: Duration) -> Response {
    let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    let message = format!("a code was sent to this number recently; try again in {seconds} s");
    let body = Answer {
        retry_after: Some(seconds),
        ..Answer::new(StatusCode::TOO_MANY_REQUESTS, message)
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The body of a verification.
#[derive(Debug, Deserialize)]
pub struct VerifyBody {
    /// The code the user typed.
    pub code: String,
}

/// `POST /sms_codes/{mobile}/verify` with `{"code": "123456"}`.
async fn verify_code(
    State(state): State<AppState>,
    Path(mobile): Path<String>,
    body: Result<Json<VerifyBody>, JsonRejection>,
) -> Response {
    let mobile = match Mobile::parse(&mobile) {
        Ok(mobile) => mobile,
        Err(error) => return answer(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Err(rejection) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected a JSON body like {{\"code\": \"123456\"}}: {}",
                    rejection.body_text()
                ),
            );
        }
    };
    if body.code.len() != 6 || !body.code.bytes().all(|b| b.is_ascii_digit()) {
        return answer(StatusCode::BAD_REQUEST, "the code has six digits");
    }
    match state.store.verify(mobile.as_str(), &body.code).await {
        Ok(Verification::Accepted) => ok(),
        Ok(Verification::Mismatch) => answer(StatusCode::BAD_REQUEST, "wrong code"),
        Ok(Verification::NoCode) => answer(
            StatusCode::BAD_REQUEST,
            "no valid code for this number: it expired, was already used, or was never sent",
        ),
        Err(error) => answer(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// The query of a status request.
#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    /// Seconds to wait for the task to finish before answering (0 by default, at most 25).
    #[serde(default)]
    pub wait: u64,
}

/// `GET /sms_tasks/{task_id}?wait=20`: whether the SMS went out, read from the task's
/// `AsyncResult`. With `wait`, the answer comes the moment the task finishes (the result backend
/// pushes it), or after `wait` seconds with the state then. Gateway errors are not shown: they stay
/// in the worker's log.
async fn delivery_status(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Response {
    let Ok(id) = task_id.parse::<TaskId>() else {
        return answer(StatusCode::BAD_REQUEST, "not a task id");
    };
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return answer(StatusCode::BAD_REQUEST, rejection.body_text()),
    };
    let wait = Duration::from_secs(query.wait).min(MAX_STATUS_WAIT);
    let sending = AsyncResult::<()>::from_id(&state.app, id);
    let (task_state, message) = match sending.get_timeout(wait).await {
        Ok(()) => (
            ResultState::Success,
            "the SMS was handed to the gateway".to_owned(),
        ),
        Err(ResultError::Timeout { .. }) => match sending.state().await {
            Ok(ResultState::Retry) => (ResultState::Retry, "the gateway failed; retrying".into()),
            Ok(other) => (other, "the SMS is queued".into()),
            Err(error) => return status_unavailable(&error),
        },
        Err(ResultError::Failed { retries, .. }) => (
            ResultState::Failure,
            format!("the SMS could not be sent ({retries} retries); ask for a new code"),
        ),
        Err(ResultError::Expired { .. } | ResultError::DeadLettered { .. }) => (
            ResultState::Failure,
            "the SMS was not sent; ask for a new code".into(),
        ),
        Err(error) => return status_unavailable(&error),
    };
    let body = Answer {
        task_id: Some(id.to_string()),
        state: Some(task_state.to_string()),
        ..Answer::new(StatusCode::OK, message)
    };
    Json(body).into_response()
}

fn status_unavailable(error: &ResultError) -> Response {
    tracing::warn!(error = %celeriac::error::Report(error), "cannot read an SMS task's status");
    match error {
        ResultError::NoBackend { .. } => answer(
            StatusCode::NOT_IMPLEMENTED,
            "this server keeps no task results (start it with --result-backend)",
        ),
        _ => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "the delivery status is unavailable for now",
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => answer(StatusCode::NOT_FOUND, "metrics are not enabled"),
    }
}

/// Counts requests by route and status, and records their latency.
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    // The request's span: with `tracing-opentelemetry` installed, a server span whose trace the
    // SMS task's run continues (celeriac's feature `opentelemetry`).
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        otel.name = %format_args!("{method} {route}"),
        http.request.method = %method,
        http.route = %route,
    );
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("sms_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("sms_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
