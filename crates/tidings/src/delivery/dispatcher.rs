//! The dispatcher: one loop that claims due webhooks, one task that takes the webhooks API
//! changes hand off (see [`super::handoff`]), and one task per attempt.
//!
//! - **Durable**: a webhook is claimed with a lease (its `due_at` moves to the lease's end),
//!   or written already claimed when handed off, so if this process dies mid-attempt the
//!   webhook becomes due again by itself.
//! - **Cheap when idle**: it sleeps until the earliest due time, or until told new work
//!   arrived; it never scans rows that are not due.
//! - **Isolated**: at most `per_destination` attempts run at once per destination (scheme,
//!   host and port); a destination that is saturated gets its extra webhooks handed back for
//!   later instead of holding slots that others need.
//! - **Batched**: finished attempts are recorded together, in one transaction per batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tidings_egress::{Egress, HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::handoff::{Freed, Handoff};
use super::secrets::{SecretBox, Signer};
use crate::clock::Clock;
use crate::domain::endpoint::{SuccessRule, GONE};
use crate::domain::{payload, EntityId, Millis};
use crate::metrics::Metrics;
use crate::schedule::RetrySchedule;
use crate::store::{Attempt, Claimed, Next, Recorded, Store};

/// Limits and timings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub schedule: RetrySchedule,
    /// Per-attempt timeout; the lease is this plus a margin.
    pub request_timeout: Duration,
    /// Attempts in flight at once, over all destinations.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one destination.
    pub per_destination: usize,
    /// Longest an API change waits for room in the dispatcher (back-pressure).
    pub backpressure_wait: Duration,
    /// Longest sleep when nothing is due (a safety net; new work wakes the loop at once).
    pub idle_wake: Duration,
}

impl Default for DispatcherConfig {
    /// The settings' defaults (`config.rs`), and a 30 s idle wake-up.
    fn default() -> Self {
        let settings = crate::config::Settings::default();
        DispatcherConfig {
            schedule: settings.retry_schedule,
            request_timeout: settings.request_timeout,
            max_in_flight: settings.max_in_flight,
            per_destination: settings.per_destination,
            backpressure_wait: settings.backpressure_wait,
            idle_wake: Duration::from_secs(30),
        }
    }
}

/// The longest a busy destination's extra webhooks wait before they are claimed again.
const SATURATED_BACKOFF: Duration = Duration::from_secs(1);
/// Largest number of attempts recorded in one transaction.
const RECORD_BATCH: usize = 512;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    egress: Egress,
    clock: Arc<dyn Clock>,
    keys: SecretBox,
    metrics: Arc<Metrics>,
    config: DispatcherConfig,
    /// Names this instance's claims in the store.
    owner: String,
    new_work: Arc<Notify>,
    in_flight: Arc<AtomicUsize>,
    slot_freed: Arc<Freed>,
    destinations: Arc<Mutex<HashMap<Arc<str>, Destination>>>,
    /// How long a claim lasts: long enough for an attempt and its recording; short enough
    /// that another instance takes over promptly when this one dies.
    lease: Duration,
    handoff: Arc<Handoff>,
    handed_off: mpsc::UnboundedReceiver<Vec<Claimed>>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        egress: Egress,
        clock: Arc<dyn Clock>,
        keys: SecretBox,
        metrics: Arc<Metrics>,
        config: DispatcherConfig,
    ) -> Self {
        // Woken by API changes (through the hand-off) and by the store's other instances.
        let new_work = Arc::new(Notify::new());
        let owner = format!(
            "{}-{}",
            hostname(),
            EntityId::generate(crate::domain::Millis(0)).as_str()[12..].to_owned()
        );
        let lease = config.request_timeout * 2 + Duration::from_secs(5);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let slot_freed = Arc::new(Freed::default());
        let (handoff, handed_off) = Handoff::new(
            owner.clone(),
            lease,
            in_flight.clone(),
            slot_freed.clone(),
            config.max_in_flight,
            config.backpressure_wait,
            new_work.clone(),
        );
        Dispatcher {
            store,
            egress,
            clock,
            keys,
            metrics,
            config,
            owner,
            new_work,
            in_flight,
            slot_freed,
            destinations: Arc::new(Mutex::new(HashMap::new())),
            lease,
            handoff: Arc::new(handoff),
            handed_off,
        }
    }

    /// Where API changes hand their new webhooks to this dispatcher.
    pub fn handoff(&self) -> Arc<Handoff> {
        self.handoff.clone()
    }

    /// Runs until `shutdown` fires, then waits for attempts in flight to be recorded.
    pub async fn run(self, shutdown: CancellationToken) {
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Recorded>();
        let recorder = tokio::spawn(record_loop(
            self.store.clone(),
            self.metrics.clone(),
            self.owner.clone(),
            self.clock.clone(),
            done_rx,
            self.in_flight.clone(),
            self.slot_freed.clone(),
            self.new_work.clone(),
        ));
        self.store.listen_for_work(self.new_work.clone());
        let admission = Arc::new(Admission {
            store: self.store.clone(),
            owner: self.owner.clone(),
            in_flight: self.in_flight.clone(),
            freed: self.slot_freed.clone(),
            new_work: self.new_work.clone(),
            per_destination: self.config.per_destination,
            keys: Mutex::new(HashMap::new()),
            attempting: Attempting {
                egress: self.egress.clone(),
                clock: self.clock.clone(),
                keys: self.keys.clone(),
                metrics: self.metrics.clone(),
                schedule: self.config.schedule.clone(),
                destinations: self.destinations.clone(),
                dest: Arc::from(""),
                done: done_tx,
            },
        });
        let receiving = tokio::spawn(receive_handoffs(
            self.handed_off,
            admission.clone(),
            shutdown.clone(),
        ));
        let lease = self.lease;
        tracing::info!(owner = %self.owner, schedule = %self.config.schedule, "dispatcher started");
        while !shutdown.is_cancelled() {
            let free = self
                .config
                .max_in_flight
                .saturating_sub(self.in_flight.load(Ordering::SeqCst));
            if free == 0 {
                tokio::select! {
                    _ = self.slot_freed.dispatcher() => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            let now = self.clock.now();
            // Hand-offs that arrive while the claim waits for the store may take room
            // meanwhile: `max_in_flight` can be passed by that much, briefly (destinations'
            // own limits hold regardless). Reserving the room first would turn hand-offs
            // away for as long as the claim waits, and make them claims.
            let claimed = self
                .store
                .claim_due(&self.owner, now, now.plus(lease), free.min(256) as u32)
                .await;
            let batch = match claimed {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "claiming due webhooks failed; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    // Whatever this instance could send by now, it has sent and recorded.
                    self.metrics.dispatcher_idle();
                }
                let wait = match self.store.next_due_at().await {
                    Ok(Some(t)) => Duration::from_millis((t.0 - now.0).max(0) as u64)
                        .min(self.config.idle_wake),
                    Ok(None) => self.config.idle_wake,
                    Err(e) => {
                        tracing::error!(error = %e, "reading the next due time failed");
                        Duration::from_secs(1)
                    }
                };
                if wait.is_zero() {
                    // Due rows exist but are all claimed by others or just released: yield.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                tokio::select! {
                    _ = self.new_work.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            self.in_flight.fetch_add(batch.len(), Ordering::SeqCst);
            admission.admit(batch).await;
        }
        tracing::info!(
            in_flight = self.in_flight.load(Ordering::SeqCst),
            "dispatcher stopping; waiting for attempts in flight"
        );
        let _ = receiving.await;
        drop(admission);
        let grace = self.config.request_timeout + Duration::from_secs(5);
        if tokio::time::timeout(grace, recorder).await.is_err() {
            tracing::warn!(
                "attempts still in flight at shutdown; they will be sent again after restart"
            );
        }
    }
}

/// Admits webhooks taken on (claimed or handed off, already counted in flight) to their
/// destinations.
struct Admission {
    store: Arc<dyn Store>,
    owner: String,
    in_flight: Arc<AtomicUsize>,
    /// Says when `in_flight` went down.
    freed: Arc<Freed>,
    /// Wakes the claim loop.
    new_work: Arc<Notify>,
    per_destination: usize,
    /// Each webhook URL's destination, worked out once (a URL parse per webhook was ≈ 1 % of
    /// Tidings' CPU in scenario b); emptied when it grows past [`DESTINATION_KEYS`].
    keys: Mutex<HashMap<String, Arc<str>>>,
    /// The template of each attempt's task (its `dest` is set per webhook); its
    /// `destinations` are the ones admitted to.
    attempting: Attempting,
}

/// How many URLs' destinations the admission keeps worked out.
const DESTINATION_KEYS: usize = 4096;

impl Admission {
    fn destination(&self, url: &str) -> Arc<str> {
        let mut keys = self.keys.lock().expect("destination keys poisoned");
        if let Some(dest) = keys.get(url) {
            return dest.clone();
        }
        if keys.len() >= DESTINATION_KEYS {
            keys.clear();
        }
        let dest: Arc<str> = Arc::from(destination(url));
        keys.insert(url.to_owned(), dest.clone());
        dest
    }

    /// Starts an attempt per webhook where its destination has a free slot, queues a few
    /// behind busy ones, and hands the rest back to the store for later.
    async fn admit(&self, batch: Vec<Claimed>) {
        let mut saturated = Vec::new();
        for claimed in batch {
            let dest = self.destination(&claimed.webhook.url);
            let admitted = {
                let mut map = self
                    .attempting
                    .destinations
                    .lock()
                    .expect("destination map poisoned");
                let d = map.entry(dest.clone()).or_default();
                if d.in_flight < self.per_destination {
                    d.in_flight += 1;
                    Some(claimed)
                } else if d.waiting.len() < self.per_destination * WAITING_PER_SLOT {
                    // Sent as soon as one of this destination's attempts ends.
                    d.waiting.push_back(claimed);
                    None
                } else {
                    saturated.push((claimed.webhook.id, d.backoff(self.per_destination)));
                    None
                }
            };
            if let Some(claimed) = admitted {
                let job = Attempting {
                    dest,
                    ..self.attempting.clone()
                };
                tokio::spawn(job.run(claimed));
            }
        }
        if saturated.is_empty() {
            return;
        }
        let n = saturated.len();
        let backoff = saturated
            .iter()
            .map(|(_, b)| *b)
            .min()
            .unwrap_or(SATURATED_BACKOFF);
        let ids: Vec<EntityId> = saturated.into_iter().map(|(id, _)| id).collect();
        tracing::debug!(
            count = n,
            ?backoff,
            "destination busy; handing webhooks back for later"
        );
        let due = self.attempting.clock.now().plus(backoff);
        if let Err(e) = self.store.release(&self.owner, &ids, due).await {
            tracing::error!(error = %e, "handing back webhooks failed; their lease will end by itself");
        }
        self.in_flight.fetch_sub(n, Ordering::SeqCst);
        self.freed.notify();
        // They are due again sooner than the claim loop may be sleeping (webhooks handed
        // off to a busy destination are handed back here, outside that loop).
        self.new_work.notify_one();
    }
}

/// Admits what API changes hand off, until shutdown.
async fn receive_handoffs(
    mut handed_off: mpsc::UnboundedReceiver<Vec<Claimed>>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            batch = handed_off.recv() => match batch {
                Some(batch) => admission.admit(batch).await,
                None => return,
            },
            _ = shutdown.cancelled() => {
                // No more hand-offs; those already sent are admitted (their rows are
                // claimed by this instance and would otherwise wait for their lease).
                handed_off.close();
                while let Some(batch) = handed_off.recv().await {
                    admission.admit(batch).await;
                }
                return;
            }
        }
    }
}

/// The attempts to one destination: those in flight, and claimed ones waiting for a slot.
#[derive(Default)]
struct Destination {
    in_flight: usize,
    waiting: std::collections::VecDeque<Claimed>,
    /// Moving average of this destination's attempt durations, in milliseconds.
    typical_ms: f64,
}

impl Destination {
    /// How long until this destination is likely to take more: about one attempt per
    /// queued round. Webhooks handed back come due again then, not a fixed time later.
    fn backoff(&self, per_destination: usize) -> Duration {
        let rounds = 1.0 + self.waiting.len() as f64 / per_destination.max(1) as f64;
        Duration::from_millis((self.typical_ms * rounds).clamp(20.0, 1000.0) as u64)
    }
}

/// How many claimed webhooks may wait per slot of a busy destination. Kept small so a
/// waiting webhook is sent well before its lease ends; beyond it, webhooks are handed back.
const WAITING_PER_SLOT: usize = 1;

/// One attempt of one webhook.
#[derive(Clone)]
struct Attempting {
    egress: Egress,
    clock: Arc<dyn Clock>,
    keys: SecretBox,
    metrics: Arc<Metrics>,
    schedule: RetrySchedule,
    destinations: Arc<Mutex<HashMap<Arc<str>, Destination>>>,
    dest: Arc<str>,
    done: mpsc::UnboundedSender<Recorded>,
}

impl Attempting {
    /// Sends `claimed`, then whatever waits for this destination, one after the other.
    async fn run(self, mut claimed: Claimed) {
        loop {
            let took = self.attempt(claimed).await;
            let mut map = self.destinations.lock().expect("destination map poisoned");
            let Some(d) = map.get_mut(&self.dest) else {
                return;
            };
            let ms = took.as_secs_f64() * 1000.0;
            d.typical_ms = if d.typical_ms == 0.0 {
                ms
            } else {
                0.8 * d.typical_ms + 0.2 * ms
            };
            match d.waiting.pop_front() {
                Some(next) => claimed = next,
                None => {
                    d.in_flight -= 1;
                    if d.in_flight == 0 {
                        map.remove(&self.dest);
                    }
                    return;
                }
            }
        }
    }

    /// Makes one attempt and hands its result to the recorder; returns how long it took.
    async fn attempt(&self, claimed: Claimed) -> Duration {
        let w = &claimed.webhook;
        let number = w.attempts + 1;
        let started = self.clock.now();
        if w.attempts == 0 {
            // A first attempt was due when the event was acknowledged.
            self.metrics.first_attempt_lag(started.0 - w.created_at.0);
        }
        let body = payload::body(&w.id, w.created_at, number, w.event_type, &w.data);
        let span = crate::telemetry::attempt_span(&w.id, &w.event_id, number, &w.url);
        // What the attempt recorded, and what it means for the webhook.
        let (attempt, verdict) = match self.sign(&claimed, started, &body) {
            Err(reason) => {
                self.metrics.attempt("no_secret", Duration::ZERO);
                let attempt = Attempt {
                    number,
                    started_at: started,
                    duration_ms: 0,
                    status_code: None,
                    error: Some(reason),
                    body: String::new(),
                };
                (attempt, Verdict::Failed("no_secret"))
            }
            Ok(headers) => {
                let outcome = tracing::Instrument::instrument(
                    self.egress.post(&w.url, &headers, Bytes::from(body)),
                    span.clone(),
                )
                .await;
                let verdict = Verdict::of(&outcome, claimed.success);
                self.metrics.attempt(verdict.label(), outcome.duration);
                let error = match (verdict, outcome.error) {
                    (Verdict::Succeeded, _) => None,
                    (_, Some(tidings_egress::AttemptError::Status(code)))
                        if claimed.success == SuccessRule::Any2xx =>
                    {
                        Some(format!("HTTP {code}: only 2xx counts as success"))
                    }
                    (_, e) => e.map(|e| e.to_string()),
                };
                let attempt = Attempt {
                    number,
                    started_at: started,
                    duration_ms: outcome.duration.as_millis() as i64,
                    status_code: outcome.status,
                    error,
                    body: outcome.body_excerpt,
                };
                (attempt, verdict)
            }
        };
        crate::telemetry::attempt_done(
            &span,
            verdict.label(),
            attempt.status_code,
            attempt.duration_ms,
            attempt.error.as_deref(),
        );
        let finished = self.clock.now();
        let next = match verdict {
            Verdict::Succeeded => Next::Succeeded,
            Verdict::Gone => Next::Gone,
            Verdict::Failed(_) => match self.schedule.delay_after(number) {
                Some(d) if number < self.schedule.max_attempts() => Next::RetryAt(finished.plus(d)),
                _ => Next::Failed,
            },
        };
        match &attempt.error {
            None => tracing::debug!(webhook = %w.id, attempt = number, "delivered"),
            Some(e) => {
                tracing::info!(webhook = %w.id, attempt = number, error = %e, next = ?next, "attempt failed")
            }
        }
        if next == Next::Failed {
            tracing::warn!(webhook = %w.id, level = %w.level_id, attempts = number, "webhook failed for good; notification queued");
        }
        let took = Duration::from_millis(attempt.duration_ms.max(0) as u64);
        let _ = self.done.send(Recorded {
            webhook_id: w.id.clone(),
            attempt,
            next,
        });
        took
    }

    /// The Standard Webhooks headers for this attempt.
    fn sign(&self, claimed: &Claimed, now: Millis, body: &str) -> Result<HeaderMap, String> {
        let sealed = claimed
            .secrets
            .as_ref()
            .ok_or("the receiving level has no signing secret")?;
        let signer = Signer::open(sealed, now, &self.keys)
            .map_err(|e| format!("signing secret unavailable: {e}"))?;
        let ts = now.0.div_euclid(1000);
        let w = &claimed.webhook;
        let mut h = HeaderMap::with_capacity(3);
        let value = |s: String| HeaderValue::from_str(&s).map_err(|e| e.to_string());
        h.insert(WEBHOOK_ID, value(w.id.to_string())?);
        h.insert(WEBHOOK_TIMESTAMP, value(ts.to_string())?);
        h.insert(
            WEBHOOK_SIGNATURE,
            value(signer.signature(w.id.as_str(), ts, body.as_bytes()))?,
        );
        Ok(h)
    }
}

// The Standard Webhooks headers, checked once at compile time rather than per request.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// What an attempt's outcome means for its webhook: the one place that decides success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The receiver answered a status the level's success rule accepts.
    Succeeded,
    /// The receiver answered `410 Gone`: the level's endpoint is disabled.
    Gone,
    /// Anything else, by the attempts metric's label.
    Failed(&'static str),
}

impl Verdict {
    fn of(o: &tidings_egress::Outcome, rule: SuccessRule) -> Verdict {
        use tidings_egress::AttemptError as E;
        // The client reports any status but 200 as an error; the level's rule decides.
        let answered = matches!(o.error, None | Some(E::Status(_)));
        match o.status {
            Some(code) if answered && rule.accepts(code) => Verdict::Succeeded,
            Some(GONE) if answered => Verdict::Gone,
            _ => Verdict::Failed(outcome_label(o)),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Succeeded => "succeeded",
            Verdict::Gone => "gone",
            Verdict::Failed(label) => label,
        }
    }
}

fn outcome_label(o: &tidings_egress::Outcome) -> &'static str {
    use tidings_egress::AttemptError as E;
    match &o.error {
        None if o.is_success() => "succeeded",
        None => "http_status",
        Some(E::Status(_)) => "http_status",
        Some(E::Refused { .. }) => "refused",
        Some(E::Timeout) => "timeout",
        Some(E::Connect(_)) => "connect",
        Some(E::Tls(_)) => "tls",
        Some(E::Dns(_)) => "dns",
        Some(E::InvalidUrl(_)) | Some(E::SchemeNotAllowed { .. }) => "invalid_url",
        Some(_) => "transport",
    }
}

/// How many batches of attempts are recorded at once. SQLite has one writer, which
/// records one batch at a time whatever the number. On PostgreSQL each batch is a
/// transaction of its own, written side by side: with one at a time, an attempt waited for
/// the batch before its own, and the room it held in the dispatcher (which back-pressure
/// lends to the API) was given back that much later.
fn recorders(store: &dyn Store) -> usize {
    match store.backend() {
        "postgres" => 4,
        _ => 1,
    }
}

/// Records finished attempts in batches; a failed write is retried, never dropped. Returns
/// once the channel is closed and every batch is recorded.
#[allow(clippy::too_many_arguments)]
async fn record_loop(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    owner: String,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::UnboundedReceiver<Recorded>,
    in_flight: Arc<AtomicUsize>,
    slot_freed: Arc<Freed>,
    new_work: Arc<Notify>,
) {
    let parallel = recorders(store.as_ref());
    let recorders = Arc::new(tokio::sync::Semaphore::new(parallel));
    while let Some(first) = rx.recv().await {
        // The batch grows while every recorder is busy.
        let recorder = recorders
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        batch.push(first);
        while batch.len() < RECORD_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (store, metrics, owner, clock) =
            (store.clone(), metrics.clone(), owner.clone(), clock.clone());
        let (in_flight, slot_freed, new_work) =
            (in_flight.clone(), slot_freed.clone(), new_work.clone());
        tokio::spawn(async move {
            loop {
                match store.record(&owner, &batch, clock.now()).await {
                    Ok(recorded) => {
                        for i in recorded {
                            metrics.recorded(&batch[i].next);
                        }
                        break;
                    }
                    Err(e) => {
                        metrics.record_failed();
                        tracing::error!(error = %e, count = batch.len(), "recording attempts failed; retrying in 1s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            in_flight.fetch_sub(batch.len(), Ordering::SeqCst);
            slot_freed.notify();
            if batch.iter().any(|r| matches!(r.next, Next::RetryAt(_))) {
                // A retry may be due earlier than the loop's sleep.
                new_work.notify_one();
            }
            drop(recorder);
        });
    }
    // Every batch under way is recorded before the loop ends.
    let _all = recorders
        .acquire_many(parallel as u32)
        .await
        .expect("the semaphore is never closed");
}

/// The destination a URL names, for per-destination limits: scheme, host and port.
fn destination(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => url.to_owned(),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tidings".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::{Attempt, SqlStore};

    fn line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
    }

    /// While the store refuses the record, the batch waits and is retried (nothing dropped),
    /// and `/metrics` says so; once the store takes it again, it is recorded.
    #[tokio::test]
    async fn a_failing_record_is_counted_retried_and_then_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let url = format!("sqlite://{}", path.display());
        let store: Arc<dyn Store> = Arc::new(SqlStore::open(&url).await.unwrap());
        let now = SystemClock.now();
        let webhook = crate::metrics::tests::queue_one(store.as_ref(), 1).await;
        let claimed = store
            .claim_due("me", now, now.plus(Duration::from_secs(60)), 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);

        // The attempts table goes away under the store: every record fails.
        let side = rusqlite::Connection::open(&path).unwrap();
        side.busy_timeout(Duration::from_secs(5)).unwrap();
        side.execute_batch("ALTER TABLE attempts RENAME TO attempts_away")
            .unwrap();

        let metrics = Arc::new(Metrics::new());
        let in_flight = Arc::new(AtomicUsize::new(1));
        let (tx, rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_loop(
            store.clone(),
            metrics.clone(),
            "me".into(),
            Arc::new(SystemClock),
            rx,
            in_flight.clone(),
            Arc::new(Freed::default()),
            Arc::new(Notify::new()),
        ));
        tx.send(Recorded {
            webhook_id: webhook.clone(),
            attempt: Attempt {
                number: 1,
                started_at: now,
                duration_ms: 1,
                status_code: Some(200),
                error: None,
                body: String::new(),
            },
            next: Next::Succeeded,
        })
        .unwrap();
        let scrape = || async { metrics.scrape(&store, SystemClock.now()).await.unwrap() };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let failures = |text: &str| -> u64 {
            line(text, "tidings_record_failures_total").map_or(0, |n| n.parse().unwrap())
        };
        // Two: the first write and its retry a second later.
        while failures(&scrape().await) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no failures counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(in_flight.load(Ordering::SeqCst), 1, "still waiting");
        let attempts: i64 = side
            .query_row(
                "SELECT attempts FROM webhooks WHERE id = ?1",
                [webhook.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(attempts, 0, "nothing half-recorded");

        side.execute_batch("ALTER TABLE attempts_away RENAME TO attempts")
            .unwrap();
        while in_flight.load(Ordering::SeqCst) != 0 {
            assert!(tokio::time::Instant::now() < deadline, "never recorded");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (w, attempts) = store.webhook(&webhook).await.unwrap().unwrap();
        assert_eq!((w.attempts, attempts.len()), (1, 1));
        let text = scrape().await;
        assert_eq!(
            line(
                &text,
                "tidings_webhooks_recorded_total{status=\"succeeded\"}"
            ),
            Some("1")
        );
        drop(tx);
        recorder.await.unwrap();
    }

    #[test]
    fn the_levels_success_rule_decides_and_410_disables() {
        use tidings_egress::{AttemptError, Outcome};
        let answer = |code: u16| Outcome {
            status: Some(code),
            error: (code != 200).then_some(AttemptError::Status(code)),
            body_excerpt: String::new(),
            duration: Duration::ZERO,
        };
        for (code, under_200, under_2xx) in [
            (200, Verdict::Succeeded, Verdict::Succeeded),
            (204, Verdict::Failed("http_status"), Verdict::Succeeded),
            (202, Verdict::Failed("http_status"), Verdict::Succeeded),
            (
                301,
                Verdict::Failed("http_status"),
                Verdict::Failed("http_status"),
            ),
            (410, Verdict::Gone, Verdict::Gone),
            (
                500,
                Verdict::Failed("http_status"),
                Verdict::Failed("http_status"),
            ),
        ] {
            assert_eq!(
                Verdict::of(&answer(code), SuccessRule::Ok200),
                under_200,
                "{code}"
            );
            assert_eq!(
                Verdict::of(&answer(code), SuccessRule::Any2xx),
                under_2xx,
                "{code}"
            );
        }
        let timeout = Outcome {
            status: None,
            error: Some(AttemptError::Timeout),
            body_excerpt: String::new(),
            duration: Duration::ZERO,
        };
        assert_eq!(
            Verdict::of(&timeout, SuccessRule::Any2xx),
            Verdict::Failed("timeout")
        );
    }

    #[test]
    fn destinations_are_scheme_host_and_port() {
        assert_eq!(
            destination("https://a.example/x?y"),
            "https://a.example:443"
        );
        assert_eq!(
            destination("https://a.example:8443/x"),
            "https://a.example:8443"
        );
        assert_eq!(destination("http://A.example/"), "http://a.example:80");
    }
}
