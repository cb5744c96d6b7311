//! Delivery end to end (docs/contract.md#sending, #success, #attempts, #signatures): Tidings in-process with its real store,
//! API and dispatcher, sending over real TLS to receivers on loopback whose certificates are
//! made by a CA that exists only for the test.
//!
//! Every test makes a DEALER_CREATED webhook to a reseller's URL (one event, one receiving
//! level) and asserts exact values: what the receiver got, byte for byte, and what the API
//! recorded. Timings are driven by a `ManualClock` or waited for with bounded polling; no
//! assertion depends on how long something took.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tidings::clock::{Clock, ManualClock, SystemClock};
use tidings::domain::Millis;
use tidings::schedule::RetrySchedule;
use tidings_verify::{Secret, Verifier};

use crate::helpers::app::Setup;
use crate::helpers::receiver::{Received, Receiver, Reply};
use crate::helpers::tls::TestCa;
use crate::helpers::{eventually, free_port};

/// A timestamp as the API writes it.
fn ts(millis: i64) -> String {
    Millis(millis).to_rfc3339()
}

fn attempts(webhook: &Value) -> &Vec<Value> {
    webhook["attempts"].as_array().expect("attempts are listed")
}

/// A receiver presenting a certificate from `ca`.
fn receiver(ca: &TestCa) -> Receiver {
    Receiver::start(&ca.loopback_identity())
}

fn verifier(secret: &str) -> Verifier {
    Verifier::new(Secret::parse(secret).unwrap())
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const MS: Duration = Duration::from_millis(1);

// --- what one attempt records ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_answer_is_delivered_exactly_once() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/hook", Reply::ok());
    let app = setup.start().await;
    let reseller = app.create_reseller(&receiver.url("/hook")).await;

    let id = app.dealer_created_webhook(&reseller).await;

    let w = app.wait_status(&id, "succeeded").await;
    assert_eq!(w["attempt_count"], 1);
    assert_eq!(w["next_attempt_at"], Value::Null);
    assert_eq!(w["url"], receiver.url("/hook"));
    let a = attempts(&w);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["number"], 1);
    assert_eq!(a[0]["status_code"], 200);
    assert_eq!(a[0]["error"], Value::Null);
    assert_eq!(a[0]["body"], "ok");
    app.idle().await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "delivered once, not again");
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook"));
    assert_eq!(r.header("content-type"), "application/json");
    let body = r.json();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["attempt"], 1);
    assert_eq!(body["type"], "DEALER_CREATED");
    assert_eq!(body["created"], w["created"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_status_but_200_is_a_failed_attempt_with_its_code_and_body_excerpt() {
    let (setup, receiver) = Setup::new().with_receiver();
    let long = "0123456789abcdef".repeat(200); // 3200 bytes: only the first 1 KiB is kept
    let cases: [(&str, Reply, u16, &str); 5] = [
        (
            "/created",
            Reply::status(201).body("created it"),
            201,
            "created it",
        ),
        ("/no-content", Reply::status(204), 204, ""),
        (
            "/moved",
            Reply::status(301)
                .header("location", receiver.url("/target"))
                .body("moved away"),
            301,
            "moved away",
        ),
        (
            "/error",
            Reply::status(500).body("database is down"),
            500,
            "database is down",
        ),
        (
            "/huge",
            Reply::status(503).body(long.clone()),
            503,
            &long[..1024],
        ),
    ];
    for (path, reply, ..) in &cases {
        receiver.on(path, reply.clone());
    }
    let app = setup.start().await;

    for (path, _, status, excerpt) in &cases {
        let reseller = app.create_reseller(&receiver.url(path)).await;
        let id = app.dealer_created_webhook(&reseller).await;
        let w = app.wait_attempts(&id, 1).await;
        assert_eq!(
            w["status"], "pending",
            "{path}: a failed attempt is retried later"
        );
        assert!(w["next_attempt_at"].is_string(), "{path}");
        let a = &attempts(&w)[0];
        assert_eq!(a["number"], 1, "{path}");
        assert_eq!(a["status_code"], *status, "{path}");
        assert_eq!(a["body"], *excerpt, "{path}");
        let error = a["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no error"));
        assert!(error.contains(&status.to_string()), "{path}: {error}");
        assert_eq!(receiver.requests_to(path).len(), 1, "{path}");
    }
    app.idle().await;
    assert!(
        receiver.requests_to("/target").is_empty(),
        "a redirect is not followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_slower_than_the_request_timeout_fails_with_a_timeout() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/hangs", Reply::hang());
    receiver.on("/late", Reply::ok().after(Duration::from_secs(3)));
    let app = setup
        .request_timeout(Duration::from_millis(500))
        .start()
        .await;

    for path in ["/hangs", "/late"] {
        let reseller = app.create_reseller(&receiver.url(path)).await;
        let id = app.dealer_created_webhook(&reseller).await;
        let w = app.wait_attempts(&id, 1).await;
        let a = &attempts(&w)[0];
        assert_eq!(a["status_code"], Value::Null, "{path}");
        assert_eq!(a["error"], "timed out", "{path}");
        assert_eq!(a["body"], "", "{path}");
        assert_eq!(w["status"], "pending", "{path}");
        assert_eq!(
            receiver.requests_to(path).len(),
            1,
            "{path}: the request arrived"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_connection_fails_with_a_connect_error() {
    let ca = TestCa::new("Tidings test CA");
    let app = Setup::new().trusting(&ca).start().await;
    let url = format!("https://127.0.0.1:{}/hook", free_port());
    let reseller = app.create_reseller(&url).await;

    let id = app.dealer_created_webhook(&reseller).await;

    let w = app.wait_attempts(&id, 1).await;
    let a = &attempts(&w)[0];
    assert_eq!(a["status_code"], Value::Null);
    let error = a["error"].as_str().unwrap();
    assert!(error.starts_with("connection failed"), "{error}");
    assert_eq!(w["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_from_an_untrusted_ca_fails_with_a_tls_error() {
    let ca = TestCa::new("Tidings test CA");
    let stranger = TestCa::new("A CA Tidings does not trust");
    let impostor = receiver(&stranger);
    let app = Setup::new().trusting(&ca).start().await;
    let reseller = app.create_reseller(&impostor.url("/hook")).await;

    let id = app.dealer_created_webhook(&reseller).await;

    let w = app.wait_attempts(&id, 1).await;
    let a = &attempts(&w)[0];
    assert_eq!(a["status_code"], Value::Null);
    let error = a["error"].as_str().unwrap();
    assert!(error.starts_with("TLS failed"), "{error}");
    assert!(impostor.connections() >= 1, "the TCP connection was made");
    assert!(
        impostor.requests().is_empty(),
        "no request after the handshake failed"
    );
}

// --- the whole life of a webhook ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_failed_attempts_end_failed_with_one_notification_and_every_request_signed() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/down", Reply::status(500).body("down for maintenance"));
    let app = setup.schedule("50ms,50ms,50ms,50ms").start().await;
    let url = receiver.url("/down");
    let reseller = app.create_reseller(&url).await;

    let id = app.dealer_created_webhook(&reseller).await;

    let w = app.wait_status(&id, "failed").await;
    assert_eq!(w["attempt_count"], 5);
    assert_eq!(w["next_attempt_at"], Value::Null);
    let a = attempts(&w);
    assert_eq!(
        a.iter().map(|a| a["number"].clone()).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    for attempt in a {
        assert_eq!(attempt["status_code"], 500);
        assert_eq!(attempt["body"], "down for maintenance");
    }
    app.idle().await;
    let requests = receiver.requests_to("/down");
    assert_eq!(requests.len(), 5, "five attempts, no more");
    let verifier = verifier(&app.secret("resellers", &reseller).await);
    for (i, r) in requests.iter().enumerate() {
        let body = r.json();
        assert_eq!(body["attempt"], i + 1, "attempts arrive in order");
        assert_eq!(body["id"], id.as_str(), "the same id on every attempt");
        assert_eq!(
            body["created"], w["created"],
            "the same created on every attempt"
        );
        assert_eq!(body["type"], "DEALER_CREATED");
        assert_eq!(r.header("webhook-id"), id);
        assert!(
            r.header("user-agent").starts_with("Tidings/"),
            "{}",
            r.header("user-agent")
        );
        assert_eq!(r.header("content-type"), "application/json");
        verifier
            .verify(
                r.header("webhook-id"),
                r.header("webhook-timestamp"),
                r.header("webhook-signature"),
                &r.body,
            )
            .unwrap_or_else(|e| panic!("attempt {}: {e}", i + 1));
    }
    let db = app.database().await;
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT webhook_id, level_id, url FROM notifications")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(rows, [(id.clone(), reseller.clone(), url.clone())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_follow_the_default_schedule_of_1m_10m_1h_24h() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/down", Reply::status(503).body("try later"));
    let t0 = SystemClock.now().0;
    let clock = ManualClock::new(Millis(t0));
    let app = setup.manual_clock(&clock).start().await;
    assert_eq!(app.settings().retry_schedule, RetrySchedule::default());
    let reseller = app.create_reseller(&receiver.url("/down")).await;

    let id = app.dealer_created_webhook(&reseller).await;

    let w = app.wait_attempts(&id, 1).await;
    assert_eq!(w["created"], ts(t0));
    assert_eq!(attempts(&w)[0]["started_at"], ts(t0));
    assert_eq!(w["next_attempt_at"], ts(t0 + 60_000));
    let mut now = t0;
    let delays = [MINUTE, 10 * MINUTE, HOUR, 24 * HOUR];
    for (i, delay) in delays.into_iter().enumerate() {
        let attempt = i as u64 + 2;
        let due = now + delay.as_millis() as i64;

        // One millisecond before it is due, nothing happens.
        clock.advance(delay - MS);
        app.wake();
        app.idle().await;
        let w = app.webhook(&id).await;
        assert_eq!(
            w["attempt_count"],
            attempt - 1,
            "attempt {attempt} came early"
        );
        assert_eq!(w["next_attempt_at"], ts(due));
        assert_eq!(receiver.requests_to("/down").len() as u64, attempt - 1);

        // At the due time, the attempt is made.
        clock.advance(MS);
        app.wake();
        now = due;
        let w = app.wait_attempts(&id, attempt).await;
        assert_eq!(attempts(&w)[i + 1]["started_at"], ts(now));
        match delays.get(i + 1) {
            Some(next) => {
                assert_eq!(w["status"], "pending");
                assert_eq!(w["next_attempt_at"], ts(now + next.as_millis() as i64));
            }
            None => {
                assert_eq!(w["status"], "failed");
                assert_eq!(w["next_attempt_at"], Value::Null);
            }
        }
    }

    let requests = receiver.requests_to("/down");
    let starts: Vec<i64> = attempts(&app.webhook(&id).await)
        .iter()
        .map(|a| {
            Millis::parse_rfc3339(a["started_at"].as_str().unwrap())
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(
        starts,
        [
            t0,
            t0 + 60_000,
            t0 + 660_000,
            t0 + 4_260_000,
            t0 + 90_660_000
        ]
    );
    let verifier = verifier(&app.secret("resellers", &reseller).await);
    for (i, r) in requests.iter().enumerate() {
        assert_eq!(r.json()["attempt"], i + 1);
        // The signature's timestamp is the attempt's time on Tidings' clock.
        let seconds = starts[i].div_euclid(1000);
        assert_eq!(r.header("webhook-timestamp"), seconds.to_string());
        verifier
            .verify_at(
                r.header("webhook-id"),
                r.header("webhook-timestamp"),
                r.header("webhook-signature"),
                &r.body,
                seconds,
            )
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_url_change_does_not_redirect_retries_but_new_events_use_the_new_url() {
    let ca = TestCa::new("Tidings test CA");
    let (a, b) = (receiver(&ca), receiver(&ca));
    a.on("/hook", Reply::status(500));
    let clock = ManualClock::new(SystemClock.now());
    let app = Setup::new()
        .trusting(&ca)
        .manual_clock(&clock)
        .start()
        .await;
    let reseller = app.create_reseller(&a.url("/hook")).await;
    let first = app.dealer_created_webhook(&reseller).await;
    app.wait_attempts(&first, 1).await;

    let changed = app
        .patch(
            &format!("/v1/resellers/{reseller}"),
            json!({"webhook_url": b.url("/hook")}),
        )
        .await;
    assert_eq!(changed["webhook_url"], b.url("/hook"));
    for n in 2..=5 {
        clock.advance(25 * HOUR);
        app.wake();
        app.wait_attempts(&first, n).await;
    }

    let w = app.wait_status(&first, "failed").await;
    assert_eq!(w["url"], a.url("/hook"));
    let at_a = a.requests_to("/hook");
    assert_eq!(
        at_a.len(),
        5,
        "every retry went to the URL of the event's time"
    );
    assert!(at_a.iter().all(|r| r.json()["id"] == first.as_str()));
    assert!(b.requests().is_empty());

    let second = app.dealer_created_webhook(&reseller).await;
    let w = app.wait_status(&second, "succeeded").await;
    assert_eq!(w["url"], b.url("/hook"));
    let at_b = b.requests_to("/hook");
    assert_eq!(at_b.len(), 1);
    assert_eq!(at_b[0].json()["id"], second.as_str());
    assert_eq!(a.requests().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_receiver_does_not_delay_a_burst_to_another_receiver() {
    const HANGING: usize = 8;
    const BURST: usize = 50;
    let ca = TestCa::new("Tidings test CA");
    let (stuck, healthy) = (receiver(&ca), receiver(&ca));
    stuck.on("/hook", Reply::hang());
    healthy.on("/hook", Reply::ok());
    // Attempts to the stuck receiver can only end by this timeout.
    let app = Setup::new()
        .trusting(&ca)
        .request_timeout(Duration::from_secs(20))
        .start()
        .await;
    let stuck_level = app.create_reseller(&stuck.url("/hook")).await;
    let healthy_level = app.create_reseller(&healthy.url("/hook")).await;

    let mut hanging = Vec::new();
    for _ in 0..HANGING {
        hanging.push(app.dealer_created_webhook(&stuck_level).await);
    }
    eventually("every hanging attempt is in flight", || async {
        (stuck.requests().len() == HANGING).then_some(())
    })
    .await;
    for _ in 0..BURST {
        app.dealer_created_webhook(&healthy_level).await;
    }

    let delivered = eventually("the whole burst is delivered", || async {
        let all = app.webhooks_of(&healthy_level).await;
        let done = all.iter().filter(|w| w["status"] == "succeeded").count();
        (done == BURST).then_some(all)
    })
    .await;
    // At that moment not one attempt to the stuck receiver has finished.
    for id in &hanging {
        let w = app.webhook(id).await;
        assert_eq!(w["status"], "pending", "{id}");
        assert_eq!(w["attempt_count"], 0, "{id}");
        assert!(attempts(&w).is_empty(), "{id}");
    }
    assert_eq!(stuck.requests().len(), HANGING);
    assert_eq!(delivered.len(), BURST);
    assert!(delivered.iter().all(|w| w["attempt_count"] == 1));
    assert_eq!(healthy.requests().len(), BURST);
}

/// New webhooks go straight to the dispatcher, past the claim loop. Those its destination
/// cannot take yet (one at a time here, one more waiting) are handed back to the store for
/// a moment; they must be sent as soon as they are due again, not when the claim loop wakes
/// by itself (every 30 s when idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_a_busy_destination_hands_back_are_sent_when_due_again() {
    const N: usize = 5;
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/slow", Reply::ok().after(Duration::from_millis(200)));
    let app = setup.per_destination(1).start().await;
    let level = app.create_reseller(&receiver.url("/slow")).await;
    let mut ids = Vec::new();
    for _ in 0..N {
        ids.push(app.dealer_created_webhook(&level).await);
    }
    // One at a time, 200 ms each, with back-offs of at most a second between: each wait
    // (10 s at most) ends well before the claim loop's idle sleep (30 s) would.
    for id in &ids {
        app.wait_status(id, "succeeded").await;
    }
    assert_eq!(receiver.requests_to("/slow").len(), N, "each sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loopback_destinations_are_refused_unless_allow_listed() {
    let ca = TestCa::new("Tidings test CA");
    let receiver = receiver(&ca);
    let guarded = Setup::new().trusting(&ca).ssrf_allow("").start().await;
    let by_ip = guarded.create_reseller(&receiver.url("/ip")).await;
    let by_name = guarded
        .create_reseller(&receiver.localhost_url("/name"))
        .await;

    for level in [&by_ip, &by_name] {
        let id = guarded.dealer_created_webhook(level).await;
        let w = guarded.wait_attempts(&id, 1).await;
        let a = &attempts(&w)[0];
        let error = a["error"].as_str().unwrap();
        assert!(
            error.starts_with("destination refused:") && error.contains("loopback"),
            "{} -> {error}",
            w["url"]
        );
        assert_eq!(a["status_code"], Value::Null);
    }
    assert_eq!(
        receiver.connections(),
        0,
        "not one packet reached the receiver"
    );
    drop(guarded);

    let allowing = Setup::new()
        .trusting(&ca)
        .ssrf_allow("127.0.0.1/32")
        .start()
        .await;
    let level = allowing.create_reseller(&receiver.url("/ip")).await;
    let id = allowing.dealer_created_webhook(&level).await;
    allowing.wait_status(&id, "succeeded").await;
    assert_eq!(receiver.requests_to("/ip").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_in_the_middle_of_the_schedule_keeps_the_next_attempt_time() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/down", Reply::status(500));
    let t0 = SystemClock.now().0;
    let app = setup
        .manual_clock(&ManualClock::new(Millis(t0)))
        .start()
        .await;
    let reseller = app.create_reseller(&receiver.url("/down")).await;
    let id = app.dealer_created_webhook(&reseller).await;
    let before = app.wait_attempts(&id, 1).await;
    assert_eq!(before["next_attempt_at"], ts(t0 + 60_000));

    let clock = ManualClock::new(Millis(t0));
    let app = app.restart().await.manual_clock(&clock).start().await;

    let w = app.webhook(&id).await;
    assert_eq!(w["status"], "pending");
    assert_eq!(w["attempt_count"], 1);
    assert_eq!(w["next_attempt_at"], before["next_attempt_at"]);
    clock.advance(MINUTE - MS);
    app.wake();
    app.idle().await;
    assert_eq!(app.webhook(&id).await["attempt_count"], 1);
    assert_eq!(
        receiver.requests().len(),
        1,
        "not attempted before it is due"
    );

    clock.advance(MS);
    app.wake();
    let w = app.wait_attempts(&id, 2).await;
    assert_eq!(attempts(&w)[1]["started_at"], ts(t0 + 60_000));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let body = requests[1].json();
    assert_eq!(body["attempt"], 2);
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["created"], before["created"]);
    // The restarted instance opened the sealed secret with the same key file.
    verifier(&app.secret("resellers", &reseller).await)
        .verify_at(
            requests[1].header("webhook-id"),
            requests[1].header("webhook-timestamp"),
            requests[1].header("webhook-signature"),
            &requests[1].body,
            (t0 + 60_000).div_euclid(1000),
        )
        .unwrap();
}

// --- signatures, manual resends and metrics -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_rotation_deliveries_carry_the_old_and_the_new_signature() {
    let (setup, receiver) = Setup::new().with_receiver();
    let app = setup.start().await;
    let reseller = app.create_reseller(&receiver.url("/hook")).await;
    let old = app.secret("resellers", &reseller).await;
    let before = app.dealer_created_webhook(&reseller).await;
    app.wait_status(&before, "succeeded").await;

    let new = app.rotate_secret("resellers", &reseller).await;
    assert!(new.starts_with("whsec_"));
    assert_ne!(new, old);
    assert_eq!(app.secret("resellers", &reseller).await, new);
    let after = app.dealer_created_webhook(&reseller).await;
    app.wait_status(&after, "succeeded").await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    let (old_v, new_v) = (verifier(&old), verifier(&new));
    let check = |v: &Verifier, r: &Received, signature: &str| {
        v.verify(
            r.header("webhook-id"),
            r.header("webhook-timestamp"),
            signature,
            &r.body,
        )
        .is_ok()
    };
    let r = &requests[0];
    assert_eq!(r.json()["id"], before.as_str());
    let signature = r.header("webhook-signature");
    assert_eq!(signature.split(' ').count(), 1, "{signature}");
    assert!(check(&old_v, r, signature));

    let r = &requests[1];
    assert_eq!(r.json()["id"], after.as_str());
    let signatures: Vec<&str> = r.header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    let by_old: Vec<bool> = signatures.iter().map(|s| check(&old_v, r, s)).collect();
    let by_new: Vec<bool> = signatures.iter().map(|s| check(&new_v, r, s)).collect();
    assert_eq!(by_old.iter().filter(|ok| **ok).count(), 1, "{signatures:?}");
    assert_eq!(by_new.iter().filter(|ok| **ok).count(), 1, "{signatures:?}");
    assert_ne!(by_old, by_new, "one signature per secret");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_old_secret_stops_signing_24_hours_after_a_rotation() {
    let (setup, receiver) = Setup::new().with_receiver();
    let t0 = SystemClock.now().0;
    let clock = ManualClock::new(Millis(t0));
    let app = setup.manual_clock(&clock).start().await;
    let reseller = app.create_reseller(&receiver.url("/hook")).await;
    let old = app.secret("resellers", &reseller).await;
    let new = app.rotate_secret("resellers", &reseller).await;

    clock.advance(24 * HOUR - MS);
    let last_overlap = app.dealer_created_webhook(&reseller).await;
    app.wait_status(&last_overlap, "succeeded").await;
    clock.advance(MS);
    let after_overlap = app.dealer_created_webhook(&reseller).await;
    app.wait_status(&after_overlap, "succeeded").await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for (r, at, signers) in [
        (&requests[0], t0 + 86_399_999, vec![&old, &new]),
        (&requests[1], t0 + 86_400_000, vec![&new]),
    ] {
        let header = r.header("webhook-signature");
        assert_eq!(header.split(' ').count(), signers.len(), "{header}");
        for secret in [&old, &new] {
            let verified = verifier(secret)
                .verify_at(
                    r.header("webhook-id"),
                    r.header("webhook-timestamp"),
                    header,
                    &r.body,
                    at.div_euclid(1000),
                )
                .is_ok();
            assert_eq!(verified, signers.contains(&secret), "at {}", ts(at));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retrying_a_failed_webhook_makes_a_sixth_attempt() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/flaky", Reply::status(502).body("bad gateway"));
    let app = setup.schedule("50ms,50ms,50ms,50ms").start().await;
    let reseller = app.create_reseller(&receiver.url("/flaky")).await;
    let id = app.dealer_created_webhook(&reseller).await;
    app.wait_status(&id, "failed").await;

    receiver.on("/flaky", Reply::ok());
    let queued = app
        .post(
            &format!("/v1/webhooks/{id}/retry"),
            json!({}),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(queued["id"], id.as_str());

    let w = app.wait_status(&id, "succeeded").await;
    assert_eq!(w["attempt_count"], 6);
    let sixth = &attempts(&w)[5];
    assert_eq!(sixth["number"], 6);
    assert_eq!(sixth["status_code"], 200);
    assert_eq!(sixth["error"], Value::Null);
    app.idle().await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 6, "exactly one more attempt");
    assert_eq!(requests[5].json()["id"], id.as_str());
    assert_eq!(requests[5].json()["attempt"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recover_requeues_the_failed_webhooks_of_a_level_since_a_time() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/outage", Reply::status(503));
    let app = setup.schedule("50ms,50ms,50ms,50ms").start().await;
    let reseller = app.create_reseller(&receiver.url("/outage")).await;
    let earlier = app.dealer_created_webhook(&reseller).await;
    app.wait_status(&earlier, "failed").await;
    let later = [
        app.dealer_created_webhook(&reseller).await,
        app.dealer_created_webhook(&reseller).await,
    ];
    let mut since = None;
    for id in &later {
        let w = app.wait_status(id, "failed").await;
        since.get_or_insert(w["created"].clone());
    }
    assert_eq!(receiver.requests().len(), 15);

    receiver.on("/outage", Reply::ok());
    let answer = app
        .post(
            "/v1/webhooks/recover",
            json!({"level_id": reseller, "since": since.unwrap()}),
            StatusCode::ACCEPTED,
        )
        .await;
    assert_eq!(answer, json!({"recovered": 2}));

    for id in &later {
        let w = app.wait_status(id, "succeeded").await;
        assert_eq!(w["attempt_count"], 6);
    }
    app.idle().await;
    let w = app.webhook(&earlier).await;
    assert_eq!(w["status"], "failed", "created before `since`");
    assert_eq!(w["attempt_count"], 5);
    assert_eq!(receiver.requests().len(), 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_attempts_by_outcome_and_show_the_queue() {
    let (setup, receiver) = Setup::new().with_receiver();
    receiver.on("/down", Reply::status(500));
    let t0 = SystemClock.now().0;
    let clock = ManualClock::new(Millis(t0));
    let mut app = setup.manual_clock(&clock).start().await;
    let up = app.create_reseller(&receiver.url("/up")).await;
    let down = app.create_reseller(&receiver.url("/down")).await;
    let delivered = app.dealer_created_webhook(&up).await;
    let failing = app.dealer_created_webhook(&down).await;
    app.wait_status(&delivered, "succeeded").await;
    app.wait_attempts(&failing, 1).await;

    // With the dispatcher stopped, the failed webhook becomes due and waits.
    app.stop().await;
    clock.advance(2 * HOUR);
    let text = app.metrics().await;

    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "tidings_attempts_total{outcome=\"succeeded\"} 1",
        "tidings_attempts_total{outcome=\"http_status\"} 1",
        "tidings_webhooks_recorded_total{status=\"succeeded\"} 1",
        "tidings_webhooks_recorded_total{status=\"pending\"} 1",
        // The dispatcher had room: both went to it straight from their API change.
        "tidings_webhooks_handed_off_total 2",
        "tidings_queue_depth 1",
        // Due at t0 + 1 min, now t0 + 2 h.
        "tidings_oldest_due_age_seconds 7140",
        "tidings_first_attempt_lag_seconds_count 2",
    ] {
        assert!(lines.contains(&expected), "no `{expected}` in:\n{text}");
    }
}
