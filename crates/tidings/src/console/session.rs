//! Sign-in with an API key, the session cookie and the CSRF token.
//!
//! Sessions live in memory: a random id (the cookie) maps to the key, a CSRF token and an
//! expiry. The key is checked again on every request, so revoking it ends its sessions at
//! once; a restart signs everyone out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use maud::html;
use rand::RngCore;
use serde::Deserialize;

use super::layout;
use super::Shared;
use crate::tenancy::Principal;

const COOKIE: &str = "tidings_console";
/// How long a session lasts after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    key: String,
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    fn start(&self, key: String) -> String {
        let id = random_token();
        let mut map = self.map.lock().expect("sessions poisoned");
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                key,
                csrf: random_token(),
                expires: now + LIFETIME,
            },
        );
        id
    }

    fn get(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.map.lock().expect("sessions poisoned");
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some((s.key.clone(), s.csrf.clone())),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    fn end(&self, id: &str) {
        self.map.lock().expect("sessions poisoned").remove(id);
    }
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// Whether the browser reached us over HTTPS (directly or through a proxy that says so).
fn over_https(parts: &HeaderMap) -> bool {
    parts
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A form that carries only its CSRF token (a button that changes something).
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

/// The signed-in key of a request; a page that needs one sends the browser to sign in.
#[derive(Clone)]
pub struct Signed {
    pub who: Principal,
    pub csrf: String,
    session: String,
}

impl Signed {
    /// Checks a posted CSRF token against the session's: the refusal to answer when it differs.
    pub fn refuse(&self, token: &str) -> Option<Response> {
        let a = token.as_bytes();
        let b = self.csrf.as_bytes();
        let same =
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        if same {
            None
        } else {
            tracing::info!("console change refused: missing or wrong CSRF token");
            Some(layout::error_page(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this console. Reload the page and try again.",
            ))
        }
    }
}

impl FromRequestParts<Shared> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Shared) -> Result<Self, Response> {
        let to_sign_in = || Redirect::to("/sign-in").into_response();
        let Some(id) = cookie_value(&parts.headers) else {
            return Err(to_sign_in());
        };
        let Some((key, csrf)) = c.sessions.get(&id) else {
            return Err(to_sign_in());
        };
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
        match c.authenticate(&key, ip).await {
            Ok(who) => Ok(Signed {
                who,
                csrf,
                session: id,
            }),
            Err(answer) if answer.status == StatusCode::UNAUTHORIZED => {
                c.sessions.end(&id);
                Err(to_sign_in())
            }
            Err(answer) => Err(layout::error_page(answer.status, &answer.message())),
        }
    }
}

/// The client's address, when the server records it (for the API's limiter of failed keys).
pub struct ClientIp(Option<ConnectInfo<SocketAddr>>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned(),
        ))
    }
}

pub async fn sign_in_page() -> Response {
    sign_in_form(StatusCode::OK, None)
}

fn sign_in_form(status: StatusCode, error: Option<&str>) -> Response {
    let body = html! {
        main.signin {
            h1 { "Tidings" }
            p.lead { "Sign in with an API key: the operator key, or a key scoped to a reseller, dealer, company or site." }
            form method="post" action="/sign-in" {
                label for="key" { "API key" }
                input #key type="password" name="key" required autocomplete="off" autofocus
                    aria-describedby=[error.map(|_| "key-error")];
                @if let Some(e) = error {
                    p.field-error #key-error role="alert" { (e) }
                }
                button type="submit" { "Sign in" }
            }
            p.hint { "The key stays on the server: the browser keeps only a session cookie, for 12 hours or until you sign out." }
        }
    };
    (status, layout::bare("Sign in", body)).into_response()
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    key: String,
}

pub async fn sign_in(
    State(c): State<Shared>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let key = form.key.trim().to_owned();
    if key.is_empty() {
        return sign_in_form(StatusCode::UNPROCESSABLE_ENTITY, Some("Enter an API key."));
    }
    match c.authenticate(&key, ip).await {
        Ok(who) => {
            let id = c.sessions.start(key);
            tracing::info!(operator = who.is_operator(), level = ?who.own_level(), "console sign-in");
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = cookie(&id, LIFETIME.as_secs(), over_https(&headers)).parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(answer) => sign_in_form(answer.status, Some(&answer.message())),
    }
}

pub async fn sign_out(
    State(c): State<Shared>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = signed.refuse(&form.csrf) {
        return r;
    }
    c.sessions.end(&signed.session);
    let mut r = Redirect::to("/sign-in").into_response();
    if let Ok(v) = cookie("", 0, over_https(&headers)).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_set_with_its_flags() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; tidings_console=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        assert_eq!(cookie_value(&HeaderMap::new()), None);
        assert_eq!(
            cookie("abc", 43_200, false),
            "tidings_console=abc; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        assert!(cookie("abc", 43_200, true).ends_with("; Secure"));
    }

    #[test]
    fn a_session_ends_at_sign_out_and_each_has_its_own_csrf_token() {
        let s = Sessions::default();
        let one = s.start("key-1".into());
        let two = s.start("key-2".into());
        let (k1, t1) = s.get(&one).unwrap();
        let (_, t2) = s.get(&two).unwrap();
        assert_eq!(k1, "key-1");
        assert_ne!(t1, t2);
        s.end(&one);
        assert!(s.get(&one).is_none());
        assert!(s.get(&two).is_some());
        assert!(s.get("made-up").is_none());
    }

    #[test]
    fn a_change_without_the_sessions_csrf_token_is_refused() {
        let signed = Signed {
            who: Principal::Operator,
            csrf: "token-1".into(),
            session: "s".into(),
        };
        assert!(signed.refuse("token-1").is_none());
        let refused = signed.refuse("token-2").expect("refused");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(signed.refuse("").is_some());
    }
}
