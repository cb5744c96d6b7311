//! `/v1/api-keys`: the operator makes keys scoped to one level, lists and revokes them.
//! The key itself is returned once, at creation; only its hash is kept.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{generate_key, hash_key};
use super::entities::{JsonBody, NO_STORE};
use super::error::ApiError;
use super::AppState;
use crate::domain::{EntityId, Level, Millis};
use crate::store::ApiKeyRecord;
use crate::tenancy::Principal;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", get(list).post(create))
        .route("/v1/api-keys/{id}", delete(revoke))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The level the key is bound to: reseller, dealer, company or site.
    pub level: Level,
    pub id: EntityId,
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    pub id: EntityId,
    pub level: Option<Level>,
    pub level_id: Option<EntityId>,
    pub label: String,
    #[schema(value_type = String)]
    pub created: Millis,
    #[schema(value_type = Option<String>)]
    pub revoked: Option<Millis>,
    /// The key itself: only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn view(k: &ApiKeyRecord, key: Option<String>) -> KeyView {
    KeyView {
        id: k.id.clone(),
        level: k.scope.as_ref().map(|(l, _)| *l),
        level_id: k.scope.as_ref().map(|(_, id)| id.clone()),
        label: k.label.clone(),
        created: k.created_at,
        revoked: k.revoked_at,
        key,
    }
}

fn operator(who: &Principal) -> Result<(), ApiError> {
    if who.is_operator() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the operator key manages API keys",
        ))
    }
}

async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    operator(&who)?;
    let req: NewKey = super::entities::parse_body(&body)?;
    crate::domain::validate::text("label", &req.label, crate::domain::validate::MAX_TEXT)
        .map_err(|e| ApiError::field("invalid_field", e))?;
    // The level must exist and be of the named kind.
    s.hierarchy
        .get(&Principal::Operator, req.level.kind(), req.id.as_str())
        .await
        .map_err(|_| {
            ApiError::field(
                "invalid_reference",
                crate::domain::validate::FieldError::new(
                    "id",
                    format!("no {} with id {}", req.level, req.id),
                ),
            )
        })?;
    let now = s.hierarchy.now();
    let key = generate_key();
    let record = ApiKeyRecord {
        id: EntityId::generate(now),
        hash: hash_key(&key),
        scope: Some((req.level, req.id)),
        label: req.label,
        created_at: now,
        revoked_at: None,
    };
    s.hierarchy.store().insert_api_key(&record).await?;
    tracing::info!(key = %record.id, level = ?record.scope, "API key created");
    Ok((
        StatusCode::CREATED,
        NO_STORE,
        Json(view(&record, Some(key))),
    ))
}

async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<serde_json::Value>, ApiError> {
    operator(&who)?;
    let keys = s.hierarchy.store().api_keys().await?;
    let data: Vec<KeyView> = keys.iter().map(|k| view(k, None)).collect();
    Ok(Json(
        serde_json::json!({ "data": data, "next_cursor": null }),
    ))
}

async fn revoke(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    operator(&who)?;
    let not_found = || ApiError::not_found(format!("API key {id} not found or already revoked"));
    let kid = EntityId::parse(&id).map_err(|_| not_found())?;
    if s.hierarchy
        .store()
        .revoke_api_key(&kid, s.hierarchy.now())
        .await?
    {
        tracing::info!(key = %kid, "API key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}
