//! The web console at `/`: server-rendered pages for operators and tenants (docs/console.md).
//!
//! The console is another face of the API, not a second set of rules: every read and change
//! of an entity, a webhook, an e-mail or a key is a request to the API's own handlers, made
//! on behalf of the signed-in key, and a key is checked by the API's own middleware. Only the
//! aggregate figures (charts, endpoint health) come from store queries of the console's own,
//! limited to the levels the key may see.

mod deliveries;
mod emails;
mod hierarchy;
mod keys;
mod layout;
mod overview;
mod session;
mod tree;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::Value;
use tower::ServiceExt;

use crate::api::{auth, emails as api_emails, entities, keys as api_keys, webhooks, AppState};
use crate::domain::Millis;
use crate::tenancy::Principal;
use tree::Tree;

pub use session::Signed;

/// Longest a form body may be.
const MAX_FORM: usize = 64 * 1024;

/// Sent with every console response: no inline script runs, nothing loads from elsewhere,
/// and no other site may frame a page.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct Console {
    app: AppState,
    /// The `/v1` routes without the key check: the console calls them with the principal of
    /// the signed-in key.
    api: Router,
    /// The API's key check alone, answering with the key's principal.
    whoami: Router,
    sessions: session::Sessions,
}

type Shared = Arc<Console>;

/// The console's routes, to merge into the API's router.
pub fn routes(app: AppState) -> Router {
    let api = Router::new()
        .merge(entities::routes())
        .merge(webhooks::routes())
        .merge(api_emails::routes())
        .merge(api_keys::routes())
        .with_state(app.clone());
    let whoami = Router::new()
        .route("/whoami", get(whoami))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_key,
        ))
        .with_state(app.clone());
    let console = Arc::new(Console {
        app,
        api,
        whoami,
        sessions: session::Sessions::default(),
    });
    Router::new()
        .route("/", get(overview::page))
        .route(
            "/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/sign-out", post(session::sign_out))
        .route("/levels", get(hierarchy::tree_page))
        .route("/levels/{collection}/{id}", get(hierarchy::level_page))
        .route(
            "/levels/{collection}/{id}/settings",
            post(hierarchy::settings),
        )
        .route("/levels/{collection}/{id}/secret", post(hierarchy::reveal))
        .route("/levels/{collection}/{id}/rotate", post(hierarchy::rotate))
        .route("/deliveries", get(deliveries::list_page))
        .route("/deliveries/rows", get(deliveries::rows))
        .route("/deliveries/recover", post(deliveries::recover))
        .route("/deliveries/{id}", get(deliveries::one_page))
        .route("/deliveries/{id}/retry", post(deliveries::retry))
        .route("/emails", get(emails::page))
        .route("/keys", get(keys::page).post(keys::create))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .layer(middleware::from_fn(guard))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .with_state(console)
}

async fn whoami(Extension(p): Extension<Principal>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.extensions_mut().insert(p);
    r
}

async fn css() -> Response {
    asset("text/css", include_str!("../../assets/console/console.css"))
}

async fn js() -> Response {
    asset(
        "text/javascript",
        include_str!("../../assets/console/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Refuses a change posted from another origin, and sets the security headers on every
/// console response.
async fn guard(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(&req) {
        return layout::error_page(
            StatusCode::FORBIDDEN,
            "This change came from another site and was refused.",
        );
    }
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Whether a POST's `Origin` (when the browser sends one) is this host.
fn same_origin(req: &Request) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// What an API handler answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message.
    pub fn message(&self) -> String {
        match &self.body {
            Value::String(s) => s.clone(),
            b => b["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| self.status.to_string()),
        }
    }

    /// The field the API's error names, if one.
    pub fn field(&self) -> Option<&str> {
        self.body["error"]["field"].as_str()
    }

    pub fn error(&self) -> Option<FormError> {
        (!self.ok()).then(|| FormError {
            field: self.field().map(str::to_owned),
            message: self.message(),
        })
    }
}

/// An error the API gave for a form, shown next to the field it names.
#[derive(Debug, Clone, Default)]
pub struct FormError {
    pub field: Option<String>,
    pub message: String,
}

impl FormError {
    /// The message if it is about `field` (or about no field in particular, for `""`).
    pub fn on(err: &Option<FormError>, field: &str) -> Option<String> {
        err.as_ref()
            .filter(|e| e.field.as_deref().unwrap_or("") == field)
            .map(|e| e.message.clone())
    }
}

impl Console {
    /// Calls an API handler as `who`.
    pub async fn api(
        &self,
        who: &Principal,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(match body {
            Some(b) => Body::from(b.to_string()),
            None => Body::empty(),
        });
        let Ok(mut req) = req else {
            return Answer {
                status: StatusCode::BAD_REQUEST,
                body: Value::String("the request could not be formed".into()),
            };
        };
        req.extensions_mut().insert(who.clone());
        let response = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
            .await
            .unwrap_or_default();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer { status, body }
    }

    /// Checks a key with the API's own check (and its limiter of failed attempts).
    pub async fn authenticate(
        &self,
        key: &str,
        ip: Option<ConnectInfo<SocketAddr>>,
    ) -> Result<Principal, Answer> {
        let mut req = Request::builder()
            .uri("/whoami")
            .body(Body::empty())
            .expect("a fixed request is valid");
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", key.trim())) {
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        if let Some(ip) = ip {
            req.extensions_mut().insert(ip);
        }
        let response = match self.whoami.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        if let Some(p) = response.extensions().get::<Principal>() {
            return Ok(p.clone());
        }
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap_or_default();
        Err(Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// `GET uri` as `who`: the body of a successful answer, or the page that shows the
    /// API's error.
    pub async fn read(&self, who: &Principal, uri: &str) -> Result<Value, Response> {
        let answer = self.api(who, Method::GET, uri, None).await;
        if !answer.ok() {
            return Err(layout::error_page(answer.status, &answer.message()));
        }
        Ok(answer.body)
    }

    /// A change a button asks for: the form's CSRF token is checked first, then
    /// `method uri` (without a body) is called as the signed-in key.
    pub async fn act(
        &self,
        signed: &Signed,
        csrf: &str,
        method: Method,
        uri: &str,
    ) -> Result<Answer, Response> {
        if let Some(r) = signed.refuse(csrf) {
            return Err(r);
        }
        Ok(self.api(&signed.who, method, uri, None).await)
    }

    /// The levels the signed-in key may see, or the page saying the store did not answer.
    pub async fn tree(&self, signed: &Signed) -> Result<Tree, Response> {
        Tree::load(self.app.hierarchy.store().as_ref(), &signed.who)
            .await
            .map_err(hierarchy::store_error)
    }

    /// An API list (`GET uri`) with the levels the key may see, to name the levels it
    /// mentions; or the page saying what failed.
    pub async fn list_with_tree(
        &self,
        signed: &Signed,
        uri: &str,
    ) -> Result<(Value, Tree), Response> {
        let listed = self.read(&signed.who, uri).await?;
        Ok((listed, self.tree(signed).await?))
    }
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A time the API wrote (RFC 3339), if `v` holds one.
pub fn api_time(v: &Value) -> Option<Millis> {
    v.as_str().and_then(|s| Millis::parse_rfc3339(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(origin: Option<&str>, host: &str) -> Request {
        let mut r = Request::builder().method(Method::POST).uri("/sign-out");
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        r.header(header::HOST, host).body(Body::empty()).unwrap()
    }

    #[test]
    fn a_post_from_another_origin_is_not_same_origin() {
        assert!(same_origin(&post(
            Some("http://127.0.0.1:8080"),
            "127.0.0.1:8080"
        )));
        assert!(same_origin(&post(None, "127.0.0.1:8080")));
        assert!(!same_origin(&post(
            Some("https://evil.example"),
            "127.0.0.1:8080"
        )));
        assert!(!same_origin(&post(Some("null"), "127.0.0.1:8080")));
    }
}
