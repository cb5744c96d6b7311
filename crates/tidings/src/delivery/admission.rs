//! Admission: which taken-on webhooks start an attempt now. At most `per_destination`
//! attempts run at once per destination (scheme, host and port); a few more wait for a
//! slot, and the rest are handed back to the store, due again when the destination is
//! likely to take them, instead of holding slots that others need.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::attempt::Attempting;
use super::handoff::Freed;
use crate::domain::EntityId;
use crate::store::{Claimed, Store};

/// The longest a busy destination's extra webhooks wait before they are claimed again.
const SATURATED_BACKOFF: Duration = Duration::from_secs(1);

/// Admits webhooks taken on (claimed or handed off, already counted in flight) to their
/// destinations.
pub(super) struct Admission {
    pub(super) store: Arc<dyn Store>,
    pub(super) owner: String,
    pub(super) in_flight: Arc<AtomicUsize>,
    /// Says when `in_flight` went down.
    pub(super) freed: Arc<Freed>,
    /// Wakes the claim loop.
    pub(super) new_work: Arc<Notify>,
    pub(super) per_destination: usize,
    /// Each webhook URL's destination, worked out once (a URL parse per webhook was ≈ 1 % of
    /// Tidings' CPU in scenario b); emptied when it grows past [`DESTINATION_KEYS`].
    pub(super) keys: Mutex<HashMap<String, Arc<str>>>,
    /// The template of each attempt's task (its `dest` is set per webhook); its
    /// `destinations` are the ones admitted to.
    pub(super) attempting: Attempting,
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
    pub(super) async fn admit(&self, batch: Vec<Claimed>) {
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
pub(super) async fn receive_handoffs(
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
pub(super) struct Destination {
    pub(super) in_flight: usize,
    pub(super) waiting: VecDeque<Claimed>,
    /// Moving average of this destination's attempt durations, in milliseconds.
    pub(super) typical_ms: f64,
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

#[cfg(test)]
mod tests {
    use super::*;

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
