//! Aggregate reads for the web console: each page's figures in one query over the levels it
//! shows, never a query per row.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row as _;

use super::exec::Param;
use super::sql::{webhook_from_row, SqlStore, WEBHOOK_COLUMNS, WEBHOOK_FROM};
use super::{QueueStats, Result, Webhook, WebhookFilter};
use crate::domain::{EntityId, Millis};

/// Delivery attempts in one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bucket {
    /// Bucket number counted from the start of the window.
    pub index: i64,
    pub succeeded: u64,
    pub failed: u64,
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
    /// Attempts started since `since`, counted per `bucket_ms`, of the webhooks addressed to
    /// `levels` (every level when `None`); buckets without attempts are left out.
    async fn attempt_buckets(
        &self,
        levels: Option<&[EntityId]>,
        since: Millis,
        bucket_ms: i64,
    ) -> Result<Vec<Bucket>>;

    /// Webhooks waiting for an attempt among `levels`, and the due time of the oldest one
    /// due by `now` and not claimed.
    async fn level_queue(&self, levels: &[EntityId], now: Millis) -> Result<QueueStats>;

    /// The latest attempt's status code and error of each of `webhooks` that has one.
    async fn last_attempts(&self, webhooks: &[EntityId]) -> Result<Vec<LastAttempt>>;

    /// Webhooks matching `filter`, newest first; `filter.after` is the cursor, read as
    /// "older than this id". Only those addressed to `levels` when given.
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

fn count(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

/// Runs a read on the reader pool. Aggregates are read by their values' own types (SQLite
/// gives computed columns no declared type).
async fn fetch(store: &SqlStore, sql: &str, params: &[Param<'_>]) -> Result<Vec<AnyRow>> {
    let mut q = sqlx::query(sql);
    for p in params {
        q = match *p {
            Param::Text(s) => q.bind(s),
            Param::Int(i) => q.bind(i),
            Param::OptText(v) => q.bind(v),
            Param::OptInt(v) => q.bind(v),
        };
    }
    Ok(q.fetch_all(&store.reader).await?)
}

fn int(r: &AnyRow, i: usize) -> Result<Option<i64>> {
    Ok(r.try_get::<Option<i64>, _>(i)?)
}

#[async_trait]
impl ConsoleStore for SqlStore {
    async fn attempt_buckets(
        &self,
        levels: Option<&[EntityId]>,
        since: Millis,
        bucket_ms: i64,
    ) -> Result<Vec<Bucket>> {
        if levels.is_some_and(<[EntityId]>::is_empty) {
            return Ok(Vec::new());
        }
        let mut params: Vec<Param> = vec![since.0.into(), bucket_ms.max(1).into()];
        let (join, clause) = match levels {
            Some(_) => (
                " JOIN webhooks w ON w.id = t.webhook_id",
                level_clause("w.level_id", levels, &mut params),
            ),
            None => ("", String::new()),
        };
        let sql = format!(
            "SELECT CAST((t.started_at - $1) / $2 AS BIGINT) AS bucket, \
                    CAST(SUM(CASE WHEN t.error IS NULL THEN 1 ELSE 0 END) AS BIGINT), \
                    CAST(SUM(CASE WHEN t.error IS NULL THEN 0 ELSE 1 END) AS BIGINT) \
             FROM attempts t{join} WHERE t.started_at >= $1{clause} \
             GROUP BY 1 ORDER BY 1"
        );
        let rows = fetch(self, &sql, &params).await?;
        rows.iter()
            .map(|r| {
                Ok(Bucket {
                    index: int(r, 0)?.unwrap_or(0),
                    succeeded: count(int(r, 1)?),
                    failed: count(int(r, 2)?),
                })
            })
            .collect()
    }

    async fn level_queue(&self, levels: &[EntityId], now: Millis) -> Result<QueueStats> {
        if levels.is_empty() {
            return Ok(QueueStats::default());
        }
        let mut params: Vec<Param> = vec![now.0.into()];
        let clause = level_clause("level_id", Some(levels), &mut params);
        let sql = format!(
            "SELECT CAST(COUNT(*) AS BIGINT), \
                    MIN(CASE WHEN due_at <= $1 AND claimed_by IS NULL THEN due_at END) \
             FROM webhooks WHERE due_at IS NOT NULL{clause}"
        );
        let rows = fetch(self, &sql, &params).await?;
        let Some(r) = rows.first() else {
            return Ok(QueueStats::default());
        };
        Ok(QueueStats {
            pending: count(int(r, 0)?),
            oldest_due: int(r, 1)?.map(Millis),
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
        if levels.is_some_and(<[EntityId]>::is_empty) {
            return Ok(Vec::new());
        }
        let mut sql = format!("SELECT {WEBHOOK_COLUMNS} {WEBHOOK_FROM} WHERE 1 = 1");
        let mut params: Vec<Param> = Vec::new();
        if let Some(a) = &f.after {
            params.push(a.as_str().into());
            sql.push_str(&format!(" AND w.id < ${}", params.len()));
        }
        if let Some(s) = f.status {
            params.push(s.as_str().into());
            sql.push_str(&format!(" AND w.status = ${}", params.len()));
        }
        if let Some(t) = f.event_type {
            params.push(t.as_str().into());
            sql.push_str(&format!(" AND w.type = ${}", params.len()));
        }
        if let Some(l) = &f.level_id {
            params.push(l.as_str().into());
            sql.push_str(&format!(" AND w.level_id = ${}", params.len()));
        }
        if let Some(s) = &f.subject_id {
            params.push(s.as_str().into());
            sql.push_str(&format!(" AND w.subject_id = ${}", params.len()));
        }
        if let Some(t) = f.since {
            params.push(t.0.into());
            sql.push_str(&format!(" AND w.created_at >= ${}", params.len()));
        }
        if let Some(t) = f.until {
            params.push(t.0.into());
            sql.push_str(&format!(" AND w.created_at < ${}", params.len()));
        }
        sql.push_str(&level_clause("w.level_id", levels, &mut params));
        params.push((f.limit as i64).into());
        sql.push_str(&format!(" ORDER BY w.id DESC LIMIT ${}", params.len()));
        let rows = self.begin_read().await?.fetch(&sql, &params).await?;
        rows.iter().map(webhook_from_row).collect()
    }
}
