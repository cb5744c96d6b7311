//! `/v1/webhooks`: what was sent where, and what the receivers answered.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::entities::{JsonBody, Page};
use super::error::ApiError;
use super::AppState;
use crate::domain::{payload, EntityId, EventType, Level, Millis};
use crate::store::{Attempt, RetryOutcome, Webhook, WebhookFilter, WebhookStatus};
use crate::tenancy::Principal;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", get(list))
        .route("/v1/webhooks/recover", post(recover))
        .route("/v1/webhooks/{id}", get(one))
        .route("/v1/webhooks/{id}/retry", post(retry))
}

/// A webhook as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: EntityId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub status: WebhookStatus,
    /// The receiving level.
    pub level: LevelRef,
    /// The entity the event is about.
    pub subject_id: EntityId,
    pub event_id: EntityId,
    /// The URL snapshot taken when the webhook was created.
    pub url: String,
    #[schema(value_type = String)]
    pub created: Millis,
    /// Attempts made so far.
    pub attempt_count: u32,
    /// When the next attempt is due, while pending.
    #[schema(value_type = Option<String>)]
    pub next_attempt_at: Option<Millis>,
    /// The body as sent (for the next attempt, or the last one).
    #[schema(value_type = Object)]
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LevelRef {
    #[serde(rename = "type")]
    pub level: Level,
    pub id: EntityId,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub number: u32,
    #[schema(value_type = String)]
    pub started_at: Millis,
    pub duration_ms: i64,
    /// The HTTP status received, if the receiver answered.
    pub status_code: Option<u16>,
    /// Why the attempt failed (transport error or unexpected status); absent on success.
    pub error: Option<String>,
    /// The first 1 KiB of the response body.
    pub body: String,
}

pub fn webhook_view(w: &Webhook, attempts: Option<&[Attempt]>) -> WebhookView {
    let attempt = if w.status == WebhookStatus::Pending {
        w.attempts + 1
    } else {
        w.attempts.max(1)
    };
    let body = payload::body(&w.id, w.created_at, attempt, w.event_type, &w.data);
    WebhookView {
        id: w.id.clone(),
        event_type: w.event_type,
        status: w.status,
        level: LevelRef {
            level: w.level,
            id: w.level_id.clone(),
        },
        subject_id: w.subject_id.clone(),
        event_id: w.event_id.clone(),
        url: w.url.clone(),
        created: w.created_at,
        attempt_count: w.attempts,
        next_attempt_at: w.due_at.filter(|_| w.status == WebhookStatus::Pending),
        payload: serde_json::from_str(&body).unwrap_or(Value::Null),
        attempts: attempts.map(|a| {
            a.iter()
                .map(|a| AttemptView {
                    number: a.number,
                    started_at: a.started_at,
                    duration_ms: a.duration_ms,
                    status_code: a.status_code,
                    error: a.error.clone(),
                    body: a.body.clone(),
                })
                .collect()
        }),
    }
}

/// The webhook list's query: filters, cursor and page size, as the API and the console take
/// them.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub level_id: Option<String>,
    pub subject_id: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub after: Option<String>,
    pub limit: Option<u32>,
}

impl ListQuery {
    /// The store filter, or the error naming the query field that is wrong.
    pub fn filter(&self) -> Result<WebhookFilter, ApiError> {
        let id = |field: &str, v: &Option<String>| -> Result<Option<EntityId>, ApiError> {
            v.as_deref()
                .map(|s| EntityId::parse(s).map_err(|e| ApiError::query(field, e)))
                .transpose()
        };
        let time = |field: &str, v: &Option<String>| -> Result<Option<Millis>, ApiError> {
            v.as_deref()
                .map(|s| Millis::parse_rfc3339(s).map_err(|e| ApiError::query(field, e)))
                .transpose()
        };
        let (after, limit) = Page {
            after: self.after.clone(),
            limit: self.limit,
        }
        .parse()?;
        Ok(WebhookFilter {
            status: self
                .status
                .as_deref()
                .map(WebhookStatus::parse)
                .transpose()
                .map_err(|e| ApiError::query("status", e))?,
            event_type: self
                .event_type
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e: String| ApiError::query("type", e))?,
            level_id: id("level_id", &self.level_id)?,
            subject_id: id("subject_id", &self.subject_id)?,
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            after,
            limit,
        })
    }
}

async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = q.filter()?;
    let rows = s.hierarchy.store().webhooks(&filter).await?;
    super::visible_page(
        &s,
        &who,
        rows,
        filter.limit,
        |w| (&w.id, &w.level_id),
        |w| serde_json::to_value(webhook_view(&w, None)).unwrap_or(Value::Null),
    )
    .await
}

/// The webhook `id` with its attempts, if the key can see it (its receiving level lies in
/// the key's subtree); "not found" otherwise, whether or not it exists.
async fn visible_webhook(
    s: &AppState,
    who: &Principal,
    id: &str,
) -> Result<(Webhook, Vec<Attempt>), ApiError> {
    let not_found = || ApiError::not_found(format!("webhook {id} not found"));
    let wid = EntityId::parse(id).map_err(|_| not_found())?;
    let (w, attempts) =
        s.hierarchy.store().webhook(&wid).await?.ok_or_else(|| {
            match past_retention(&wid, s.retention, s.hierarchy.now()) {
                Some(message) => ApiError::not_found(message),
                None => not_found(),
            }
        })?;
    if !s.hierarchy.sees_level(who, &w.level_id).await? {
        return Err(not_found());
    }
    Ok((w, attempts))
}

/// Why a webhook that is not found may be gone: its id says it was created longer ago than
/// the retention, so a finished one has been pruned.
fn past_retention(
    id: &EntityId,
    retention: Option<std::time::Duration>,
    now: Millis,
) -> Option<String> {
    let retention = retention?;
    let created = i64::from_str_radix(id.as_str().get(..12)?, 16).ok()?;
    let age = now.0 - created;
    (age > retention.as_millis() as i64).then(|| {
        format!(
            "webhook {id} not found: it was created {} ago, longer than the retention \
             (TIDINGS_RETENTION={}), so if it existed it was finished and has been pruned",
            humantime::format_duration(std::time::Duration::from_secs((age / 1000) as u64)),
            humantime::format_duration(retention)
        )
    })
}

async fn one(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<WebhookView>, ApiError> {
    let (w, attempts) = visible_webhook(&s, &who, &id).await?;
    Ok(Json(webhook_view(&w, Some(&attempts))))
}

async fn retry(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<WebhookView>), ApiError> {
    let not_found = || ApiError::not_found(format!("webhook {id} not found"));
    let wid = visible_webhook(&s, &who, &id).await?.0.id;
    s.hierarchy.may_change(&who).await?;
    match s.hierarchy.store().retry(&wid, s.hierarchy.now()).await? {
        RetryOutcome::NotFound => return Err(not_found()),
        RetryOutcome::InFlight => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "an attempt of this webhook is in flight; try again when it is recorded",
            ))
        }
        RetryOutcome::Queued => {}
    }
    s.hierarchy.wake_dispatcher();
    let (w, attempts) = s
        .hierarchy
        .store()
        .webhook(&wid)
        .await?
        .ok_or_else(not_found)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(webhook_view(&w, Some(&attempts))),
    ))
}

/// `POST /v1/webhooks/recover` body: which level, and failed (or disabled) webhooks created
/// since when.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    pub level_id: EntityId,
    #[schema(value_type = String)]
    pub since: Millis,
}

async fn recover(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: RecoverRequest = super::entities::parse_body(&body)?;
    if !s.hierarchy.sees_level(&who, &req.level_id).await? {
        return Err(ApiError::not_found(format!(
            "level {} not found",
            req.level_id
        )));
    }
    s.hierarchy.may_change(&who).await?;
    if !super::endpoints::enabled(&s, &req.level_id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "endpoint_disabled",
            format!(
                "the endpoint of level {} is disabled; enable it (PATCH its endpoint with {{\"enabled\": true}}, or set a new webhook_url) first",
                req.level_id
            ),
        ));
    }
    let n = s
        .hierarchy
        .store()
        .recover(&req.level_id, req.since, s.hierarchy.now())
        .await?;
    if n > 0 {
        s.hierarchy.wake_dispatcher();
    }
    tracing::info!(level = %req.level_id, since = %req.since.to_rfc3339(), count = n, "failed and disabled webhooks queued again");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "recovered": n })),
    ))
}
