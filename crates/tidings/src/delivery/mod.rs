//! Delivery: turns due webhooks into signed HTTPS POSTs and records what came back.
//!
//! - [`secrets`]: each level's signing secret, sealed at rest, rotated with an overlap.
//! - [`dispatcher`]: claims due webhooks from the store, sends them with the guarded client
//!   (`tidings-egress`), isolates destinations from each other, and records every attempt.
//! - [`handoff`]: lets an API change give its new webhooks to the dispatcher directly,
//!   written already claimed, instead of leaving them for a claim.
//!
//! Delivery never decides who receives an event (that was fixed when the webhook was made)
//! and never changes a webhook's URL snapshot or payload.

pub mod dispatcher;
pub mod handoff;
pub mod secrets;

pub use dispatcher::{Dispatcher, DispatcherConfig};
pub use handoff::Handoff;
