//! The mailer: one loop that turns failed webhooks into e-mails and sends them over SMTP.
//!
//! Each round it (1) places failures that are in no e-mail yet by the digest rule and looks
//! up the recipient of each e-mail it opened, (2) if SMTP is configured, claims due e-mails
//! one at a time with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several instances
//! never send one e-mail twice in normal operation) and sends each, (3) sleeps until the next
//! e-mail is due or the next look for failures.
//!
//! An SMTP failure (server down, refused connection, a 4xx or 5xx reply) never loses the
//! e-mail: it stays queued and is tried again after a backoff that doubles from
//! `backoff_first` up to `backoff_max`. Without `TIDINGS_SMTP_URL` e-mails stay queued.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio_util::sync::CancellationToken;

use super::compose;
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{EntityId, Millis};
use crate::metrics::Metrics;
use crate::store::Store;

/// Timings of the mailer. Tests shorten them.
#[derive(Debug, Clone)]
pub struct MailerConfig {
    /// The digest window (`TIDINGS_DIGEST_WINDOW`); zero sends one e-mail per webhook.
    pub window: Duration,
    /// How often to look for new failures.
    pub poll: Duration,
    /// Wait after the first failed send; it doubles with each further failure...
    pub backoff_first: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
    /// Longest SMTP exchange, connect to QUIT; the claim's lease is this plus a margin.
    pub send_timeout: Duration,
}

impl Default for MailerConfig {
    fn default() -> Self {
        MailerConfig {
            window: Duration::from_secs(3600),
            poll: Duration::from_secs(1),
            backoff_first: Duration::from_secs(10),
            backoff_max: Duration::from_secs(600),
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// Failures placed into e-mails per transaction.
const ASSIGN_BATCH: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("TIDINGS_SMTP_URL: {0}")]
    SmtpUrl(String),
    #[error("TIDINGS_MAIL_FROM `{0}` is not an e-mail address: {1}")]
    MailFrom(String, String),
}

/// Where e-mails go: the SMTP transport and the sender.
struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// The URL without its password, for logs.
    shown: String,
}

pub struct Mailer {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    smtp: Option<Smtp>,
    from: Mailbox,
    config: MailerConfig,
    /// Names this instance's claims in the store.
    owner: String,
}

impl Mailer {
    /// A mailer sending through `settings.smtp_url` (none: e-mails stay queued) from
    /// `settings.mail_from`, gathering with `settings.digest_window`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        settings: &Settings,
    ) -> Result<Self, MailerError> {
        let config = MailerConfig {
            window: settings.digest_window,
            ..MailerConfig::default()
        };
        let smtp = match settings
            .smtp_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            Some(url) => Some(Smtp {
                transport: transport(url, config.send_timeout)?,
                shown: crate::startup::redact(url),
            }),
            None => None,
        };
        let from: Mailbox =
            settings
                .mail_from
                .parse()
                .map_err(|e: lettre::address::AddressError| {
                    MailerError::MailFrom(settings.mail_from.clone(), e.to_string())
                })?;
        Ok(Mailer {
            store,
            clock,
            metrics,
            smtp,
            from,
            config,
            owner: format!("mailer-{}", &EntityId::generate(Millis(0)).as_str()[12..]),
        })
    }

    /// Changes timings (tests use milliseconds).
    pub fn configure(mut self, change: impl FnOnce(&mut MailerConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Runs until `shutdown` fires. An e-mail being sent then is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        match &self.smtp {
            Some(s) => {
                tracing::info!(smtp = %s.shown, from = %self.from, window = ?self.config.window, "mailer started")
            }
            None => tracing::warn!(
                "TIDINGS_SMTP_URL is not set: failure e-mails are queued (see GET /v1/emails) but not sent"
            ),
        }
        if self.store.backend() == "sqlite" {
            // One process owns a SQLite file: claims left by a previous run are over.
            match self.store.release_all_emails(self.clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    count = n,
                    "e-mails were being sent when the last run stopped; they are due again now"
                ),
                Err(e) => tracing::error!(error = %e, "releasing e-mail claims failed"),
            }
        }
        while !shutdown.is_cancelled() {
            let wait = match self.round(&shutdown).await {
                Ok(wait) => {
                    self.metrics.mailer_round();
                    wait
                }
                Err(e) => {
                    tracing::error!(error = %e, "mailer round failed; retrying in 1s");
                    Duration::from_secs(1)
                }
            };
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        tracing::info!("mailer stopped");
    }

    /// One round; returns how long to sleep before the next.
    async fn round(&self, shutdown: &CancellationToken) -> crate::store::Result<Duration> {
        let now = self.clock.now();
        let opened = self
            .store
            .assign_failures(now, self.config.window, ASSIGN_BATCH)
            .await?;
        if !opened.is_empty() {
            self.metrics.emails_queued(opened.len() as u64);
        }
        for id in &opened {
            self.note_recipient(id, now).await?;
        }
        let Some(smtp) = &self.smtp else {
            return Ok(self.config.poll);
        };
        let lease = self.config.send_timeout + Duration::from_secs(30);
        while !shutdown.is_cancelled() {
            let now = self.clock.now();
            let claimed = self
                .store
                .claim_emails(&self.owner, now, now.plus(lease), 1)
                .await?;
            let Some(id) = claimed.into_iter().next() else {
                break;
            };
            self.send(smtp, &id).await?;
        }
        let now = self.clock.now();
        Ok(match self.store.next_email_due_at().await? {
            Some(t) => Duration::from_millis((t.0 - now.0).max(0) as u64).min(self.config.poll),
            None => self.config.poll,
        })
    }

    /// Looks up a new e-mail's recipient, or records that there is none.
    async fn note_recipient(&self, id: &EntityId, now: Millis) -> crate::store::Result<()> {
        let Some((email, _)) = self.store.email_content(id).await? else {
            return Ok(());
        };
        let mut tx = self.store.read().await?;
        match super::recipient(tx.as_mut(), &email.level_id).await? {
            Some(r) => self.store.set_email_recipient(id, &r, now).await,
            None => {
                if self.store.email_no_recipient(id, None, now).await? {
                    warn_no_recipient(&email.level_id, &email.url, id);
                }
                Ok(())
            }
        }
    }

    /// Sends one claimed e-mail and records the outcome.
    async fn send(&self, smtp: &Smtp, id: &EntityId) -> crate::store::Result<()> {
        let Some((email, webhooks)) = self.store.email_content(id).await? else {
            return Ok(());
        };
        let recipient = {
            let mut tx = self.store.read().await?;
            super::recipient(tx.as_mut(), &email.level_id).await?
        };
        let Some(recipient) = recipient else {
            if self
                .store
                .email_no_recipient(id, Some(&self.owner), self.clock.now())
                .await?
            {
                warn_no_recipient(&email.level_id, &email.url, id);
            }
            return Ok(());
        };
        let composed = match &email.disabled_reason {
            Some(reason) => compose::disabled(&email.url, &email.level_id, reason),
            None => compose::compose(&email.url, &webhooks),
        };
        let result = match self.message(&recipient, &composed) {
            // The whole exchange is bounded, so it always ends within the claim's lease.
            Ok(message) => {
                match tokio::time::timeout(self.config.send_timeout, smtp.transport.send(message))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(smtp_error(&e)),
                    Err(_) => Err(format!(
                        "the SMTP exchange took longer than {:?}",
                        self.config.send_timeout
                    )),
                }
            }
            Err(e) => Err(e),
        };
        let now = self.clock.now();
        match result {
            Ok(()) => {
                self.metrics.email_sent();
                let held = self
                    .store
                    .email_sent(&self.owner, id, &recipient, &composed.subject, now)
                    .await?;
                if !held {
                    tracing::warn!(email = %id, "e-mail sent after its claim ended; it may be sent twice");
                }
                tracing::info!(email = %id, to = %recipient, webhooks = webhooks.len(), subject = %composed.subject, "failure e-mail sent");
            }
            Err(error) => {
                self.metrics.email_failed();
                let wait = backoff(
                    email.attempts + 1,
                    self.config.backoff_first,
                    self.config.backoff_max,
                );
                tracing::warn!(email = %id, to = %recipient, attempt = email.attempts + 1, %error, retry_in = ?wait, "sending a failure e-mail failed; it stays queued");
                self.store
                    .email_not_sent(&self.owner, id, &error, now.plus(wait), now)
                    .await?;
            }
        }
        Ok(())
    }

    fn message(&self, to: &str, c: &compose::Composed) -> Result<Message, String> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| format!("recipient `{to}` is not an e-mail address: {e}"))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(c.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(c.body.clone())
            .map_err(|e| format!("building the e-mail failed: {e}"))
    }
}

fn warn_no_recipient(level_id: &EntityId, url: &str, email: &EntityId) {
    tracing::warn!(level = %level_id, %url, %email, "webhooks failed but no level from the URL's owner up has a notification_contact; recorded as no_recipient");
}

/// The error of a failed SMTP exchange, with the server's reply code when there was one.
fn smtp_error(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) => format!("SMTP {code}: {e}"),
        None => e.to_string(),
    }
}

/// The wait after failed send number `failures` (1-based): `first`, doubling, at most `max`.
pub fn backoff(failures: u32, first: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
    first.saturating_mul(factor).min(max)
}

/// The SMTP transport a `TIDINGS_SMTP_URL` names: `smtp://host[:25]` (plain),
/// `smtp+starttls://host[:587]` (STARTTLS required), `smtps://host[:465]` (implicit TLS),
/// each with optional `user:password@` (percent-encoded). TLS is verified against the
/// webpki roots.
pub fn transport(
    url: &str,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailerError> {
    let bad = |m: String| MailerError::SmtpUrl(format!("{m} (in {})", crate::startup::redact(url)));
    let u = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host".into()))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_owned();
    let tls = |host: &str| {
        TlsParameters::new(host.to_owned()).map_err(|e| bad(format!("TLS setup failed: {e}")))
    };
    let (port, tls) = match u.scheme() {
        "smtp" => (25, Tls::None),
        "smtp+starttls" => (587, Tls::Required(tls(&host)?)),
        "smtps" => (465, Tls::Wrapper(tls(&host)?)),
        other => {
            return Err(bad(format!(
                "unknown scheme `{other}`: use smtp://, smtp+starttls:// or smtps://"
            )))
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(u.port().unwrap_or(port))
        .tls(tls)
        .timeout(Some(timeout));
    if !u.username().is_empty() {
        let decode = |s: &str| {
            percent_decode(s)
                .map_err(|_| bad("user or password is not valid percent-encoded UTF-8".into()))
        };
        builder = builder.credentials(Credentials::new(
            decode(u.username())?,
            decode(u.password().unwrap_or(""))?,
        ));
    }
    Ok(builder.build())
}

fn percent_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    std::str::from_utf8(&out).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_first_to_max() {
        let (first, max) = (Duration::from_secs(10), Duration::from_secs(600));
        let table = [
            (1, 10),
            (2, 20),
            (3, 40),
            (4, 80),
            (5, 160),
            (6, 320),
            (7, 600),
            (8, 600),
            (1000, 600),
        ];
        for (failures, secs) in table {
            assert_eq!(
                backoff(failures, first, max),
                Duration::from_secs(secs),
                "after {failures} failures"
            );
        }
    }

    #[test]
    fn smtp_urls_name_a_transport_or_a_clear_error() {
        let t = Duration::from_secs(5);
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtp://mail.example",
            "smtp+starttls://user:p%40ss@mail.example:587",
            "smtps://mail.example",
        ] {
            assert!(transport(ok, t).is_ok(), "{ok}");
        }
        for (bad, reason) in [
            ("http://mail.example", "unknown scheme `http`"),
            ("smtp://", "no host"),
            ("not a url", "not a URL"),
        ] {
            let e = transport(bad, t).expect_err(bad).to_string();
            assert!(e.contains(reason), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_are_percent_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aword").unwrap(), "p@ss:word");
        assert_eq!(percent_decode("plain%").unwrap(), "plain%");
        assert_eq!(percent_decode("a%zz").unwrap(), "a%zz");
    }
}
