//! Black-box tests of receiving (docs/contract.md#sending, #signatures, #receiver): the real `tidings serve` delivers
//! real events to the real example receivers, `tidings receiver` over HTTPS with a certificate
//! authority made in the test, and the Node example in `examples/receiver-node`.
//!
//! Every process is a child of the test, killed when the test ends; every wait has a deadline.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::blocking::Client;
use serde_json::{json, Value};
use tempfile::TempDir;
use tidings_verify::Secret;

use crate::helpers::examples::{
    client, node_receiver_dir, Certificates, Receiver, ReceiverKind, WELCOME,
};
use crate::helpers::free_port;
use crate::helpers::server::TestServer;

/// What both example receivers answer to a webhook they have not seen before.
const RECEIVED: &str = r#"{"status":"received"}"#;
/// ... and to one whose id they have seen.
const REPEAT: &str = r#"{"status":"repeat"}"#;
/// A valid secret that no level in these tests has (a Standard Webhooks test vector).
const STRANGER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// `tidings serve` on a SQLite file in `dir` (or PostgreSQL, see `helpers::stores`), with
/// 127.0.0.1 exempt from the SSRF block, five attempts 50 ms apart, and `env`.
fn serve(dir: &Path, env: &[(&str, &str)]) -> TestServer {
    let mut all = vec![
        ("TIDINGS_SSRF_ALLOW", "127.0.0.1/32"),
        ("TIDINGS_RETRY_SCHEDULE", "50ms,50ms,50ms,50ms"),
    ];
    all.extend_from_slice(env);
    TestServer::start_on(&dir.join("tidings.db"), &all)
}

/// `tidings serve` and a `tidings receiver` over HTTPS, wired together: one reseller whose
/// `webhook_url` leads to the receiver, which verifies with that reseller's secret.
struct HttpsDelivery {
    receiver: Receiver,
    tidings: TestServer,
    ca: Certificates,
    reseller: String,
    /// The reseller's signing secret when the receiver started.
    secret: String,
    /// The reseller's `webhook_url`: `https://127.0.0.1:PORT/hooks`.
    webhook_url: String,
    /// Holds the database, key and certificates; declared last so it goes after the processes.
    _dir: TempDir,
}

impl HttpsDelivery {
    /// The flow an integrator follows: Tidings first, then the level with its `webhook_url`,
    /// then the receiver with the level's secret.
    fn start() -> HttpsDelivery {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = Certificates::create(dir.path());
        let ca_file = ca.ca_file.to_str().expect("UTF-8 temp path").to_owned();
        let tidings = serve(dir.path(), &[("TIDINGS_CA_FILE", &ca_file)]);
        let port = free_port();
        let url_at = |port: u16| format!("https://127.0.0.1:{port}/hooks");
        let reseller = tidings.create_reseller(&url_at(port));
        let secret = tidings.secret("resellers", &reseller);
        let (receiver, webhook_url) = Receiver::start_for(
            &tidings,
            &reseller,
            (ReceiverKind::Tidings, &secret, Some(&ca)),
            port,
            url_at,
        );
        HttpsDelivery {
            receiver,
            tidings,
            ca,
            reseller,
            secret,
            webhook_url,
            _dir: dir,
        }
    }

    /// A client that trusts the test CA, as Tidings does through `TIDINGS_CA_FILE`.
    fn https_client(&self) -> Client {
        client(Some(&self.ca.ca_pem))
    }
}

/// Asserts that `webhook` (list view) is a DEALER_CREATED to `reseller` at `url` that
/// succeeded on its first attempt, and that its one attempt got 200 and `answer`.
fn assert_delivered_once(tidings: &TestServer, webhook: &Value, reseller: &str, url: &str) {
    let id = webhook["id"].as_str().expect("webhook id");
    assert_eq!(webhook["type"], "DEALER_CREATED", "{webhook:#}");
    assert_eq!(webhook["status"], "succeeded", "{webhook:#}");
    assert_eq!(webhook["url"], url, "{webhook:#}");
    assert_eq!(
        webhook["level"],
        json!({ "type": "reseller", "id": reseller }),
        "{webhook:#}"
    );
    assert_eq!(webhook["attempt_count"], 1, "{webhook:#}");
    let one = tidings.webhook(id);
    let attempts = one["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{one:#}");
    assert_eq!(attempts[0]["number"], 1, "{one:#}");
    assert_eq!(attempts[0]["status_code"], 200, "{one:#}");
    assert_eq!(attempts[0]["error"], Value::Null, "{one:#}");
    assert_eq!(attempts[0]["body"], RECEIVED, "{one:#}");
}

/// The webhook (list view) whose subject is `subject`.
fn webhook_about<'w>(webhooks: &'w [Value], subject: &str) -> &'w Value {
    webhooks
        .iter()
        .find(|w| w["subject_id"] == subject)
        .unwrap_or_else(|| panic!("no webhook about {subject} in {webhooks:#?}"))
}

fn id(webhook: &Value) -> &str {
    webhook["id"].as_str().expect("webhook id")
}

/// `tidings serve` delivers DEALER_CREATED webhooks over HTTPS, trusting the receiver's
/// certificate only through `TIDINGS_CA_FILE`, to `tidings receiver` holding the reseller's
/// secret: each succeeds on its first attempt with the receiver's 200, and the receiver logs
/// each one's type, id, attempt and data. The welcome page answers over the same HTTPS.
#[test]
fn serve_delivers_to_tidings_receiver_over_https_with_a_test_ca() {
    let mut setup = HttpsDelivery::start();
    let https = setup.https_client();
    let by_name = setup.receiver.base.replace("127.0.0.1", "localhost");
    for base in [setup.receiver.base.clone(), by_name] {
        let welcome = https.get(&base).send().expect("welcome page");
        assert_eq!(welcome.status(), 200, "{base}");
        assert_eq!(welcome.text().unwrap(), WELCOME, "{base}");
    }

    let first = setup.tidings.create_dealer(&setup.reseller, "Dealer One");
    let second = setup.tidings.create_dealer(&setup.reseller, "Dealer Two");

    let webhooks = setup.tidings.settled_webhooks(&setup.reseller, 2);
    let subjects: BTreeSet<&str> = webhooks
        .iter()
        .map(|w| w["subject_id"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, BTreeSet::from([first.as_str(), second.as_str()]));
    for (dealer, name) in [(&first, "Dealer One"), (&second, "Dealer Two")] {
        let webhook = webhook_about(&webhooks, dealer);
        assert_delivered_once(&setup.tidings, webhook, &setup.reseller, &setup.webhook_url);
        assert_eq!(webhook["payload"]["data"]["name"], name, "{webhook:#}");
        let logged = format!("received DEALER_CREATED {} (attempt 1)", id(webhook));
        assert_eq!(setup.receiver.process.wait_for_output(&logged, 1), 1);
    }
    let log = setup.receiver.process.output();
    // The data is logged too, and nothing was rejected.
    assert!(log.contains(r#""name": "Dealer One""#), "{log}");
    assert!(log.contains(r#""name": "Dealer Two""#), "{log}");
    assert!(!log.contains("rejected"), "{log}");
}

/// Seconds since the Unix epoch, the unit of `webhook-timestamp`.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A webhook body in the shape of docs/contract.md#envelope.
fn webhook_body(id: &str) -> String {
    json!({
        "id": id,
        "created": "2020-07-15T12:33:14.000Z",
        "attempt": 1,
        "type": "DEALER_CHANGED",
        "data": { "id": "784d061c0856dc4c97774da7", "name": "Dealer Forged" },
    })
    .to_string()
}

/// One request as a test sends it to the receiver.
struct Signed<'a> {
    /// The secret that signs, and the moment it signs for.
    secret: &'a str,
    timestamp: i64,
    /// `webhook-id`, and the body that is signed.
    id: &'a str,
    signed_body: &'a str,
    /// The body that is sent (differs from `signed_body` when tampered with).
    sent_body: &'a str,
    /// A header left out.
    without: Option<&'static str>,
}

impl<'a> Signed<'a> {
    /// A correctly signed request: `body` signed with `secret` now.
    fn valid(secret: &'a str, id: &'a str, body: &'a str) -> Signed<'a> {
        Signed {
            secret,
            timestamp: now(),
            id,
            signed_body: body,
            sent_body: body,
            without: None,
        }
    }

    /// POSTs it; answers the status and the body.
    fn send(&self, https: &Client, url: &str) -> (u16, String) {
        let signature = Secret::parse(self.secret).expect("valid secret").sign(
            self.id,
            self.timestamp,
            self.signed_body.as_bytes(),
        );
        let headers = [
            ("webhook-id", self.id.to_owned()),
            ("webhook-timestamp", self.timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        let mut request = https
            .post(url)
            .header("content-type", "application/json")
            .body(self.sent_body.to_owned());
        for (name, value) in headers {
            if self.without != Some(name) {
                request = request.header(name, value);
            }
        }
        let response = request.send().expect("POST to the receiver");
        let status = response.status().as_u16();
        (status, response.text().expect("answer body"))
    }
}

/// The same running `tidings receiver`, holding the secret Tidings gave the reseller, refuses
/// what Tidings did not sign with it: a changed body, a timestamp 10 minutes old or 10
/// minutes ahead, another secret, missing headers (401 each, and nothing logged as received);
/// answers 400 to a correctly signed body that is not a webhook; and answers 200 to a valid
/// webhook, then 200 "repeat" to the same id again, including the id of a webhook Tidings
/// itself delivered.
#[test]
fn tidings_receiver_rejects_forgeries_and_answers_repeats() {
    let mut setup = HttpsDelivery::start();
    let https = setup.https_client();
    let url = setup.webhook_url.clone();
    let secret = setup.secret.as_str();

    // A real delivery first, to replay its id below.
    let dealer = setup.tidings.create_dealer(&setup.reseller, "Dealer One");
    let webhooks = setup.tidings.settled_webhooks(&setup.reseller, 1);
    let delivered = webhook_about(&webhooks, &dealer);
    assert_delivered_once(&setup.tidings, delivered, &setup.reseller, &url);
    let delivered_id = id(delivered).to_owned();

    let forged_id = "f0f0f0f0f0f0f0f0f0f0f0f0";
    let forged = webhook_body(forged_id);
    let tampered = forged.replace("Dealer Forged", "Dealer Tampered");
    let not_a_webhook = r#"{"test": 2432232314}"#;
    let no_match = r#"{"error":"no matching signature"}"#;
    let refusals: Vec<(&str, Signed, u16, String)> = vec![
        (
            "tampered body",
            Signed {
                sent_body: &tampered,
                ..Signed::valid(secret, forged_id, &forged)
            },
            401,
            no_match.to_owned(),
        ),
        (
            "timestamp 10 minutes old",
            Signed {
                timestamp: now() - 600,
                ..Signed::valid(secret, forged_id, &forged)
            },
            401,
            r#"{"error":"timestamp is more than 5 minutes old"}"#.to_owned(),
        ),
        (
            "timestamp 10 minutes ahead",
            Signed {
                timestamp: now() + 600,
                ..Signed::valid(secret, forged_id, &forged)
            },
            401,
            r#"{"error":"timestamp is more than 5 minutes in the future"}"#.to_owned(),
        ),
        (
            "wrong secret",
            Signed::valid(STRANGER_SECRET, forged_id, &forged),
            401,
            no_match.to_owned(),
        ),
        (
            "signed body that is not a webhook",
            Signed::valid(secret, forged_id, not_a_webhook),
            400,
            r#"{"error":"not a webhook: missing field `id` at line 1 column 20"}"#.to_owned(),
        ),
    ]
    .into_iter()
    .chain(
        ["webhook-id", "webhook-timestamp", "webhook-signature"].map(|header| {
            (
                header,
                Signed {
                    without: Some(header),
                    ..Signed::valid(secret, forged_id, &forged)
                },
                401,
                format!(r#"{{"error":"missing header `{header}`"}}"#),
            )
        }),
    )
    .collect();
    for (case, request, status, answer) in &refusals {
        assert_eq!(
            request.send(&https, &url),
            (*status, answer.clone()),
            "{case}"
        );
    }
    let rejected = setup
        .receiver
        .process
        .wait_for_output("rejected a request: signature not verified", 7);
    assert_eq!(rejected, 7);
    assert_eq!(
        setup
            .receiver
            .process
            .wait_for_output("rejected a request: not a webhook", 1),
        1
    );
    let log = setup.receiver.process.output();
    assert!(
        !log.contains(forged_id),
        "a refused request was handled:\n{log}"
    );

    // Now correctly signed: received once, then a repeat (a retry has a new timestamp).
    let valid = Signed::valid(secret, forged_id, &forged);
    assert_eq!(valid.send(&https, &url), (200, RECEIVED.to_owned()));
    let again = Signed {
        timestamp: now() + 1,
        ..Signed::valid(secret, forged_id, &forged)
    };
    assert_eq!(again.send(&https, &url), (200, REPEAT.to_owned()));
    // The webhook Tidings delivered, sent again as a retry would send it.
    let payload = setup.tidings.webhook(&delivered_id)["payload"].to_string();
    let replay = Signed::valid(secret, &delivered_id, &payload);
    assert_eq!(replay.send(&https, &url), (200, REPEAT.to_owned()));

    let received = format!("received DEALER_CHANGED {forged_id} (attempt 1)");
    assert_eq!(setup.receiver.process.wait_for_output(&received, 1), 1);
    let repeated = setup.receiver.process.wait_for_output("repeat of ", 2);
    assert_eq!(repeated, 2);
    let log = setup.receiver.process.output();
    assert!(
        log.contains(&format!(
            "repeat of DEALER_CREATED {delivered_id} (attempt 1); ignored"
        )),
        "{log}"
    );
}

/// Secret rotation seen from a receiver: after `POST .../secret/rotate`, Tidings signs with
/// both the old and the new secret for 24 hours, so the receiver still holding the OLD secret
/// keeps accepting new deliveries, and a receiver holding only the NEW one accepts them too.
/// A receiver holding neither refuses every attempt: the control that shows the receivers
/// really check what Tidings sends.
#[test]
fn after_rotation_receivers_with_the_old_or_the_new_secret_both_accept() {
    let mut setup = HttpsDelivery::start();
    let url_at = |port: u16| format!("https://127.0.0.1:{port}/rotated");
    let old = setup.secret.clone();

    let before = setup
        .tidings
        .create_dealer(&setup.reseller, "Before Rotation");
    setup.tidings.settled_webhooks(&setup.reseller, 1);

    let new = setup.tidings.rotate_secret("resellers", &setup.reseller);
    assert_ne!(new, old);
    assert_eq!(setup.tidings.secret("resellers", &setup.reseller), new);

    // The receiver started with the old secret, still at the reseller's URL.
    let during = setup
        .tidings
        .create_dealer(&setup.reseller, "During Overlap");
    let webhooks = setup.tidings.settled_webhooks(&setup.reseller, 2);
    for dealer in [&before, &during] {
        let webhook = webhook_about(&webhooks, dealer);
        assert_delivered_once(&setup.tidings, webhook, &setup.reseller, &setup.webhook_url);
        let logged = format!("received DEALER_CREATED {} (attempt 1)", id(webhook));
        assert_eq!(setup.receiver.process.wait_for_output(&logged, 1), 1);
    }

    // A receiver with only the new secret.
    let port = free_port();
    setup
        .tidings
        .set_webhook_url(&setup.reseller, &url_at(port));
    let (mut with_new, new_url) = Receiver::start_for(
        &setup.tidings,
        &setup.reseller,
        (ReceiverKind::Tidings, &new, Some(&setup.ca)),
        port,
        url_at,
    );
    let to_new = setup
        .tidings
        .create_dealer(&setup.reseller, "To The New Secret");
    let webhooks = setup.tidings.settled_webhooks(&setup.reseller, 3);
    let webhook = webhook_about(&webhooks, &to_new);
    assert_delivered_once(&setup.tidings, webhook, &setup.reseller, &new_url);
    let logged = format!("received DEALER_CREATED {} (attempt 1)", id(webhook));
    assert_eq!(with_new.process.wait_for_output(&logged, 1), 1);

    // Control: a receiver with neither secret answers 401 to all 5 attempts.
    let port = free_port();
    setup
        .tidings
        .set_webhook_url(&setup.reseller, &url_at(port));
    let (_stranger, stranger_url) = Receiver::start_for(
        &setup.tidings,
        &setup.reseller,
        (ReceiverKind::Tidings, STRANGER_SECRET, Some(&setup.ca)),
        port,
        url_at,
    );
    let refused = setup.tidings.create_dealer(&setup.reseller, "Refused");
    let webhooks = setup.tidings.settled_webhooks(&setup.reseller, 4);
    let webhook = webhook_about(&webhooks, &refused);
    assert_eq!(webhook["status"], "failed", "{webhook:#}");
    assert_eq!(webhook["url"], stranger_url.as_str(), "{webhook:#}");
    let one = setup.tidings.webhook(id(webhook));
    let answers: Vec<(u64, u64, &str)> = one["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["number"].as_u64().unwrap(),
                a["status_code"].as_u64().unwrap_or(0),
                a["body"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let refusal = r#"{"error":"no matching signature"}"#;
    assert_eq!(
        answers,
        (1..=5).map(|n| (n, 401, refusal)).collect::<Vec<_>>(),
        "{one:#}"
    );
}

/// The Node example receiver (`examples/receiver-node/receiver.js`) verifies real deliveries.
/// It serves plain HTTP only, so for this test alone Tidings runs with
/// `TIDINGS_ALLOW_HTTP=true` and the reseller's `webhook_url` is `http://127.0.0.1:PORT/`.
/// Needs `node` and `npm ci` run in `examples/receiver-node` (`scripts/test` does it); without
/// them the test fails with that instruction, it never skips.
#[test]
fn serve_delivers_to_the_node_example_receiver() {
    node_receiver_dir();
    let dir = tempfile::tempdir().expect("temporary directory");
    let tidings = serve(dir.path(), &[("TIDINGS_ALLOW_HTTP", "true")]);
    let url_at = |port: u16| format!("http://127.0.0.1:{port}/");
    let port = free_port();
    let reseller = tidings.create_reseller(&url_at(port));
    let secret = tidings.secret("resellers", &reseller);
    let (mut node, webhook_url) = Receiver::start_for(
        &tidings,
        &reseller,
        (ReceiverKind::Node, &secret, None),
        port,
        url_at,
    );
    let welcome = client(None).get(&node.base).send().expect("welcome page");
    assert_eq!(welcome.status(), 200);
    assert_eq!(welcome.text().unwrap(), WELCOME);

    let dealers = [
        tidings.create_dealer(&reseller, "Dealer One"),
        tidings.create_dealer(&reseller, "Dealer Two"),
    ];
    let webhooks = tidings.settled_webhooks(&reseller, 2);
    for dealer in &dealers {
        let webhook = webhook_about(&webhooks, dealer);
        assert_delivered_once(&tidings, webhook, &reseller, &webhook_url);
        let logged = format!("Received DEALER_CREATED {} (attempt 1)", id(webhook));
        assert_eq!(node.process.wait_for_output(&logged, 1), 1);
    }
    let log = node.process.output();
    assert!(log.contains(r#""name": "Dealer One""#), "{log}");
    assert!(!log.contains("Rejected"), "{log}");
}
