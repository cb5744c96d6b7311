//! Real processes for `receiver_e2e.rs`: the `tidings` binary (`serve` and `receiver`) and the
//! Node example receiver, each a child process whose output is collected and which is killed
//! when dropped, plus a certificate authority made in the test for the receiver's HTTPS.
//!
//! Nothing here sleeps for a fixed time to let something happen: every wait polls for the
//! condition it needs and gives up, with the processes' output in the message, at a deadline.

#[path = "../stores/mod.rs"]
mod stores;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::{json, Value};

/// The operator key every `tidings serve` here is started with and every API request sends.
pub const ADMIN_KEY: &str = "e2e-admin-key-0123456789";
/// What both example receivers answer to `GET /`.
pub const WELCOME: &str = "Welcome! I am ready to receive!";
/// How long a process may take to become ready (a first start on a busy machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long webhooks may take to reach a final status; with a 50 ms retry schedule all five
/// attempts of a webhook fit in well under a second.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long any one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How often waits look again.
const POLL: Duration = Duration::from_millis(25);

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

    /// The exit status, if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits until the output contains `text` `count` times or more; answers how many times
    /// it does. Panics at the deadline with the output.
    pub fn wait_for_output(&mut self, text: &str, count: usize) -> usize {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
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
                    "{} printed {text:?} {seen} times, not {count}, within {DELIVERY_TIMEOUT:?}; \
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
    fn wait_ready(&mut self, mut ready: impl FnMut(&str) -> bool) -> Result<(), String> {
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A `tidings` command with no `TIDINGS_*` setting leaking in from the test's environment,
/// logs at `info` and without colour codes, so the output can be searched as plain text.
fn tidings_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TIDINGS_") {
            command.env_remove(key);
        }
    }
    command.env("RUST_LOG", "info").env("NO_COLOR", "1");
    command
}

/// A loopback port that was free a moment ago. Another process may take it before the child
/// binds it: the starters below then try another one.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// An HTTP client that never goes through a proxy and trusts `ca_pem` (if any) besides the
/// usual roots.
pub fn client(ca_pem: Option<&str>) -> Client {
    let mut builder = Client::builder().no_proxy().timeout(REQUEST_TIMEOUT);
    if let Some(pem) = ca_pem {
        let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("CA certificate PEM");
        builder = builder.add_root_certificate(ca);
    }
    builder.build().expect("HTTP client")
}

/// A certificate authority made for one test, and a server certificate it signed for
/// `localhost` and `127.0.0.1`, written as PEM files into a directory.
pub struct TestCa {
    /// The CA certificate, given to Tidings as `TIDINGS_CA_FILE`.
    pub ca_file: PathBuf,
    pub ca_pem: String,
    /// The receiver's certificate and private key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, "Tidings receiver e2e test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();

        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();

        let ca = TestCa {
            ca_file: dir.join("ca.pem"),
            ca_pem: issuer.pem(),
            cert_file: dir.join("receiver-cert.pem"),
            key_file: dir.join("receiver-key.pem"),
        };
        std::fs::write(&ca.ca_file, &ca.ca_pem).unwrap();
        std::fs::write(&ca.cert_file, cert.pem()).unwrap();
        std::fs::write(&ca.key_file, key.serialize_pem()).unwrap();
        ca
    }
}

/// A running `tidings serve` on a SQLite file in a test's directory.
pub struct Tidings {
    process: Process,
    /// `http://127.0.0.1:PORT`
    base: String,
    client: Client,
}

impl Tidings {
    /// Starts `tidings serve` with the test settings every test here shares (store, key file,
    /// operator key, 127.0.0.1 exempt from the SSRF block, a 50 ms retry schedule) and `env`.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Tidings {
        let mut last_error = String::new();
        for _ in 0..5 {
            match Tidings::try_start(dir, env) {
                Ok(tidings) => return tidings,
                Err(e) => last_error = e,
            }
        }
        panic!("tidings serve did not start: {last_error}");
    }

    fn try_start(dir: &Path, env: &[(&str, &str)]) -> Result<Tidings, String> {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut command = tidings_command();
        command
            .arg("serve")
            .env("TIDINGS_LISTEN", format!("127.0.0.1:{port}"))
            .env("TIDINGS_DATABASE_URL", stores::database_url_in(dir))
            .env("TIDINGS_SECRET_KEY_FILE", dir.join("tidings.key"))
            .env("TIDINGS_ADMIN_KEY", ADMIN_KEY)
            .env("TIDINGS_SSRF_ALLOW", "127.0.0.1/32")
            .env("TIDINGS_RETRY_SCHEDULE", "50ms,50ms,50ms,50ms")
            .envs(env.iter().copied());
        let mut process = Process::spawn("tidings serve", command);
        let client = client(None);
        let healthz = format!("{base}/healthz");
        // The line `serve` prints once it listens on the port asked for, then an answer.
        let listening = format!("tidings listening on {base}\n");
        process.wait_ready(|output| output.contains(&listening) && healthy(&client, &healthz))?;
        Ok(Tidings {
            process,
            base,
            client,
        })
    }

    /// Everything the server printed so far, for failure messages.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Sends an API request (with the operator key) and answers the status and JSON body.
    pub fn request(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\ntidings output:\n{}", self.output()));
        let status = response.status().as_u16();
        let text = response.text().expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// GETs and expects 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(Method::GET, path, None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POSTs to a collection and expects 201; answers the created entity.
    pub fn create(&self, collection: &str, body: &Value) -> Value {
        let path = format!("/v1/{collection}");
        let (status, created) = self.request(Method::POST, &path, Some(body));
        assert_eq!(status, 201, "POST {path} {body}: {created}");
        created
    }

    /// Creates a reseller whose webhooks go to `webhook_url`; answers its id.
    pub fn create_reseller(&self, webhook_url: &str) -> String {
        let reseller = self.create(
            "resellers",
            &json!({
                "name": "Reseller E2E",
                "contact": contact("reseller"),
                "webhook_url": webhook_url,
            }),
        );
        id_of(&reseller)
    }

    /// Creates a dealer under `reseller_id` (a DEALER_CREATED webhook to the reseller);
    /// answers its id.
    pub fn create_dealer(&self, reseller_id: &str, name: &str) -> String {
        let dealer = self.create(
            "dealers",
            &json!({
                "name": name,
                "contact": contact("dealer"),
                "reseller": { "id": reseller_id },
            }),
        );
        id_of(&dealer)
    }

    /// Points the reseller's webhooks at `webhook_url`.
    pub fn set_webhook_url(&self, reseller_id: &str, webhook_url: &str) {
        let path = format!("/v1/resellers/{reseller_id}");
        let body = json!({ "webhook_url": webhook_url });
        let (status, changed) = self.request(Method::PATCH, &path, Some(&body));
        assert_eq!(status, 200, "PATCH {path} {body}: {changed}");
        assert_eq!(changed["webhook_url"], webhook_url, "{changed}");
    }

    /// The reseller's signing secret, `whsec_...`.
    pub fn secret(&self, reseller_id: &str) -> String {
        let body = self.get(&format!("/v1/resellers/{reseller_id}/secret"));
        secret_of(&body)
    }

    /// Rotates the reseller's signing secret; answers the new one.
    pub fn rotate_secret(&self, reseller_id: &str) -> String {
        let path = format!("/v1/resellers/{reseller_id}/secret/rotate");
        let (status, body) = self.request(Method::POST, &path, None);
        assert_eq!(status, 200, "POST {path}: {body}");
        secret_of(&body)
    }

    /// One webhook with its attempts (`GET /v1/webhooks/{id}`).
    pub fn webhook(&self, id: &str) -> Value {
        self.get(&format!("/v1/webhooks/{id}"))
    }

    /// Waits until the level has exactly `count` webhooks and none is pending any more;
    /// answers them (the list view, newest or oldest first as the API orders them).
    pub fn settled_webhooks(&self, level_id: &str, count: usize) -> Vec<Value> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            let page = self.get(&format!("/v1/webhooks?level_id={level_id}&limit=100"));
            let webhooks = page["data"].as_array().cloned().unwrap_or_default();
            let settled =
                webhooks.len() == count && webhooks.iter().all(|w| w["status"] != "pending");
            if settled {
                return webhooks;
            }
            if Instant::now() > deadline {
                panic!(
                    "level {level_id}: expected {count} settled webhooks within \
                     {DELIVERY_TIMEOUT:?}, have {page:#}\ntidings output:\n{}",
                    self.output()
                );
            }
            thread::sleep(POLL);
        }
    }
}

fn healthy(client: &Client, url: &str) -> bool {
    matches!(client.get(url).send(), Ok(response) if response.status() == 200)
}

fn contact(who: &str) -> Value {
    json!({ "first_name": "Erin", "last_name": "Tester", "email": format!("{who}@example.com") })
}

fn id_of(entity: &Value) -> String {
    entity["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {entity}"))
        .to_owned()
}

fn secret_of(body: &Value) -> String {
    let secret = body["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret in {body}"));
    assert!(secret.starts_with("whsec_"), "{body}");
    secret.to_owned()
}

/// Which example receiver a test runs.
#[derive(Debug, Clone, Copy)]
pub enum ReceiverKind {
    /// `tidings receiver` serving HTTPS with the test CA's certificate.
    Tidings,
    /// `node examples/receiver-node/receiver.js`, plain HTTP only.
    Node,
}

/// A running example receiver.
pub struct Receiver {
    pub process: Process,
    /// The URL its welcome page and webhooks are at, e.g. `https://127.0.0.1:PORT/`.
    pub base: String,
}

impl Receiver {
    /// Starts a receiver of `kind` verifying with `secret` on `port`; ready once its welcome
    /// page answers. An error if it exits first (e.g. the port was taken meanwhile).
    pub fn start(
        kind: ReceiverKind,
        secret: &str,
        port: u16,
        ca: Option<&TestCa>,
    ) -> Result<Receiver, String> {
        let (process, base) = match kind {
            ReceiverKind::Tidings => {
                let ca = ca.expect("tidings receiver serves HTTPS with the test CA");
                let mut command = tidings_command();
                command
                    .arg("receiver")
                    .arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--tls-cert")
                    .arg(&ca.cert_file)
                    .arg("--tls-key")
                    .arg(&ca.key_file)
                    .env("TIDINGS_RECEIVER_SECRET", secret);
                (
                    Process::spawn("tidings receiver", command),
                    format!("https://127.0.0.1:{port}/"),
                )
            }
            ReceiverKind::Node => {
                let mut command = Command::new("node");
                command
                    .arg("receiver.js")
                    .current_dir(node_receiver_dir())
                    .env("PORT", port.to_string())
                    .env("TIDINGS_RECEIVER_SECRET", secret);
                (
                    Process::spawn("node receiver.js", command),
                    format!("http://127.0.0.1:{port}/"),
                )
            }
        };
        let mut receiver = Receiver { process, base };
        let client = client(ca.map(|ca| ca.ca_pem.as_str()));
        let welcome = receiver.base.clone();
        receiver
            .process
            .wait_ready(|_| matches!(client.get(&welcome).send(), Ok(r) if r.status() == 200))?;
        Ok(receiver)
    }

    /// Starts a receiver for the reseller whose `webhook_url` is `url_at(port)`. Should the
    /// port have been taken meanwhile, it starts on another one and points the reseller's
    /// `webhook_url` there. Answers the receiver and the reseller's `webhook_url`.
    pub fn start_for(
        tidings: &Tidings,
        reseller_id: &str,
        (kind, secret, ca): (ReceiverKind, &str, Option<&TestCa>),
        mut port: u16,
        url_at: impl Fn(u16) -> String,
    ) -> (Receiver, String) {
        let mut last_error = String::new();
        for _ in 0..5 {
            match Receiver::start(kind, secret, port, ca) {
                Ok(receiver) => return (receiver, url_at(port)),
                Err(e) => last_error = e,
            }
            port = free_port();
            tidings.set_webhook_url(reseller_id, &url_at(port));
        }
        panic!("{kind:?} receiver did not start: {last_error}");
    }
}

/// `examples/receiver-node`, checked to have its dependencies installed: a missing `node` or
/// `node_modules` fails the test, it never skips it.
pub fn node_receiver_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/receiver-node");
    let node = Command::new("node").arg("--version").output();
    assert!(
        matches!(&node, Ok(out) if out.status.success()),
        "the Node example receiver test needs `node` (18 or newer) on PATH: {node:?}"
    );
    assert!(
        dir.join("node_modules/standardwebhooks/package.json")
            .is_file(),
        "examples/receiver-node/node_modules is missing: run `npm ci` in examples/receiver-node \
         (scripts/test does) before cargo test"
    );
    dir
}
