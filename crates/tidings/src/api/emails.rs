//! `/v1/emails`: the failure e-mails, queued, sent, or recorded as having no recipient.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::entities::Page;
use super::error::ApiError;
use super::AppState;
use crate::domain::{EntityId, Millis};
use crate::store::{Email, EmailFilter, EmailStatus};
use crate::tenancy::Principal;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/emails", get(list))
}

/// A failure e-mail as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmailView {
    pub id: EntityId,
    /// The level that owns the failed URL.
    pub level_id: EntityId,
    pub url: String,
    /// The address it goes (or went) to; null while unknown or when no level has a
    /// notification contact.
    pub recipient: Option<String>,
    pub status: EmailStatus,
    pub subject: String,
    /// The failed webhooks it covers (more than one for a digest).
    pub webhook_ids: Vec<EntityId>,
    /// SMTP send attempts so far.
    pub attempts: u32,
    /// The last SMTP error, if a send failed.
    pub last_error: Option<String>,
    #[schema(value_type = String)]
    pub created: Millis,
    /// When the next send attempt is due, while queued.
    #[schema(value_type = Option<String>)]
    pub next_attempt_at: Option<Millis>,
    #[schema(value_type = Option<String>)]
    pub sent_at: Option<Millis>,
    /// On an e-mail saying the level's endpoint was disabled (it covers no webhooks): why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
}

impl From<Email> for EmailView {
    fn from(e: Email) -> Self {
        EmailView {
            id: e.id,
            level_id: e.level_id,
            url: e.url,
            recipient: e.recipient,
            status: e.status,
            subject: e.subject,
            webhook_ids: e.webhook_ids,
            attempts: e.attempts,
            last_error: e.last_error,
            created: e.created_at,
            next_attempt_at: e.due_at,
            sent_at: e.sent_at,
            disabled_reason: e.disabled_reason,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    level_id: Option<String>,
    status: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
}

async fn list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let (after, limit) = Page {
        after: q.after,
        limit: q.limit,
    }
    .parse()?;
    let filter = EmailFilter {
        level_id: q
            .level_id
            .as_deref()
            .map(EntityId::parse)
            .transpose()
            .map_err(|e| ApiError::query("level_id", e))?,
        status: q
            .status
            .as_deref()
            .map(EmailStatus::parse)
            .transpose()
            .map_err(|e| ApiError::query("status", e))?,
        after,
        limit,
    };
    let rows = s.hierarchy.store().emails(&filter).await?;
    super::visible_page(
        &s,
        &who,
        rows,
        limit,
        |e| (&e.id, &e.level_id),
        |e| serde_json::to_value(EmailView::from(e)).unwrap_or(Value::Null),
    )
    .await
}
