//! The hand-off: an API change gives its new webhooks straight to this instance's
//! dispatcher instead of leaving them for the next claim.
//!
//! Before writing an event's webhooks, the change asks for room in the dispatcher
//! ([`Handoff::reserve`]). With room, the webhooks are written already claimed by this
//! instance (a [`Lease`], exactly as a claim would leave them) and, once the change has
//! committed, sent to the dispatcher in memory. Without room (the dispatcher is busy, or not
//! running), they are written due at once and the dispatcher claims them when it can.
//!
//! Nothing can be lost in between: the rows are committed with the change, and a webhook
//! whose lease ends without a recorded attempt (the process died before the attempt) is due
//! again by itself, as after any claim. What this saves is the claim: a write that moved
//! every new webhook in the due index and read back what the change had just written.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::domain::Millis;
use crate::store::{Claimed, Lease};

/// Shared by the API (which reserves and sends) and the dispatcher (which receives).
pub struct Handoff {
    owner: String,
    lease: Duration,
    /// Attempts this instance has taken on: claimed, handed off or reserved, and not yet
    /// recorded. The dispatcher's own count.
    in_flight: Arc<AtomicUsize>,
    /// Notified when reserved room is given back unused.
    slot_freed: Arc<Notify>,
    /// Most attempts in flight that hand-offs may bring about; the rest of the dispatcher's
    /// room stays for claims, so that due retries are never starved by new events.
    limit: usize,
    /// Wakes the dispatcher when webhooks were written due instead of handed off.
    new_work: Arc<Notify>,
    sender: mpsc::UnboundedSender<Vec<Claimed>>,
}

/// Room reserved for `n` webhooks; given back when dropped unsent (the change failed).
pub struct Reservation<'a> {
    handoff: &'a Handoff,
    n: usize,
    lease: Lease,
    sent: bool,
}

impl Handoff {
    /// A hand-off into a dispatcher allowing `max_in_flight` attempts, of which hand-offs may
    /// fill three quarters. Returns the receiving end, for the dispatcher.
    pub(crate) fn new(
        owner: String,
        lease: Duration,
        in_flight: Arc<AtomicUsize>,
        slot_freed: Arc<Notify>,
        max_in_flight: usize,
        new_work: Arc<Notify>,
    ) -> (Handoff, mpsc::UnboundedReceiver<Vec<Claimed>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let handoff = Handoff {
            owner,
            lease,
            in_flight,
            slot_freed,
            limit: (max_in_flight * 3 / 4).max(1),
            new_work,
            sender,
        };
        (handoff, receiver)
    }

    /// Reserves room for `n` webhooks written at `now`, or `None` when the dispatcher has
    /// none (or has stopped): they are then written due, for a claim.
    pub fn reserve(&self, n: usize, now: Millis) -> Option<Reservation<'_>> {
        if n == 0 || self.sender.is_closed() {
            return None;
        }
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                (cur + n <= self.limit).then_some(cur + n)
            })
            .ok()?;
        Some(Reservation {
            handoff: self,
            n,
            lease: Lease {
                owner: self.owner.clone(),
                until: now.plus(self.lease),
            },
            sent: false,
        })
    }

    /// Wakes the dispatcher: webhooks were written due (not handed off).
    pub fn wake(&self) {
        self.new_work.notify_one();
    }
}

impl Reservation<'_> {
    /// The claim to write the webhooks with.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Hands the committed, claimed webhooks to the dispatcher.
    pub fn send(mut self, claimed: Vec<Claimed>) {
        let unused = self.n.saturating_sub(claimed.len());
        if self.handoff.sender.send(claimed).is_ok() {
            // Whatever was not sent is not the dispatcher's to count down.
            self.n = unused;
        } else {
            // The dispatcher stopped: the rows keep their lease, which ends by itself (at
            // the next start on SQLite, at once).
            tracing::debug!("dispatcher stopped; handed-off webhooks wait for their lease");
        }
        self.sent = true;
        self.give_back();
    }

    fn give_back(&mut self) {
        if self.n > 0 {
            self.handoff.in_flight.fetch_sub(self.n, Ordering::SeqCst);
            self.handoff.slot_freed.notify_one();
            self.n = 0;
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.sent {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoff(max: usize) -> (Handoff, mpsc::UnboundedReceiver<Vec<Claimed>>) {
        Handoff::new(
            "me".into(),
            Duration::from_secs(35),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Notify::new()),
            max,
            Arc::new(Notify::new()),
        )
    }

    #[test]
    fn reservations_fill_three_quarters_and_give_back_what_was_not_sent() {
        let (h, _rx) = handoff(16);
        let a = h.reserve(8, Millis(1_000)).expect("room for 8");
        assert_eq!(a.lease().owner, "me");
        assert_eq!(a.lease().until, Millis(36_000));
        let b = h
            .reserve(4, Millis(1_000))
            .expect("room for 4 more (12 of 16)");
        assert!(
            h.reserve(1, Millis(1_000)).is_none(),
            "a quarter stays for claims"
        );
        drop(b); // the change failed: its room comes back
        assert_eq!(h.in_flight.load(Ordering::SeqCst), 8);
        // Sent with none claimed (no webhook written): all of it comes back.
        a.send(Vec::new());
        assert_eq!(h.in_flight.load(Ordering::SeqCst), 0);
        assert!(h.reserve(12, Millis(0)).is_some());
    }

    #[test]
    fn no_room_once_the_dispatcher_stopped() {
        let (h, rx) = handoff(16);
        drop(rx);
        assert!(h.reserve(1, Millis(0)).is_none());
        assert_eq!(h.in_flight.load(Ordering::SeqCst), 0);
    }
}
