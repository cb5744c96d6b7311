//! Scale-out on PostgreSQL (docs/contract.md#scale-out): several `tidings serve` processes on one
//! database share the work, deliver every webhook, and deliver none twice in normal
//! operation; when one dies, the others take over its claims when their leases end.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::receiver::{Receiver, Reply};
use crate::helpers::server::TestServer;
use crate::helpers::tls::TestCa;
use crate::helpers::tree::{dealer_body, reseller_body};
use crate::helpers::{stores, OPERATOR_KEY};

/// One `tidings serve` process of several on the PostgreSQL database `database_url`, all
/// sealing signing secrets with the same key.
fn instance(database_url: &str, dir: &Path, ca_file: &Path, max_in_flight: usize) -> TestServer {
    let max_in_flight = max_in_flight.to_string();
    TestServer::start_on(
        &dir.join("tidings.db"),
        &[
            ("TIDINGS_DATABASE_URL", database_url),
            (
                "TIDINGS_SECRET_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
            ("TIDINGS_SECRET_KEY_FILE", "unused.key"),
            ("TIDINGS_CA_FILE", ca_file.to_str().unwrap()),
            ("TIDINGS_SSRF_ALLOW", "127.0.0.1/32"),
            ("TIDINGS_REQUEST_TIMEOUT", "1s"),
            ("TIDINGS_RETRY_SCHEDULE", "200ms,200ms,200ms,200ms"),
            ("TIDINGS_MAX_IN_FLIGHT", max_in_flight.as_str()),
        ],
    )
}

fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {OPERATOR_KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn post(c: &reqwest::Client, url: String, body: Value) -> Value {
    let r = c.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201, "POST {url}");
    r.json().await.unwrap()
}

/// A receiver with a certificate from a CA made for the test, and that CA's certificate
/// written into `dir` for the instances to trust: the receiver and the file.
fn receiver_and_ca(dir: &Path) -> (Receiver, PathBuf) {
    let ca = TestCa::new("scale test CA");
    let ca_file = ca.write(dir);
    (Receiver::start(&ca.loopback_identity()), ca_file)
}

/// Creates, through the API at `base`, a reseller whose webhook URL is `url`; answers its id.
async fn reseller(c: &reqwest::Client, base: &str, url: &str) -> String {
    let reseller = post(c, format!("{base}/v1/resellers"), reseller_body(url)).await;
    reseller["id"].as_str().unwrap().to_owned()
}

/// Creates the dealers numbered `numbers` of the reseller `rid` (each a DEALER_CREATED
/// webhook to it), 8 at a time, dealer `i` through the API at `bases[i % bases.len()]`.
async fn dealers(c: &reqwest::Client, bases: &[String], rid: &str, numbers: Range<usize>) {
    let mut start = numbers.start;
    while start < numbers.end {
        let end = (start + 8).min(numbers.end);
        let mut tasks = Vec::new();
        for i in start..end {
            let c = c.clone();
            let base = bases[i % bases.len()].clone();
            let body = dealer_body(rid, &format!("Dealer {i}"));
            tasks.push(tokio::spawn(async move {
                post(&c, format!("{base}/v1/dealers"), body).await
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        start = end;
    }
}

/// Creates one reseller whose webhook URL is the receiver, then `n` dealers through the
/// instances' APIs in turn (each a DEALER_CREATED webhook to the reseller), 8 at a time.
/// Returns the reseller's id.
async fn burst(bases: &[String], url: &str, n: usize) -> String {
    let c = client();
    let rid = reseller(&c, &bases[0], url).await;
    dealers(&c, bases, &rid, 0..n).await;
    rid
}

/// Polls until every webhook of the level succeeded; returns how many there are.
async fn wait_all_succeeded(base: &str, level_id: &str, expected: usize) {
    let c = client();
    for _ in 0..600 {
        let mut succeeded = 0;
        let mut after = String::new();
        loop {
            let page: Value = c
                .get(format!(
                    "{base}/v1/webhooks?level_id={level_id}&status=succeeded&limit=1000{after}"
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            succeeded += page["data"].as_array().unwrap().len();
            match page["next_cursor"].as_str() {
                Some(cur) => after = format!("&after={cur}"),
                None => break,
            }
        }
        if succeeded == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every webhook succeeded within 60 s");
}

/// How many times the receiver got each webhook id.
fn deliveries(receiver: &Receiver) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in receiver.requests() {
        *counts.entry(r.header("webhook-id").to_owned()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_a_burst_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, ca_file) = receiver_and_ca(dir.path());
    let db = stores::fresh_postgres_database().await;
    let instances: Vec<TestServer> = (0..3)
        .map(|_| instance(&db, dir.path(), &ca_file, 256))
        .collect();
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();

    let n = 3000;
    let rid = burst(&bases, &receiver.url("/hook"), n).await;
    wait_all_succeeded(&bases[0], &rid, n).await;

    let counts = deliveries(&receiver);
    assert_eq!(counts.len(), n, "every webhook reached the receiver");
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "no webhook delivered twice, but these were: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_loses_nothing_and_duplicates_only_its_in_flight_work() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, ca_file) = receiver_and_ca(dir.path());
    // Slow answers keep attempts in flight, so the kill lands mid-delivery.
    receiver.on("/hook", Reply::ok().after(Duration::from_millis(20)));
    let db = stores::fresh_postgres_database().await;
    const VICTIM_IN_FLIGHT: usize = 32;
    let victim = instance(&db, dir.path(), &ca_file, VICTIM_IN_FLIGHT);
    let survivors: Vec<TestServer> = (0..2)
        .map(|_| instance(&db, dir.path(), &ca_file, 256))
        .collect();
    let mut bases: Vec<String> = survivors.iter().map(|i| i.base.clone()).collect();
    bases.push(victim.base.clone());

    let n: usize = 3000;
    // Half-way through the burst (after the 8 that reach half-way), SIGKILL the victim (its
    // API then stops answering, so the rest of the burst goes to the survivors).
    let half = ((n / 2).next_multiple_of(8) + 8).min(n);
    let c = client();
    let rid = reseller(&c, &bases[0], &receiver.url("/hook")).await;
    dealers(&c, &bases, &rid, 0..half).await;
    drop(victim); // Child::kill is SIGKILL
    dealers(&c, &bases[..2], &rid, half..n).await;
    wait_all_succeeded(&bases[0], &rid, n).await;

    let counts = deliveries(&receiver);
    assert_eq!(counts.len(), n, "every webhook reached the receiver");
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    assert!(
        duplicates <= VICTIM_IN_FLIGHT,
        "duplicates ({duplicates}) can only be attempts the killed instance had in flight (at most {VICTIM_IN_FLIGHT})"
    );
}

/// Two instances share an ordered level: the changes to one dealer, made through both
/// instances in turn, reach a slow receiver one at a time in the order they were made
/// (never two in flight), each once; another dealer's changes go alongside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_keep_an_ordered_levels_webhooks_about_one_subject_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, ca_file) = receiver_and_ca(dir.path());
    // Slow answers: without ordering, several would be in flight at once and arrive in any
    // order.
    receiver.on("/hook", Reply::ok().after(Duration::from_millis(30)));
    let db = stores::fresh_postgres_database().await;
    let instances: Vec<TestServer> = (0..2)
        .map(|_| instance(&db, dir.path(), &ca_file, 256))
        .collect();
    let bases: Vec<String> = instances.iter().map(|i| i.base.clone()).collect();
    let c = client();
    let rid = reseller(&c, &bases[0], &receiver.url("/hook")).await;
    let r = c
        .patch(format!("{}/v1/resellers/{rid}/endpoint", bases[1]))
        .json(&json!({"ordered": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut dealers = Vec::new();
    for name in ["D0", "E0"] {
        let d = post(
            &c,
            format!("{}/v1/dealers", bases[0]),
            dealer_body(&rid, name),
        )
        .await;
        dealers.push(d["id"].as_str().unwrap().to_owned());
    }
    let changes = 12;
    for i in 1..=changes {
        for (d, prefix) in dealers.iter().zip(["D", "E"]) {
            let r = c
                .patch(format!("{}/v1/dealers/{d}", bases[i % 2]))
                .json(&json!({"name": format!("{prefix}{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    wait_all_succeeded(&bases[0], &rid, 2 * (changes + 1)).await;

    for (d, prefix) in dealers.iter().zip(["D", "E"]) {
        let names: Vec<String> = receiver
            .requests()
            .iter()
            .map(|r| r.json())
            .filter(|b| b["data"]["id"] == d.as_str())
            .map(|b| b["data"]["name"].as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = (0..=changes).map(|i| format!("{prefix}{i}")).collect();
        assert_eq!(names, want, "in creation order, each once");
    }
}
