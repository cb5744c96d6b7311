//! Authentication: `Authorization: Bearer <key>` on every `/v1` request.
//!
//! Keys are random, so a SHA-256 hash is enough to store and compare them. The operator key
//! comes from `TIDINGS_ADMIN_KEY`, or is made on first start, printed once and stored hashed.
//! A client that keeps failing is slowed down with 429s, per IP address: once an address is
//! over the limit, every request from it answers 429 until the window passes, a valid key's
//! too, by the same path, so a guess cannot be told from a hit by status or timing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;
use crate::domain::{EntityId, Level, Millis};
use crate::store::{ApiKeyRecord, Store};
use crate::tenancy::Principal;

/// Failed attempts allowed per client per window before it gets 429s, unless
/// `TIDINGS_AUTH_FAILURE_LIMIT` says otherwise.
pub const MAX_FAILURES: u32 = 20;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Key checking and the failed-attempt limiter.
pub struct Auth {
    /// Hash of `TIDINGS_ADMIN_KEY`, when set.
    admin_hash: Option<String>,
    /// Failed authentications an address may make in a window before it is refused.
    max_failures: u32,
    /// Per address: when its window of failures began, and how many it holds.
    failures: Mutex<HashMap<IpAddr, (Millis, u32)>>,
}

/// A new random API key: `tid_` and 32 random bytes in URL-safe base64.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("tid_{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Auth {
    /// Sets up the operator key: the configured one, or else one made now if the store has
    /// none yet (printed once on stdout, stored only as a hash).
    pub async fn setup(
        admin_key: Option<&str>,
        store: &dyn Store,
        now: Millis,
    ) -> anyhow::Result<Auth> {
        let admin_hash = match admin_key {
            Some(k) if k.len() < 16 => {
                anyhow::bail!("TIDINGS_ADMIN_KEY must be at least 16 characters")
            }
            Some(k) => Some(hash_key(k)),
            None => {
                if !store.has_operator_key().await? {
                    let key = generate_key();
                    store
                        .insert_api_key(&ApiKeyRecord {
                            id: EntityId::generate(now),
                            hash: hash_key(&key),
                            scope: None,
                            label: "operator (generated on first start)".into(),
                            created_at: now,
                            revoked_at: None,
                        })
                        .await?;
                    println!("Generated the operator API key (shown once; set TIDINGS_ADMIN_KEY to choose your own):\n  {key}");
                    tracing::warn!("generated the operator API key and printed it on stdout; it is stored only as a hash");
                }
                None
            }
        };
        Ok(Auth {
            admin_hash,
            max_failures: MAX_FAILURES,
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the failed attempts allowed per address per window (`TIDINGS_AUTH_FAILURE_LIMIT`).
    pub fn with_failure_limit(mut self, limit: u32) -> Auth {
        self.max_failures = limit;
        self
    }

    async fn principal(&self, store: &dyn Store, key: &str) -> Result<Option<Principal>, ApiError> {
        let hash = hash_key(key);
        if self
            .admin_hash
            .as_deref()
            .is_some_and(|h| constant_time_eq(h, &hash))
        {
            return Ok(Some(Principal::Operator));
        }
        let Some(key) = store.api_key_by_hash(&hash).await? else {
            return Ok(None);
        };
        match key.scope {
            None => Ok(Some(Principal::Operator)),
            Some((level, id)) => {
                // A key of a level that was deleted opens nothing.
                let mut tx = store.read().await?;
                Ok(tx.get(&id).await?.map(|_| Principal::Tenant { level, id }))
            }
        }
    }

    /// How long the address must still wait, when it is over the limit.
    pub fn limited(&self, ip: IpAddr, now: Millis) -> Option<Duration> {
        let map = self.failures.lock().expect("limiter poisoned");
        let (start, n) = map.get(&ip)?;
        let left = FAILURE_WINDOW.as_millis() as i64 - (now.0 - start.0);
        (left > 0 && *n > self.max_failures).then(|| Duration::from_millis(left as u64))
    }

    /// Counts a failed authentication from the address.
    pub fn failed(&self, ip: IpAddr, now: Millis) {
        let window = FAILURE_WINDOW.as_millis() as i64;
        let mut map = self.failures.lock().expect("limiter poisoned");
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| now.0 - start.0 < window);
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.0 - entry.0 .0 >= window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// The 429 of an address over the failed-authentication limit.
fn rate_limited(wait: Duration) -> Response {
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many failed authentications from this address; wait and try again",
    )
    .into_response();
    let seconds = wait.as_millis().div_ceil(1000).max(1);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        seconds.to_string().parse().expect("valid header"),
    );
    r
}

/// The key of an `Authorization` header: the scheme `Bearer` in any case (RFC 9110), then
/// the key.
fn bearer_key(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim_start().split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Middleware: resolves the key into a [`Principal`] stored in the request's extensions.
pub async fn require_key(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    // An address over the limit gets 429 before its key is looked at, so a valid key and
    // a guess answer alike until the window passes. Behind a shared address that locks out
    // everyone for up to a minute: the price of not letting guesses go on beside a good key.
    let now = s.hierarchy.now();
    if let Some(wait) = s.auth.limited(ip, now) {
        return rate_limited(wait);
    }
    let failing = |s: &AppState, message: &str| {
        s.auth.failed(ip, now);
        match s.auth.limited(ip, now) {
            Some(wait) => rate_limited(wait),
            None => unauthorized(message),
        }
    };
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_key);
    let Some(key) = key else {
        return failing(&s, "missing API key: send `Authorization: Bearer <key>`");
    };
    match s.auth.principal(s.hierarchy.store().as_ref(), key).await {
        Ok(Some(p)) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Ok(None) => {
            tracing::info!(%ip, "request with an unknown or revoked API key, or one of a deleted level");
            failing(&s, "unknown or revoked API key")
        }
        Err(e) => e.into_response(),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("valid header"),
    );
    r
}

/// Parses a key scope from the API (`{"level": "dealer", "id": ...}`).
pub fn scope(level: Level, id: EntityId) -> Principal {
    Principal::Tenant { level, id }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_the_limit_waits_out_the_minute_from_its_first_failure() {
        let auth = Auth {
            admin_hash: None,
            max_failures: MAX_FAILURES,
            failures: Mutex::new(HashMap::new()),
        };
        let (ip, other) = (IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2]));
        let at = |s: i64| Millis(1_700_000_000_000 + s * 1000);
        for _ in 0..MAX_FAILURES {
            auth.failed(ip, at(0));
        }
        assert_eq!(auth.limited(ip, at(0)), None, "the limit itself is allowed");
        auth.failed(ip, at(10));
        assert_eq!(auth.limited(ip, at(10)), Some(Duration::from_secs(50)));
        assert_eq!(auth.limited(ip, at(59)), Some(Duration::from_secs(1)));
        assert_eq!(auth.limited(other, at(10)), None);
        assert_eq!(auth.limited(ip, at(60)), None);
        auth.failed(ip, at(60));
        assert_eq!(auth.limited(ip, at(60)), None, "a new window begins");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_key("Bearer tid_x"), Some("tid_x"));
        assert_eq!(bearer_key("bearer tid_x"), Some("tid_x"));
        assert_eq!(bearer_key("BEARER  tid_x "), Some("tid_x"));
        assert_eq!(bearer_key("Basic tid_x"), None);
        assert_eq!(bearer_key("Bearer "), None);
        assert_eq!(bearer_key("Bearertid_x"), None);
    }
}
