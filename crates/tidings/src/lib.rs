//! Tidings: hierarchy-aware webhook delivery.

#![forbid(unsafe_code)]

pub mod api;
pub mod changes;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod metrics;
pub mod notify;
pub mod receiver;
pub mod schedule;
pub mod startup;
pub mod store;
pub mod tenancy;
pub mod views;
