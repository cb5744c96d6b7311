//! What the e-mail tests run against: a real SMTP server process (aiosmtpd writing to a
//! Maildir), Tidings in-process on a real socket, and a webhook receiver that always fails.
//!
//! aiosmtpd comes from `TIDINGS_TEST_AIOSMTPD` (scripts/test installs it in target/pyenv).
//! Without it the tests fail with a message saying how to get it; they never skip.
//! Waiting is bounded polling ([`eventually`]), never a sleep standing in for an assertion.

#![allow(dead_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{json, Value};
use tidings::clock::SystemClock;
use tidings::config::Settings;
use tidings::notify::MailerConfig;
use tidings::schedule::RetrySchedule;
use tidings::startup::build;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The operator key the tests send.
const OPERATOR_KEY: &str = "email-test-operator-key-0123456789";

/// How long any awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `check` until it gives `Some`, or fails the test naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > PATIENCE {
            panic!("timed out after {PATIENCE:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port on 127.0.0.1 that nothing listens on (right now).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn aiosmtpd() -> PathBuf {
    let path = std::env::var_os("TIDINGS_TEST_AIOSMTPD")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "TIDINGS_TEST_AIOSMTPD is not set: the e-mail tests need a real SMTP server. Run \
             scripts/test, or: python3 -m venv target/pyenv && target/pyenv/bin/pip install \
             aiosmtpd && export TIDINGS_TEST_AIOSMTPD=$PWD/target/pyenv/bin/aiosmtpd"
            )
        });
    assert!(
        path.is_file(),
        "TIDINGS_TEST_AIOSMTPD={} is not a file; install aiosmtpd there (see scripts/test)",
        path.display()
    );
    path
}

/// One received message, decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// An aiosmtpd process accepting every message into a Maildir; killed on drop.
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    maildir: PathBuf,
    python: PathBuf,
}

impl SmtpServer {
    /// Starts aiosmtpd on `port`, delivering into `maildir`, and waits until it accepts
    /// connections.
    pub async fn start(port: u16, maildir: &Path) -> SmtpServer {
        let exe = aiosmtpd();
        let python = ["python3", "python"]
            .iter()
            .map(|p| exe.with_file_name(p))
            .find(|p| p.is_file())
            .expect("a python next to aiosmtpd (the venv's)");
        let child = Command::new(&exe)
            .args(["-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", exe.display()));
        let mut server = SmtpServer {
            child,
            port,
            maildir: maildir.to_owned(),
            python,
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("aiosmtpd exited at start ({status}); is port {port} taken?");
            }
            assert!(
                start.elapsed() < PATIENCE,
                "aiosmtpd did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    /// Every message received so far, oldest first, decoded by Python's `email` package.
    pub fn messages(&self) -> Vec<Mail> {
        read_maildir(&self.python, &self.maildir)
    }

    /// Waits until at least `n` messages arrived and returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        eventually(&format!("{n} e-mail(s) in the Maildir"), || async {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .await
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const READ_MAILDIR: &str = r#"
import email, email.policy, json, os, sys
root = sys.argv[1]
files = []
for sub in ("new", "cur"):
    d = os.path.join(root, sub)
    if os.path.isdir(d):
        files += [os.path.join(d, f) for f in os.listdir(d)]
files.sort(key=lambda p: (os.stat(p).st_mtime_ns, p))
out = []
for p in files:
    with open(p, "rb") as f:
        m = email.message_from_binary_file(f, policy=email.policy.default)
    body = m.get_body(preferencelist=("plain",))
    out.append({"from": str(m["From"]), "to": str(m["To"]), "subject": str(m["Subject"]),
                "body": body.get_content() if body is not None else ""})
print(json.dumps(out))
"#;

fn read_maildir(python: &Path, maildir: &Path) -> Vec<Mail> {
    if !maildir.exists() {
        return vec![];
    }
    let out = Command::new(python)
        .args(["-c", READ_MAILDIR])
        .arg(maildir)
        .output()
        .expect("running python to read the Maildir");
    assert!(
        out.status.success(),
        "reading the Maildir failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).expect("Maildir JSON");
    list.into_iter()
        .map(|m| Mail {
            from: m["from"].as_str().unwrap_or_default().to_owned(),
            to: m["to"].as_str().unwrap_or_default().to_owned(),
            subject: m["subject"].as_str().unwrap_or_default().to_owned(),
            body: m["body"].as_str().unwrap_or_default().replace("\r\n", "\n"),
        })
        .collect()
}

/// A webhook receiver that answers every POST with 500 and a numbered body
/// (`receiver says no (001)`, `(002)`, ...), so each attempt's error is recognizable.
pub struct FailingReceiver {
    pub url: String,
    task: JoinHandle<()>,
}

impl FailingReceiver {
    pub async fn start() -> FailingReceiver {
        let count = Arc::new(AtomicU32::new(0));
        let app = axum::Router::new().route(
            "/hook",
            post(move || {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("receiver says no ({n:03})"),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FailingReceiver { url, task }
    }
}

impl Drop for FailingReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A webhook receiver answering every POST with the status it is set to, and keeping the
/// bodies it got, in order.
pub struct SwitchingReceiver {
    pub url: String,
    status: Arc<std::sync::atomic::AtomicU16>,
    bodies: Arc<std::sync::Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl SwitchingReceiver {
    pub async fn start(status: u16) -> SwitchingReceiver {
        let code = Arc::new(std::sync::atomic::AtomicU16::new(status));
        let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, b) = (code.clone(), bodies.clone());
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: axum::body::Bytes| {
                let (c, b) = (c.clone(), b.clone());
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    b.lock().unwrap().push(v);
                    StatusCode::from_u16(c.load(Ordering::SeqCst)).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        SwitchingReceiver {
            url,
            status: code,
            bodies,
            task,
        }
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The bodies received so far, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for SwitchingReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Settings for a test: a database at `database_url` (a SQLite file in `dir` when `None`),
/// the key file in `dir`, http:// and 127.0.0.1 allowed, five attempts 10 ms apart.
pub fn settings(dir: &Path, database_url: Option<&str>, smtp_port: Option<u16>) -> Settings {
    Settings {
        database_url: database_url.map_or_else(
            || format!("sqlite://{}", dir.join("tidings.db").display()),
            str::to_owned,
        ),
        retry_schedule: RetrySchedule::parse("10ms,10ms,10ms,10ms").unwrap(),
        request_timeout: Duration::from_secs(5),
        allow_http: true,
        ssrf_allow: "127.0.0.1/32".into(),
        admin_key: Some(OPERATOR_KEY.into()),
        smtp_url: smtp_port.map(|p| format!("smtp://127.0.0.1:{p}")),
        mail_from: "Tidings <tidings@test.example>".into(),
        secret_key_file: dir.join("tidings.key"),
        ..Settings::default()
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

/// Tidings in-process: the API on a real socket, the dispatcher and the mailer running.
pub struct Tidings {
    pub base: String,
    client: reqwest::Client,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Tidings {
    pub async fn start(settings: &Settings) -> Tidings {
        let app = build(settings, Arc::new(SystemClock)).await.unwrap();
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = tidings::api::router(app.state.clone());
        let serving = stop.clone();
        let tasks = vec![
            tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { serving.cancelled().await })
                    .await
                    .unwrap();
            }),
            tokio::spawn(app.dispatcher.run(stop.clone())),
            tokio::spawn(app.mailer.configure(fast).run(stop.clone())),
        ];
        Tidings {
            base,
            client: reqwest::Client::new(),
            stop,
            tasks,
        }
    }

    /// Stops the API, the dispatcher and the mailer, and waits until they have (a process
    /// stop: what is in the store stays).
    pub async fn stop(mut self) {
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            t.await.unwrap();
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(OPERATOR_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(OPERATOR_KEY)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status} {v}");
        v
    }

    /// Any request; answers the status and the JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(OPERATOR_KEY);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A level with an optional webhook URL and notification contact; `parent` is
    /// `("reseller", id)` for a dealer or `("dealer", id)` for a company.
    pub async fn level(
        &self,
        collection: &str,
        parent: Option<(&str, &str)>,
        webhook_url: Option<&str>,
        contact: Option<&str>,
    ) -> String {
        let mut body = json!({
            "name": format!("Test {collection}"),
            "contact": {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@test.example"},
        });
        if let Some((field, id)) = parent {
            body[field] = json!({ "id": id });
        }
        if let Some(u) = webhook_url {
            body["webhook_url"] = json!(u);
        }
        if let Some(c) = contact {
            body["notification_contact"] = json!({ "email": c });
        }
        let v = self.post(&format!("/v1/{collection}"), body).await;
        v["id"].as_str().unwrap().to_owned()
    }

    /// Webhooks addressed to a level.
    pub async fn webhooks(&self, level_id: &str) -> Vec<Value> {
        self.get(&format!("/v1/webhooks?level_id={level_id}")).await["data"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Waits until `n` webhooks to the level have failed for good; returns their ids.
    pub async fn failed_webhooks(&self, level_id: &str, n: usize) -> Vec<String> {
        eventually(&format!("{n} failed webhook(s) to {level_id}"), || async {
            let ids: Vec<String> = self
                .get(&format!("/v1/webhooks?level_id={level_id}&status=failed"))
                .await["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_owned())
                .collect();
            (ids.len() >= n).then_some(ids)
        })
        .await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// `GET /v1/emails?QUERY` → `data`.
    pub async fn emails(&self, query: &str) -> Vec<Value> {
        self.get(&format!("/v1/emails?{query}")).await["data"]
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for Tidings {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
