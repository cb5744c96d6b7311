//! The pure core: identifiers, levels, event types, routing, entities and their wire shapes.
//!
//! Nothing in here does I/O or reads a clock; callers pass time and loaded data in.

pub mod endpoint;
pub mod entities;
pub mod event;
pub mod ids;
pub mod payload;
pub mod routing;
pub mod validate;

pub use event::{Action, EventType, Kind, Level};
pub use ids::{EntityId, Millis};
