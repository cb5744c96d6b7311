//! Tidings in-process, as `serve` wires it (`startup::build`): the real store in a temporary
//! directory (on the store [`stores`] picks), the real API router (called with `oneshot`, no
//! socket needed), the real dispatcher with its guarded HTTPS client and, when a test asks,
//! the mailer and the pruner; on the system clock or a [`ManualClock`].
//!
//! Tests assert on what happened and in which order, never on how long it took: waits are
//! bounded polling ([`eventually`]), and before asserting that nothing (more) happened a test
//! waits until the work that could have done it has run ([`TestApp::idle`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::Row;
use tempfile::TempDir;
use tidings::api::AppState;
use tidings::clock::{Clock, ManualClock, SystemClock};
use tidings::config::Settings;
use tidings::delivery::Dispatcher;
use tidings::notify::{Mailer, MailerConfig};
use tidings::schedule::RetrySchedule;
use tidings::startup::{build, App};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::receiver::Receiver;
use super::tls::TestCa;
use super::tree::{self, Api, Collection, Kind};
use super::{eventually, id_of, metric, stores, OPERATOR_KEY};

/// Settings for one test's Tidings, before it starts.
pub struct Setup {
    pub settings: Settings,
    clock: Option<ManualClock>,
    dir: Arc<TempDir>,
    /// Runs the mailer (with [`fast`] timings).
    mail: bool,
    /// Runs the pruner (only tests of retention do).
    prune: bool,
    /// When what runs in the background starts.
    run: Run,
}

/// When what runs in the background (the dispatcher, and the mailer and the pruner when
/// asked for) starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// With Tidings, as `serve` starts it.
    AtStart,
    /// When the test calls [`TestApp::run_background`]; meanwhile API changes hand their
    /// webhooks to the dispatcher, which takes them once it runs.
    Later,
    /// Never: API changes leave their webhooks due, for a claim that never comes.
    Never,
}

impl Default for Setup {
    fn default() -> Self {
        Setup::new()
    }
}

impl Setup {
    /// The default settings, except: a fresh database (the store [`stores`] picks) and key
    /// file in a temporary directory, [`OPERATOR_KEY`], a 10 s request timeout, and the
    /// system clock. The retry schedule is the real default (1m,10m,1h,24h), so on the system
    /// clock a test sees exactly one attempt. The dispatcher runs; the mailer and the pruner
    /// do not unless asked.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            // Chosen at the start, unless a test names one (see `start`).
            database_url: String::new(),
            admin_key: Some(OPERATOR_KEY.to_owned()),
            request_timeout: Duration::from_secs(10),
            secret_key: None,
            secret_key_file: dir.path().join("tidings.key"),
            ..Settings::default()
        };
        Setup {
            settings,
            clock: None,
            dir: Arc::new(dir),
            mail: false,
            prune: false,
            run: Run::AtStart,
        }
    }

    /// Trusts `ca` for webhook TLS and exempts `127.0.0.1/32` from the SSRF block: the test's
    /// receivers on loopback, with certificates from `ca`.
    pub fn trusting(mut self, ca: &TestCa) -> Self {
        self.settings.ca_file = Some(ca.write(self.dir.path()));
        self.ssrf_allow("127.0.0.1/32")
    }

    /// An HTTPS receiver with a certificate from a CA made for the test, and this setup
    /// trusting that CA ([`Setup::trusting`]).
    pub fn with_receiver(self) -> (Self, Receiver) {
        let ca = TestCa::new("Tidings test CA");
        (self.trusting(&ca), Receiver::start(&ca.loopback_identity()))
    }

    /// Allows `http://` webhook URLs and exempts `127.0.0.1/32` from the SSRF block: the
    /// test's plain-HTTP receivers on loopback.
    pub fn plain_http(mut self) -> Self {
        self.settings.allow_http = true;
        self.ssrf_allow("127.0.0.1/32")
    }

    /// Changes any other setting.
    pub fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(&mut self.settings);
        self
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

    /// Runs the mailer, sending through the SMTP server on `smtp_port` when there is one
    /// (without, e-mails stay queued), from `Tidings <tidings@test.example>`.
    pub fn mailer(mut self, smtp_port: Option<u16>) -> Self {
        self.settings.smtp_url = smtp_port.map(|p| format!("smtp://127.0.0.1:{p}"));
        self.settings.mail_from = "Tidings <tidings@test.example>".into();
        self.mail = true;
        self
    }

    /// Runs on `clock` instead of the system clock.
    pub fn manual_clock(mut self, clock: &ManualClock) -> Self {
        self.clock = Some(clock.clone());
        self
    }

    /// On a SQLite file in the temporary directory, whatever `TIDINGS_TEST_STORE` says (for
    /// tests that read the file, see [`TestApp::snapshot`]).
    pub fn on_sqlite(mut self) -> Self {
        self.settings.database_url = stores::sqlite_url_in(self.dir.path());
        self
    }

    /// On the database at `url` (e.g. a PostgreSQL database several instances share).
    pub fn on_database(mut self, url: &str) -> Self {
        self.settings.database_url = url.to_owned();
        self
    }

    /// Starts nothing in the background until the test calls [`TestApp::run_background`].
    pub fn paused(mut self) -> Self {
        self.run = Run::Later;
        self
    }

    /// Runs nothing in the background, ever, so nothing changes behind the test's back.
    pub fn quiet(mut self) -> Self {
        self.run = Run::Never;
        self
    }

    /// Builds Tidings and starts what runs in the background.
    pub async fn start(mut self) -> TestApp {
        if self.settings.database_url.is_empty() {
            self.settings.database_url = stores::database_url_in(self.dir.path());
        }
        let clock: Arc<dyn Clock> = match &self.clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let App {
            state,
            dispatcher,
            mailer,
            pruner,
        } = build(&self.settings, clock).await.unwrap();
        let background = (self.run != Run::Never).then(|| Background {
            dispatcher,
            mailer,
            pruner: pruner.filter(|_| self.prune),
        });
        let mut app = TestApp {
            router: tidings::api::router(state.clone()),
            state,
            stop: CancellationToken::new(),
            tasks: Vec::new(),
            background,
            mailing: false,
            reader: tokio::sync::OnceCell::new(),
            setup: self,
        };
        if app.setup.run == Run::AtStart {
            app.run_background();
        }
        app
    }
}

/// Mailer timings for tests: look for failures every 20 ms, retry SMTP after 100 ms
/// doubling up to 500 ms.
pub fn fast(c: &mut MailerConfig) {
    c.poll = Duration::from_millis(20);
    c.backoff_first = Duration::from_millis(100);
    c.backoff_max = Duration::from_millis(500);
    c.send_timeout = Duration::from_secs(5);
}

/// What runs in the background until it is started.
struct Background {
    dispatcher: Dispatcher,
    mailer: Mailer,
    pruner: Option<tidings::retention::Pruner>,
}

/// An HTTP answer: status, headers, and the body as JSON (a JSON string when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `error.code` of an error answer, or "" when there is none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A running Tidings; what runs in the background is told to stop when this is dropped.
pub struct TestApp {
    pub state: AppState,
    router: Router,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    background: Option<Background>,
    /// Whether the mailer runs.
    mailing: bool,
    /// A read-only connection to the SQLite file, for snapshots.
    reader: tokio::sync::OnceCell<SqlitePool>,
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

    /// The temporary directory holding the database (on SQLite) and the key file.
    pub fn dir(&self) -> &Path {
        self.setup.dir.path()
    }

    pub fn database_path(&self) -> PathBuf {
        self.dir().join("tidings.db")
    }

    /// Starts the dispatcher, the mailer when asked for and the pruner when there is one (at
    /// the start, unless the setup was [`Setup::paused`] or [`Setup::quiet`]).
    pub fn run_background(&mut self) {
        let Some(Background {
            dispatcher,
            mailer,
            pruner,
        }) = self.background.take()
        else {
            return;
        };
        self.tasks
            .push(tokio::spawn(dispatcher.run(self.stop.clone())));
        if self.setup.mail {
            self.mailing = true;
            self.tasks
                .push(tokio::spawn(mailer.configure(fast).run(self.stop.clone())));
        }
        if let Some(pruner) = pruner {
            self.tasks.push(tokio::spawn(pruner.run(self.stop.clone())));
        }
    }

    /// Stops what runs in the background and waits until it has stopped: the dispatcher has
    /// recorded the attempts it had in flight, the mailer has finished the e-mail it was
    /// sending. What is in the store stays (a process stop).
    pub async fn stop(&mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }

    /// Stops this instance and drops it; answers the setup of a new one on the same database
    /// and key file, with the same settings (a process restart once started).
    pub async fn restart(mut self) -> Setup {
        self.stop().await;
        let setup = Setup {
            settings: self.setup.settings.clone(),
            clock: self.setup.clock.clone(),
            dir: Arc::clone(&self.setup.dir),
            mail: self.setup.mail,
            prune: self.setup.prune,
            run: Run::AtStart,
        };
        drop(self);
        setup
    }

    /// The setup of another instance beside this one: the same settings, database and key
    /// file (instances sharing a PostgreSQL database).
    pub fn another(&self) -> Setup {
        Setup {
            settings: self.setup.settings.clone(),
            clock: self.setup.clock.clone(),
            dir: Arc::clone(&self.setup.dir),
            mail: self.setup.mail,
            prune: self.setup.prune,
            run: self.setup.run,
        }
    }

    /// Tells the dispatcher to look for due work now (after a [`ManualClock`] moved).
    pub fn wake(&self) {
        self.state.hierarchy.wake_dispatcher();
    }

    /// Waits until the dispatcher has, since this call, looked for due webhooks and found
    /// none with no attempt in flight, and then (when the mailer runs) until the mailer has
    /// completed a round: whatever could still have been sent has been. Tests call it before
    /// asserting that nothing (more) happened.
    ///
    /// A pass counted after the count read here may have begun before it; the one after that
    /// began after it, hence two.
    pub async fn idle(&self) {
        let since = self.count("tidings_dispatcher_idle_total").await;
        eventually("the dispatcher found nothing to do", || async {
            self.wake();
            let now = self.count("tidings_dispatcher_idle_total").await;
            (now >= since + 2.0).then_some(())
        })
        .await;
        if self.mailing {
            let since = self.count("tidings_mailer_rounds_total").await;
            eventually("the mailer completed a round", || async {
                let now = self.count("tidings_mailer_rounds_total").await;
                (now >= since + 2.0).then_some(())
            })
            .await;
        }
    }

    /// A counter of `/metrics`.
    async fn count(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metric(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    /// Calls the API with `key` (None: no `Authorization` header) and a raw body.
    pub async fn raw(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = request.body(Body::from(body)).unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Calls the API with `key` and an optional JSON body.
    pub async fn call(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let bytes = body.map_or_else(Vec::new, |b| b.to_string().into_bytes());
        self.raw(Some(key), method, path, bytes).await
    }

    /// Calls the API with the operator key; answers the status and the body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let a = self.call(OPERATOR_KEY, method, path, body.as_ref()).await;
        (a.status, a.body)
    }

    /// GETs with the operator key and expects 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// POSTs and expects `expected`; answers the body.
    pub async fn post(&self, path: &str, body: Value, expected: StatusCode) -> Value {
        let (status, answer) = self.request(Method::POST, path, Some(body)).await;
        assert_eq!(status, expected, "POST {path}: {answer}");
        answer
    }

    /// PATCHes and expects 200; answers the entity after the change.
    pub async fn patch(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.request(Method::PATCH, path, Some(body)).await;
        assert_eq!(status, StatusCode::OK, "PATCH {path}: {answer}");
        answer
    }

    /// POSTs to a collection and expects 201; answers the created entity.
    pub async fn create(&self, collection: &str, body: Value) -> Value {
        let path = format!("/v1/{collection}");
        let (status, answer) = self.request(Method::POST, &path, Some(body.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "POST {path} {body}: {answer}");
        answer
    }

    /// Makes a key bound to one level; answers its id and the key itself.
    pub async fn key_for(&self, level: Kind, id: &str) -> (String, String) {
        let body = serde_json::json!({
            "level": level.level().unwrap(), "id": id, "label": format!("{level:?} key")
        });
        let made = self.post("/v1/api-keys", body, StatusCode::CREATED).await;
        let key = made["key"].as_str().expect("the key, once").to_owned();
        (made["id"].as_str().unwrap().to_owned(), key)
    }

    /// Creates a reseller whose webhooks go to `webhook_url`; answers its id.
    pub async fn create_reseller(&self, webhook_url: &str) -> String {
        id_of(
            &self
                .create("resellers", tree::reseller_body(webhook_url))
                .await,
        )
    }

    /// Creates a dealer (no webhook URL of its own) under `reseller_id`, which makes one
    /// DEALER_CREATED webhook to the reseller; answers that webhook's id.
    pub async fn dealer_created_webhook(&self, reseller_id: &str) -> String {
        let body = tree::dealer_body(reseller_id, "Dealer");
        let dealer = id_of(&self.create("dealers", body).await);
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

    /// A level's signing secret from the API (`collection` is e.g. `resellers`).
    pub async fn secret(&self, collection: &str, id: &str) -> String {
        let body = self.get(&format!("/v1/{collection}/{id}/secret")).await;
        body["secret"].as_str().unwrap().to_owned()
    }

    /// Rotates a level's signing secret (`POST .../secret/rotate`); answers the new one.
    pub async fn rotate_secret(&self, collection: &str, id: &str) -> String {
        let path = format!("/v1/{collection}/{id}/secret/rotate");
        let body = self
            .post(&path, serde_json::json!({}), StatusCode::OK)
            .await;
        body["secret"].as_str().unwrap().to_owned()
    }

    /// `GET /v1/emails?QUERY` → `data`.
    pub async fn emails(&self, query: &str) -> Vec<Value> {
        self.get(&format!("/v1/emails?{query}")).await["data"]
            .as_array()
            .unwrap()
            .clone()
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

    /// Everything stored: every entity as the operator's API shows it, and every database
    /// row (webhooks, attempts, events, sealed secrets, keys, e-mails, references). Needs
    /// [`Setup::on_sqlite`].
    pub async fn snapshot(&self) -> Snapshot {
        let mut api = BTreeMap::new();
        for kind in Kind::ALL {
            let path = format!("/v1/{}?limit=1000", kind.collection());
            api.insert(path.clone(), self.get(&path).await);
        }
        Snapshot {
            api,
            database: self.dump().await,
        }
    }

    /// Every row of every table, each as its columns' SQL literals.
    async fn dump(&self) -> BTreeMap<String, Vec<String>> {
        assert!(
            self.settings().database_url.starts_with("sqlite:"),
            "snapshots read the SQLite file: start with Setup::on_sqlite"
        );
        let pool = self
            .reader
            .get_or_init(|| async {
                let options = SqliteConnectOptions::new()
                    .filename(self.database_path())
                    .read_only(true);
                SqlitePool::connect_with(options).await.unwrap()
            })
            .await;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        let mut out = BTreeMap::new();
        for table in tables {
            let columns: Vec<String> = sqlx::query(&format!("PRAGMA table_info(\"{table}\")"))
                .fetch_all(pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect();
            let row = columns
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || '|' || ");
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT {row} FROM \"{table}\" ORDER BY 1"))
                    .fetch_all(pool)
                    .await
                    .unwrap();
            out.insert(table, rows);
        }
        out
    }
}

impl Api for TestApp {
    async fn create(&self, collection: &str, body: &Value) -> Value {
        TestApp::create(self, collection, body.clone()).await
    }
}

/// All that is stored: the operator's view of every collection and every database row.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub api: BTreeMap<String, Value>,
    pub database: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    /// What differs between two snapshots, for a failure message.
    pub fn diff(&self, after: &Snapshot) -> String {
        let mut out = String::new();
        for (path, before) in &self.api {
            if after.api.get(path) != Some(before) {
                out.push_str(&format!("API {path} changed\n"));
            }
        }
        for (table, before) in &self.database {
            let after = after.database.get(table).cloned().unwrap_or_default();
            if &after != before {
                let gone: Vec<_> = before.iter().filter(|r| !after.contains(r)).collect();
                let new: Vec<_> = after.iter().filter(|r| !before.contains(r)).collect();
                out.push_str(&format!("table {table}: gone {gone:?}, new {new:?}\n"));
            }
        }
        out
    }
}
