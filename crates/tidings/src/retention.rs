//! Retention: prunes finished deliveries older than `TIDINGS_RETENTION` in the background,
//! so that the store stops growing under steady load (docs/operations.md).
//!
//! Work goes in small batches, each one short write transaction (on SQLite one turn of the
//! single writer, a member of a group commit like any API change), with a pause between
//! batches, so API writes and deliveries wait at most one batch. A pass walks every event
//! older than the cutoff once, then the pruner sleeps until the next pass.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::{EntityId, Millis};
use crate::metrics::Metrics;
use crate::store::{Pruned, Store};

/// The highest id there is.
const LAST_ID: &str = "ffffffffffffffffffffffff";

/// How the pruner paces itself.
#[derive(Debug, Clone)]
pub struct PrunerConfig {
    /// Keep finished deliveries this long.
    pub retention: Duration,
    /// Events looked at (and e-mails removed) per batch at most.
    pub batch: u32,
    /// Pause between two batches of a pass: the writer's other users go first.
    pub pause: Duration,
    /// Time between passes.
    pub every: Duration,
}

impl PrunerConfig {
    /// Batches of 200 events, and a pass every quarter of the retention (between 200 ms and
    /// one minute): something older than the retention is gone after at most 1.25 times it.
    pub fn new(retention: Duration) -> Self {
        PrunerConfig {
            retention,
            batch: 200,
            pause: Duration::from_millis(10),
            every: (retention / 4).clamp(Duration::from_millis(200), Duration::from_secs(60)),
        }
    }
}

pub struct Pruner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    config: PrunerConfig,
}

impl Pruner {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        config: PrunerConfig,
    ) -> Self {
        Pruner {
            store,
            clock,
            metrics,
            config,
        }
    }

    /// Runs passes until `stop`; a batch under way finishes first (it is one transaction).
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(
            retention = %humantime::format_duration(self.config.retention),
            "pruning finished webhooks, their events and sent e-mails past retention"
        );
        loop {
            self.pass(&stop).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.every) => {}
            }
        }
    }

    /// One pass over everything older than the cutoff (taken at the pass's start).
    async fn pass(&self, stop: &CancellationToken) {
        let started = Instant::now();
        let retention = self.config.retention.as_millis().min(i64::MAX as u128) as i64;
        let cutoff = Millis(self.clock.now().0.saturating_sub(retention));
        let mut total = Pruned::default();
        let mut batches = 0u64;
        let mut after: Option<EntityId> = None;
        loop {
            let batch_started = Instant::now();
            match self
                .store
                .prune(cutoff, after.as_ref(), self.config.batch)
                .await
            {
                Ok(p) => {
                    batches += 1;
                    self.metrics.pruned(&p);
                    tracing::trace!(
                        took_us = batch_started.elapsed().as_micros() as u64,
                        ?p,
                        "pruning batch"
                    );
                    total.events += p.events;
                    total.webhooks += p.webhooks;
                    total.attempts += p.attempts;
                    total.emails += p.emails;
                    total.notifications += p.notifications;
                    let more_emails = p.emails == u64::from(self.config.batch);
                    after = match p.next {
                        Some(next) => Some(next),
                        // Another batch for e-mails only: past every event.
                        None if more_emails => Some(EntityId::parse(LAST_ID).expect("an id")),
                        None => break,
                    };
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning failed; the next pass tries again");
                    break;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.config.pause) => {}
            }
        }
        if total.by_kind().iter().any(|(_, n)| *n > 0) {
            tracing::info!(
                events = total.events,
                webhooks = total.webhooks,
                attempts = total.attempts,
                emails = total.emails,
                batches,
                took_ms = started.elapsed().as_millis() as u64,
                cutoff = %cutoff.to_rfc3339(),
                "pruned what was past retention"
            );
        }
    }
}
