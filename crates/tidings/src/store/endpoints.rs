//! Endpoint settings and health in the store.
//!
//! Settings live in `endpoints` (a level without a row has the defaults). Health is kept up
//! to date as attempts are recorded ([`record_health`]; in the record transaction on SQLite,
//! gathered for a tenth of a second after it on PostgreSQL, see [`HealthWriter`]): one row
//! per level with the last success and failure, 24 hourly slots of counters per level and 60
//! slots of counters by minute, so reading health or the console's charts never scans
//! attempts.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::exec::{Exec, Param, Row};
use super::pg::PgWriter;
use super::sql::{SqlBySize, SqlStore};
use super::{Result, StoreError};
use crate::domain::endpoint::{Endpoint, SuccessRule};
use crate::domain::{EntityId, Millis};

/// A level's delivery health, kept as attempts are recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Health {
    pub last_success_at: Option<Millis>,
    pub last_failure_at: Option<Millis>,
    /// What the last failed attempt got (status or transport error).
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// Attempts in the last 24 hours (the current hour and the 23 before it).
    pub successes_24h: u64,
    pub failures_24h: u64,
}

impl Health {
    /// Successes over attempts in the last 24 hours; `None` without attempts.
    pub fn success_ratio_24h(&self) -> Option<f64> {
        let all = self.successes_24h + self.failures_24h;
        (all > 0).then(|| self.successes_24h as f64 / all as f64)
    }
}

/// Endpoint settings and health.
#[async_trait]
pub trait EndpointStore: Send + Sync {
    /// A level's endpoint settings (the defaults when none are stored).
    async fn endpoint(&self, level_id: &EntityId) -> Result<Endpoint>;

    /// Stores a level's settings. `enabled` and `disabled_reason` are written only with
    /// `set_enabled` (so a change of other settings never undoes a concurrent 410's
    /// disabling). Disabling an enabled endpoint turns its pending webhooks that are not in
    /// flight into `disabled` ones, in the same transaction.
    async fn put_endpoint(
        &self,
        level_id: &EntityId,
        endpoint: &Endpoint,
        set_enabled: bool,
        now: Millis,
    ) -> Result<()>;

    /// The health of many levels in one query; a level with no recorded attempt is absent.
    async fn endpoint_health(
        &self,
        level_ids: &[EntityId],
        now: Millis,
    ) -> Result<HashMap<EntityId, Health>>;
}

pub(super) const HOUR_MS: i64 = 3_600_000;
pub(super) const MINUTE_MS: i64 = 60_000;
/// Largest number of level ids in one health query.
const HEALTH_CHUNK: usize = 500;

pub(super) const ENDPOINT_COLUMNS: &str =
    "level_id, event_types, ordered, enabled, disabled_reason, success";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// An endpoint from the columns of [`ENDPOINT_COLUMNS`], starting at column 0.
pub(super) fn endpoint_from_row(row: &Row) -> Result<(EntityId, Endpoint)> {
    let id = EntityId::parse(row.text(0)?).map_err(corrupt)?;
    let event_types = row
        .opt_text(1)?
        .map(Endpoint::parse_event_types_text)
        .transpose()
        .map_err(corrupt)?;
    Ok((
        id,
        Endpoint {
            event_types,
            ordered: row.int(2)? != 0,
            enabled: row.int(3)? != 0,
            disabled_reason: row.opt_text(4)?.map(str::to_owned),
            success: SuccessRule::from_str(row.text(5)?).map_err(corrupt)?,
        },
    ))
}

/// Disables a level's endpoint for `reason` if it is enabled, and turns its pending webhooks
/// that are not in flight into `disabled` ones. Returns whether it was enabled.
pub(super) async fn disable(
    tx: &mut dyn Exec,
    level_id: &EntityId,
    reason: &str,
    now: Millis,
) -> Result<bool> {
    let changed = tx
        .fetch(
            "INSERT INTO endpoints (level_id, enabled, disabled_reason, disabled_at, updated_at) \
             VALUES ($1, 0, $2, $3, $3) ON CONFLICT (level_id) DO UPDATE SET enabled = 0, \
             disabled_reason = excluded.disabled_reason, disabled_at = excluded.disabled_at, \
             updated_at = excluded.updated_at WHERE endpoints.enabled = 1 RETURNING level_id",
            &[level_id.as_str().into(), reason.into(), now.0.into()],
        )
        .await?;
    if changed.is_empty() {
        return Ok(false);
    }
    tx.execute(
        "UPDATE webhooks SET status = 'disabled', due_at = NULL, updated_at = $1 \
         WHERE level_id = $2 AND status = 'pending' AND claimed_by IS NULL",
        &[now.0.into(), level_id.as_str().into()],
    )
    .await?;
    Ok(true)
}

/// What one batch of recorded attempts changes in one level's health.
#[derive(Debug, Default, PartialEq)]
pub(super) struct HealthDelta {
    pub last_success_at: Option<Millis>,
    pub last_failure_at: Option<Millis>,
    pub last_error: Option<String>,
    /// Failures after the batch's last success (all of them when none succeeded).
    pub trailing_failures: i64,
    /// Successes and failures by hour (Unix milliseconds / one hour).
    pub hours: BTreeMap<i64, (i64, i64)>,
    /// Successes and failures by minute (Unix milliseconds / one minute).
    pub minutes: BTreeMap<i64, (i64, i64)>,
}

/// One recorded attempt as health sees it: its level, whether it succeeded, when, and
/// what it got when it failed.
pub(super) struct Outcome<'a> {
    pub level_id: &'a EntityId,
    pub succeeded: bool,
    pub at: Millis,
    pub error: Option<String>,
}

/// Sums a batch's attempts per level, in the batch's order (levels sorted by id, so that
/// concurrent writers lock health rows in one order).
pub(super) fn health_deltas<'a>(
    outcomes: impl IntoIterator<Item = Outcome<'a>>,
) -> BTreeMap<EntityId, HealthDelta> {
    let mut deltas: BTreeMap<EntityId, HealthDelta> = BTreeMap::new();
    for o in outcomes {
        let d = deltas.entry(o.level_id.clone()).or_default();
        let hour = d.hours.entry(o.at.0.div_euclid(HOUR_MS)).or_default();
        let minute = d.minutes.entry(o.at.0.div_euclid(MINUTE_MS)).or_default();
        if o.succeeded {
            hour.0 += 1;
            minute.0 += 1;
            d.last_success_at = Some(d.last_success_at.map_or(o.at, |t| t.max(o.at)));
            d.trailing_failures = 0;
        } else {
            hour.1 += 1;
            minute.1 += 1;
            if d.last_failure_at.is_none_or(|t| o.at >= t) {
                d.last_failure_at = Some(o.at);
                d.last_error = o.error;
            }
            d.trailing_failures += 1;
        }
    }
    deltas
}

impl HealthDelta {
    /// Folds in the delta of a batch recorded after this one, so that writing the sum
    /// changes a health row as writing the two in turn would (see [`record_health`]).
    fn then(&mut self, later: HealthDelta) {
        self.trailing_failures = match later.last_success_at {
            Some(_) => later.trailing_failures,
            None => self.trailing_failures + later.trailing_failures,
        };
        self.last_success_at = later.last_success_at.or(self.last_success_at);
        if later.last_failure_at.is_some() {
            self.last_failure_at = later.last_failure_at;
            self.last_error = later.last_error;
        }
        for (mine, theirs) in [
            (&mut self.hours, later.hours),
            (&mut self.minutes, later.minutes),
        ] {
            for (unit, (s, f)) in theirs {
                let c = mine.entry(unit).or_default();
                c.0 += s;
                c.1 += f;
            }
        }
    }
}

/// Adds `later` to the deltas waiting in `pending`.
fn fold_into(
    pending: &mut BTreeMap<EntityId, HealthDelta>,
    later: BTreeMap<EntityId, HealthDelta>,
) {
    for (id, d) in later {
        match pending.entry(id) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(d);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => o.get_mut().then(d),
        }
    }
}

/// How long the health deltas of recorded batches gather on PostgreSQL before they are
/// written together.
const HEALTH_LINGER: Duration = Duration::from_millis(100);

/// Health deltas waiting to be written on PostgreSQL, and the turn to write them.
///
/// There, record transactions run side by side (several per instance, and several
/// instances), and every batch touches the health rows of the levels it delivered to: the
/// reseller's row in nearly all of them. Written inside the record transaction, those rows
/// stayed locked until its commit, so concurrent record transactions waited for each other's
/// commits in turn. Instead a batch's deltas wait in memory once its record has committed,
/// and are written in a transaction of their own, one at a time per instance, at most
/// [`HEALTH_LINGER`] later, together with those of every batch recorded meanwhile: a
/// transaction and three statements per tenth of a second, not per recorded batch (at the
/// benchmark's maximum rate they had been a twelfth of the server's statement time). Every
/// read of health or of the console's charts first writes what waits
/// ([`HealthWriter::flush`]), so it sees every attempt recorded before it; so does the
/// recorder when it stops.
///
/// Health is a summary for people (the API's and the console's endpoint health and charts):
/// a crash loses the counts of the last tenth of a second, never a webhook's state.
#[derive(Default)]
pub(super) struct HealthWriter {
    waiting: Arc<HealthWaiting>,
    /// Where they are written: PostgreSQL's write pool (`None` on SQLite, where health is
    /// written in the record transaction).
    writer: Option<PgWriter>,
}

#[derive(Default)]
struct HealthWaiting {
    pending: std::sync::Mutex<BTreeMap<EntityId, HealthDelta>>,
    turn: tokio::sync::Mutex<()>,
    /// A write is due within the linger.
    scheduled: AtomicBool,
}

impl HealthWriter {
    /// Health written apart from the record, through `writer`.
    pub(super) fn postgres(writer: PgWriter) -> Self {
        HealthWriter {
            waiting: Arc::default(),
            writer: Some(writer),
        }
    }

    /// Adds a recorded batch's deltas to those waiting; they are written within
    /// [`HEALTH_LINGER`].
    pub(super) fn add(&self, deltas: BTreeMap<EntityId, HealthDelta>) {
        let Some(writer) = &self.writer else { return };
        fold_into(
            &mut self.waiting.pending.lock().expect("health deltas"),
            deltas,
        );
        if self.waiting.scheduled.swap(true, Ordering::SeqCst) {
            return; // the write already due takes these too
        }
        let (waiting, writer) = (self.waiting.clone(), writer.clone());
        tokio::spawn(async move {
            tokio::time::sleep(HEALTH_LINGER).await;
            // Deltas added from here on schedule the next write.
            waiting.scheduled.store(false, Ordering::SeqCst);
            waiting.write(&writer).await;
        });
    }

    /// Writes every delta waiting now.
    pub(super) async fn flush(&self) {
        if let Some(writer) = &self.writer {
            self.waiting.write(writer).await;
        }
    }
}

impl HealthWaiting {
    /// Writes every delta waiting, one writer at a time. A failure is logged and the deltas
    /// wait for the next write: the attempts themselves are recorded already.
    async fn write(&self, writer: &PgWriter) {
        let _turn = self.turn.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().expect("health deltas"));
        if batch.is_empty() {
            return;
        }
        let written = async {
            let mut tx = Box::new(writer.begin("BEGIN").await?);
            record_health(tx.as_mut(), &batch).await?;
            tx.commit().await
        };
        if let Err(e) = written.await {
            tracing::warn!(error = %e, levels = batch.len(), "endpoint health not written; it waits for the next write");
            let mut pending = self.pending.lock().expect("health deltas");
            let later = std::mem::replace(&mut *pending, batch);
            fold_into(&mut pending, later);
        }
    }
}

/// Adds a batch's health deltas in `tx`: one statement per 64 levels for the health rows,
/// one per 64 (level, hour) and one per 64 (level, minute) for the counters.
pub(super) async fn record_health(
    tx: &mut dyn Exec,
    deltas: &BTreeMap<EntityId, HealthDelta>,
) -> Result<()> {
    let levels: Vec<(&EntityId, &HealthDelta)> = deltas.iter().collect();
    for chunk in super::sql::statement_chunks(&levels) {
        let sql = format!(
            "INSERT INTO endpoint_health (level_id, last_success_at, last_failure_at, last_error, \
             consecutive_failures) VALUES {} ON CONFLICT (level_id) DO UPDATE SET \
             last_success_at = COALESCE(excluded.last_success_at, endpoint_health.last_success_at), \
             last_failure_at = COALESCE(excluded.last_failure_at, endpoint_health.last_failure_at), \
             last_error = CASE WHEN excluded.last_failure_at IS NULL THEN endpoint_health.last_error \
             ELSE excluded.last_error END, \
             consecutive_failures = CASE WHEN excluded.last_success_at IS NULL \
             THEN endpoint_health.consecutive_failures + excluded.consecutive_failures \
             ELSE excluded.consecutive_failures END",
            super::sql::value_rows(chunk.len(), 5)
        );
        let params: Vec<Param> = chunk
            .iter()
            .flat_map(|(id, d)| {
                [
                    id.as_str().into(),
                    d.last_success_at.map(|t| t.0).into(),
                    d.last_failure_at.map(|t| t.0).into(),
                    d.last_error.as_deref().into(),
                    d.trailing_failures.into(),
                ]
            })
            .collect();
        tx.execute_later(&sql, &params).await?;
    }
    static HOURS: SqlBySize = SqlBySize::new();
    static MINUTES: SqlBySize = SqlBySize::new();
    add_to_slots(tx, &HOURS, Slots::HOURS, deltas, |d| &d.hours).await?;
    add_to_slots(tx, &MINUTES, Slots::MINUTES, deltas, |d| &d.minutes).await?;
    Ok(())
}

/// A table of counters by level and time unit, kept in a ring of slots per level.
pub(super) struct Slots {
    pub table: &'static str,
    /// The column holding the unit's number (Unix milliseconds / the unit's length).
    pub unit: &'static str,
    /// Slots per level: `slot` = unit number mod this.
    pub count: i64,
}

impl Slots {
    /// The last 24 hours (endpoint health, the console's per-hour chart).
    pub const HOURS: Slots = Slots {
        table: "endpoint_hours",
        unit: "hour",
        count: 24,
    };
    /// The last 60 minutes (the console's per-minute chart).
    pub const MINUTES: Slots = Slots {
        table: "endpoint_minutes",
        unit: "minute",
        count: 60,
    };
}

/// The rows a batch adds to a ring of `count` slots per level: (level, unit, successes,
/// failures), by level and unit. Of a level's units, only those within `count` of its newest
/// are kept: an older one would share a slot with a newer one and be overwritten by it, and
/// PostgreSQL refuses one statement that changes the same row twice.
fn slot_rows(
    deltas: &BTreeMap<EntityId, HealthDelta>,
    count: i64,
    counts: impl Fn(&HealthDelta) -> &BTreeMap<i64, (i64, i64)>,
) -> Vec<(&EntityId, i64, i64, i64)> {
    let mut rows = Vec::new();
    for (id, d) in deltas {
        let units = counts(d);
        let Some(newest) = units.keys().next_back() else {
            continue;
        };
        rows.extend(
            units
                .range(newest - count + 1..)
                .map(|(u, (s, f))| (id, *u, *s, *f)),
        );
    }
    rows
}

/// Adds a batch's successes and failures per level and time unit to `slots`: one row per
/// level and unit the batch touched, 64 rows a statement.
async fn add_to_slots(
    tx: &mut dyn Exec,
    texts: &SqlBySize,
    slots: Slots,
    deltas: &BTreeMap<EntityId, HealthDelta>,
    counts: impl Fn(&HealthDelta) -> &BTreeMap<i64, (i64, i64)>,
) -> Result<()> {
    let Slots { table, unit, count } = slots;
    let rows = slot_rows(deltas, count, counts);
    for chunk in super::sql::statement_chunks(&rows) {
        // A slot holding an older unit is overwritten; one holding a newer unit is kept.
        let sql = texts.get(chunk.len(), |n| {
            format!(
                "INSERT INTO {table} (level_id, slot, {unit}, successes, failures) VALUES {} \
                 ON CONFLICT (level_id, slot) DO UPDATE SET \
                 successes = CASE WHEN {table}.{unit} = excluded.{unit} \
                 THEN {table}.successes + excluded.successes \
                 WHEN {table}.{unit} > excluded.{unit} THEN {table}.successes \
                 ELSE excluded.successes END, \
                 failures = CASE WHEN {table}.{unit} = excluded.{unit} \
                 THEN {table}.failures + excluded.failures \
                 WHEN {table}.{unit} > excluded.{unit} THEN {table}.failures \
                 ELSE excluded.failures END, \
                 {unit} = CASE WHEN {table}.{unit} > excluded.{unit} THEN {table}.{unit} \
                 ELSE excluded.{unit} END",
                super::sql::value_rows(n, 5)
            )
        });
        let params: Vec<Param> = chunk
            .iter()
            .flat_map(|(id, u, s, f)| {
                [
                    id.as_str().into(),
                    u.rem_euclid(count).into(),
                    (*u).into(),
                    (*s).into(),
                    (*f).into(),
                ]
            })
            .collect();
        tx.execute_later(&sql, &params).await?;
    }
    Ok(())
}

#[async_trait]
impl EndpointStore for SqlStore {
    async fn endpoint(&self, level_id: &EntityId) -> Result<Endpoint> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE level_id = $1");
        let rows = self
            .begin_read()
            .await?
            .fetch(&sql, &[level_id.as_str().into()])
            .await?;
        match rows.first() {
            Some(r) => Ok(endpoint_from_row(r)?.1),
            None => Ok(Endpoint::default()),
        }
    }

    async fn put_endpoint(
        &self,
        level_id: &EntityId,
        e: &Endpoint,
        set_enabled: bool,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if set_enabled && !e.enabled {
            let reason = e.disabled_reason.as_deref().unwrap_or("disabled");
            disable(tx.as_mut(), level_id, reason, now).await?;
        }
        let types = e.event_types_text();
        tx.execute(
            "INSERT INTO endpoints (level_id, event_types, ordered, enabled, disabled_reason, \
             disabled_at, success, updated_at) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7) \
             ON CONFLICT (level_id) DO UPDATE SET event_types = excluded.event_types, \
             ordered = excluded.ordered, \
             enabled = CASE WHEN $8 = 1 THEN excluded.enabled ELSE endpoints.enabled END, \
             disabled_reason = CASE WHEN $8 = 1 THEN excluded.disabled_reason \
             ELSE endpoints.disabled_reason END, \
             disabled_at = CASE WHEN $8 = 1 AND excluded.enabled = 1 THEN NULL \
             ELSE endpoints.disabled_at END, \
             success = excluded.success, updated_at = excluded.updated_at",
            &[
                level_id.as_str().into(),
                types.as_deref().into(),
                i64::from(e.ordered).into(),
                i64::from(e.enabled).into(),
                e.disabled_reason.as_deref().into(),
                e.success.as_str().into(),
                now.0.into(),
                i64::from(set_enabled).into(),
            ],
        )
        .await?;
        tx.commit().await
    }

    async fn endpoint_health(
        &self,
        level_ids: &[EntityId],
        now: Millis,
    ) -> Result<HashMap<EntityId, Health>> {
        self.health.flush().await;
        let mut out = HashMap::new();
        // The current hour and the 23 before it.
        let oldest = now.0.div_euclid(HOUR_MS) - 23;
        let mut tx = self.begin_read().await?;
        for chunk in level_ids.chunks(HEALTH_CHUNK) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            // One row per level and counted hour (a left join: none for a quiet day).
            let sql = format!(
                "SELECT h.level_id, h.last_success_at, h.last_failure_at, h.last_error, \
                 h.consecutive_failures, x.successes, x.failures \
                 FROM endpoint_health h LEFT JOIN endpoint_hours x \
                 ON x.level_id = h.level_id AND x.hour >= $1 WHERE h.level_id IN ({list})"
            );
            let mut params: Vec<Param> = vec![oldest.into()];
            params.extend(chunk.iter().map(|id| Param::from(id.as_str())));
            for r in tx.fetch(&sql, &params).await? {
                let health = out
                    .entry(EntityId::parse(r.text(0)?).map_err(corrupt)?)
                    .or_insert(Health {
                        last_success_at: r.opt_int(1)?.map(Millis),
                        last_failure_at: r.opt_int(2)?.map(Millis),
                        last_error: r.opt_text(3)?.map(str::to_owned),
                        consecutive_failures: r.int(4)?.max(0) as u64,
                        successes_24h: 0,
                        failures_24h: 0,
                    });
                health.successes_24h += r.opt_int(5)?.unwrap_or(0).max(0) as u64;
                health.failures_24h += r.opt_int(6)?.unwrap_or(0).max(0) as u64;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::numbered_id as id;

    #[test]
    fn a_batch_sums_per_level_and_hour_and_counts_failures_after_the_last_success() {
        let (a, b) = (id(1), id(2));
        let at = |ms: i64| Millis(10 * HOUR_MS + ms);
        let o = |level, succeeded, ms, error: Option<&str>| Outcome {
            level_id: level,
            succeeded,
            at: at(ms),
            error: error.map(str::to_owned),
        };
        let deltas = health_deltas([
            o(&a, false, 1, Some("HTTP 500")),
            o(&a, true, 2, None),
            o(&b, true, 3, None),
            o(&a, false, 4, Some("timed out")),
            o(&a, false, HOUR_MS + 5, Some("HTTP 503")),
        ]);
        let da = &deltas[&a];
        assert_eq!(da.last_success_at, Some(at(2)));
        assert_eq!(da.last_failure_at, Some(at(HOUR_MS + 5)));
        assert_eq!(da.last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(da.trailing_failures, 2);
        assert_eq!(
            da.hours.iter().map(|(h, c)| (*h, *c)).collect::<Vec<_>>(),
            vec![(10, (1, 2)), (11, (0, 1))]
        );
        assert_eq!(
            da.minutes.iter().map(|(m, c)| (*m, *c)).collect::<Vec<_>>(),
            vec![(600, (1, 2)), (660, (0, 1))]
        );
        let db = &deltas[&b];
        assert_eq!((db.trailing_failures, db.last_failure_at), (0, None));
        assert_eq!(deltas.keys().collect::<Vec<_>>(), vec![&a, &b]);
    }

    #[test]
    fn deltas_folded_in_turn_are_the_delta_of_both_batches() {
        let (a, b) = (id(1), id(2));
        let o = |level, succeeded, ms: i64| Outcome {
            level_id: level,
            succeeded,
            at: Millis(ms * MINUTE_MS / 3),
            error: (!succeeded).then(|| format!("HTTP 5{ms:02}")),
        };
        let all = [
            o(&a, false, 1),
            o(&b, true, 2),
            o(&a, true, 3),
            o(&a, false, 4),
            o(&b, false, 5),
            o(&a, false, 6),
            o(&b, true, 7),
            o(&a, true, 8),
            o(&a, false, 9),
        ];
        let part = |r: &[Outcome]| {
            health_deltas(r.iter().map(|x| Outcome {
                error: x.error.clone(),
                ..*x
            }))
        };
        let whole = part(&all);
        for split in 0..=all.len() {
            let mut folded = part(&all[..split]);
            fold_into(&mut folded, part(&all[split..]));
            assert_eq!(folded, whole, "split after {split}");
        }
    }

    #[test]
    fn a_batch_longer_than_the_ring_adds_only_the_units_the_ring_holds() {
        let (a, b) = (id(1), id(2));
        let o = |level, minute: i64| Outcome {
            level_id: level,
            succeeded: true,
            at: Millis(minute * MINUTE_MS),
            error: None,
        };
        // a: minutes 100, 139, 160 and 161 (100 shares 160's slot, which it would overwrite).
        let deltas = health_deltas([o(&a, 160), o(&a, 100), o(&b, 5), o(&a, 161), o(&a, 139)]);
        let rows: Vec<(EntityId, i64, i64, i64)> = slot_rows(&deltas, 60, |d| &d.minutes)
            .into_iter()
            .map(|(l, u, s, f)| (l.clone(), u, s, f))
            .collect();
        assert_eq!(
            rows,
            vec![
                (a.clone(), 139, 1, 0),
                (a.clone(), 160, 1, 0),
                (a, 161, 1, 0),
                (b, 5, 1, 0)
            ]
        );
    }

    #[test]
    fn the_ratio_is_successes_over_attempts_and_absent_without_attempts() {
        let h = Health {
            successes_24h: 3,
            failures_24h: 1,
            ..Health::default()
        };
        assert_eq!(h.success_ratio_24h(), Some(0.75));
        assert_eq!(Health::default().success_ratio_24h(), None);
    }
}
