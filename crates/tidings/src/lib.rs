//! Tidings: hierarchy-aware webhook delivery.

pub mod receiver;
