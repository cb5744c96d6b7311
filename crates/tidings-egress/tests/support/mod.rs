//! Real destinations for the egress tests: a certificate authority made in the test, and
//! HTTPS (or plain HTTP) servers on loopback that record what reaches them and answer as told.
//! No mocks: the client under test does real DNS, TCP, TLS and HTTP against these.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tidings_egress::{AddressPolicy, EgressConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A certificate authority that exists only for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate chain and its key.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA certificate, as `EgressConfig::extra_ca_pem` takes it.
    pub fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    /// A certificate for every name a loopback test server is reached by.
    pub fn loopback_identity(&self) -> Identity {
        let names = ["localhost", "127.0.0.1", "::1", "::ffff:127.0.0.1"];
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Identity {
            chain: vec![cert.der().clone(), self.issuer.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

/// How a test server answers.
#[derive(Clone)]
pub enum Reply {
    /// A complete response.
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    },
    /// Reads the request and never answers.
    Hang,
    /// Sends the status and the first part of the body, then stalls forever.
    Stall { status: u16, first: Bytes },
}

impl Reply {
    pub fn status(status: u16, body: impl Into<Bytes>) -> Self {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// What a server saw of one request.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct Log {
    connections: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
}

/// A server on a loopback port; stops accepting when dropped.
pub struct Server {
    pub addr: SocketAddr,
    log: Arc<Log>,
    accept_loop: JoinHandle<()>,
}

impl Server {
    /// An HTTPS server (HTTP/1.1 and HTTP/2 by ALPN) bound to `bind`, e.g. `127.0.0.1:0`.
    pub async fn https(bind: &str, identity: &Identity, reply: Reply) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                identity.chain.clone(),
                PrivateKeyDer::Pkcs8(identity.key.clone_key()),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start(bind, Some(TlsAcceptor::from(Arc::new(tls))), reply).await
    }

    /// A plain HTTP server bound to `bind`.
    pub async fn http(bind: &str, reply: Reply) -> Self {
        Self::start(bind, None, reply).await
    }

    async fn start(bind: &str, tls: Option<TlsAcceptor>, reply: Reply) -> Self {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let accept_log = Arc::clone(&log);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                accept_log.connections.fetch_add(1, Ordering::SeqCst);
                let (log, reply, tls) = (Arc::clone(&accept_log), reply.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(Arc::clone(&log), reply.clone(), request)
                    });
                    let http = auto::Builder::new(TokioExecutor::new());
                    // Connection errors (a client hanging up, a refused certificate) are part
                    // of what the tests provoke; the client's view is what they assert.
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            log,
            accept_loop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    /// Requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn answer(
    log: Arc<Log>,
    reply: Reply,
    request: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    log.requests.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    });
    match reply {
        Reply::Respond {
            status,
            headers,
            body,
        } => {
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            Ok(response.body(Full::new(body).boxed()).unwrap())
        }
        Reply::Hang => std::future::pending().await,
        Reply::Stall { status, first } => {
            let frames = stream::once(async move { Ok(Frame::data(first)) })
                .chain(stream::pending::<Result<Frame<Bytes>, Infallible>>());
            Ok(Response::builder()
                .status(status)
                .body(BodyExt::boxed(StreamBody::new(frames)))
                .unwrap())
        }
    }
}

/// A client configuration for tests: trusts `ca`, exempts `allow` from the SSRF block,
/// and has generous timeouts unless a test shortens them.
pub fn config(ca: &TestCa, allow: &str) -> EgressConfig {
    EgressConfig {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        user_agent: "Tidings-test/1".to_owned(),
        extra_ca_pem: Some(ca.pem()),
        allow_http: false,
        policy: AddressPolicy::parse_allow_list(allow).unwrap(),
        pool_max_idle_per_host: 2,
    }
}

/// Runs an attempt with an upper bound, so a broken client fails the test instead of hanging.
pub async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("the attempt did not finish within 20 s")
}
