//! A real HTTPS webhook receiver on loopback: TLS with a test CA's certificate, HTTP/1.1 and
//! HTTP/2 by ALPN, an answer programmed per path (status, headers, body, a delay, or never),
//! and a record of every request that reached it (path, headers, raw body) and of every TCP
//! connection it accepted. No mocks: Tidings does real DNS, TCP, TLS and HTTP against it.

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
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::tls::Identity;

/// How the receiver answers requests to one path.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
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
    connections: AtomicUsize,
    requests: Mutex<Vec<Received>>,
}

/// An HTTPS receiver on `127.0.0.1`; it stops accepting when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_loop: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that presents `identity` and answers `200 ok` to every path until
    /// told otherwise with [`Receiver::on`].
    pub async fn start(identity: &Identity) -> Self {
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
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            replies: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                accept_shared.connections.fetch_add(1, Ordering::SeqCst);
                let (shared, acceptor) = (Arc::clone(&accept_shared), acceptor.clone());
                tokio::spawn(async move {
                    // A refused handshake or a client hanging up mid-request is what some
                    // tests provoke; what Tidings recorded is what they assert.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        answer(Arc::clone(&shared), request)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            shared,
            accept_loop,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port())
    }

    /// `https://localhost:PORT{path}`: a host name that resolves to loopback.
    pub fn localhost_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port())
    }

    /// From now on, requests to `path` get `reply`.
    pub fn on(&self, path: &str, reply: Reply) {
        self.shared
            .replies
            .lock()
            .unwrap()
            .insert(path.to_owned(), reply);
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
        self.accept_loop.abort();
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
        .unwrap_or_else(Reply::ok);
    shared.requests.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        path,
        headers: parts.headers,
        body,
    });
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
    Ok(response.body(Full::new(reply.body)).unwrap())
}

/// A loopback port nothing listens on (bound, then released), for refused connections.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
