//! The HTTP API (SPEC section 8): one file per resource, the shared error shape, the
//! operational endpoints and the OpenAPI document.

pub mod auth;
pub mod emails;
pub mod entities;
pub mod error;
pub mod keys;
pub mod openapi;
pub mod webhooks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
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

pub fn router(state: AppState) -> Router {
    // Everything under /v1 but the OpenAPI document needs a key.
    let authenticated = Router::new()
        .merge(entities::routes())
        .merge(webhooks::routes())
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
        .layer(axum::middleware::map_response(json_errors))
        .layer(TraceLayer::new_for_http())
        .layer(axum::middleware::from_fn(crate::telemetry::trace_request))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Result<&'static str, ApiError> {
    s.hierarchy.store().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready: store does not answer");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("store does not answer: {e}"),
        )
    })?;
    Ok("ready")
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
