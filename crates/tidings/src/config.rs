//! Typed settings: defaults, then a TOML file (`--config`), then `TIDINGS_*` environment
//! variables, the environment winning (SPEC section 8a).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::schedule::RetrySchedule;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// API address (`TIDINGS_LISTEN`).
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...` (`TIDINGS_DATABASE_URL`).
    pub database_url: String,
    /// Operator API key (`TIDINGS_ADMIN_KEY`); generated once when absent.
    pub admin_key: Option<String>,
    /// Delays before attempts 2..n (`TIDINGS_RETRY_SCHEDULE`).
    pub retry_schedule: RetrySchedule,
    /// Per-attempt HTTP timeout (`TIDINGS_REQUEST_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Accept `http://` webhook URLs, for development only (`TIDINGS_ALLOW_HTTP`).
    pub allow_http: bool,
    /// Comma list of CIDRs exempt from the SSRF block (`TIDINGS_SSRF_ALLOW`).
    pub ssrf_allow: String,
    /// Extra PEM root(s) trusted for webhook TLS (`TIDINGS_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    /// `smtp://`, `smtps://` or `smtp+starttls://` (`TIDINGS_SMTP_URL`).
    pub smtp_url: Option<String>,
    /// Sender of failure e-mails (`TIDINGS_MAIL_FROM`).
    pub mail_from: String,
    /// Failure e-mail gathering window (`TIDINGS_DIGEST_WINDOW`).
    #[serde(with = "humantime_serde")]
    pub digest_window: Duration,
    /// Base of participant URLs (`TIDINGS_MEETING_BASE_URL`).
    pub meeting_base_url: String,
    /// Base64 key (32 bytes) that seals signing secrets at rest (`TIDINGS_SECRET_KEY`);
    /// every instance on one database needs the same.
    pub secret_key: Option<String>,
    /// Where the sealing key is kept when `secret_key` is not set; made on first start
    /// (`TIDINGS_SECRET_KEY_FILE`).
    pub secret_key_file: PathBuf,
    /// Attempts in flight at once (`TIDINGS_MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
    /// Attempts in flight at once to one destination (`TIDINGS_PER_DESTINATION`).
    pub per_destination: usize,
    /// Failed authentications allowed per client address per minute before it gets 429s
    /// (`TIDINGS_AUTH_FAILURE_LIMIT`).
    pub auth_failure_limit: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            database_url: "sqlite://tidings.db".into(),
            admin_key: None,
            retry_schedule: RetrySchedule::default(),
            request_timeout: Duration::from_secs(15),
            allow_http: false,
            ssrf_allow: String::new(),
            ca_file: None,
            smtp_url: None,
            mail_from: "tidings@localhost".into(),
            digest_window: Duration::from_secs(3600),
            meeting_base_url: "https://meet.example.com/meeting/".into(),
            secret_key: None,
            secret_key_file: PathBuf::from("tidings.key"),
            max_in_flight: 512,
            per_destination: 32,
            auth_failure_limit: crate::api::auth::MAX_FAILURES,
        }
    }
}

impl Settings {
    /// Loads defaults, then the TOML file if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("TIDINGS_").ignore(&[
                "receiver_listen",
                "receiver_secret",
                "receiver_tls_cert",
                "receiver_tls_key",
            ]))
            .extract()
            .map_err(Box::new)
    }
}

/// The settings table for `--help`.
pub const HELP: &str = "\
Settings (TOML file keys are the names without the TIDINGS_ prefix, in lower case;
the environment wins over the file):
  TIDINGS_LISTEN            API address                          [127.0.0.1:8080]
  TIDINGS_DATABASE_URL      sqlite://PATH or postgres://...      [sqlite://tidings.db]
  TIDINGS_ADMIN_KEY         operator API key                     [generated once, printed]
  TIDINGS_RETRY_SCHEDULE    delays before attempts 2..n          [1m,10m,1h,24h]
  TIDINGS_REQUEST_TIMEOUT   per-attempt HTTP timeout             [15s]
  TIDINGS_ALLOW_HTTP        accept http:// webhook URLs (dev)    [false]
  TIDINGS_SSRF_ALLOW        CIDRs exempt from the SSRF block     [none]
  TIDINGS_CA_FILE           extra PEM roots for webhook TLS      [none]
  TIDINGS_SMTP_URL          smtp://, smtps://, smtp+starttls://  [none: e-mails queue]
  TIDINGS_MAIL_FROM         sender of failure e-mails            [tidings@localhost]
  TIDINGS_DIGEST_WINDOW     failure e-mail gathering window      [1h]
  TIDINGS_MEETING_BASE_URL  base of participant URLs             [https://meet.example.com/meeting/]
  TIDINGS_SECRET_KEY        base64 32-byte key sealing signing secrets [from the key file]
  TIDINGS_SECRET_KEY_FILE   where that key is kept (made on first start) [tidings.key]
  TIDINGS_MAX_IN_FLIGHT     delivery attempts in flight at once  [512]
  TIDINGS_PER_DESTINATION   attempts in flight to one destination [32]
  TIDINGS_AUTH_FAILURE_LIMIT failed authentications per address per minute before 429s [20]
  RUST_LOG                  log filter, e.g. info or tidings=debug [info]";
