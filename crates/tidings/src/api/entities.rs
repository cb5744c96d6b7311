//! `/v1/resellers`, `/v1/dealers`, `/v1/companies`, `/v1/sites`, `/v1/users`, `/v1/meetings`,
//! `/v1/packages`: create, list, get, change, delete; and the meeting moments.
//!
//! Thin: parse the request, call the hierarchy, shape the answer.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::AppState;
use crate::changes::Moment;
use crate::domain::{EntityId, Kind};
use crate::tenancy::Principal;

/// Each collection and the kind it holds; the router and the OpenAPI document both read it.
pub const COLLECTIONS: [(&str, Kind); 7] = [
    ("resellers", Kind::Reseller),
    ("dealers", Kind::Dealer),
    ("companies", Kind::Company),
    ("sites", Kind::Site),
    ("users", Kind::User),
    ("meetings", Kind::Meeting),
    ("packages", Kind::Package),
];

pub fn routes() -> Router<AppState> {
    let mut router = Router::new();
    for (name, kind) in COLLECTIONS {
        router = router
            .route(
                &format!("/v1/{name}"),
                post(move |s, w, b| create(s, w, kind, b)).get(move |s, w, q| list(s, w, kind, q)),
            )
            .route(
                &format!("/v1/{name}/{{id}}"),
                get(move |s, w, p| read(s, w, kind, p))
                    .patch(move |s, w, p, b| change(s, w, kind, p, b))
                    .delete(move |s, w, p| remove(s, w, kind, p)),
            );
    }
    for (name, kind) in COLLECTIONS.into_iter().filter(|(_, k)| k.level().is_some()) {
        router = router
            .route(
                &format!("/v1/{name}/{{id}}/secret"),
                get(move |s, w, p| secret(s, w, kind, p)),
            )
            .route(
                &format!("/v1/{name}/{{id}}/secret/rotate"),
                post(move |s, w, p| rotate(s, w, kind, p)),
            );
    }
    router.route("/v1/meetings/{id}/{moment}", post(moment))
}

/// A request body declared as JSON: `Content-Type: application/json` (or a `+json` type
/// such as `application/merge-patch+json`, any parameters). Anything else, a missing type
/// included, answers 415 before the body is read.
pub struct JsonBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        if !declared.is_some_and(is_json) {
            let said = declared.map_or_else(
                || "no Content-Type".to_owned(),
                |t| format!("Content-Type `{t}`"),
            );
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "the body must be JSON sent with `Content-Type: application/json`, not {said}"
                ),
            )
            .into_response());
        }
        Bytes::from_request(req, state)
            .await
            .map(JsonBody)
            .map_err(IntoResponse::into_response)
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body, answering 400 with the parser's reason when it is not JSON.
pub fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid_json(
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_json(format!("the request body is not valid JSON: {e}")))
}

/// Parses a JSON body into a typed request: 400 when it is not JSON, 422 naming the field
/// when it does not fit.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    crate::domain::validate::from_json(json_body(body)?)
        .map_err(|e| ApiError::field("invalid_field", e))
}

async fn create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let body = json_body(&body)?;
    let applied = s.hierarchy.create(&who, kind, body).await?;
    s.metrics.applied(&applied);
    Ok((StatusCode::CREATED, Json(applied.view)))
}

#[derive(Debug, Deserialize)]
pub struct Page {
    pub after: Option<String>,
    pub limit: Option<u32>,
}

impl Page {
    pub const DEFAULT: u32 = 100;
    pub const MAX: u32 = 1000;

    pub fn parse(&self) -> Result<(Option<EntityId>, u32), ApiError> {
        let after = match &self.after {
            Some(a) => Some(EntityId::parse(a).map_err(|e| ApiError::query("after", e))?),
            None => None,
        };
        let limit = self.limit.unwrap_or(Self::DEFAULT);
        if limit == 0 || limit > Self::MAX {
            return Err(ApiError::query(
                "limit",
                format!("must be 1..={}", Self::MAX),
            ));
        }
        Ok((after, limit))
    }
}

/// `{"data": [...], "next_cursor": "<id>" | null}`: pass `next_cursor` as `after` for more.
pub fn page_body(data: Vec<Value>, limit: u32) -> Value {
    let next = if data.len() as u32 == limit {
        data.last().and_then(|v| v.get("id")).cloned()
    } else {
        None
    };
    serde_json::json!({ "data": data, "next_cursor": next })
}

async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (after, limit) = page.parse()?;
    let (data, next) = s.hierarchy.list(&who, kind, after.as_ref(), limit).await?;
    Ok(Json(
        serde_json::json!({ "data": data, "next_cursor": next }),
    ))
}

async fn read(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(s.hierarchy.get(&who, kind, &id).await?))
}

async fn change(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let body = json_body(&body)?;
    if let Some(field) = super::openapi::unknown_patch_field(kind, &body) {
        return Err(ApiError::field(
            "invalid_field",
            crate::domain::validate::FieldError::new(field, "unknown field"),
        ));
    }
    let applied = s.hierarchy.patch(&who, kind, &id, body).await?;
    s.metrics.applied(&applied);
    Ok(Json(applied.view))
}

async fn remove(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let applied = s.hierarchy.delete(&who, kind, &id).await?;
    s.metrics.applied(&applied);
    Ok(StatusCode::NO_CONTENT)
}

async fn moment(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((id, moment)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let Some(m) = Moment::parse(&moment) else {
        return Err(ApiError::not_found(format!(
            "no meeting moment `{moment}`; use one of {}",
            Moment::ALL.map(|(_, name, _)| name).join(", ")
        )));
    };
    let applied = s.hierarchy.moment(&who, &id, m).await?;
    s.metrics.applied(&applied);
    Ok(Json(applied.view))
}

/// `{"secret": "whsec_..."}`
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct SecretBody {
    pub secret: String,
}

/// Answers that carry a secret or a key are never to be stored by a cache.
pub const NO_STORE: [(header::HeaderName, &str); 1] = [(header::CACHE_CONTROL, "no-store")];

async fn secret(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let secret = s.hierarchy.secret(&who, kind, &id).await?;
    Ok((NO_STORE, Json(SecretBody { secret })))
}

async fn rotate(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    kind: Kind,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let secret = s.hierarchy.rotate_secret(&who, kind, &id).await?;
    Ok((NO_STORE, Json(SecretBody { secret })))
}
