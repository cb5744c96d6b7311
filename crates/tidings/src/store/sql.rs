//! The store on SQLite or PostgreSQL: one implementation, the same SQL for both wherever the
//! dialects agree, and the backend named where they differ.
//!
//! Reads go through sqlx's `Any` driver (on SQLite a pool of several connections: WAL lets
//! them run beside the writer). Writes go through [`Exec`]: on PostgreSQL a pipelined
//! `tokio-postgres` transaction (see `pg.rs`); on SQLite the single writer connection,
//! driven in place with `rusqlite` (see `exec.rs`), which every write takes in turn (no
//! `SQLITE_BUSY` between our own writers).
//!
//! This file opens the store and answers the [`Store`] trait; an API change's transaction
//! is in `change.rs`, the delivery queue's claims and records in `queue.rs`, and the
//! console's, endpoints', e-mails', keys' and retention's statements in files of their own.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row as _};

use super::change::{RowLocks, SqlTx, WorkSignal, WORK_CHANNEL};
use super::exec::{sqlite_path, Exec, LiteWriter, Param, Row, SQLITE_PRAGMAS};
use super::levels::LevelCache;
use super::pg::PgWriter;
use super::queue::Queue;
use super::webhook_list::Order;
use super::{
    Attempt, Claimed, Counts, Pruned, QueueStats, Recorded, Result, RetryOutcome, Store,
    StoreError, StoreOptions, Tx, Webhook, WebhookFilter, WebhookStatus,
};
use crate::delivery::secrets::SealedSecrets;
use crate::domain::endpoint::SuccessRule;
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

    /// Splits a recorded batch's rows for its multi-row statements, each with the number of
    /// rows its statement is made for: on PostgreSQL, where every statement that returns
    /// rows is a round trip, [`padded_chunks`]; on SQLite, whose statements are calls in
    /// the writer's thread, [`statement_chunks`] without padding.
    pub(super) fn record_chunks<T>(self, rows: &[T]) -> Vec<(&[T], usize)> {
        match self {
            Backend::Sqlite => statement_chunks(rows)
                .into_iter()
                .map(|c| (c, c.len()))
                .collect(),
            Backend::Postgres => padded_chunks(rows).collect(),
        }
    }
}

/// Where a store's write transactions run: SQLite's single writer, driven in place, or
/// PostgreSQL's pool of pipelined transactions.
enum Writes {
    Sqlite(LiteWriter),
    Postgres(PgWriter),
}

pub struct SqlStore {
    pub(super) backend: Backend,
    /// The database URL, for the PostgreSQL listener connection.
    pub(super) url: String,
    pub(super) reader: AnyPool,
    /// Where write transactions run.
    writes: Writes,
    /// Tells other instances that work was queued (PostgreSQL; `None` on SQLite).
    work_signal: Option<Arc<WorkSignal>>,
    /// The levels this instance has read (PostgreSQL; `None` on SQLite).
    level_cache: Option<Arc<LevelCache>>,
    /// On PostgreSQL, the health deltas of recorded batches waiting to be written.
    pub(super) health: super::endpoints::HealthWriter,
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
            // Migrations run on a connection of their own; every later write goes through
            // `lite`.
            let migrating = sqlite_pool(1, options.sqlite_max_pages)
                .connect(&url)
                .await?;
            SQLITE_MIGRATIONS.run(&migrating).await?;
            migrating.close().await;
            let reader = sqlite_pool(4, None).connect(&url).await?;
            let lite = LiteWriter::open(path, options.sqlite_max_pages)?;
            SqlStore {
                backend: Backend::Sqlite,
                url,
                reader,
                writes: Writes::Sqlite(lite),
                work_signal: None,
                level_cache: None,
                health: Default::default(),
                _owner: Some(owner),
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // The write transactions' pool, which connects when first used: a URL it cannot
            // take is refused before anything else is done.
            let pg = PgWriter::open(url, options)?;
            // Reads, migrations and notices.
            let mut pool = AnyPoolOptions::new().max_connections(8);
            if let Some(t) = options.acquire_timeout {
                pool = pool.acquire_timeout(t);
            }
            let pool = pool.connect(url).await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            warn_without_autovacuum(&pool).await;
            SqlStore {
                backend: Backend::Postgres,
                url: url.to_owned(),
                work_signal: Some(Arc::new(WorkSignal::new(pool.clone()))),
                level_cache: Some(Default::default()),
                reader: pool,
                health: super::endpoints::HealthWriter::postgres(pg.clone()),
                writes: Writes::Postgres(pg),
                _owner: None,
            }
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        Ok(store)
    }
}

/// Says so when the PostgreSQL server runs without autovacuum: the rows that deliveries
/// update and that retention deletes are then never reclaimed, so the database grows
/// whatever the retention, and the planner has no statistics to choose indexes by.
async fn warn_without_autovacuum(pool: &AnyPool) {
    let setting = sqlx::query("SELECT setting FROM pg_settings WHERE name = 'autovacuum'")
        .fetch_optional(pool)
        .await;
    if let Ok(Some(row)) = setting {
        if row.try_get::<String, _>(0).is_ok_and(|v| v == "off") {
            tracing::warn!(
                "autovacuum is off on this PostgreSQL server: space freed by retention and by \
                 delivered webhooks is never reused, so the database keeps growing, and \
                 queries run without statistics; turn autovacuum on (PostgreSQL's default)"
            );
        }
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

pub(super) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn parse_entity(doc: &str) -> Result<Entity> {
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
pub(super) const WEBHOOK_WIDTH: usize = 12;

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
pub(super) fn success_from(text: Option<&str>) -> Result<SuccessRule> {
    text.map_or(Ok(SuccessRule::default()), |t| {
        SuccessRule::from_str(t).map_err(corrupt)
    })
}

/// A level's sealed secrets from three columns starting at `first`: current, previous,
/// previous_until.
pub(super) fn secrets_from_row(row: &Row, first: usize) -> Result<Option<SealedSecrets>> {
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

    async fn write(&self, key: Option<&str>) -> Result<Box<dyn Tx>> {
        // SQLite's writer groups every transaction already.
        let Writes::Postgres(pg) = &self.writes else {
            return self.write_alone().await;
        };
        Ok(Box::new(SqlTx::new(
            Box::new(pg.begin_member(BEGIN_BY_KEY, key).await?),
            self.change_locks(),
            self.work_signal.clone(),
            self.level_cache.clone(),
        )))
    }

    async fn write_alone(&self) -> Result<Box<dyn Tx>> {
        Ok(Box::new(SqlTx::new(
            self.begin_write_by_key().await?,
            self.change_locks(),
            self.work_signal.clone(),
            self.level_cache.clone(),
        )))
    }

    async fn read(&self) -> Result<Box<dyn Tx>> {
        Ok(Box::new(SqlTx::new(
            self.begin_read_by_key().await?,
            RowLocks::NONE,
            None,
            self.level_cache.clone(),
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
        self.webhook_page(f, None, Order::OldestFirst).await
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
        self.record_attempts(owner, results, now).await
    }

    async fn flush_recorded(&self) {
        self.health.flush().await;
    }

    async fn release(&self, owner: &str, ids: &[EntityId], due_at: Millis) -> Result<()> {
        self.release_claims(owner, ids, due_at).await
    }

    async fn release_all(&self, now: Millis) -> Result<u64> {
        self.end_all_claims(Queue::Webhooks, now).await
    }

    async fn retry(&self, id: &EntityId, now: Millis) -> Result<RetryOutcome> {
        self.retry_now(id, now).await
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

impl SqlStore {
    /// How a change locks the rows it changes. SQLite has one writer, so reads inside a
    /// write transaction are stable already. PostgreSQL runs writers side by side: rows
    /// about to change are locked. Reads take no lock; the references a change writes are
    /// guarded by a foreign key instead (a parent cannot be deleted under a new child; see
    /// `put`), so hot rows that every change reads, the levels above, are never locked.
    fn change_locks(&self) -> RowLocks {
        match self.backend {
            Backend::Sqlite => RowLocks::NONE,
            Backend::Postgres => RowLocks {
                change: " FOR UPDATE",
            },
        }
    }
}

/// [`BEGIN_BY_KEY`]'s text, which [`BEGIN_BY_KEY_ONLY`] extends.
macro_rules! begin_by_key {
    () => {
        "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; \
         SET LOCAL enable_mergejoin = off"
    };
}

/// PostgreSQL's planner settings for a transaction whose statements all look their rows up
/// by key: a plan that reads a table whole (or hashes it) is then chosen only where no index
/// serves. A prepared statement keeps the plan made at its first uses, and in a young
/// database the tables are small then: the whole-table scans and hashes chosen for them
/// stayed while the tables grew, until the next `ANALYZE` (measured in BENCHMARKS.md).
/// Sent as one statement, so the settings cost no round trip of their own.
pub(super) const BEGIN_BY_KEY: &str = begin_by_key!();

/// [`BEGIN_BY_KEY`] for a transaction that reads nothing in an index's order (a recorded
/// batch's): plain index scans are off too, so that a table is read only through an index
/// condition (bitmap scans). With them on, a statement that joins many keys to a table, the
/// record's `UPDATE webhooks … FROM (VALUES …)`, was at times planned on a young table as one
/// read of the whole primary key in order, its rows matched to the keys afterwards; kept while
/// the table grew, that plan read 47 times the blocks of the lookups, cost the server 2.7 times
/// its CPU per webhook and delivered 0.6 as much for a whole benchmark run (BENCHMARKS.md).
pub(super) const BEGIN_BY_KEY_ONLY: &str = concat!(
    begin_by_key!(),
    "; SET LOCAL enable_indexscan = off; SET LOCAL enable_indexonlyscan = off"
);

/// The two leased queues in the store: webhooks to deliver, e-mails to send. Both keep a
/// `due_at` (NULL once done) and a `claimed_by`.
impl SqlStore {
    /// Begins a write transaction: on SQLite, waits for the single writer and joins the
    /// open batch (group commit).
    pub(super) async fn begin_write(&self) -> Result<Box<dyn Exec>> {
        self.begin_write_with(false, "BEGIN").await
    }

    /// Begins a write transaction that, on SQLite, commits its batch as soon as it is done
    /// (one commit for it and the changes before it): for claims, whose webhooks are sent
    /// right away and should not wait for the flusher.
    pub(super) async fn begin_write_now(&self) -> Result<Box<dyn Exec>> {
        self.begin_write_with(true, "BEGIN").await
    }

    /// On SQLite a savepoint in the writer's batch; on PostgreSQL a pipelined transaction
    /// that begins with `begin`.
    pub(super) async fn begin_write_with(
        &self,
        solo: bool,
        begin: &'static str,
    ) -> Result<Box<dyn Exec>> {
        Ok(match &self.writes {
            Writes::Sqlite(lite) => Box::new(lite.begin(solo).await?),
            Writes::Postgres(pg) => Box::new(pg.begin(begin).await?),
        })
    }

    /// A read-only transaction on the reader pool.
    pub(super) async fn begin_read(&self) -> Result<Box<dyn Exec>> {
        Ok(Box::new(self.reader.begin().await?))
    }

    /// A write transaction whose statements all look their rows up by key (an API change's):
    /// on PostgreSQL it begins with [`BEGIN_BY_KEY`].
    pub(super) async fn begin_write_by_key(&self) -> Result<Box<dyn Exec>> {
        self.begin_write_with(false, BEGIN_BY_KEY).await
    }

    /// A read-only transaction whose statements all look their rows up by key (see
    /// [`BEGIN_BY_KEY`]).
    pub(super) async fn begin_read_by_key(&self) -> Result<Box<dyn Exec>> {
        match self.backend {
            Backend::Sqlite => self.begin_read().await,
            Backend::Postgres => Ok(Box::new(self.reader.begin_with(BEGIN_BY_KEY).await?)),
        }
    }

    /// One statement in a transaction of its own; returns how many rows it changed.
    pub(super) async fn write_one(&self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = tx.execute(sql, params).await?;
        tx.commit().await?;
        Ok(n)
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

/// Splits `rows` for statements whose text is made for a number of rows: as many of 64 as
/// fit, then the rest in one statement, padded with empty rows up to the next power of two
/// (one statement where [`statement_chunks`] would make up to six). Each chunk comes with
/// the statement's size; the padding's parameters are NULL, and the statement must match
/// or write no row for them.
pub(super) fn padded_chunks<T>(rows: &[T]) -> impl Iterator<Item = (&[T], usize)> {
    rows.chunks(64).map(|c| (c, c.len().next_power_of_two()))
}

/// `($1, $2, …), ($k+1, …), …`: `rows` rows of `width` parameters, numbered in order.
pub(super) fn value_rows(rows: usize, width: usize) -> String {
    typed_value_rows(rows, 1, &vec![None; width])
}

/// [`value_rows`] numbered from `$first`, one parameter per entry of `types`: a parameter
/// with a type is written `CAST($k AS type)`, for columns whose type the statement would not
/// tell PostgreSQL otherwise.
pub(super) fn typed_value_rows(rows: usize, first: usize, types: &[Option<&str>]) -> String {
    let width = types.len();
    (0..rows)
        .map(|i| {
            let p: Vec<String> = types
                .iter()
                .enumerate()
                .map(|(k, ty)| {
                    let k = first + i * width + k;
                    match ty {
                        Some(ty) => format!("CAST(${k} AS {ty})"),
                        None => format!("${k}"),
                    }
                })
                .collect();
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

#[cfg(test)]
mod tests {
    use super::{padded_chunks, statement_chunks, typed_value_rows, value_rows};

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

    #[test]
    fn value_rows_number_their_parameters_in_order_and_cast_the_typed_ones() {
        assert_eq!(value_rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(
            typed_value_rows(2, 2, &[None, Some("BIGINT")]),
            "($2, CAST($3 AS BIGINT)), ($4, CAST($5 AS BIGINT))"
        );
    }

    #[test]
    fn padded_chunks_keep_order_and_pad_the_last_to_a_power_of_two() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in 0..=300usize {
            let rows: Vec<usize> = (0..n).collect();
            let chunks: Vec<(&[usize], usize)> = padded_chunks(&rows).collect();
            let joined: Vec<usize> = chunks.iter().flat_map(|c| c.0.iter().copied()).collect();
            assert_eq!(joined, rows, "every row once, in order ({n} rows)");
            assert_eq!(
                chunks.len(),
                n.div_ceil(64),
                "one statement per 64 rows ({n} rows)"
            );
            for (chunk, size) in &chunks {
                assert!(chunk.len() <= *size && *size < 2 * chunk.len(), "{n} rows");
            }
            sizes.extend(chunks.iter().map(|c| c.1));
        }
        assert_eq!(
            sizes.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64]
        );
    }
}
