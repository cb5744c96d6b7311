//! Tidings' integration tests, in one binary (one link, however many tests): black-box tests
//! of the real binary, end-to-end tests of Tidings in-process with real peers, and the store
//! contract run on both stores. Every test stands on the one harness in [`helpers`]: one way
//! to start Tidings in-process and one to start the real binary, one operator key, one tree
//! builder, one store picker (SQLite, or PostgreSQL with `TIDINGS_TEST_STORE=postgres`), one
//! SMTP server, one TLS receiver.
//!
//! A module per subject; select one with a filter, e.g. `cargo test --test it -- delivery::`.

mod helpers;

mod api_contract;
mod backup;
mod console_store;
mod core_api;
mod crash;
mod delivery;
mod email;
mod endpoints;
mod endpoints_store;
mod faults;
mod groups;
mod level_cache;
mod plans;
mod prune_crash;
mod pruning;
mod receiver_e2e;
mod retention;
mod scale;
mod store_contract;
mod tenancy;
mod traces;
