//! Tidings in-process, as `serve` wires it: the real store on a SQLite file in a temporary
//! directory, the real API router (called with `oneshot`, no socket needed) and the real
//! dispatcher with its guarded HTTPS client, on the system clock or a [`ManualClock`].
//!
//! Waiting is always bounded polling ([`eventually`]); tests assert on what happened and in
//! which order, never on how long it took.

use super::stores;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tempfile::TempDir;
use tidings::api::AppState;
use tidings::clock::{Clock, ManualClock, SystemClock};
use tidings::config::Settings;
use tidings::schedule::RetrySchedule;
use tidings::startup::{build, App};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::tls::TestCa;

/// The operator key each test instance is configured with and every API call sends.
const OPERATOR_KEY: &str = "test-operator-key-0123456789";

/// How long any awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Settings for one test's Tidings, before it starts.
pub struct Setup {
    pub settings: Settings,
    clock: Option<ManualClock>,
    dir: Arc<TempDir>,
    /// Runs the pruner (only tests of retention do).
    prune: bool,
}

impl Setup {
    /// The default settings, except: a fresh database and key file in a temporary directory,
    /// `ca` trusted for webhook TLS, `127.0.0.1/32` exempt from the SSRF block, a 10 s
    /// request timeout, and the system clock. The retry schedule is the real default
    /// (1m,10m,1h,24h), so on the system clock a test sees exactly one attempt.
    pub fn new(ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let settings = Settings {
            database_url: stores::database_url_in(dir.path()),
            admin_key: Some(OPERATOR_KEY.to_owned()),
            retry_schedule: RetrySchedule::default(),
            request_timeout: Duration::from_secs(10),
            allow_http: false,
            ssrf_allow: "127.0.0.1/32".to_owned(),
            ca_file: Some(ca_file),
            secret_key: None,
            secret_key_file: dir.path().join("tidings.key"),
            ..Settings::default()
        };
        Setup {
            settings,
            clock: None,
            dir: Arc::new(dir),
            prune: false,
        }
    }

    pub fn schedule(mut self, schedule: &str) -> Self {
        self.settings.retry_schedule = RetrySchedule::parse(schedule).unwrap();
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// `TIDINGS_PER_DESTINATION`: attempts in flight at once to one destination.
    pub fn per_destination(mut self, n: usize) -> Self {
        self.settings.per_destination = n;
        self
    }

    pub fn ssrf_allow(mut self, allow: &str) -> Self {
        self.settings.ssrf_allow = allow.to_owned();
        self
    }

    /// Prunes what is older than `retention` in the background, as `serve` does.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.settings.retention = tidings::config::Retention(Some(retention));
        self.prune = true;
        self
    }

    /// Runs on `clock` instead of the system clock.
    pub fn manual_clock(mut self, clock: &ManualClock) -> Self {
        self.clock = Some(clock.clone());
        self
    }

    /// Builds Tidings and starts its dispatcher.
    pub async fn start(self) -> TestApp {
        let clock: Arc<dyn Clock> = match &self.clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let App {
            state,
            dispatcher,
            pruner,
            ..
        } = build(&self.settings, clock).await.unwrap();
        let stop = CancellationToken::new();
        let dispatching = tokio::spawn(dispatcher.run(stop.clone()));
        if let Some(pruner) = pruner.filter(|_| self.prune) {
            tokio::spawn(pruner.run(stop.clone()));
        }
        TestApp {
            router: tidings::api::router(state.clone()),
            state,
            stop,
            dispatching: Some(dispatching),
            setup: self,
        }
    }
}

/// A running Tidings; its dispatcher is told to stop when this is dropped.
pub struct TestApp {
    pub state: AppState,
    router: Router,
    stop: CancellationToken,
    dispatching: Option<JoinHandle<()>>,
    setup: Setup,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    pub fn settings(&self) -> &Settings {
        &self.setup.settings
    }

    pub fn database_path(&self) -> PathBuf {
        self.setup.dir.path().join("tidings.db")
    }

    /// Stops the dispatcher and waits until it has recorded the attempts it had in flight.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(handle) = self.dispatching.take() {
            handle.await.unwrap();
        }
    }

    /// Stops this instance, drops it, and starts a new one on the same database and key
    /// file, on `clock` (a process restart).
    pub async fn restart(mut self, clock: &ManualClock) -> TestApp {
        self.stop().await;
        let settings = self.setup.settings.clone();
        let dir = Arc::clone(&self.setup.dir);
        let prune = self.setup.prune;
        drop(self);
        Setup {
            settings,
            clock: Some(clock.clone()),
            dir,
            prune,
        }
        .start()
        .await
    }

    /// Tells the dispatcher to look for due work now (after a [`ManualClock`] moved).
    pub fn wake(&self) {
        self.state.hierarchy.wake_dispatcher();
    }

    /// Calls the API; answers the status and the body (JSON, or a JSON string for text).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {OPERATOR_KEY}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// POSTs and expects `expected`; answers the body.
    pub async fn post(&self, path: &str, body: Value, expected: StatusCode) -> Value {
        let (status, answer) = self.call(Method::POST, path, Some(body)).await;
        assert_eq!(status, expected, "POST {path}: {answer}");
        answer
    }

    pub async fn patch(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(Method::PATCH, path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "PATCH {path}: {answer}");
        answer
    }

    /// Creates a reseller whose webhooks go to `webhook_url`; answers its id.
    pub async fn create_reseller(&self, webhook_url: &str) -> String {
        let body = json!({
            "name": "Reseller",
            "contact": {"first_name": "Rita", "last_name": "Reseller", "email": "rita@reseller.example"},
            "notification_contact": {"email": "alerts@reseller.example"},
            "webhook_url": webhook_url,
        });
        id_of(&self.post("/v1/resellers", body, StatusCode::CREATED).await)
    }

    /// Creates a dealer (no webhook URL of its own) under `reseller_id`, which makes one
    /// DEALER_CREATED webhook to the reseller; answers that webhook's id.
    pub async fn dealer_created_webhook(&self, reseller_id: &str) -> String {
        let body = json!({
            "name": "Dealer",
            "contact": {"first_name": "Dirk", "last_name": "Dealer", "email": "dirk@dealer.example"},
            "reseller": {"id": reseller_id},
        });
        let dealer = id_of(&self.post("/v1/dealers", body, StatusCode::CREATED).await);
        let list = self
            .get(&format!(
                "/v1/webhooks?subject_id={dealer}&type=DEALER_CREATED"
            ))
            .await;
        let webhooks = list["data"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1, "one DEALER_CREATED webhook: {list}");
        assert_eq!(webhooks[0]["level"]["id"], reseller_id);
        id_of(&webhooks[0])
    }

    /// `GET /v1/webhooks/{id}`.
    pub async fn webhook(&self, id: &str) -> Value {
        self.get(&format!("/v1/webhooks/{id}")).await
    }

    /// Webhooks received by one level, up to 1000.
    pub async fn webhooks_of(&self, level_id: &str) -> Vec<Value> {
        let list = self
            .get(&format!("/v1/webhooks?level_id={level_id}&limit=1000"))
            .await;
        list["data"].as_array().unwrap().clone()
    }

    /// Waits until the webhook satisfies `done`; answers it.
    pub async fn wait_webhook(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually(&format!("webhook {id}: {what}"), || async {
            let w = self.webhook(id).await;
            done(&w).then_some(w)
        })
        .await
    }

    /// Waits until the webhook has recorded `n` attempts.
    pub async fn wait_attempts(&self, id: &str, n: u64) -> Value {
        self.wait_webhook(id, &format!("{n} attempts recorded"), |w| {
            w["attempt_count"] == n
        })
        .await
    }

    /// Waits until the webhook is `status` (pending, succeeded, failed).
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        self.wait_webhook(id, &format!("status {status}"), |w| w["status"] == status)
            .await
    }

    /// A level's signing secret from the API (`kind` is the collection, e.g. `resellers`).
    pub async fn secret(&self, collection: &str, id: &str) -> String {
        let body = self.get(&format!("/v1/{collection}/{id}/secret")).await;
        body["secret"].as_str().unwrap().to_owned()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        match self.get("/metrics").await {
            Value::String(s) => s,
            other => panic!("/metrics is not text: {other}"),
        }
    }

    /// A separate connection to the database (SQLite or PostgreSQL), for rows the API does
    /// not show. Write queries with `$1` placeholders so they run on both.
    pub async fn database(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.settings().database_url)
            .await
            .unwrap()
    }
}

/// The `id` field of an API object.
pub fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// Polls `probe` every 20 ms until it answers `Some`, for at most [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Gives the dispatcher time to do something it must not do (used only before asserting
/// that nothing happened).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}
