//! Persistence behind one trait, so SQLite (embedded) and PostgreSQL (scale-out) pass the
//! same tests.
//!
//! The store owns durability: an API change, its event and its webhooks are written in one
//! [`Tx`] and become visible together at commit, or not at all (the transactional outbox).
//! It never decides who receives what; that is the domain's job.

mod backup;
mod change;
mod console;
mod endpoints;
mod exec;
mod keys;
mod levels;
mod notifications;
mod pg;
mod queue;
mod retention;
mod sql;
mod webhook_list;

use async_trait::async_trait;

use crate::delivery::secrets::SealedSecrets;
use crate::domain::endpoint::{Endpoint, SuccessRule};
use crate::domain::entities::Entity;
use crate::domain::{EntityId, EventType, Kind, Level, Millis};

pub use backup::backup_sqlite;
pub use console::{Bucket, BucketWidth, ConsoleStore, LastAttempt, QueueDepth};
pub use endpoints::{EndpointStore, Health};
pub use keys::{ApiKeyRecord, KeyStore};
pub use notifications::*;
pub use sql::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("SQLite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("commit failed: {0}")]
    Commit(String, Fault),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} was deleted while this change was being made")]
    Vanished(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("refused to write: {0}")]
    Refused(String),
    /// A change grouped with others was rolled back with its group, or gave up waiting for
    /// a lock the way grouped changes do: it has to run again alone
    /// ([`Store::write_alone`]); nothing of it was written.
    #[error("the change was rolled back with its group; run it again alone")]
    Again,
    #[error("the PostgreSQL URL is not valid: {0} (its options are libpq's: host, port, user, password, dbname, application_name, options, connect_timeout, ...)")]
    PostgresUrl(String),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error(
        "the SQLite file {0} is in use by another Tidings process: one instance per SQLite file \
         (several instances share a PostgreSQL database)"
    )]
    InUse(String),
    #[error("cannot open or lock the SQLite file {path}: {reason}")]
    File { path: String, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a store error means for the request that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The database cannot be reached (down, restarting, the network cut, no connection
    /// free in time): nothing was written; the same request may succeed shortly.
    Unavailable,
    /// The database has no room left (the disk, or `TIDINGS_SQLITE_MAX_MIB`): nothing was
    /// written; it succeeds once space is freed.
    Full,
    /// Anything else: a bug or a damaged database.
    Other,
}

impl StoreError {
    /// Whether the error is passing (unavailable, full) or ours.
    pub fn fault(&self) -> Fault {
        match self {
            StoreError::Database(e) => sqlx_fault(e),
            StoreError::Postgres(e) => pg::pg_fault(e),
            StoreError::Pool(e) => pg::pool_fault(e),
            StoreError::Sqlite(e) => sqlite_fault(e),
            StoreError::Commit(_, fault) => *fault,
            StoreError::Again => Fault::Unavailable,
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => sqlx_fault(e),
            _ => Fault::Other,
        }
    }
}

impl StoreError {
    /// Whether a statement broke a foreign key (PostgreSQL's `foreign_key_violation`).
    pub(crate) fn is_foreign_key_violation(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => {
                db.code().as_deref() == Some("23503")
            }
            StoreError::Postgres(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION)
            }
            _ => false,
        }
    }
}

pub(crate) fn sqlx_fault(e: &sqlx::Error) -> Fault {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        // A connection cut in the middle of a message.
        | sqlx::Error::Protocol(_) => Fault::Unavailable,
        sqlx::Error::Database(db) => code_fault(&db.code().unwrap_or_default()),
        _ => Fault::Other,
    }
}

/// What a database's error code means.
pub(crate) fn code_fault(code: &str) -> Fault {
    match code {
        // PostgreSQL: disk_full; SQLite: SQLITE_FULL.
        "53100" | "13" => Fault::Full,
        // connection_exception, insufficient_resources (too many connections, out of
        // memory), the server shutting down or starting up.
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
            Fault::Unavailable
        }
        _ => Fault::Other,
    }
}

pub(crate) fn sqlite_fault(e: &rusqlite::Error) -> Fault {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => Fault::Full,
        _ => Fault::Other,
    }
}

/// How many connections PostgreSQL's write transactions have by default (see
/// docs/scaling.md: a few connections busy with pipelined statements do as much as many,
/// with less waiting on each other in the server).
pub const WRITE_CONNECTIONS: usize = 8;

/// How the store waits and grows.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long to wait for a database connection before giving up (PostgreSQL); `None`:
    /// 30 s.
    pub acquire_timeout: Option<std::time::Duration>,
    /// How many connections PostgreSQL's write transactions have (at least 1).
    pub write_connections: usize,
    /// SQLite's `max_page_count` on the writing connections.
    pub sqlite_max_pages: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            acquire_timeout: None,
            write_connections: WRITE_CONNECTIONS,
            sqlite_max_pages: None,
        }
    }
}

/// An event to record, with the subject's data as it is now (serialized JSON).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EntityId,
    pub event_type: EventType,
    pub subject_id: EntityId,
    pub data: String,
    pub created_at: Millis,
}

/// One webhook of an event: the receiving level and the URL snapshot. It is due at once,
/// unless it is claimed as it is written (a [`Lease`]).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: EntityId,
    pub level: Level,
    pub level_id: EntityId,
    pub url: String,
    /// Attempted only after older webhooks to the level about the same subject finished.
    pub ordered: bool,
    /// Written with status `disabled` (the level's endpoint is disabled): never sent until
    /// recovered.
    pub disabled: bool,
}

/// A claim taken as webhooks are written: they go straight to `owner`'s dispatcher, and are
/// due (for anyone) only once the lease ends without a recorded attempt, as after a claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub owner: String,
    pub until: Millis,
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
    /// Kept while the level's endpoint is disabled; sent by `recover` once it is enabled.
    Disabled,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Pending => "pending",
            WebhookStatus::Succeeded => "succeeded",
            WebhookStatus::Failed => "failed",
            WebhookStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(WebhookStatus::Pending),
            "succeeded" => Ok(WebhookStatus::Succeeded),
            "failed" => Ok(WebhookStatus::Failed),
            "disabled" => Ok(WebhookStatus::Disabled),
            other => Err(format!(
                "unknown webhook status `{other}` (pending, succeeded, failed, disabled)"
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

/// A webhook claimed for an attempt, with what the attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub webhook: Webhook,
    /// The receiving level's sealed signing secrets (`None` if the level has none stored).
    pub secrets: Option<SealedSecrets>,
    /// Which answers count as success for the receiving level.
    pub success: SuccessRule,
}

/// What happens to a webhook after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    /// Failed; the next attempt is due then.
    RetryAt(Millis),
    /// Failed its last attempt: the webhook is `failed` and a notification is queued.
    Failed,
    /// The receiver answered `410 Gone`: the webhook is `disabled`, and so is its level's
    /// endpoint (its pending webhooks too), and its notification contact is e-mailed.
    Gone,
}

/// One finished attempt to record.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub webhook_id: EntityId,
    pub attempt: Attempt,
    pub next: Next,
}

/// What a manual retry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    Queued,
    NotFound,
    /// An attempt is in flight right now; retrying would send it twice.
    InFlight,
}

/// The delivery queue at a glance (for metrics).
#[derive(Debug, Clone, Default)]
pub struct QueueStats {
    /// Webhooks waiting for an attempt (due now or later, or in flight).
    pub pending: u64,
    /// The due time of the oldest webhook that is due and not claimed.
    pub oldest_due: Option<Millis>,
}

/// What one pruning batch removed (rows by kind), and where the next batch starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub webhooks: u64,
    pub attempts: u64,
    pub emails: u64,
    /// The rows that tied failed webhooks to pruned e-mails.
    pub notifications: u64,
    /// The last event looked at, when the batch was full; `None`: the pass is over.
    pub next: Option<EntityId>,
}

impl Pruned {
    /// Rows by kind, for metrics and logs.
    pub fn by_kind(&self) -> [(&'static str, u64); 5] {
        [
            ("event", self.events),
            ("webhook", self.webhooks),
            ("attempt", self.attempts),
            ("email", self.emails),
            ("notification", self.notifications),
        ]
    }
}

/// The store: reads, the write transaction, and the delivery queue.
#[async_trait]
pub trait Store:
    NotificationStore + KeyStore + EndpointStore + ConsoleStore + Send + Sync + 'static
{
    /// Which database this is (`sqlite` or `postgres`), for logs and readiness.
    fn backend(&self) -> &'static str;

    /// A transaction for an API change; commit makes the change and its outbox rows visible.
    /// It may be grouped with other changes (on PostgreSQL, on a lane chosen for `key`, the entity
    /// changed, when known) and then fail with [`StoreError::Again`], having written
    /// nothing: the change has to run again on [`Store::write_alone`].
    async fn write(&self, key: Option<&str>) -> Result<Box<dyn Tx>>;

    /// A transaction for an API change that never fails with [`StoreError::Again`].
    async fn write_alone(&self) -> Result<Box<dyn Tx>>;

    /// A consistent read-only view for composing API answers.
    async fn read(&self) -> Result<Box<dyn Tx>>;

    /// Entities of one kind in id order, after the cursor.
    async fn list(&self, kind: Kind, after: Option<&EntityId>, limit: u32) -> Result<Vec<Entity>>;

    /// Webhooks matching `filter`, oldest first; `filter.after` is the cursor, read as
    /// "newer than this id".
    async fn webhooks(&self, filter: &WebhookFilter) -> Result<Vec<Webhook>>;

    async fn webhook(&self, id: &EntityId) -> Result<Option<(Webhook, Vec<Attempt>)>>;

    /// Checks the database answers (readiness).
    async fn ping(&self) -> Result<()>;

    async fn counts(&self) -> Result<Counts>;

    // --- the delivery queue ---

    /// Claims up to `limit` due webhooks for `owner` until `lease_until`; a claim whose lease
    /// ends without a recorded attempt (a crashed instance) becomes due again by itself.
    async fn claim_due(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<Claimed>>;

    /// Wakes `wake` whenever another instance queues work (PostgreSQL LISTEN/NOTIFY); a
    /// no-op where one process owns the store.
    fn listen_for_work(&self, wake: std::sync::Arc<tokio::sync::Notify>);

    /// When the earliest waiting webhook is due (claimed ones count at their lease's end).
    async fn next_due_at(&self) -> Result<Option<Millis>>;

    /// Records finished attempts of webhooks claimed by `owner`, in one transaction, and
    /// returns the positions in `results` it recorded (a webhook whose claim `owner` lost is
    /// left alone).
    async fn record(&self, owner: &str, results: &[Recorded], now: Millis) -> Result<Vec<usize>>;

    /// Writes what recording keeps waiting in memory (on PostgreSQL, endpoint health is
    /// written a moment after the attempts): the recorder calls it when it stops.
    async fn flush_recorded(&self);

    /// Gives claimed webhooks back without an attempt, due at `due_at`.
    async fn release(&self, owner: &str, ids: &[EntityId], due_at: Millis) -> Result<()>;

    /// Ends every claim at once (single-instance stores at start: the old process is gone).
    async fn release_all(&self, now: Millis) -> Result<u64>;

    /// Makes one webhook due now (a failed one gets one more attempt).
    async fn retry(&self, id: &EntityId, now: Millis) -> Result<RetryOutcome>;

    /// Makes every failed or disabled webhook of a level created since `since` due now;
    /// returns how many.
    async fn recover(&self, level_id: &EntityId, since: Millis, now: Millis) -> Result<u64>;

    async fn queue_stats(&self, now: Millis) -> Result<QueueStats>;

    // --- retention ---

    /// One short transaction of pruning: sent and `no_recipient` e-mails last changed before
    /// `cutoff`; then, of up to `limit` events created before `cutoff` (in id order, after
    /// `after`), the finished webhooks last changed before it that no e-mail still covers,
    /// with their attempts, and the events left without webhooks. Pending webhooks, queued
    /// e-mails and what those cover are never removed.
    async fn prune(&self, cutoff: Millis, after: Option<&EntityId>, limit: u32) -> Result<Pruned>;

    /// The store's size on disk in bytes (SQLite: the database file and its WAL;
    /// PostgreSQL: the database).
    async fn size_on_disk(&self) -> Result<u64>;

    // --- signing secrets ---

    async fn secrets(&self, level_id: &EntityId) -> Result<Option<SealedSecrets>>;

    /// Stores `current` as the level's secret; the old one (if any) keeps signing until
    /// `previous_until`.
    async fn rotate_secret(
        &self,
        level_id: &EntityId,
        current: &str,
        previous_until: Millis,
        now: Millis,
    ) -> Result<()>;
}

/// One transaction. Dropping it without `commit` rolls it back.
///
/// A write may be sent with the transaction's next statement rather than at once (on
/// PostgreSQL the rows of [`Tx::put`] and [`Tx::add_event`] go out with the `COMMIT`, in one
/// round trip): its error then comes from a later call, at the latest from `commit`, and the
/// transaction as a whole fails.
///
/// On SQLite a write transaction holds the single writer until it ends, so between
/// [`Store::write`] and `commit` its user awaits nothing but this transaction's own calls.
#[async_trait]
pub trait Tx: Send {
    /// Reads an entity, as the database holds it now, and with it (in the same query) what
    /// it refers to and the levels above: the reads a change or a view makes next. Takes no
    /// lock: an entity that a change refers to cannot be deleted, because [`Tx::put`]
    /// guards the references it writes.
    async fn get(&mut self, id: &EntityId) -> Result<Option<Entity>>;

    /// Reads an entity that this transaction will change or delete; concurrent changes of
    /// it wait for this transaction (no lost updates).
    async fn get_for_change(&mut self, id: &EntityId) -> Result<Option<Entity>>;

    /// Inserts or replaces an entity and the references it makes. A reference to an entity
    /// that a concurrent change deleted fails with [`StoreError::Vanished`]; the entities it
    /// refers to cannot be deleted until this transaction ends.
    async fn put(&mut self, entity: &Entity, now: Millis) -> Result<()>;

    async fn delete(&mut self, id: &EntityId) -> Result<()>;

    /// Entities that refer to `id`, of `kind` if given, at most `limit`.
    async fn referrers(
        &mut self,
        id: &EntityId,
        kind: Option<Kind>,
        limit: u32,
    ) -> Result<Vec<Entity>>;

    /// Records an event and its webhooks (the outbox rows), all due now; or, with a `lease`,
    /// claimed by its owner until it ends, and returned as claimed (with the levels' secrets),
    /// in `webhooks`' order. Without a lease it returns nothing. Disabled webhooks are
    /// written `disabled` and never claimed; an ordered webhook behind an unfinished older
    /// one to its level about the subject is written due, not claimed. Each webhook's id is
    /// made in the event's millisecond (its first 12 hex digits are the event id's): pruning
    /// finds an event's webhooks by them. Anything else is refused.
    async fn add_event(
        &mut self,
        event: &NewEvent,
        webhooks: &[NewWebhook],
        lease: Option<&Lease>,
    ) -> Result<Vec<Claimed>>;

    /// The endpoint settings of these levels (levels without stored settings are absent).
    async fn endpoints(&mut self, level_ids: &[&EntityId]) -> Result<Vec<(EntityId, Endpoint)>>;

    /// Enables a level's endpoint again (its `webhook_url` changed); true if it was disabled.
    async fn enable_endpoint(&mut self, level_id: &EntityId, now: Millis) -> Result<bool>;

    /// Stores a new level's sealed signing secret.
    async fn put_secret(&mut self, level_id: &EntityId, sealed: &str, now: Millis) -> Result<()>;

    async fn commit(self: Box<Self>) -> Result<()>;
}

/// A hot statement that must look its rows up by key on PostgreSQL whatever the tables'
/// statistics: for the test that checks its plan.
#[doc(hidden)]
pub struct HotStatement {
    pub sql: String,
    /// Arguments to `EXECUTE` it with.
    pub args: String,
    /// What its transaction begins with.
    pub begin: &'static str,
    /// Whether it must find every row through an index condition; otherwise it must only
    /// not read a table by a sequential scan, nor hash one.
    pub by_index_condition: bool,
}

/// The hot statements (see [`HotStatement`]).
#[doc(hidden)]
pub fn postgres_key_lookups() -> Vec<HotStatement> {
    // A change's reads. On small tables the entity read's generic plan reads the tables it
    // joins (entity_refs, endpoints, level_secrets) whole through an index; the next
    // `ANALYZE` of a grown table replaces such a plan. Plain index scans stay on for changes:
    // some of their reads want an index's order (a level's first referrers).
    let mut statements: Vec<HotStatement> = change::key_lookups()
        .into_iter()
        .map(|(sql, args)| HotStatement {
            sql,
            args: args.to_owned(),
            begin: sql::BEGIN_BY_KEY,
            by_index_condition: false,
        })
        .collect();
    // A recorded batch's update, of a few webhooks, of three padded to four, and of a
    // statement's most.
    for (n, real) in [(2, 2), (4, 3), (64, 64)] {
        let rows = (0..n).map(|i| {
            if i < real {
                format!("'w{i}', 'succeeded', 1, NULL")
            } else {
                "NULL, NULL, NULL, NULL".to_owned()
            }
        });
        statements.push(HotStatement {
            sql: queue::record_sql(n),
            args: format!("(0, {}, 'owner')", rows.collect::<Vec<_>>().join(", ")),
            begin: queue::RECORD_BEGIN,
            by_index_condition: true,
        });
    }
    statements
}

/// Opens the store named by a database URL, creating and migrating it as needed.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>> {
    open_with(url, &StoreOptions::default()).await
}

/// [`open`] with options.
pub async fn open_with(url: &str, options: &StoreOptions) -> Result<std::sync::Arc<dyn Store>> {
    Ok(std::sync::Arc::new(
        SqlStore::open_with(url, options).await?,
    ))
}
