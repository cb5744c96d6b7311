//! Delivery: turns due webhooks into signed HTTPS POSTs and records what came back.
//!
//! - [`secrets`]: each level's signing secret, sealed at rest, rotated with an overlap.
//! - [`dispatcher`]: claims due webhooks from the store and runs the rest:
//!   - `admission`: isolates destinations from each other (a limit per destination);
//!   - `attempt`: signs and sends one attempt with the guarded client (`tidings-egress`)
//!     and decides what its answer means;
//!   - `recorder`: records finished attempts in batches.
//! - [`handoff`]: lets an API change give its new webhooks to the dispatcher directly,
//!   written already claimed, instead of leaving them for a claim.
//!
//! Delivery never decides who receives an event (that was fixed when the webhook was made)
//! and never changes a webhook's URL snapshot or payload.

mod admission;
mod attempt;
pub mod dispatcher;
pub mod handoff;
mod recorder;
pub mod secrets;

pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use handoff::Handoff;
