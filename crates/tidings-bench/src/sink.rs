//! The HTTPS sink: the receivers Tidings delivers to during a run, in this process.
//!
//! It listens on several loopback ports (each port is one "destination" for Tidings'
//! per-destination limits), with a certificate from a CA made for the run (Tidings trusts it
//! through `TIDINGS_CA_FILE`). Like a real receiver it verifies the Standard Webhooks
//! signature of every request with the receiving level's secret. The URL path says how to
//! answer: `/ok/{level}/{n}` answers 200, `/fail/{level}/{n}` answers 500.
//!
//! It records the first arrival of each (event, level) for the latency figures: the event's
//! sequence number is carried in the body (`data.subject` = `bench-{seq}`), the level in the
//! path. It also counts the (event, level) pairs it answered 200 more than once: a webhook
//! delivered twice, which must never happen, however many instances share the store. It must
//! stay cheap: it shares the machine's two cores with Tidings.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;
use tidings_verify::{Secret, Verifier};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The receiving levels of a personal meeting's events, in the order of the arrival table.
pub const LEVELS: [&str; 4] = ["site", "company", "dealer", "reseller"];

/// The subject prefix that marks a measured event; the rest is its sequence number.
pub const SUBJECT_PREFIX: &str = "bench-";

/// Events per lazily allocated chunk of the arrival table.
const CHUNK: usize = 1 << 16;
/// Most events one run can match (64 chunks: 4,194,304 events).
const MAX_CHUNKS: usize = 64;

/// The top bit of an arrival slot: the sink has answered 200 for that (event, level). The
/// arrival time below it would take centuries to reach it, and one atomic per slot keeps
/// the table's size.
const ANSWERED_OK: u64 = 1 << 63;

/// First arrival time (nanoseconds since the run's epoch, plus one; 0 = none yet) per
/// (event sequence number, level), and whether it was answered 200 yet ([`ANSWERED_OK`]).
/// Written by the sink, read after the phase.
pub struct Arrivals {
    chunks: Vec<OnceLock<Box<[AtomicU64]>>>,
}

impl Arrivals {
    fn new() -> Self {
        Arrivals {
            chunks: (0..MAX_CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn slot(&self, seq: u64, level: usize) -> Option<&AtomicU64> {
        let seq = seq as usize;
        let chunk = self.chunks.get(seq / CHUNK)?;
        let chunk = chunk.get_or_init(|| (0..CHUNK * 4).map(|_| AtomicU64::new(0)).collect());
        chunk.get((seq % CHUNK) * 4 + level)
    }

    /// Records an arrival; true if it was the first for this (event, level).
    fn record(&self, seq: u64, level: usize, nanos: u64) -> bool {
        self.slot(seq, level).is_some_and(|s| {
            s.compare_exchange(0, nanos + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
    }

    /// Records an answer 200; true if one had been given before for this (event, level).
    /// Called after [`Arrivals::record`] of the same request, so the slot holds its time.
    fn record_ok(&self, seq: u64, level: usize) -> bool {
        self.slot(seq, level)
            .is_some_and(|s| s.fetch_or(ANSWERED_OK, Ordering::SeqCst) & ANSWERED_OK != 0)
    }

    /// The first arrival, in nanoseconds since the epoch.
    pub fn get(&self, seq: u64, level: usize) -> Option<u64> {
        let chunk = self.chunks.get(seq as usize / CHUNK)?.get()?;
        match chunk[(seq as usize % CHUNK) * 4 + level].load(Ordering::SeqCst) & !ANSWERED_OK {
            0 => None,
            n => Some(n - 1),
        }
    }
}

/// Counters since the sink started; phases take differences.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub answered_ok: AtomicU64,
    pub answered_fail: AtomicU64,
    pub bad_signature: AtomicU64,
    /// First arrivals of measured events (any answer).
    pub first_arrivals: AtomicU64,
    /// First arrivals of measured events at `/ok/` paths (answered 200).
    pub first_ok: AtomicU64,
    /// Measured events seen again (retries, or a repeat after a lost claim).
    pub repeats: AtomicU64,
    /// Measured events answered 200 again for a level already answered 200: delivered twice.
    pub delivered_again: AtomicU64,
    pub connections: AtomicU64,
    /// Connections open now (accepted and not yet closed).
    pub open_connections: AtomicU64,
    pub http2_requests: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Counts {
    pub requests: u64,
    pub answered_ok: u64,
    pub answered_fail: u64,
    pub bad_signature: u64,
    pub first_arrivals: u64,
    pub first_ok: u64,
    pub repeats: u64,
    pub delivered_again: u64,
    pub connections: u64,
    pub open_connections: u64,
    pub http2_requests: u64,
}

impl Counts {
    pub fn since(&self, before: &Counts) -> Counts {
        Counts {
            requests: self.requests - before.requests,
            answered_ok: self.answered_ok - before.answered_ok,
            answered_fail: self.answered_fail - before.answered_fail,
            bad_signature: self.bad_signature - before.bad_signature,
            first_arrivals: self.first_arrivals - before.first_arrivals,
            first_ok: self.first_ok - before.first_ok,
            repeats: self.repeats - before.repeats,
            delivered_again: self.delivered_again - before.delivered_again,
            connections: self.connections - before.connections,
            open_connections: self.open_connections,
            http2_requests: self.http2_requests - before.http2_requests,
        }
    }
}

/// A delivery as received, replayed by the ceiling run.
#[derive(Clone)]
pub struct Sample {
    /// The sink port it arrived on: the destination.
    pub port: u16,
    pub path: String,
    pub webhook_id: String,
    pub body: Bytes,
}

pub struct SinkState {
    epoch: Instant,
    /// In the ceiling run, requests are only counted and answered.
    ceiling: AtomicBool,
    /// Each level URL's path and the verifier of its secret.
    verifiers: RwLock<HashMap<String, (Verifier, Secret)>>,
    pub arrivals: Arrivals,
    pub counters: Counters,
    samples: Mutex<Vec<Sample>>,
    /// Samples are kept only while this is set (the measured phase).
    sampling: AtomicBool,
    /// Every destination answers 500 (to queue retries that all come due together).
    fail_all: AtomicBool,
}

const MAX_SAMPLES: usize = 1024;

impl SinkState {
    fn new(epoch: Instant) -> SinkState {
        SinkState {
            epoch,
            ceiling: AtomicBool::new(false),
            verifiers: RwLock::new(HashMap::new()),
            arrivals: Arrivals::new(),
            counters: Counters::default(),
            samples: Mutex::new(Vec::new()),
            sampling: AtomicBool::new(false),
            fail_all: AtomicBool::new(false),
        }
    }

    pub fn nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn counts(&self) -> Counts {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Counts {
            requests: l(&c.requests),
            answered_ok: l(&c.answered_ok),
            answered_fail: l(&c.answered_fail),
            bad_signature: l(&c.bad_signature),
            first_arrivals: l(&c.first_arrivals),
            first_ok: l(&c.first_ok),
            repeats: l(&c.repeats),
            delivered_again: l(&c.delivered_again),
            connections: l(&c.connections),
            open_connections: l(&c.open_connections),
            http2_requests: l(&c.http2_requests),
        }
    }

    pub fn set_secret(&self, path: &str, secret: Secret) {
        self.verifiers
            .write()
            .unwrap()
            .insert(path.to_owned(), (Verifier::new(secret.clone()), secret));
    }

    /// The secret of the level at `path`, for signing the ceiling run's requests.
    pub fn secret(&self, path: &str) -> Option<Secret> {
        self.verifiers
            .read()
            .unwrap()
            .get(path)
            .map(|(_, s)| s.clone())
    }

    pub fn set_ceiling(&self, on: bool) {
        self.ceiling.store(on, Ordering::SeqCst);
    }

    /// While set, every destination answers 500.
    pub fn set_fail_all(&self, on: bool) {
        self.fail_all.store(on, Ordering::SeqCst);
    }

    pub fn failing_all(&self) -> bool {
        self.fail_all.load(Ordering::SeqCst)
    }

    pub fn set_sampling(&self, on: bool) {
        self.sampling.store(on, Ordering::SeqCst);
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Counts an arrival of a measured event's webhook to `level`, answered 200 if `ok`: the
    /// first arrival of each (event, level), the repeats, and a second answer 200 as
    /// delivered again. True if it was the first arrival.
    fn count_arrival(&self, seq: u64, level: usize, arrived: u64, ok: bool) -> bool {
        let c = &self.counters;
        let first = self.arrivals.record(seq, level, arrived);
        if first {
            c.first_arrivals.fetch_add(1, Ordering::Relaxed);
            if ok {
                c.first_ok.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            c.repeats.fetch_add(1, Ordering::Relaxed);
        }
        if ok && self.arrivals.record_ok(seq, level) {
            c.delivered_again.fetch_add(1, Ordering::Relaxed);
        }
        first
    }
}

/// The running sink.
pub struct Sink {
    pub state: Arc<SinkState>,
    ports: Vec<u16>,
    ca_pem: String,
}

impl Sink {
    /// Starts `ports` listeners on 127.0.0.1 with a certificate from a fresh CA.
    pub async fn start(ports: usize, epoch: Instant) -> anyhow::Result<Sink> {
        let (ca_pem, chain, key) = certificates()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, PrivateKeyDer::Pkcs8(key))?;
        // Like most receivers: HTTP/2 when the client offers it, else HTTP/1.1.
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let state = Arc::new(SinkState::new(epoch));
        let mut bound = Vec::new();
        for _ in 0..ports {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            bound.push(port);
            tokio::spawn(accept_loop(listener, port, acceptor.clone(), state.clone()));
        }
        Ok(Sink {
            state,
            ports: bound,
            ca_pem,
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// `https://127.0.0.1:{port}{path}`.
    pub fn url(&self, port_index: usize, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path}",
            self.ports[port_index % self.ports.len()]
        )
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    acceptor: TlsAcceptor,
    state: Arc<SinkState>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        state.counters.connections.fetch_add(1, Ordering::SeqCst);
        state
            .counters
            .open_connections
            .fetch_add(1, Ordering::SeqCst);
        let (acceptor, state) = (acceptor.clone(), state.clone());
        tokio::spawn(async move {
            if let Ok(stream) = acceptor.accept(tcp).await {
                let s = state.clone();
                let service = hyper::service::service_fn(move |req| answer(s.clone(), port, req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
            state
                .counters
                .open_connections
                .fetch_sub(1, Ordering::SeqCst);
        });
    }
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default)]
    subject: Option<&'a str>,
}

fn reply(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn answer(
    state: Arc<SinkState>,
    port: u16,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let arrived = state.nanos();
    let c = &state.counters;
    c.requests.fetch_add(1, Ordering::Relaxed);
    if req.version() == Version::HTTP_2 {
        c.http2_requests.fetch_add(1, Ordering::Relaxed);
    }
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let verified = state
        .verifiers
        .read()
        .unwrap()
        .get(path)
        .is_some_and(|(v, _)| {
            v.verify(
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                &body,
            )
            .is_ok()
        });
    if !verified {
        c.bad_signature.fetch_add(1, Ordering::Relaxed);
        return Ok(reply(StatusCode::UNAUTHORIZED, "bad signature"));
    }
    let failing = path.starts_with("/fail/") || state.fail_all.load(Ordering::Relaxed);
    if !state.ceiling.load(Ordering::Relaxed) {
        let level = path
            .split('/')
            .nth(2)
            .and_then(|l| LEVELS.iter().position(|x| *x == l));
        let seq = serde_json::from_slice::<Body>(&body).ok().and_then(|b| {
            b.data
                .subject?
                .strip_prefix(SUBJECT_PREFIX)?
                .parse::<u64>()
                .ok()
        });
        if let (Some(seq), Some(level)) = (seq, level) {
            if state.count_arrival(seq, level, arrived, !failing)
                && !failing
                && state.sampling.load(Ordering::Relaxed)
            {
                let mut samples = state.samples.lock().unwrap();
                if samples.len() < MAX_SAMPLES {
                    samples.push(Sample {
                        port,
                        path: path.to_owned(),
                        webhook_id: header("webhook-id").to_owned(),
                        body: body.clone(),
                    });
                }
            }
        }
    }
    if failing {
        c.answered_fail.fetch_add(1, Ordering::Relaxed);
        Ok(reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failing on purpose (tidings-bench)",
        ))
    } else {
        c.answered_ok.fetch_add(1, Ordering::Relaxed);
        Ok(reply(StatusCode::OK, "ok"))
    }
}

/// A CA made for this run (its PEM, for `TIDINGS_CA_FILE` and the ceiling client) and a
/// server identity for 127.0.0.1 signed by it.
fn certificates() -> anyhow::Result<(
    String,
    Vec<CertificateDer<'static>>,
    PrivatePkcs8KeyDer<'static>,
)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "tidings-bench CA");
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((
        issuer.pem(),
        vec![cert.der().clone(), issuer.der().clone()],
        PrivatePkcs8KeyDer::from(key.serialize_der()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_answer_200_for_one_event_and_level_is_delivered_again() {
        let state = SinkState::new(Instant::now());
        let counts = || state.counts();
        // Answered 500, then 200 on the retry: delivered once.
        assert!(state.count_arrival(1, 0, 10, false));
        assert!(!state.count_arrival(1, 0, 20, true));
        assert_eq!(counts().delivered_again, 0);
        assert_eq!((counts().first_ok, counts().repeats), (0, 1));
        // Another level of the same event is its own webhook.
        assert!(state.count_arrival(1, 1, 30, true));
        assert_eq!(counts().delivered_again, 0);
        // Answered 200 twice (two instances sending one webhook): delivered again.
        assert!(state.count_arrival(2, 3, 40, true));
        assert!(!state.count_arrival(2, 3, 50, true));
        assert!(!state.count_arrival(2, 3, 60, true));
        assert_eq!(counts().delivered_again, 2);
        assert_eq!((counts().first_arrivals, counts().first_ok), (3, 2));
        // The mark of an answer 200 leaves the first arrival's time as it was.
        assert_eq!(state.arrivals.get(1, 0), Some(10));
        assert_eq!(state.arrivals.get(2, 3), Some(40));
        assert_eq!(state.arrivals.get(2, 2), None);
    }
}
