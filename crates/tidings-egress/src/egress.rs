//! The guarded HTTP client: one `POST` of a webhook body, turned into an [`Outcome`].
//!
//! Owns the client settings that make delivery safe — HTTPS only unless explicitly allowed, no
//! redirects, no proxies, TLS against the system roots plus an optional extra CA, the SSRF
//! resolver — and reading at most 1 KiB of any response. It must never follow a redirect, use
//! a proxy from the environment (the proxy would be resolved instead of the destination and
//! bypass the SSRF check), connect to an address the [`AddressPolicy`] forbids, or read a
//! whole response body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use url::{Host, Url};

use crate::outcome::{classify, AttemptError, Outcome, BODY_EXCERPT_LIMIT};
use crate::policy::AddressPolicy;
use crate::resolver::GuardedResolver;

/// Settings of the outbound client, from configuration (docs/contract.md#configuration).
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// The whole attempt: connect, TLS, request, status and body excerpt
    /// (`TIDINGS_REQUEST_TIMEOUT`).
    pub timeout: Duration,
    /// Connecting alone (TCP + TLS); shorter, so a black-holed host fails fast.
    pub connect_timeout: Duration,
    pub user_agent: String,
    /// PEM root certificate(s) trusted in addition to the system roots (`TIDINGS_CA_FILE`).
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Accept `http://` destinations (`TIDINGS_ALLOW_HTTP`, development only).
    pub allow_http: bool,
    /// The SSRF rules (`TIDINGS_SSRF_ALLOW`).
    pub policy: AddressPolicy,
    /// Idle keep-alive connections kept per destination host, for connection reuse.
    pub pool_max_idle_per_host: usize,
}

impl Default for EgressConfig {
    /// The documented defaults: 15 s per attempt, HTTPS only, nothing exempt from the SSRF block.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            user_agent: concat!("Tidings/", env!("CARGO_PKG_VERSION")).to_owned(),
            extra_ca_pem: None,
            allow_http: false,
            policy: AddressPolicy::default(),
            pool_max_idle_per_host: 8,
        }
    }
}

/// The client could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the extra CA file holds no PEM certificate")]
    NoCertificateInExtraCa,
    #[error("the extra CA file could not be read as PEM certificates: {0}")]
    ExtraCa(#[source] reqwest::Error),
    #[error("the HTTP client could not be built: {0}")]
    Client(#[source] reqwest::Error),
}

/// The one outbound HTTP client of Tidings. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Egress {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    allow_http: bool,
    /// URLs that passed [`Egress::destination`], parsed: a delivery service sends to the same
    /// few URLs over and over, and parsing each time (host normalisation included) was ≈ 1 %
    /// of Tidings' CPU. Emptied when it reaches [`KNOWN_URLS`]; the checks depend only on
    /// the URL and on settings fixed at construction, so a kept answer never goes stale.
    known: Arc<Mutex<HashMap<String, Url>>>,
}

/// How many parsed URLs an [`Egress`] keeps.
const KNOWN_URLS: usize = 4096;

impl Egress {
    pub fn new(config: EgressConfig) -> Result<Self, BuildError> {
        let policy = Arc::new(config.policy);
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            // docs/contract.md#sending: the system roots plus the optional extra CA, not a bundled list.
            .tls_built_in_webpki_certs(false)
            .tls_built_in_native_certs(true)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(config.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!config.allow_http)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .dns_resolver(Arc::new(GuardedResolver::new(Arc::clone(&policy))));
        if let Some(pem) = &config.extra_ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(BuildError::ExtraCa)?;
            if roots.is_empty() {
                return Err(BuildError::NoCertificateInExtraCa);
            }
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        Ok(Self {
            client: builder.build().map_err(BuildError::Client)?,
            policy,
            allow_http: config.allow_http,
            known: Arc::default(),
        })
    }

    /// POSTs `body` as `application/json` with `headers` (the signature headers) to `url`.
    ///
    /// Never panics and never returns early with an error: every failure is an [`Outcome`]
    /// the delivery log can record. A `Content-Type` in `headers` is replaced.
    pub async fn post(&self, url: &str, headers: &HeaderMap, body: Bytes) -> Outcome {
        let started = Instant::now();
        let result = self.attempt(url, headers, body).await;
        let duration = started.elapsed();
        match result {
            Ok((200, body_excerpt)) => Outcome {
                status: Some(200),
                error: None,
                body_excerpt,
                duration,
            },
            Ok((status, body_excerpt)) => Outcome {
                status: Some(status),
                error: Some(AttemptError::Status(status)),
                body_excerpt,
                duration,
            },
            Err(error) => Outcome {
                status: None,
                error: Some(error),
                body_excerpt: String::new(),
                duration,
            },
        }
    }

    async fn attempt(
        &self,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(u16, String), AttemptError> {
        let url = self.destination(url)?;
        let mut headers = headers.clone();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let response = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(|err| classify(&err))?;
        let status = response.status().as_u16();
        Ok((status, read_excerpt(response).await))
    }

    /// Parses the URL and applies the checks that must happen before reqwest sees it: the
    /// scheme, and the SSRF policy for IP-literal hosts, which reqwest connects to without
    /// asking the resolver.
    fn destination(&self, url: &str) -> Result<Url, AttemptError> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(parsed) = known.get(url) {
            return Ok(parsed.clone());
        }
        let parsed = self.check(url)?;
        if known.len() >= KNOWN_URLS {
            known.clear();
        }
        known.insert(url.to_owned(), parsed.clone());
        Ok(parsed)
    }

    /// [`Egress::destination`]'s work, for a URL it has not seen.
    fn check(&self, url: &str) -> Result<Url, AttemptError> {
        let url = Url::parse(url).map_err(|err| AttemptError::InvalidUrl(err.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => {
                return Err(AttemptError::SchemeNotAllowed {
                    scheme: other.to_owned(),
                })
            }
        }
        let literal = match url.host() {
            None => return Err(AttemptError::InvalidUrl("the URL has no host".to_owned())),
            Some(Host::Domain(_)) => None,
            Some(Host::Ipv4(ip)) => Some(ip.into()),
            Some(Host::Ipv6(ip)) => Some(ip.into()),
        };
        if let Some(ip) = literal {
            self.policy
                .check(ip)
                .map_err(|reason| AttemptError::Refused { ip, reason })?;
        }
        Ok(url)
    }
}

/// Reads at most [`BODY_EXCERPT_LIMIT`] bytes of the body and drops the rest unread, so a huge
/// or endless body costs nothing. A body that breaks off early keeps what arrived: the status
/// already decided the attempt.
async fn read_excerpt(mut response: reqwest::Response) -> String {
    let mut excerpt = Vec::with_capacity(BODY_EXCERPT_LIMIT);
    while excerpt.len() < BODY_EXCERPT_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let wanted = (BODY_EXCERPT_LIMIT - excerpt.len()).min(chunk.len());
                excerpt.extend_from_slice(&chunk[..wanted]);
            }
            Ok(None) => break,
            Err(err) => {
                tracing::debug!(error = %err.without_url(), "response body broke off");
                break;
            }
        }
    }
    String::from_utf8_lossy(&excerpt).into_owned()
}
