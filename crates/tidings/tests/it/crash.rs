//! Durability (docs/contract.md#outbox, #durability): an accepted API change and the webhooks it causes commit in one
//! transaction, so a crash at any moment loses nothing that was acknowledged and leaves
//! nothing half-written.
//!
//! Several threads fire a burst of creates, changes and meeting moments at the real binary;
//! the process is SIGKILLed while requests are still in flight, restarted on the same file,
//! and every acknowledged change and every entity found is checked against the webhooks the
//! routing rules say it must have caused.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{json, Value};

use crate::helpers::receiver::{Receiver, Reply};
use crate::helpers::server::TestServer;
use crate::helpers::shapes::{routed, Routed};
use crate::helpers::tls::TestCa;
use crate::helpers::tree::{
    contact, direct_meeting_body, hook_url, personal_meeting_body, user_body, Level, Line, Tree,
};
use crate::helpers::{wait_until, OPERATOR_KEY};

const WORKERS: usize = 8;
const OPS_PER_WORKER: usize = 25;
/// The process is killed as soon as this many requests were acknowledged: well before the
/// burst ends, so requests are in flight.
const KILL_AFTER: usize = 120;

/// One request of the burst.
#[derive(Debug, Clone)]
struct Op {
    worker: usize,
    /// The entity it is about; for a create, known only once acknowledged.
    subject: Option<String>,
    /// Which field carries `marker` in the entity's view.
    marker_field: &'static str,
    /// The value this op gives the marker field (a moment keeps the current one).
    marker: String,
    event_type: &'static str,
    levels: BTreeSet<Routed>,
    /// The 2xx answer, if one came.
    acked: Option<Value>,
}

/// What the expected receivers are, from the tree (docs/contract.md#routing).
struct Routes {
    company: BTreeSet<Routed>,
    company_user: BTreeSet<Routed>,
    dealer_user: BTreeSet<Routed>,
    personal_meeting: BTreeSet<Routed>,
    direct_meeting: BTreeSet<Routed>,
}

fn set(levels: &[&Level]) -> BTreeSet<Routed> {
    levels.iter().map(|l| l.routed()).collect()
}

impl Routes {
    fn of(t: &Tree) -> Routes {
        let (r, d, c, sa) = (&t.reseller, &t.dealer, &t.company, &t.site_a);
        Routes {
            company: set(&[d, r]),
            company_user: set(&[c, d, r]),
            dealer_user: set(&[d, r]),
            personal_meeting: set(&[sa, c, d, r]),
            direct_meeting: set(&[c, d, r]),
        }
    }

    /// The receivers of any event about `entity` (a company, user or meeting of the burst).
    fn for_entity(&self, collection: &str, entity: &Value) -> &BTreeSet<Routed> {
        match collection {
            "companies" => &self.company,
            "users" if entity["entity"]["type"] == "company" => &self.company_user,
            "users" => &self.dealer_user,
            "meetings" if entity.get("site").is_some() => &self.personal_meeting,
            "meetings" => &self.direct_meeting,
            other => panic!("no routes for {other}"),
        }
    }
}

/// One worker's sequence of requests. Stops at the first transport error (the server died);
/// any answer other than 2xx is recorded as a failure.
fn worker(
    n: usize,
    base: &str,
    t: &Tree,
    routes: &Routes,
    acks: mpsc::Sender<()>,
    failures: &Mutex<Vec<String>>,
) -> Vec<Op> {
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client");
    let mut ops: Vec<Op> = Vec::new();
    let (mut company, mut user, mut meeting): (Option<String>, Option<String>, Option<String>) =
        (None, None, None);
    for i in 0..OPS_PER_WORKER {
        let round = i / 6;
        let dealer_owned = round % 2 == 1;
        let personal = round % 2 == 0;
        // The request: method, path, body, and the op it is.
        let till = format!("2030-01-{:02}T{:02}:{:02}:00.000Z", n + 1, i / 60, i % 60);
        let (method, path, body, op) = match i % 6 {
            0 => {
                let name = format!("Crash company {n}-{i}");
                let body = json!({
                    "name": name,
                    "contact": contact("Crash", "crash@tidings.test"),
                    "dealer": {"id": t.dealer.id},
                    "webhook_url": hook_url(&format!("crash-{n}-{i}"))
                });
                let op = op(n, None, "name", &name, "COMPANY_CREATED", &routes.company);
                (reqwest::Method::POST, "/v1/companies".to_owned(), body, op)
            }
            1 => {
                let id = company.clone().expect("created in step 0");
                let name = format!("Crash company {n}-{i}");
                let op = op(
                    n,
                    Some(&id),
                    "name",
                    &name,
                    "COMPANY_CHANGED",
                    &routes.company,
                );
                let path = format!("/v1/companies/{id}");
                (reqwest::Method::PATCH, path, json!({"name": name}), op)
            }
            2 => {
                let first = format!("Crash{n}x{i}");
                let (body, levels) = if dealer_owned {
                    (
                        user_body(&first, "dealer", &t.dealer.id, &[]),
                        &routes.dealer_user,
                    )
                } else {
                    (
                        user_body(&first, "company", &t.company.id, &[&t.site_a.id]),
                        &routes.company_user,
                    )
                };
                let op = op(n, None, "first_name", &first, "USER_CREATED", levels);
                (reqwest::Method::POST, "/v1/users".to_owned(), body, op)
            }
            3 => {
                let id = user.clone().expect("created in step 2");
                let first = format!("Crash{n}x{i}");
                let levels = if dealer_owned {
                    &routes.dealer_user
                } else {
                    &routes.company_user
                };
                let op = op(n, Some(&id), "first_name", &first, "USER_CHANGED", levels);
                let path = format!("/v1/users/{id}");
                (
                    reqwest::Method::PATCH,
                    path,
                    json!({"first_name": first}),
                    op,
                )
            }
            4 => {
                let (mut body, levels) = if personal {
                    (
                        personal_meeting_body(&t.company.id, &t.site_a.id, &t.company_user),
                        &routes.personal_meeting,
                    )
                } else {
                    (
                        direct_meeting_body(&t.company.id, &t.company_user),
                        &routes.direct_meeting,
                    )
                };
                body["room_available_from"] = json!("2030-01-01T00:00:00.000Z");
                body["room_available_till"] = json!(till);
                let op = op(
                    n,
                    None,
                    "room_available_till",
                    &till,
                    "MEETING_CREATED",
                    levels,
                );
                (reqwest::Method::POST, "/v1/meetings".to_owned(), body, op)
            }
            _ => {
                let id = meeting.clone().expect("created in step 4");
                let levels = if personal {
                    &routes.personal_meeting
                } else {
                    &routes.direct_meeting
                };
                if round % 2 == 0 {
                    // A moment: the data stays what the create made.
                    let previous = ops.last().expect("step 4 came before").marker.clone();
                    let op = op(
                        n,
                        Some(&id),
                        "room_available_till",
                        &previous,
                        "MEETING_STARTED",
                        levels,
                    );
                    let path = format!("/v1/meetings/{id}/start");
                    (reqwest::Method::POST, path, Value::Null, op)
                } else {
                    let op = op(
                        n,
                        Some(&id),
                        "room_available_till",
                        &till,
                        "MEETING_CHANGED",
                        levels,
                    );
                    let path = format!("/v1/meetings/{id}");
                    let body = json!({"room_available_till": till});
                    (reqwest::Method::PATCH, path, body, op)
                }
            }
        };
        let mut req = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(OPERATOR_KEY);
        if !body.is_null() {
            req = req.json(&body);
        }
        ops.push(op);
        let op = ops.last_mut().unwrap();
        let resp = match req.send() {
            Ok(resp) => resp,
            Err(_) => break, // the server is gone; this op's fate is unknown
        };
        let status = resp.status();
        let Ok(text) = resp.text() else { break };
        if !status.is_success() {
            failures
                .lock()
                .unwrap()
                .push(format!("{method} {path} {body} answered {status}: {text}"));
            break;
        }
        let answer: Value = serde_json::from_str(&text).expect("a 2xx answer is JSON");
        let id = answer["id"].as_str().expect("answer has an id").to_owned();
        match i % 6 {
            0 => company = Some(id.clone()),
            2 => user = Some(id.clone()),
            4 => meeting = Some(id.clone()),
            _ => assert_eq!(op.subject.as_deref(), Some(id.as_str())),
        }
        op.subject = Some(id);
        op.acked = Some(answer);
        if acks.send(()).is_err() {
            break;
        }
    }
    ops
}

fn op(
    worker: usize,
    subject: Option<&String>,
    marker_field: &'static str,
    marker: &str,
    event_type: &'static str,
    levels: &BTreeSet<Routed>,
) -> Op {
    Op {
        worker,
        subject: subject.cloned(),
        marker_field,
        marker: marker.to_owned(),
        event_type,
        levels: levels.clone(),
        acked: None,
    }
}

/// The webhooks of `subject` grouped by event: event id → (type, data, receivers).
fn events_of(s: &TestServer, subject: &str) -> BTreeMap<String, (String, Value, Vec<Routed>)> {
    let mut events: BTreeMap<String, (String, Value, Vec<Routed>)> = BTreeMap::new();
    for w in s.webhooks_of(subject) {
        let event = w["event_id"].as_str().unwrap().to_owned();
        let entry = events.entry(event).or_insert_with(|| {
            (
                w["type"].as_str().unwrap().to_owned(),
                w["payload"]["data"].clone(),
                Vec::new(),
            )
        });
        assert_eq!(entry.0, w["type"], "one event, one type");
        assert_eq!(entry.1, w["payload"]["data"], "one event, one data");
        entry.2.push(routed(&w));
    }
    events
}

#[test]
fn acknowledged_changes_and_their_webhooks_survive_a_sigkill() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("tidings.db");
    let mut server = TestServer::start_on(&db, &[]);
    let t = Tree::build(&server);
    let routes = Routes::of(&t);
    let base = server.base.clone();
    let failures = Mutex::new(Vec::<String>::new());

    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let ops: Vec<Op> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|n| {
                let ack = ack_tx.clone();
                let (base, t, routes, failures) = (&base, &t, &routes, &failures);
                scope.spawn(move || worker(n, base, t, routes, ack, failures))
            })
            .collect();
        drop(ack_tx);
        let mut acked = 0;
        while acked < KILL_AFTER {
            match ack_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(()) => acked += 1,
                Err(_) => break, // every worker stopped (see failures) or the server hangs
            }
        }
        server.kill();
        drop(ack_rx);
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let failures = failures.into_inner().unwrap();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "requests refused during the burst"
    );
    let acked: Vec<&Op> = ops.iter().filter(|o| o.acked.is_some()).collect();
    assert!(
        acked.len() >= KILL_AFTER && acked.len() < WORKERS * OPS_PER_WORKER,
        "the kill came mid-burst: {} of {} acknowledged",
        acked.len(),
        WORKERS * OPS_PER_WORKER
    );

    let s = TestServer::start_on(&db, &[]);

    // 1. Every acknowledged change is there, with exactly the webhooks it must have caused.
    let mut events_by_subject = BTreeMap::new();
    for op in &acked {
        let subject = op.subject.as_deref().unwrap();
        let events = events_by_subject
            .entry(subject.to_owned())
            .or_insert_with(|| events_of(&s, subject));
        let data = op.acked.as_ref().unwrap();
        let matching: Vec<&Vec<Routed>> = events
            .values()
            .filter(|(t, d, _)| t == op.event_type && d == data)
            .map(|(_, _, r)| r)
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "worker {}: acknowledged {} of {subject} is recorded once; events: {events:#?}",
            op.worker,
            op.event_type
        );
        let got: BTreeSet<Routed> = matching[0].iter().cloned().collect();
        assert_eq!(got, op.levels, "{} of {subject}", op.event_type);
        assert_eq!(matching[0].len(), op.levels.len(), "one webhook per level");
    }

    // 2. Each subject's state is its last acknowledged one, or that of a request still in
    //    flight after it (whose fate the client never learned).
    let mut by_subject: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &ops {
        if let Some(s) = &op.subject {
            by_subject.entry(s).or_default().push(op);
        }
    }
    for (subject, ops) in &by_subject {
        let collection = match ops[0].event_type {
            t if t.starts_with("COMPANY") => "companies",
            t if t.starts_with("USER") => "users",
            _ => "meetings",
        };
        let now = s.get_ok(&format!("/v1/{collection}/{subject}"));
        let last_acked = ops.iter().rposition(|o| o.acked.is_some()).unwrap();
        let allowed: BTreeSet<&str> = ops[last_acked..]
            .iter()
            .map(|o| o.marker.as_str())
            .collect();
        let field = ops[0].marker_field;
        assert!(
            now[field].as_str().is_some_and(|m| allowed.contains(m)),
            "{subject}.{field} is {} but the last acknowledged value was {:?}",
            now[field],
            ops[last_acked].marker
        );
    }

    // 3. Nothing is half-written: every company, user and meeting that exists (acknowledged
    //    or not) has its creation event and every event it has reached all of its levels,
    //    and its state is the data of one of its events.
    let tree_ids: BTreeSet<&str> = t.model.created.keys().map(String::as_str).collect();
    let mut found = BTreeSet::new();
    let mut unacknowledged = 0;
    for collection in ["companies", "users", "meetings"] {
        for entity in s.list_all(&format!("/v1/{collection}"), &[]) {
            let id = entity["id"].as_str().unwrap().to_owned();
            found.insert(id.clone());
            if tree_ids.contains(id.as_str()) {
                continue;
            }
            if !by_subject.contains_key(id.as_str()) {
                unacknowledged += 1;
            }
            let want = routes.for_entity(collection, &entity);
            let events = events_of(&s, &id);
            let created = events
                .values()
                .filter(|(t, _, _)| t.ends_with("_CREATED"))
                .count();
            assert_eq!(
                created, 1,
                "{collection} {id} has one creation event: {events:#?}"
            );
            for (event, (event_type, _, receivers)) in &events {
                let got: BTreeSet<Routed> = receivers.iter().cloned().collect();
                assert_eq!(
                    &got, want,
                    "{event_type} {event} of {id} reached every level"
                );
                assert_eq!(receivers.len(), want.len(), "one webhook per level");
            }
            assert!(
                events.values().any(|(_, data, _)| data == &entity),
                "{collection} {id} is in a state no event carries: {entity:#}"
            );
        }
    }
    // And no webhook is about an entity that is not there (nothing was deleted).
    for w in s.webhooks(&[]) {
        let subject = w["subject_id"].as_str().unwrap();
        assert!(
            found.contains(subject) || tree_ids.contains(subject),
            "webhook {} is about {subject}, which does not exist",
            w["id"]
        );
    }
    eprintln!(
        "crash test: {} of {} requests acknowledged before the kill; {} entities found that \
         were created by requests in flight",
        acked.len(),
        ops.len(),
        unacknowledged
    );
}

/// Sends `POST {path}` with the operator key on a socket of its own and closes the socket
/// `after` later, without reading the answer: a client that hangs up mid-request.
fn hang_up(base: &str, path: &str, after: Duration) {
    use std::io::Write;
    let addr = base.strip_prefix("http://").expect("an http:// base");
    let mut socket = std::net::TcpStream::connect(addr).expect("connect to tidings");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 0\r\n\r\n",
        OPERATOR_KEY
    );
    socket
        .write_all(request.as_bytes())
        .expect("send the request");
    std::thread::sleep(after);
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

/// Connections of the test's PostgreSQL database left inside a transaction.
fn idle_in_transaction(database_url: &str) -> i64 {
    use sqlx::Connection;
    let url = database_url.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                     AND state LIKE 'idle in transaction%'",
                )
                .fetch_one(&mut conn)
                .await
                .expect("read pg_stat_activity");
                n
            })
    })
    .join()
    .expect("query thread")
}

/// Clients that hang up 0–10 ms after sending a meeting moment, beside other traffic: every
/// moment that took effect (it has its webhooks) is attempted at once, not when the lease of
/// an interrupted hand-off runs out (35 s with the default request timeout), and no database
/// connection is left mid-transaction (PostgreSQL would warn "there is already a transaction
/// in progress" / "there is no transaction in progress" to the next user, and sqlx logs
/// those warnings).
#[test]
fn changes_whose_clients_hang_up_are_attempted_at_once() {
    const HANG_UPS: usize = 240;
    const CLIENTS: usize = 6;
    // Warnings only, from sqlx's report of the database's notices too; not Tidings' own
    // warnings about the refused test URLs.
    let s = TestServer::start_env(&[("RUST_LOG", "warn,tidings=error")]);
    let t = Tree::build(&s);
    let meetings: Vec<String> = (0..12)
        .map(|_| {
            s.create(
                "meetings",
                &direct_meeting_body(&t.company.id, &t.company_user),
            )["id"]
                .as_str()
                .expect("meeting id")
                .to_owned()
        })
        .collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Other clients keep changing another meeting meanwhile, and wait for their answers.
        let traffic = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                s.moment(&t.personal_meeting, "wait");
                n += 1;
            }
            n
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (base, meetings) = (&s.base, &meetings);
                scope.spawn(move || {
                    for i in (c..HANG_UPS).step_by(CLIENTS) {
                        let meeting = &meetings[i % meetings.len()];
                        let after = Duration::from_millis((i % 11) as u64);
                        hang_up(base, &format!("/v1/meetings/{meeting}/wait"), after);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().expect("hang-up client");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(traffic.join().expect("traffic") > 0, "other traffic ran");
    });

    // Far below the lease (35 s), far above an attempt on loopback.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (mut took_effect, mut waiting) = (0, Vec::new());
    while std::time::Instant::now() < deadline {
        let webhooks = s.webhooks(&[("type", "MEETING_WAIT")]);
        took_effect = webhooks.len();
        waiting = webhooks
            .into_iter()
            .filter(|w| w["attempt_count"] == 0)
            .map(|w| format!("{} (subject {})", w["id"], w["subject_id"]))
            .collect();
        if waiting.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        took_effect >= 3,
        "some hung-up moments took effect ({took_effect} webhooks)"
    );
    assert!(
        waiting.is_empty(),
        "{} of {took_effect} MEETING_WAIT webhooks not attempted 5 s after their clients hung up: {:?}",
        waiting.len(),
        &waiting[..waiting.len().min(10)]
    );
    let logs = s.logs();
    assert!(
        !logs.contains("transaction in progress"),
        "a connection went back to its pool mid-transaction:\n{logs}"
    );
    let url = std::fs::read_to_string(s.db_path.with_file_name("database_url"))
        .expect("the test remembers its database URL");
    if url.starts_with("postgres") {
        assert_eq!(
            idle_in_transaction(&url),
            0,
            "connections left in a transaction"
        );
    }
}

/// How long a wait across a restart may take (a PostgreSQL lease may have to end).
const ACROSS_A_RESTART: Duration = Duration::from_secs(60);

/// An ordered level's second change to a meeting waits for the first across a SIGKILL: the
/// first fails, the process is killed between its attempts and restarted, and the second is
/// sent only after the first succeeded.
#[test]
fn an_ordered_webhook_still_waits_for_the_older_one_after_a_sigkill() {
    let ca = TestCa::new("Tidings test CA");
    let receiver = Receiver::start(&ca.loopback_identity());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path()).display().to_string();
    // Attempt 2 soon after 1, then a long wait: the test retries by hand once the receiver
    // is fixed, so the first webhook never fails for good meanwhile.
    let env = [
        ("TIDINGS_CA_FILE", ca_file.as_str()),
        ("TIDINGS_SSRF_ALLOW", "127.0.0.1/32"),
        ("TIDINGS_RETRY_SCHEDULE", "200ms,1h,1h,1h"),
        ("TIDINGS_REQUEST_TIMEOUT", "2s"),
    ];
    let db = dir.path().join("tidings.db");
    let mut server = TestServer::start_on(&db, &env);

    receiver.on("/setup", Reply::ok());
    receiver.on("/hook", Reply::status(500).body("not yet"));
    let line = Line::build(&server, &receiver.url("/setup"), 1);
    let (reseller, meeting) = (line.reseller, line.meetings[0].clone());
    server.patch_ok(
        &format!("/v1/resellers/{reseller}"),
        &json!({"webhook_url": receiver.url("/hook")}),
    );
    server.patch_ok(
        &format!("/v1/resellers/{reseller}/endpoint"),
        &json!({"ordered": true}),
    );
    let webhook_of = |s: &TestServer, event: &str| -> String {
        let list = s.get_ok(&format!("/v1/webhooks?subject_id={meeting}&type={event}"));
        list["data"][0]["id"].as_str().unwrap().to_owned()
    };
    server.moment(&meeting, "start");
    let first = webhook_of(&server, "MEETING_STARTED");
    server.moment(&meeting, "end");
    let second = webhook_of(&server, "MEETING_ENDED");
    let attempts = |s: &TestServer, id: &str| -> (String, u64) {
        let w = s.get_ok(&format!("/v1/webhooks/{id}"));
        (
            w["status"].as_str().unwrap().to_owned(),
            w["attempt_count"].as_u64().unwrap(),
        )
    };
    wait_until(ACROSS_A_RESTART, "the first attempt of the first", || {
        (attempts(&server, &first).1 >= 1).then_some(())
    });

    server.kill();
    let server = TestServer::start_on(&db, &env);
    wait_until(
        ACROSS_A_RESTART,
        "the second attempt of the first, after the restart",
        || (attempts(&server, &first).1 >= 2).then_some(()),
    );
    // The attempt's record moved the second behind the first's next retry, in the same
    // transaction: it is a state to read, not a quiet spell to wait out.
    assert_eq!(
        attempts(&server, &second),
        ("pending".to_owned(), 0),
        "the second waits while the first is pending"
    );
    let next_attempt = |id: &str| -> String {
        let w = server.get_ok(&format!("/v1/webhooks/{id}"));
        w["next_attempt_at"].as_str().unwrap().to_owned()
    };
    // Both read as `YYYY-MM-DDTHH:MM:SS.mmmZ`, which sorts as the time does.
    assert!(
        next_attempt(&second) >= next_attempt(&first),
        "the second is due no sooner than the first's retry: {} < {}",
        next_attempt(&second),
        next_attempt(&first)
    );

    receiver.on("/hook", Reply::ok());
    let retried = server.post(&format!("/v1/webhooks/{first}/retry"), &json!({}));
    assert_eq!(retried.status, 202, "{:?}", retried.body);
    wait_until(ACROSS_A_RESTART, "both delivered", || {
        (attempts(&server, &second).0 == "succeeded").then_some(())
    });
    assert_eq!(attempts(&server, &first).0, "succeeded");
    let sent: Vec<String> = receiver
        .requests_to("/hook")
        .iter()
        .map(|r| r.json())
        .filter(|b| b["data"]["id"] == meeting.as_str())
        .map(|b| b["type"].as_str().unwrap().to_owned())
        .collect();
    let ended_at = sent
        .iter()
        .position(|t| t == "MEETING_ENDED")
        .expect("the second was sent");
    assert!(
        sent.len() >= 3,
        "two failed attempts and the success of the first: {sent:?}"
    );
    assert!(
        sent[..ended_at].iter().all(|t| t == "MEETING_STARTED"),
        "{sent:?}"
    );
    assert_eq!(
        &sent[ended_at..],
        &["MEETING_ENDED".to_owned()],
        "the second once, after every attempt of the first: {sent:?}"
    );
}
