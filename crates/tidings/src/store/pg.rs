//! PostgreSQL's write transactions, on `tokio-postgres`: its statements are **pipelined**,
//! and API changes are **grouped**.
//!
//! A transaction's `BEGIN` is not sent on its own: it goes out with the transaction's first
//! statement, and the writes put off with [`Exec::execute_later`] go out with the statement
//! after them or with the `COMMIT`, each request written without waiting for the answer to
//! the one before. PostgreSQL runs the statements one after the other as ever; what goes is
//! the wait between them, and with it a wake-up of the server's backend and of our task per
//! statement (about a fifth of each side's CPU per delivered webhook, measured in
//! BENCHMARKS.md). sqlx, which serves every other query, sends one statement at a time.
//!
//! A failed statement aborts the transaction, so the statements behind it in the pipeline
//! fail too; the error returned is the first one's.
//!
//! **Groups.** API changes run as members of a shared transaction on one of a few *lanes*
//! (connections), one member at a time, each inside a savepoint, as SQLite's writer groups
//! them (`exec.rs`): a member's writes go out with the next member's first statement, and one
//! `COMMIT` serves every member, sent by a flusher once no member waits for the lane. The
//! `COMMIT` (and the WAL flush it waits for) does not hold the lane: the members that queue
//! meanwhile open the next group, on another connection. A change is then one round trip,
//! not two, and a transaction serves many changes. A member whose own statement fails is
//! rolled back to its savepoint, leaving the others alone. One
//! whose row lock is held elsewhere for longer than [`GROUP_LOCK_TIMEOUT`] (by another
//! lane's or another instance's open group, which could be waiting for this one) is rolled
//! back too and answers [`StoreError::Again`]: its change runs again in a transaction of its
//! own, which waits as long as the lock takes. A failure that is not one member's own (a
//! write put off by an earlier member, the `COMMIT`) rolls the whole group back, and every
//! member answers [`StoreError::Again`]. A change goes to the lane of a change to the same
//! entity still under way, so that the two do not wait for each other across lanes, and
//! otherwise to the lane with the fewest changes under way ([`Assign`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::{watch, Mutex, Notify, OwnedMutexGuard};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::NoTls;

use super::exec::{Cell, Exec, Param, Row, Value};
use super::{Fault, Result, StoreError, StoreOptions};

/// How many statements a connection keeps prepared at most; past that its cache starts over
/// (the hot path uses a few dozen texts).
const PREPARED: usize = 256;

/// The most changes a group holds: each member's savepoint takes a subtransaction id, and
/// past 64 of them in one transaction PostgreSQL's snapshots slow down for every backend.
const GROUP_MEMBERS: usize = 32;

/// How long a member of a group waits for a row lock before it gives up and runs alone.
/// Another group commits within milliseconds; a longer wait is one on a slow transaction, or
/// two groups waiting for each other.
const GROUP_LOCK_TIMEOUT: &str = "50ms";

/// How many write connections there are per lane of grouped changes: with the default 8,
/// two lanes, the other connections left to recorded batches, endpoint health and claims.
/// On the benchmark's machine four lanes delivered as much as two (the machine full either
/// way) with about a tenth more CPU per webhook on both sides: the fewer the lanes, the more
/// changes a group holds (BENCHMARKS.md).
const CONNECTIONS_PER_LANE: usize = 4;

/// The pool of connections that PostgreSQL's write transactions run on, and the lanes of
/// grouped changes.
#[derive(Clone)]
pub(super) struct PgWriter {
    pool: Pool,
    lanes: Arc<[Lane]>,
    assign: Arc<std::sync::Mutex<Assign>>,
}

impl PgWriter {
    /// A pool of up to `options.write_connections` connections to the database at `url`
    /// (opened as they are needed).
    pub(super) fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::PostgresUrl(e.to_string()))?;
        if config.get_application_name().is_none() {
            config.application_name("tidings");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // sqlx's default wait, as for the other pool.
        let wait = options.acquire_timeout.unwrap_or(Duration::from_secs(30));
        let pool = Pool::builder(manager)
            .max_size(options.write_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .build()
            .expect("the only build error is timeouts without a runtime, and it has one");
        let lanes = (options.write_connections / CONNECTIONS_PER_LANE).max(1);
        Ok(PgWriter {
            pool,
            lanes: (0..lanes).map(|_| Lane::new()).collect(),
            assign: Arc::new(std::sync::Mutex::new(Assign::new(lanes))),
        })
    }

    /// A transaction that begins with `begin` (`BEGIN` and any `SET LOCAL`), sent with its
    /// first statement.
    pub(super) async fn begin(&self, begin: &'static str) -> Result<PgTx> {
        Ok(PgTx {
            conn: Some(PgConn::new(self.pool.get().await?, begin.to_owned())),
        })
    }

    /// A member of a group on a lane chosen for `key` (the entity the change is about, if
    /// known; see [`Assign`]), whose transaction begins with `begin`. See the module's doc.
    pub(super) async fn begin_member(
        &self,
        begin: &'static str,
        key: Option<&str>,
    ) -> Result<PgMember> {
        let ticket = LaneTicket::take(&self.assign, key);
        let lane = &self.lanes[ticket.lane];
        lane.flusher.call_once(|| {
            tokio::spawn(flusher(Arc::downgrade(&lane.state), lane.flush.clone()));
        });
        let asked = Instant::now();
        let mut state = lane.state.clone().lock_owned().await;
        state.load.waited += asked.elapsed();
        if state.group.is_none() {
            let client = self.pool.get().await?;
            let begin = format!("{begin}; SET LOCAL lock_timeout = '{GROUP_LOCK_TIMEOUT}'");
            state.group = Some(Group {
                conn: PgConn::new(client, begin),
                done: watch::channel(None).0,
                members: 0,
                poisoned: false,
                ran_again: state.load.again.clone(),
            });
        }
        let group = state.group.as_mut().expect("opened above");
        let savepoint = group.conn.later.len();
        group.conn.later.push((SAVEPOINT.to_owned(), Vec::new()));
        Ok(PgMember {
            _ticket: ticket,
            took: Instant::now(),
            state: Some(state),
            flush: lane.flush.clone(),
            savepoint: Some(savepoint),
            ended: false,
        })
    }
}

const SAVEPOINT: &str = "SAVEPOINT change";
const RELEASE: &str = "RELEASE SAVEPOINT change";
const UNDO: &str = "ROLLBACK TO SAVEPOINT change";

/// A connection with a transaction begun or about to be: what is sent, and when.
struct PgConn {
    client: Object,
    /// What begins the transaction, until it is sent.
    begin: Option<String>,
    /// Writes put off until the next statement or the commit.
    later: Vec<(String, Vec<Value>)>,
    /// Whether the `BEGIN` went out: a drop then has to roll back.
    open: bool,
    /// A round trip is under way: were it dropped half-way, what the transaction holds
    /// would not be known.
    unsure: bool,
}

/// What the last request of a round trip is.
enum Last<'a> {
    Execute(&'a str, &'a [Param<'a>]),
    Fetch(&'a str, &'a [Param<'a>]),
    Commit,
}

/// A statement's outcome: rows changed, or rows returned.
enum Answer {
    Changed(u64),
    Rows(Vec<tokio_postgres::Row>),
}

/// A round trip's first failure: which request failed (`Some(i)`: the i-th after the
/// `BEGIN`, the writes put off first, then the last request; `None`: the `BEGIN`, or
/// preparing a statement, before anything was sent), and why.
type Failure = (Option<usize>, StoreError);

type Request<'a> = Pin<Box<dyn Future<Output = Result<Answer, tokio_postgres::Error>> + Send + 'a>>;

impl PgConn {
    fn new(client: Object, begin: String) -> Self {
        PgConn {
            client,
            begin: Some(begin),
            later: Vec::new(),
            open: false,
            unsure: false,
        }
    }

    /// Whether anything was sent or is waiting to be.
    fn idle(&self) -> bool {
        self.begin.is_some() && self.later.is_empty()
    }

    /// Sends what has to go before `last` (the `BEGIN`, the writes put off), then `last`,
    /// all in one round trip; answers `last`'s outcome.
    async fn round(&mut self, last: Last<'_>) -> Result<Answer, Failure> {
        let later = std::mem::take(&mut self.later);
        let client = &self.client;
        // Statements are prepared once per connection (a round trip the first time).
        if client.statement_cache.size() > PREPARED {
            client.statement_cache.clear();
        }
        let mut statements = Vec::with_capacity(later.len());
        for (sql, _) in &later {
            statements.push(
                client
                    .prepare_cached(sql)
                    .await
                    .map_err(|e| (None, e.into()))?,
            );
        }
        let last_statement = match last {
            Last::Execute(sql, _) | Last::Fetch(sql, _) => Some(
                client
                    .prepare_cached(sql)
                    .await
                    .map_err(|e| (None, e.into()))?,
            ),
            Last::Commit => None,
        };
        let later_params: Vec<Vec<Param<'_>>> = later
            .iter()
            .map(|(_, values)| values.iter().map(Value::param).collect())
            .collect();
        let later_refs: Vec<Vec<&(dyn ToSql + Sync)>> = later_params
            .iter()
            .map(|ps| ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect())
            .collect();
        let last_refs: Vec<&(dyn ToSql + Sync)> = match last {
            Last::Execute(_, ps) | Last::Fetch(_, ps) => {
                ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
            }
            Last::Commit => Vec::new(),
        };
        let began = self.begin.take();
        let mut requests: Vec<Request<'_>> = Vec::with_capacity(later.len() + 2);
        if let Some(begin) = &began {
            requests.push(Box::pin(async move {
                client
                    .batch_execute(begin)
                    .await
                    .map(|_| Answer::Changed(0))
            }));
        }
        for (statement, params) in statements.iter().zip(&later_refs) {
            requests.push(Box::pin(async move {
                client.execute(statement, params).await.map(Answer::Changed)
            }));
        }
        requests.push(match (&last_statement, last) {
            (Some(statement), Last::Fetch(..)) => {
                Box::pin(async { client.query(statement, &last_refs).await.map(Answer::Rows) })
            }
            (Some(statement), _) => Box::pin(async {
                client
                    .execute(statement, &last_refs)
                    .await
                    .map(Answer::Changed)
            }),
            (None, _) => Box::pin(async move {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map(|_| Answer::Changed(0))
            }),
        });
        self.open = true;
        let answers = pipelined(requests).await;
        let offset = usize::from(began.is_some());
        let mut last = None;
        // The first error is the cause; the requests after it fail only because of it.
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(answer) => last = Some(answer),
                Err(e) => return Err((i.checked_sub(offset), e.into())),
            }
        }
        Ok(last.expect("the last request is there"))
    }

    /// Rolls the transaction back; a connection that cannot is closed.
    async fn roll_back(self) {
        if !self.open {
            return; // back to the pool as it came
        }
        if let Err(e) = self.client.batch_execute("ROLLBACK").await {
            tracing::warn!(error = %e, "rolling back a PostgreSQL transaction failed; closing its connection");
            self.close();
        }
    }

    /// Closes the connection instead of giving it back to the pool.
    fn close(self) {
        drop(Object::take(self.client));
    }
}

/// A write transaction on PostgreSQL of its own (see the module's doc). Dropping it without
/// [`Exec::commit`] rolls it back.
pub(super) struct PgTx {
    /// The connection, until the transaction ends.
    conn: Option<PgConn>,
}

impl PgTx {
    async fn round(&mut self, last: Last<'_>) -> Result<Answer> {
        let conn = self.conn.as_mut().expect("the transaction is open");
        conn.round(last).await.map_err(|(_, e)| e)
    }
}

/// Runs `requests` pipelined and answers their outcomes in order. A tokio-postgres request
/// goes out when its future is first polled, so each is polled once, in order, before any
/// answer is awaited.
async fn pipelined<T>(mut requests: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut ready: Vec<Option<T>> = Vec::with_capacity(requests.len());
    for request in &mut requests {
        ready.push(match futures::poll!(request.as_mut()) {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => None,
        });
    }
    let mut out = Vec::with_capacity(requests.len());
    for (request, ready) in requests.into_iter().zip(ready) {
        out.push(match ready {
            Some(outcome) => outcome,
            None => request.await,
        });
    }
    out
}

#[async_trait]
impl Exec for PgTx {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(self.round(Last::Execute(sql, params)).await?.changed())
    }

    async fn fetch(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.round(Last::Fetch(sql, params)).await?.rows()
    }

    async fn execute_later(&mut self, sql: &str, params: &[Param<'_>]) -> Result<()> {
        let conn = self.conn.as_mut().expect("the transaction is open");
        conn.later
            .push((sql.to_owned(), params.iter().map(Value::of).collect()));
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let mut conn = self.conn.take().expect("the transaction is open");
        if conn.idle() {
            return Ok(()); // nothing was sent: there is nothing to commit
        }
        match conn.round(Last::Commit).await {
            Ok(_) => Ok(()),
            Err((_, e)) => {
                // Nothing may have been sent (a statement failed to prepare): the
                // transaction is still open, and is rolled back before the connection
                // goes back to the pool.
                conn.roll_back_later();
                Err(e)
            }
        }
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.roll_back_later();
        }
    }
}

impl Answer {
    fn changed(self) -> u64 {
        match self {
            Answer::Changed(n) => n,
            Answer::Rows(rows) => rows.len() as u64,
        }
    }

    fn rows(self) -> Result<Vec<Row>> {
        match self {
            Answer::Rows(rows) => rows.iter().map(row_from_pg).collect(),
            Answer::Changed(_) => Ok(Vec::new()),
        }
    }
}

impl PgConn {
    /// Rolls back from a drop, where nothing can be awaited: on a task of its own.
    fn roll_back_later(self) {
        if !self.open {
            return; // back to the pool as it came
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(self.roll_back());
            }
            Err(_) => self.close(),
        }
    }
}

// --- Groups ---

/// Which lane a change goes to: the lane of a change to the same entity still under way, so
/// that the two do not wait for each other's row lock across lanes (the first holds it until
/// its group commits); otherwise the lane with the fewest changes under way.
struct Assign {
    /// Changes under way on each lane: waiting for it, holding it, or waiting for their
    /// group's end.
    under_way: Vec<usize>,
    /// The entities with changes under way: their lane, and how many.
    entities: HashMap<String, (usize, usize)>,
}

impl Assign {
    /// Nothing under way on any of `lanes` lanes.
    fn new(lanes: usize) -> Self {
        Assign {
            under_way: vec![0; lanes],
            entities: HashMap::new(),
        }
    }
}

/// A change's place in [`Assign`], given back when dropped.
struct LaneTicket {
    assign: Arc<std::sync::Mutex<Assign>>,
    lane: usize,
    key: Option<String>,
}

impl LaneTicket {
    fn take(assign: &Arc<std::sync::Mutex<Assign>>, key: Option<&str>) -> Self {
        let mut a = assign
            .lock()
            .expect("the lanes' assignment is never poisoned");
        let least = || {
            (0..a.under_way.len())
                .min_by_key(|&i| a.under_way[i])
                .expect("there is at least one lane")
        };
        let lane = match key.and_then(|k| a.entities.get(k)) {
            Some(&(lane, _)) => lane,
            None => least(),
        };
        a.under_way[lane] += 1;
        if let Some(k) = key {
            a.entities.entry(k.to_owned()).or_insert((lane, 0)).1 += 1;
        }
        LaneTicket {
            assign: assign.clone(),
            lane,
            key: key.map(str::to_owned),
        }
    }
}

impl Drop for LaneTicket {
    fn drop(&mut self) {
        let mut a = self
            .assign
            .lock()
            .expect("the lanes' assignment is never poisoned");
        a.under_way[self.lane] -= 1;
        if let Some(k) = &self.key {
            if let Some(entry) = a.entities.get_mut(k) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    a.entities.remove(k);
                }
            }
        }
    }
}

/// One connection's queue of grouped changes (see the module's doc).
struct Lane {
    state: Arc<Mutex<LaneState>>,
    /// Wakes the lane's flusher: a member is done and its group waits for a commit.
    flush: Arc<Notify>,
    /// Starts the flusher with the lane's first member (on the runtime).
    flusher: std::sync::Once,
}

impl Lane {
    fn new() -> Self {
        Lane {
            state: Arc::new(Mutex::new(LaneState::default())),
            flush: Arc::new(Notify::new()),
            flusher: std::sync::Once::new(),
        }
    }
}

#[derive(Default)]
struct LaneState {
    group: Option<Group>,
    load: GroupLoad,
}

/// An open group: its transaction, and what its members wait on.
struct Group {
    conn: PgConn,
    done: watch::Sender<GroupOutcome>,
    /// Members done and waiting for the commit.
    members: usize,
    /// A member's round trip was cancelled half-way (its request dropped), so what the
    /// transaction holds is not known: it is rolled back rather than committed.
    poisoned: bool,
    /// The lane's count of members rolled back ([`GroupLoad`]).
    ran_again: Arc<AtomicU64>,
}

/// What a group's members wait on: its end.
type GroupOutcome = Option<std::result::Result<(), GroupEnd>>;

#[derive(Clone)]
enum GroupEnd {
    /// Rolled back: each member runs again alone.
    Again,
    /// The commit's answer was lost: whether it committed is not known.
    Failed(String, Fault),
}

/// How the lanes are used, logged at debug level every 10 s: the changes and groups a lane
/// ended, how many ran again alone, and per change how long it waited for the lane, how long
/// it held it, and how much of that went to its round trips.
struct GroupLoad {
    waited: Duration,
    held: Duration,
    rounds: Duration,
    since: Instant,
    changes: u64,
    groups: u64,
    /// Members of the lane's groups that ended rolled back, counted by [`Group::end`]
    /// (which runs without the lane).
    again: Arc<AtomicU64>,
}

impl Default for GroupLoad {
    fn default() -> Self {
        GroupLoad {
            waited: Duration::ZERO,
            held: Duration::ZERO,
            rounds: Duration::ZERO,
            since: Instant::now(),
            changes: 0,
            groups: 0,
            again: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl GroupLoad {
    fn ended(&mut self, members: usize) {
        self.groups += 1;
        self.changes += members as u64;
        let window = self.since.elapsed();
        if window >= Duration::from_secs(10) {
            tracing::debug!(
                changes = self.changes,
                groups = self.groups,
                run_again = self.again.swap(0, Ordering::Relaxed),
                waited_us = self.waited.as_micros() as u64 / self.changes.max(1),
                held_us = self.held.as_micros() as u64 / self.changes.max(1),
                round_trips_us = self.rounds.as_micros() as u64 / self.changes.max(1),
                "PostgreSQL change groups of a lane over the last {:.0} s",
                window.as_secs_f64()
            );
            *self = GroupLoad {
                again: self.again.clone(),
                ..GroupLoad::default()
            };
        }
    }
}

impl LaneState {
    /// Takes the open group, if any, out of the lane, to be ended with [`Group::end`]: the
    /// lane's next member opens another group (on another connection) meanwhile.
    fn take_group(&mut self) -> Option<Group> {
        let group = self.group.take()?;
        self.load.ended(group.members);
        Some(group)
    }

    /// Ends the open group, if any, holding the lane: rolls it back when `again`.
    async fn end_group(&mut self, again: bool) {
        if let Some(group) = self.take_group() {
            group.end(again).await;
        }
    }
}

impl Group {
    /// Commits the group (or rolls it back, when `again` or poisoned) and tells its members.
    async fn end(mut self, again: bool) {
        let outcome = if again || self.poisoned {
            self.conn.roll_back().await;
            Err(GroupEnd::Again)
        } else if self.conn.idle() {
            Ok(())
        } else {
            let commit_at = self.conn.later.len();
            match self.conn.round(Last::Commit).await {
                Ok(_) => Ok(()),
                Err((at, e)) => {
                    tracing::warn!(error = %e, members = self.members, "a group of changes failed to commit; they run again alone");
                    // Failed before the `COMMIT` (which PostgreSQL then answers by rolling
                    // back), or the `COMMIT` answered with an error: rolled back. Without
                    // an answer to the `COMMIT` it may have committed.
                    let answered = matches!(&e, StoreError::Postgres(pe) if pe.code().is_some());
                    // The connection may still be in the transaction.
                    self.conn.close();
                    if at == Some(commit_at) && !answered {
                        Err(GroupEnd::Failed(e.to_string(), e.fault()))
                    } else {
                        Err(GroupEnd::Again)
                    }
                }
            }
        };
        if matches!(outcome, Err(GroupEnd::Again)) {
            self.ran_again
                .fetch_add(self.members as u64, Ordering::Relaxed);
        }
        self.done.send_replace(Some(outcome));
    }
}

/// Ends each group once the members that were waiting when it was announced are done. The
/// group's `COMMIT` (and the WAL flush it waits for) goes on in a task of its own, without
/// the lane: the members queued meanwhile start the next group, which commits whether or
/// not the one before has. (A change that waits for a row lock the group before holds
/// cannot commit before it.)
async fn flusher(state: std::sync::Weak<Mutex<LaneState>>, flush: Arc<Notify>) {
    loop {
        flush.notified().await;
        // Lets the tasks that are ready to run queue for the lane first and join this group.
        tokio::task::yield_now().await;
        let Some(state) = state.upgrade() else { return };
        // The mutex is fair: this waits behind every member queued before it.
        let group = state.lock().await.take_group();
        if let Some(group) = group {
            tokio::spawn(group.end(false));
        }
    }
}

/// A change in a group (see the module's doc). Dropping it without [`Exec::commit`] undoes
/// its statements and leaves the group's others alone.
pub(super) struct PgMember {
    /// Its place in the lanes' assignment, given back once its group has ended.
    _ticket: LaneTicket,
    /// When it took the lane.
    took: Instant,
    /// The lane, held from the member's start to its end.
    state: Option<OwnedMutexGuard<LaneState>>,
    flush: Arc<Notify>,
    /// Where the member's `SAVEPOINT` stands among the writes put off, until it is sent.
    savepoint: Option<usize>,
    /// Rolled back to its savepoint after an error of its own: nothing more to send.
    ended: bool,
}

/// Whether a statement gave up waiting for a lock (or was chosen to break a deadlock).
fn lock_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(pe) if matches!(
        pe.code(),
        Some(&SqlState::LOCK_NOT_AVAILABLE) | Some(&SqlState::T_R_DEADLOCK_DETECTED)
    ))
}

impl PgMember {
    /// Refuses a statement or a commit after the member was rolled back to its savepoint.
    fn not_ended(&self) -> Result<()> {
        match self.ended {
            true => Err(StoreError::Corrupt(
                "a statement after its change was rolled back".into(),
            )),
            false => Ok(()),
        }
    }

    async fn round(&mut self, last: Last<'_>) -> Result<Answer> {
        self.not_ended()?;
        let state = self.state.as_mut().expect("the member is open");
        let LaneState { group, load } = &mut **state;
        let Some(group) = group.as_mut() else {
            return Err(StoreError::Again); // ended by a failure before this member's turn
        };
        if group.poisoned {
            state.end_group(true).await;
            return Err(StoreError::Again);
        }
        let savepoint = self.savepoint.take();
        group.conn.unsure = true;
        let sent = Instant::now();
        let outcome = group.conn.round(last).await;
        group.conn.unsure = false;
        load.rounds += sent.elapsed();
        let (at, e) = match outcome {
            Ok(answer) => return Ok(answer),
            Err(failure) => failure,
        };
        // The BEGIN, a statement before this member's savepoint or the savepoint itself
        // failed: not its own.
        let own = at.is_some_and(|at| savepoint.is_none_or(|s| at > s));
        if !own {
            state.end_group(true).await;
            return Err(StoreError::Again);
        }
        self.ended = true;
        if let Err(undo) = group
            .conn
            .client
            .batch_execute(&format!("{UNDO}; {RELEASE}"))
            .await
        {
            tracing::warn!(error = %undo, "undoing a change in its group failed; the group runs again alone");
            state.end_group(true).await;
            return Err(StoreError::Again);
        }
        Err(if lock_conflict(&e) {
            StoreError::Again
        } else {
            e
        })
    }
}

#[async_trait]
impl Exec for PgMember {
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        Ok(self.round(Last::Execute(sql, params)).await?.changed())
    }

    async fn fetch(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>> {
        self.round(Last::Fetch(sql, params)).await?.rows()
    }

    async fn execute_later(&mut self, sql: &str, params: &[Param<'_>]) -> Result<()> {
        self.not_ended()?;
        let state = self.state.as_mut().expect("the member is open");
        let Some(group) = state.group.as_mut() else {
            return Err(StoreError::Again);
        };
        group
            .conn
            .later
            .push((sql.to_owned(), params.iter().map(Value::of).collect()));
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.not_ended()?;
        let mut state = self.state.take().expect("the member is open");
        let LaneState { group, load } = &mut *state;
        let Some(group) = group.as_mut() else {
            return Err(StoreError::Again);
        };
        if let Some(s) = self.savepoint.take() {
            if group.conn.later.len() == s + 1 {
                // Nothing was written: nothing to commit.
                group.conn.later.truncate(s);
                drop(state);
                self.flush.notify_one();
                return Ok(());
            }
        }
        group.conn.later.push((RELEASE.to_owned(), Vec::new()));
        group.members += 1;
        let mut done = group.done.subscribe();
        load.held += self.took.elapsed();
        if group.members >= GROUP_MEMBERS {
            let group = state.take_group();
            drop(state);
            if let Some(group) = group {
                group.end(false).await;
            }
        } else {
            // Hand the lane on (the next member joins the group), then wait for its end.
            drop(state);
            self.flush.notify_one();
        }
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| StoreError::Commit("the group was dropped".into(), Fault::Other))?
            .clone();
        match outcome.expect("waited for an outcome") {
            Ok(()) => Ok(()),
            Err(GroupEnd::Again) => Err(StoreError::Again),
            Err(GroupEnd::Failed(m, f)) => Err(StoreError::Commit(m, f)),
        }
    }
}

impl Drop for PgMember {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            return;
        };
        if let Some(group) = state.group.as_mut() {
            if let Some(s) = self.savepoint {
                // Nothing sent: drop its statements with its savepoint.
                group.conn.later.truncate(s);
            } else if group.conn.unsure {
                group.poisoned = true;
            } else if !self.ended {
                // Its statements went out and its writes put off since are its own.
                group.conn.later.clear();
                group.conn.later.push((UNDO.to_owned(), Vec::new()));
                group.conn.later.push((RELEASE.to_owned(), Vec::new()));
            }
        }
        drop(state);
        self.flush.notify_one();
    }
}

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Param::Text(s) | Param::OptText(Some(s)) if <&str as ToSql>::accepts(ty) => {
                s.to_sql(ty, out)
            }
            // The statement says which width it takes.
            Param::Int(i) | Param::OptInt(Some(i)) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                _ => Err(format!("an integer given for a parameter of type {ty}").into()),
            },
            Param::Text(_) | Param::OptText(Some(_)) => {
                Err(format!("text given for a parameter of type {ty}").into())
            }
            Param::OptText(None) | Param::OptInt(None) => Ok(IsNull::Yes),
        }
    }

    fn accepts(_: &Type) -> bool {
        true // checked by `to_sql`, which knows the value
    }

    tokio_postgres::types::to_sql_checked!();
}

/// A row's cells by each column's type (the statements return text and integers).
fn row_from_pg(row: &tokio_postgres::Row) -> Result<Row> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let cell = match *ty {
                Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)?
                    .map(|v| Cell::Int(v.into())),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)?
                    .map(|v| Cell::Int(v.into())),
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)?
                    .map(|v| Cell::Int(v.into())),
                _ if <String as tokio_postgres::types::FromSql>::accepts(ty) => {
                    row.try_get::<_, Option<String>>(i)?.map(Cell::Text)
                }
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "column {} has type {ty}, neither text nor an integer",
                        row.columns()[i].name()
                    )))
                }
            };
            Ok(cell.unwrap_or(Cell::Null))
        })
        .collect::<Result<Vec<_>>>()
        .map(Row::new)
}

/// What a tokio-postgres error means for the request that met it.
pub(super) fn pg_fault(e: &tokio_postgres::Error) -> Fault {
    if let Some(code) = e.code() {
        return super::code_fault(code.code());
    }
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        Fault::Unavailable
    } else {
        Fault::Other
    }
}

/// What a pool error means: the pool could not give a connection in time, or could not
/// open one.
pub(super) fn pool_fault(e: &deadpool_postgres::PoolError) -> Fault {
    use deadpool_postgres::PoolError as P;
    match e {
        P::Backend(e) => pg_fault(e),
        P::Timeout(_) | P::Closed => Fault::Unavailable,
        _ => Fault::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A request that logs when it goes out (its first poll) and when it is answered (a
    /// later poll).
    fn request(
        i: usize,
        log: Arc<Mutex<Vec<String>>>,
    ) -> Pin<Box<dyn Future<Output = usize> + Send>> {
        Box::pin(async move {
            log.lock().unwrap().push(format!("sent {i}"));
            tokio::task::yield_now().await;
            log.lock().unwrap().push(format!("answered {i}"));
            i
        })
    }

    #[tokio::test]
    async fn pipelined_requests_all_go_out_in_order_before_any_answer_is_awaited() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let requests = (0..3).map(|i| request(i, log.clone())).collect();
        assert_eq!(pipelined(requests).await, vec![0, 1, 2]);
        assert_eq!(
            *log.lock().unwrap(),
            [
                "sent 0",
                "sent 1",
                "sent 2",
                "answered 0",
                "answered 1",
                "answered 2"
            ]
        );
    }

    #[tokio::test]
    async fn a_request_answered_at_once_keeps_its_place() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let requests: Vec<Pin<Box<dyn Future<Output = usize> + Send>>> = vec![
            request(0, log.clone()),
            Box::pin(async { 1 }),
            request(2, log.clone()),
        ];
        assert_eq!(pipelined(requests).await, vec![0, 1, 2]);
    }

    fn assign(lanes: usize) -> Arc<std::sync::Mutex<Assign>> {
        Arc::new(std::sync::Mutex::new(Assign::new(lanes)))
    }

    /// A change goes to the lane of a change to the same entity still under way, however
    /// busy that lane is; otherwise to the least busy lane. Tickets give their place back.
    #[test]
    fn a_change_follows_its_entity_under_way_or_takes_the_least_busy_lane() {
        let a = assign(2);
        let first = LaneTicket::take(&a, Some("meeting-1"));
        let other = LaneTicket::take(&a, Some("meeting-2"));
        assert_ne!(first.lane, other.lane, "the least busy lane");
        let created = LaneTicket::take(&a, None);
        let same = LaneTicket::take(&a, Some("meeting-1"));
        assert_eq!(same.lane, first.lane, "the lane of the change under way");
        let busiest = first.lane;
        assert_eq!(
            a.lock().unwrap().under_way[busiest],
            2 + usize::from(created.lane == busiest)
        );

        drop((first, same, other, created));
        let a_now = a.lock().unwrap();
        assert_eq!(a_now.under_way, vec![0, 0]);
        assert!(a_now.entities.is_empty(), "no entity is under way any more");
        drop(a_now);
        // Nothing under way: the entity may go to any lane, the least busy one.
        let busy = LaneTicket::take(&a, None);
        let next = LaneTicket::take(&a, Some("meeting-1"));
        assert_ne!(next.lane, busy.lane);
    }

    #[test]
    fn a_url_the_write_pool_cannot_take_is_refused_and_its_size_is_the_setting() {
        let refused = PgWriter::open(
            "postgres://postgres@127.0.0.1:1/x?statement-cache-capacity=10",
            &StoreOptions::default(),
        );
        assert!(
            matches!(refused, Err(StoreError::PostgresUrl(_))),
            "{:?}",
            refused.err()
        );
        let options = StoreOptions {
            write_connections: 3,
            ..StoreOptions::default()
        };
        let taken = PgWriter::open("postgres://postgres@127.0.0.1:1/x", &options).unwrap();
        assert_eq!(taken.pool.status().max_size, 3);
    }

    /// The value as sent, or `None` for NULL; or the error.
    fn encoded(p: Param<'_>, ty: &Type) -> Result<Option<Vec<u8>>, String> {
        let mut out = bytes::BytesMut::new();
        match p.to_sql_checked(ty, &mut out) {
            Ok(IsNull::No) => Ok(Some(out.to_vec())),
            Ok(IsNull::Yes) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn integers_take_the_width_the_statement_asks_for() {
        assert_eq!(
            encoded(Param::Int(7), &Type::INT8).unwrap().unwrap(),
            7i64.to_be_bytes()
        );
        assert_eq!(
            encoded(Param::Int(7), &Type::INT4).unwrap().unwrap(),
            7i32.to_be_bytes()
        );
        assert_eq!(
            encoded(Param::OptInt(Some(-2)), &Type::INT2)
                .unwrap()
                .unwrap(),
            (-2i16).to_be_bytes()
        );
        assert!(encoded(Param::Int(i64::MAX), &Type::INT4).is_err());
        assert!(encoded(Param::Int(1), &Type::TEXT)
            .unwrap_err()
            .contains("integer"));
    }

    #[test]
    fn text_goes_to_text_parameters_only_and_none_is_null() {
        assert_eq!(
            encoded(Param::Text("hé"), &Type::TEXT).unwrap().unwrap(),
            "hé".as_bytes()
        );
        assert!(encoded(Param::Text("1"), &Type::INT8)
            .unwrap_err()
            .contains("text"));
        assert_eq!(encoded(Param::OptText(None), &Type::INT8), Ok(None));
        assert_eq!(encoded(Param::OptInt(None), &Type::TEXT), Ok(None));
    }
}
