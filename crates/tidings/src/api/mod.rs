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
        .layer(TraceLayer::new_for_http())
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
    let store = s.hierarchy.store();
    let now = s.hierarchy.now();
    let (counts, queue) = (store.counts().await?, store.queue_stats(now).await?);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&counts, &queue, now),
    ))
}
