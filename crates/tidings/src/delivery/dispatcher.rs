//! The dispatcher: one loop that claims due webhooks, one task that takes the webhooks API
//! changes hand off (see [`super::handoff`]), and one task per attempt.
//!
//! - **Durable**: a webhook is claimed with a lease (its `due_at` moves to the lease's end),
//!   or written already claimed when handed off, so if this process dies mid-attempt the
//!   webhook becomes due again by itself.
//! - **Cheap when idle**: it sleeps until the earliest due time, or until told new work
//!   arrived; it never scans rows that are not due.
//! - **Isolated**: what it takes on goes through [`super::admission`], which holds each
//!   destination to its own limit.
//! - **Batched**: each attempt ([`super::attempt`]) ends in the recorder
//!   ([`super::recorder`]), which writes finished attempts together, one transaction per
//!   batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings_egress::Egress;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::admission::{receive_handoffs, Admission, Destination};
use super::attempt::Attempting;
use super::handoff::{Freed, Handoff};
use super::recorder::record_loop;
use super::secrets::SecretBox;
use crate::clock::Clock;
use crate::domain::EntityId;
use crate::metrics::Metrics;
use crate::schedule::RetrySchedule;
use crate::store::{Claimed, Recorded, Store};

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

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tidings".into())
}
