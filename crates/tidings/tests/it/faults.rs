//! Faults answer clearly and the process stays up: slow clients are cut off after the API's
//! timeouts, connections beyond the cap are answered 503, and a store that is unreachable
//! (PostgreSQL behind a cut connection) or full (SQLite at its size limit) answers 503 with
//! `Retry-After` and the cause, then recovers without a restart, losing nothing acknowledged.
//!
//! PostgreSQL is shared, so it is never stopped: the server reaches it through a proxy that
//! the test cuts (every proxied connection dropped, new ones closed at once) and restores.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::server::TestServer;
use crate::helpers::shapes::{routed, Routed};
use crate::helpers::tree::{contact, hook_url, Tree};
use crate::helpers::{stores, OPERATOR_KEY};

/// Longest any wait here may take (the timeouts under test are a second or two).
const PATIENCE: Duration = Duration::from_secs(60);

fn addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns what it sent. Panics if it is still
/// open after [`PATIENCE`].
fn read_until_closed(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// One request on a fresh connection (`Connection: close`); the whole raw answer.
fn raw_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        OPERATOR_KEY
    )
    .expect("send request");
    read_until_closed(&mut stream)
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"))
}

fn metric(s: &TestServer, name: &str) -> f64 {
    let text = s.get("/metrics").body;
    let text = text.as_str().expect("metrics are text");
    crate::helpers::metric(text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[test]
fn slow_clients_are_closed_after_the_timeouts_while_others_are_served() {
    let s = TestServer::start_env(&[
        ("TIDINGS_API_HEADER_TIMEOUT", "1s"),
        ("TIDINGS_API_REQUEST_TIMEOUT", "2s"),
        ("TIDINGS_API_MAX_CONNECTIONS", "64"),
    ]);
    let addr = addr(&s);
    let opened = Instant::now();
    // Half a header: the request line and one header, never the blank line.
    let mut half_headers: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).expect("connect");
            write!(c, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").expect("send");
            c
        })
        .collect();
    // Whole headers, a tenth of the body.
    let mut half_bodies: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).expect("connect");
            write!(
                c,
                "POST /v1/resellers HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"name\": \"Slo",
                OPERATOR_KEY
            )
            .expect("send");
            c
        })
        .collect();
    // An idle connection: nothing sent at all.
    let mut idle = TcpStream::connect(&addr).expect("connect");

    // Meanwhile a normal client is served.
    assert_eq!(s.get("/healthz").status, 200);
    let created = s.create(
        "resellers",
        &json!({"name": "Served meanwhile", "contact": contact("R", "r@tidings.test")}),
    );
    assert_eq!(created["name"], "Served meanwhile");

    for c in &mut half_headers {
        let got = read_until_closed(c);
        // A header timeout closes the connection without an answer.
        assert_eq!(got, "", "half a header");
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(1),
        "closed before the header timeout"
    );
    for c in &mut half_bodies {
        let got = read_until_closed(c);
        assert!(got.starts_with("HTTP/1.1 408 "), "half a body: {got:?}");
        assert!(got.contains(r#""code":"request_timeout""#), "{got:?}");
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(2),
        "closed before the request timeout"
    );
    assert_eq!(read_until_closed(&mut idle), "", "idle connection");

    // Nothing of the slow bodies was stored; the server still answers.
    let resellers = s.list_all("/v1/resellers", &[]);
    let names: Vec<&str> = resellers
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["Served meanwhile"]);
    assert_eq!(metric(&s, "tidings_api_requests_timed_out_total"), 10.0);
}

#[test]
fn connections_beyond_the_cap_are_answered_503_and_closed() {
    let s = TestServer::start_env(&[
        ("TIDINGS_API_MAX_CONNECTIONS", "4"),
        ("TIDINGS_API_HEADER_TIMEOUT", "10m"),
    ]);
    let addr = addr(&s);
    // Four idle connections take every place; the server accepts in order, so they are
    // accepted before any connection opened after them.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let mut refused = 0;
    for _ in 0..3 {
        let raw = raw_get(&addr, "/healthz");
        assert_eq!(status_of(&raw), 503, "{raw}");
        assert!(
            raw.to_lowercase().contains("\r\nretry-after: 5\r\n"),
            "{raw}"
        );
        assert!(raw.contains(r#""code":"overloaded""#), "{raw}");
        refused += 1;
    }
    // Two places freed (one for the scrape below): new connections are served again.
    for c in held.drain(2..) {
        c.shutdown(Shutdown::Both).expect("close");
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let raw = raw_get(&addr, "/healthz");
        match status_of(&raw) {
            200 => break,
            503 => refused += 1,
            other => panic!("unexpected {other}: {raw}"),
        }
        assert!(Instant::now() < deadline, "no place freed: {}", s.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metric(&s, "tidings_api_connections_refused_total"),
        refused as f64
    );
    // The two held and the scrape's own, once the server has seen the others end.
    let deadline = Instant::now() + PATIENCE;
    while metric(&s, "tidings_api_connections_open") != 3.0 {
        assert!(
            Instant::now() < deadline,
            "open connections never came down to 3"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
}

// ---------------------------------------------------------------------------------------------
// The store away

/// A TCP proxy in front of PostgreSQL that can be cut and restored.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Both sockets of every proxied connection, to drop them all when cut.
    live: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, l) = (cut.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if c.load(Ordering::SeqCst) {
                    // Refused: closed at once.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut live = l.lock().unwrap();
                live.push(client.try_clone().unwrap());
                live.push(server.try_clone().unwrap());
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
        Proxy { port, cut, live }
    }

    /// A fresh PostgreSQL database, reached through the proxy: its URL.
    fn fresh_database(&self) -> String {
        let db = stores::fresh_postgres_database_blocking();
        let mut url = url::Url::parse(&db).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// A request whose answer's headers matter.
fn send(s: &TestServer, method: reqwest::Method, path: &str, body: Option<&Value>) -> Sent {
    let client = reqwest::blocking::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let mut req = client
        .request(method, s.url(path))
        .bearer_auth(OPERATOR_KEY);
    if let Some(b) = body {
        req = req.json(b);
    }
    let began = Instant::now();
    let resp = req.send().expect("an answer");
    let took = began.elapsed();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().unwrap();
    Sent {
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        took,
    }
}

#[derive(Debug)]
struct Sent {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

fn company(t: &Tree, name: &str) -> Value {
    json!({"name": name, "contact": contact("C", "c@tidings.test"),
           "dealer": {"id": t.dealer.id}, "webhook_url": hook_url(&name.replace(' ', "-"))})
}

/// Posts the company `name` under the tree's dealer.
fn create_company(s: &TestServer, t: &Tree, name: &str) -> Sent {
    send(
        s,
        reqwest::Method::POST,
        "/v1/companies",
        Some(&company(t, name)),
    )
}

/// [`create_company`]; a company created (201) joins `acked` (name → id).
fn create_acked(s: &TestServer, t: &Tree, acked: &mut Vec<(String, String)>, name: &str) -> Sent {
    let a = create_company(s, t, name);
    if a.status == 201 {
        acked.push((name.to_owned(), a.body["id"].as_str().unwrap().to_owned()));
    }
    a
}

/// Every company `acked` (name → id) is stored, and has its COMPANY_CREATED webhooks to the
/// dealer and the reseller; every stored company of the test has them too (nothing half
/// written); and each of those webhooks had an attempt (the dispatcher kept running).
fn assert_nothing_lost(s: &TestServer, t: &Tree, acked: &[(String, String)], prefix: &str) {
    let stored: Vec<Value> = s
        .list_all("/v1/companies", &[])
        .into_iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with(prefix))
        .collect();
    let stored_ids: BTreeSet<&str> = stored.iter().map(|c| c["id"].as_str().unwrap()).collect();
    for (name, id) in acked {
        assert!(stored_ids.contains(id.as_str()), "acknowledged {name} lost");
    }
    let want: BTreeSet<Routed> = [t.dealer.routed(), t.reseller.routed()].into();
    for id in stored_ids {
        let hooks = s.webhooks_of(id);
        let got: BTreeSet<Routed> = hooks.iter().map(routed).collect();
        assert_eq!(got, want, "webhooks of company {id}: {hooks:#?}");
        assert_eq!(hooks.len(), 2, "{hooks:#?}");
        for h in &hooks {
            assert_eq!(h["type"], "COMPANY_CREATED");
        }
    }
    // The dispatcher attempts each (loopback is refused by the SSRF guard: at once).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let waiting: Vec<Value> = s
            .webhooks(&[])
            .into_iter()
            .filter(|w| w["attempt_count"].as_u64() == Some(0))
            .collect();
        if waiting.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks never attempted: {waiting:#?}\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_503(what: &str, a: &Sent, code: &str, message: &str) {
    assert_eq!(a.status, 503, "{what}: {a:?}");
    assert_eq!(a.retry_after.as_deref(), Some("5"), "{what}: {a:?}");
    assert_eq!(a.body["error"]["code"], code, "{what}: {a:?}");
    let m = a.body["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains(message), "{what}: {a:?}");
}

#[test]
fn postgres_cut_answers_503_quickly_and_recovers_losing_nothing() {
    let proxy = Proxy::start("127.0.0.1:5432");
    let url = proxy.fresh_database();
    // Retries every second: the dispatcher has work due while the store is away.
    let s = TestServer::start_env(&[
        ("TIDINGS_DATABASE_URL", url.as_str()),
        ("TIDINGS_STORE_TIMEOUT", "1s"),
        (
            "TIDINGS_RETRY_SCHEDULE",
            "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
        ),
    ]);
    let t = Tree::build(&s);
    let mut acked = Vec::new();
    let mut create = |name: &str| create_acked(&s, &t, &mut acked, name);
    assert_eq!(create("Cut company before").status, 201);

    proxy.cut();
    for i in 0..3 {
        let a = create(&format!("Cut company during {i}"));
        assert_503(
            "a write while cut",
            &a,
            "store_unavailable",
            "the store is unavailable",
        );
        assert!(
            a.took < Duration::from_secs(15),
            "answered after {:?}",
            a.took
        );
    }
    let read = send(&s, reqwest::Method::GET, "/v1/companies", None);
    assert_503(
        "a read while cut",
        &read,
        "store_unavailable",
        "the store is unavailable",
    );
    let ready = send(&s, reqwest::Method::GET, "/readyz", None);
    assert_503(
        "/readyz while cut",
        &ready,
        "not_ready",
        "the store is unavailable",
    );
    assert_eq!(s.get("/healthz").status, 200, "the process is up");
    // The dispatcher meets the cut store, says so and keeps trying.
    let deadline = Instant::now() + PATIENCE;
    while !s
        .logs()
        .contains("claiming due webhooks failed; retrying in 1s")
    {
        assert!(
            Instant::now() < deadline,
            "the dispatcher said nothing: {}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    proxy.restore();
    let deadline = Instant::now() + PATIENCE;
    while send(&s, reqwest::Method::GET, "/readyz", None).status != 200 {
        assert!(Instant::now() < deadline, "never ready again: {}", s.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..3 {
        let a = create(&format!("Cut company after {i}"));
        assert_eq!(a.status, 201, "{a:?}");
    }
    assert_eq!(acked.len(), 4);
    assert_nothing_lost(&s, &t, &acked, "Cut company");
}

/// While PostgreSQL is cut under a stream of writes, every answer is 201 or 503 (never 500),
/// and every 201 has its webhooks afterwards.
#[test]
fn postgres_cut_under_writes_answers_only_201_or_503() {
    let proxy = Arc::new(Proxy::start("127.0.0.1:5432"));
    let url = proxy.fresh_database();
    let s = TestServer::start_env(&[
        ("TIDINGS_DATABASE_URL", url.as_str()),
        ("TIDINGS_STORE_TIMEOUT", "1s"),
    ]);
    let t = Tree::build(&s);
    let acked = Mutex::new(Vec::new());
    let statuses = Mutex::new(BTreeSet::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for w in 0..4 {
            let (s, t, acked, statuses, stop) = (&s, &t, &acked, &statuses, &stop);
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("Stream company {w}-{i}");
                    i += 1;
                    let a = create_company(s, t, &name);
                    statuses.lock().unwrap().insert(a.status);
                    match a.status {
                        201 => acked
                            .lock()
                            .unwrap()
                            .push((name, a.body["id"].as_str().unwrap().to_owned())),
                        503 => assert_503(
                            "a write",
                            &a,
                            "store_unavailable",
                            "the store is unavailable",
                        ),
                        other => panic!("{name}: {other} {a:?}"),
                    }
                }
            });
        }
        let count = || acked.lock().unwrap().len();
        let wait_for = |n: usize| {
            let deadline = Instant::now() + PATIENCE;
            while count() < n {
                assert!(
                    Instant::now() < deadline,
                    "stuck at {} acks: {}",
                    count(),
                    s.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_for(10);
        proxy.cut();
        // Some writes meet the cut store.
        let deadline = Instant::now() + PATIENCE;
        while !statuses.lock().unwrap().contains(&503) {
            assert!(Instant::now() < deadline, "no 503 while cut");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy.restore();
        let after = count();
        wait_for(after + 10);
        stop.store(true, Ordering::SeqCst);
    });
    let acked = acked.into_inner().unwrap();
    assert_nothing_lost(&s, &t, &acked, "Stream company");
}

/// A server on the SQLite file `dir/tidings.db`, limited to 4 MiB (1024 pages of 4 KiB);
/// answers the server and the file.
fn small_sqlite_server(dir: &Path) -> (TestServer, PathBuf) {
    let db = dir.join("tidings.db");
    let url = format!("sqlite://{}", db.display());
    let s = TestServer::start_on(
        &db,
        &[
            ("TIDINGS_DATABASE_URL", url.as_str()),
            ("TIDINGS_SQLITE_MAX_MIB", "4"),
        ],
    );
    (s, db)
}

/// Ballast beside the server in the 4 MiB SQLite file `db`: a table of blobs that fills it
/// until only `free` of its 1024 pages are left. Dropping the table frees them again.
fn fill_with_ballast(db: &Path, free: i64) -> rusqlite::Connection {
    let ballast = rusqlite::Connection::open(db).unwrap();
    ballast.busy_timeout(Duration::from_secs(30)).unwrap();
    ballast
        .execute_batch("CREATE TABLE ballast (b BLOB)")
        .unwrap();
    loop {
        let pages: i64 = ballast
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        if pages >= 1024 - free {
            break;
        }
        ballast
            .execute("INSERT INTO ballast VALUES (zeroblob(3000))", [])
            .unwrap();
    }
    ballast
}

#[test]
fn sqlite_full_answers_503_and_recovers_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let (s, db) = small_sqlite_server(dir.path());
    let t = Tree::build(&s);
    let mut acked = Vec::new();
    let mut create = |name: &str| create_acked(&s, &t, &mut acked, name);
    assert_eq!(create("Full company before").status, 201);

    // Ballast beside the server, up to a few pages short of its limit.
    let ballast = fill_with_ballast(&db, 4);
    // The last free pages go; then the disk is full.
    let mut full = None;
    for i in 0..200 {
        let a = create(&format!("Full company during {i}"));
        match a.status {
            201 => {}
            503 => {
                full = Some(a);
                break;
            }
            other => panic!("{other}: {a:?}\n{}", s.logs()),
        }
    }
    let full = full.expect("the store never filled up");
    assert_503("a write when full", &full, "disk_full", "the disk is full");
    let again = create("Full company again");
    assert_503(
        "another write when full",
        &again,
        "disk_full",
        "the disk is full",
    );
    // Reads still work, and the store still answers.
    assert_eq!(
        send(&s, reqwest::Method::GET, "/v1/companies", None).status,
        200
    );
    assert_eq!(send(&s, reqwest::Method::GET, "/readyz", None).status, 200);

    ballast.execute_batch("DROP TABLE ballast").unwrap();
    drop(ballast);
    for i in 0..3 {
        let a = create(&format!("Full company after {i}"));
        assert_eq!(a.status, 201, "{a:?}\n{}", s.logs());
    }
    assert_nothing_lost(&s, &t, &acked, "Full company");
}

/// Writers at once while SQLite fills up: every answer is 201 or 503 (never 500), and every 201
/// has its webhooks afterwards.
#[test]
fn sqlite_full_under_concurrent_writes_answers_only_201_or_503() {
    let dir = tempfile::tempdir().unwrap();
    let (s, db) = small_sqlite_server(dir.path());
    let t = Tree::build(&s);
    let ballast = fill_with_ballast(&db, 40);
    let acked = Mutex::new(Vec::new());
    let fulls = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for w in 0..6 {
            let (s, t, acked, fulls) = (&s, &t, &acked, &fulls);
            scope.spawn(move || {
                let mut i = 0;
                while fulls.load(Ordering::SeqCst) < 30 {
                    let name = format!("Crowd company {w}-{i}");
                    i += 1;
                    let a = create_company(s, t, &name);
                    match a.status {
                        201 => acked
                            .lock()
                            .unwrap()
                            .push((name, a.body["id"].as_str().unwrap().to_owned())),
                        503 => {
                            assert_503("a write", &a, "disk_full", "the disk is full");
                            fulls.fetch_add(1, Ordering::SeqCst);
                        }
                        other => panic!("{name}: {other} {a:?}\n{}", s.logs()),
                    }
                }
            });
        }
    });
    ballast.execute_batch("DROP TABLE ballast").unwrap();
    drop(ballast);
    let mut acked = acked.into_inner().unwrap();
    let a = create_company(&s, &t, "Crowd company after");
    assert_eq!(a.status, 201, "{a:?}\n{}", s.logs());
    acked.push(("after".into(), a.body["id"].as_str().unwrap().to_owned()));
    assert_nothing_lost(&s, &t, &acked, "Crowd company");
}
