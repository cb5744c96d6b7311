//! Authentication: `Authorization: Bearer <key>` on every `/v1` request.
//!
//! Keys are random, so a SHA-256 hash is enough to store and compare them. The operator key
//! comes from `TIDINGS_ADMIN_KEY`, or is made on first start, printed once and stored hashed.
//! A client that keeps failing is slowed down with 429s, per IP address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    max_failures: u32,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
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
        Ok(store.api_key_by_hash(&hash).await?.map(|k| match k.scope {
            None => Principal::Operator,
            Some((level, id)) => Principal::Tenant { level, id },
        }))
    }

    fn too_many_failures(&self, ip: IpAddr) -> bool {
        let map = self.failures.lock().expect("limiter poisoned");
        map.get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < FAILURE_WINDOW && *n > self.max_failures)
    }

    fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().expect("limiter poisoned");
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| start.elapsed() < FAILURE_WINDOW);
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
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
    // A client that keeps failing gets 429 instead of 401 for a while; a valid key always
    // passes, so one failing client behind a shared address cannot lock out the others.
    let failing = |s: &AppState, message: &str| {
        s.auth.failed(ip);
        if s.auth.too_many_failures(ip) {
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed authentications; wait a minute",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, "60".parse().expect("valid header"));
            r
        } else {
            unauthorized(message)
        }
    };
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return failing(&s, "missing API key: send `Authorization: Bearer <key>`");
    };
    match s.auth.principal(s.hierarchy.store().as_ref(), key).await {
        Ok(Some(p)) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Ok(None) => {
            tracing::info!(%ip, "request with an unknown or revoked API key");
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
