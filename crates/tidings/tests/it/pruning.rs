//! Retention end to end: Tidings in-process with its pruner, a retention of two seconds on a
//! `ManualClock`, real deliveries to HTTPS receivers on loopback. On SQLite by default, on
//! PostgreSQL with `TIDINGS_TEST_STORE=postgres`.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use tidings::clock::{Clock, ManualClock, SystemClock};
use tidings::domain::Millis;

use crate::helpers::app::Setup;
use crate::helpers::receiver::Reply;
use crate::helpers::{eventually, metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_webhooks_past_retention_are_pruned_and_retrying_ones_survive() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/ok", Reply::ok());
    receiver.on("/down", Reply::status(503).body("later"));
    let clock = ManualClock::new(Millis(SystemClock.now().0));
    let app = setup
        .manual_clock(&clock)
        // A failed first attempt waits 24 hours for the second.
        .schedule("24h")
        .retention(Duration::from_secs(2))
        .start()
        .await;
    let ok = app.create_reseller(&receiver.url("/ok")).await;
    let down = app.create_reseller(&receiver.url("/down")).await;

    // A stream of events: ten delivered, one waiting for its retry in 24 hours.
    let mut delivered = Vec::new();
    for _ in 0..10 {
        delivered.push(app.dealer_created_webhook(&ok).await);
    }
    let retrying = app.dealer_created_webhook(&down).await;
    for id in &delivered {
        app.wait_status(id, "succeeded").await;
    }
    let w = app.wait_attempts(&retrying, 1).await;
    assert_eq!(w["status"], "pending");

    // Three seconds later (past the retention), the stream goes on.
    clock.advance(Duration::from_secs(3));
    let mut recent = Vec::new();
    for _ in 0..3 {
        recent.push(app.dealer_created_webhook(&ok).await);
    }
    for id in &recent {
        app.wait_status(id, "succeeded").await;
    }

    // The old delivered webhooks go, with their attempts.
    for id in &delivered {
        let path = format!("/v1/webhooks/{id}");
        let body = eventually(&format!("{id} pruned"), || async {
            let (status, body) = app.request(Method::GET, &path, None).await;
            (status == StatusCode::NOT_FOUND).then_some(body)
        })
        .await;
        assert_eq!(body["error"]["code"], "not_found");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("longer than the retention (TIDINGS_RETENTION=2s)"),
            "{message}"
        );
    }
    // The one waiting for its 24-hour retry stays, with its attempt; so do the recent ones.
    let w = app.webhook(&retrying).await;
    assert_eq!(
        (&w["status"], &w["attempt_count"]),
        (&Value::from("pending"), &Value::from(1))
    );
    assert_eq!(w["attempts"].as_array().unwrap().len(), 1);
    for id in &recent {
        assert_eq!(app.webhook(id).await["status"], "succeeded");
    }
    let db = app.database().await;
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        attempts,
        1 + 3,
        "the retrying webhook's and the recent ones'"
    );
    // Counted once the batch's transaction is over.
    let text = eventually("the pruned rows counted", || async {
        let text = app.metrics().await;
        (metric(&text, "tidings_pruned_rows_total{kind=\"event\"}") == Some(10.0)).then_some(text)
    })
    .await;
    assert_eq!(
        metric(&text, "tidings_pruned_rows_total{kind=\"webhook\"}"),
        Some(10.0)
    );
    assert_eq!(
        metric(&text, "tidings_pruned_rows_total{kind=\"attempt\"}"),
        Some(10.0)
    );
    assert!(metric(&text, "tidings_store_size_bytes").is_some_and(|b| b > 0.0));

    // A day later the retry is made, on time (the last of the schedule: it fails for good).
    clock.advance(Duration::from_secs(24 * 3600));
    app.wake();
    let w = app.wait_attempts(&retrying, 2).await;
    assert_eq!(w["status"], "failed");
    // A webhook that never existed, with a recent id, is simply not found.
    let fresh = tidings::domain::EntityId::generate(clock.now());
    let (status, body) = app
        .request(Method::GET, &format!("/v1/webhooks/{fresh}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["error"]["message"],
        format!("webhook {fresh} not found")
    );
}
