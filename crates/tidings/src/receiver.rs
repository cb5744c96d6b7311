//! The example receiver (`tidings receiver`): the integrators' starting point for receiving
//! Tidings webhooks (docs/contract.md#receiver).
//!
//! It owns one small HTTP server: `GET /` answers a welcome text, and a `POST` to any path is
//! checked with `tidings-verify` (401 on a bad or missing signature), parsed as a webhook (400 if
//! it is not one), logged, deduplicated by webhook id and answered 200. It must stay short and
//! readable, since integrators copy it, and must never act on a webhook before its signature
//! has been verified.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tidings_verify::{Secret, Verifier};

/// What `GET /` answers, so a browser shows that the receiver is up.
pub const WELCOME: &str = "Welcome! I am ready to receive!";

/// How many webhook ids are remembered for deduplication. Tidings retries for about a day; a
/// receiver that sees more than this many webhooks a day should keep ids in its database.
const REMEMBERED_IDS: usize = 10_000;

/// Settings of `tidings receiver`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiverArgs {
    /// Address to listen on.
    #[arg(long, env = "TIDINGS_RECEIVER_LISTEN", default_value = "0.0.0.0:9999")]
    pub listen: SocketAddr,
    /// Signing secret of the level whose webhooks this receives (`whsec_...`, from the API).
    #[arg(long, env = "TIDINGS_RECEIVER_SECRET", hide_env_values = true)]
    pub secret: Secret,
    /// PEM certificate (chain) file; with --tls-key, serve HTTPS instead of HTTP.
    #[arg(long, env = "TIDINGS_RECEIVER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key file for --tls-cert.
    #[arg(long, env = "TIDINGS_RECEIVER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Runs the receiver until the process is stopped (Ctrl-C or SIGTERM).
pub async fn run(args: ReceiverArgs) -> anyhow::Result<()> {
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping: finishing requests in progress");
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    serve(args, handle).await
}

/// Serves until `handle` shuts the server down; `handle` also tells the bound address.
async fn serve(args: ReceiverArgs, handle: Handle<SocketAddr>) -> anyhow::Result<()> {
    let app = router(Verifier::new(args.secret)).into_make_service();
    match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => {
            // rustls needs one crypto implementation chosen; ring is the one Tidings already
            // uses. An error only means one was installed before, which is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = RustlsConfig::from_pem_file(&cert, &key)
                .await
                .with_context(|| {
                    format!(
                        "reading TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            tracing::info!("receiver listening on https://{}", args.listen);
            axum_server::bind_rustls(args.listen, tls)
                .handle(handle)
                .serve(app)
                .await
        }
        _ => {
            tracing::info!("receiver listening on http://{}", args.listen);
            axum_server::bind(args.listen)
                .handle(handle)
                .serve(app)
                .await
        }
    }
    .with_context(|| format!("serving on {}", args.listen))
}

/// Resolves on Ctrl-C, or on SIGTERM (what `docker stop` sends).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// The receiver's routes: `GET /` welcomes, a `POST` to any path receives a webhook.
pub fn router(verifier: Verifier) -> Router {
    let receiver = Receiver {
        verifier: Arc::new(verifier),
        seen: Arc::new(Mutex::new(SeenIds::new(REMEMBERED_IDS))),
    };
    Router::new()
        .route("/", get(welcome).post(receive))
        // Any path, so the receiver works whatever path the webhook_url has.
        .route("/{*path}", post(receive))
        .with_state(receiver)
}

/// State shared by all requests.
#[derive(Clone)]
struct Receiver {
    verifier: Arc<Verifier>,
    seen: Arc<Mutex<SeenIds>>,
}

/// The webhook body Tidings sends (docs/contract.md#envelope). Unknown fields are accepted, so a receiver
/// keeps working when Tidings adds one.
#[derive(Debug, Deserialize)]
struct Webhook {
    /// The same on every attempt of one webhook: the deduplication key.
    id: String,
    /// When the webhook was created, e.g. `2020-07-15T12:33:14.000Z`.
    #[allow(dead_code)] // Read by serde to require it; an integrator would use it.
    created: String,
    /// This attempt's number, 1 to 5.
    attempt: u32,
    /// The event type, e.g. `MEETING_CREATED`.
    #[serde(rename = "type")]
    event_type: String,
    /// The entity as it was when the event happened.
    data: Map<String, Value>,
}

async fn welcome() -> &'static str {
    WELCOME
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    // 1. Verify the signature over the raw body, before trusting anything in it.
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Err(error) = receiver.verifier.verify_headers(header, &body) {
        tracing::warn!(%error, "rejected a request: signature not verified");
        return reply(
            StatusCode::UNAUTHORIZED,
            json!({ "error": error.to_string() }),
        );
    }

    // 2. Parse it as a webhook.
    let webhook: Webhook = match serde_json::from_slice(&body) {
        Ok(webhook) => webhook,
        Err(error) => {
            tracing::warn!(%error, "rejected a request: not a webhook");
            let message = format!("not a webhook: {error}");
            return reply(StatusCode::BAD_REQUEST, json!({ "error": message }));
        }
    };

    // 3. Handle each webhook once: Tidings may deliver one again (a retry whose earlier answer
    //    got lost), always with the same id. A repeat still gets 200, or Tidings would retry.
    let is_new = receiver.seen.lock().expect("lock").insert(&webhook.id);
    if !is_new {
        tracing::info!(
            "repeat of {} {} (attempt {}); ignored",
            webhook.event_type,
            webhook.id,
            webhook.attempt
        );
        return reply(StatusCode::OK, json!({ "status": "repeat" }));
    }

    // 4. Your code goes here; this example only logs the webhook.
    let data = serde_json::to_string_pretty(&webhook.data).unwrap_or_default();
    tracing::info!(
        "received {} {} (attempt {}), data:\n{data}",
        webhook.event_type,
        webhook.id,
        webhook.attempt
    );
    reply(StatusCode::OK, json!({ "status": "received" }))
}

fn reply(status: StatusCode, body: Value) -> (StatusCode, Json<Value>) {
    (status, Json(body))
}

/// The most recent webhook ids, to recognise repeats. Bounded: the oldest id is forgotten
/// when a new one would exceed the capacity.
struct SeenIds {
    capacity: usize,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl SeenIds {
    fn new(capacity: usize) -> SeenIds {
        SeenIds {
            capacity,
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `id`; true if it was not remembered already.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use clap::Parser;
    use tower::ServiceExt as _;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "26edf51b5ed353431566fdf1";

    /// A webhook body in the shape of docs/contract.md#envelope.
    fn webhook_body(id: &str) -> String {
        json!({
            "id": id,
            "created": "2020-07-15T12:33:14.000Z",
            "attempt": 2,
            "type": "COMPANY_CHANGED",
            "data": { "id": "784d061c0856dc4c97774da7", "name": "Company 1" },
        })
        .to_string()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// A POST signed like Tidings signs it, with `secret` and `timestamp`.
    fn signed_post(secret: &str, timestamp: i64, body: &str) -> Request<Body> {
        let signature = Secret::parse(secret)
            .unwrap()
            .sign(ID, timestamp, body.as_bytes());
        Request::post("/")
            .header("content-type", "application/json")
            .header("webhook-id", ID)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    fn app() -> Router {
        router(Verifier::new(Secret::parse(SECRET).unwrap()))
    }

    /// Sends one request; answers the status and the body as text.
    async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String) {
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// The answer to a request whose signature does not hold, saying why.
    fn unauthorized(error: &str) -> (StatusCode, String) {
        (
            StatusCode::UNAUTHORIZED,
            format!(r#"{{"error":"{error}"}}"#),
        )
    }

    #[tokio::test]
    async fn get_root_answers_the_welcome_text() {
        let request = Request::get("/").body(Body::empty()).unwrap();
        assert_eq!(
            send(&app(), request).await,
            (StatusCode::OK, "Welcome! I am ready to receive!".to_owned())
        );
    }

    #[tokio::test]
    async fn signed_webhook_is_answered_200() {
        let request = signed_post(SECRET, now(), &webhook_body(ID));
        assert_eq!(
            send(&app(), request).await,
            (StatusCode::OK, r#"{"status":"received"}"#.to_owned())
        );
    }

    #[tokio::test]
    async fn signed_webhook_to_any_path_is_answered_200() {
        let mut request = signed_post(SECRET, now(), &webhook_body(ID));
        *request.uri_mut() = "/send/webhook/here".parse().unwrap();
        assert_eq!(send(&app(), request).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn tampered_body_is_answered_401() {
        let request = signed_post(SECRET, now(), &webhook_body(ID));
        let (parts, _) = request.into_parts();
        let tampered =
            Request::from_parts(parts, Body::from(webhook_body("000000000000000000000000")));
        assert_eq!(
            send(&app(), tampered).await,
            unauthorized("no matching signature")
        );
    }

    #[tokio::test]
    async fn old_timestamp_is_answered_401() {
        let request = signed_post(SECRET, now() - 6 * 60, &webhook_body(ID));
        assert_eq!(
            send(&app(), request).await,
            unauthorized("timestamp is more than 5 minutes old")
        );
    }

    #[tokio::test]
    async fn wrong_secret_is_answered_401() {
        let request = signed_post(OTHER_SECRET, now(), &webhook_body(ID));
        assert_eq!(
            send(&app(), request).await,
            unauthorized("no matching signature")
        );
    }

    #[tokio::test]
    async fn missing_signature_headers_are_answered_401() {
        for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let mut request = signed_post(SECRET, now(), &webhook_body(ID));
            request.headers_mut().remove(header);
            assert_eq!(
                send(&app(), request).await,
                unauthorized(&format!("missing header `{header}`")),
                "without {header}"
            );
        }
    }

    #[tokio::test]
    async fn signed_body_that_is_not_a_webhook_is_answered_400() {
        let not_webhooks = [
            "hello".to_owned(),
            r#"{"test": 2432232314}"#.to_owned(),
            // `data` must be an object.
            webhook_body(ID).replace(
                r#"{"id":"784d061c0856dc4c97774da7","name":"Company 1"}"#,
                "[]",
            ),
        ];
        for body in not_webhooks {
            let (status, text) = send(&app(), signed_post(SECRET, now(), &body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "body {body}");
            assert!(text.starts_with(r#"{"error":"not a webhook: "#), "{text}");
        }
    }

    #[tokio::test]
    async fn repeated_webhook_id_is_answered_200_as_a_repeat() {
        let app = app();
        let body = webhook_body(ID);
        let first = send(&app, signed_post(SECRET, now(), &body)).await;
        // A retry: same webhook id, new timestamp and signature.
        let again = send(&app, signed_post(SECRET, now() + 1, &body)).await;
        assert_eq!(
            first,
            (StatusCode::OK, r#"{"status":"received"}"#.to_owned())
        );
        assert_eq!(again, (StatusCode::OK, r#"{"status":"repeat"}"#.to_owned()));
        // A different webhook is new.
        let other = send(
            &app,
            signed_post(SECRET, now(), &webhook_body("0123456789abcdef01234567")),
        )
        .await;
        assert_eq!(
            other,
            (StatusCode::OK, r#"{"status":"received"}"#.to_owned())
        );
    }

    #[tokio::test]
    async fn forged_repeat_is_still_answered_401() {
        let app = app();
        let body = webhook_body(ID);
        assert_eq!(
            send(&app, signed_post(SECRET, now(), &body)).await.0,
            StatusCode::OK
        );
        let forged = send(&app, signed_post(OTHER_SECRET, now(), &body)).await;
        assert_eq!(forged.0, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn seen_ids_forget_the_oldest_beyond_capacity() {
        let mut seen = SeenIds::new(2);
        assert!(seen.insert("a"));
        assert!(seen.insert("b"));
        assert!(!seen.insert("a"));
        assert!(seen.insert("c")); // forgets "a"
        assert!(!seen.insert("b"));
        assert!(!seen.insert("c"));
        assert!(seen.insert("a"));
        assert_eq!(seen.order.len(), 2);
        assert_eq!(seen.ids.len(), 2);
    }

    /// `tidings receiver`'s arguments on their own.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReceiverArgs,
    }

    #[test]
    fn arguments_default_to_port_9999_and_need_a_secret() {
        let cli = Cli::try_parse_from(["receiver", "--secret", SECRET]).unwrap();
        assert_eq!(cli.args.listen, "0.0.0.0:9999".parse().unwrap());
        assert_eq!(cli.args.secret.to_string(), SECRET);
        assert_eq!(cli.args.tls_cert, None);
        assert!(Cli::try_parse_from(["receiver"]).is_err());
        assert!(Cli::try_parse_from(["receiver", "--secret", "whsec_"]).is_err());
        assert!(
            Cli::try_parse_from(["receiver", "--secret", SECRET, "--tls-cert", "c.pem"]).is_err(),
            "--tls-cert needs --tls-key"
        );
    }

    /// A self-signed certificate for `localhost` / 127.0.0.1, valid until 2126: a test fixture
    /// only, never used outside these tests.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUeHo2906ch4q1M1sSXALHzoAXql0wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMzE5NDcyNFoYDzIxMjYxMDMw
MTk0NzI0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQBOGGeFUU8KAKi+6Xs1et8yq62DzIeZJlptJFVcJ7BHI65gc4iUFiD
Ebkxk5WO3kdwg4yvf24iuvPplDgqyPX+o28wbTAdBgNVHQ4EFgQUAwPTLLUdtaf9
lE4LMCJWUUPgpbIwHwYDVR0jBBgwFoAUAwPTLLUdtaf9lE4LMCJWUUPgpbIwDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSAAwRQIhAP2tbuGfl3bWShZOIx1sG5Qd0/f6jv5b1BRHKFQKl5x7AiAL
aq7vpcCmSfo44PIh+uXCSNBcB9qsTonULbfuR5TRbg==
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgvutRZNy9Yv7PyIzw
/5k/2Ej6NYYdBVunuMJdvbGat1ahRANCAAQBOGGeFUU8KAKi+6Xs1et8yq62DzIe
ZJlptJFVcJ7BHI65gc4iUFiDEbkxk5WO3kdwg4yvf24iuvPplDgqyPX+
-----END PRIVATE KEY-----
";

    /// Starts the real server on a free loopback port; answers its address and its handle.
    async fn start(tls: Option<(PathBuf, PathBuf)>) -> (SocketAddr, Handle<SocketAddr>) {
        let (tls_cert, tls_key) = tls.unzip();
        let args = ReceiverArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            secret: Secret::parse(SECRET).unwrap(),
            tls_cert,
            tls_key,
        };
        let handle = Handle::new();
        tokio::spawn(serve(args, handle.clone()));
        let addr = handle.listening().await.expect("receiver listens");
        (addr, handle)
    }

    #[tokio::test]
    async fn serves_http_and_https_on_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, TEST_CERT).unwrap();
        std::fs::write(&key, TEST_KEY).unwrap();
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();

        for (scheme, tls) in [("http", None), ("https", Some((cert.clone(), key.clone())))] {
            let (addr, handle) = start(tls).await;
            let url = format!("{scheme}://{addr}/");
            let welcome = client.get(&url).send().await.unwrap();
            assert_eq!(welcome.status(), 200, "{url}");
            assert_eq!(welcome.text().await.unwrap(), WELCOME);

            let body = webhook_body(ID);
            let timestamp = now();
            let signature = Secret::parse(SECRET)
                .unwrap()
                .sign(ID, timestamp, body.as_bytes());
            let response = client
                .post(&url)
                .header("webhook-id", ID)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{url}");
            handle.shutdown();
        }
    }

    #[tokio::test]
    async fn unreadable_tls_files_are_an_error() {
        let args = ReceiverArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            secret: Secret::parse(SECRET).unwrap(),
            tls_cert: Some("does-not-exist-cert.pem".into()),
            tls_key: Some("does-not-exist-key.pem".into()),
        };
        let error = serve(args, Handle::new()).await.unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("reading TLS certificate does-not-exist-cert.pem"),
            "{error:#}"
        );
    }
}
