//! `tidings-egress`: the one outbound HTTP client of Tidings.
//!
//! Every webhook attempt goes through [`Egress::post`], which owns the rules of docs/contract.md#sending that
//! concern the wire: HTTPS only (unless development allows `http://`), TLS verified against the
//! system roots plus an optional extra CA, redirects never followed, only HTTP 200 a success,
//! the first 1 KiB of the answer kept, and the SSRF block enforced at connect time by
//! [`AddressPolicy`]. Nothing else in Tidings may open an outbound HTTP connection; this crate
//! knows nothing about webhooks, signatures or the store.
//!
//! - [`policy`]: which IP addresses may be contacted (pure).
//! - `resolver`: the DNS resolver that applies the policy to every resolved address.
//! - `egress`: the client and its configuration.
//! - [`outcome`]: what an attempt produced, and reqwest errors sorted into kinds.

#![forbid(unsafe_code)]

mod egress;
pub mod outcome;
pub mod policy;
mod resolver;

pub use egress::{BuildError, Egress, EgressConfig};
pub use outcome::{AttemptError, Outcome, BODY_EXCERPT_LIMIT};
pub use policy::{AddressPolicy, AllowListError, Embedding, Forbidden, Reason};
/// Header types of [`Egress::post`], re-exported so callers need not depend on `http`.
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
