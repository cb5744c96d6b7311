//! The real `tidings` binary (`env!("CARGO_BIN_EXE_tidings")`) as a child process: the
//! hermetic [`tidings_command`] every run starts from, a [`Process`] whose output is collected
//! and which is killed when dropped, and [`TestServer`], a running `tidings serve` with JSON
//! helpers to talk to it.
//!
//! A server is ready when it prints its "listening" line; every wait has a deadline and
//! fails with the process's output.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

use super::tree::{self, Api};
use super::{free_port, id_of, stores, OPERATOR_KEY};

/// How long a process may take to become ready (a first start on a busy machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long any one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long output or webhooks awaited from a process may take.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(25);

/// The `tidings` binary with no `TIDINGS_*` setting leaking in from the environment the tests
/// run in, logging warnings and worse without colour codes (so the output can be searched as
/// plain text).
pub fn tidings_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TIDINGS_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    command
}

/// A child process with its stdout and stderr collected; dropping it kills the process.
pub struct Process {
    name: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Process {
    /// Spawns `command` with both pipes drained for the life of the process (so it never
    /// blocks on a full pipe) into one text, in the order lines arrive.
    pub fn spawn(name: &str, mut command: Command) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name} ({command:?}): {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().expect("piped stdout"), output.clone());
        collect(child.stderr.take().expect("piped stderr"), output.clone());
        Process {
            name: name.to_owned(),
            child,
            output,
        }
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The process id, to signal it from another thread.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILLs the process (no graceful shutdown) and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits until the output contains `text` `count` times or more; answers how many times
    /// it does. Panics at the deadline with the output.
    pub fn wait_for_output(&mut self, text: &str, count: usize) -> usize {
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        loop {
            let seen = self.output().matches(text).count();
            if seen >= count {
                return seen;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{} exited ({status}) before printing {text:?} {count} times; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} printed {text:?} {seen} times, not {count}, within {OUTPUT_TIMEOUT:?}; \
                     output:\n{}",
                    self.name,
                    self.output()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Polls until `ready` holds for the output so far; an error if the process exits first
    /// or the deadline passes.
    pub fn wait_ready(&mut self, mut ready: impl FnMut(&str) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready(&self.output()) {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                // Let the readers take the last lines (they end with the pipes).
                thread::sleep(Duration::from_millis(100));
                return Err(format!(
                    "{} exited ({status}) before it was ready; output:\n{}",
                    self.name,
                    self.output()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not ready within {START_TIMEOUT:?}; output:\n{}",
                    self.name,
                    self.output()
                ));
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Appends each line read from `pipe` to `output` until the pipe closes.
fn collect(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            output
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    });
}

/// A running `tidings serve`. Dropping it kills the process.
pub struct TestServer {
    process: Process,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub db_path: PathBuf,
    /// Made at the first request: a blocking client cannot be made, nor dropped, in an async
    /// test, which may still start servers and talk to them its own way.
    client: OnceLock<Client>,
    /// The temporary directory holding the database, when this server owns it.
    _dir: Option<tempfile::TempDir>,
}

/// An HTTP answer: status and body (parsed as JSON when it is JSON, else a JSON string).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl TestServer {
    /// Starts a server on a fresh temporary database with the default settings.
    pub fn start() -> TestServer {
        TestServer::start_env(&[])
    }

    /// Starts a server on a fresh temporary database with extra `TIDINGS_*` settings.
    pub fn start_env(env: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = dir.path().join("tidings.db");
        let mut server = TestServer::start_on(&db, env);
        server._dir = Some(dir);
        server
    }

    /// Starts a server on the database file `db` (kept by the caller, e.g. across a restart)
    /// and the key file beside it, with the operator key [`OPERATOR_KEY`] and `env` (which may
    /// name another database with `TIDINGS_DATABASE_URL`). Without one, the database is the
    /// store [`stores`] picks: `db`, or a PostgreSQL database remembered beside it.
    pub fn start_on(db: &Path, env: &[(&str, &str)]) -> TestServer {
        // Another process may take the port between our probe and the server's bind; then
        // the server exits without its "listening" line and we try another port.
        let mut last_error = String::new();
        for _ in 0..5 {
            match TestServer::try_start(db, env) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("tidings did not start: {last_error}");
    }

    fn try_start(db: &Path, env: &[(&str, &str)]) -> Result<TestServer, String> {
        let port = free_port();
        let dir = db.parent().expect("the database file is in a directory");
        let mut cmd = tidings_command();
        // Anything the server keeps beside its database (the key that seals signing secrets,
        // any relative path) stays in the test's directory, never in the work tree.
        cmd.arg("serve")
            .current_dir(dir)
            .env("TIDINGS_LISTEN", format!("127.0.0.1:{port}"))
            .env("TIDINGS_ADMIN_KEY", OPERATOR_KEY)
            .env("TIDINGS_SECRET_KEY_FILE", dir.join("tidings.key"));
        if !env.iter().any(|(k, _)| *k == "TIDINGS_DATABASE_URL") {
            cmd.env("TIDINGS_DATABASE_URL", stores::database_url_in(dir));
        }
        cmd.envs(env.iter().copied());
        let mut process = Process::spawn("tidings serve", cmd);
        let asked = format!("http://127.0.0.1:{port}");
        process.wait_ready(|output| output.contains("tidings listening on "))?;
        let output = process.output();
        let base = output
            .lines()
            .find_map(|l| l.strip_prefix("tidings listening on "))
            .expect("the listening line")
            .trim()
            .to_owned();
        if base != asked {
            return Err(format!("listening on {base}, asked for port {port}"));
        }
        Ok(TestServer {
            process,
            base,
            db_path: db.to_owned(),
            client: OnceLock::new(),
            _dir: None,
        })
    }

    /// SIGKILLs the process (no graceful shutdown) and waits until it is gone.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// The process id, to signal it from another thread.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Everything the server printed so far, for failure messages.
    pub fn logs(&self) -> String {
        self.process.output()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with a raw body (or none) and returns the answer.
    pub fn raw(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        let client = self.client.get_or_init(|| {
            Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("HTTP client")
        });
        let mut req = client
            .request(method.clone(), self.url(path))
            .bearer_auth(OPERATOR_KEY);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nserver output:\n{}", self.logs()));
        let status = resp.status().as_u16();
        let text = resp.text().expect("response body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer { status, body }
    }

    pub fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let body = body.map(Value::to_string);
        self.raw(method, path, body.as_deref())
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request(Method::POST, path, Some(body))
    }

    pub fn patch(&self, path: &str, body: &Value) -> Answer {
        self.request(Method::PATCH, path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.request(Method::DELETE, path, None)
    }

    /// POSTs and expects 201; returns the created entity.
    pub fn create(&self, collection: &str, body: &Value) -> Value {
        let a = self.post(&format!("/v1/{collection}"), body);
        assert_eq!(a.status, 201, "POST /v1/{collection} {body}: {:?}", a.body);
        a.body
    }

    /// GETs and expects 200.
    pub fn get_ok(&self, path: &str) -> Value {
        let a = self.get(path);
        assert_eq!(a.status, 200, "GET {path}: {:?}", a.body);
        a.body
    }

    /// PATCHes and expects 200; returns the entity after the change.
    pub fn patch_ok(&self, path: &str, body: &Value) -> Value {
        let a = self.patch(path, body);
        assert_eq!(a.status, 200, "PATCH {path} {body}: {:?}", a.body);
        a.body
    }

    /// DELETEs and expects 204.
    pub fn delete_ok(&self, path: &str) {
        let a = self.delete(path);
        assert_eq!(a.status, 204, "DELETE {path}: {:?}", a.body);
    }

    /// POSTs a meeting moment and expects 200; returns the meeting.
    pub fn moment(&self, meeting: &str, moment: &str) -> Value {
        let path = format!("/v1/meetings/{meeting}/{moment}");
        let a = self.request(Method::POST, &path, None);
        assert_eq!(a.status, 200, "POST {path}: {:?}", a.body);
        a.body
    }

    /// Creates a reseller whose webhooks go to `webhook_url`; answers its id.
    pub fn create_reseller(&self, webhook_url: &str) -> String {
        id_of(&self.create("resellers", &tree::reseller_body(webhook_url)))
    }

    /// Creates a dealer named `name` under `reseller_id` (a DEALER_CREATED webhook to the
    /// reseller); answers its id.
    pub fn create_dealer(&self, reseller_id: &str, name: &str) -> String {
        id_of(&self.create("dealers", &tree::dealer_body(reseller_id, name)))
    }

    /// Points the reseller's webhooks at `webhook_url`.
    pub fn set_webhook_url(&self, reseller_id: &str, webhook_url: &str) {
        let path = format!("/v1/resellers/{reseller_id}");
        let changed = self.patch_ok(&path, &json!({ "webhook_url": webhook_url }));
        assert_eq!(changed["webhook_url"], webhook_url, "{changed}");
    }

    /// A level's signing secret, `whsec_...` (`collection` is e.g. `resellers`).
    pub fn secret(&self, collection: &str, id: &str) -> String {
        secret_of(&self.get_ok(&format!("/v1/{collection}/{id}/secret")))
    }

    /// Rotates a level's signing secret; answers the new one.
    pub fn rotate_secret(&self, collection: &str, id: &str) -> String {
        let path = format!("/v1/{collection}/{id}/secret/rotate");
        let a = self.request(Method::POST, &path, None);
        assert_eq!(a.status, 200, "POST {path}: {:?}", a.body);
        secret_of(&a.body)
    }

    /// One webhook with its attempts (`GET /v1/webhooks/{id}`).
    pub fn webhook(&self, id: &str) -> Value {
        self.get_ok(&format!("/v1/webhooks/{id}"))
    }

    /// Every page of a list endpoint, followed through `next_cursor`.
    pub fn list_all(&self, path: &str, query: &[(&str, &str)]) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10_000 {
            let mut q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            q.push("limit=1000".into());
            if let Some(a) = &after {
                q.push(format!("after={a}"));
            }
            let page = self.get_ok(&format!("{path}?{}", q.join("&")));
            let data = page["data"].as_array().expect("a page has data").clone();
            out.extend(data);
            match page["next_cursor"].as_str() {
                Some(c) => after = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("{path} did not end after 10000 pages");
    }

    /// Every stored webhook matching the filters of `GET /v1/webhooks`.
    pub fn webhooks(&self, query: &[(&str, &str)]) -> Vec<Value> {
        self.list_all("/v1/webhooks", query)
    }

    /// The webhooks about one subject.
    pub fn webhooks_of(&self, subject_id: &str) -> Vec<Value> {
        self.webhooks(&[("subject_id", subject_id)])
    }

    /// How many webhooks are stored in all.
    pub fn webhook_count(&self) -> usize {
        self.webhooks(&[]).len()
    }

    /// Runs `action` and returns the webhooks about `subject_id` it added.
    pub fn new_webhooks<T>(&self, subject_id: &str, action: impl FnOnce() -> T) -> (T, Vec<Value>) {
        let before: BTreeSet<String> = self
            .webhooks_of(subject_id)
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect();
        let out = action();
        let added = self
            .webhooks_of(subject_id)
            .into_iter()
            .filter(|w| !before.contains(w["id"].as_str().unwrap()))
            .collect();
        (out, added)
    }

    /// Waits until the level has exactly `count` webhooks and none is pending any more;
    /// answers them (the list view, as the API orders them).
    pub fn settled_webhooks(&self, level_id: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + OUTPUT_TIMEOUT;
        loop {
            let page = self.get_ok(&format!("/v1/webhooks?level_id={level_id}&limit=100"));
            let webhooks = page["data"].as_array().cloned().unwrap_or_default();
            let settled =
                webhooks.len() == count && webhooks.iter().all(|w| w["status"] != "pending");
            if settled {
                return webhooks;
            }
            if Instant::now() > deadline {
                panic!(
                    "level {level_id}: expected {count} settled webhooks within \
                     {OUTPUT_TIMEOUT:?}, have {page:#}\ntidings output:\n{}",
                    self.logs()
                );
            }
            thread::sleep(POLL);
        }
    }
}

impl Api for TestServer {
    async fn create(&self, collection: &str, body: &Value) -> Value {
        TestServer::create(self, collection, body)
    }
}

fn secret_of(body: &Value) -> String {
    let secret = body["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret in {body}"));
    assert!(secret.starts_with("whsec_"), "{body}");
    secret.to_owned()
}
