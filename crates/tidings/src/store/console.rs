//! Aggregate reads for the web console: each page's figures in one query over the levels it
//! shows, never a query per row. For every level (the operator) none reads rows in proportion
//! to the store: the charts read the counters kept as attempts are recorded (`endpoint_hours`
//! and `endpoint_minutes`, see [`super::endpoints`]), the queue is counted up to a cap, and
//! the lists of failed and of disabled webhooks walk their own partial indexes (migration
//! 0009). Narrowed to some levels, each level is read on its own within one query, for at most
//! what is needed: the queue counts each level's pending webhooks through the index on level
//! (up to the cap in all), the oldest due one is the first of theirs in the index of pending
//! webhooks, and the lists take at most a page from each level (see [`super::webhook_list`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::endpoints::{Slots, HOUR_MS, MINUTE_MS};
use super::exec::{bind_all, Param};
use super::sql::SqlStore;
use super::webhook_list::{union_per_level, Order, LEVEL_CHUNK};
use super::{Result, Webhook, WebhookFilter};
use crate::domain::{EntityId, Millis};

/// What one chart bar spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketWidth {
    Minute,
    Hour,
}

impl BucketWidth {
    pub const fn millis(self) -> i64 {
        match self {
            BucketWidth::Minute => MINUTE_MS,
            BucketWidth::Hour => HOUR_MS,
        }
    }

    /// The counters kept at this width: a ring of 60 minutes or of 24 hours per level.
    fn slots(self) -> Slots {
        match self {
            BucketWidth::Minute => Slots::MINUTES,
            BucketWidth::Hour => Slots::HOURS,
        }
    }
}

/// Delivery attempts in one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Bucket number counted from the start of the window.
    pub index: i64,
    pub succeeded: u64,
    pub failed: u64,
}

/// The queue as the overview shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Webhooks waiting for an attempt (due now or later, or in flight), at most the cap.
    pub pending: u64,
    /// Whether more than `pending` wait: counting stopped at the cap.
    pub more: bool,
    /// The due time of the oldest webhook that is due and not claimed.
    pub oldest_due: Option<Millis>,
}

/// How a webhook's latest attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastAttempt {
    pub webhook_id: EntityId,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

#[async_trait]
pub trait ConsoleStore {
    /// Attempts started in the minute (or hour) holding `since` and after it, counted per
    /// `width`, of the webhooks addressed to `levels` (every level when `None`); buckets
    /// without attempts are left out. Read from the counters kept as attempts are recorded,
    /// which hold the last 60 minutes and the last 24 hours.
    async fn attempt_buckets(
        &self,
        levels: Option<&[EntityId]>,
        since: Millis,
        width: BucketWidth,
    ) -> Result<Vec<Bucket>>;

    /// Webhooks waiting for an attempt among `levels` (every level when `None`), counted up
    /// to `cap`, and the due time of the oldest one due by `now` and not claimed.
    async fn queue_depth(
        &self,
        levels: Option<&[EntityId]>,
        now: Millis,
        cap: u64,
    ) -> Result<QueueDepth>;

    /// The latest attempt's status code and error of each of `webhooks` that has one.
    async fn last_attempts(&self, webhooks: &[EntityId]) -> Result<Vec<LastAttempt>>;

    /// Webhooks matching `filter`, newest first; `filter.after` is the cursor, read as
    /// "older than this id". Only those addressed to `levels` when given. The same list as
    /// [`super::Store::webhooks`], from the other end.
    async fn webhooks_newest(
        &self,
        filter: &WebhookFilter,
        levels: Option<&[EntityId]>,
    ) -> Result<Vec<Webhook>>;
}

/// ` AND <column> IN ($n, ...)` for the ids in `levels`, appending them to `params`.
fn level_clause<'a>(
    column: &str,
    levels: Option<&'a [EntityId]>,
    params: &mut Vec<Param<'a>>,
) -> String {
    let Some(levels) = levels else {
        return String::new();
    };
    let mut marks = Vec::with_capacity(levels.len());
    for id in levels {
        params.push(id.as_str().into());
        marks.push(format!("${}", params.len()));
    }
    format!(" AND {column} IN ({})", marks.join(", "))
}

/// `levels` in lists of at most [`LEVEL_CHUNK`] ids, each read with one query: `None`
/// (every level) stays one read, and no level at all needs none.
fn level_chunks(levels: Option<&[EntityId]>) -> Vec<Option<&[EntityId]>> {
    match levels {
        None => vec![None],
        Some(ids) => ids.chunks(LEVEL_CHUNK).map(Some).collect(),
    }
}

fn count(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

/// Runs a read on the reader pool. Aggregates are read by their values' own types (SQLite
/// gives computed columns no declared type).
async fn fetch(store: &SqlStore, sql: &str, params: &[Param<'_>]) -> Result<Vec<AnyRow>> {
    Ok(bind_all(sql, params).fetch_all(&store.reader).await?)
}

fn int(r: &AnyRow, i: usize) -> Result<Option<i64>> {
    Ok(r.try_get::<Option<i64>, _>(i)?)
}

/// The first column of a read's first row.
async fn first_int(store: &SqlStore, sql: &str, params: &[Param<'_>]) -> Result<Option<i64>> {
    match fetch(store, sql, params).await?.first() {
        Some(r) => int(r, 0),
        None => Ok(None),
    }
}

#[async_trait]
impl ConsoleStore for SqlStore {
    async fn attempt_buckets(
        &self,
        levels: Option<&[EntityId]>,
        since: Millis,
        width: BucketWidth,
    ) -> Result<Vec<Bucket>> {
        self.health.flush().await;
        let first = since.0.div_euclid(width.millis());
        let Slots { table, unit, .. } = width.slots();
        let mut sums: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
        for chunk in level_chunks(levels) {
            let mut params: Vec<Param> = vec![first.into()];
            let clause = level_clause("level_id", chunk, &mut params);
            let sql = format!(
                "SELECT {unit} - $1, CAST(SUM(successes) AS BIGINT), \
                        CAST(SUM(failures) AS BIGINT) \
                 FROM {table} WHERE {unit} >= $1{clause} GROUP BY {unit}"
            );
            for r in fetch(self, &sql, &params).await? {
                let sum = sums.entry(int(&r, 0)?.unwrap_or(0)).or_default();
                sum.0 += count(int(&r, 1)?);
                sum.1 += count(int(&r, 2)?);
            }
        }
        Ok(sums
            .into_iter()
            .map(|(index, (succeeded, failed))| Bucket {
                index,
                succeeded,
                failed,
            })
            .collect())
    }

    async fn queue_depth(
        &self,
        levels: Option<&[EntityId]>,
        now: Millis,
        cap: u64,
    ) -> Result<QueueDepth> {
        // Counting one more than the cap tells whether more wait. Written out (an integer),
        // like the lists' page size, so that PostgreSQL plans for it.
        let limit = i64::try_from(cap).unwrap_or(i64::MAX - 1) + 1;
        let Some(levels) = levels else {
            // In due order, so that PostgreSQL too reads the index of pending webhooks (it
            // would rather scan the table, finished webhooks and all, when most rows are
            // pending).
            let counted = count(
                first_int(
                    self,
                    &format!(
                        "SELECT CAST(COUNT(*) AS BIGINT) FROM (SELECT 1 AS one FROM webhooks \
                         WHERE due_at IS NOT NULL ORDER BY due_at LIMIT {limit}) q"
                    ),
                    &[],
                )
                .await?,
            );
            let oldest = first_int(
                self,
                "SELECT MIN(due_at) FROM webhooks \
                 WHERE due_at IS NOT NULL AND due_at <= $1 AND claimed_by IS NULL",
                &[now.0.into()],
            )
            .await?;
            return Ok(QueueDepth {
                pending: counted.min(cap),
                more: counted > cap,
                oldest_due: oldest.map(Millis),
            });
        };
        let mut levels = levels.to_vec();
        levels.sort();
        levels.dedup();
        let mut counted = 0;
        let mut oldest: Option<i64> = None;
        // Each level through its own walk of the index of its waiting webhooks
        // (`webhooks_waiting_by_level`): a few at most from each to count, and the first due
        // entry of each. One walk of `level_id IN (...)` could read every waiting webhook
        // of the levels first (PostgreSQL's bitmap of them all).
        for chunk in levels.chunks(LEVEL_CHUNK) {
            if counted <= cap {
                let mut params: Vec<Param> = Vec::new();
                let parts = union_per_level(chunk, &mut params, |n| {
                    format!(
                        "SELECT one FROM (SELECT 1 AS one FROM webhooks \
                         WHERE level_id = ${n} AND due_at IS NOT NULL LIMIT {limit}) l{n}"
                    )
                });
                let sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM ({parts} LIMIT {limit}) q");
                counted += count(first_int(self, &sql, &params).await?);
            }
            let mut params: Vec<Param> = vec![now.0.into()];
            let parts = union_per_level(chunk, &mut params, |n| {
                format!(
                    "SELECT (SELECT due_at FROM webhooks WHERE level_id = ${n} \
                     AND due_at IS NOT NULL AND due_at <= $1 AND claimed_by IS NULL \
                     ORDER BY due_at LIMIT 1) AS due"
                )
            });
            let sql = format!("SELECT MIN(due) FROM ({parts}) q");
            if let Some(t) = first_int(self, &sql, &params).await? {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        Ok(QueueDepth {
            pending: counted.min(cap),
            more: counted > cap,
            oldest_due: oldest.map(Millis),
        })
    }

    async fn last_attempts(&self, webhooks: &[EntityId]) -> Result<Vec<LastAttempt>> {
        if webhooks.is_empty() {
            return Ok(Vec::new());
        }
        let mut params: Vec<Param> = Vec::new();
        let clause = level_clause("webhook_id", Some(webhooks), &mut params);
        let sql = format!(
            "SELECT t.webhook_id, CAST(t.status_code AS BIGINT), t.error FROM attempts t \
             JOIN (SELECT webhook_id, MAX(number) AS n FROM attempts WHERE 1 = 1{clause} \
                   GROUP BY webhook_id) m \
               ON m.webhook_id = t.webhook_id AND m.n = t.number"
        );
        let rows = fetch(self, &sql, &params).await?;
        rows.iter()
            .map(|r| {
                Ok(LastAttempt {
                    webhook_id: super::sql::parse_id(&r.try_get::<String, _>(0)?)?,
                    status_code: int(r, 1)?.and_then(|c| u16::try_from(c).ok()),
                    error: r.try_get::<Option<String>, _>(2)?,
                })
            })
            .collect()
    }

    async fn webhooks_newest(
        &self,
        f: &WebhookFilter,
        levels: Option<&[EntityId]>,
    ) -> Result<Vec<Webhook>> {
        self.webhook_page(f, levels, Order::NewestFirst).await
    }
}
