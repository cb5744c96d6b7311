//! The one harness every integration test stands on.
//!
//! - [`app`]: Tidings in-process, wired as `serve` wires it ([`app::Setup`] → [`app::TestApp`]).
//! - [`server`]: the real `tidings` binary as a child process ([`server::TestServer`]), and the
//!   hermetic command every run of the binary starts from.
//! - [`stores`]: which store a test runs on (a SQLite file, or PostgreSQL with
//!   `TIDINGS_TEST_STORE=postgres`), and the stores the store tests open directly.
//! - [`tree`]: the hierarchy a test builds through the API (one builder, over either of the
//!   two above), and a model of it that says who is above whom.
//! - [`shapes`]: the seed's payload shapes and the webhook envelope, as assertions.
//! - [`tls`], [`receiver`]: a certificate authority made in the test, and a real webhook
//!   receiver (HTTPS or plain HTTP) that records what reaches it.
//! - [`examples`]: the example receivers integrators start from, run as processes.
//! - [`smtp`]: a real SMTP server process (aiosmtpd) and the e-mails it received.
//!
//! Nothing here sleeps in place of a condition: every wait polls for what it needs and gives
//! up at a deadline.

pub mod app;
pub mod examples;
pub mod receiver;
pub mod server;
pub mod shapes;
pub mod smtp;
pub mod stores;
pub mod tls;
pub mod tree;

use std::future::Future;
use std::time::{Duration, Instant};

/// The operator key every test's Tidings is started with, and that operator requests send.
pub const OPERATOR_KEY: &str = "test-operator-key-0123456789";

/// How long an awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// A loopback port that was free a moment ago (bound, then released): nothing listens on it,
/// so a connection to it is refused. Another process may take it before a server the test
/// starts binds it; the starters then try another one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls `probe` until it answers `Some`, for at most [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(PATIENCE, what, probe).await
}

/// Polls `probe` until it answers `Some`, for at most `patience`.
pub async fn eventually_within<T, F, Fut>(patience: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up after {patience:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually_within`] for tests without a runtime: blocks the thread between looks.
pub fn wait_until<T>(patience: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {patience:?} waiting for: {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// The `id` field of an API object.
pub fn id_of(v: &serde_json::Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// One value of a `/metrics` text, by its full name with labels.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}
