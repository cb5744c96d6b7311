//! The store on SQLite or PostgreSQL: one implementation, the same SQL for both wherever the
//! dialects agree, and the backend named where they differ.
//!
//! Reads go through sqlx's `Any` driver (on SQLite a pool of several connections: WAL lets
//! them run beside the writer). Writes go through [`Exec`]: on PostgreSQL a sqlx
//! transaction; on SQLite the single writer connection, driven in place with `rusqlite`
//! (see `exec.rs`), which every write takes in turn (no `SQLITE_BUSY` between our own
//! writers).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row as _};

use super::endpoints::{self, Outcome, ENDPOINT_COLUMNS};
use super::exec::{sqlite_path, Exec, LiteWriter, Param, Row, SQLITE_PRAGMAS};
use super::{
    Attempt, Claimed, Counts, Lease, NewEvent, NewWebhook, Next, Pruned, QueueStats, Recorded,
    Result, RetryOutcome, Store, StoreError, StoreOptions, Tx, Webhook, WebhookFilter,
    WebhookStatus,
};
use crate::delivery::secrets::SealedSecrets;
use crate::domain::endpoint::{Endpoint, SuccessRule};
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

    /// The column that orders webhooks by creation: the rowid on SQLite (one writer hands
    /// them out in insertion order), a sequence on PostgreSQL.
    pub(super) fn seq(self) -> &'static str {
        match self {
            Backend::Sqlite => "rowid",
            Backend::Postgres => "seq",
        }
    }
}

pub struct SqlStore {
    pub(super) backend: Backend,
    /// The database URL, for the PostgreSQL listener connection.
    pub(super) url: String,
    /// On SQLite a pool of one connection that runs the migrations at open; every later
    /// write goes through `lite`.
    pub(super) writer: AnyPool,
    pub(super) reader: AnyPool,
    /// SQLite's single writer, driven in place (`None` on PostgreSQL).
    lite: Option<LiteWriter>,
    /// Tells other instances that work was queued (PostgreSQL; `None` on SQLite).
    work_signal: Option<Arc<WorkSignal>>,
    /// On SQLite, the database file with an exclusive `flock` held for the store's life.
    _owner: Option<std::fs::File>,
}

/// Makes this process the SQLite file's one Tidings instance, or says which file is taken.
/// One instance per file is what the writer relies on: it alone writes entities (and
/// remembers them), and at start it ends every claim in the file as its own. The lock is an
/// `flock` on the database file, independent of SQLite's own locks, and released by the
/// kernel when the process ends however it ends.
fn own_sqlite_file(path: &std::path::Path) -> Result<std::fs::File> {
    let failed = |e: std::io::Error| StoreError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(failed)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::InUse(path.display().to_string())),
        Err(e) => Err(failed(e.into())),
    }
}

impl SqlStore {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self> {
        SqlStore::open_with(url, &StoreOptions::default()).await
    }

    /// [`SqlStore::open`] with options.
    pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let store = if url.starts_with("sqlite:") {
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            let path = sqlite_path(&url)?;
            let owner = own_sqlite_file(&path)?;
            let writer = sqlite_pool(1, options.sqlite_max_pages)
                .connect(&url)
                .await?;
            SQLITE_MIGRATIONS.run(&writer).await?;
            let reader = sqlite_pool(4, None).connect(&url).await?;
            let lite = Some(LiteWriter::open(path, options.sqlite_max_pages)?);
            SqlStore {
                backend: Backend::Sqlite,
                url,
                writer,
                reader,
                lite,
                work_signal: None,
                _owner: Some(owner),
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let mut pool = AnyPoolOptions::new().max_connections(16);
            if let Some(t) = options.acquire_timeout {
                pool = pool.acquire_timeout(t);
            }
            let pool = pool.connect(url).await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            SqlStore {
                backend: Backend::Postgres,
                url: url.to_owned(),
                writer: pool.clone(),
                work_signal: Some(Arc::new(WorkSignal::new(pool.clone()))),
                reader: pool,
                lite: None,
                _owner: None,
            }
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        Ok(store)
    }
}

fn sqlite_pool(size: u32, max_pages: Option<u64>) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                for pragma in SQLITE_PRAGMAS {
                    sqlx::query(pragma).execute(&mut *conn).await?;
                }
                if let Some(pages) = max_pages {
                    sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn parse_entity(doc: &str) -> Result<Entity> {
    serde_json::from_str(doc).map_err(|e| corrupt(format!("entity: {e}")))
}

fn entity_from_row(row: &AnyRow) -> Result<Entity> {
    parse_entity(&row.try_get::<String, _>("doc")?)
}

pub(super) fn parse_id(s: &str) -> Result<EntityId> {
    EntityId::parse(s).map_err(corrupt)
}

/// The columns [`webhook_from_row`] reads, in its order (the claim returns the same).
pub(super) const WEBHOOK_COLUMNS: &str =
    "w.id, w.event_id, w.type, w.subject_id, w.level, w.level_id, w.url, w.created_at, \
     w.status, w.attempts, w.due_at, e.data";
pub(super) const WEBHOOK_FROM: &str = "FROM webhooks w JOIN events e ON e.id = w.event_id";
/// How many columns [`WEBHOOK_COLUMNS`] names.
const WEBHOOK_WIDTH: usize = 12;

pub(super) fn webhook_from_row(row: &Row) -> Result<Webhook> {
    Ok(Webhook {
        id: parse_id(row.text(0)?)?,
        event_id: parse_id(row.text(1)?)?,
        event_type: EventType::from_str(row.text(2)?).map_err(corrupt)?,
        subject_id: parse_id(row.text(3)?)?,
        level: Level::from_str(row.text(4)?).map_err(corrupt)?,
        level_id: parse_id(row.text(5)?)?,
        url: row.text(6)?.to_owned(),
        created_at: Millis(row.int(7)?),
        status: WebhookStatus::parse(row.text(8)?).map_err(corrupt)?,
        attempts: row.int(9)? as u32,
        due_at: row.opt_int(10)?.map(Millis),
        data: row.text(11)?.to_owned(),
    })
}

/// A level's success rule from its stored text (`None`: no settings stored, the default).
fn success_from(text: Option<&str>) -> Result<SuccessRule> {
    text.map_or(Ok(SuccessRule::default()), |t| {
        SuccessRule::from_str(t).map_err(corrupt)
    })
}

/// A level's sealed secrets from three columns starting at `first`: current, previous,
/// previous_until.
fn secrets_from_row(row: &Row, first: usize) -> Result<Option<SealedSecrets>> {
    let current = row.opt_text(first)?;
    let previous = row.opt_text(first + 1)?;
    let until = row.opt_int(first + 2)?;
    Ok(current.map(|current| SealedSecrets {
        current: current.to_owned(),
        previous: previous.map(str::to_owned).zip(until.map(Millis)),
    }))
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
        // PostgreSQL runs writers side by side: rows about to change are locked. Reads take
        // no lock; the references a change writes are guarded by a foreign key instead (a
        // parent cannot be deleted under a new child; see `put`), so hot rows that every
        // change reads, the levels above, are never locked.
        let locks = match self.backend {
            Backend::Sqlite => RowLocks::NONE,
            Backend::Postgres => RowLocks {
                change: " FOR UPDATE",
            },
        };
        Ok(Box::new(SqlTx::new(
            self.begin_write().await?,
            locks,
            self.work_signal.clone(),
        )))
    }

    async fn read(&self) -> Result<Box<dyn Tx>> {
        Ok(Box::new(SqlTx::new(
            self.begin_read().await?,
            RowLocks::NONE,
            None,
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
        let mut conditions: Vec<(&str, Param)> = Vec::new();
        if let Some(s) = f.status {
            conditions.push(("w.status =", s.as_str().into()));
        }
        if let Some(t) = f.event_type {
            conditions.push(("w.type =", t.as_str().into()));
        }
        if let Some(l) = &f.level_id {
            conditions.push(("w.level_id =", l.as_str().into()));
        }
        if let Some(s) = &f.subject_id {
            conditions.push(("w.subject_id =", s.as_str().into()));
        }
        if let Some(t) = f.since {
            conditions.push(("w.created_at >=", t.0.into()));
        }
        if let Some(t) = f.until {
            conditions.push(("w.created_at <", t.0.into()));
        }
        let mut sql = format!("SELECT {WEBHOOK_COLUMNS} {WEBHOOK_FROM} WHERE w.id > $1");
        let mut params: Vec<Param> = vec![f.after.as_ref().map_or("", EntityId::as_str).into()];
        for (clause, param) in conditions {
            params.push(param);
            sql.push_str(&format!(" AND {clause} ${}", params.len()));
        }
        params.push((f.limit as i64).into());
        sql.push_str(&format!(" ORDER BY w.id LIMIT ${}", params.len()));
        let rows = self.begin_read().await?.fetch(&sql, &params).await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn webhook(&self, id: &EntityId) -> Result<Option<(Webhook, Vec<Attempt>)>> {
        let mut tx = self.begin_read().await?;
        let sql = format!("SELECT {WEBHOOK_COLUMNS} {WEBHOOK_FROM} WHERE w.id = $1");
        let Some(row) = tx.fetch(&sql, &[id.as_str().into()]).await?.pop() else {
            return Ok(None);
        };
        let webhook = webhook_from_row(&row)?;
        let rows = tx
            .fetch(
                "SELECT number, started_at, duration_ms, status_code, error, body FROM attempts \
                 WHERE webhook_id = $1 ORDER BY number",
                &[id.as_str().into()],
            )
            .await?;
        let attempts = rows
            .iter()
            .map(|r| {
                Ok(Attempt {
                    number: r.int(0)? as u32,
                    started_at: Millis(r.int(1)?),
                    duration_ms: r.int(2)?,
                    status_code: r.opt_int(3)?.map(|c| c as u16),
                    error: r.opt_text(4)?.map(str::to_owned),
                    body: r.text(5)?.to_owned(),
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
                            // What was queued before it listened is found by the claim this
                            // wakes.
                            wake.notify_one();
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

    async fn record(&self, owner: &str, results: &[Recorded], now: Millis) -> Result<Vec<usize>> {
        let mut tx = self.begin_write().await?;
        // Each webhook's new state, many rows a statement (`$1` now, four per row, the owner
        // last); only rows this owner still holds are updated, and returned.
        let mut kept: Vec<&Recorded> = Vec::with_capacity(results.len());
        let mut positions = Vec::with_capacity(results.len());
        // What the returned rows say of each kept webhook: level, URL, ordered, subject.
        let mut rows: HashMap<String, (EntityId, String, bool, String)> =
            HashMap::with_capacity(results.len());
        let mut first = 0;
        for chunk in statement_chunks(results) {
            let n = first;
            first += chunk.len();
            static UPDATES: SqlBySize = SqlBySize::new();
            let sql = UPDATES.get(chunk.len(), |n| {
                let rows: Vec<String> = (0..n)
                    .map(|i| {
                        let p = 2 + i * 4;
                        format!(
                            "(${p}, ${}, CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                            p + 1,
                            p + 2,
                            p + 3
                        )
                    })
                    .collect();
                // A retry of a webhook whose endpoint was disabled meanwhile waits as
                // `disabled` instead.
                let held = "v.column2 = 'pending' AND EXISTS (SELECT 1 FROM endpoints en \
                            WHERE en.level_id = webhooks.level_id AND en.enabled = 0)";
                format!(
                    "UPDATE webhooks SET status = CASE WHEN {held} THEN 'disabled' ELSE v.column2 END, \
                     attempts = v.column3, due_at = CASE WHEN {held} THEN NULL ELSE v.column4 END, \
                     claimed_by = NULL, updated_at = $1 FROM (VALUES {}) AS v \
                     WHERE webhooks.id = v.column1 AND webhooks.claimed_by = ${} \
                     RETURNING webhooks.id, webhooks.level_id, webhooks.url, webhooks.ordered, \
                     webhooks.subject_id",
                    rows.join(", "),
                    2 + n * 4
                )
            });
            let mut params: Vec<Param> = vec![now.0.into()];
            for r in chunk {
                let (status, due_at) = match r.next {
                    Next::Succeeded => (WebhookStatus::Succeeded, None),
                    Next::RetryAt(t) => (WebhookStatus::Pending, Some(t.0)),
                    Next::Failed => (WebhookStatus::Failed, None),
                    Next::Gone => (WebhookStatus::Disabled, None),
                };
                params.extend::<[Param; 4]>([
                    r.webhook_id.as_str().into(),
                    status.as_str().into(),
                    (r.attempt.number as i64).into(),
                    due_at.into(),
                ]);
            }
            params.push(owner.into());
            for row in tx.fetch(&sql, &params).await? {
                rows.insert(
                    row.text(0)?.to_owned(),
                    (
                        parse_id(row.text(1)?)?,
                        row.text(2)?.to_owned(),
                        row.int(3)? != 0,
                        row.text(4)?.to_owned(),
                    ),
                );
            }
            for (i, r) in chunk.iter().enumerate() {
                if rows.contains_key(r.webhook_id.as_str()) {
                    kept.push(r);
                    positions.push(n + i);
                } else {
                    tracing::warn!(webhook = %r.webhook_id, "claim was lost before the attempt was recorded (lease ended); another attempt may follow");
                }
            }
        }
        for r in kept.iter().filter(|r| r.next == Next::Failed) {
            tx.execute(
                "INSERT INTO notifications (id, webhook_id, level_id, url, status, created_at, updated_at) \
                 SELECT $1, id, level_id, url, 'queued', $2, $2 FROM webhooks WHERE id = $3 \
                 ON CONFLICT (webhook_id) DO NOTHING",
                &[
                    EntityId::generate(now).as_str().into(),
                    now.0.into(),
                    r.webhook_id.as_str().into(),
                ],
            )
            .await?;
        }
        for r in &kept {
            let (level_id, url, ordered, subject) = &rows[r.webhook_id.as_str()];
            match r.next {
                // The webhooks queued behind an ordered one that waits for a retry wait as
                // long, so that claims do not keep reading past them meanwhile.
                Next::RetryAt(t) if *ordered => {
                    let seq = self.backend.seq();
                    tx.execute(
                        &format!(
                            "UPDATE webhooks SET due_at = $1 WHERE level_id = $2 AND subject_id = $3 \
                             AND ordered = 1 AND due_at IS NOT NULL AND due_at < $1 \
                             AND claimed_by IS NULL \
                             AND {seq} > (SELECT h.{seq} FROM webhooks h WHERE h.id = $4)"
                        ),
                        &[
                            t.0.into(),
                            level_id.as_str().into(),
                            subject.as_str().into(),
                            r.webhook_id.as_str().into(),
                        ],
                    )
                    .await?;
                }
                // Finished after a retry: what was held back until that retry is due now
                // (the retry may have come early, through the API).
                Next::Succeeded | Next::Failed if *ordered && r.attempt.number > 1 => {
                    let seq = self.backend.seq();
                    tx.execute(
                        &format!(
                            "UPDATE webhooks SET due_at = $1 WHERE level_id = $2 AND subject_id = $3 \
                             AND ordered = 1 AND due_at IS NOT NULL AND due_at > $1 \
                             AND claimed_by IS NULL AND attempts = 0 \
                             AND {seq} > (SELECT h.{seq} FROM webhooks h WHERE h.id = $4)"
                        ),
                        &[
                            now.0.into(),
                            level_id.as_str().into(),
                            subject.as_str().into(),
                            r.webhook_id.as_str().into(),
                        ],
                    )
                    .await?;
                }
                Next::Gone => {
                    let reason = crate::domain::endpoint::gone_reason(r.attempt.started_at);
                    if endpoints::disable(tx.as_mut(), level_id, &reason, now).await? {
                        tracing::warn!(level = %level_id, webhook = %r.webhook_id, "the receiver answered 410 Gone: endpoint disabled, its contact is e-mailed");
                        crate::store::notifications::queue_disabled_email(
                            tx.as_mut(),
                            level_id,
                            url,
                            &reason,
                            now,
                        )
                        .await?;
                    }
                }
                _ => {}
            }
        }
        // The attempts themselves, many rows a statement.
        for chunk in statement_chunks(&kept) {
            static INSERTS: SqlBySize = SqlBySize::new();
            let sql = INSERTS.get(chunk.len(), |n| {
                format!(
                    "INSERT INTO attempts (webhook_id, number, started_at, duration_ms, status_code, error, body) \
                     VALUES {} ON CONFLICT (webhook_id, number) DO NOTHING",
                    value_rows(n, 7)
                )
            });
            let params: Vec<Param> = chunk
                .iter()
                .flat_map(|r| {
                    [
                        r.webhook_id.as_str().into(),
                        (r.attempt.number as i64).into(),
                        r.attempt.started_at.0.into(),
                        r.attempt.duration_ms.into(),
                        r.attempt.status_code.map(i64::from).into(),
                        r.attempt.error.as_deref().into(),
                        r.attempt.body.as_str().into(),
                    ]
                })
                .collect();
            tx.execute(&sql, &params).await?;
        }
        // Last, so that the levels' health rows, which concurrent batches (PostgreSQL) and
        // the levels' other webhooks share, are locked for as short a time as can be.
        let deltas = endpoints::health_deltas(kept.iter().map(|r| {
            Outcome {
                level_id: &rows[r.webhook_id.as_str()].0,
                succeeded: r.next == Next::Succeeded,
                at: r.attempt.started_at,
                error: r
                    .attempt
                    .error
                    .clone()
                    .or_else(|| r.attempt.status_code.map(|c| format!("HTTP {c}"))),
            }
        }));
        endpoints::record_health(tx.as_mut(), &deltas).await?;
        tx.commit().await?;
        Ok(positions)
    }

    async fn release(&self, owner: &str, ids: &[EntityId], due_at: Millis) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for chunk in statement_chunks(ids) {
            static RELEASES: SqlBySize = SqlBySize::new();
            let sql = RELEASES.get(chunk.len(), |n| {
                format!(
                    "UPDATE webhooks SET due_at = $1, claimed_by = NULL \
                     WHERE claimed_by = $2 AND id IN ({})",
                    (3..n + 3)
                        .map(|i| format!("${i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
            let mut params: Vec<Param> = vec![due_at.0.into(), owner.into()];
            params.extend(chunk.iter().map(|id| Param::from(id.as_str())));
            tx.execute(&sql, &params).await?;
        }
        tx.commit().await
    }

    async fn release_all(&self, now: Millis) -> Result<u64> {
        self.end_all_claims(Queue::Webhooks, now).await
    }

    async fn retry(&self, id: &EntityId, now: Millis) -> Result<RetryOutcome> {
        let mut tx = self.begin_write().await?;
        let Some(row) = tx
            .fetch(
                "SELECT claimed_by FROM webhooks WHERE id = $1",
                &[id.as_str().into()],
            )
            .await?
            .pop()
        else {
            return Ok(RetryOutcome::NotFound);
        };
        if row.opt_text(0)?.is_some() {
            return Ok(RetryOutcome::InFlight);
        }
        tx.execute(
            "UPDATE webhooks SET status = 'pending', due_at = $1, updated_at = $1 WHERE id = $2",
            &[now.0.into(), id.as_str().into()],
        )
        .await?;
        tx.commit().await?;
        Ok(RetryOutcome::Queued)
    }

    async fn recover(&self, level_id: &EntityId, since: Millis, now: Millis) -> Result<u64> {
        self.write_one(
            "UPDATE webhooks SET status = 'pending', due_at = $1, updated_at = $1 \
             WHERE level_id = $2 AND status IN ('failed', 'disabled') AND created_at >= $3",
            &[now.0.into(), level_id.as_str().into(), since.0.into()],
        )
        .await
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

    async fn prune(&self, cutoff: Millis, after: Option<&EntityId>, limit: u32) -> Result<Pruned> {
        self.prune_batch(cutoff, after, limit).await
    }

    async fn size_on_disk(&self) -> Result<u64> {
        self.disk_size().await
    }

    async fn secrets(&self, level_id: &EntityId) -> Result<Option<SealedSecrets>> {
        let rows = self
            .begin_read()
            .await?
            .fetch(
                "SELECT current, previous, previous_until FROM level_secrets WHERE level_id = $1",
                &[level_id.as_str().into()],
            )
            .await?;
        match rows.first() {
            Some(r) => secrets_from_row(r, 0),
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
        self.write_one(
            "INSERT INTO level_secrets (level_id, current, previous, previous_until, updated_at) \
             VALUES ($1, $2, NULL, NULL, $3) ON CONFLICT (level_id) DO UPDATE SET \
             previous = level_secrets.current, previous_until = $4, current = excluded.current, \
             updated_at = excluded.updated_at",
            &[
                level_id.as_str().into(),
                current.into(),
                now.0.into(),
                previous_until.0.into(),
            ],
        )
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
    /// Begins a write transaction: on SQLite, waits for the single writer and joins the
    /// open batch (group commit).
    pub(super) async fn begin_write(&self) -> Result<Box<dyn Exec>> {
        self.begin_write_as(false).await
    }

    /// Begins a write transaction that, on SQLite, commits its batch as soon as it is done
    /// (one commit for it and the changes before it): for claims, whose webhooks are sent
    /// right away and should not wait for the flusher.
    async fn begin_write_now(&self) -> Result<Box<dyn Exec>> {
        self.begin_write_as(true).await
    }

    async fn begin_write_as(&self, solo: bool) -> Result<Box<dyn Exec>> {
        Ok(match &self.lite {
            Some(lite) => Box::new(lite.begin(solo).await?),
            None => Box::new(self.writer.begin().await?),
        })
    }

    /// A read-only transaction on the reader pool.
    pub(super) async fn begin_read(&self) -> Result<Box<dyn Exec>> {
        Ok(Box::new(self.reader.begin().await?))
    }

    /// One statement in a transaction of its own; returns how many rows it changed.
    pub(super) async fn write_one(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = tx.execute(sql, params).await?;
        tx.commit().await?;
        Ok(n)
    }

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
        self.write_one(&sql, &[now.0.into()]).await
    }

    pub(crate) async fn claim(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<Claimed>> {
        let skip_locked = self.backend.skip_locked();
        // One statement claims the rows and returns what their attempts need (SQLite allows
        // no UPDATE inside WITH, so the event's data and the secrets come as subqueries).
        let secret = |col: &str| {
            format!("(SELECT s.{col} FROM level_secrets s WHERE s.level_id = webhooks.level_id)")
        };
        // An ordered webhook goes only when no older one to its level about its subject is
        // unfinished (pending, in flight or waiting for a retry): the check sits in the claim
        // itself, so it holds across restarts and instances. An unfinished webhook keeps its
        // `due_at` until its attempt is recorded, so a claim that runs beside another one's
        // attempt still sees it.
        let seq = self.backend.seq();
        let sql = format!(
            "UPDATE webhooks SET due_at = $1, claimed_by = $2 WHERE id IN \
             (SELECT w.id FROM webhooks w WHERE w.due_at <= $3 AND (w.ordered = 0 OR NOT EXISTS \
             (SELECT 1 FROM webhooks o WHERE o.level_id = w.level_id AND o.subject_id = w.subject_id \
             AND o.ordered = 1 AND o.due_at IS NOT NULL AND o.{seq} < w.{seq})) \
             ORDER BY w.due_at LIMIT $4{skip_locked}) \
             RETURNING id, event_id, type, subject_id, level, level_id, url, created_at, status, \
             attempts, due_at, (SELECT e.data FROM events e WHERE e.id = webhooks.event_id), {}, {}, {}, \
             (SELECT en.success FROM endpoints en WHERE en.level_id = webhooks.level_id)",
            secret("current"),
            secret("previous"),
            secret("previous_until"),
        );
        let mut tx = self.begin_write_now().await?;
        let rows = tx
            .fetch(
                &sql,
                &[
                    lease_until.0.into(),
                    owner.into(),
                    now.0.into(),
                    (limit as i64).into(),
                ],
            )
            .await?;
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(|r| {
                Ok(Claimed {
                    webhook: webhook_from_row(r)?,
                    secrets: secrets_from_row(r, WEBHOOK_WIDTH)?,
                    success: success_from(r.opt_text(WEBHOOK_WIDTH + 3)?)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        claimed.sort_by(|a, b| a.webhook.id.cmp(&b.webhook.id));
        Ok(claimed)
    }
}

/// Splits rows for multi-row statements into chunks of 64 and then of falling powers of
/// two, so that every batch size is written with at most seven statement texts: each text
/// is prepared once and stays in the connection's statement cache (a text per size would
/// prepare a new statement, parameters and all, for nearly every batch, and push the
/// others out of the cache).
pub(super) fn statement_chunks<T>(mut rows: &[T]) -> Vec<&[T]> {
    const LARGEST: usize = 64;
    let mut chunks = Vec::new();
    while !rows.is_empty() {
        let size = if rows.len() >= LARGEST {
            LARGEST
        } else {
            1 << rows.len().ilog2()
        };
        let (chunk, rest) = rows.split_at(size);
        chunks.push(chunk);
        rows = rest;
    }
    chunks
}

/// `($1, $2, …), ($k+1, …), …`: `rows` rows of `width` parameters, numbered in order.
pub(super) fn value_rows(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|i| {
            let p: Vec<String> = (1..=width).map(|k| format!("${}", i * width + k)).collect();
            format!("({})", p.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The texts of a multi-row statement, one per row count, each built once: on the hot path
/// (an event's webhooks, a batch of records) building the text again for every call cost
/// ≈ 1.5 % of Tidings' CPU in scenario b. Texts for more than [`SqlBySize::KEPT`] rows are
/// built each time (never the case for the chunked statements).
pub(super) struct SqlBySize(std::sync::Mutex<Vec<Option<&'static str>>>);

impl SqlBySize {
    const KEPT: usize = 64;

    pub(super) const fn new() -> Self {
        SqlBySize(std::sync::Mutex::new(Vec::new()))
    }

    pub(super) fn get(
        &self,
        rows: usize,
        build: impl FnOnce(usize) -> String,
    ) -> Cow<'static, str> {
        if rows > Self::KEPT {
            return Cow::Owned(build(rows));
        }
        let mut texts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if texts.len() <= rows {
            texts.resize(rows + 1, None);
        }
        // At most KEPT + 1 texts per statement are ever leaked.
        Cow::Borrowed(*texts[rows].get_or_insert_with(|| Box::leak(build(rows).into_boxed_str())))
    }
}

struct SqlTx {
    exec: Box<dyn Exec>,
    locks: RowLocks,
    /// Tells other instances when this transaction queued webhooks, once it has committed.
    work_signal: Option<Arc<WorkSignal>>,
    /// Whether it did.
    queued_work: bool,
    /// What attempts need of each level this transaction read the endpoint of.
    level_keys: HashMap<String, LevelKeys>,
    /// Entities as this transaction last read or wrote them (`None`: known absent). An API
    /// change reads the same parents for validation, the view and routing; this reads each
    /// once, and lets `put` skip rewriting references that did not change.
    seen: HashMap<EntityId, Option<Entity>>,
}

/// What an attempt needs of its level besides the webhook: the signing secrets and what
/// counts as success.
struct LevelKeys {
    secrets: Option<SealedSecrets>,
    success: SuccessRule,
}

/// The PostgreSQL channel on which instances announce newly queued work.
pub const WORK_CHANNEL: &str = "tidings_work";

/// Announces newly queued work to the other instances (`NOTIFY`), after the commit that
/// queued it and on a connection of its own, at most one at a time: changes that queue work
/// while one is being sent are covered by one more after it.
///
/// A `NOTIFY` inside the change's own transaction would make every such commit take
/// PostgreSQL's one lock on the notification queue, and hold it through the commit's WAL
/// flush: concurrent changes would commit one at a time. Should the process die between a
/// commit and its notice, the work is found by the other instances' next claim all the same
/// (their idle wake-up), only later.
pub(super) struct WorkSignal {
    pool: AnyPool,
    /// 0: idle; 1: sending; 2: sending, and one more is needed after.
    state: std::sync::atomic::AtomicU8,
}

impl WorkSignal {
    fn new(pool: AnyPool) -> Self {
        WorkSignal {
            pool,
            state: std::sync::atomic::AtomicU8::new(0),
        }
    }

    fn raise(self: &Arc<Self>) {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .state
            .fetch_update(SeqCst, SeqCst, |s| Some(if s == 0 { 1 } else { 2 }))
            .is_ok_and(|before| before != 0)
        {
            return; // the one being sent (or the one after it) covers this work
        }
        let signal = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(WORK_CHANNEL)
                    .execute(&signal.pool)
                    .await
                {
                    tracing::warn!(error = %e, "could not tell other instances about queued work; they find it at their next claim");
                }
                // Done, unless work was queued meanwhile (2): then once more.
                if signal.state.compare_exchange(1, 0, SeqCst, SeqCst).is_ok() {
                    return;
                }
                signal.state.store(1, SeqCst);
            }
        });
    }
}

/// The row-lock clause a transaction adds to the read of a row it will change.
#[derive(Clone, Copy)]
struct RowLocks {
    change: &'static str,
}

impl RowLocks {
    const NONE: RowLocks = RowLocks { change: "" };
}

/// An entity, then what it refers to, then the levels above those, transitively: one
/// query for what a change or a view reads next (the parents for validation and the view,
/// the levels for routing), instead of one round trip each. `{lock}` applies to the entity
/// alone.
fn entity_and_above_sql(lock: &str) -> String {
    let levels = crate::domain::Level::ALL
        .iter()
        .map(|l| format!("'{}'", l.kind().as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH RECURSIVE first (id, doc) AS (SELECT id, doc FROM entities WHERE id = $1{lock}), \
         up (id, top) AS (SELECT id, 1 FROM first \
         UNION SELECT r.target, 0 FROM up JOIN entity_refs r ON r.source = up.id \
         JOIN entities t ON t.id = r.target WHERE up.top = 1 OR t.kind IN ({levels})) \
         SELECT id, doc FROM first \
         UNION ALL SELECT e.id, e.doc FROM up JOIN entities e ON e.id = up.id WHERE up.top = 0"
    )
}

impl SqlTx {
    fn new(exec: Box<dyn Exec>, locks: RowLocks, work_signal: Option<Arc<WorkSignal>>) -> Self {
        SqlTx {
            exec,
            locks,
            work_signal,
            queued_work: false,
            level_keys: HashMap::new(),
            seen: HashMap::new(),
        }
    }

    /// Reads an entity, and with it what it refers to and the levels above (remembered for
    /// the reads that follow). With `lock` (where there are row locks) the entity is read
    /// again, locked, even if this transaction has read it before.
    async fn get_locked(&mut self, id: &EntityId, lock: bool) -> Result<Option<Entity>> {
        let lock = if lock { self.locks.change } else { "" };
        if lock.is_empty() {
            if let Some(e) = self.seen.get(id) {
                return Ok(e.clone());
            }
            if let Some(e) = self.exec.recall(id) {
                self.seen.insert(id.clone(), e.clone());
                return Ok(e);
            }
        }
        static TEXTS: SqlBySize = SqlBySize::new();
        let sql = TEXTS.get(usize::from(!lock.is_empty()), |_| {
            entity_and_above_sql(lock)
        });
        let rows = self.exec.fetch(&sql, &[id.as_str().into()]).await?;
        let mut entity = None;
        for row in &rows {
            let e = parse_entity(row.text(1)?)?;
            if row.text(0)? == id.as_str() {
                entity = Some(e);
            } else {
                self.seen.entry(parse_id(row.text(0)?)?).or_insert(Some(e));
            }
        }
        self.seen.insert(id.clone(), entity.clone());
        Ok(entity)
    }
}

#[async_trait]
impl Tx for SqlTx {
    async fn get(&mut self, id: &EntityId) -> Result<Option<Entity>> {
        self.get_locked(id, false).await
    }

    async fn get_for_change(&mut self, id: &EntityId) -> Result<Option<Entity>> {
        self.get_locked(id, true).await
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
        self.exec
            .execute(
                "INSERT INTO entities (id, kind, doc, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
                &[
                    id.into(),
                    entity.kind().as_str().into(),
                    doc.as_str().into(),
                    now.0.into(),
                ],
            )
            .await?;
        if before.as_ref() != Some(&refs) {
            if before.as_ref().is_none_or(|b| !b.is_empty()) {
                self.exec
                    .execute("DELETE FROM entity_refs WHERE source = $1", &[id.into()])
                    .await?;
            }
            for target in &refs {
                // On PostgreSQL a foreign key checks that the target still exists and keeps
                // it from being deleted until this transaction ends (a key-share lock, which
                // leaves the target's own changes free).
                self.exec
                    .execute(
                        "INSERT INTO entity_refs (target, source) VALUES ($1, $2)",
                        &[target.as_str().into(), id.into()],
                    )
                    .await
                    .map_err(|e| match e.is_foreign_key_violation() {
                        true => StoreError::Vanished(target.to_string()),
                        false => e,
                    })?;
            }
        }
        self.seen.insert(entity.id().clone(), Some(entity.clone()));
        Ok(())
    }

    async fn delete(&mut self, id: &EntityId) -> Result<()> {
        for sql in [
            "DELETE FROM entity_refs WHERE source = $1",
            "DELETE FROM entities WHERE id = $1",
        ] {
            self.exec.execute(sql, &[id.as_str().into()]).await?;
        }
        self.seen.insert(id.clone(), None);
        Ok(())
    }

    async fn referrers(
        &mut self,
        id: &EntityId,
        kind: Option<Kind>,
        limit: u32,
    ) -> Result<Vec<Entity>> {
        let rows = self
            .exec
            .fetch(
                "SELECT e.doc FROM entity_refs r JOIN entities e ON e.id = r.source \
                 WHERE r.target = $1 AND ($2 = '' OR e.kind = $2) ORDER BY e.id LIMIT $3",
                &[
                    id.as_str().into(),
                    kind.map_or("", Kind::as_str).into(),
                    (limit as i64).into(),
                ],
            )
            .await?;
        rows.iter().map(|r| parse_entity(r.text(0)?)).collect()
    }

    async fn add_event(
        &mut self,
        event: &NewEvent,
        webhooks: &[NewWebhook],
        lease: Option<&Lease>,
    ) -> Result<Vec<Claimed>> {
        // Each webhook's state as written: disabled (its endpoint is), claimed by the lease's
        // owner (handed off), or due now. An ordered webhook is handed off only when no older
        // one to its level about the subject is unfinished; otherwise the claim decides.
        let blocked: HashSet<String> = match lease {
            Some(_) if webhooks.iter().any(|w| w.ordered && !w.disabled) => {
                let levels: Vec<&EntityId> = webhooks
                    .iter()
                    .filter(|w| w.ordered && !w.disabled)
                    .map(|w| &w.level_id)
                    .collect();
                let list = (0..levels.len())
                    .map(|i| format!("${}", i + 2))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut params: Vec<Param> = vec![event.subject_id.as_str().into()];
                params.extend(levels.iter().map(|l| Param::from(l.as_str())));
                self.exec
                    .fetch(
                        &format!(
                            "SELECT DISTINCT level_id FROM webhooks WHERE subject_id = $1 \
                             AND ordered = 1 AND due_at IS NOT NULL AND level_id IN ({list})"
                        ),
                        &params,
                    )
                    .await?
                    .iter()
                    .map(|r| r.text(0).map(str::to_owned))
                    .collect::<Result<_>>()?
            }
            _ => HashSet::new(),
        };
        let claims = |w: &NewWebhook| {
            lease.is_some() && !w.disabled && !(w.ordered && blocked.contains(w.level_id.as_str()))
        };
        let due_unclaimed = webhooks.iter().any(|w| !w.disabled && !claims(w));
        // Claimed webhooks are this instance's own work: nobody else needs waking.
        self.queued_work |= due_unclaimed;
        self.exec
            .execute(
                "INSERT INTO events (id, type, subject_id, data, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[
                    event.id.as_str().into(),
                    event.event_type.as_str().into(),
                    event.subject_id.as_str().into(),
                    event.data.as_str().into(),
                    event.created_at.0.into(),
                ],
            )
            .await?;
        if webhooks.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for all of the event's webhooks, twelve parameters a row.
        static INSERTS: SqlBySize = SqlBySize::new();
        let sql = INSERTS.get(webhooks.len(), |n| {
            format!(
                "INSERT INTO webhooks (id, event_id, type, subject_id, level, level_id, url, created_at, \
                 status, due_at, claimed_by, ordered, attempts, updated_at) VALUES {}",
                (0..n)
                    .map(|i| {
                        let p = |k: usize| format!("${}", i * 12 + k);
                        format!(
                            "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, 0, {})",
                            p(1),
                            p(2),
                            p(3),
                            p(4),
                            p(5),
                            p(6),
                            p(7),
                            p(8),
                            p(9),
                            p(10),
                            p(11),
                            p(12),
                            p(8)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        let params: Vec<Param> = webhooks
            .iter()
            .flat_map(|w| {
                let (status, due, owner) = if w.disabled {
                    ("disabled", None, None)
                } else if claims(w) {
                    let l = lease.expect("claims only with a lease");
                    ("pending", Some(l.until.0), Some(l.owner.as_str()))
                } else {
                    ("pending", Some(event.created_at.0), None)
                };
                [
                    w.id.as_str().into(),
                    event.id.as_str().into(),
                    event.event_type.as_str().into(),
                    event.subject_id.as_str().into(),
                    w.level.as_str().into(),
                    w.level_id.as_str().into(),
                    w.url.as_str().into(),
                    event.created_at.0.into(),
                    status.into(),
                    due.into(),
                    owner.into(),
                    i64::from(w.ordered).into(),
                ]
            })
            .collect();
        self.exec.execute(&sql, &params).await?;
        let Some(lease) = lease else {
            return Ok(Vec::new());
        };
        // What the attempts need besides the rows just written: the levels' secrets.
        let handed: Vec<&NewWebhook> = webhooks.iter().filter(|w| claims(w)).collect();
        if handed.is_empty() {
            return Ok(Vec::new());
        }
        let levels: Vec<&EntityId> = {
            let mut l: Vec<&EntityId> = handed.iter().map(|w| &w.level_id).collect();
            l.sort();
            l.dedup();
            l
        };
        // Read with the endpoints (`Tx::endpoints`), which a change reads before it routes.
        if levels
            .iter()
            .any(|l| !self.level_keys.contains_key(l.as_str()))
        {
            self.endpoints(&levels).await?;
        }
        Ok(handed
            .into_iter()
            .map(|w| Claimed {
                webhook: Webhook {
                    id: w.id.clone(),
                    event_id: event.id.clone(),
                    event_type: event.event_type,
                    subject_id: event.subject_id.clone(),
                    level: w.level,
                    level_id: w.level_id.clone(),
                    url: w.url.clone(),
                    created_at: event.created_at,
                    status: WebhookStatus::Pending,
                    attempts: 0,
                    due_at: Some(lease.until),
                    data: event.data.clone(),
                },
                secrets: self
                    .level_keys
                    .get(w.level_id.as_str())
                    .and_then(|k| k.secrets.clone()),
                success: self
                    .level_keys
                    .get(w.level_id.as_str())
                    .map(|k| k.success)
                    .unwrap_or_default(),
            })
            .collect())
    }

    async fn endpoints(&mut self, level_ids: &[&EntityId]) -> Result<Vec<(EntityId, Endpoint)>> {
        if level_ids.is_empty() {
            return Ok(Vec::new());
        }
        // With each level's settings, what its attempts need if `add_event` hands them off
        // (the signing secrets): one round trip, not two.
        static SELECTS: SqlBySize = SqlBySize::new();
        let sql = SELECTS.get(level_ids.len(), |n| {
            let columns = ENDPOINT_COLUMNS
                .split(", ")
                .map(|c| format!("en.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "SELECT {columns}, s.level_id, s.current, s.previous, s.previous_until \
                 FROM (VALUES {}) AS v \
                 LEFT JOIN endpoints en ON en.level_id = v.column1 \
                 LEFT JOIN level_secrets s ON s.level_id = v.column1",
                (1..=n)
                    .map(|i| format!("(CAST(${i} AS TEXT))"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        let params: Vec<Param> = level_ids.iter().map(|id| id.as_str().into()).collect();
        let mut found = Vec::new();
        for row in self.exec.fetch(&sql, &params).await? {
            let width = ENDPOINT_COLUMNS.split(", ").count();
            let endpoint = match row.opt_text(0)? {
                Some(_) => Some(endpoints::endpoint_from_row(&row)?),
                None => None,
            };
            // A level without secrets (none were ever made for it) gets none, as its
            // attempts say (`no_secret`).
            if let Some(level) = row.opt_text(width)? {
                let keys = LevelKeys {
                    secrets: secrets_from_row(&row, width + 1)?,
                    success: endpoint
                        .as_ref()
                        .map(|(_, e)| e.success)
                        .unwrap_or_default(),
                };
                self.level_keys.insert(level.to_owned(), keys);
            }
            found.extend(endpoint);
        }
        Ok(found)
    }

    async fn enable_endpoint(&mut self, level_id: &EntityId, now: Millis) -> Result<bool> {
        let n = self
            .exec
            .execute(
                "UPDATE endpoints SET enabled = 1, disabled_reason = NULL, disabled_at = NULL, \
                 updated_at = $1 WHERE level_id = $2 AND enabled = 0",
                &[now.0.into(), level_id.as_str().into()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn put_secret(&mut self, level_id: &EntityId, sealed: &str, now: Millis) -> Result<()> {
        self.exec
            .execute(
                "INSERT INTO level_secrets (level_id, current, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (level_id) DO NOTHING",
                &[level_id.as_str().into(), sealed.into(), now.0.into()],
            )
            .await?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let SqlTx {
            mut exec,
            seen,
            work_signal,
            queued_work,
            ..
        } = *self;
        exec.remember(seen);
        exec.commit().await?;
        if let (Some(signal), true) = (work_signal, queued_work) {
            signal.raise();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::statement_chunks;

    #[test]
    fn statement_chunks_keep_order_and_use_few_sizes() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in 0..=300usize {
            let rows: Vec<usize> = (0..n).collect();
            let chunks = statement_chunks(&rows);
            let joined: Vec<usize> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, rows, "every row once, in order ({n} rows)");
            sizes.extend(chunks.iter().map(|c| c.len()));
        }
        assert_eq!(
            sizes.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64]
        );
    }
}
