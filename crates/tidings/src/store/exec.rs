//! The statements on the hot path (an API change's transaction, claiming and recording
//! webhooks) run through one small interface, [`Exec`], with two drivers:
//!
//! - **SQLite**: `rusqlite` on the single writer connection, *in place*: the calling task
//!   holds the writer for the whole transaction and every statement is a direct call into
//!   SQLite. (sqlx runs each SQLite connection on a thread of its own and sends it every
//!   statement and every row over a channel; measured in BENCHMARKS.md, those hand-offs, not
//!   SQL, bounded the single writer.)
//! - **PostgreSQL**: a sqlx transaction, as everywhere else.
//!
//! The SQL is written once for both: `$N` placeholders, numbered in ascending order of first
//! appearance, which SQLite binds by position.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Result, StoreError};

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub(super) enum Param<'a> {
    Text(&'a str),
    Int(i64),
    Null,
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

impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
        })
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
#[async_trait]
pub(super) trait Exec: Send {
    /// Runs a statement; returns how many rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;

    /// Runs a query; returns every row.
    async fn fetch(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>>;

    async fn commit(self: Box<Self>) -> Result<()>;
}

// --- PostgreSQL (and any sqlx connection) ---

fn bind_all<'q>(
    sql: &'q str,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match *p {
            Param::Text(s) => q.bind(s),
            Param::Int(i) => q.bind(i),
            Param::Null => q.bind(None::<i64>),
        };
    }
    q
}

fn row_from_any(row: &AnyRow) -> Result<Row> {
    (0..row.len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                return Ok(v.map_or(Cell::Null, Cell::Int));
            }
            Ok(row
                .try_get::<Option<String>, _>(i)?
                .map_or(Cell::Null, Cell::Text))
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
/// on SQLite takes it (the rest through sqlx hold it as a gate), so writers never meet
/// `SQLITE_BUSY` from each other.
#[derive(Clone)]
pub(super) struct LiteWriter {
    conn: Arc<Mutex<rusqlite::Connection>>,
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

impl LiteWriter {
    /// Opens the writer on the (already created and migrated) database file.
    pub fn open(path: PathBuf) -> Result<Self> {
        let conn = rusqlite::Connection::open(&path)?;
        for pragma in SQLITE_PRAGMAS {
            // `journal_mode` answers with a row; the others with none.
            conn.query_row(pragma, [], |_| Ok(())).or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(()),
                e => Err(e),
            })?;
        }
        conn.set_prepared_statement_cache_capacity(64);
        Ok(LiteWriter {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Waits for the writer (a gate for writes that go through sqlx).
    pub async fn lock(&self) -> OwnedMutexGuard<rusqlite::Connection> {
        self.conn.clone().lock_owned().await
    }

    /// Waits for the writer and begins a write transaction on it.
    pub async fn begin(&self) -> Result<LiteTx> {
        let conn = self.lock().await;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(LiteTx { conn, open: true })
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

/// A write transaction on SQLite's writer.
pub(super) struct LiteTx {
    conn: OwnedMutexGuard<rusqlite::Connection>,
    open: bool,
}

impl LiteTx {
    fn execute_now(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn fetch_now(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
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

#[async_trait]
impl Exec for LiteTx {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        self.execute_now(sql, params)
    }

    async fn fetch(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.fetch_now(sql, params)
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }
}

impl Drop for LiteTx {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "rolling back a SQLite transaction failed");
            }
        }
    }
}
