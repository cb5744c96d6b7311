//! The hand-off: an API change gives its new webhooks straight to this instance's
//! dispatcher instead of leaving them for the next claim.
//!
//! Before writing an event's webhooks, the change asks for room in the dispatcher
//! ([`Handoff::reserve`]). With room, the webhooks are written already claimed by this
//! instance (a [`Lease`], exactly as a claim would leave them) and, once the change has
//! committed, sent to the dispatcher in memory. Without room (the dispatcher is busy, or not
//! running), they are written due at once and the dispatcher claims them when it can.
//!
//! Before its transaction begins, a change that may emit an event reserves that room for as
//! many webhooks as an event can have ([`Handoff::admit`]), waiting for it at most
//! `TIDINGS_BACKPRESSURE_WAIT`: when delivery cannot keep up, the API slows down to its pace
//! instead of queueing webhooks faster than they are sent, which would let their wait grow
//! without bound. Only when the wait runs out (a dispatcher held up by slow receivers, say)
//! are webhooks written due, for a claim.
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
    /// Notified when attempts in flight end or reserved room is given back unused.
    slot_freed: Arc<Freed>,
    /// Longest [`Handoff::wait_for_room`] waits.
    wait: Duration,
    /// Most attempts in flight that hand-offs may bring about; the rest of the dispatcher's
    /// room stays for claims, so that due retries are never starved by new events.
    limit: usize,
    /// Wakes the dispatcher when webhooks were written due instead of handed off.
    new_work: Arc<Notify>,
    sender: mpsc::UnboundedSender<Vec<Claimed>>,
}

/// Says that attempts in flight ended (or reserved room was given back): wakes the
/// dispatcher's claim loop, whose wake-up is kept if it is not waiting yet, and every change
/// waiting for room.
#[derive(Default)]
pub(crate) struct Freed {
    claims: Notify,
    changes: Notify,
}

impl Freed {
    pub(crate) fn notify(&self) {
        self.claims.notify_one();
        self.changes.notify_waiters();
    }

    /// For the claim loop: until the next [`Freed::notify`] (or the one it missed).
    pub(crate) async fn dispatcher(&self) {
        self.claims.notified().await
    }
}

/// How a change's wait for room ended.
#[derive(Debug, Clone, Copy)]
pub struct Waited {
    /// Room came (false: the wait ran out, and the webhooks are written due).
    pub room: bool,
    pub took: Duration,
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
        slot_freed: Arc<Freed>,
        max_in_flight: usize,
        wait: Duration,
        new_work: Arc<Notify>,
    ) -> (Handoff, mpsc::UnboundedReceiver<Vec<Claimed>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let handoff = Handoff {
            owner,
            lease,
            in_flight,
            slot_freed,
            wait,
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

    /// Back-pressure: reserves room for `n` webhooks (the most the change can write), waiting
    /// for it at most the configured wait. Returns the reservation (`None`: the wait ran out
    /// or the dispatcher stopped) and, if it had to wait, how. `now` gives the lease.
    pub async fn admit(&self, n: usize, now: Millis) -> (Option<Reservation<'_>>, Option<Waited>) {
        if let Some(r) = self.reserve(n, now) {
            return (Some(r), None);
        }
        if self.wait.is_zero() || self.sender.is_closed() {
            return (None, None);
        }
        let started = tokio::time::Instant::now();
        let deadline = started + self.wait;
        loop {
            let freed = self.slot_freed.changes.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let reserved = self.reserve(n, now);
            if reserved.is_some() || self.sender.is_closed() {
                let waited = Waited {
                    room: reserved.is_some(),
                    took: started.elapsed(),
                };
                return (reserved, Some(waited));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                let waited = Waited {
                    room: false,
                    took: started.elapsed(),
                };
                return (None, Some(waited));
            }
        }
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

    /// Keeps room for `n` webhooks at most and gives back the rest; `None` for none.
    pub fn keep(mut self, n: usize) -> Option<Self> {
        if n >= self.n {
            return Some(self);
        }
        let extra = self.n - n;
        self.n = extra;
        self.give_back();
        self.n = n;
        (n > 0).then_some(self)
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
            self.handoff.slot_freed.notify();
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

    const WAIT: Duration = Duration::from_secs(2);

    fn handoff(max: usize) -> (Handoff, mpsc::UnboundedReceiver<Vec<Claimed>>) {
        Handoff::new(
            "me".into(),
            Duration::from_secs(35),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Freed::default()),
            max,
            WAIT,
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

    /// On tokio's paused clock: the wait's time is the runtime's, not the machine's.
    #[tokio::test(start_paused = true)]
    async fn a_change_waits_for_room_until_an_attempt_ends_or_the_wait_runs_out() {
        let (h, _rx) = handoff(16);
        let h = Arc::new(h);
        let (room, waited) = h.admit(4, Millis(0)).await;
        assert!(room.is_some() && waited.is_none(), "room: no wait");
        drop(room);
        let full = h.reserve(10, Millis(0)).expect("room for 10");

        // Not room for 4 more: the wait ends when room is given back (here a reservation
        // dropped; the dispatcher's record loop and hand-backs give room the same way).
        let waiting = tokio::spawn({
            let h = h.clone();
            async move {
                let (room, waited) = h.admit(4, Millis(0)).await;
                (room.map(|r| r.keep(1).is_some()), waited)
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "no room yet");
        drop(full);
        let (kept, waited) = waiting.await.unwrap();
        assert_eq!(kept, Some(true), "room came, and one of the four was kept");
        let waited = waited.expect("it waited");
        assert!(waited.room);
        assert_eq!(waited.took, Duration::from_millis(300));
        assert_eq!(h.in_flight.load(Ordering::SeqCst), 0, "all given back");

        // Full and nothing ends: the wait runs out, and the webhooks will be written due.
        let _full = h.reserve(12, Millis(0)).expect("room for 12");
        let (room, waited) = h.admit(4, Millis(0)).await;
        assert!(room.is_none());
        let waited = waited.expect("it waited");
        assert!(!waited.room);
        assert_eq!(waited.took, WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_for_room_when_it_is_turned_off_or_the_dispatcher_stopped() {
        let (h, rx) = handoff(16);
        let _full = h.reserve(12, Millis(0)).expect("room for 12");
        drop(rx);
        assert!(matches!(h.admit(1, Millis(0)).await, (None, None)));
        let (mut h, _rx) = handoff(16);
        h.wait = Duration::ZERO;
        let _full = h.reserve(12, Millis(0)).expect("room for 12");
        assert!(matches!(h.admit(1, Millis(0)).await, (None, None)));
    }

    #[test]
    fn a_reservation_keeps_what_the_change_needs() {
        let (h, _rx) = handoff(16);
        let r = h.reserve(4, Millis(0)).unwrap();
        let r = r.keep(2).expect("two kept");
        assert_eq!(h.in_flight.load(Ordering::SeqCst), 2);
        assert!(r.keep(0).is_none());
        assert_eq!(h.in_flight.load(Ordering::SeqCst), 0);
    }
}
