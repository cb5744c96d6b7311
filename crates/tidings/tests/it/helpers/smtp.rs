//! A real SMTP server: an aiosmtpd process writing every message it accepts to a Maildir,
//! and the messages read back from it, decoded by Python's `email` package.
//!
//! aiosmtpd comes from `TIDINGS_TEST_AIOSMTPD` (scripts/test installs it in target/pyenv).
//! Without it the tests fail with a message saying how to get it; they never skip.

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long an awaited e-mail may take: longer than other waits, since a digest waits for
/// its window and a failed SMTP send for its backoff.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// [`super::eventually`] with the e-mail tests' [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    super::eventually_within(PATIENCE, what, probe).await
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
    maildir: PathBuf,
    python: PathBuf,
    port: u16,
    /// The directory of a Maildir of the server's own, removed with it.
    _dir: Option<tempfile::TempDir>,
}

impl SmtpServer {
    /// Starts aiosmtpd on a free port, delivering into a Maildir of its own.
    pub async fn start_fresh() -> SmtpServer {
        SmtpServer::start_on(super::free_port()).await
    }

    /// Starts aiosmtpd on `port`, delivering into a Maildir of its own.
    pub async fn start_on(port: u16) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = SmtpServer::start(port, &dir.path().join("maildir")).await;
        server._dir = Some(dir);
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

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
            maildir: maildir.to_owned(),
            python,
            port,
            _dir: None,
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
