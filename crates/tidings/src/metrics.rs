//! Prometheus metrics: counters kept by this process, plus gauges read from the store at
//! scrape time (so they are right across restarts and across instances).
//!
//! Reading the store's gauges counts its rows (a scan of every webhook). While that is cheap
//! (under [`CHEAP_READ`]) every scrape reads them afresh. Once it is not, a scrape never waits
//! for it: it answers with the last values at once and, when they are older than
//! [`COST_RATIO`] times what reading them took, starts one read in the background for the
//! scrapes after it. Scraping, however often, then spends at most about a tenth of a core on
//! counting, and answers in microseconds.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::changes::Applied;
use crate::domain::Millis;
use crate::store::{Counts, Next, QueueStats, Store, StoreError};

/// Store gauges read faster than this are read again at every scrape.
pub const CHEAP_READ: Duration = Duration::from_millis(10);
/// Otherwise they are reused until they are this many times their read's duration old.
pub const COST_RATIO: u32 = 10;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

/// The store's gauges as last read, and whether a read is under way.
#[derive(Default)]
struct Gauges {
    last: Option<StoreGauges>,
    reading: bool,
}

/// The store's gauges as read once, and how long reading them took.
#[derive(Clone)]
struct StoreGauges {
    read_at: Instant,
    took: Duration,
    counts: Counts,
    queue: QueueStats,
    /// The store's size on disk (`None` if it could not be read).
    size: Option<u64>,
}

pub struct Metrics {
    registry: Registry,
    events_created: Family<TypeLabel, Counter>,
    webhooks_created: Family<TypeLabel, Counter>,
    webhooks_handed_off: Counter,
    changes_ran_again: Counter,
    attempts: Family<OutcomeLabel, Counter>,
    webhooks_recorded: Family<StatusLabel, Counter>,
    record_failures: Counter,
    attempt_duration: Histogram,
    first_attempt_lag: Histogram,
    emails_queued: Counter,
    emails_sent: Counter,
    emails_failed: Counter,
    connections_open: Gauge,
    connections_refused: Counter,
    requests_timed_out: Counter,
    pruned: Family<KindLabel, Counter>,
    backpressure_wait: Histogram,
    backpressure_timeouts: Counter,
    dispatcher_idle: Counter,
    mailer_rounds: Counter,
    gauges: Mutex<Gauges>,
    /// [`CHEAP_READ`] and [`COST_RATIO`] (other values in tests).
    reuse_from: Duration,
    reuse_ratio: u32,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tidings");
        let events_created = Family::<TypeLabel, Counter>::default();
        let webhooks_created = Family::<TypeLabel, Counter>::default();
        registry.register(
            "events_created",
            "Events recorded by this process, by type",
            events_created.clone(),
        );
        registry.register(
            "webhooks_created",
            "Webhooks queued by this process (one per receiving level), by event type",
            webhooks_created.clone(),
        );
        let webhooks_handed_off = Counter::default();
        registry.register(
            "webhooks_handed_off",
            "Webhooks that API changes of this process handed straight to its dispatcher (the rest of webhooks_created waited for a claim: the dispatcher was busy)",
            webhooks_handed_off.clone(),
        );
        let changes_ran_again = Counter::default();
        registry.register(
            "changes_ran_again",
            "API changes that ran a second time in a transaction of their own (PostgreSQL): their group of changes was rolled back, or a row lock they waited for stayed held too long",
            changes_ran_again.clone(),
        );
        let attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "attempts",
            "Delivery attempts by outcome (succeeded, gone, http_status, timeout, connect, tls, refused, dns, invalid_url, transport, no_secret)",
            attempts.clone(),
        );
        let webhooks_recorded = Family::<StatusLabel, Counter>::default();
        registry.register(
            "webhooks_recorded",
            "Attempts this process recorded in the store (counted after the commit), by the webhook's status after them: succeeded, pending (a retry is scheduled), failed, disabled (the receiver answered 410 Gone)",
            webhooks_recorded.clone(),
        );
        let record_failures = Counter::default();
        registry.register(
            "record_failures",
            "Failed writes of a batch of finished attempts to the store; each is retried every second, and while they fail the dispatcher takes no new work once its room (TIDINGS_MAX_IN_FLIGHT) is used up",
            record_failures.clone(),
        );
        let buckets = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let attempt_duration = Histogram::new(buckets);
        registry.register(
            "attempt_duration_seconds",
            "Duration of delivery attempts",
            attempt_duration.clone(),
        );
        let first_attempt_lag = Histogram::new(buckets);
        registry.register(
            "first_attempt_lag_seconds",
            "Delivery latency: from the event's acknowledgement to the start of its first attempt",
            first_attempt_lag.clone(),
        );
        let [emails_queued, emails_sent, emails_failed] = [(); 3].map(|_| Counter::default());
        registry.register(
            "emails_queued",
            "Failure e-mails opened by this process (a digest counts once)",
            emails_queued.clone(),
        );
        registry.register(
            "emails_sent",
            "Failure e-mails sent by this process",
            emails_sent.clone(),
        );
        registry.register(
            "emails_failed",
            "Failed SMTP sends of failure e-mails (each is retried later)",
            emails_failed.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "api_connections_open",
            "API connections open now",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "api_connections_refused",
            "API connections answered 503 and closed because TIDINGS_API_MAX_CONNECTIONS were open",
            connections_refused.clone(),
        );
        let requests_timed_out = Counter::default();
        registry.register(
            "api_requests_timed_out",
            "API requests answered 408 because they took longer than TIDINGS_API_REQUEST_TIMEOUT (a body sent too slowly, usually)",
            requests_timed_out.clone(),
        );
        let pruned = Family::<KindLabel, Counter>::default();
        registry.register(
            "pruned_rows",
            "Rows this process removed because they were past TIDINGS_RETENTION, by kind (event, webhook, attempt, email, notification)",
            pruned.clone(),
        );
        let backpressure_wait = Histogram::new(buckets);
        registry.register(
            "api_backpressure_wait_seconds",
            "How long API changes waited for room in the dispatcher before they began (only those that waited): delivery was not keeping up",
            backpressure_wait.clone(),
        );
        let backpressure_timeouts = Counter::default();
        registry.register(
            "api_backpressure_timeouts",
            "API changes that waited TIDINGS_BACKPRESSURE_WAIT for room in vain and wrote their webhooks to the queue",
            backpressure_timeouts.clone(),
        );
        let dispatcher_idle = Counter::default();
        registry.register(
            "dispatcher_idle",
            "Times the dispatcher looked for due webhooks and found none it could claim, with no attempt of its own in flight: it had nothing to do until a webhook comes due or new work arrives",
            dispatcher_idle.clone(),
        );
        let mailer_rounds = Counter::default();
        registry.register(
            "mailer_rounds",
            "Rounds the mailer completed: each places new failures into e-mails and sends the e-mails that are due",
            mailer_rounds.clone(),
        );
        Metrics {
            registry,
            backpressure_wait,
            backpressure_timeouts,
            connections_open,
            connections_refused,
            requests_timed_out,
            events_created,
            webhooks_created,
            webhooks_handed_off,
            changes_ran_again,
            attempts,
            webhooks_recorded,
            record_failures,
            attempt_duration,
            first_attempt_lag,
            emails_queued,
            emails_sent,
            emails_failed,
            pruned,
            dispatcher_idle,
            mailer_rounds,
            gauges: Mutex::new(Gauges::default()),
            reuse_from: CHEAP_READ,
            reuse_ratio: COST_RATIO,
        }
    }

    /// Counts one recorded attempt by the webhook's status after it.
    pub fn recorded(&self, next: &Next) {
        let status = match next {
            Next::Succeeded => "succeeded",
            Next::RetryAt(_) => "pending",
            Next::Failed => "failed",
            Next::Gone => "disabled",
        };
        self.webhooks_recorded
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// An API connection opened (`true`) or closed.
    pub fn connection(&self, opened: bool) {
        if opened {
            self.connections_open.inc();
        } else {
            self.connections_open.dec();
        }
    }

    /// Counts one API connection refused at the cap.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Counts one API request that timed out.
    pub fn request_timed_out(&self) {
        self.requests_timed_out.inc();
    }

    /// Counts one failed write of a batch of finished attempts.
    pub fn record_failed(&self) {
        self.record_failures.inc();
    }

    /// The whole exposition: this process's counters and the store's gauges (see the module's
    /// note on when those are read).
    pub async fn scrape(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        now: Millis,
    ) -> Result<String, StoreError> {
        {
            let mut guard = self.gauges.lock().expect("gauges poisoned");
            let g = &mut *guard;
            if let Some(last) = g.last.as_ref().filter(|l| l.took >= self.reuse_from) {
                if !g.reading && last.read_at.elapsed() >= last.took * self.reuse_ratio {
                    g.reading = true;
                    let (metrics, store) = (self.clone(), store.clone());
                    tokio::spawn(async move {
                        if let Err(e) = metrics.read_gauges(store.as_ref(), now).await {
                            tracing::warn!(error = %e, "counting the store for /metrics failed");
                        }
                        metrics.gauges.lock().expect("gauges poisoned").reading = false;
                    });
                }
                return Ok(self.render_with_size(&last.counts, &last.queue, last.size, now));
            }
        }
        let g = self.read_gauges(store.as_ref(), now).await?;
        Ok(self.render_with_size(&g.counts, &g.queue, g.size, now))
    }

    /// Reads the store's gauges and keeps them as the last read.
    async fn read_gauges(&self, store: &dyn Store, now: Millis) -> Result<StoreGauges, StoreError> {
        let started = Instant::now();
        let counts = store.counts().await?;
        let queue = store.queue_stats(now).await?;
        let size = store
            .size_on_disk()
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "reading the store's size failed"))
            .ok();
        let took = started.elapsed();
        if took >= self.reuse_from {
            tracing::debug!(
                took_ms = took.as_millis() as u64,
                "counted the store for /metrics; scrapes answer with this count for {} ms",
                (took * self.reuse_ratio).as_millis()
            );
        }
        let read = StoreGauges {
            read_at: Instant::now(),
            took,
            counts,
            queue,
            size,
        };
        self.gauges.lock().expect("gauges poisoned").last = Some(read.clone());
        Ok(read)
    }

    /// Counts what one API change emitted.
    pub fn applied(&self, applied: &Applied) {
        if let Some(waited) = applied.waited {
            self.backpressure_wait.observe(waited.took.as_secs_f64());
            if !waited.room {
                self.backpressure_timeouts.inc();
            }
        }
        if let Some(t) = applied.event {
            let label = TypeLabel {
                r#type: t.as_str().to_owned(),
            };
            self.events_created.get_or_create(&label).inc();
            self.webhooks_created
                .get_or_create(&label)
                .inc_by(applied.webhooks as u64);
            self.webhooks_handed_off.inc_by(applied.handed_off as u64);
        }
        if applied.ran_again {
            self.changes_ran_again.inc();
        }
    }

    pub fn attempt(&self, outcome: &'static str, duration: std::time::Duration) {
        self.attempts.get_or_create(&OutcomeLabel { outcome }).inc();
        self.attempt_duration.observe(duration.as_secs_f64());
    }

    pub fn first_attempt_lag(&self, millis: i64) {
        self.first_attempt_lag
            .observe(millis.max(0) as f64 / 1000.0);
    }

    pub fn emails_queued(&self, n: u64) {
        self.emails_queued.inc_by(n);
    }

    pub fn email_sent(&self) {
        self.emails_sent.inc();
    }

    pub fn email_failed(&self) {
        self.emails_failed.inc();
    }

    /// Counts one claim pass that found the dispatcher with nothing to do.
    pub fn dispatcher_idle(&self) {
        self.dispatcher_idle.inc();
    }

    /// Counts one completed round of the mailer.
    pub fn mailer_round(&self) {
        self.mailer_rounds.inc();
    }

    /// Counts the rows one pruning batch removed.
    pub fn pruned(&self, pruned: &crate::store::Pruned) {
        for (kind, n) in pruned.by_kind() {
            if n > 0 {
                self.pruned.get_or_create(&KindLabel { kind }).inc_by(n);
            }
        }
    }

    /// [`Metrics::render`], and the store's size on disk when it is known.
    fn render_with_size(
        &self,
        counts: &Counts,
        queue: &QueueStats,
        size: Option<u64>,
        now: Millis,
    ) -> String {
        let mut out = self.render(counts, queue, now);
        if let Some(size) = size {
            let eof = out.len() - "# EOF\n".len();
            out.insert_str(
                eof,
                &format!(
                    "# HELP tidings_store_size_bytes The store's size on disk (SQLite: the database file and its WAL; PostgreSQL: the database).\n\
                     # TYPE tidings_store_size_bytes gauge\ntidings_store_size_bytes {size}\n"
                ),
            );
        }
        out
    }

    /// The text exposition: this process's counters, then the store's totals.
    pub fn render(&self, counts: &Counts, queue: &QueueStats, now: Millis) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        // `encode` ends with "# EOF"; the store's gauges go before it.
        let body = out
            .trim_end()
            .strip_suffix("# EOF")
            .unwrap_or(&out)
            .to_owned();
        let mut out = body;
        out.push_str(
            "# HELP tidings_events Events stored, by type.\n# TYPE tidings_events gauge\n",
        );
        for (t, n) in &counts.events {
            out.push_str(&format!("tidings_events{{type=\"{t}\"}} {n}\n"));
        }
        out.push_str("# HELP tidings_webhooks Webhooks stored, by event type and delivery status.\n# TYPE tidings_webhooks gauge\n");
        for (t, s, n) in &counts.webhooks {
            out.push_str(&format!(
                "tidings_webhooks{{type=\"{t}\",status=\"{}\"}} {n}\n",
                s.as_str()
            ));
        }
        out.push_str("# HELP tidings_queue_depth Webhooks waiting for an attempt or in flight.\n# TYPE tidings_queue_depth gauge\n");
        out.push_str(&format!("tidings_queue_depth {}\n", queue.pending));
        out.push_str("# HELP tidings_oldest_due_age_seconds How long the oldest due, unclaimed webhook has waited.\n# TYPE tidings_oldest_due_age_seconds gauge\n");
        let age = queue
            .oldest_due
            .map_or(0.0, |t| (now.0 - t.0).max(0) as f64 / 1000.0);
        out.push_str(&format!("tidings_oldest_due_age_seconds {age}\n"));
        out.push_str("# EOF\n");
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{EntityId, EventType, Level};
    use crate::store::{NewEvent, NewWebhook, SqlStore};

    /// Commits one MEETING_CHANGED event, made at 1,000 + `n` ms, with one webhook due then;
    /// returns the webhook's id.
    pub(crate) async fn queue_one(store: &dyn Store, n: i64) -> EntityId {
        let now = Millis(1_000 + n);
        let event = NewEvent {
            id: EntityId::generate(now),
            event_type: EventType::MeetingChanged,
            subject_id: EntityId::generate(now),
            data: "{}".into(),
            created_at: now,
        };
        let hook = NewWebhook {
            id: EntityId::generate(now),
            level: Level::Site,
            level_id: EntityId::generate(now),
            url: "https://example.com/hook".into(),
            ordered: false,
            disabled: false,
        };
        let id = hook.id.clone();
        let mut tx = store.write_alone().await.unwrap();
        tx.add_event(&event, &[hook], None).await.unwrap();
        tx.commit().await.unwrap();
        id
    }

    fn pending(text: &str) -> &str {
        text.lines()
            .find(|l| {
                l.starts_with("tidings_webhooks{type=\"MEETING_CHANGED\",status=\"pending\"}")
            })
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("none")
    }

    /// A scrape reads the store afresh while reading is cheap, and reuses the last read while
    /// it is younger than `reuse_ratio` times what the read cost.
    #[tokio::test]
    async fn store_gauges_are_reused_only_while_reading_them_is_costly() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let store = SqlStore::open(&url).await.unwrap();
        let now = Millis(10_000);

        let store: Arc<dyn Store> = Arc::new(store);
        // Reads afresh however long reading takes (a loaded machine can take over the
        // default's 10 ms).
        let always = Arc::new(Metrics {
            reuse_from: Duration::MAX,
            ..Metrics::new()
        });
        queue_one(store.as_ref(), 1).await;
        assert_eq!(pending(&always.scrape(&store, now).await.unwrap()), "1");
        queue_one(store.as_ref(), 2).await;
        assert_eq!(pending(&always.scrape(&store, now).await.unwrap()), "2");

        let reusing = Arc::new(Metrics {
            reuse_from: Duration::ZERO,
            reuse_ratio: u32::MAX,
            ..Metrics::new()
        });
        assert_eq!(pending(&reusing.scrape(&store, now).await.unwrap()), "2");
        queue_one(store.as_ref(), 3).await;
        assert_eq!(
            pending(&reusing.scrape(&store, now).await.unwrap()),
            "2",
            "the last read, reused"
        );
        assert_eq!(pending(&always.scrape(&store, now).await.unwrap()), "3");

        // Always out of date: a scrape answers with the last read and starts the next one,
        // whose count a later scrape shows.
        let refreshing = Arc::new(Metrics {
            reuse_from: Duration::ZERO,
            reuse_ratio: 0,
            ..Metrics::new()
        });
        assert_eq!(pending(&refreshing.scrape(&store, now).await.unwrap()), "3");
        queue_one(store.as_ref(), 4).await;
        assert_eq!(
            pending(&refreshing.scrape(&store, now).await.unwrap()),
            "3",
            "answered at once with the last read"
        );
        let started = Instant::now();
        loop {
            let text = refreshing.scrape(&store, now).await.unwrap();
            if pending(&text) == "4" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never read again"
            );
            tokio::task::yield_now().await;
        }
    }
}
