//! Endpoint settings end to end (docs/endpoints.md): Tidings in-process with its real store
//! (SQLite, or PostgreSQL with `TIDINGS_TEST_STORE=postgres`), API and dispatcher, sending
//! over real TLS to a receiver on loopback.
//!
//! The hierarchy: a reseller whose URL is the receiver, a dealer, a company, an agent and two
//! direct meetings; meeting events go to the reseller only. Retries are driven by a
//! `ManualClock`; waiting is bounded polling.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tidings::clock::{Clock, ManualClock, SystemClock};
use tidings::domain::Millis;

use crate::helpers::app::{Setup, TestApp};
use crate::helpers::receiver::{Receiver, Reply};
use crate::helpers::tree::Line;
use crate::helpers::{eventually, id_of};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The levels and meetings of a test.
struct Tree {
    reseller: String,
    company: String,
    meetings: [String; 2],
}

/// Builds the line with the reseller's URL at `/setup` (answered 200, so the creation
/// webhooks are done with), then points the reseller at `path`.
async fn tree(app: &TestApp, receiver: &Receiver, path: &str) -> Tree {
    receiver.on("/setup", Reply::ok());
    let line = Line::build_on(app, &receiver.url("/setup"), 2).await;
    let reseller = line.reseller;
    eventually("the creation webhooks delivered", || async {
        let all = app.webhooks_of(&reseller).await;
        all.iter().all(|w| w["status"] == "succeeded").then_some(())
    })
    .await;
    app.patch(
        &format!("/v1/resellers/{reseller}"),
        json!({"webhook_url": receiver.url(path)}),
    )
    .await;
    Tree {
        reseller,
        company: line.company,
        meetings: [line.meetings[0].clone(), line.meetings[1].clone()],
    }
}

/// Reports a meeting moment; answers the id of the one webhook it made (to the reseller).
async fn moment(app: &TestApp, meeting: &str, what: &str) -> String {
    app.post(
        &format!("/v1/meetings/{meeting}/{what}"),
        json!({}),
        StatusCode::OK,
    )
    .await;
    let kind = match what {
        "start" => "MEETING_STARTED",
        "end" => "MEETING_ENDED",
        other => panic!("{other}"),
    };
    let list = app
        .get(&format!("/v1/webhooks?subject_id={meeting}&type={kind}"))
        .await;
    let data = list["data"].as_array().unwrap();
    id_of(data.last().expect("a webhook"))
}

/// `(type, attempt)` of every request the receiver got on `path` about `subject`.
fn received_about(receiver: &Receiver, path: &str, subject: &str) -> Vec<(String, u64)> {
    receiver
        .requests_to(path)
        .iter()
        .map(|r| r.json())
        .filter(|b| b["data"]["id"] == subject)
        .map(|b| {
            (
                b["type"].as_str().unwrap().to_owned(),
                b["attempt"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ordered_level_gets_a_meetings_second_change_only_after_the_first_succeeded() {
    let (setup, receiver) = Setup::new().with_receiver();
    let clock = ManualClock::new(Millis(SystemClock.now().0));
    let app = setup.manual_clock(&clock).start().await;
    let t = tree(&app, &receiver, "/hook").await;
    receiver.on("/hook", Reply::status(500).body("not yet"));
    let endpoint = app
        .patch(
            &format!("/v1/resellers/{}/endpoint", t.reseller),
            json!({"ordered": true}),
        )
        .await;
    assert_eq!(endpoint["ordered"], true);

    let [m1, m2] = &t.meetings;
    let first = moment(&app, m1, "start").await;
    app.wait_attempts(&first, 1).await;
    let second = moment(&app, m1, "end").await;
    // Another meeting is not held up by the first one's retries.
    let other = moment(&app, m2, "start").await;
    app.wait_attempts(&other, 1).await;

    for (advance, attempts) in [(MINUTE, 2), (10 * MINUTE, 3)] {
        clock.advance(advance);
        app.wake();
        app.wait_attempts(&first, attempts).await;
        app.idle().await;
        let w = app.webhook(&second).await;
        assert_eq!(
            (w["status"].as_str(), w["attempt_count"].as_u64()),
            (Some("pending"), Some(0)),
            "the second waits while the first is retried"
        );
    }
    receiver.on("/hook", Reply::ok());
    clock.advance(HOUR);
    app.wake();
    app.wait_status(&first, "succeeded").await;
    let w = app.wait_status(&second, "succeeded").await;
    assert_eq!(w["attempt_count"], 1);
    assert_eq!(
        received_about(&receiver, "/hook", m1),
        vec![
            ("MEETING_STARTED".to_owned(), 1),
            ("MEETING_STARTED".to_owned(), 2),
            ("MEETING_STARTED".to_owned(), 3),
            ("MEETING_STARTED".to_owned(), 4),
            ("MEETING_ENDED".to_owned(), 1),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_level_that_wants_only_meeting_ended_gets_only_that() {
    let (setup, receiver) = Setup::new().with_receiver();
    let app = setup.start().await;
    let t = tree(&app, &receiver, "/hook").await;
    receiver.on("/hook", Reply::ok());
    let path = format!("/v1/resellers/{}/endpoint", t.reseller);
    let before = app.get(&path).await;
    assert_eq!(before["event_types"].as_array().unwrap().len(), 22);
    assert_eq!(before["event_types_chosen"], false);
    let after = app
        .patch(&path, json!({"event_types": ["MEETING_ENDED"]}))
        .await;
    assert_eq!(after["event_types"], json!(["MEETING_ENDED"]));

    let m = &t.meetings[0];
    app.post(
        &format!("/v1/meetings/{m}/start"),
        json!({}),
        StatusCode::OK,
    )
    .await;
    let ended = moment(&app, m, "end").await;
    app.wait_status(&ended, "succeeded").await;
    app.idle().await;
    assert_eq!(
        received_about(&receiver, "/hook", m),
        vec![("MEETING_ENDED".to_owned(), 1)]
    );
    let started = app
        .get(&format!("/v1/webhooks?subject_id={m}&type=MEETING_STARTED"))
        .await;
    assert_eq!(started["data"], json!([]), "no webhook made for it at all");

    // Types the level could never receive, or that do not exist, name the field; nothing
    // changes.
    for (body, field) in [
        (
            json!({"event_types": ["MEETING_ENDED", "COMPANY_CHANGED"]}),
            "event_types[1]",
        ),
        (json!({"event_types": ["MEETING_PAUSED"]}), "event_types[0]"),
        (json!({"success": "3xx"}), "success"),
    ] {
        let (status, answer) = app
            .request(
                Method::PATCH,
                &format!("/v1/companies/{}/endpoint", t.company),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let company = app
        .get(&format!("/v1/companies/{}/endpoint", t.company))
        .await;
    assert_eq!(company["event_types"].as_array().unwrap().len(), 16);
    assert_eq!(company["success"], "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_204_is_a_failure_under_200_and_a_success_under_2xx() {
    let (setup, receiver) = Setup::new().with_receiver();
    let app = setup.start().await;
    let t = tree(&app, &receiver, "/no-content").await;
    receiver.on("/no-content", Reply::status(204));
    let [m1, m2] = &t.meetings;

    let strict = moment(&app, m1, "start").await;
    let w = app.wait_attempts(&strict, 1).await;
    assert_eq!(w["status"], "pending");
    assert_eq!(w["attempts"][0]["status_code"], 204);

    let path = format!("/v1/resellers/{}/endpoint", t.reseller);
    assert_eq!(
        app.patch(&path, json!({"success": "2xx"})).await["success"],
        "2xx"
    );
    let relaxed = moment(&app, m2, "start").await;
    let w = app.wait_status(&relaxed, "succeeded").await;
    assert_eq!(w["attempt_count"], 1);
    assert_eq!(w["attempts"][0]["status_code"], 204);
    assert_eq!(w["attempts"][0]["error"], Value::Null);

    let health = &app.get(&path).await["health"];
    assert_eq!(health["consecutive_failures"], 0);
    assert_eq!(health["last_error"], "HTTP 204: only 200 counts as success");
    assert_eq!(health["last_success_at"], w["attempts"][0]["started_at"]);
    // Five creation webhooks (to /setup), the 204 that failed and the 204 that succeeded.
    assert_eq!(health["attempts_24h"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_of_a_level_reads_its_own_endpoint_and_those_below_but_not_above() {
    let (setup, receiver) = Setup::new().with_receiver();
    let app = setup.start().await;
    let t = tree(&app, &receiver, "/hook").await;
    let key = app
        .post(
            "/v1/api-keys",
            json!({"level": "company", "id": t.company, "label": "company key"}),
            StatusCode::CREATED,
        )
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    let as_company = |method: Method, path: String, body: Option<Value>| {
        let (key, app) = (key.clone(), &app);
        async move { app.call(&key, method, &path, body.as_ref()).await.status }
    };
    let own = format!("/v1/companies/{}/endpoint", t.company);
    assert_eq!(
        as_company(Method::GET, own.clone(), None).await,
        StatusCode::OK
    );
    assert_eq!(
        as_company(Method::PATCH, own, Some(json!({"ordered": true}))).await,
        StatusCode::OK
    );
    let above = format!("/v1/resellers/{}/endpoint", t.reseller);
    assert_eq!(
        as_company(Method::GET, above.clone(), None).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        as_company(Method::PATCH, above, Some(json!({"ordered": true}))).await,
        StatusCode::NOT_FOUND
    );
    let reseller = app
        .get(&format!("/v1/resellers/{}/endpoint", t.reseller))
        .await;
    assert_eq!(reseller["ordered"], false, "unchanged");
}
