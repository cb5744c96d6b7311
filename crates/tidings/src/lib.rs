//! Tidings: hierarchy-aware webhook delivery.
//!
//! A platform's customers form a tree, reseller → dealer → company → site, with users and
//! meetings below. Every change to that tree is an event; each level above the changed entity
//! that has set a `webhook_url` receives it as a signed HTTPS `POST`, with up to five attempts,
//! and its notification contact hears by e-mail about a webhook that failed them all. Tidings
//! keeps the tree (its API can be the system of record), records each change together with
//! its webhooks, and delivers them from SQLite on one machine or PostgreSQL shared by several
//! instances. The rules it keeps are written out, with the code and the tests behind each, in
//! `docs/contract.md`.
//!
//! # Layout
//!
//! * `api`: the HTTP API under `/v1`, one file per resource, the one JSON error shape, keys
//!   and authentication, `/healthz`, `/readyz`, `/metrics` and the OpenAPI document.
//! * `tenancy`: who a key is (the operator, or a tenant bound to one level) and which part of
//!   the tree it may see.
//! * `changes`: applies a create, change, delete or meeting moment, and writes its event and
//!   one webhook per receiving level in the same transaction (the transactional outbox);
//!   who may do what lives in its `rules`, a level's secret and endpoint in its `levels`.
//! * `domain`: the pure core: ids and timestamps, the four levels and 22 event types, who
//!   receives what (`domain::routing`), the entities, their inputs and wire shapes, the
//!   webhook envelope (`domain::payload`).
//! * `views`: loads what an entity's wire shape embeds; API answers and webhook `data` are
//!   both built by it.
//! * `store`: persistence behind one trait, on SQLite (one writer, group commit) or
//!   PostgreSQL (row claims with leases); the outbox for webhooks, attempts and e-mails.
//! * `delivery`: the dispatcher that claims due webhooks, admits them under each
//!   destination's limit, sends each attempt through the guarded client of the
//!   `tidings-egress` crate (HTTPS only, SSRF refused at connect time) and records the
//!   outcomes in batches; the hand-off of new webhooks straight from an API change (with the
//!   API's back-pressure), and each level's signing secret.
//! * `schedule`: the retry policy: how many attempts, and the delay after each failure.
//! * `notify`: failure e-mails: whom to tell, the digest rule, the text, the SMTP outbox loop.
//! * `metrics`: the Prometheus counters and the gauges read from the store.
//! * `retention`: the background pruning of finished webhooks, events and e-mails past
//!   `TIDINGS_RETENTION`.
//! * `telemetry`: logs, and OpenTelemetry spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! * `console`: the web console at `/`, pages rendered by the server; its reads and changes
//!   are requests to the API's own handlers, on behalf of the signed-in key.
//! * `clock`: the one source of "now", replaced by a manual clock in tests.
//! * `config`: the settings, from defaults, a TOML file and `TIDINGS_*` variables.
//! * `startup`: wires the parts together for `tidings serve`, and shuts them down in order.
//! * `receiver`: `tidings receiver`, the example receiver integrators start from.
//!
//! # A request's way through
//!
//! A `PATCH /v1/meetings/{id}` reaches `api`, which turns the key into a
//! `tenancy::Principal` and calls `changes::Hierarchy`. In one store transaction the change is
//! validated (`domain`), checked against the key's subtree, written, composed into its wire
//! shape (`views`) and routed to the levels above it (`domain::routing`); the event and its
//! webhooks, each with its level's URL as it is now, are added and the transaction commits.
//! Only then does the API answer. The new webhooks go straight to this instance's `delivery`
//! dispatcher when it has room, or wait in the `store` until a dispatcher claims them. For
//! each attempt the dispatcher builds the envelope, signs it with the level's secret, sends it
//! through `tidings-egress` and records the outcome in the `store`, with the next attempt's
//! time from `schedule`. When the last attempt fails, the same record queues a failure
//! e-mail, which `notify` places in a digest and sends to the level's notification contact.

#![forbid(unsafe_code)]

pub mod api;
pub mod changes;
pub mod clock;
pub mod config;
pub mod console;
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
