//! The example receivers integrators start from, run as processes: `tidings receiver` over
//! HTTPS with certificates made in the test, and the Node example in
//! `examples/receiver-node` over plain HTTP. Each waits until its welcome page answers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::blocking::Client;

use super::free_port;
use super::server::{tidings_command, Process, TestServer};
use super::tls::TestCa;

/// What both example receivers answer to `GET /`.
pub const WELCOME: &str = "Welcome! I am ready to receive!";
/// How long any one HTTP request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A certificate authority made for one test, and a certificate it signed for loopback,
/// written as PEM files into a directory.
pub struct Certificates {
    /// The CA certificate, given to Tidings as `TIDINGS_CA_FILE`.
    pub ca_file: PathBuf,
    pub ca_pem: String,
    /// The receiver's certificate chain and private key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Certificates {
    pub fn create(dir: &Path) -> Certificates {
        let ca = TestCa::new("Tidings receiver e2e test CA");
        let (cert_file, key_file) = ca.loopback_identity().write(dir);
        Certificates {
            ca_file: ca.write(dir),
            ca_pem: ca.pem(),
            cert_file,
            key_file,
        }
    }
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
        ca: Option<&Certificates>,
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
                    // What it received is logged at `info`, which the tests read.
                    .env("RUST_LOG", "info")
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
        tidings: &TestServer,
        reseller_id: &str,
        (kind, secret, ca): (ReceiverKind, &str, Option<&Certificates>),
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
