//! An API change's transaction ([`Tx`] over [`Exec`]): entities read with everything above
//! them, written with the references they make, and the event and webhooks of the change
//! (the transactional outbox). On PostgreSQL it also says, after its commit, when it queued
//! work for other instances.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::AnyPool;

use super::endpoints::{self, ENDPOINT_COLUMNS};
use super::exec::{Exec, Param, Row};
use super::levels::{self, LevelCache};
use super::sql::{corrupt, parse_entity, parse_id, secrets_from_row, SqlBySize};
use super::{Claimed, Lease, NewEvent, NewWebhook, Result, StoreError, Tx, Webhook, WebhookStatus};
use crate::delivery::secrets::SealedSecrets;
use crate::domain::endpoint::{Endpoint, SuccessRule};
use crate::domain::entities::Entity;
use crate::domain::{EntityId, Kind, Millis};

pub(super) struct SqlTx {
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
    /// Each level's endpoint settings as this transaction read them (`None`: none stored),
    /// with the entity queries or [`Tx::endpoints`]; their `level_keys` were read with them.
    endpoints_read: HashMap<String, Option<Endpoint>>,
    /// The instance's levels (PostgreSQL; `None` on SQLite, whose writer remembers entities).
    level_cache: Option<Arc<LevelCache>>,
    /// The generation of the levels this transaction's last read saw, while it may take
    /// levels from `level_cache` (`None`: it has not read one, or it has changed a level).
    generation: Option<i64>,
    /// Levels this transaction read from the database at `generation`, for the cache once it
    /// has committed.
    levels_read: HashMap<EntityId, levels::Level>,
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
    pub(super) fn new(pool: AnyPool) -> Self {
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
pub(super) struct RowLocks {
    pub(super) change: &'static str,
}

impl RowLocks {
    pub(super) const NONE: RowLocks = RowLocks { change: "" };
}

/// Per level, what a change needs besides the level itself: its endpoint settings
/// ([`ENDPOINT_COLUMNS`], NULL when none are stored), then its signing secrets (NULL when
/// none were made), from `en` and `s` joined by [`level_joins`].
fn level_columns() -> String {
    ENDPOINT_COLUMNS
        .split(", ")
        .map(|c| format!("en.{c}"))
        .chain(["s.current", "s.previous", "s.previous_until"].map(String::from))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many columns [`level_columns`] names.
fn level_width() -> usize {
    ENDPOINT_COLUMNS.split(", ").count() + 3
}

/// Joins `en` (endpoints) and `s` (level secrets) to the level whose id is `on`.
fn level_joins(on: &str) -> String {
    format!(
        "LEFT JOIN endpoints en ON en.level_id = {on} \
         LEFT JOIN level_secrets s ON s.level_id = {on}"
    )
}

/// The generation of the levels ([`LevelCache`]), or NULL when the transaction has changed a
/// level and so reads what no generation describes yet.
const GENERATION: &str =
    "(SELECT CASE WHEN current_setting('tidings.levels_written', true) = 'on' \
                          THEN NULL ELSE n END FROM level_generation WHERE id = 1)";

/// The level kinds, quoted for SQL's `IN`.
fn level_kinds() -> String {
    crate::domain::Level::ALL
        .iter()
        .map(|l| format!("'{}'", l.kind().as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An entity, then what it refers to, then the levels above those, transitively, each with
/// its [`level_columns`]: one query for what a change or a view reads next (the parents for
/// validation and the view, the levels and their endpoints for routing), instead of one
/// round trip each. `{lock}` applies to the entity alone. Each entity's document comes with
/// the key lookup that found it: none is read twice. Columns: the level columns, then id and
/// document, then (`generation`) the [`GENERATION`].
fn entity_and_above_sql(lock: &str, generation: bool) -> String {
    format!(
        "WITH RECURSIVE first (id, doc) AS (SELECT id, doc FROM entities WHERE id = $1{lock}), \
         up (id, top, doc) AS (SELECT id, 1, doc FROM first \
         UNION SELECT r.target, 0, t.doc FROM up JOIN entity_refs r ON r.source = up.id \
         JOIN entities t ON t.id = r.target WHERE up.top = 1 OR t.kind IN ({})) \
         SELECT {}, x.id, x.doc{} FROM up x {}",
        level_kinds(),
        level_columns(),
        if generation {
            format!(", {GENERATION}")
        } else {
            String::new()
        },
        level_joins("x.id")
    )
}

/// The [`GENERATION`], then an entity and what it refers to below the levels (none if it is
/// not found): what a change reads when the levels above come from the [`LevelCache`].
/// `{lock}` applies to the entity alone. Columns: generation, id, document; one row with
/// NULL id and document when the entity is not found.
fn entity_below_levels_sql(lock: &str) -> String {
    format!(
        "WITH first (id, doc) AS (SELECT id, doc FROM entities WHERE id = $1{lock}) \
         SELECT {GENERATION}, x.id, x.doc FROM (SELECT 1) one LEFT JOIN \
         (SELECT id, doc FROM first UNION ALL SELECT t.id, t.doc FROM first \
         JOIN entity_refs r ON r.source = first.id JOIN entities t ON t.id = r.target \
         WHERE t.kind NOT IN ({})) x ON true",
        level_kinds()
    )
}

/// `n` levels' [`level_columns`], then the level's id, a row each.
fn levels_sql(n: usize) -> String {
    format!(
        "SELECT {}, v.column1 FROM (VALUES {}) AS v {}",
        level_columns(),
        (1..=n)
            .map(|i| format!("(CAST(${i} AS TEXT))"))
            .collect::<Vec<_>>()
            .join(", "),
        level_joins("v.column1")
    )
}

/// A change's reads on PostgreSQL, with arguments to run them with (see
/// [`super::postgres_key_lookups`]).
pub(super) fn key_lookups() -> [(String, &'static str); 3] {
    [
        (entity_and_above_sql(" FOR UPDATE", true), "('x')"),
        (entity_below_levels_sql(" FOR UPDATE"), "('x')"),
        (levels_sql(2), "('x', 'y')"),
    ]
}

impl SqlTx {
    pub(super) fn new(
        exec: Box<dyn Exec>,
        locks: RowLocks,
        work_signal: Option<Arc<WorkSignal>>,
        level_cache: Option<Arc<LevelCache>>,
    ) -> Self {
        SqlTx {
            exec,
            locks,
            work_signal,
            queued_work: false,
            level_keys: HashMap::new(),
            seen: HashMap::new(),
            endpoints_read: HashMap::new(),
            level_cache,
            generation: None,
            levels_read: HashMap::new(),
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
            // A level the instance remembers at the generation this transaction last read.
            if let Some(generation) = self.generation {
                if self.take_remembered(generation, vec![id.clone()]) {
                    return Ok(self.seen.get(id).cloned().flatten());
                }
            }
        }
        if let Some(found) = self.get_below_levels(id, lock).await? {
            return Ok(found);
        }
        static TEXTS: SqlBySize = SqlBySize::new();
        let with_generation = self.level_cache.is_some();
        let text = usize::from(!lock.is_empty()) + 2 * usize::from(with_generation);
        let sql = TEXTS.get(text, |_| entity_and_above_sql(lock, with_generation));
        let rows = self.exec.fetch(&sql, &[id.as_str().into()]).await?;
        let width = level_width();
        // What this read saw (with no row, nothing: the transaction keeps what it had).
        if let (true, Some(row)) = (with_generation, rows.first()) {
            self.read_at(row.opt_int(width + 2)?);
        }
        let mut entity = None;
        for row in &rows {
            let e = parse_entity(row.text(width + 1)?)?;
            let row_id = row.text(width)?;
            if e.kind().level().is_some() {
                let (endpoint, secrets) = level_from_row(row)?;
                if self.generation.is_some() {
                    self.levels_read.insert(
                        parse_id(row_id)?,
                        levels::Level {
                            entity: e.clone(),
                            endpoint: endpoint.clone(),
                            secrets: secrets.clone(),
                        },
                    );
                }
                self.take_level(row_id, endpoint, secrets);
            }
            if row_id == id.as_str() {
                entity = Some(e);
            } else {
                self.seen.entry(parse_id(row_id)?).or_insert(Some(e));
            }
        }
        self.seen.insert(id.clone(), entity.clone());
        Ok(entity)
    }

    /// Reads an entity and what it refers to below the levels, taking the levels above from
    /// the instance's [`LevelCache`] if it holds them all at the generation read with the
    /// entity: `None` when there is no cache, it is still empty, or it does not hold them
    /// (the caller then reads everything).
    async fn get_below_levels(
        &mut self,
        id: &EntityId,
        lock: &'static str,
    ) -> Result<Option<Option<Entity>>> {
        if self.level_cache.as_ref().is_none_or(|c| c.is_empty()) {
            return Ok(None);
        }
        static TEXTS: SqlBySize = SqlBySize::new();
        let sql = TEXTS.get(usize::from(!lock.is_empty()), |_| {
            entity_below_levels_sql(lock)
        });
        let rows = self.exec.fetch(&sql, &[id.as_str().into()]).await?;
        let generation = match rows.first() {
            Some(row) => row.opt_int(0)?,
            None => None,
        };
        self.read_at(generation);
        let Some(generation) = generation else {
            return Ok(None);
        };
        let mut found = Vec::new();
        for row in &rows {
            if let Some(row_id) = row.opt_text(1)? {
                found.push((parse_id(row_id)?, parse_entity(row.text(2)?)?));
            }
        }
        let Some(entity) = found.iter().find(|(i, _)| i == id).map(|(_, e)| e.clone()) else {
            self.seen.insert(id.clone(), None);
            return Ok(Some(None));
        };
        // The levels above: those these entities refer to, and the entity itself if it is
        // one (for its endpoint and secrets; its document is the one just read).
        let mut wanted: Vec<EntityId> = found.iter().flat_map(|(_, e)| e.level_refs()).collect();
        if entity.kind().level().is_some() {
            wanted.push(id.clone());
        }
        self.seen.insert(id.clone(), Some(entity.clone()));
        for (i, e) in found {
            self.seen.entry(i).or_insert(Some(e));
        }
        Ok(self
            .take_remembered(generation, wanted)
            .then_some(Some(entity)))
    }

    /// Notes the generation of the levels a read saw (`None`: this transaction has changed
    /// a level). Levels read before at another generation are not kept for the cache.
    fn read_at(&mut self, generation: Option<i64>) {
        if self.generation != generation {
            self.levels_read.clear();
        }
        self.generation = generation;
    }

    /// Takes in `ids` and every level above them from the instance's cache, if it holds all
    /// of them at `generation`; otherwise takes in nothing and answers false.
    fn take_remembered(&mut self, generation: i64, ids: Vec<EntityId>) -> bool {
        let Some(found) = self
            .level_cache
            .as_ref()
            .and_then(|c| c.closure(generation, ids))
        else {
            return false;
        };
        for (id, level) in found {
            if !self.endpoints_read.contains_key(id.as_str()) {
                self.take_level(id.as_str(), level.endpoint.clone(), level.secrets.clone());
            }
            self.seen
                .entry(id)
                .or_insert_with(|| Some(level.entity.clone()));
        }
        true
    }

    /// Takes in a level's endpoint settings (`None`: none stored) and signing secrets.
    fn take_level(
        &mut self,
        level: &str,
        endpoint: Option<Endpoint>,
        secrets: Option<SealedSecrets>,
    ) {
        // A level without secrets (none were ever made for it) gets none, as its attempts
        // say (`no_secret`).
        let keys = LevelKeys {
            secrets,
            success: endpoint.as_ref().map(|e| e.success).unwrap_or_default(),
        };
        self.level_keys.insert(level.to_owned(), keys);
        self.endpoints_read.insert(level.to_owned(), endpoint);
    }

    /// Announces a write of a level entity: with a level cache (PostgreSQL), a row in
    /// `level_writes`, whose triggers mark this transaction as one that changed a level and,
    /// at its commit, take a new generation of the levels. From now on this transaction reads
    /// levels from the database only, where it sees its own changes.
    async fn level_written(&mut self) -> Result<()> {
        if self.level_cache.is_some() {
            self.exec
                .execute_later("INSERT INTO level_writes DEFAULT VALUES", &[])
                .await?;
        }
        self.read_at(None);
        Ok(())
    }

    /// Forgets what this transaction read of a level it changes; from now on it reads
    /// levels from the database only, where it sees its own changes.
    fn forget_level(&mut self, level: &str) {
        self.level_keys.remove(level);
        self.endpoints_read.remove(level);
        self.read_at(None);
    }
}

/// A level's [`level_columns`]: its endpoint settings and signing secrets.
fn level_from_row(row: &Row) -> Result<(Option<Endpoint>, Option<SealedSecrets>)> {
    let endpoint = match row.opt_text(0)? {
        Some(_) => Some(endpoints::endpoint_from_row(row)?.1),
        None => None,
    };
    let secrets = secrets_from_row(row, ENDPOINT_COLUMNS.split(", ").count())?;
    Ok((endpoint, secrets))
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
        let upsert = "INSERT INTO entities (id, kind, doc, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                      ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at";
        let params: [Param; 4] = [
            id.into(),
            entity.kind().as_str().into(),
            doc.as_str().into(),
            now.0.into(),
        ];
        // Sent with what the transaction sends next (on PostgreSQL often the commit).
        self.exec.execute_later(upsert, &params).await?;
        if before.as_ref() != Some(&refs) {
            if before.as_ref().is_none_or(|b| !b.is_empty()) {
                self.exec
                    .execute_later("DELETE FROM entity_refs WHERE source = $1", &[id.into()])
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
        // Last, so that at the commit the generation is taken after any other deferred
        // check of what this change wrote.
        if entity.kind().level().is_some() {
            self.level_written().await?;
        }
        Ok(())
    }

    async fn delete(&mut self, id: &EntityId) -> Result<()> {
        for sql in [
            "DELETE FROM entity_refs WHERE source = $1",
            "DELETE FROM entities WHERE id = $1",
        ] {
            self.exec.execute(sql, &[id.as_str().into()]).await?;
        }
        let was = self.seen.insert(id.clone(), None);
        // A level, or perhaps one (an entity this transaction has not read).
        let level = match &was {
            None => true,
            Some(None) => false,
            Some(Some(e)) => e.kind().level().is_some(),
        };
        if level {
            self.level_written().await?;
        }
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
        if let Some(w) = webhooks
            .iter()
            .find(|w| w.id.millisecond() != event.id.millisecond())
        {
            return Err(StoreError::Refused(format!(
                "webhook {} was not made in the millisecond of its event {}",
                w.id, event.id
            )));
        }
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
            .execute_later(
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
        self.exec.execute_later(&sql, &params).await?;
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
        // (the signing secrets): one round trip, not two; none when the entity queries read
        // them already.
        let unread: Vec<&EntityId> = level_ids
            .iter()
            .copied()
            .filter(|l| !self.endpoints_read.contains_key(l.as_str()))
            .collect();
        if !unread.is_empty() {
            static SELECTS: SqlBySize = SqlBySize::new();
            let sql = SELECTS.get(unread.len(), levels_sql);
            let params: Vec<Param> = unread.iter().map(|id| id.as_str().into()).collect();
            let width = level_width();
            for row in self.exec.fetch(&sql, &params).await? {
                let (endpoint, secrets) = level_from_row(&row)?;
                self.take_level(row.text(width)?, endpoint, secrets);
            }
        }
        Ok(level_ids
            .iter()
            .filter_map(|l| {
                let endpoint = self.endpoints_read.get(l.as_str())?.clone()?;
                Some(((*l).clone(), endpoint))
            })
            .collect())
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
        self.forget_level(level_id.as_str());
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
        self.forget_level(level_id.as_str());
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        let SqlTx {
            mut exec,
            seen,
            work_signal,
            queued_work,
            level_cache,
            generation,
            levels_read,
            ..
        } = *self;
        exec.remember(seen);
        exec.commit().await?;
        if let (Some(cache), Some(generation)) = (level_cache, generation) {
            if !levels_read.is_empty() {
                cache.remember(generation, levels_read);
            }
        }
        if let (Some(signal), true) = (work_signal, queued_work) {
            signal.raise();
        }
        Ok(())
    }
}
