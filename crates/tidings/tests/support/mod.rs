//! What the delivery tests stand on: certificates made in the test ([`tls`]), a real HTTPS
//! receiver ([`receiver`]) and Tidings running in-process ([`app`]).

#![allow(dead_code)] // not every test binary uses every helper

pub mod app;
pub mod receiver;
#[path = "../stores/mod.rs"]
pub mod stores;
pub mod tls;
