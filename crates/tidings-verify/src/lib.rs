//! Signing and verifying webhooks the way Tidings sends them: the
//! [Standard Webhooks](https://www.standardwebhooks.com) scheme.
//!
//! This crate owns the signature format (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`),
//! the secret format (`whsec_<base64 key>`) and the receiver's checks: a timestamp within
//! 5 minutes of the receiver's clock, and at least one `v1` signature in the `webhook-signature`
//! header that matches one of the receiver's secrets, compared in constant time. The server
//! signs with [`Secret::sign`]; receivers check with [`Verifier`].
//!
//! It must stay small and free of server dependencies (no async, no HTTP types) so that any
//! integrator can depend on it.
//!
//! # Example
//!
//! ```
//! use tidings_verify::{Secret, Verifier, VerifyError};
//!
//! // The secret is shown by the Tidings API for your level.
//! let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let verifier = Verifier::new(secret);
//!
//! // These come from the request: the three headers and the raw, unparsed body.
//! let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
//! let timestamp = "1614265330";
//! let signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
//! let body = br#"{"test": 2432232314}"#;
//!
//! // In a real receiver call `verifier.verify(id, timestamp, signature, body)`, which uses the
//! // system clock; here the clock is pinned to the moment the example was signed.
//! verifier.verify_at(id, timestamp, signature, body, 1614265330)?;
//!
//! // A changed body no longer matches.
//! let tampered = br#"{"test": 1}"#;
//! assert_eq!(
//!     verifier.verify_at(id, timestamp, signature, tampered, 1614265330),
//!     Err(VerifyError::NoMatchingSignature),
//! );
//! # Ok::<(), VerifyError>(())
//! ```

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Prefix of a secret's text form.
const SECRET_PREFIX: &str = "whsec_";

/// Version prefix of the only signature scheme Tidings sends (HMAC-SHA256).
const SIGNATURE_VERSION: &str = "v1";

/// How far a webhook's timestamp may be from the receiver's clock, in either direction.
/// Bounds how long a captured request can be replayed.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Header names, lower case as HTTP/2 sends them.
pub const HEADER_ID: &str = "webhook-id";
/// See [`HEADER_ID`].
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// See [`HEADER_ID`].
pub const HEADER_SIGNATURE: &str = "webhook-signature";

type HmacSha256 = Hmac<Sha256>;

/// Why a webhook was not accepted, or a secret not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The secret is not `whsec_` followed by non-empty base64.
    #[error("invalid secret: expected `whsec_` followed by a non-empty base64 key")]
    InvalidSecret,
    /// A required header is absent or empty; holds the header's name.
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a whole number of Unix seconds.
    #[error("invalid `webhook-timestamp`: expected Unix seconds")]
    InvalidTimestamp,
    /// The timestamp is more than 5 minutes in the past (a replay or a badly set clock).
    #[error("timestamp is more than 5 minutes old")]
    TimestampTooOld,
    /// The timestamp is more than 5 minutes in the future (a badly set clock).
    #[error("timestamp is more than 5 minutes in the future")]
    TimestampTooNew,
    /// No `v1` signature in `webhook-signature` matches any of the secrets.
    #[error("no matching signature")]
    NoMatchingSignature,
}

/// A webhook signing secret: the HMAC key, written `whsec_<base64 key>`.
///
/// `Debug` never shows the key; `Display` does (it is how the secret is handed out).
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// Parses `whsec_<base64>`; the key is the decoded part after the prefix and must not be
    /// empty. Surrounding whitespace (a trailing newline in an env file) is ignored.
    pub fn parse(text: &str) -> Result<Secret, VerifyError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(VerifyError::InvalidSecret)?;
        let key = BASE64
            .decode(encoded)
            .map_err(|_| VerifyError::InvalidSecret)?;
        if key.is_empty() {
            return Err(VerifyError::InvalidSecret);
        }
        Ok(Secret { key })
    }

    /// Wraps raw key bytes (the server generates them; 24 or more random bytes).
    pub fn from_bytes(key: &[u8]) -> Secret {
        Secret { key: key.to_vec() }
    }

    /// Signs one attempt: `v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`, the
    /// value of the `webhook-signature` header.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(msg_id, timestamp, body);
        format!("{SIGNATURE_VERSION},{}", BASE64.encode(mac))
    }

    /// The raw HMAC-SHA256 over the signed content.
    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key: secrets end up in logs through `{:?}` far too easily.
        f.write_str("Secret(..)")
    }
}

impl FromStr for Secret {
    type Err = VerifyError;

    /// Same as [`Secret::parse`]; lets command-line parsers take a `Secret` directly.
    fn from_str(text: &str) -> Result<Secret, VerifyError> {
        Secret::parse(text)
    }
}

/// Checks incoming webhooks against one or more secrets.
///
/// Several secrets are for rotation: after a secret is rotated Tidings sends both the old and
/// the new signature for 24 hours, so a receiver can switch secrets at any time in that window.
#[derive(Debug, Clone)]
pub struct Verifier {
    secrets: Vec<Secret>,
}

impl Verifier {
    /// A verifier for one secret.
    pub fn new(secret: Secret) -> Verifier {
        Verifier::with_secrets(vec![secret])
    }

    /// A verifier that accepts a signature made with any of `secrets`. With no secrets every
    /// webhook is rejected.
    pub fn with_secrets(secrets: Vec<Secret>) -> Verifier {
        Verifier { secrets }
    }

    /// Verifies a webhook against the system clock. `body` must be the raw request body,
    /// byte for byte, before any JSON parsing.
    pub fn verify(
        &self,
        webhook_id: &str,
        webhook_timestamp: &str,
        webhook_signature: &str,
        body: &[u8],
    ) -> Result<(), VerifyError> {
        self.verify_at(
            webhook_id,
            webhook_timestamp,
            webhook_signature,
            body,
            unix_now(),
        )
    }

    /// Like [`Verifier::verify`], with the clock given as Unix seconds.
    pub fn verify_at(
        &self,
        webhook_id: &str,
        webhook_timestamp: &str,
        webhook_signature: &str,
        body: &[u8],
        now_unix_secs: i64,
    ) -> Result<(), VerifyError> {
        for (name, value) in [
            (HEADER_ID, webhook_id),
            (HEADER_TIMESTAMP, webhook_timestamp),
            (HEADER_SIGNATURE, webhook_signature),
        ] {
            if value.is_empty() {
                return Err(VerifyError::MissingHeader(name));
            }
        }

        let timestamp = parse_timestamp(webhook_timestamp)?;
        if now_unix_secs.saturating_sub(timestamp) > TOLERANCE_SECS {
            return Err(VerifyError::TimestampTooOld);
        }
        if timestamp.saturating_sub(now_unix_secs) > TOLERANCE_SECS {
            return Err(VerifyError::TimestampTooNew);
        }

        let expected: Vec<[u8; 32]> = self
            .secrets
            .iter()
            .map(|secret| secret.mac(webhook_id, timestamp, body))
            .collect();
        // Several space-separated signatures may be sent (rotation); other versions are skipped.
        for candidate in webhook_signature.split_ascii_whitespace() {
            let Some((SIGNATURE_VERSION, encoded)) = candidate.split_once(',') else {
                continue;
            };
            // Empty (`v1,`), truncated or malformed values decode to the wrong length or fail
            // to decode, and so never match.
            let Ok(given) = BASE64.decode(encoded) else {
                continue;
            };
            if expected
                .iter()
                .any(|mac| bool::from(mac.as_slice().ct_eq(&given)))
            {
                return Ok(());
            }
        }
        Err(VerifyError::NoMatchingSignature)
    }

    /// Verifies a webhook from its headers, against the system clock. `header` looks a header
    /// up by its lower-case name (`webhook-id`, `webhook-timestamp`, `webhook-signature`), e.g.
    /// `|name| headers.get(name).and_then(|v| v.to_str().ok())` for an `http::HeaderMap`.
    pub fn verify_headers<'h, F>(&self, header: F, body: &[u8]) -> Result<(), VerifyError>
    where
        F: Fn(&str) -> Option<&'h str>,
    {
        let get = |name: &'static str| header(name).ok_or(VerifyError::MissingHeader(name));
        let id = get(HEADER_ID)?;
        let timestamp = get(HEADER_TIMESTAMP)?;
        let signature = get(HEADER_SIGNATURE)?;
        self.verify(id, timestamp, signature, body)
    }
}

/// Unix seconds: ASCII digits only (no sign, no spaces, no fractions).
fn parse_timestamp(text: &str) -> Result<i64, VerifyError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::InvalidTimestamp);
    }
    text.parse().map_err(|_| VerifyError::InvalidTimestamp)
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published Standard Webhooks test vectors (docs/contract.md#signatures).
    struct Vector {
        secret: &'static str,
        id: &'static str,
        timestamp: i64,
        body: &'static str,
        signature: &'static str,
    }

    const VECTORS: [Vector; 2] = [
        Vector {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp: 1614265330,
            body: r#"{"test": 2432232314}"#,
            signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        },
        Vector {
            secret: "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            timestamp: 1649367553,
            body: r#"{"email":"test@example.com","username":"test_user"}"#,
            signature: "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        },
    ];

    const V: &Vector = &VECTORS[0];

    fn verifier(secret: &str) -> Verifier {
        Verifier::new(Secret::parse(secret).unwrap())
    }

    /// Verifies the first vector with the given header values, at the vector's own time.
    fn check(timestamp: &str, signature: &str, body: &str) -> Result<(), VerifyError> {
        verifier(V.secret).verify_at(V.id, timestamp, signature, body.as_bytes(), V.timestamp)
    }

    /// `v`'s verdict on the published vector, at its own time.
    fn vector_by(v: &Verifier) -> Result<(), VerifyError> {
        v.verify_at(
            V.id,
            "1614265330",
            V.signature,
            V.body.as_bytes(),
            V.timestamp,
        )
    }

    #[test]
    fn sign_reproduces_the_published_test_vectors() {
        for v in &VECTORS {
            let secret = Secret::parse(v.secret).unwrap();
            assert_eq!(
                secret.sign(v.id, v.timestamp, v.body.as_bytes()),
                v.signature
            );
        }
    }

    #[test]
    fn verify_accepts_the_published_test_vectors() {
        for v in &VECTORS {
            assert_eq!(
                verifier(v.secret).verify_at(
                    v.id,
                    &v.timestamp.to_string(),
                    v.signature,
                    v.body.as_bytes(),
                    v.timestamp,
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn secret_displays_as_whsec_and_round_trips() {
        let secret = Secret::parse(V.secret).unwrap();
        assert_eq!(secret.to_string(), V.secret);
        let from_bytes = Secret::from_bytes(b"0123456789abcdefghijklmn");
        assert_eq!(
            from_bytes.to_string(),
            "whsec_MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1u"
        );
        assert_eq!(
            Secret::parse(&from_bytes.to_string()).unwrap().key,
            b"0123456789abcdefghijklmn"
        );
        assert_eq!(V.secret.parse::<Secret>().unwrap().to_string(), V.secret);
    }

    #[test]
    fn secret_debug_does_not_show_the_key() {
        let secret = Secret::parse(V.secret).unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        assert_eq!(
            format!("{:?}", Verifier::new(secret)),
            "Verifier { secrets: [Secret(..)] }"
        );
    }

    #[test]
    fn secret_parse_ignores_surrounding_whitespace() {
        let secret = Secret::parse(&format!("  {}\n", V.secret)).unwrap();
        assert_eq!(secret.to_string(), V.secret);
    }

    #[test]
    fn empty_secret_is_rejected() {
        assert_eq!(
            Secret::parse("whsec_").unwrap_err(),
            VerifyError::InvalidSecret
        );
        assert_eq!(Secret::parse("").unwrap_err(), VerifyError::InvalidSecret);
    }

    #[test]
    fn secret_without_prefix_or_with_bad_base64_is_rejected() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            VerifyError::InvalidSecret
        );
        assert_eq!(
            Secret::parse("whsec_not base64!").unwrap_err(),
            VerifyError::InvalidSecret
        );
    }

    #[test]
    fn timestamp_exactly_five_minutes_away_is_accepted() {
        let signer = Secret::parse(V.secret).unwrap();
        let now = V.timestamp;
        for ts in [now - TOLERANCE_SECS, now + TOLERANCE_SECS] {
            let sig = signer.sign(V.id, ts, V.body.as_bytes());
            assert_eq!(check(&ts.to_string(), &sig, V.body), Ok(()), "ts {ts}");
        }
    }

    #[test]
    fn timestamp_more_than_five_minutes_old_is_rejected() {
        let signer = Secret::parse(V.secret).unwrap();
        let ts = V.timestamp - TOLERANCE_SECS - 1;
        let sig = signer.sign(V.id, ts, V.body.as_bytes());
        assert_eq!(
            check(&ts.to_string(), &sig, V.body),
            Err(VerifyError::TimestampTooOld)
        );
    }

    #[test]
    fn timestamp_more_than_five_minutes_in_the_future_is_rejected() {
        let signer = Secret::parse(V.secret).unwrap();
        let ts = V.timestamp + TOLERANCE_SECS + 1;
        let sig = signer.sign(V.id, ts, V.body.as_bytes());
        assert_eq!(
            check(&ts.to_string(), &sig, V.body),
            Err(VerifyError::TimestampTooNew)
        );
    }

    #[test]
    fn timestamp_that_is_not_unix_seconds_is_rejected() {
        for ts in [
            "abc",
            "1614265330.5",
            "-1614265330",
            "+1614265330",
            " 1614265330",
        ] {
            assert_eq!(
                check(ts, V.signature, V.body),
                Err(VerifyError::InvalidTimestamp),
                "ts {ts:?}"
            );
        }
    }

    #[test]
    fn bare_v1_is_rejected() {
        assert_eq!(
            check("1614265330", "v1,", V.body),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn truncated_signature_is_rejected() {
        // Both a cut that is still valid base64 and one that is not.
        for sig in [
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
        ] {
            assert_eq!(
                check("1614265330", sig, V.body),
                Err(VerifyError::NoMatchingSignature),
                "sig {sig}"
            );
        }
    }

    #[test]
    fn signature_without_version_or_with_other_version_is_rejected() {
        let encoded = V.signature.strip_prefix("v1,").unwrap();
        for sig in [encoded.to_string(), format!("v2,{encoded}")] {
            assert_eq!(
                check("1614265330", &sig, V.body),
                Err(VerifyError::NoMatchingSignature),
                "sig {sig}"
            );
        }
    }

    #[test]
    fn tampered_body_is_rejected() {
        assert_eq!(
            check("1614265330", V.signature, r#"{"test": 2432232315}"#),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn tampered_id_or_timestamp_is_rejected() {
        let v = verifier(V.secret);
        let body = V.body.as_bytes();
        assert_eq!(
            v.verify_at("msg_other", "1614265330", V.signature, body, V.timestamp),
            Err(VerifyError::NoMatchingSignature)
        );
        assert_eq!(
            v.verify_at(V.id, "1614265331", V.signature, body, V.timestamp),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let other = verifier(VECTORS[1].secret);
        assert_eq!(vector_by(&other), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let header = format!(
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v2,xyz {}",
            V.signature
        );
        assert_eq!(check("1614265330", &header, V.body), Ok(()));
    }

    #[test]
    fn any_of_several_secrets_may_match() {
        let rotating = Verifier::with_secrets(vec![
            Secret::parse(VECTORS[1].secret).unwrap(),
            Secret::parse(V.secret).unwrap(),
        ]);
        assert_eq!(vector_by(&rotating), Ok(()));
        let none = Verifier::with_secrets(vec![]);
        assert_eq!(vector_by(&none), Err(VerifyError::NoMatchingSignature));
    }

    #[test]
    fn empty_header_values_are_missing_headers() {
        let v = verifier(V.secret);
        let body = V.body.as_bytes();
        assert_eq!(
            v.verify_at("", "1614265330", V.signature, body, V.timestamp),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        assert_eq!(
            v.verify_at(V.id, "", V.signature, body, V.timestamp),
            Err(VerifyError::MissingHeader("webhook-timestamp"))
        );
        assert_eq!(
            v.verify_at(V.id, "1614265330", "", body, V.timestamp),
            Err(VerifyError::MissingHeader("webhook-signature"))
        );
    }

    #[test]
    fn verify_headers_reads_the_three_headers_and_uses_the_system_clock() {
        let secret = Secret::parse(V.secret).unwrap();
        let now = unix_now();
        let signature = secret.sign(V.id, now, V.body.as_bytes());
        let timestamp = now.to_string();
        let headers = [
            ("webhook-id", V.id),
            ("webhook-timestamp", timestamp.as_str()),
            ("webhook-signature", signature.as_str()),
        ];
        let lookup = |skip: &'static str| {
            move |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| *n == name && *n != skip)
                    .map(|(_, v)| *v)
            }
        };
        let v = Verifier::new(secret);
        assert_eq!(v.verify_headers(lookup(""), V.body.as_bytes()), Ok(()));
        for name in [HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE] {
            assert_eq!(
                v.verify_headers(lookup(name), V.body.as_bytes()),
                Err(VerifyError::MissingHeader(name))
            );
        }
        // The published vector is years old by the system clock.
        assert_eq!(
            v.verify(V.id, "1614265330", V.signature, V.body.as_bytes()),
            Err(VerifyError::TimestampTooOld)
        );
    }
}
