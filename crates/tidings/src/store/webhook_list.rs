//! The list of webhooks, one page at a time: the API's (`GET /v1/webhooks`, oldest first)
//! and the console's deliveries (newest first, narrowed to the levels a key sees) are the
//! same query with the filters and cursor of [`WebhookFilter`].
//!
//! A page never costs in proportion to the webhooks stored. For every level it walks the
//! primary key (or, for failed and disabled webhooks, their partial indexes) in id order and
//! stops at the page's size. Narrowed to some levels, it walks each level's own index
//! (`webhooks_by_level`, or `webhooks_failed_by_level` and `webhooks_disabled_by_level`) for
//! at most a page and takes the page from those: reading the levels together through one
//! walk of `level_id IN (...)` would read, and sort, every webhook of the levels first.

use super::exec::Param;
use super::sql::{webhook_from_row, SqlStore, WEBHOOK_COLUMNS, WEBHOOK_FROM};
use super::{Result, Webhook, WebhookFilter};
use crate::domain::EntityId;

/// Which end of the creation order (the id order) a list starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    OldestFirst,
    NewestFirst,
}

impl Order {
    /// How the cursor compares (the page holds ids past it) and which way ids are sorted.
    fn sql(self) -> (&'static str, &'static str) {
        match self {
            Order::OldestFirst => (">", "ASC"),
            Order::NewestFirst => ("<", "DESC"),
        }
    }
}

/// Largest number of levels read by one query: SQLite takes at most 500 terms in a compound
/// SELECT.
pub(super) const LEVEL_CHUNK: usize = 500;

/// One part per level, joined by `UNION ALL`: `part(n)` writes the level's own `SELECT`,
/// with the level's id bound as `$n` (appended to `params`).
pub(super) fn union_per_level<'a>(
    levels: impl IntoIterator<Item = &'a EntityId>,
    params: &mut Vec<Param<'a>>,
    part: impl Fn(usize) -> String,
) -> String {
    levels
        .into_iter()
        .map(|level| {
            params.push(level.as_str().into());
            part(params.len())
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

impl SqlStore {
    /// Webhooks matching `f` in `order`, after the cursor `f.after`; only those addressed to
    /// `levels` when given.
    pub(super) async fn webhook_page(
        &self,
        f: &WebhookFilter,
        levels: Option<&[EntityId]>,
        order: Order,
    ) -> Result<Vec<Webhook>> {
        let (_, dir) = order.sql();
        // The page size is written out too: PostgreSQL's generic plan for an unknown limit
        // reads the table in parallel workers, whose start alone costs more than a page.
        let limit = f.limit;
        let mut params: Vec<Param> = Vec::new();
        let conditions = conditions(f, order, &mut params);
        let Some(levels) = levels_read(f, levels) else {
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} {WEBHOOK_FROM} WHERE 1 = 1{conditions} \
                 ORDER BY w.id {dir} LIMIT {limit}"
            );
            return self.read_webhooks(&sql, &params).await;
        };
        let mut page = Vec::new();
        for chunk in levels.chunks(LEVEL_CHUNK) {
            let mut params = params.clone();
            let parts = union_per_level(chunk.iter().copied(), &mut params, |n| {
                format!(
                    "SELECT id FROM (SELECT w.id FROM webhooks w \
                     WHERE w.level_id = ${n}{conditions} \
                     ORDER BY w.id {dir} LIMIT {limit}) l{n}"
                )
            });
            let sql = format!(
                "SELECT {WEBHOOK_COLUMNS} FROM ({parts} ORDER BY id {dir} LIMIT {limit}) page \
                 JOIN webhooks w ON w.id = page.id JOIN events e ON e.id = w.event_id \
                 ORDER BY w.id {dir}"
            );
            page.extend(self.read_webhooks(&sql, &params).await?);
        }
        if levels.len() > LEVEL_CHUNK {
            // A page from each chunk: the page is the first of them all.
            page.sort_by(|a, b| match order {
                Order::OldestFirst => a.id.cmp(&b.id),
                Order::NewestFirst => b.id.cmp(&a.id),
            });
            page.truncate(limit as usize);
        }
        Ok(page)
    }

    async fn read_webhooks(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Webhook>> {
        let rows = self.begin_read().await?.fetch(sql, params).await?;
        rows.iter().map(webhook_from_row).collect()
    }
}

/// The levels read, each by a walk of its own: the filter's level (if it is among
/// `levels`), else `levels`, once each; `None` for every level.
fn levels_read<'a>(
    f: &'a WebhookFilter,
    levels: Option<&'a [EntityId]>,
) -> Option<Vec<&'a EntityId>> {
    let mut read: Vec<&EntityId> = match (levels, &f.level_id) {
        (None, None) => return None,
        (None, Some(level)) => vec![level],
        (Some(levels), None) => levels.iter().collect(),
        (Some(levels), Some(level)) => levels.iter().filter(|l| *l == level).collect(),
    };
    read.sort();
    read.dedup();
    Some(read)
}

/// ` AND ...` for the cursor and each filter but the level, on webhooks as `w`, appending
/// their values to `params`.
fn conditions<'a>(f: &'a WebhookFilter, order: Order, params: &mut Vec<Param<'a>>) -> String {
    let (past, _) = order.sql();
    let mut sql = String::new();
    let mut bound = |sql: &mut String, clause: &str, value: Param<'a>| {
        params.push(value);
        sql.push_str(&format!(" AND {clause} ${}", params.len()));
    };
    if let Some(a) = &f.after {
        bound(&mut sql, &format!("w.id {past}"), a.as_str().into());
    }
    if let Some(s) = f.status {
        // Written out rather than bound (it is one of four fixed words), so that both
        // planners see that a partial index of failed (or of disabled) webhooks holds every
        // row asked for.
        sql.push_str(&format!(" AND w.status = '{}'", s.as_str()));
    }
    if let Some(t) = f.event_type {
        bound(&mut sql, "w.type =", t.as_str().into());
    }
    if let Some(s) = &f.subject_id {
        bound(&mut sql, "w.subject_id =", s.as_str().into());
    }
    if let Some(t) = f.since {
        bound(&mut sql, "w.created_at >=", t.0.into());
    }
    if let Some(t) = f.until {
        bound(&mut sql, "w.created_at <", t.0.into());
    }
    sql
}
