//! The dashboard's HTTP side: the page and its assets, the JSON API, the live stream, and the
//! guard in front of all of it (authentication, CSRF, security headers).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};

use super::auth::{self, Auth, TOKEN_COOKIE};
use super::collect::{Collector, TaskRow};
use super::result_view::ResultView;
use crate::broker::letter::Letter;
use crate::{App, TaskId};

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// Dead letters a page lists at most.
const LETTERS_SHOWN: usize = 200;

/// Dead letters moved per broker call by the requeue button.
const REQUEUE_BATCH: usize = 500;

/// The header a change carries its CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";

struct Shared {
    app: App,
    collector: Arc<Collector>,
    auth: Option<Auth>,
    csrf: String,
}

/// What every handler shares.
type Handle = Arc<Shared>;

pub(super) fn router(app: App, collector: Arc<Collector>, auth: Option<Auth>) -> Router {
    let shared: Handle = Arc::new(Shared {
        app,
        collector,
        auth,
        csrf: auth::csrf_token(),
    });
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route("/api/snapshot", get(snapshot))
        .route("/api/stream", get(stream))
        .route("/api/tasks/{id}", get(task))
        .route("/api/dlq/{queue}", get(letters))
        .route("/api/dlq/{queue}/requeue", post(requeue))
        .route("/api/dlq/{queue}/purge", post(purge))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// An error the API answers with, as JSON.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (self.0, Json(Body { error: self.1 })).into_response()
    }
}

impl From<crate::BrokerError> for ApiError {
    fn from(error: crate::BrokerError) -> Self {
        let status = if error.is_invalid_request() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::BAD_GATEWAY
        };
        Self(status, crate::error::Report(&error).to_string())
    }
}

/// Authentication, CSRF on changes, and the security headers of every response.
async fn guard(State(shared): State<Handle>, request: Request, next: Next) -> Response {
    let mut response = match refusal(&shared, &request) {
        None => next.run(request).await,
        Some(refused) => refused,
    };
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// Why `request` is refused (or, for `/?token=…`, where it goes next); `None` lets it through.
fn refusal(shared: &Shared, request: &Request) -> Option<Response> {
    if let Some(auth) = &shared.auth
        && !auth.allows(request.headers())
    {
        // `/?token=…` once: keep it in a cookie and go on without it in the address.
        let token = Query::<TokenQuery>::try_from_uri(request.uri())
            .ok()
            .and_then(|query| query.0.token);
        if request.uri().path() == "/"
            && let Some(token) = token.filter(|token| auth.is_token(token))
        {
            let cookie = format!("{TOKEN_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            let mut response = Redirect::to("/").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            return Some(response);
        }
        let mut response = ApiError(
            StatusCode::UNAUTHORIZED,
            "authentication required: a bearer token (or open /?token=…), or basic auth".into(),
        )
        .into_response();
        if let Some(challenge) = auth.challenge() {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        return Some(response);
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let given = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok());
        if !given.is_some_and(|given| auth::same(given, &shared.csrf)) {
            return Some(
                ApiError(
                    StatusCode::FORBIDDEN,
                    "missing or wrong CSRF token: changes are made from the dashboard's page"
                        .into(),
                )
                .into_response(),
            );
        }
    }
    None
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn index(State(shared): State<Handle>) -> Response {
    // The token is hex: nothing to escape.
    let page = INDEX.replace("{{csrf}}", &shared.csrf);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn snapshot(State(shared): State<Handle>) -> Response {
    Json(shared.collector.snapshot()).into_response()
}

async fn stream(
    State(shared): State<Handle>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let snapshots = futures::stream::unfold((shared, ticks), |(shared, mut ticks)| async move {
        ticks.tick().await;
        let event = SseEvent::default()
            .event("snapshot")
            .json_data(shared.collector.snapshot())
            .unwrap_or_else(|_| SseEvent::default().comment("unencodable snapshot"));
        Some((Ok(event), (shared, ticks)))
    });
    Sse::new(snapshots).keep_alive(KeepAlive::default())
}

#[derive(Serialize)]
struct TaskPage {
    id: TaskId,
    /// What the events told, if the dashboard heard of it.
    events: Option<TaskRow>,
    /// Its stored result, if the app has a result backend and the result is there.
    result: Option<ResultView>,
    /// Task arguments are never shown.
    arguments: &'static str,
}

async fn task(State(shared): State<Handle>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: TaskId = id
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("`{id}` is not a task id")))?;
    let result = match shared.app.result_backend() {
        Some(backend) => backend
            .fetch(&id.to_string())
            .await?
            .map(|stored| ResultView::new(&stored, shared.app.decode_limits())),
        None => None,
    };
    let events = shared.collector.task(id);
    if events.is_none() && result.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no task {id} in recent events or in the result backend"),
        ));
    }
    Ok(Json(TaskPage {
        id,
        events,
        result,
        arguments: "redacted",
    })
    .into_response())
}

async fn letters(
    State(shared): State<Handle>,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    let letters: Vec<Letter> = shared
        .app
        .broker()
        .dead_letters(&queue, LETTERS_SHOWN)
        .await?
        .iter()
        .map(|dead| Letter::new(&shared.app, dead))
        .collect();
    Ok(Json(letters).into_response())
}

async fn requeue(
    State(shared): State<Handle>,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    let mut moved = 0;
    loop {
        let done = shared
            .app
            .broker()
            .requeue_dead_letters(&queue, REQUEUE_BATCH)
            .await?;
        moved += done;
        if done < REQUEUE_BATCH as u64 {
            break;
        }
    }
    tracing::info!(%queue, moved, "dashboard: dead letters requeued");
    Ok(Json(serde_json::json!({ "requeued": moved, "queue": queue })).into_response())
}

async fn purge(
    State(shared): State<Handle>,
    Path(queue): Path<String>,
) -> Result<Response, ApiError> {
    let purged = shared.app.broker().purge_dead_letters(&queue).await?;
    tracing::info!(%queue, purged, "dashboard: dead letters purged");
    Ok(Json(serde_json::json!({ "purged": purged, "queue": queue })).into_response())
}
