//! Typed settings: defaults, then a TOML file (`--config`), then `TIDINGS_*` environment
//! variables, the environment winning (docs/contract.md#configuration).

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
    /// Back-pressure: how long an API change waits for the dispatcher to have room for its
    /// webhooks before it writes them to the queue anyway (`TIDINGS_BACKPRESSURE_WAIT`;
    /// `0s`: never waits).
    #[serde(with = "humantime_serde")]
    pub backpressure_wait: Duration,
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection stays open (`TIDINGS_API_HEADER_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub api_header_timeout: Duration,
    /// How long a request may take from its headers to its answer, body included
    /// (`TIDINGS_API_REQUEST_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub api_request_timeout: Duration,
    /// API connections open at once; those beyond are answered 503 and closed
    /// (`TIDINGS_API_MAX_CONNECTIONS`).
    pub api_max_connections: usize,
    /// How long a request waits for a PostgreSQL connection before it answers 503
    /// (`TIDINGS_STORE_TIMEOUT`).
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    /// PostgreSQL connections for write transactions, per instance
    /// (`TIDINGS_DATABASE_CONNECTIONS`; reads have 8 more of their own).
    pub database_connections: usize,
    /// The most the SQLite database may grow to, in MiB; writes beyond answer 503 "the disk
    /// is full" (`TIDINGS_SQLITE_MAX_MIB`; none: as far as the disk allows).
    pub sqlite_max_mib: Option<u64>,
    /// How long finished webhooks, their events and sent e-mails are kept
    /// (`TIDINGS_RETENTION`; `off` keeps everything).
    pub retention: Retention,
    /// Failed authentications allowed per client address per minute before it gets 429s
    /// (`TIDINGS_AUTH_FAILURE_LIMIT`).
    pub auth_failure_limit: u32,
}

/// How long finished deliveries are kept: a duration (`30d`, `12h`, `2s`) or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

impl Default for Retention {
    fn default() -> Self {
        Retention(Some(Duration::from_secs(30 * 24 * 3600)))
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{}", humantime::format_duration(d)),
            None => f.write_str("off"),
        }
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Retention(None));
        }
        match humantime::parse_duration(s) {
            Ok(d) if !d.is_zero() => Ok(Retention(Some(d))),
            Ok(_) => Err("a retention of 0 would delete webhooks as they finish; use `off` to keep everything".into()),
            Err(e) => Err(format!("`{s}` is not a retention: a duration like 30d or 12h, or off ({e})")),
        }
    }
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
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
            backpressure_wait: Duration::from_secs(2),
            api_header_timeout: Duration::from_secs(10),
            api_request_timeout: Duration::from_secs(30),
            api_max_connections: 1024,
            store_timeout: Duration::from_secs(5),
            database_connections: crate::store::WRITE_CONNECTIONS,
            sqlite_max_mib: None,
            retention: Retention::default(),
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

/// The settings table for `--help`, each default read from [`Settings::default`].
pub fn help() -> String {
    let d = Settings::default();
    let dur = |x: Duration| humantime::format_duration(x).to_string();
    let none = || "none".to_owned();
    let rows: Vec<(&str, &str, String)> = vec![
        ("TIDINGS_LISTEN", "API address", d.listen.to_string()),
        ("TIDINGS_DATABASE_URL", "sqlite://PATH or postgres://...", d.database_url.clone()),
        ("TIDINGS_ADMIN_KEY", "operator API key", "generated once, printed".into()),
        ("TIDINGS_RETRY_SCHEDULE", "delays before attempts 2..n", d.retry_schedule.to_string()),
        ("TIDINGS_REQUEST_TIMEOUT", "per-attempt HTTP timeout", dur(d.request_timeout)),
        ("TIDINGS_ALLOW_HTTP", "accept http:// webhook URLs (dev)", d.allow_http.to_string()),
        ("TIDINGS_SSRF_ALLOW", "CIDRs exempt from the SSRF block", none()),
        ("TIDINGS_CA_FILE", "extra PEM roots for webhook TLS", none()),
        ("TIDINGS_SMTP_URL", "smtp://, smtps://, smtp+starttls://", "none: e-mails queue".into()),
        ("TIDINGS_MAIL_FROM", "sender of failure e-mails", d.mail_from.clone()),
        ("TIDINGS_DIGEST_WINDOW", "failure e-mail gathering window", dur(d.digest_window)),
        ("TIDINGS_MEETING_BASE_URL", "base of participant URLs", d.meeting_base_url.clone()),
        ("TIDINGS_SECRET_KEY", "base64 32-byte key sealing signing secrets", "from the key file".into()),
        ("TIDINGS_SECRET_KEY_FILE", "where that key is kept (made on first start)", d.secret_key_file.display().to_string()),
        ("TIDINGS_MAX_IN_FLIGHT", "delivery attempts in flight at once", d.max_in_flight.to_string()),
        ("TIDINGS_PER_DESTINATION", "attempts in flight to one destination", d.per_destination.to_string()),
        ("TIDINGS_BACKPRESSURE_WAIT", "longest an API change waits for delivery room", dur(d.backpressure_wait)),
        ("TIDINGS_API_HEADER_TIMEOUT", "time to send request headers; idle keep-alive", dur(d.api_header_timeout)),
        ("TIDINGS_API_REQUEST_TIMEOUT", "time from headers to answer, body included", dur(d.api_request_timeout)),
        ("TIDINGS_API_MAX_CONNECTIONS", "API connections at once (more: 503)", d.api_max_connections.to_string()),
        ("TIDINGS_STORE_TIMEOUT", "wait for a PostgreSQL connection (then 503)", dur(d.store_timeout)),
        ("TIDINGS_DATABASE_CONNECTIONS", "PostgreSQL connections for writes, per instance", d.database_connections.to_string()),
        ("TIDINGS_SQLITE_MAX_MIB", "most the SQLite database may grow to", d.sqlite_max_mib.map_or_else(none, |m| m.to_string())),
        ("TIDINGS_AUTH_FAILURE_LIMIT", "failed authentications per address per minute before 429s", d.auth_failure_limit.to_string()),
        ("TIDINGS_RETENTION", "keep finished webhooks, their events and sent e-mails this long; off keeps all", d.retention.to_string()),
        ("RUST_LOG", "log filter, e.g. info or tidings=debug", "info".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "export OpenTelemetry spans over OTLP/HTTP there (and the other standard OTEL_* variables)", "none: no traces".into()),
    ];
    let mut out = String::from(
        "Settings (TOML file keys are the names without the TIDINGS_ prefix, in lower case;\n\
         the environment wins over the file):\n",
    );
    for (name, what, default) in rows {
        out.push_str(&format!("  {name:<28} {what} [{default}]\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` names every setting, with the default `Settings::default` gives it.
    #[test]
    fn help_lists_every_setting_with_its_default() {
        let help = help();
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        for key in defaults.as_object().unwrap().keys() {
            let name = format!("TIDINGS_{}", key.to_uppercase());
            assert!(
                help.contains(&format!("  {name} ")),
                "{name} missing from --help"
            );
        }
        assert!(help.contains("TIDINGS_REQUEST_TIMEOUT"));
        assert!(help
            .lines()
            .any(|l| l.contains("TIDINGS_MAX_IN_FLIGHT") && l.ends_with("[512]")));
        assert!(help
            .lines()
            .any(|l| l.contains("TIDINGS_RETRY_SCHEDULE") && l.ends_with("[1m,10m,1h,1day]")));
    }

    #[test]
    fn retention_is_a_duration_or_off_and_never_zero() {
        assert_eq!(
            "30d".parse::<Retention>().unwrap(),
            Retention(Some(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(
            " 2s ".parse::<Retention>().unwrap(),
            Retention(Some(Duration::from_secs(2)))
        );
        assert_eq!("OFF".parse::<Retention>().unwrap(), Retention(None));
        assert!("0s".parse::<Retention>().unwrap_err().contains("use `off`"));
        assert!("soon".parse::<Retention>().is_err());
        assert_eq!(Retention::default().to_string(), "30days");
        assert_eq!(Retention(None).to_string(), "off");
    }

    #[test]
    fn retention_reads_from_settings_and_round_trips() {
        let load = |toml: &str| {
            Figment::from(Serialized::defaults(Settings::default()))
                .merge(Toml::string(toml))
                .extract::<Settings>()
                .map_err(Box::new)
        };
        assert_eq!(load("").unwrap().retention, Retention::default());
        assert_eq!(
            load("retention = \"off\"").unwrap().retention,
            Retention(None)
        );
        assert_eq!(
            load("retention = \"12h\"").unwrap().retention,
            Retention(Some(Duration::from_secs(12 * 3600)))
        );
        assert!(load("retention = \"never\"").is_err());
    }
}
