//! The statements on the hot path (an API change's transaction, claiming and recording
//! webhooks) run through one small interface, [`Exec`], with two drivers:
//!
//! - **SQLite**: `rusqlite` on the single writer connection, *in place*: the calling task
//!   holds the writer for the whole transaction and every statement is a direct call into
//!   SQLite. (sqlx runs each SQLite connection on a thread of its own and sends it every
//!   statement and every row over a channel; measured in BENCHMARKS.md, those hand-offs, not
//!   SQL, bounded the single writer.)
//! - **PostgreSQL**: a `tokio-postgres` connection that pipelines the transaction's
//!   statements (see `pg.rs`); read-only transactions are sqlx's.
//!
//! The SQL is written once for both, with `$N` placeholders (on SQLite rewritten `?N` and
//! bound by index).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};
use tokio::sync::{watch, Mutex, Notify, OwnedMutexGuard};

use super::{Fault, Result, StoreError};
use crate::domain::entities::Entity;
use crate::domain::EntityId;

/// Entities by id as a transaction read or wrote them; `None`: known not to exist.
pub(super) type Entities = HashMap<EntityId, Option<Entity>>;

/// A statement parameter. A NULL keeps its type: PostgreSQL checks a parameter's declared
/// type against its column.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    Text(&'a str),
    Int(i64),
    OptText(Option<&'a str>),
    OptInt(Option<i64>),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(s: &'a str) -> Self {
        Param::Text(s)
    }
}

impl From<i64> for Param<'_> {
    fn from(i: i64) -> Self {
        Param::Int(i)
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::OptText(v)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::OptInt(v)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Text(s) | Param::OptText(Some(s)) => {
                ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
            }
            Param::Int(i) | Param::OptInt(Some(i)) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Param::OptText(None) | Param::OptInt(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// A [`Param`] that owns its text: a statement's parameters kept until it is sent.
#[derive(Debug, Clone)]
pub(super) enum Value {
    Text(String),
    Int(i64),
    OptText(Option<String>),
    OptInt(Option<i64>),
}

impl Value {
    pub(super) fn of(p: &Param<'_>) -> Self {
        match *p {
            Param::Text(s) => Value::Text(s.to_owned()),
            Param::Int(i) => Value::Int(i),
            Param::OptText(v) => Value::OptText(v.map(str::to_owned)),
            Param::OptInt(v) => Value::OptInt(v),
        }
    }

    pub(super) fn param(&self) -> Param<'_> {
        match self {
            Value::Text(s) => Param::Text(s),
            Value::Int(i) => Param::Int(*i),
            Value::OptText(v) => Param::OptText(v.as_deref()),
            Value::OptInt(v) => Param::OptInt(*v),
        }
    }
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Text(String),
}

/// A result row, its columns in the order the statement names them.
#[derive(Debug)]
pub(super) struct Row(Vec<Cell>);

impl Row {
    pub(super) fn new(cells: Vec<Cell>) -> Self {
        Row(cells)
    }

    fn cell(&self, i: usize) -> Result<&Cell> {
        self.0
            .get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("row has no column {i}")))
    }

    pub fn text(&self, i: usize) -> Result<&str> {
        self.opt_text(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<&str>> {
        match self.cell(i)? {
            Cell::Text(s) => Ok(Some(s)),
            Cell::Null => Ok(None),
            Cell::Int(_) => Err(StoreError::Corrupt(format!("column {i} is not text"))),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.cell(i)? {
            Cell::Int(v) => Ok(Some(*v)),
            Cell::Null => Ok(None),
            Cell::Text(_) => Err(StoreError::Corrupt(format!("column {i} is not a number"))),
        }
    }
}

/// An open write transaction. Dropping it without [`Exec::commit`] rolls it back.
///
/// Every write of the store goes through one (`SqlStore::begin_write`, `write_one`). On
/// SQLite it holds the single writer from its start to its commit, so between them its user
/// awaits nothing but its own statements: no network, no other store call, no lock.
#[async_trait]
pub(super) trait Exec: Send {
    /// Runs a statement; returns how many rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;

    /// Runs a query; returns every row.
    async fn fetch(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;

    /// Runs a statement that returns nothing the caller needs, at the latest before the
    /// transaction's next statement or its commit. PostgreSQL sends the statements put off
    /// this way with that next one, in one round trip (see `pg.rs`). Its error, if any, is
    /// the error of the call that sends it.
    async fn execute_later(&mut self, sql: &str, params: &[Param<'_>]) -> Result<()> {
        self.execute(sql, params).await.map(|_| ())
    }

    async fn commit(self: Box<Self>) -> Result<()>;

    /// The entity as the database holds it now, if this connection remembers it without
    /// a query (SQLite's writer; see [`Writer`]). `Some(None)`: known not to exist.
    fn recall(&mut self, _id: &EntityId) -> Option<Option<Entity>> {
        None
    }

    /// The entities this transaction read or wrote, for the connection to remember once the
    /// transaction commits (forgotten if it does not).
    fn remember(&mut self, _seen: Entities) {}
}

// --- sqlx connections (read-only transactions) ---

/// `sql` with `params` bound, for a sqlx connection.
pub(super) fn bind_all<'q>(
    sql: &'q str,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match *p {
            Param::Text(s) => q.bind(s),
            Param::Int(i) => q.bind(i),
            Param::OptText(v) => q.bind(v),
            Param::OptInt(v) => q.bind(v),
        };
    }
    q
}

/// A row's cells by the type of each value (not of its column: SQLite gives no column type
/// to an expression such as a `VALUES` column).
fn row_from_any(row: &AnyRow) -> Result<Row> {
    use sqlx::any::AnyTypeInfoKind as K;
    use sqlx::ValueRef as _;
    (0..row.len())
        .map(|i| {
            let value = row.try_get_raw(i)?;
            if value.is_null() {
                return Ok(Cell::Null);
            }
            Ok(match value.type_info().kind() {
                K::SmallInt | K::Integer | K::BigInt => Cell::Int(row.try_get::<i64, _>(i)?),
                _ => Cell::Text(row.try_get::<String, _>(i)?),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Row)
}

#[async_trait]
impl Exec for Transaction<'static, Any> {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(bind_all(sql, params)
            .execute(&mut **self)
            .await?
            .rows_affected())
    }

    async fn fetch(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let rows = bind_all(sql, params).fetch_all(&mut **self).await?;
        rows.iter().map(row_from_any).collect()
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        (*self).commit().await?;
        Ok(())
    }
}

// --- SQLite ---

/// SQLite's single writer connection. Whoever holds it may write; every write of the store
/// on SQLite takes it, through `SqlStore::begin_write` (the one write path), so writers
/// never meet `SQLITE_BUSY` from each other.
///
/// **Group commit.** A transaction on the writer is a savepoint inside a shared database
/// transaction (a *batch*). Finishing it releases the savepoint and hands the writer to the
/// next waiter, which joins the same batch; a flusher task queued behind them commits the
/// batch once, and every member's `commit` returns only then, with the batch's outcome. A
/// member that fails rolls back to its own savepoint and leaves the others alone. Under load
/// one commit (one append to the WAL) serves every change that queued meanwhile; alone, a
/// change commits at once.
#[derive(Clone)]
pub(super) struct LiteWriter {
    conn: Arc<Mutex<Writer>>,
    /// Wakes the flusher: a batch is open and waits for its commit.
    flush: Arc<Notify>,
}

/// The writer connection and its open batch, if any.
///
/// **Remembered entities.** The writer is the only one that writes entities (one instance
/// owns a SQLite file), so the entities its transactions read or wrote stay as they were
/// until one of its own transactions changes them. It keeps them, parsed, as they stand after
/// the last member of the batch: an API change reads its subject and the levels above it
/// (the meeting, its site, company, dealer and reseller: five queries and JSON parses on the
/// writer's turn) from memory. A member's entities are taken in only after its savepoint is
/// released (a member that rolls back leaves nothing); a batch whose commit fails, undoing
/// members already taken in, empties the memory. It holds at most [`REMEMBERED`] entities and
/// starts over when full.
pub(super) struct Writer {
    db: rusqlite::Connection,
    batch: Option<Batch>,
    load: Load,
    entities: Entities,
}

/// How many entities the writer remembers at most (a few MiB).
const REMEMBERED: usize = 8192;

/// How busy the writer is, logged at debug level every 10 s.
struct Load {
    since: Instant,
    /// Time spent holding the writer (changes and commits).
    held: Duration,
    changes: u64,
    batches: u64,
    cpu: Duration,
    longest_change: Duration,
    longest_commit: Duration,
}

/// CPU time of the calling thread: a change holds the writer on one thread from start to end
/// (nothing in it awaits), so the difference is the CPU the change cost, while wall time
/// also counts being descheduled.
///
/// Measured only while the writer's load is logged (debug level): the thread's CPU clock is a
/// system call, not a vDSO read, and two per change were ≈ 1 % of Tidings' CPU.
fn thread_cpu() -> Duration {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return Duration::ZERO;
    }
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Load {
    fn new() -> Self {
        Load {
            since: Instant::now(),
            held: Duration::ZERO,
            changes: 0,
            batches: 0,
            cpu: Duration::ZERO,
            longest_change: Duration::ZERO,
            longest_commit: Duration::ZERO,
        }
    }

    fn change(&mut self, began: Instant, cpu0: Duration) {
        self.cpu += thread_cpu().saturating_sub(cpu0);
        self.longest_change = self.longest_change.max(began.elapsed());
        self.held += began.elapsed();
        self.changes += 1;
    }

    fn batch(&mut self, began: Instant) {
        self.longest_commit = self.longest_commit.max(began.elapsed());
        self.held += began.elapsed();
        self.batches += 1;
        let window = self.since.elapsed();
        if window >= Duration::from_secs(10) {
            tracing::debug!(
                changes = self.changes,
                batches = self.batches,
                busy = format!(
                    "{:.1}%",
                    100.0 * self.held.as_secs_f64() / window.as_secs_f64()
                ),
                per_change_us = self.held.as_micros() as u64 / self.changes.max(1),
                cpu_per_change_us = self.cpu.as_micros() as u64 / self.changes.max(1),
                longest_change_us = self.longest_change.as_micros() as u64,
                longest_commit_us = self.longest_commit.as_micros() as u64,
                "SQLite writer load over the last {:.0} s",
                window.as_secs_f64()
            );
            *self = Load::new();
        }
    }
}

/// Runs one statement that returns no rows through the statement cache (transaction control
/// on every change: `execute_batch` would parse it again each time).
fn run(db: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    db.prepare_cached(sql)?.raw_execute().map(|_| ())
}

/// What a batch's members wait on: its commit's outcome.
type Outcome = Option<Result<(), (String, Fault)>>;
type Batch = watch::Sender<Outcome>;

impl Writer {
    /// Commits the open batch, if any, tells its members, and returns the outcome.
    fn commit_batch(&mut self) -> std::result::Result<(), (String, Fault)> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        let began = Instant::now();
        // SQLite ends the whole transaction by itself when a statement finds the database
        // full (`max_page_count` or the disk) at some points of a write: the batch's other
        // changes were rolled back with it, for that reason.
        let outcome = if self.db.is_autocommit() {
            Err((
                "SQLite rolled the batch back: the database or disk is full".to_owned(),
                Fault::Full,
            ))
        } else {
            run(&self.db, "COMMIT").map_err(|e| (e.to_string(), super::sqlite_fault(&e)))
        };
        if let Err(e) = &outcome {
            tracing::error!(error = %e.0, "committing a batch of SQLite transactions failed");
            // Its members' entities are not in the database after all.
            self.entities.clear();
            // A failed COMMIT may leave the transaction open; end it for the next batch.
            let _ = self.db.execute_batch("ROLLBACK");
        }
        self.load.batch(began);
        batch.send_replace(Some(outcome.clone()));
        outcome
    }
}

/// The pragmas of every SQLite connection of the store.
pub(super) const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA journal_mode = WAL",
    // With WAL, NORMAL keeps every committed transaction across a process crash; only an
    // OS crash or power loss may drop the last commits.
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
];

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

impl LiteWriter {
    /// Opens the writer on the (already created and migrated) database file and starts its
    /// flusher.
    pub fn open(path: PathBuf, max_pages: Option<u64>) -> Result<Self> {
        let db = rusqlite::Connection::open(&path)?;
        for pragma in SQLITE_PRAGMAS {
            // `journal_mode` answers with a row; the others with none.
            db.query_row(pragma, [], |_| Ok(())).or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(()),
                e => Err(e),
            })?;
        }
        for pragma in [
            // Savepoints (one per change in a batch) journal pages to a statement journal:
            // keep it in memory, not in a temporary file.
            "PRAGMA temp_store = MEMORY",
            // 128 MiB of page cache for the writer (the default is 2 MiB): with a million
            // pending retries the tables' and indexes' pages the writer walks stay in memory;
            // with 32 MiB healthy delivery was a third slower (BENCHMARKS.md, scenario d).
            "PRAGMA cache_size = -131072",
            // Checkpoints copy the WAL into the database file and fsync it. The checkpointer
            // thread does that beside the writer; the writer itself checkpoints (holding the
            // writer) only once the WAL passes 16,384 pages (64 MiB), with little left to copy
            // by then, so that the WAL starts over and stays bounded under steady writes.
            "PRAGMA wal_autocheckpoint = 16384",
        ] {
            db.execute_batch(pragma)?;
        }
        if let Some(pages) = max_pages {
            db.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        }
        db.set_prepared_statement_cache_capacity(64);
        let conn = Arc::new(Mutex::new(Writer {
            db,
            batch: None,
            load: Load::new(),
            entities: Entities::new(),
        }));
        let flush = Arc::new(Notify::new());
        tokio::spawn(flusher(Arc::downgrade(&conn), flush.clone()));
        let checkpoints = rusqlite::Connection::open(&path)?;
        checkpoints.execute_batch("PRAGMA busy_timeout = 5000")?;
        let alive = Arc::downgrade(&conn);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpointer(checkpoints, alive))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the checkpointer: {e}")))?;
        Ok(LiteWriter { conn, flush })
    }

    /// Waits for the writer and begins a transaction on it: a savepoint in the open batch
    /// (a new batch if none is open). A `solo` transaction commits the batch as soon as it
    /// is done, with itself as its last member, instead of waiting for the flusher: it may
    /// read what earlier members wrote, but returns only once that and its own writes are
    /// committed together.
    pub async fn begin(&self, solo: bool) -> Result<LiteTx> {
        let mut w = self.conn.clone().lock_owned().await;
        let began = Instant::now();
        if w.batch.is_none() {
            run(&w.db, "BEGIN IMMEDIATE")?;
            w.batch = Some(watch::channel(None).0);
        }
        if let Err(e) = run(&w.db, "SAVEPOINT tx") {
            self.flush.notify_one();
            return Err(e.into());
        }
        Ok(LiteTx {
            began,
            cpu0: thread_cpu(),
            solo,
            w: Some(w),
            flush: self.flush.clone(),
            seen: None,
        })
    }
}

/// Commits each batch after the members that were waiting when it was announced.
async fn flusher(conn: Weak<Mutex<Writer>>, flush: Arc<Notify>) {
    loop {
        flush.notified().await;
        // Lets the tasks that are ready to run first queue for the writer: under load they
        // join this batch instead of the next (b: 12 changes a commit instead of 8, so the
        // hot pages are written to the WAL less often); alone, it costs one turn of the
        // scheduler.
        tokio::task::yield_now().await;
        let Some(conn) = conn.upgrade() else { return };
        // The mutex is fair: this waits behind every transaction queued before it, and they
        // join the batch first.
        // Its members hear the outcome; a failure is logged where it happens.
        let _ = conn.lock().await.commit_batch();
    }
}

/// Copies the WAL into the database file every [`CHECKPOINT_EVERY`] while the store is open.
/// `PASSIVE` never blocks the writer or readers.
fn checkpointer(db: rusqlite::Connection, alive: Weak<Mutex<Writer>>) {
    while alive.strong_count() > 0 {
        std::thread::sleep(CHECKPOINT_EVERY);
        if let Err(e) = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
        }
    }
}

/// The database file a `sqlite:` URL names.
pub(super) fn sqlite_path(url: &str) -> Result<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        // Several connections share the database: it has to be a file.
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    Ok(PathBuf::from(path))
}

/// A transaction on SQLite's writer: a savepoint of the open batch. Dropping it without
/// `commit` rolls back to the savepoint.
pub(super) struct LiteTx {
    /// When it got the writer.
    began: Instant,
    cpu0: Duration,
    /// Commits its batch itself, at once (see [`LiteWriter::begin`]).
    solo: bool,
    /// The writer, held until commit or drop.
    w: Option<OwnedMutexGuard<Writer>>,
    flush: Arc<Notify>,
    /// Entities for the writer to remember once the savepoint is released.
    seen: Option<Entities>,
}

impl LiteTx {
    fn db(&mut self) -> &rusqlite::Connection {
        &self.w.as_ref().expect("transaction is open").db
    }

    fn execute_now(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let mut stmt = self.db().prepare_cached(&numbered(sql))?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute()? as u64)
    }

    fn fetch_now(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let mut stmt = self.db().prepare_cached(&numbered(sql))?;
        let columns = stmt.column_count();
        bind(&mut stmt, params)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let cells = (0..columns)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(v) => Cell::Int(v),
                        ValueRef::Text(t) => Cell::Text(
                            std::str::from_utf8(t)
                                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                                .to_owned(),
                        ),
                        ValueRef::Real(_) | ValueRef::Blob(_) => {
                            return Err(StoreError::Corrupt(format!(
                                "column {i} holds a real or a blob"
                            )))
                        }
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            out.push(Row(cells));
        }
        Ok(out)
    }
}

/// Where `sql` has a parameter (`$N`): the offsets of its `$`, outside quoted text (`'…'`,
/// `"…"`).
fn parameter_marks(sql: &str) -> impl Iterator<Item = usize> + '_ {
    // Byte by byte: every byte looked at is ASCII, and UTF-8 never uses ASCII bytes inside a
    // multi-byte character.
    let bytes = sql.as_bytes();
    let mut quote = None;
    (0..bytes.len()).filter(move |&i| match (quote, bytes[i]) {
        (None, q @ (b'\'' | b'"')) => {
            quote = Some(q);
            false
        }
        (Some(q), c) if c == q => {
            quote = None;
            false
        }
        (None, b'$') => bytes.get(i + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    })
}

/// The statement with every `$N` written `?N`. SQLite reads `$N` as a *named* parameter,
/// numbered in order of appearance, so binding by N would need a name lookup per parameter
/// (a linear search inside SQLite: quadratic for the many-row statements); `?N` is bound at
/// index N directly.
fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = sql.as_bytes().to_vec();
    for i in parameter_marks(sql) {
        out[i] = b'?';
    }
    // Only ASCII bytes were replaced by ASCII bytes, so the text is still UTF-8.
    Cow::Owned(String::from_utf8(out).expect("only ASCII bytes were replaced"))
}

/// Binds `params[N-1]` at `?N` (see [`numbered`]).
fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[Param<'_>]) -> Result<()> {
    if stmt.parameter_count() != params.len() {
        return Err(StoreError::Corrupt(format!(
            "statement takes {} parameters, given {}",
            stmt.parameter_count(),
            params.len()
        )));
    }
    for (index, param) in params.iter().enumerate() {
        stmt.raw_bind_parameter(index + 1, param)?;
    }
    Ok(())
}

#[async_trait]
impl Exec for LiteTx {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        self.execute_now(sql, params)
    }

    async fn fetch(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.fetch_now(sql, params)
    }

    fn recall(&mut self, id: &EntityId) -> Option<Option<Entity>> {
        self.w.as_ref()?.entities.get(id).cloned()
    }

    fn remember(&mut self, seen: Entities) {
        self.seen = Some(seen);
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let seen = self.seen.take();
        let w = self.w.as_mut().expect("transaction is open");
        run(&w.db, "RELEASE tx")?;
        if let Some(seen) = seen {
            if w.entities.len() + seen.len() > REMEMBERED {
                w.entities.clear();
            }
            w.entities.extend(seen);
        }
        w.load.change(self.began, self.cpu0);
        if self.solo {
            let outcome = w.commit_batch();
            self.w = None;
            return outcome.map_err(|(m, f)| StoreError::Commit(m, f));
        }
        let mut done = w
            .batch
            .as_ref()
            .expect("a savepoint lives in a batch")
            .subscribe();
        // Hand the writer on (the next transaction joins the batch), then wait for the
        // batch's commit.
        self.w = None;
        self.flush.notify_one();
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| StoreError::Commit("the writer was closed".into(), Fault::Other))?
            .clone();
        outcome
            .expect("waited for an outcome")
            .map_err(|(m, f)| StoreError::Commit(m, f))
    }
}

impl Drop for LiteTx {
    fn drop(&mut self) {
        if let Some(mut w) = self.w.take() {
            w.load.change(self.began, self.cpu0);
            if let Err(e) = w.db.execute_batch("ROLLBACK TO tx; RELEASE tx") {
                tracing::error!(error = %e, "rolling back a SQLite transaction failed");
            }
            // Whatever the batch holds from others still has to be committed.
            self.flush.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_url_names_its_file_and_memory_is_refused() {
        assert_eq!(
            sqlite_path("sqlite://data/t.db?mode=rwc").unwrap(),
            PathBuf::from("data/t.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///var/lib/tidings.db").unwrap(),
            PathBuf::from("/var/lib/tidings.db")
        );
        assert_eq!(sqlite_path("sqlite:t.db").unwrap(), PathBuf::from("t.db"));
        assert!(sqlite_path("sqlite::memory:").is_err());
        assert!(sqlite_path("postgres://x").is_err());
    }

    #[test]
    fn dollar_parameters_are_numbered_outside_quotes() {
        assert_eq!(
            numbered("SELECT $1, '$2', \"a$3\", $10 || 'it''s $4' || $2"),
            "SELECT ?1, '$2', \"a$3\", ?10 || 'it''s $4' || ?2"
        );
        assert!(matches!(numbered("SELECT 1"), Cow::Borrowed(_)));
        assert_eq!(numbered("SELECT '$' || $1"), "SELECT '$' || ?1");
    }

    /// `$N` is bound by its number, wherever it stands in the SQL; a parameter missing from
    /// the call is an error, not a stale value from the statement's last use.
    #[tokio::test]
    async fn parameters_bind_by_number_not_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        rusqlite::Connection::open(&path).unwrap();
        let writer = LiteWriter::open(path, None).unwrap();
        let mut tx = writer.begin(true).await.unwrap();
        let rows = tx
            .fetch(
                "SELECT $2, $1, $2 + 0",
                &[Param::Text("first"), Param::Int(2)],
            )
            .await
            .unwrap();
        assert_eq!(rows[0].int(0).unwrap(), 2);
        assert_eq!(rows[0].text(1).unwrap(), "first");
        assert_eq!(rows[0].int(2).unwrap(), 2);
        let missing = tx.fetch("SELECT $1, $2", &[Param::Int(1)]).await;
        assert!(missing.is_err());
        let nulls = tx
            .fetch(
                "SELECT $1, $2",
                &[Param::OptText(None), Param::OptInt(None)],
            )
            .await
            .unwrap();
        assert_eq!(nulls[0].opt_text(0).unwrap(), None);
        assert_eq!(nulls[0].opt_int(1).unwrap(), None);
    }
}
