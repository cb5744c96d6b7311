//! What one delivery attempt produced, in the terms the delivery log records (docs/contract.md#success): the
//! status code or transport error, the duration and the first 1 KiB of the response body.
//!
//! Owns the translation of reqwest's layered errors into a few kinds an operator can act on.
//! It must never put the request URL into a message: webhook URLs may carry tokens, and these
//! messages end up in the database, the API and failure e-mails.

use std::error::Error as StdError;
use std::net::IpAddr;
use std::time::Duration;

use crate::policy::Forbidden;
use crate::resolver::{LookupFailed, RefusedAddress};

/// How much of a response body an attempt keeps and reads.
pub const BODY_EXCERPT_LIMIT: usize = 1024;

/// The result of one POST. Invariant: `error` is `None` exactly when `status` is `Some(200)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The HTTP status, when the destination answered at all.
    pub status: Option<u16>,
    /// Why the attempt failed; `None` for a success.
    pub error: Option<AttemptError>,
    /// The first [`BODY_EXCERPT_LIMIT`] bytes of the response body, lossy UTF-8; empty when
    /// there was no response.
    pub body_excerpt: String,
    /// From the start of the attempt until the excerpt was read or the attempt failed.
    pub duration: Duration,
}

impl Outcome {
    /// Only HTTP 200 counts as success (docs/contract.md#success); 201, 204 and redirects are failures. A
    /// level may choose any 2xx instead: Tidings' dispatcher applies the level's rule to
    /// `status`.
    pub fn is_success(&self) -> bool {
        self.status == Some(200) && self.error.is_none()
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// The SSRF policy refused the destination address (before any packet was sent to it).
    #[error("destination refused: {ip} is {reason}")]
    Refused { ip: IpAddr, reason: Forbidden },
    /// The URL does not parse or has no host.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// Not `https://` (or `http://` when the client allows it).
    #[error("scheme `{scheme}` is not allowed: webhook URLs must use https://")]
    SchemeNotAllowed { scheme: String },
    /// The host name did not resolve.
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    /// Connecting, or the whole request, took longer than the configured timeout.
    #[error("timed out")]
    Timeout,
    /// The TCP connection could not be made (refused, unreachable, reset...).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The TLS handshake failed, e.g. a certificate not signed by a trusted root.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The destination answered with a status other than 200.
    #[error("HTTP {0}: only 200 counts as success")]
    Status(u16),
    /// Anything else that broke the exchange (protocol errors, a connection closed mid-way).
    #[error("request failed: {0}")]
    Transport(String),
}

/// Sorts a reqwest error into an [`AttemptError`] by looking through its whole source chain:
/// the useful cause (our resolver's refusal, a rustls error, `ECONNREFUSED`) sits several
/// layers below reqwest's own message.
pub(crate) fn classify(err: &reqwest::Error) -> AttemptError {
    let chain = causes(err);
    for cause in &chain {
        if let Some(refused) = cause.downcast_ref::<RefusedAddress>() {
            return AttemptError::Refused {
                ip: refused.ip,
                reason: refused.reason,
            };
        }
        if let Some(lookup) = cause.downcast_ref::<LookupFailed>() {
            return AttemptError::Dns(lookup.to_string());
        }
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return AttemptError::Tls(tls.to_string());
        }
    }
    if err.is_timeout() {
        return AttemptError::Timeout;
    }
    let refused_connection = chain.iter().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    if err.is_connect() || refused_connection {
        return AttemptError::Connect(describe(err));
    }
    AttemptError::Transport(describe(err))
}

/// The error and everything below it. `io::Error::source` skips the error it wraps (it
/// returns the wrapped error's source), so the walk steps into wrapped errors itself: that is
/// where tokio-rustls puts the `rustls::Error`, sometimes two `io::Error`s deep.
fn causes<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut chain = Vec::new();
    let mut next = Some(err);
    while let Some(cause) = next {
        chain.push(cause);
        next = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped),
            None => cause.source(),
        };
    }
    chain
}

/// The causes below reqwest's top-level message, joined with `: `. The top level is left out
/// because it contains the URL, and hyper-util's `client error (Connect)` because it only
/// repeats what the error kind already says.
fn describe(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in causes(err).into_iter().skip(1) {
        let text = cause.to_string();
        if text.starts_with("client error (") || parts.iter().any(|seen| seen.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        "the request could not be completed".to_owned()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Reason;

    #[test]
    fn only_status_200_without_error_is_success() {
        let outcome = |status, error| Outcome {
            status,
            error,
            body_excerpt: String::new(),
            duration: Duration::ZERO,
        };
        assert!(outcome(Some(200), None).is_success());
        assert!(!outcome(Some(201), Some(AttemptError::Status(201))).is_success());
        assert!(!outcome(Some(204), Some(AttemptError::Status(204))).is_success());
        assert!(!outcome(None, Some(AttemptError::Timeout)).is_success());
    }

    #[test]
    fn attempt_errors_read_clearly() {
        let refused = AttemptError::Refused {
            ip: "::ffff:127.0.0.1".parse().unwrap(),
            reason: Forbidden {
                reason: Reason::Loopback,
                via: Some((
                    crate::policy::Embedding::Ipv4Mapped,
                    "127.0.0.1".parse().unwrap(),
                )),
            },
        };
        assert_eq!(
            refused.to_string(),
            "destination refused: ::ffff:127.0.0.1 is loopback (IPv4-mapped 127.0.0.1)"
        );
        assert_eq!(
            AttemptError::Status(500).to_string(),
            "HTTP 500: only 200 counts as success"
        );
        assert_eq!(
            AttemptError::SchemeNotAllowed {
                scheme: "http".into()
            }
            .to_string(),
            "scheme `http` is not allowed: webhook URLs must use https://"
        );
        assert_eq!(AttemptError::Timeout.to_string(), "timed out");
    }
}
