//! The HTTP API (docs/contract.md#api): one file per resource, the shared error shape, the
//! operational endpoints and the OpenAPI document.

pub mod auth;
pub mod emails;
pub mod endpoints;
pub mod entities;
pub mod error;
pub mod keys;
pub mod openapi;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::trace::TraceLayer;

use crate::changes::Hierarchy;
use crate::metrics::Metrics;
use error::ApiError;

/// Largest request body accepted: 1 MiB.
pub const MAX_BODY: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub hierarchy: Arc<Hierarchy>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<auth::Auth>,
    /// `TIDINGS_RETENTION` (`None`: off), to say why a webhook may be gone.
    pub retention: Option<std::time::Duration>,
}

/// A page of `rows` (read with `limit`) as the key `who` sees it: `{"data": [...],
/// "next_cursor": "<id>" | null}`. A tenant sees the rows about its level and the levels
/// below it (`keys` gives a row's id and its level), the rule asked once per level. The
/// cursor is the last row read, seen or not, so that paging goes on past rows left out.
pub(crate) async fn visible_page<T>(
    s: &AppState,
    who: &crate::tenancy::Principal,
    rows: Vec<T>,
    limit: u32,
    keys: impl Fn(&T) -> (&crate::domain::EntityId, &crate::domain::EntityId),
    view: impl Fn(T) -> serde_json::Value,
) -> Result<Json<serde_json::Value>, ApiError> {
    let next = (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| keys(r).0.clone()))
        .flatten();
    let mut sees_level = std::collections::HashMap::new();
    let mut data = Vec::with_capacity(rows.len());
    for row in rows {
        let level = keys(&row).1;
        let sees = match sees_level.get(level) {
            Some(v) => *v,
            None => {
                let v = s.hierarchy.sees_level(who, level).await?;
                sees_level.insert(level.clone(), v);
                v
            }
        };
        if sees {
            data.push(view(row));
        }
    }
    Ok(Json(
        serde_json::json!({ "data": data, "next_cursor": next }),
    ))
}

/// The API's HTTP limits (see `config.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From a request's headers to its answer, body included.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(30),
        }
    }
}

pub fn router(state: AppState) -> Router {
    router_with(state, Limits::default())
}

/// [`router`] with other limits.
pub fn router_with(state: AppState, limits: Limits) -> Router {
    // Everything under /v1 but the OpenAPI document needs a key.
    let authenticated = Router::new()
        .merge(entities::routes())
        .merge(webhooks::routes())
        .merge(endpoints::routes())
        .merge(emails::routes())
        .merge(keys::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .merge(authenticated)
        .route(
            "/v1/openapi.json",
            get(|| async { Json(openapi::document()) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /v1/openapi.json") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(detached))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            move |State(s): State<AppState>, req, next| {
                request_timeout(s.metrics, limits.request_timeout, req, next)
            },
        ))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(crate::telemetry::trace_request))
        .with_state(state.clone())
        // The web console at `/`, with its own error pages and headers.
        .merge(crate::console::routes(state).layer(TraceLayer::new_for_http()))
}

/// Reads each request's body, then runs its handler in a task of its own, so that a client
/// hanging up cannot cancel a change halfway. Hyper drops a request's future when its
/// connection closes (and the request timeout drops it when it runs out); a change dropped
/// there could stop between its commit and the hand-off of its webhooks (which would then
/// wait for their lease) or inside a database round trip (leaving a pooled connection
/// mid-transaction). Detached, every change runs to its commit or its rollback, and what
/// follows a commit always happens; only the answer is lost. The body is read before, where
/// being cancelled is harmless: a slow body stays bound by the request timeout, and a
/// detached handler never waits on its client. What a client that hung up can rely on is
/// stated in docs/contract.md.
async fn detached(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use http_body_util::BodyExt;
    use tracing::Instrument;
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is over {MAX_BODY} bytes"),
            )
            .into_response()
        }
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the request body could not be read: {e}"),
            )
            .into_response()
        }
    };
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(body));
    let handler = tokio::spawn(next.run(request).in_current_span());
    match handler.await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "a request's handler panicked");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
            .into_response()
        }
    }
}

async fn readyz(State(s): State<AppState>) -> Result<&'static str, ApiError> {
    s.hierarchy.store().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready: the store does not answer");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("the store is unavailable: {e}"),
        )
    })?;
    Ok("ready")
}

/// Bounds a request from its headers to its answer: a client that sends its body too slowly
/// (or a handler stuck) gets 408 and the connection is closed, instead of holding it forever.
async fn request_timeout(
    metrics: Arc<Metrics>,
    limit: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics.request_timed_out();
            tracing::warn!(%method, path = uri.path(), timeout = ?limit, "request timed out; closing its connection");
            let mut response = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request was not received and answered within {}",
                    humantime::format_duration(limit)
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let body = s
        .metrics
        .scrape(s.hierarchy.store(), s.hierarchy.now())
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

/// Rejections made by the framework before a handler runs (a query string that does not
/// parse, a body over the limit, a method not allowed) come as plain text; this gives them
/// the API's one error shape, so every 4xx a client sees is JSON.
async fn json_errors(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        message
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n != header::CONTENT_TYPE && *n != header::CONTENT_LENGTH)
    {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}
