//! Tidings: hierarchy-aware webhook delivery.

pub mod api;
pub mod changes;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod metrics;
pub mod notify;
pub mod receiver;
pub mod retention;
pub mod schedule;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tenancy;
pub mod views;
