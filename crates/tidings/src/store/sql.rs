//! The store on SQLite or PostgreSQL through sqlx's `Any` driver: one implementation, the
//! same SQL for both wherever the dialects agree, and the backend named where they differ.
//!
//! SQLite allows one writer at a time, so on SQLite all writes go through a pool of one
//! connection (no `SQLITE_BUSY` between our own writers) while reads use a pool of several
//! (WAL lets them run beside the writer).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Row, Transaction};

use super::{
    Attempt, Claimed, Counts, NewEvent, NewWebhook, Next, QueueStats, Recorded, Result,
    RetryOutcome, Store, StoreError, Tx, Webhook, WebhookFilter, WebhookStatus,
};
use crate::delivery::secrets::SealedSecrets;
use crate::domain::entities::Entity;
use crate::domain::{EntityId, EventType, Kind, Level, Millis};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The clause that lets concurrent claimers pass over each other's rows: PostgreSQL
    /// instances share a queue; SQLite has one process and one writer, so it needs none.
    pub(super) fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

pub struct SqlStore {
    pub(super) backend: Backend,
    /// The database URL, for the PostgreSQL listener connection.
    url: String,
    /// On SQLite a pool of one connection: the single writer.
    pub(super) writer: AnyPool,
    pub(super) reader: AnyPool,
}

impl SqlStore {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let store = if url.starts_with("sqlite:") {
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            let writer = sqlite_pool(1).connect(&url).await?;
            SQLITE_MIGRATIONS.run(&writer).await?;
            let reader = sqlite_pool(4).connect(&url).await?;
            SqlStore {
                backend: Backend::Sqlite,
                url,
                writer,
                reader,
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .connect(url)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            SqlStore {
                backend: Backend::Postgres,
                url: url.to_owned(),
                writer: pool.clone(),
                reader: pool,
            }
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        Ok(store)
    }
}

fn sqlite_pool(size: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    // With WAL, NORMAL keeps every committed transaction across a process crash;
                    // only an OS crash or power loss may drop the last commits.
                    "PRAGMA synchronous = NORMAL",
                    "PRAGMA busy_timeout = 5000",
                    "PRAGMA foreign_keys = ON",
                ] {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn entity_from_row(row: &AnyRow) -> Result<Entity> {
    let doc: String = row.try_get("doc")?;
    serde_json::from_str(&doc).map_err(|e| corrupt(format!("entity: {e}")))
}

fn id_col(row: &AnyRow, col: &str) -> Result<EntityId> {
    let s: String = row.try_get(col)?;
    EntityId::parse(&s).map_err(corrupt)
}

const WEBHOOK_COLUMNS: &str =
    "w.id, w.event_id, w.type, w.subject_id, w.level, w.level_id, w.url, w.created_at, \
     w.status, w.attempts, w.due_at, e.data";

fn webhook_from_row(row: &AnyRow) -> Result<Webhook> {
    let event_type: String = row.try_get("type")?;
    let level: String = row.try_get("level")?;
    let status: String = row.try_get("status")?;
    Ok(Webhook {
        id: id_col(row, "id")?,
        event_id: id_col(row, "event_id")?,
        event_type: EventType::from_str(&event_type).map_err(corrupt)?,
        subject_id: id_col(row, "subject_id")?,
        level: Level::from_str(&level).map_err(corrupt)?,
        level_id: id_col(row, "level_id")?,
        url: row.try_get("url")?,
        created_at: Millis(row.try_get("created_at")?),
        status: WebhookStatus::parse(&status).map_err(corrupt)?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        due_at: row.try_get::<Option<i64>, _>("due_at")?.map(Millis),
        data: row.try_get("data")?,
    })
}

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    async fn write(&self) -> Result<Box<dyn Tx>> {
        // SQLite has one writer, so reads inside a write transaction are stable already.
        // PostgreSQL runs writers side by side: rows read as references are share-locked (a
        // parent cannot be deleted under a new child), rows about to change are locked.
        let locks = match self.backend {
            Backend::Sqlite => RowLocks::NONE,
            Backend::Postgres => RowLocks {
                reference: " FOR SHARE",
                change: " FOR UPDATE",
            },
        };
        let signal_work = self.backend == Backend::Postgres;
        Ok(Box::new(SqlTx::new(
            self.writer.begin().await?,
            locks,
            signal_work,
        )))
    }

    async fn read(&self) -> Result<Box<dyn Tx>> {
        Ok(Box::new(SqlTx::new(
            self.reader.begin().await?,
            RowLocks::NONE,
            false,
        )))
    }

    async fn list(&self, kind: Kind, after: Option<&EntityId>, limit: u32) -> Result<Vec<Entity>> {
        let rows = sqlx::query(
            "SELECT doc FROM entities WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(kind.as_str())
        .bind(after.map_or("", EntityId::as_str))
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(entity_from_row).collect()
    }

    async fn webhooks(&self, f: &WebhookFilter) -> Result<Vec<Webhook>> {
        let mut sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w JOIN events e ON e.id = w.event_id WHERE w.id > $1");
        let mut args: Vec<Arg> = vec![Arg::Text(
            f.after.as_ref().map_or(String::new(), |a| a.to_string()),
        )];
        let mut push = |clause: &str, arg: Arg| {
            args.push(arg);
            sql.push_str(&format!(" AND {clause} ${}", args.len()));
        };
        if let Some(s) = f.status {
            push("w.status =", Arg::Text(s.as_str().into()));
        }
        if let Some(t) = f.event_type {
            push("w.type =", Arg::Text(t.as_str().into()));
        }
        if let Some(l) = &f.level_id {
            push("w.level_id =", Arg::Text(l.to_string()));
        }
        if let Some(s) = &f.subject_id {
            push("w.subject_id =", Arg::Text(s.to_string()));
        }
        if let Some(t) = f.since {
            push("w.created_at >=", Arg::Int(t.0));
        }
        if let Some(t) = f.until {
            push("w.created_at <", Arg::Int(t.0));
        }
        args.push(Arg::Int(f.limit as i64));
        sql.push_str(&format!(" ORDER BY w.id LIMIT ${}", args.len()));
        let mut q = sqlx::query(&sql);
        for a in args {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.reader).await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn webhook(&self, id: &EntityId) -> Result<Option<(Webhook, Vec<Attempt>)>> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks w JOIN events e ON e.id = w.event_id WHERE w.id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
        else {
            return Ok(None);
        };
        let webhook = webhook_from_row(&row)?;
        let rows = sqlx::query(
            "SELECT number, started_at, duration_ms, status_code, error, body FROM attempts \
             WHERE webhook_id = $1 ORDER BY number",
        )
        .bind(id.as_str())
        .fetch_all(&self.reader)
        .await?;
        let attempts = rows
            .iter()
            .map(|r| {
                Ok(Attempt {
                    number: r.try_get::<i64, _>("number")? as u32,
                    started_at: Millis(r.try_get("started_at")?),
                    duration_ms: r.try_get("duration_ms")?,
                    status_code: r
                        .try_get::<Option<i64>, _>("status_code")?
                        .map(|c| c as u16),
                    error: r.try_get("error")?,
                    body: r.try_get("body")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some((webhook, attempts)))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn counts(&self) -> Result<Counts> {
        let mut counts = Counts::default();
        let rows =
            sqlx::query("SELECT type, status, COUNT(*) AS n FROM webhooks GROUP BY type, status")
                .fetch_all(&self.reader)
                .await?;
        for r in rows {
            let t: String = r.try_get("type")?;
            let s: String = r.try_get("status")?;
            let n: i64 = r.try_get("n")?;
            counts.webhooks.push((
                EventType::from_str(&t).map_err(corrupt)?,
                WebhookStatus::parse(&s).map_err(corrupt)?,
                n as u64,
            ));
        }
        let rows = sqlx::query("SELECT type, COUNT(*) AS n FROM events GROUP BY type")
            .fetch_all(&self.reader)
            .await?;
        for r in rows {
            let t: String = r.try_get("type")?;
            let n: i64 = r.try_get("n")?;
            counts
                .events
                .push((EventType::from_str(&t).map_err(corrupt)?, n as u64));
        }
        Ok(counts)
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<Claimed>> {
        self.claim(owner, now, lease_until, limit).await
    }

    fn listen_for_work(&self, wake: Arc<Notify>) {
        if self.backend != Backend::Postgres {
            return; // one process per SQLite file: in-process wake-ups are enough
        }
        let url = self.url.clone();
        tokio::spawn(async move {
            loop {
                match PgListener::connect(&url).await {
                    Ok(mut listener) => {
                        if let Err(e) = listener.listen(WORK_CHANNEL).await {
                            tracing::warn!(error = %e, "LISTEN failed; retrying in 1s");
                        } else {
                            tracing::debug!("listening for work queued by other instances");
                            while listener.recv().await.is_ok() {
                                wake.notify_one();
                            }
                            tracing::warn!("lost the LISTEN connection; reconnecting");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open the LISTEN connection; retrying in 1s")
                    }
                }
                // Whatever was queued meanwhile is found by the next claim.
                wake.notify_one();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
    }

    async fn next_due_at(&self) -> Result<Option<Millis>> {
        self.earliest_due(Queue::Webhooks).await
    }

    async fn record(&self, owner: &str, results: &[Recorded], now: Millis) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        let mut kept: Vec<&Recorded> = Vec::with_capacity(results.len());
        for r in results {
            let (status, due_at) = match r.next {
                Next::Succeeded => (WebhookStatus::Succeeded, None),
                Next::RetryAt(t) => (WebhookStatus::Pending, Some(t.0)),
                Next::Failed => (WebhookStatus::Failed, None),
            };
            let updated = sqlx::query(
                "UPDATE webhooks SET status = $1, attempts = $2, due_at = $3, claimed_by = NULL, updated_at = $4 \
                 WHERE id = $5 AND claimed_by = $6",
            )
            .bind(status.as_str())
            .bind(r.attempt.number as i64)
            .bind(due_at)
            .bind(now.0)
            .bind(r.webhook_id.as_str())
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                tracing::warn!(webhook = %r.webhook_id, "claim was lost before the attempt was recorded (lease ended); another attempt may follow");
                continue;
            }
            kept.push(r);
            if r.next == Next::Failed {
                sqlx::query(
                    "INSERT INTO notifications (id, webhook_id, level_id, url, status, created_at, updated_at) \
                     SELECT $1, id, level_id, url, 'queued', $2, $2 FROM webhooks WHERE id = $3 \
                     ON CONFLICT (webhook_id) DO NOTHING",
                )
                .bind(EntityId::generate(now).as_str())
                .bind(now.0)
                .bind(r.webhook_id.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        // The attempts themselves, many rows a statement; each row numbers its own
        // parameters, so they appear in ascending order.
        for chunk in kept.chunks(100) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p: Vec<String> = (1..=7).map(|k| format!("${}", i * 7 + k)).collect();
                    format!("({})", p.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO attempts (webhook_id, number, started_at, duration_ms, status_code, error, body) \
                 VALUES {} ON CONFLICT (webhook_id, number) DO NOTHING",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.webhook_id.as_str())
                    .bind(r.attempt.number as i64)
                    .bind(r.attempt.started_at.0)
                    .bind(r.attempt.duration_ms)
                    .bind(r.attempt.status_code.map(i64::from))
                    .bind(r.attempt.error.as_deref())
                    .bind(r.attempt.body.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release(&self, owner: &str, ids: &[EntityId], due_at: Millis) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        for id in ids {
            sqlx::query("UPDATE webhooks SET due_at = $1, claimed_by = NULL WHERE id = $2 AND claimed_by = $3")
                .bind(due_at.0)
                .bind(id.as_str())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release_all(&self, now: Millis) -> Result<u64> {
        self.end_all_claims(Queue::Webhooks, now).await
    }

    async fn retry(&self, id: &EntityId, now: Millis) -> Result<RetryOutcome> {
        let mut tx = self.writer.begin().await?;
        let Some(row) = sqlx::query("SELECT claimed_by FROM webhooks WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(RetryOutcome::NotFound);
        };
        if row.try_get::<Option<String>, _>("claimed_by")?.is_some() {
            return Ok(RetryOutcome::InFlight);
        }
        sqlx::query(
            "UPDATE webhooks SET status = 'pending', due_at = $1, updated_at = $1 WHERE id = $2",
        )
        .bind(now.0)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RetryOutcome::Queued)
    }

    async fn recover(&self, level_id: &EntityId, since: Millis, now: Millis) -> Result<u64> {
        let n = sqlx::query(
            "UPDATE webhooks SET status = 'pending', due_at = $1, updated_at = $1 \
             WHERE level_id = $2 AND status = 'failed' AND created_at >= $3",
        )
        .bind(now.0)
        .bind(level_id.as_str())
        .bind(since.0)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n)
    }

    async fn queue_stats(&self, now: Millis) -> Result<QueueStats> {
        let pending: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM webhooks WHERE due_at IS NOT NULL")
                .fetch_one(&self.reader)
                .await?
                .try_get("n")?;
        let oldest: Option<i64> = sqlx::query(
            "SELECT MIN(due_at) AS t FROM webhooks WHERE due_at IS NOT NULL AND claimed_by IS NULL AND due_at <= $1",
        )
        .bind(now.0)
        .fetch_one(&self.reader)
        .await?
        .try_get("t")?;
        Ok(QueueStats {
            pending: pending as u64,
            oldest_due: oldest.map(Millis),
        })
    }

    async fn secrets(&self, level_id: &EntityId) -> Result<Option<SealedSecrets>> {
        let row = sqlx::query(
            "SELECT current AS s_current, previous AS s_previous, previous_until AS s_previous_until \
             FROM level_secrets WHERE level_id = $1",
        )
        .bind(level_id.as_str())
        .fetch_optional(&self.reader)
        .await?;
        match row {
            Some(r) => secrets_from_row(&r),
            None => Ok(None),
        }
    }

    async fn rotate_secret(
        &self,
        level_id: &EntityId,
        current: &str,
        previous_until: Millis,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO level_secrets (level_id, current, previous, previous_until, updated_at) \
             VALUES ($1, $2, NULL, NULL, $3) ON CONFLICT (level_id) DO UPDATE SET \
             previous = level_secrets.current, previous_until = $4, current = excluded.current, \
             updated_at = excluded.updated_at",
        )
        .bind(level_id.as_str())
        .bind(current)
        .bind(now.0)
        .bind(previous_until.0)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

/// The two leased queues in the store: webhooks to deliver, e-mails to send. Both keep a
/// `due_at` (NULL once done) and a `claimed_by`.
#[derive(Clone, Copy)]
pub(super) enum Queue {
    Webhooks,
    Emails,
}

impl Queue {
    fn table(self) -> &'static str {
        match self {
            Queue::Webhooks => "webhooks",
            Queue::Emails => "emails",
        }
    }
}

impl SqlStore {
    /// When the earliest waiting row of `queue` is due (claimed rows count at their lease's end).
    pub(super) async fn earliest_due(&self, queue: Queue) -> Result<Option<Millis>> {
        let sql = format!(
            "SELECT MIN(due_at) AS next FROM {} WHERE due_at IS NOT NULL",
            queue.table()
        );
        let row = sqlx::query(&sql).fetch_one(&self.reader).await?;
        Ok(row.try_get::<Option<i64>, _>("next")?.map(Millis))
    }

    /// Ends every claim on `queue` at once, making those rows due at `now`.
    pub(super) async fn end_all_claims(&self, queue: Queue, now: Millis) -> Result<u64> {
        let sql = format!(
            "UPDATE {} SET due_at = $1, claimed_by = NULL WHERE claimed_by IS NOT NULL",
            queue.table()
        );
        Ok(sqlx::query(&sql)
            .bind(now.0)
            .execute(&self.writer)
            .await?
            .rows_affected())
    }
}

/// `$1, $2, ...` for `n` values starting at `$first`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn secrets_from_row(row: &AnyRow) -> Result<Option<SealedSecrets>> {
    let current: Option<String> = row.try_get("s_current")?;
    let previous: Option<String> = row.try_get("s_previous")?;
    let until: Option<i64> = row.try_get("s_previous_until")?;
    Ok(current.map(|current| SealedSecrets {
        current,
        previous: previous.zip(until.map(Millis)),
    }))
}

impl SqlStore {
    pub(crate) async fn claim(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<Claimed>> {
        let skip_locked = self.backend.skip_locked();
        let sql = format!(
            "UPDATE webhooks SET due_at = $1, claimed_by = $2 WHERE id IN \
             (SELECT id FROM webhooks WHERE due_at <= $3 ORDER BY due_at LIMIT $4{skip_locked}) RETURNING id"
        );
        let mut tx = self.writer.begin().await?;
        let ids: Vec<String> = sqlx::query(&sql)
            .bind(lease_until.0)
            .bind(owner)
            .bind(now.0)
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(vec![]);
        }
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS}, s.current AS s_current, s.previous AS s_previous, \
             s.previous_until AS s_previous_until FROM webhooks w JOIN events e ON e.id = w.event_id \
             LEFT JOIN level_secrets s ON s.level_id = w.level_id WHERE w.id IN ({})",
            placeholders(1, ids.len())
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(id.as_str());
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    webhook: webhook_from_row(r)?,
                    secrets: secrets_from_row(r)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by(|a, b| a.webhook.id.cmp(&b.webhook.id));
        Ok(claimed)
    }
}

enum Arg {
    Text(String),
    Int(i64),
}

struct SqlTx {
    tx: Transaction<'static, Any>,
    locks: RowLocks,
    /// Tell other instances (LISTEN/NOTIFY, sent at commit) when webhooks are queued.
    signal_work: bool,
    /// Entities as this transaction last read or wrote them (`None`: known absent). An API
    /// change reads the same parents for validation, the view and routing; this reads each
    /// once, and lets `put` skip rewriting references that did not change.
    seen: HashMap<EntityId, Option<Entity>>,
}

/// The PostgreSQL channel on which instances announce newly queued work.
pub const WORK_CHANNEL: &str = "tidings_work";

/// The row-lock clauses a transaction adds to its reads.
#[derive(Clone, Copy)]
struct RowLocks {
    reference: &'static str,
    change: &'static str,
}

impl RowLocks {
    const NONE: RowLocks = RowLocks {
        reference: "",
        change: "",
    };
}

impl SqlTx {
    fn new(tx: Transaction<'static, Any>, locks: RowLocks, signal_work: bool) -> Self {
        SqlTx {
            tx,
            locks,
            signal_work,
            seen: HashMap::new(),
        }
    }

    /// Reads an entity. `fresh` forces a query (to take a stronger row lock).
    async fn get_locked(
        &mut self,
        id: &EntityId,
        lock: &str,
        fresh: bool,
    ) -> Result<Option<Entity>> {
        if !fresh {
            if let Some(e) = self.seen.get(id) {
                return Ok(e.clone());
            }
        }
        let sql = format!("SELECT doc FROM entities WHERE id = $1{lock}");
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        let entity = row.as_ref().map(entity_from_row).transpose()?;
        self.seen.insert(id.clone(), entity.clone());
        Ok(entity)
    }
}

#[async_trait]
impl Tx for SqlTx {
    async fn get(&mut self, id: &EntityId) -> Result<Option<Entity>> {
        let lock = self.locks.reference;
        self.get_locked(id, lock, false).await
    }

    async fn get_for_change(&mut self, id: &EntityId) -> Result<Option<Entity>> {
        let lock = self.locks.change;
        self.get_locked(id, lock, true).await
    }

    async fn put(&mut self, entity: &Entity, now: Millis) -> Result<()> {
        let doc = serde_json::to_string(entity).map_err(|e| corrupt(format!("entity: {e}")))?;
        let id = entity.id().as_str();
        let refs = entity.refs();
        // What the references were before, if this transaction knows.
        let before: Option<Vec<EntityId>> = match self.seen.get(entity.id()) {
            Some(Some(prev)) => Some(prev.refs()),
            Some(None) => Some(Vec::new()),
            None => None,
        };
        sqlx::query(
            "INSERT INTO entities (id, kind, doc, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(entity.kind().as_str())
        .bind(doc)
        .bind(now.0)
        .execute(&mut *self.tx)
        .await?;
        if before.as_ref() != Some(&refs) {
            if before.as_ref().is_none_or(|b| !b.is_empty()) {
                sqlx::query("DELETE FROM entity_refs WHERE source = $1")
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await?;
            }
            for target in &refs {
                sqlx::query("INSERT INTO entity_refs (target, source) VALUES ($1, $2)")
                    .bind(target.as_str())
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        self.seen.insert(entity.id().clone(), Some(entity.clone()));
        Ok(())
    }

    async fn delete(&mut self, id: &EntityId) -> Result<()> {
        sqlx::query("DELETE FROM entity_refs WHERE source = $1")
            .bind(id.as_str())
            .execute(&mut *self.tx)
            .await?;
        sqlx::query("DELETE FROM entities WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *self.tx)
            .await?;
        self.seen.insert(id.clone(), None);
        Ok(())
    }

    async fn referrers(
        &mut self,
        id: &EntityId,
        kind: Option<Kind>,
        limit: u32,
    ) -> Result<Vec<Entity>> {
        let rows = sqlx::query(
            "SELECT e.doc FROM entity_refs r JOIN entities e ON e.id = r.source \
             WHERE r.target = $1 AND ($2 = '' OR e.kind = $2) ORDER BY e.id LIMIT $3",
        )
        .bind(id.as_str())
        .bind(kind.map_or("", Kind::as_str))
        .bind(limit as i64)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(entity_from_row).collect()
    }

    async fn add_event(&mut self, event: &NewEvent, webhooks: &[NewWebhook]) -> Result<()> {
        if self.signal_work && !webhooks.is_empty() {
            // Delivered to listeners only if and when this transaction commits.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(WORK_CHANNEL)
                .execute(&mut *self.tx)
                .await?;
        }
        sqlx::query("INSERT INTO events (id, type, subject_id, data, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(event.id.as_str())
            .bind(event.event_type.as_str())
            .bind(event.subject_id.as_str())
            .bind(event.data.as_str())
            .bind(event.created_at.0)
            .execute(&mut *self.tx)
            .await?;
        // One statement for all of the event's webhooks. Each row numbers its own parameters,
        // so placeholders appear in ascending order (as SQLite's `$N` binding expects).
        if !webhooks.is_empty() {
            let rows: Vec<String> = (0..webhooks.len())
                .map(|i| {
                    let p = |k: usize| format!("${}", i * 8 + k);
                    format!(
                        "({}, {}, {}, {}, {}, {}, {}, {}, 'pending', 0, {}, {})",
                        p(1),
                        p(2),
                        p(3),
                        p(4),
                        p(5),
                        p(6),
                        p(7),
                        p(8),
                        p(8),
                        p(8)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO webhooks (id, event_id, type, subject_id, level, level_id, url, created_at, status, \
                 attempts, due_at, updated_at) VALUES {}",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for w in webhooks {
                q = q
                    .bind(w.id.as_str())
                    .bind(event.id.as_str())
                    .bind(event.event_type.as_str())
                    .bind(event.subject_id.as_str())
                    .bind(w.level.as_str())
                    .bind(w.level_id.as_str())
                    .bind(w.url.as_str())
                    .bind(event.created_at.0);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn put_secret(&mut self, level_id: &EntityId, sealed: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO level_secrets (level_id, current, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (level_id) DO NOTHING",
        )
        .bind(level_id.as_str())
        .bind(sealed)
        .bind(now.0)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}
