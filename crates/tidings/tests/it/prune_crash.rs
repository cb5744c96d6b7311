//! Retention under a crash: the real binary, a retention of one second and a steady stream
//! of events, SIGKILLed while it is pruning; restarted on the same store, nothing refers to a
//! row that is gone, and every webhook still waiting for its retry is there.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;

use crate::helpers::receiver::{Receiver, Reply};
use crate::helpers::server::TestServer;
use crate::helpers::tree::contact;
use crate::helpers::{metric, OPERATOR_KEY};

fn reseller(s: &TestServer, url: &str) -> String {
    let r = s.create(
        "resellers",
        &json!({"name": "R", "contact": contact("Rita", "rita@example.com"), "webhook_url": url}),
    );
    r["id"].as_str().unwrap().to_owned()
}

/// Creates a dealer under `reseller`: one DEALER_CREATED webhook to the reseller.
fn dealer(s: &TestServer, reseller: &str) {
    s.create(
        "dealers",
        &json!({"name": "D", "contact": contact("Dirk", "dirk@example.com"), "reseller": {"id": reseller}}),
    );
}

#[test]
fn a_sigkill_while_pruning_leaves_a_consistent_store() {
    // `/ok` delivers, `/down` answers 503.
    let receiver = Receiver::http();
    receiver.otherwise(Reply::status(503));
    receiver.on("/ok", Reply::ok());
    let port = receiver.port();
    let env = [
        ("TIDINGS_RETENTION", "1s"),
        ("TIDINGS_ALLOW_HTTP", "true"),
        ("TIDINGS_SSRF_ALLOW", "127.0.0.1/32"),
        // A failed attempt waits an hour for the next.
        ("TIDINGS_RETRY_SCHEDULE", "1h"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tidings.db");
    let mut server = TestServer::start_on(&db, &env);
    let ok = reseller(&server, &format!("http://127.0.0.1:{port}/ok"));
    let down = reseller(&server, &format!("http://127.0.0.1:{port}/down"));

    // A steady stream of events from two threads: most delivered, one in ten retrying.
    let stop = AtomicBool::new(false);
    let retrying = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let s = &server;
        for worker in 0..2 {
            let (stop, retrying, ok, down) = (&stop, &retrying, &ok, &down);
            let client = reqwest::blocking::Client::new();
            let url = s.url("/v1/dealers");
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let target = if (n + worker) % 10 == 0 { down } else { ok };
                    // The kill may cut a request off: its outcome is unknown and not counted.
                    let answer = client
                        .post(&url)
                        .bearer_auth(OPERATOR_KEY)
                        .json(&json!({"name": "D", "contact": contact("Dirk", "dirk@example.com"), "reseller": {"id": target}}))
                        .send();
                    let created = answer.is_ok_and(|a| a.status() == 201);
                    if created && target == down {
                        retrying.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        // Killed once pruning is under way: old webhooks pruned, the stream still going.
        loop {
            let text = s.get("/metrics").body;
            if metric(
                text.as_str().unwrap_or_default(),
                "tidings_pruned_rows_total{kind=\"webhook\"}",
            )
            .unwrap_or(0.0)
                >= 200.0
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "nothing was pruned: {}",
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        kill_9(s.pid());
        stop.store(true, Ordering::SeqCst);
    });
    server.kill();
    let retrying = retrying.load(Ordering::SeqCst);
    assert!(retrying > 0);

    // Restarted on the same store: it starts, and the pending retries are all there.
    let mut again = TestServer::start_on(&db, &env);
    let pending = again.list_all(
        "/v1/webhooks",
        &[("status", "pending"), ("level_id", &down)],
    );
    assert!(
        pending.len() >= retrying,
        "{} pending retries found, {retrying} acknowledged",
        pending.len()
    );
    dealer(&again, &ok);
    again.kill();

    let url = std::fs::read_to_string(dir.path().join("database_url")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        for (what, sql) in [
            ("attempts without their webhook", "SELECT COUNT(*) AS n FROM attempts a WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = a.webhook_id)"),
            ("webhooks without their event", "SELECT COUNT(*) AS n FROM webhooks w WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = w.event_id)"),
            ("notifications without their webhook", "SELECT COUNT(*) AS n FROM notifications n WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = n.webhook_id)"),
            ("finished webhooks without an attempt", "SELECT COUNT(*) AS n FROM webhooks w WHERE w.status <> 'pending' AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.webhook_id = w.id)"),
        ] {
            let n: i64 = sqlx::query(sql).fetch_one(&pool).await.unwrap().get("n");
            assert_eq!(n, 0, "{what}");
        }
        if url.starts_with("sqlite:") {
            let check: String = sqlx::query("PRAGMA integrity_check")
                .fetch_one(&pool)
                .await
                .unwrap()
                .get(0);
            assert_eq!(check, "ok");
            let broken = sqlx::query("PRAGMA foreign_key_check")
                .fetch_all(&pool)
                .await
                .unwrap();
            assert!(broken.is_empty(), "foreign keys broken");
        }
    });
}

/// SIGKILLs `pid` and waits until it is gone.
fn kill_9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
