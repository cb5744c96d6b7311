//! Prometheus metrics: counters kept by this process, plus gauges read from the store at
//! scrape time (so they are right across restarts and across instances).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::changes::Applied;
use crate::store::Counts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

pub struct Metrics {
    registry: Registry,
    events_created: Family<TypeLabel, Counter>,
    webhooks_created: Family<TypeLabel, Counter>,
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
        Metrics {
            registry,
            events_created,
            webhooks_created,
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

    /// The text exposition: this process's counters, then the store's totals.
    pub fn render(&self, counts: &Counts) -> String {
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
        out.push_str("# EOF\n");
        out
    }
}
