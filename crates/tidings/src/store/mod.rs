//! Persistence behind one trait, so SQLite (embedded) and PostgreSQL (scale-out) pass the
//! same tests.
//!
//! The store owns durability: an API change, its event and its webhooks are written in one
//! [`Tx`] and become visible together at commit, or not at all (the transactional outbox).
//! It never decides who receives what; that is the domain's job.

mod sql;

use async_trait::async_trait;

use crate::domain::entities::Entity;
use crate::domain::{EntityId, EventType, Kind, Level, Millis};

pub use sql::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An event to record, with the subject's data as it is now (serialized JSON).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EntityId,
    pub event_type: EventType,
    pub subject_id: EntityId,
    pub data: String,
    pub created_at: Millis,
}

/// One webhook of an event: the receiving level and the URL snapshot. It is due at once.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: EntityId,
    pub level: Level,
    pub level_id: EntityId,
    pub url: String,
}

/// A webhook as stored, without its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: EntityId,
    pub event_id: EntityId,
    pub event_type: EventType,
    pub subject_id: EntityId,
    pub level: Level,
    pub level_id: EntityId,
    pub url: String,
    pub created_at: Millis,
    pub status: WebhookStatus,
    pub attempts: u32,
    pub due_at: Option<Millis>,
    /// The subject's data at the event (serialized JSON).
    pub data: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    Pending,
    Succeeded,
    Failed,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Pending => "pending",
            WebhookStatus::Succeeded => "succeeded",
            WebhookStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(WebhookStatus::Pending),
            "succeeded" => Ok(WebhookStatus::Succeeded),
            "failed" => Ok(WebhookStatus::Failed),
            other => Err(format!(
                "unknown webhook status `{other}` (pending, succeeded, failed)"
            )),
        }
    }
}

/// One recorded delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub number: u32,
    pub started_at: Millis,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The first 1 KiB of the response body.
    pub body: String,
}

/// Which webhooks to list. Every field narrows the list; `after` is the pagination cursor.
#[derive(Debug, Clone, Default)]
pub struct WebhookFilter {
    pub status: Option<WebhookStatus>,
    pub event_type: Option<EventType>,
    pub level_id: Option<EntityId>,
    pub subject_id: Option<EntityId>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub after: Option<EntityId>,
    pub limit: u32,
}

/// Counts for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Webhooks by event type and status.
    pub webhooks: Vec<(EventType, WebhookStatus, u64)>,
    /// Events by type.
    pub events: Vec<(EventType, u64)>,
}

/// The store: reads, the write transaction, and the delivery queue.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which database this is (`sqlite` or `postgres`), for logs and readiness.
    fn backend(&self) -> &'static str;

    /// A transaction for an API change; commit makes the change and its outbox rows visible.
    async fn write(&self) -> Result<Box<dyn Tx>>;

    /// A consistent read-only view for composing API answers.
    async fn read(&self) -> Result<Box<dyn Tx>>;

    /// Entities of one kind in id order, after the cursor.
    async fn list(&self, kind: Kind, after: Option<&EntityId>, limit: u32) -> Result<Vec<Entity>>;

    async fn webhooks(&self, filter: &WebhookFilter) -> Result<Vec<Webhook>>;

    async fn webhook(&self, id: &EntityId) -> Result<Option<(Webhook, Vec<Attempt>)>>;

    /// Checks the database answers (readiness).
    async fn ping(&self) -> Result<()>;

    async fn counts(&self) -> Result<Counts>;
}

/// One transaction. Dropping it without `commit` rolls it back.
#[async_trait]
pub trait Tx: Send {
    async fn get(&mut self, id: &EntityId) -> Result<Option<Entity>>;

    /// Inserts or replaces an entity and the references it makes.
    async fn put(&mut self, entity: &Entity, now: Millis) -> Result<()>;

    async fn delete(&mut self, id: &EntityId) -> Result<()>;

    /// Entities that refer to `id`, of `kind` if given, at most `limit`.
    async fn referrers(
        &mut self,
        id: &EntityId,
        kind: Option<Kind>,
        limit: u32,
    ) -> Result<Vec<Entity>>;

    /// Records an event and its webhooks (the outbox rows), all due now.
    async fn add_event(&mut self, event: &NewEvent, webhooks: &[NewWebhook]) -> Result<()>;

    async fn commit(self: Box<Self>) -> Result<()>;
}

/// Opens the store named by a database URL, creating and migrating it as needed.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(SqlStore::open(url).await?))
}
