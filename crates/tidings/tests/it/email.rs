//! Failure notification e-mail (docs/contract.md#failure-e-mail), end to end: Tidings in-process with its
//! real dispatcher and mailer, a webhook receiver that always answers 500, and a real SMTP
//! server process (aiosmtpd) writing to a Maildir that the tests read back.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::app::{Setup, TestApp};
use crate::helpers::receiver::{Receiver, Reply};
use crate::helpers::smtp::{eventually, SmtpServer};
use crate::helpers::{free_port, stores};

/// Tidings for these tests: plain-HTTP receivers on loopback, five attempts 10 ms apart, a
/// 5 s request timeout, and the mailer, sending through the SMTP server on `smtp_port` (none:
/// e-mails stay queued); on the database at `database_url`, or the store the harness picks.
fn setup(database_url: Option<&str>, smtp_port: Option<u16>) -> Setup {
    let setup = Setup::new()
        .plain_http()
        .schedule("10ms,10ms,10ms,10ms")
        .request_timeout(Duration::from_secs(5))
        .mailer(smtp_port);
    match database_url {
        Some(url) => setup.on_database(url),
        None => setup,
    }
}

/// A webhook receiver that answers every POST with 500 and a numbered body
/// (`receiver says no (001)`, `(002)`, ...), so each attempt's error is recognizable.
struct FailingReceiver {
    url: String,
    _receiver: Receiver,
}

impl FailingReceiver {
    fn start() -> FailingReceiver {
        let receiver = Receiver::http();
        receiver.on(
            "/hook",
            Reply::status(500).body("receiver says no").numbered(),
        );
        FailingReceiver {
            url: receiver.url("/hook"),
            _receiver: receiver,
        }
    }
}

/// A webhook receiver answering every POST with the status it is set to, and keeping the
/// bodies it got, in order.
struct SwitchingReceiver {
    url: String,
    receiver: Receiver,
}

impl SwitchingReceiver {
    fn start(status: u16) -> SwitchingReceiver {
        let receiver = Receiver::http();
        receiver.on("/hook", Reply::status(status));
        SwitchingReceiver {
            url: receiver.url("/hook"),
            receiver,
        }
    }

    /// Answers `status` from now on.
    fn answer(&self, status: u16) {
        self.receiver.on("/hook", Reply::status(status));
    }

    /// The bodies received so far, in arrival order.
    fn bodies(&self) -> Vec<Value> {
        self.receiver
            .requests_to("/hook")
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }
}

/// The levels these tests make, and the failures they wait for.
trait Levels {
    /// A level with an optional webhook URL and notification contact; `parent` is
    /// `("reseller", id)` for a dealer or `("dealer", id)` for a company.
    async fn level(
        &self,
        collection: &str,
        parent: Option<(&str, &str)>,
        webhook_url: Option<&str>,
        contact: Option<&str>,
    ) -> String;

    /// A reseller whose webhooks go to `webhook_url`, its failures mailed to
    /// `ops@reseller.example`.
    async fn mailing_reseller(&self, webhook_url: &str) -> String {
        self.level(
            "resellers",
            None,
            Some(webhook_url),
            Some("ops@reseller.example"),
        )
        .await
    }

    /// A dealer of `reseller` without a webhook URL or contact of its own: its creation is a
    /// DEALER_CREATED webhook to the reseller.
    async fn dealer_under(&self, reseller: &str) -> String {
        self.level("dealers", Some(("reseller", reseller)), None, None)
            .await
    }

    /// Waits until `n` webhooks to the level have failed for good; returns their ids.
    async fn failed_webhooks(&self, level_id: &str, n: usize) -> Vec<String>;
}

impl Levels for TestApp {
    async fn level(
        &self,
        collection: &str,
        parent: Option<(&str, &str)>,
        webhook_url: Option<&str>,
        contact: Option<&str>,
    ) -> String {
        let mut body = json!({
            "name": format!("Test {collection}"),
            "contact": {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@test.example"},
        });
        if let Some((field, id)) = parent {
            body[field] = json!({ "id": id });
        }
        if let Some(u) = webhook_url {
            body["webhook_url"] = json!(u);
        }
        if let Some(c) = contact {
            body["notification_contact"] = json!({ "email": c });
        }
        let v = self.create(collection, body).await;
        v["id"].as_str().unwrap().to_owned()
    }

    async fn failed_webhooks(&self, level_id: &str, n: usize) -> Vec<String> {
        eventually(&format!("{n} failed webhook(s) to {level_id}"), || async {
            let ids: Vec<String> = self
                .get(&format!("/v1/webhooks?level_id={level_id}&status=failed"))
                .await["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_owned())
                .collect();
            (ids.len() >= n).then_some(ids)
        })
        .await
    }
}

fn body_has(body: &str, want: &str) {
    assert!(body.contains(want), "e-mail body lacks {want:?}:\n{body}");
}

async fn five_failed_attempts_send_exactly_one_email(database_url: Option<String>) {
    let smtp = SmtpServer::start_fresh().await;
    let port = smtp.port();
    let receiver = FailingReceiver::start();
    let mut t = setup(database_url.as_deref(), Some(port)).start().await;
    let reseller = t.mailing_reseller(&receiver.url).await;
    let dealer = t.dealer_under(&reseller).await;

    let failed = t.failed_webhooks(&reseller, 1).await;
    let webhook = t.get(&format!("/v1/webhooks/{}", failed[0])).await;
    assert_eq!(webhook["attempt_count"], 5);
    let mails = smtp.wait_for(1).await;
    let m = &mails[0];
    assert_eq!(m.to, "ops@reseller.example");
    assert_eq!(m.from, "Tidings <tidings@test.example>");
    assert_eq!(
        m.subject,
        format!(
            "[Tidings] Webhook to {} failed (DEALER_CREATED)",
            receiver.url
        )
    );
    body_has(&m.body, &format!("Webhook {}\n", failed[0]));
    body_has(&m.body, "  Event type: DEALER_CREATED\n");
    body_has(&m.body, &format!("  Entity:     {dealer}\n"));
    body_has(
        &m.body,
        &format!("  Created:    {}\n", webhook["created"].as_str().unwrap()),
    );
    body_has(&m.body, &format!("URL:    {}\n", receiver.url));
    let attempts = webhook["attempts"].as_array().unwrap();
    for n in 1..=5 {
        let started = attempts[n - 1]["started_at"].as_str().unwrap();
        body_has(&m.body, &format!("    #{n} at {started} ("));
        body_has(
            &m.body,
            &format!("HTTP 500, body: receiver says no ({n:03})\n"),
        );
    }

    let email = eventually("the e-mail listed as sent", || async {
        let list = t.emails(&format!("level_id={reseller}")).await;
        list.first()
            .filter(|e| e["status"] == "sent")
            .cloned()
            .map(|e| (e, list.len()))
    })
    .await;
    t.idle().await;
    assert_eq!(smtp.messages().len(), 1, "exactly one e-mail");
    let list = t.emails(&format!("level_id={reseller}")).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let (e, _) = email;
    assert_eq!(e["recipient"], "ops@reseller.example");
    assert_eq!(e["subject"].as_str().unwrap(), m.subject);
    assert_eq!(e["webhook_ids"], serde_json::json!([failed[0]]));
    assert_eq!(e["attempts"], 1);
    assert_eq!(e["last_error"], serde_json::Value::Null);
    assert!(e["sent_at"].is_string());
    let metrics = t.metrics().await;
    for line in [
        "tidings_emails_queued_total 1",
        "tidings_emails_sent_total 1",
        "tidings_emails_failed_total 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    t.stop().await;
}

#[tokio::test]
async fn five_failed_attempts_send_exactly_one_email_with_every_error() {
    five_failed_attempts_send_exactly_one_email(None).await;
}

#[tokio::test]
async fn five_failed_attempts_send_exactly_one_email_on_postgres() {
    five_failed_attempts_send_exactly_one_email(Some(stores::fresh_postgres_database().await))
        .await;
}

#[tokio::test]
async fn company_without_contact_falls_back_to_its_dealers_contact() {
    let smtp = SmtpServer::start_fresh().await;
    let port = smtp.port();
    let receiver = FailingReceiver::start();
    let mut t = setup(None, Some(port)).start().await;
    let reseller = t
        .level("resellers", None, None, Some("ops@reseller.example"))
        .await;
    let dealer = t
        .level(
            "dealers",
            Some(("reseller", &reseller)),
            None,
            Some("ops@dealer.example"),
        )
        .await;
    let company = t
        .level(
            "companies",
            Some(("dealer", &dealer)),
            Some(&receiver.url),
            None,
        )
        .await;
    let site = t
        .post(
            "/v1/sites",
            serde_json::json!({"name": "Front desk", "company": {"id": company}}),
            StatusCode::CREATED,
        )
        .await;

    let failed = t.failed_webhooks(&company, 1).await;
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails[0].to, "ops@dealer.example");
    assert!(
        mails[0].subject.ends_with("failed (SITE_CREATED)"),
        "{}",
        mails[0].subject
    );
    body_has(&mails[0].body, &format!("Webhook {}\n", failed[0]));
    body_has(
        &mails[0].body,
        &format!("  Entity:     {}\n", site["id"].as_str().unwrap()),
    );
    body_has(&mails[0].body, &format!("Level:  company {company}\n"));
    let list = t.emails(&format!("level_id={company}")).await;
    assert_eq!(list[0]["recipient"], "ops@dealer.example");
    t.stop().await;
}

async fn failures_within_the_window_make_one_digest(database_url: Option<String>) {
    let smtp = SmtpServer::start_fresh().await;
    let port = smtp.port();
    let receiver = FailingReceiver::start();
    let mut t = setup(database_url.as_deref(), Some(port))
        .with(|s| s.digest_window = Duration::from_secs(4))
        .start()
        .await;
    let reseller = t.mailing_reseller(&receiver.url).await;

    // The first failure to the URL is mailed at once...
    t.dealer_under(&reseller).await;
    let first = t.failed_webhooks(&reseller, 1).await;
    let mails = smtp.wait_for(1).await;
    assert_eq!(
        mails[0].subject,
        format!(
            "[Tidings] Webhook to {} failed (DEALER_CREATED)",
            receiver.url
        )
    );
    // ...the next three, within the window, are gathered into one digest at its end.
    let mut dealers = Vec::new();
    for _ in 0..3 {
        dealers.push(t.dealer_under(&reseller).await);
    }
    let all = t.failed_webhooks(&reseller, 4).await;
    let later: Vec<&String> = all.iter().filter(|id| !first.contains(id)).collect();
    assert_eq!(later.len(), 3);
    let mails = smtp.wait_for(2).await;
    let digest = &mails[1];
    assert_eq!(digest.to, "ops@reseller.example");
    assert_eq!(
        digest.subject,
        format!(
            "[Tidings] 3 webhooks to {} failed (DEALER_CREATED)",
            receiver.url
        )
    );
    body_has(
        &digest.body,
        &format!("3 webhooks to {} failed", receiver.url),
    );
    for id in &later {
        body_has(&digest.body, &format!("Webhook {id}\n"));
    }
    for d in &dealers {
        body_has(&digest.body, &format!("  Entity:     {d}\n"));
    }
    assert!(!digest.body.contains(&first[0]), "{}", digest.body);
    assert_eq!(digest.body.matches("    #5 at ").count(), 3);

    t.idle().await;
    assert_eq!(smtp.messages().len(), 2);
    let list = t.emails(&format!("level_id={reseller}&status=sent")).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let mut covered: Vec<String> = list[1]["webhook_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    covered.sort();
    let mut want: Vec<String> = later.into_iter().cloned().collect();
    want.sort();
    assert_eq!(covered, want);
    t.stop().await;
}

#[tokio::test]
async fn failures_to_one_url_within_the_window_are_gathered_into_one_digest() {
    failures_within_the_window_make_one_digest(None).await;
}

#[tokio::test]
async fn failures_to_one_url_within_the_window_are_gathered_into_one_digest_on_postgres() {
    failures_within_the_window_make_one_digest(Some(stores::fresh_postgres_database().await)).await;
}

#[tokio::test]
async fn smtp_down_when_the_webhook_fails_the_email_arrives_once_it_is_up() {
    let port = free_port();
    let receiver = FailingReceiver::start();
    let mut t = setup(None, Some(port)).start().await;
    let reseller = t.mailing_reseller(&receiver.url).await;
    t.dealer_under(&reseller).await;
    let failed = t.failed_webhooks(&reseller, 1).await;

    // Nothing listens on the SMTP port: the e-mail stays queued and is retried.
    let queued = eventually("two failed SMTP attempts", || async {
        t.emails(&format!("level_id={reseller}"))
            .await
            .into_iter()
            .find(|e| e["attempts"].as_u64() >= Some(2))
    })
    .await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["recipient"], "ops@reseller.example");
    assert!(queued["last_error"].is_string(), "{queued}");
    assert!(queued["next_attempt_at"].is_string(), "{queued}");

    let smtp = SmtpServer::start_on(port).await;
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails[0].to, "ops@reseller.example");
    body_has(&mails[0].body, &format!("Webhook {}\n", failed[0]));
    for n in 1..=5 {
        body_has(
            &mails[0].body,
            &format!("HTTP 500, body: receiver says no ({n:03})\n"),
        );
    }
    let sent = eventually("the e-mail listed as sent", || async {
        t.emails(&format!("level_id={reseller}&status=sent"))
            .await
            .into_iter()
            .next()
    })
    .await;
    assert!(sent["attempts"].as_u64().unwrap() >= 3, "{sent}");
    let failed_sends = sent["attempts"].as_u64().unwrap() - 1;
    let metrics = t.metrics().await;
    let line = format!("tidings_emails_failed_total {failed_sends}");
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    t.idle().await;
    assert_eq!(smtp.messages().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn window_zero_sends_one_email_per_failed_webhook() {
    let smtp = SmtpServer::start_fresh().await;
    let port = smtp.port();
    let receiver = FailingReceiver::start();
    let mut t = setup(None, Some(port))
        .with(|s| s.digest_window = Duration::ZERO)
        .start()
        .await;
    let reseller = t.mailing_reseller(&receiver.url).await;
    for _ in 0..3 {
        t.dealer_under(&reseller).await;
    }
    let failed: BTreeSet<String> = t.failed_webhooks(&reseller, 3).await.into_iter().collect();
    let mails = smtp.wait_for(3).await;
    let mut mailed = BTreeSet::new();
    for m in &mails {
        assert_eq!(
            m.subject,
            format!(
                "[Tidings] Webhook to {} failed (DEALER_CREATED)",
                receiver.url
            )
        );
        let id = failed
            .iter()
            .find(|id| m.body.contains(&format!("Webhook {id}\n")))
            .unwrap_or_else(|| panic!("no failed webhook in\n{}", m.body));
        assert_eq!(m.body.matches("\nWebhook ").count(), 1);
        mailed.insert(id.clone());
    }
    assert_eq!(mailed, failed);
    t.idle().await;
    assert_eq!(smtp.messages().len(), 3);
    let list = t.emails(&format!("level_id={reseller}")).await;
    assert_eq!(list.len(), 3);
    assert!(list
        .iter()
        .all(|e| e["webhook_ids"].as_array().unwrap().len() == 1));
    t.stop().await;
}

#[tokio::test]
async fn no_recipient_at_any_level_is_recorded_and_listed() {
    let smtp = SmtpServer::start_fresh().await;
    let port = smtp.port();
    let receiver = FailingReceiver::start();
    let mut t = setup(None, Some(port)).start().await;
    let reseller = t.level("resellers", None, None, None).await;
    let dealer = t
        .level(
            "dealers",
            Some(("reseller", &reseller)),
            Some(&receiver.url),
            None,
        )
        .await;
    t.level("companies", Some(("dealer", &dealer)), None, None)
        .await;
    let failed = t.failed_webhooks(&dealer, 1).await;

    let e = eventually("a no_recipient e-mail", || async {
        t.emails(&format!("level_id={dealer}&status=no_recipient"))
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(e["recipient"], serde_json::Value::Null);
    assert_eq!(e["webhook_ids"], serde_json::json!([failed[0]]));
    assert_eq!(e["attempts"], 0);
    assert_eq!(e["sent_at"], serde_json::Value::Null);
    assert_eq!(e["next_attempt_at"], serde_json::Value::Null);
    assert_eq!(e["level_id"], dealer.as_str());
    assert_eq!(e["url"], receiver.url.as_str());
    assert_eq!(
        e["subject"],
        format!(
            "[Tidings] Webhook to {} failed (COMPANY_CREATED)",
            receiver.url
        )
    );
    t.idle().await;
    assert!(smtp.messages().is_empty());
    assert!(t.emails("status=queued").await.is_empty());
    assert_eq!(t.emails("").await.len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn queued_emails_wait_for_smtp_and_a_restart_sends_them() {
    let receiver = FailingReceiver::start();
    // First run: no TIDINGS_SMTP_URL.
    let t = setup(None, None).start().await;
    let reseller = t.mailing_reseller(&receiver.url).await;
    t.dealer_under(&reseller).await;
    let failed = t.failed_webhooks(&reseller, 1).await;
    let queued = eventually("a queued e-mail with its recipient", || async {
        t.emails("status=queued")
            .await
            .into_iter()
            .find(|e| e["recipient"] == "ops@reseller.example")
    })
    .await;
    assert_eq!(queued["attempts"], 0);
    assert_eq!(queued["webhook_ids"], serde_json::json!([failed[0]]));
    let again = t.restart().await;

    // Second run on the same database, now with SMTP.
    let smtp = SmtpServer::start_fresh().await;
    let mut t = again.mailer(Some(smtp.port())).start().await;
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails[0].to, "ops@reseller.example");
    body_has(&mails[0].body, &format!("Webhook {}\n", failed[0]));
    let sent = eventually("the e-mail listed as sent", || async {
        t.emails("status=sent").await.into_iter().next()
    })
    .await;
    assert_eq!(sent["id"], queued["id"]);
    t.stop().await;
}

#[tokio::test]
async fn two_instances_on_postgres_send_each_email_once() {
    let database = stores::fresh_postgres_database().await;
    let smtp = SmtpServer::start_fresh().await;
    let port = smtp.port();
    let receiver = FailingReceiver::start();
    let mut a = setup(Some(&database), Some(port))
        .with(|s| s.digest_window = Duration::ZERO)
        .start()
        .await;
    let mut b = a.another().start().await;
    let reseller = a.mailing_reseller(&receiver.url).await;
    for i in 0..6 {
        let t = if i % 2 == 0 { &a } else { &b };
        t.dealer_under(&reseller).await;
    }
    let failed: BTreeSet<String> = a.failed_webhooks(&reseller, 6).await.into_iter().collect();
    let mails = smtp.wait_for(6).await;
    a.idle().await;
    b.idle().await;
    let mails_after = smtp.messages();
    assert_eq!(mails_after.len(), 6, "no e-mail sent twice");
    let mailed: BTreeSet<String> = mails
        .iter()
        .map(|m| {
            failed
                .iter()
                .find(|id| m.body.contains(&format!("Webhook {id}\n")))
                .cloned()
                .expect("a failed webhook in each e-mail")
        })
        .collect();
    assert_eq!(mailed, failed);
    a.stop().await;
    b.stop().await;
}

/// A 410 Gone answer disables the reseller's endpoint and e-mails its contact; webhooks for
/// new events are kept as `disabled` (not sent); enabling it and `recover` deliver them; a
/// new `webhook_url` enables it too.
async fn gone_disables_the_endpoint_and_recover_sends_what_was_kept(database_url: Option<String>) {
    let smtp = SmtpServer::start_fresh().await;
    let port = smtp.port();
    let receiver = SwitchingReceiver::start(410);
    let mut t = setup(database_url.as_deref(), Some(port)).start().await;
    let reseller = t.mailing_reseller(&receiver.url).await;
    let endpoint_path = format!("/v1/resellers/{reseller}/endpoint");
    let first = t.dealer_under(&reseller).await;

    let endpoint = eventually("the endpoint disabled", || async {
        let e = t.get(&endpoint_path).await;
        (e["enabled"] == false).then_some(e)
    })
    .await;
    let reason = endpoint["disabled_reason"].as_str().unwrap().to_owned();
    assert!(
        reason.starts_with("the receiver answered 410 Gone at "),
        "{reason}"
    );
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails[0].to, "ops@reseller.example");
    assert_eq!(
        mails[0].subject,
        format!(
            "[Tidings] Endpoint {} disabled: it answered 410 Gone",
            receiver.url
        )
    );
    body_has(&mails[0].body, &format!("Reason:  {reason}\n"));
    body_has(&mails[0].body, &format!("level {reseller} was disabled"));
    let listed = t.emails(&format!("level_id={reseller}")).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["disabled_reason"], reason.as_str());
    assert_eq!(listed[0]["webhook_ids"], json!([]));

    let second = t.dealer_under(&reseller).await;
    let kept = eventually("both webhooks kept as disabled", || async {
        let list = t
            .get(&format!("/v1/webhooks?level_id={reseller}&status=disabled"))
            .await;
        let data = list["data"].as_array().unwrap().clone();
        (data.len() == 2).then_some(data)
    })
    .await;
    let subjects: BTreeSet<String> = kept
        .iter()
        .map(|w| w["subject_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(subjects, BTreeSet::from([first.clone(), second.clone()]));
    t.idle().await;
    assert_eq!(receiver.bodies().len(), 1, "nothing sent while disabled");
    assert_eq!(smtp.messages().len(), 1, "one e-mail");
    let metrics = t.metrics().await;
    let line = "tidings_webhooks{type=\"DEALER_CREATED\",status=\"disabled\"} 2";
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");

    let recover = json!({"level_id": reseller, "since": "2020-01-01T00:00:00.000Z"});
    let (status, answer) = t
        .request(
            reqwest::Method::POST,
            "/v1/webhooks/recover",
            Some(recover.clone()),
        )
        .await;
    assert_eq!(status.as_u16(), 409, "{answer}");
    assert_eq!(answer["error"]["code"], "endpoint_disabled");

    receiver.answer(200);
    let (status, endpoint) = t
        .request(
            reqwest::Method::PATCH,
            &endpoint_path,
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status.as_u16(), 200, "{endpoint}");
    assert_eq!(
        (
            endpoint["enabled"].clone(),
            endpoint["disabled_reason"].clone()
        ),
        (json!(true), Value::Null)
    );
    let answer = t
        .post("/v1/webhooks/recover", recover, StatusCode::ACCEPTED)
        .await;
    assert_eq!(answer["recovered"], 2);
    eventually("both delivered", || async {
        let list = t
            .get(&format!(
                "/v1/webhooks?level_id={reseller}&status=succeeded"
            ))
            .await;
        (list["data"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let sent: Vec<String> = receiver.bodies()[1..]
        .iter()
        .map(|b| b["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sent.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([first, second])
    );

    // Gone again; this time a new webhook URL enables it.
    receiver.answer(410);
    t.dealer_under(&reseller).await;
    eventually("disabled again", || async {
        (t.get(&endpoint_path).await["enabled"] == false).then_some(())
    })
    .await;
    let (status, _) = t
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/resellers/{reseller}"),
            Some(json!({"webhook_url": format!("{}?v=2", receiver.url)})),
        )
        .await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(t.get(&endpoint_path).await["enabled"], true);
    t.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_emails_and_recover_sends_what_was_kept() {
    gone_disables_the_endpoint_and_recover_sends_what_was_kept(None).await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_emails_and_recover_sends_what_was_kept_on_postgres() {
    gone_disables_the_endpoint_and_recover_sends_what_was_kept(Some(
        stores::fresh_postgres_database().await,
    ))
    .await;
}
