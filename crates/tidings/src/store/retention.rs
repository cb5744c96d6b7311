//! Pruning what is past retention, one short write transaction at a time.
//!
//! Everything is found through primary keys, with no index added for it (an index would
//! cost every write on the hot path): ids begin with their creation time in milliseconds
//! (`domain/ids.rs`), so "created before the cutoff" is a range of ids, and an event's
//! webhooks, written in the event's transaction with ids made at the same millisecond, share
//! the first 12 hex digits of its id. A batch walks events in id order from a cursor, looks at
//! the webhooks in the same id range, and removes:
//!
//! - finished webhooks (succeeded or failed, not due, not claimed) last changed before the
//!   cutoff that no failure e-mail still covers (no `notifications` row), with their attempts;
//! - the batch's events that have no webhook left;
//! - sent and `no_recipient` e-mails last changed before the cutoff, with their
//!   `notifications` rows (the failed webhooks they covered become prunable in turn).
//!
//! Queued e-mails keep their `notifications` rows, so the failed webhooks they cover, their
//! attempts and their events stay; pending webhooks (due, waiting for a retry or in flight)
//! and their events stay. Every delete is in one transaction with the checks, so a crash at
//! any point leaves either the batch or nothing. On SQLite foreign keys hold attempts to
//! their webhooks and webhooks to their events. PostgreSQL has neither key (each cost a
//! lookup per row written, and the webhook's key an index of webhooks by event): an attempt
//! is written only for a webhook its transaction has just updated, and goes with it here;
//! webhooks are written only with their event, and the store refuses one whose id was not
//! made in its event's millisecond, so the batch's range of webhook ids holds every webhook
//! its events have.

use super::exec::{Exec, Param};
use super::sql::{statement_chunks, SqlBySize, SqlStore};
use super::{Pruned, Result};
use crate::domain::{EntityId, Millis};

/// The lowest id that could be made at `at` or later: ids made before `at` sort below it.
fn first_id_at(at: Millis) -> String {
    format!("{:012x}000000000000", at.0.clamp(0, 0xffff_ffff_ffff))
}

/// Selects ids with `select` (`SELECT id …`), then runs each of `deletes` in turn over them
/// (nothing for none): a `DELETE … WHERE` head and the column the ids are of, with the texts
/// it was built to (a few for every count). Answers how many rows each removed.
///
/// Each list's lowest and highest ids bound the column as well: with the range a planner
/// sees a short walk of the column's index even when its statistics lag behind
/// (PostgreSQL, with no statistics on `attempts` yet, estimated 800 listed webhooks'
/// attempts at the whole table and read all of it: 400 ms a batch, against a few ms through
/// the index).
async fn delete_selected<const N: usize>(
    tx: &mut dyn Exec,
    select: &str,
    params: &[Param<'_>],
    deletes: [(&SqlBySize, &str, &str); N],
) -> Result<[u64; N]> {
    let ids = tx
        .fetch(select, params)
        .await?
        .iter()
        .map(|r| r.text(0).map(str::to_owned))
        .collect::<Result<Vec<_>>>()?;
    let mut removed = [0; N];
    for (n, (texts, head, column)) in removed.iter_mut().zip(deletes) {
        for chunk in statement_chunks(&ids) {
            let sql = texts.get(chunk.len(), |k| {
                let list: Vec<String> = (3..k + 3).map(|i| format!("${i}")).collect();
                format!(
                    "{head} {column} >= $1 AND {column} <= $2 AND {column} IN ({})",
                    list.join(", ")
                )
            });
            let (Some(low), Some(high)) = (chunk.iter().min(), chunk.iter().max()) else {
                continue;
            };
            let mut params: Vec<Param> = vec![low.as_str().into(), high.as_str().into()];
            params.extend(chunk.iter().map(|id| Param::from(id.as_str())));
            *n += tx.execute(&sql, &params).await?;
        }
    }
    Ok(removed)
}

impl SqlStore {
    pub(super) async fn prune_batch(
        &self,
        cutoff: Millis,
        after: Option<&EntityId>,
        limit: u32,
    ) -> Result<Pruned> {
        let before = first_id_at(cutoff);
        let lock = self.backend.skip_locked();
        let mut pruned = Pruned::default();
        let mut tx = self.begin_write().await?;

        // Finished e-mails, and the rows that tie failed webhooks to them.
        static NOTIFICATIONS: SqlBySize = SqlBySize::new();
        static EMAILS: SqlBySize = SqlBySize::new();
        [pruned.notifications, pruned.emails] = delete_selected(
            tx.as_mut(),
            "SELECT id FROM emails WHERE status IN ('sent', 'no_recipient') AND id < $1 \
             AND updated_at < $2 ORDER BY id LIMIT $3",
            &[
                before.as_str().into(),
                cutoff.0.into(),
                (limit as i64).into(),
            ],
            [
                (
                    &NOTIFICATIONS,
                    "DELETE FROM notifications WHERE",
                    "email_id",
                ),
                (
                    &EMAILS,
                    "DELETE FROM emails WHERE status <> 'queued' AND",
                    "id",
                ),
            ],
        )
        .await?;

        // Events created before the cutoff, from the cursor on.
        let events = tx
            .fetch(
                "SELECT id FROM events WHERE id > $1 AND id < $2 ORDER BY id LIMIT $3",
                &[
                    after.map_or("", EntityId::as_str).into(),
                    before.as_str().into(),
                    (limit as i64).into(),
                ],
            )
            .await?;
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            tx.commit().await?;
            return Ok(pruned);
        };
        let (first, last) = (first.text(0)?.to_owned(), last.text(0)?.to_owned());
        // The webhooks of these events lie in the ids made from the first event's
        // millisecond to the last one's.
        let low = format!("{}000000000000", &first[..12]);
        let high = format!("{}ffffffffffff", &last[..12]);
        let sql = format!(
            "SELECT w.id FROM webhooks w WHERE w.id >= $1 AND w.id <= $2 \
             AND w.event_id >= $3 AND w.event_id <= $4 \
             AND w.status IN ('succeeded', 'failed') AND w.due_at IS NULL \
             AND w.claimed_by IS NULL AND w.updated_at < $5 \
             AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.webhook_id = w.id) \
             ORDER BY w.id{lock}"
        );
        static ATTEMPTS: SqlBySize = SqlBySize::new();
        static WEBHOOKS: SqlBySize = SqlBySize::new();
        [pruned.attempts, pruned.webhooks] = delete_selected(
            tx.as_mut(),
            &sql,
            &[
                low.as_str().into(),
                high.as_str().into(),
                first.as_str().into(),
                last.as_str().into(),
                cutoff.0.into(),
            ],
            [
                (&ATTEMPTS, "DELETE FROM attempts WHERE", "webhook_id"),
                (&WEBHOOKS, "DELETE FROM webhooks WHERE", "id"),
            ],
        )
        .await?;
        // An event goes once no webhook of it is left. Its webhooks lie in the ids of its
        // millisecond, so one walk of the batch's range of webhook ids (what the batch kept)
        // tells which events still have one: `NOT IN` hashes that walk once, on both
        // databases. (The range matters: over the whole table PostgreSQL may hash every
        // webhook, 3 s a batch at 1.6 million webhooks.)
        pruned.events = tx
            .execute(
                "DELETE FROM events WHERE id >= $1 AND id <= $2 AND id NOT IN \
                 (SELECT w.event_id FROM webhooks w WHERE w.id >= $3 AND w.id <= $4)",
                &[
                    first.as_str().into(),
                    last.as_str().into(),
                    low.as_str().into(),
                    high.as_str().into(),
                ],
            )
            .await?;
        tx.commit().await?;
        if events.len() as u32 == limit {
            pruned.next = Some(EntityId::parse(&last).map_err(super::StoreError::Corrupt)?);
        }
        Ok(pruned)
    }

    pub(super) async fn disk_size(&self) -> Result<u64> {
        use sqlx::Row as _;
        match self.backend {
            super::sql::Backend::Sqlite => {
                let path = super::exec::sqlite_path(&self.url)?;
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                Ok([path.into_os_string(), wal]
                    .iter()
                    .filter_map(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum())
            }
            super::sql::Backend::Postgres => {
                let row = sqlx::query("SELECT pg_database_size(current_database()) AS n")
                    .fetch_one(&self.reader)
                    .await?;
                Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_id_at;
    use crate::domain::{EntityId, Millis};

    #[test]
    fn ids_made_before_a_moment_sort_below_its_first_id() {
        let at = Millis(1_700_000_000_000);
        let first = first_id_at(at);
        assert_eq!(first, "018bcfe56800000000000000");
        assert!(EntityId::generate(Millis(at.0 - 1)).as_str() < first.as_str());
        assert!(EntityId::generate(at).as_str() >= first.as_str());
        assert_eq!(first_id_at(Millis(-5)), "000000000000000000000000");
    }
}
