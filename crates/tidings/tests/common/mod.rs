//! What the black-box tests share: a [`TestServer`] that runs the real `tidings` binary on a
//! temporary SQLite file and a free loopback port, JSON helpers to talk to it, and a [`Tree`]
//! that builds the standard hierarchy (reseller → dealer → company → two sites, a package,
//! users, a direct and a personal meeting) with a distinct `webhook_url` on every level.
//!
//! Nothing here sleeps to wait for a result: the server is ready when it prints its
//! "listening" line, and every wait has a deadline.

#![allow(dead_code)] // each test binary uses a different part of this module

#[path = "../stores/mod.rs"]
pub mod stores;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

/// How long the binary may take to print its "listening" line.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long any one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The operator key the tests start the server with (and send, ready for when auth lands).
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
/// How many log lines to keep for failure messages.
const LOG_TAIL: usize = 200;

/// A running `tidings serve`. Dropping it kills the process.
pub struct TestServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub db_path: PathBuf,
    client: Client,
    logs: Arc<Mutex<VecDeque<String>>>,
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

    /// Starts a server on the database file `db` (kept by the caller, e.g. across a restart).
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
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidings"));
        // Anything the server keeps beside its database (the key that seals signing secrets,
        // any relative path) stays in the test's directory, never in the work tree.
        cmd.arg("serve").current_dir(dir);
        // Hermetic: no setting leaks in from the environment the tests run in.
        for (k, _) in std::env::vars() {
            if k.starts_with("TIDINGS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("TIDINGS_LISTEN", format!("127.0.0.1:{port}"))
            .env("TIDINGS_DATABASE_URL", stores::database_url_in(dir))
            .env("TIDINGS_ADMIN_KEY", ADMIN_KEY)
            .env("TIDINGS_SECRET_KEY_FILE", dir.join("tidings.key"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawning tidings: {e}"))?;
        let logs = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        // Both pipes are drained for the life of the process, so the server never blocks on
        // a full pipe; the last lines are kept for failure messages.
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_reader(stdout, logs.clone(), Some(ready_tx));
        spawn_reader(stderr, logs.clone(), None);
        let line = match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail: Vec<String> = logs.lock().unwrap().iter().cloned().collect();
                return Err(format!(
                    "no listening line ({e:?}); output:\n{}",
                    tail.join("\n")
                ));
            }
        };
        let base = line
            .trim()
            .strip_prefix("tidings listening on ")
            .ok_or_else(|| format!("unexpected line {line:?}"))?
            .to_owned();
        if base != format!("http://127.0.0.1:{port}") {
            let _ = child.kill();
            return Err(format!("listening on {base}, asked for port {port}"));
        }
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("HTTP client");
        Ok(TestServer {
            child,
            base,
            db_path: db.to_owned(),
            client,
            logs,
            _dir: None,
        })
    }

    /// SIGKILLs the process (no graceful shutdown) and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id, to signal it from another thread.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the server printed, for failure messages.
    pub fn logs(&self) -> String {
        let logs = self.logs.lock().unwrap();
        logs.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request with a raw body (or none) and returns the answer.
    pub fn raw(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        let mut req = self
            .client
            .request(method.clone(), self.url(path))
            .bearer_auth(ADMIN_KEY);
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
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_reader(
    pipe: impl std::io::Read + Send + 'static,
    logs: Arc<Mutex<VecDeque<String>>>,
    ready: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        let mut ready = ready;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("tidings listening on ") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(line.clone());
                }
            }
            let mut logs = logs.lock().unwrap();
            if logs.len() == LOG_TAIL {
                logs.pop_front();
            }
            logs.push_back(line);
        }
    });
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    l.local_addr().expect("probe address").port()
}

// ---------------------------------------------------------------------------------------------
// Webhook helpers

/// `(level type, level id, url)` of a webhook, the tuple routing assertions compare.
pub type Routed = (String, String, String);

pub fn routed(w: &Value) -> Routed {
    (
        w["level"]["type"].as_str().expect("level.type").to_owned(),
        w["level"]["id"].as_str().expect("level.id").to_owned(),
        w["url"].as_str().expect("url").to_owned(),
    )
}

/// Asserts `webhooks` are the webhooks of one event of type `event_type` and go to exactly
/// the `expected` levels with those URL snapshots.
pub fn assert_routed(what: &str, webhooks: &[Value], event_type: &str, expected: &[&Level]) {
    let got: BTreeSet<Routed> = webhooks.iter().map(routed).collect();
    let want: BTreeSet<Routed> = expected.iter().map(|l| l.routed()).collect();
    assert_eq!(
        got, want,
        "{what}: {event_type} went to the wrong levels; webhooks: {webhooks:#?}"
    );
    assert_eq!(
        webhooks.len(),
        expected.len(),
        "{what}: one webhook per level"
    );
    for w in webhooks {
        assert_eq!(w["type"], event_type, "{what}: {w:#}");
        assert_eq!(w["payload"]["type"], event_type, "{what}: {w:#}");
    }
    let events: BTreeSet<&str> = webhooks
        .iter()
        .map(|w| w["event_id"].as_str().unwrap())
        .collect();
    assert!(
        events.len() <= 1,
        "{what}: the webhooks come from more than one event: {events:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Payload shapes

/// Compares the shape of `actual` with `expected`: the same keys in every object, recursively;
/// each element of an array of objects has every key any element of the seed's array has
/// (a seed participant without `phone` and another with it: every participant has `phone`);
/// scalars of the same JSON type, or `null` (no value set). Arrays must not be empty (so
/// there is something to compare); an empty array of scalars (`sessions: []`) fits. Returns
/// every difference as `path: what`.
pub fn shape_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_at("data", expected, actual, false, &mut out);
    out
}

/// [`shape_diff`] for sparse entities: an empty array of objects fits too (a site with no
/// users, a meeting with no participants).
pub fn key_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_at("data", expected, actual, true, &mut out);
    out
}

/// A seed example's `data` with the level settings every level may carry (`webhook_url`,
/// `notification_contact`; the seed shows each on some levels only) added where missing.
pub fn seed_data(name: &str) -> Value {
    let mut data = seed(name)["data"].clone();
    if matches!(name, "dealer" | "company" | "site") {
        let d = data.as_object_mut().expect("an object");
        d.entry("webhook_url")
            .or_insert(json!("https://myserver.com/send/webhook/here"));
        d.entry("notification_contact")
            .or_insert(json!({"email": "notify@weseedo.nl"}));
    }
    data
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The union of the seed's array elements: every key any element has, merged recursively.
fn union_of(elements: &[Value]) -> Value {
    let mut merged = Value::Null;
    for e in elements {
        merge_into(&mut merged, e);
    }
    merged
}

fn merge_into(into: &mut Value, v: &Value) {
    match (into, v) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, bv) in b {
                merge_into(a.entry(k.clone()).or_insert(Value::Null), bv);
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b.iter().cloned()),
        (slot @ Value::Null, v) => *slot = v.clone(),
        _ => {}
    }
}

fn diff_at(path: &str, expected: &Value, actual: &Value, sparse: bool, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let ek: BTreeSet<&String> = e.keys().collect();
            let ak: BTreeSet<&String> = a.keys().collect();
            for k in ek.difference(&ak) {
                out.push(format!("{path}.{k}: missing"));
            }
            for k in ak.difference(&ek) {
                out.push(format!("{path}.{k}: not in the seed"));
            }
            for k in ek.intersection(&ak) {
                diff_at(&format!("{path}.{k}"), &e[*k], &a[*k], sparse, out);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            let objects = e.iter().any(|v| v.is_object() || v.is_array());
            if !objects {
                let types: BTreeSet<&str> = e.iter().map(kind_of).collect();
                for (i, v) in a.iter().enumerate() {
                    if !types.contains(kind_of(v)) {
                        out.push(format!(
                            "{path}[{i}]: a {}, the seed has {types:?}",
                            kind_of(v)
                        ));
                    }
                }
                return;
            }
            if a.is_empty() && !sparse {
                out.push(format!("{path}: empty, the seed has {} elements", e.len()));
                return;
            }
            let element = union_of(e);
            for (i, v) in a.iter().enumerate() {
                diff_at(&format!("{path}[{i}]"), &element, v, sparse, out);
            }
        }
        // No value set: `null` where the seed shows a value (never for a list).
        (e, Value::Null) if !e.is_array() => {}
        (e, a) if kind_of(e) != kind_of(a) => {
            out.push(format!(
                "{path}: a {}, the seed has a {}",
                kind_of(a),
                kind_of(e)
            ));
        }
        _ => {}
    }
}

/// A seed example from `tests/fixtures/seed_{name}.json`.
pub fn seed(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("seed_{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Asserts the envelope of a webhook's payload: exactly `id, created, attempt, type, data`,
/// a 24-hex id equal to the webhook's, the seed's timestamp format, and the attempt number:
/// 1 before any attempt was made. (The dispatcher runs beside these tests and the tests'
/// URLs are unreachable, so a webhook may already have failed its first attempt; the API
/// then shows the body of the next one.)
pub fn assert_envelope(webhook: &Value) {
    let p = &webhook["payload"];
    let keys: BTreeSet<&str> = p
        .as_object()
        .expect("payload is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "created", "attempt", "type", "data"]),
        "{p:#}"
    );
    let id = p["id"].as_str().expect("payload.id is a string");
    assert!(is_id(id), "payload.id {id:?} is not 24 lowercase hex");
    assert_eq!(p["id"], webhook["id"], "payload.id is the webhook's id");
    let created = p["created"].as_str().expect("payload.created is a string");
    assert!(
        is_seed_timestamp(created),
        "payload.created {created:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ"
    );
    let made = webhook["attempt_count"].as_u64().expect("attempt_count");
    let next = match webhook["status"].as_str() {
        Some("pending") => made + 1,
        _ => made.max(1),
    };
    assert_eq!(p["attempt"], json!(next), "{webhook:#}");
    if made == 0 {
        assert_eq!(
            p["attempt"],
            json!(1),
            "the first attempt is attempt 1: {p:#}"
        );
    }
    assert_eq!(p["type"], webhook["type"]);
}

/// 24 lowercase hex characters.
pub fn is_id(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`
pub fn is_seed_timestamp(s: &str) -> bool {
    const PATTERN: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == PATTERN.len()
        && s.bytes().zip(PATTERN).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            other => c == *other,
        })
}

// ---------------------------------------------------------------------------------------------
// The standard hierarchy

/// A receiving level of the tree: its type, id and the `webhook_url` it was given.
#[derive(Debug, Clone)]
pub struct Level {
    pub level: &'static str,
    pub id: String,
    pub url: String,
}

impl Level {
    pub fn routed(&self) -> Routed {
        (self.level.to_owned(), self.id.clone(), self.url.clone())
    }
}

/// reseller → dealer → company → sites A and B, with a package on the company; a user owned by
/// the company and linked to both sites, a user owned by the dealer; a direct meeting and a
/// personal meeting (at site A), both created by the company's user. Every level has its own
/// `https://` webhook URL.
#[derive(Debug, Clone)]
pub struct Tree {
    pub reseller: Level,
    pub dealer: Level,
    pub company: Level,
    pub site_a: Level,
    pub site_b: Level,
    pub package: String,
    pub company_user: String,
    pub dealer_user: String,
    pub direct_meeting: String,
    pub personal_meeting: String,
    /// The 201 answer of every create, by id.
    pub created: BTreeMap<String, Value>,
}

/// A distinct `https://` webhook URL that no delivery can reach: an IP literal on loopback,
/// which the SSRF guard refuses before connecting. So the tests make no DNS lookup and send
/// nothing anywhere, whatever the dispatcher does with the webhooks they create.
pub fn hook_url(name: &str) -> String {
    format!("https://127.0.0.1:9/hooks/{name}")
}

/// A contact in the seed's shape (phone and language included).
pub fn contact(first: &str, email: &str) -> Value {
    json!({
        "first_name": first, "last_name": "Lastname", "email": email,
        "phone": "+31612345678", "language": "nl"
    })
}

/// A site body with every optional field of the seed's site example.
pub fn site_body(name: &str, company: &str, webhook_url: Option<&str>) -> Value {
    let mut b = json!({
        "name": name,
        "company": {"id": company},
        "logo": "https://cdn.example.test/logo.png",
        "videochat_font_type": "Roboto",
        "videochat_text_color": "#000000",
        "email_invite_text": "Hereby I send you the confirmation for our online video call.",
        "email_cancel_text": "In case of a rescheduled appointment you will receive a new invitation.",
        "email_hardwaretest_text": "Using the link below you can test your hardware.",
        "email_enable_hardwaretest": false
    });
    if let Some(u) = webhook_url {
        b["webhook_url"] = json!(u);
    }
    b
}

/// A user owned by `owner` (`company`, `dealer` or `reseller`), linked to `sites`.
pub fn user_body(first: &str, owner_type: &str, owner: &str, sites: &[&str]) -> Value {
    json!({
        "first_name": first, "last_name": "Lastname",
        "email": format!("{}@tidings.test", first.to_lowercase()),
        "photo": "https://cdn.example.test/photo.png",
        "locale": "nl", "role": "agent", "status": "online",
        "entity": {"type": owner_type, "id": owner},
        "sites": sites.iter().map(|s| json!({"id": s})).collect::<Vec<_>>()
    })
}

/// A direct meeting: an agent and a visitor known by phone, as in the seed's example.
pub fn direct_meeting_body(company: &str, agent: &str) -> Value {
    json!({
        "company": {"id": company},
        "created_by": {"id": agent},
        "stream_camera_two_way": true,
        "participants": [{"user": agent}, {"phone": "+3112312312"}]
    })
}

/// A personal meeting at `site`: an agent and two visitors, as in the seed's example.
pub fn personal_meeting_body(company: &str, site: &str, agent: &str) -> Value {
    json!({
        "company": {"id": company},
        "site": {"id": site},
        "created_by": {"id": agent},
        "is_appointment": true,
        "room_available_from": "2030-03-18T14:15:00.000Z",
        "room_available_till": "2030-03-18T15:15:00.000Z",
        "subject": "Meeting",
        "invitation": "On the specified date and time you can click the link in this email.",
        "participants": [
            {"user": agent},
            {"name": "Participant 1", "email": "visitor1@participant.test", "phone": "+31612312312"},
            {"name": "Participant 2", "email": "visitor2@participant.test", "phone": "+31612312313"}
        ]
    })
}

impl Tree {
    /// Builds the tree through the API, every step checked.
    pub fn build(s: &TestServer) -> Tree {
        let mut created = BTreeMap::new();
        let mut make = |collection: &str, body: Value| -> String {
            let v = s.create(collection, &body);
            let id = v["id"]
                .as_str()
                .expect("created entity has an id")
                .to_owned();
            assert!(is_id(&id), "{collection} id {id:?}");
            created.insert(id.clone(), v);
            id
        };
        let url = |level: &str| hook_url(level);

        let reseller = make(
            "resellers",
            json!({"name": "Reseller 1", "contact": contact("Reseller", "reseller1@tidings.test"),
                   "webhook_url": url("reseller")}),
        );
        let package = make(
            "packages",
            json!({"name": "professional",
                   "features": ["agent_create_appointment", "send_file", "screenshot", "chat"]}),
        );
        let dealer = make(
            "dealers",
            json!({"name": "Dealer 1", "contact": contact("Dealer", "dealer1@tidings.test"),
                   "reseller": {"id": reseller}, "webhook_url": url("dealer")}),
        );
        let company = make(
            "companies",
            json!({"name": "Company 1", "contact": contact("Company", "contact1@tidings.test"),
                   "dealer": {"id": dealer}, "package": {"id": package},
                   "webhook_url": url("company")}),
        );
        let site_a = make("sites", site_body("Site A", &company, Some(&url("site-a"))));
        let site_b = make("sites", site_body("Site B", &company, Some(&url("site-b"))));
        let company_user = make(
            "users",
            user_body("Agent", "company", &company, &[&site_a, &site_b]),
        );
        let dealer_user = make("users", user_body("Dealeragent", "dealer", &dealer, &[]));
        let direct_meeting = make("meetings", direct_meeting_body(&company, &company_user));
        let personal_meeting = make(
            "meetings",
            personal_meeting_body(&company, &site_a, &company_user),
        );
        let level = |level: &'static str, id: &str, u: &str| Level {
            level,
            id: id.to_owned(),
            url: url(u),
        };
        Tree {
            reseller: level("reseller", &reseller, "reseller"),
            dealer: level("dealer", &dealer, "dealer"),
            company: level("company", &company, "company"),
            site_a: level("site", &site_a, "site-a"),
            site_b: level("site", &site_b, "site-b"),
            package,
            company_user,
            dealer_user,
            direct_meeting,
            personal_meeting,
            created,
        }
    }
}
