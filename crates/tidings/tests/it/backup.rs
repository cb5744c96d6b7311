//! `tidings backup`: a copy of the SQLite store taken while `serve` runs under load opens in a
//! fresh `serve`, which delivers what was pending. On PostgreSQL it points to pg_dump.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::receiver::{Receiver, Reply};
use crate::helpers::server::{tidings_command, TestServer};
use crate::helpers::tree::contact;
use crate::helpers::OPERATOR_KEY;

const ENV: [(&str, &str); 3] = [
    ("TIDINGS_ALLOW_HTTP", "true"),
    ("TIDINGS_SSRF_ALLOW", "127.0.0.1/32"),
    // Failed attempts are retried every two seconds for ten seconds.
    ("TIDINGS_RETRY_SCHEDULE", "2s,2s,2s,2s,2s"),
];

fn tidings(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    tidings_command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The `webhook-id`s the receiver answered 200.
fn delivered(receiver: &Receiver) -> HashSet<String> {
    receiver
        .requests()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

#[test]
fn a_backup_taken_under_load_opens_in_a_fresh_server_that_delivers_what_was_pending() {
    if std::env::var("TIDINGS_TEST_STORE").is_ok_and(|s| s == "postgres") {
        return; // a SQLite store's backup; PostgreSQL's is pg_dump (the test below)
    }
    // Down until the copy is restored.
    let receiver = Receiver::http();
    receiver.otherwise(Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tidings.db");
    let server = TestServer::start_on(&db, &ENV);
    let reseller = server.create(
        "resellers",
        &json!({"name": "R", "contact": contact("Rita", "rita@example.com"),
                "webhook_url": receiver.url("/down")}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dealer = |client: &reqwest::blocking::Client| {
        client
            .post(server.url("/v1/dealers"))
            .bearer_auth(OPERATOR_KEY)
            .json(
                &json!({"name": "D", "contact": contact("Dirk", "dirk@example.com"),
                          "reseller": {"id": reseller}}),
            )
            .send()
            .is_ok_and(|a| a.status() == 201)
    };
    let client = reqwest::blocking::Client::new();
    for _ in 0..50 {
        assert!(dealer(&client));
    }

    // The backup is taken while two threads keep making changes.
    let backup_dir = tempfile::tempdir().unwrap();
    let copy = backup_dir.path().join("tidings.db");
    let stop = AtomicBool::new(false);
    let during = AtomicUsize::new(0);
    let output = std::thread::scope(|scope| {
        for _ in 0..2 {
            let (stop, during, dealer) = (&stop, &during, &dealer);
            scope.spawn(move || {
                let client = reqwest::blocking::Client::new();
                while !stop.load(Ordering::SeqCst) {
                    if dealer(&client) {
                        during.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        // Under way before the copy starts.
        while during.load(Ordering::SeqCst) < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let url = format!("sqlite://{}", db.display());
        let key = dir.path().join("tidings.key");
        let output = tidings(
            &["backup", copy.to_str().unwrap()],
            &[
                ("TIDINGS_DATABASE_URL", url.as_str()),
                ("TIDINGS_SECRET_KEY_FILE", key.to_str().unwrap()),
            ],
        );
        stop.store(true, Ordering::SeqCst);
        output
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "Keep the key file {} with this copy",
            dir.path().join("tidings.key").display()
        )),
        "{stdout}"
    );
    drop(server);

    // What the copy holds: everything acknowledged before it began, some of it pending.
    let (total, pending) = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=ro", copy.display());
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM webhooks")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("n");
        let pending: Vec<String> = sqlx::query("SELECT id FROM webhooks WHERE status = 'pending'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("id"))
            .collect();
        pool.close().await;
        (total, pending)
    });
    assert!(total >= 50 + 20, "{total} webhooks in the copy");
    assert!(!pending.is_empty());

    // Restored: the copy and the key file in a new directory, the receiver now up. The fresh
    // server delivers every webhook that was pending in the copy, signed with the same key.
    std::fs::copy(
        dir.path().join("tidings.key"),
        backup_dir.path().join("tidings.key"),
    )
    .unwrap();
    receiver.otherwise(Reply::ok());
    let restored = TestServer::start_on(&copy, &ENV);
    let started = Instant::now();
    loop {
        let delivered = delivered(&receiver);
        if pending.iter().all(|id| delivered.contains(id)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} of {} delivered: {}",
            pending.iter().filter(|id| delivered.contains(*id)).count(),
            pending.len(),
            restored.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for id in &pending {
        let w = restored.get_ok(&format!("/v1/webhooks/{id}"));
        assert_eq!(w["status"], "succeeded", "{w}");
    }
}

#[test]
fn a_backup_of_a_postgresql_store_points_to_pg_dump() {
    let output = tidings(
        &["backup", "/nonexistent/copy.db"],
        &[(
            "TIDINGS_DATABASE_URL",
            "postgres://tidings:secret@db.example/tidings",
        )],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is not shown: {stderr}"
    );
}
