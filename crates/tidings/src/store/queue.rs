//! The delivery queue's statements: claiming due webhooks, recording attempts (with what
//! follows from them: failure notifications, ordered successors, disabled endpoints, health
//! counters), handing claims back, retries. The webhooks table is the queue: `due_at` is
//! when a row is next due (a claim's lease end while claimed), `claimed_by` who holds it.

use std::collections::HashMap;

use sqlx::Row as _;

use super::endpoints::{self, Outcome};
use super::exec::{Exec, Param, Row};
use super::sql::{
    parse_id, secrets_from_row, statement_chunks, success_from, typed_value_rows, webhook_from_row,
    Backend, SqlBySize, SqlStore, WEBHOOK_WIDTH,
};
use super::{Claimed, Next, Recorded, Result, RetryOutcome, WebhookStatus};
use crate::domain::{EntityId, Millis};

/// The two outboxes that are worked as queues: webhooks and failure e-mails.
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

/// Recording's update of `n` webhooks: `$1` now, four parameters a row (id, status, attempts,
/// due time), the owner last; only rows the owner still holds are updated, and returned. A
/// row whose id is NULL is padding ([`Backend::record_chunks`]) and matches no webhook.
pub(super) fn record_sql(n: usize) -> String {
    let rows = typed_value_rows(n, 2, &[None, None, Some("BIGINT"), Some("BIGINT")]);
    // A retry of a webhook whose endpoint was disabled meanwhile waits as `disabled` instead.
    let held = "v.column2 = 'pending' AND EXISTS (SELECT 1 FROM endpoints en \
                WHERE en.level_id = webhooks.level_id AND en.enabled = 0)";
    format!(
        "UPDATE webhooks SET status = CASE WHEN {held} THEN 'disabled' ELSE v.column2 END, \
         attempts = v.column3, due_at = CASE WHEN {held} THEN NULL ELSE v.column4 END, \
         claimed_by = NULL, updated_at = $1 FROM (VALUES {}) AS v \
         WHERE webhooks.id = v.column1 AND webhooks.claimed_by = ${} \
         RETURNING webhooks.id, webhooks.level_id, webhooks.url, webhooks.ordered, \
         webhooks.subject_id",
        rows,
        2 + n * 4
    )
}

/// Recording's insert of `n` attempts, seven parameters a row (webhook, number, start,
/// duration, status code, error, body); rows whose webhook is NULL are padding, not written.
fn attempts_sql(n: usize) -> String {
    let int = Some("BIGINT");
    format!(
        "INSERT INTO attempts (webhook_id, number, started_at, duration_ms, status_code, error, body) \
         SELECT * FROM (VALUES {}) AS v WHERE v.column1 IS NOT NULL \
         ON CONFLICT (webhook_id, number) DO NOTHING",
        typed_value_rows(n, 1, &[None, int, int, int, int, None, None])
    )
}

/// What a recorded batch's transaction begins with on PostgreSQL: every statement in it
/// finds its rows by key, in no particular order.
pub(super) const RECORD_BEGIN: &str = super::sql::BEGIN_BY_KEY_ONLY;

impl SqlStore {
    /// Records a batch of finished attempts (see [`Store::record`]).
    pub(super) async fn record_attempts(
        &self,
        owner: &str,
        results: &[Recorded],
        now: Millis,
    ) -> Result<Vec<usize>> {
        let mut tx = self.begin_write_with(false, RECORD_BEGIN).await?;
        // Each webhook's new state, many rows a statement (`record_sql`).
        let mut kept: Vec<&Recorded> = Vec::with_capacity(results.len());
        let mut positions = Vec::with_capacity(results.len());
        // What the returned rows say of each kept webhook: level, URL, ordered, subject.
        let mut rows: HashMap<String, (EntityId, String, bool, String)> =
            HashMap::with_capacity(results.len());
        let mut first = 0;
        for (chunk, size) in self.backend.record_chunks(results) {
            let n = first;
            first += chunk.len();
            static UPDATES: SqlBySize = SqlBySize::new();
            let sql = UPDATES.get(size, record_sql);
            let mut params: Vec<Param> = Vec::with_capacity(2 + size * 4);
            params.push(now.0.into());
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
            // The padding: rows whose NULL id matches no webhook.
            params.resize(1 + size * 4, Param::OptText(None));
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
            tx.execute_later(
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
                    self.move_queued_behind(tx.as_mut(), r, level_id, subject, "due_at < $1", t)
                        .await?;
                }
                // Finished after a retry: what was held back until that retry is due now
                // (the retry may have come early, through the API).
                Next::Succeeded | Next::Failed if *ordered && r.attempt.number > 1 => {
                    let which = "due_at > $1 AND attempts = 0";
                    self.move_queued_behind(tx.as_mut(), r, level_id, subject, which, now)
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
        for (chunk, size) in self.backend.record_chunks(&kept) {
            static INSERTS: SqlBySize = SqlBySize::new();
            let sql = INSERTS.get(size, attempts_sql);
            let mut params: Vec<Param> = chunk
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
            // The padding: rows without a webhook, which the statement skips.
            params.resize(size * 7, Param::OptText(None));
            // Sent with the commit.
            tx.execute_later(&sql, &params).await?;
        }
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
        match self.backend {
            // One writer: the counters cost no wait in the record's own transaction.
            Backend::Sqlite => {
                endpoints::record_health(tx.as_mut(), &deltas).await?;
                tx.commit().await?;
            }
            // Concurrent record transactions would wait on each other's health rows.
            Backend::Postgres => {
                tx.commit().await?;
                self.health.add(deltas);
            }
        }
        Ok(positions)
    }

    pub(super) async fn release_claims(
        &self,
        owner: &str,
        ids: &[EntityId],
        due_at: Millis,
    ) -> Result<()> {
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

    pub(super) async fn retry_now(&self, id: &EntityId, now: Millis) -> Result<RetryOutcome> {
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

    /// When the earliest waiting row of `queue` is due (claimed rows count at their lease's end).
    pub(super) async fn earliest_due(&self, queue: Queue) -> Result<Option<Millis>> {
        let sql = format!(
            "SELECT MIN(due_at) AS next FROM {} WHERE due_at IS NOT NULL",
            queue.table()
        );
        let row = sqlx::query(&sql).fetch_one(&self.reader).await?;
        Ok(row.try_get::<Option<i64>, _>("next")?.map(Millis))
    }

    /// Makes due at `at` the unfinished, unclaimed webhooks queued behind the ordered one `r`
    /// recorded (to its level, about its subject, made after it) that match `which` (a
    /// condition on `due_at`, `$1` being `at`).
    async fn move_queued_behind(
        &self,
        tx: &mut dyn Exec,
        r: &Recorded,
        level_id: &EntityId,
        subject: &str,
        which: &str,
        at: Millis,
    ) -> Result<()> {
        let seq = self.backend.seq();
        tx.execute(
            &format!(
                "UPDATE webhooks SET due_at = $1 WHERE level_id = $2 AND subject_id = $3 \
                 AND ordered = 1 AND due_at IS NOT NULL AND {which} \
                 AND claimed_by IS NULL \
                 AND {seq} > (SELECT h.{seq} FROM webhooks h WHERE h.id = $4)"
            ),
            &[
                at.0.into(),
                level_id.as_str().into(),
                subject.into(),
                r.webhook_id.as_str().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Runs the claim statement of either queue, alone in the write transaction `tx`, and
    /// answers the rows it returns. Its parameters: `$1` the lease's end, `$2` the owner, `$3`
    /// now, `$4` how many rows at most.
    pub(super) async fn claim_rows(
        mut tx: Box<dyn Exec>,
        sql: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<Row>> {
        let rows = tx
            .fetch(
                sql,
                &[
                    lease_until.0.into(),
                    owner.into(),
                    now.0.into(),
                    (limit as i64).into(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(rows)
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
        let tx = self.begin_write_now().await?;
        let rows = Self::claim_rows(tx, &sql, owner, now, lease_until, limit).await?;
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
