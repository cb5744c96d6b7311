//! `/v1/{resellers|dealers|companies|sites}/{id}/endpoint`: a level's endpoint settings
//! (event types, ordering, enabled, success rule) and its delivery health.
//!
//! Thin: the level is found as any entity is (a key sees its own level and those below),
//! the settings are parsed by the domain, stored by the store.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Serialize;

use super::entities::{json_body, COLLECTIONS};
use super::error::ApiError;
use super::AppState;
use crate::changes::LevelEndpoint;
use crate::domain::endpoint::SuccessRule;
use crate::domain::{EntityId, EventType, Kind, Level, Millis};
use crate::tenancy::Principal;

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (name, kind) in COLLECTIONS.into_iter().filter(|(_, k)| k.level().is_some()) {
        router = router.route(
            &format!("/v1/{name}/{{id}}/endpoint"),
            get(move |s, w, p| read(s, w, kind, p))
                .patch(move |s, w, p, b| change(s, w, kind, p, b)),
        );
    }
    router
}

/// A level's endpoint as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    /// The level: `{"type": "company", "id": ...}`.
    pub level: super::webhooks::LevelRef,
    /// The event types this level receives: the ones it chose, or (by default) every type
    /// the level table gives it.
    pub event_types: Vec<EventType>,
    /// Whether `event_types` was chosen (false: the default, all types).
    pub event_types_chosen: bool,
    /// Webhooks about one subject are attempted one at a time, in creation order.
    pub ordered: bool,
    pub enabled: bool,
    /// Why the endpoint is disabled (a `410 Gone` answer, or a `PATCH`), while it is.
    pub disabled_reason: Option<String>,
    /// `"200"`: only 200 is a success; `"2xx"`: any 2xx is.
    pub success: SuccessRule,
    pub health: HealthView,
}

/// `PATCH` body: every field optional; fields left out keep their value.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // describes the body for the OpenAPI document; the domain parses it
pub struct EndpointPatch {
    /// The event types to receive; `null` for every type the level table gives the level.
    /// A type the level could never receive, or an unknown one, is refused (422).
    pub event_types: Option<Vec<EventType>>,
    pub ordered: Option<bool>,
    /// `true` enables a disabled endpoint (then `POST /v1/webhooks/recover` sends what was
    /// kept); `false` disables it.
    pub enabled: Option<bool>,
    pub success: Option<SuccessRule>,
}

/// Delivery health, kept up to date as attempts are recorded (read only).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthView {
    #[schema(value_type = Option<String>)]
    pub last_success_at: Option<Millis>,
    #[schema(value_type = Option<String>)]
    pub last_failure_at: Option<Millis>,
    /// What the last failed attempt got: status or transport error.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// Successful attempts over all attempts in the last 24 hours; null without attempts.
    pub success_ratio_24h: Option<f64>,
    pub attempts_24h: u64,
}

pub fn endpoint_view(e: &LevelEndpoint) -> EndpointView {
    let h = &e.health;
    EndpointView {
        level: super::webhooks::LevelRef {
            level: e.level,
            id: e.level_id.clone(),
        },
        event_types: e.settings.effective_types(e.level),
        event_types_chosen: e.settings.event_types.is_some(),
        ordered: e.settings.ordered,
        enabled: e.settings.enabled,
        disabled_reason: e.settings.disabled_reason.clone(),
        success: e.settings.success,
        health: HealthView {
            last_success_at: h.last_success_at,
            last_failure_at: h.last_failure_at,
            last_error: h.last_error.clone(),
            consecutive_failures: h.consecutive_failures,
            success_ratio_24h: h.success_ratio_24h(),
            attempts_24h: h.successes_24h + h.failures_24h,
        },
    }
}

async fn read(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    let e = s.hierarchy.endpoint(&who, kind, &id).await?;
    Ok(Json(endpoint_view(&e)))
}

async fn change(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<EndpointView>, ApiError> {
    let body = json_body(&body)?;
    let e = s.hierarchy.patch_endpoint(&who, kind, &id, body).await?;
    Ok(Json(endpoint_view(&e)))
}

/// Whether a level's endpoint is enabled (for `recover`, which sends nothing to a disabled
/// one).
pub async fn enabled(s: &AppState, level_id: &EntityId) -> Result<bool, ApiError> {
    Ok(s.hierarchy.store().endpoint(level_id).await?.enabled)
}

/// The levels that have an endpoint resource (for the OpenAPI document).
pub fn level_collections() -> impl Iterator<Item = (&'static str, Level)> {
    COLLECTIONS
        .into_iter()
        .filter_map(|(name, k)| k.level().map(|l| (name, l)))
}
