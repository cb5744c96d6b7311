//! Prometheus metrics: counters kept by this process, plus gauges read from the store at
//! scrape time (so they are right across restarts and across instances).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::changes::Applied;
use crate::domain::Millis;
use crate::store::{Counts, QueueStats};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    events_created: Family<TypeLabel, Counter>,
    webhooks_created: Family<TypeLabel, Counter>,
    attempts: Family<OutcomeLabel, Counter>,
    attempt_duration: Histogram,
    first_attempt_lag: Histogram,
    emails_queued: Counter,
    emails_sent: Counter,
    emails_failed: Counter,
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
        let attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "attempts",
            "Delivery attempts by outcome (succeeded, http_status, timeout, connect, tls, refused, dns, invalid_url, transport, no_secret)",
            attempts.clone(),
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
        Metrics {
            registry,
            events_created,
            webhooks_created,
            attempts,
            attempt_duration,
            first_attempt_lag,
            emails_queued,
            emails_sent,
            emails_failed,
        }
    }

    /// Counts what one API change emitted.
    pub fn applied(&self, applied: &Applied) {
        if let Some(t) = applied.event {
            let label = TypeLabel {
                r#type: t.as_str().to_owned(),
            };
            self.events_created.get_or_create(&label).inc();
            self.webhooks_created
                .get_or_create(&label)
                .inc_by(applied.webhooks as u64);
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
