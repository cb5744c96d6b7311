//! A real webhook receiver on loopback: HTTPS with a test CA's certificate (HTTP/1.1 and
//! HTTP/2 by ALPN) or plain HTTP, an answer programmed per path (status, headers, body, a
//! delay, or never), and a record of every request that reached it (path, headers, raw body,
//! the status it was answered) and of every TCP connection it accepted. No mocks: Tidings does
//! real DNS, TCP, TLS and HTTP against it.
//!
//! It runs on a runtime of its own, so tests with and without one start it alike; it stops
//! when dropped.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::PrivateKeyDer;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use super::tls::Identity;

/// How the receiver answers requests to one path.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// Appends ` (001)`, ` (002)`, ... to the body: the number of the request to this path.
    numbered: bool,
    /// Wait this long after reading the request before answering.
    delay: Duration,
    /// Read the request and never answer.
    hang: bool,
}

impl Reply {
    /// Answers `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            numbered: false,
            delay: Duration::ZERO,
            hang: false,
        }
    }

    /// `200 OK` with body `ok`.
    pub fn ok() -> Self {
        Reply::status(200).body("ok")
    }

    /// Reads the request, then holds the connection open without answering.
    pub fn hang() -> Self {
        Reply {
            hang: true,
            ..Reply::status(200)
        }
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Numbers the body: `body (001)` to the first request to the path, `body (002)` to the
    /// second..., so each attempt's answer is recognizable.
    pub fn numbered(mut self) -> Self {
        self.numbered = true;
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The raw body, byte for byte (what a signature covers).
    pub body: Bytes,
    /// The status it was answered (or is being answered, after a delay; or never, when the
    /// reply hangs).
    pub status: u16,
}

impl Received {
    /// A header's value as text; panics with the header's name when it is absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("request to {} has no `{name}` header", self.path))
            .to_str()
            .unwrap()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the webhook body is JSON")
    }
}

struct Shared {
    replies: Mutex<HashMap<String, Reply>>,
    /// The reply to paths without one of their own.
    otherwise: Mutex<Reply>,
    connections: AtomicUsize,
    requests: Mutex<Vec<Received>>,
}

/// A receiver on `127.0.0.1`; it stops accepting when dropped.
pub struct Receiver {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
}

impl Receiver {
    /// Starts an HTTPS receiver that presents `identity` and answers `200 ok` to every path
    /// until told otherwise with [`Receiver::on`].
    pub fn start(identity: &Identity) -> Self {
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
        Receiver::listen(Some(TlsAcceptor::from(Arc::new(tls))))
    }

    /// Starts a plain-HTTP receiver (for Tidings with `TIDINGS_ALLOW_HTTP`) that answers
    /// `200 ok` to every path until told otherwise.
    pub fn http() -> Self {
        Receiver::listen(None)
    }

    fn listen(tls: Option<TlsAcceptor>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-receiver")
            .enable_all()
            .build()
            .unwrap();
        // Bound here, so the port is known before this returns (a test may be inside a
        // runtime of its own, where `block_on` is not allowed).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            replies: Mutex::new(HashMap::new()),
            otherwise: Mutex::new(Reply::ok()),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let scheme = if tls.is_some() { "https" } else { "http" };
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                accept_shared.connections.fetch_add(1, Ordering::SeqCst);
                let (shared, tls) = (Arc::clone(&accept_shared), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(Arc::clone(&shared), request)
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    // A refused handshake or a client hanging up mid-request is what some
                    // tests provoke; what Tidings recorded is what they assert.
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Receiver {
            addr,
            scheme,
            shared,
            runtime: Some(runtime),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://127.0.0.1:PORT{path}` (`http://` for a plain-HTTP receiver).
    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port())
    }

    /// `https://localhost:PORT{path}`: a host name that resolves to loopback.
    pub fn localhost_url(&self, path: &str) -> String {
        format!("{}://localhost:{}{path}", self.scheme, self.port())
    }

    /// From now on, requests to `path` get `reply`.
    pub fn on(&self, path: &str, reply: Reply) {
        self.shared
            .replies
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
    }

    /// From now on, requests to paths given no reply of their own get `reply`.
    pub fn otherwise(&self, reply: Reply) {
        *self.shared.otherwise.lock().unwrap() = reply;
    }

    /// TCP connections accepted so far (including ones whose TLS handshake failed).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests received on `path`, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Without waiting for connections held open (hanging replies); allowed inside a
        // test's own runtime, unlike dropping the runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_owned();
    let reply = shared
        .replies
        .lock()
        .unwrap()
        .get(&path)
        .cloned()
        .unwrap_or_else(|| shared.otherwise.lock().unwrap().clone());
    let number = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push(Received {
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts.headers,
            body,
            status: reply.status,
        });
        requests.iter().filter(|r| r.path == path).count()
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    if reply.hang {
        // Never answers; the future is dropped when the client gives up and hangs up.
        std::future::pending::<Infallible>().await;
    }
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name.as_str(), value.as_str());
    }
    let body = if reply.numbered {
        let mut numbered = reply.body.to_vec();
        numbered.extend_from_slice(format!(" ({number:03})").as_bytes());
        Bytes::from(numbered)
    } else {
        reply.body
    };
    Ok(response.body(Full::new(body)).unwrap())
}
