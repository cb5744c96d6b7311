//! Tidings' API as the load generator uses it: building the hierarchy, firing events,
//! reading `/metrics`, of one instance or of several sharing a store.
//!
//! Every measured event is a meeting change, `PATCH /v1/meetings/{id}` with
//! `{"subject": "bench-{seq}"}`: it takes the same path through Tidings as a meeting moment
//! (read the meeting, write it, write the event and one webhook per level, commit), and its
//! webhooks carry the sequence number in `data.subject`, which is how the sink matches an
//! arrival to the API acknowledgement of its event, exactly and without any ordering
//! assumption.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::child::ADMIN_KEY;
use crate::sink::{Sink, LEVELS, SUBJECT_PREFIX};

/// The API of every running instance. The hierarchy is built, and other single requests are
/// sent, through the first; fired events are spread over all of them.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    /// Never empty.
    bases: Vec<String>,
}

impl Api {
    /// `bases`: each instance's URL, the first first.
    pub fn new(bases: &[String], connections: usize) -> anyhow::Result<Api> {
        anyhow::ensure!(!bases.is_empty(), "no Tidings instance to talk to");
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {ADMIN_KEY}").parse()?,
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .build()?;
        let bases: Vec<String> = bases
            .iter()
            .map(|b| b.trim_end_matches('/').to_owned())
            .collect();
        Ok(Api { client, bases })
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn patch(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::PATCH, path, body).await
    }

    /// Sends a JSON body; any answer but 2xx is an error naming the request.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let r = self
            .client
            .request(method.clone(), format!("{}{path}", self.bases[0]))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path}: {status} {v}");
        }
        Ok(v)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .client
            .get(format!("{}{path}", self.bases[0]))
            .send()
            .await?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("GET {path}: {status} {v}");
        }
        Ok(v)
    }

    /// A new API key scoped to the `level` (`reseller`, `dealer`, ...) with id `id`.
    pub async fn scoped_key(&self, level: &str, id: &str) -> anyhow::Result<String> {
        let v = self
            .post(
                "/v1/api-keys",
                json!({"level": level, "id": id, "label": "bench"}),
            )
            .await?;
        Ok(v.get("key")
            .and_then(Value::as_str)
            .context("no key in the answer")?
            .to_owned())
    }

    /// `GET /metrics` of every instance, as one: see [`Metrics::combine`].
    pub async fn metrics(&self) -> anyhow::Result<Metrics> {
        let mut scrapes = Vec::with_capacity(self.bases.len());
        for base in &self.bases {
            let text = self
                .client
                .get(format!("{base}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            scrapes.push(Metrics::parse(&text));
        }
        Ok(Metrics::combine(scrapes))
    }
}

/// The series Tidings reads from the store at each scrape (`Metrics::render` in Tidings'
/// metrics.rs): every instance on one database counts the same rows, so summing them over
/// the instances would count each row once per instance. Every other series is the
/// instance's own (counters, histograms, open API connections) and adds up.
const STORE_GAUGES: [&str; 5] = [
    "tidings_events",
    "tidings_webhooks",
    "tidings_queue_depth",
    "tidings_oldest_due_age_seconds",
    "tidings_store_size_bytes",
];

/// The lines of a Prometheus text exposition.
#[derive(Debug, Default, Clone)]
pub struct Metrics(Vec<(String, f64)>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The scrapes of instances sharing one store, as one scrape of them all: each instance's
    /// own series summed over the instances, the store's gauges ([`STORE_GAUGES`]) as the
    /// first instance read them.
    pub fn combine(scrapes: impl IntoIterator<Item = Metrics>) -> Metrics {
        let mut out: Vec<(String, f64)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, scrape) in scrapes.into_iter().enumerate() {
            for (key, value) in scrape.0 {
                let name = key.split('{').next().unwrap_or(&key);
                if i > 0 && STORE_GAUGES.contains(&name) {
                    continue;
                }
                match index.get(&key) {
                    Some(&at) => out[at].1 += value,
                    None => {
                        index.insert(key.clone(), out.len());
                        out.push((key, value));
                    }
                }
            }
        }
        Metrics(out)
    }

    /// The sum of every series whose name-and-labels contains all of `parts`.
    pub fn sum(&self, parts: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| parts.iter().all(|p| k.contains(p)))
            .map(|(_, v)| v)
            .sum()
    }

    /// Attempts Tidings recorded in the store (after the commit) leaving a webhook in this
    /// status, since it started: a counter, cheap to read whatever the store's size.
    pub fn recorded(&self, status: &str) -> u64 {
        self.sum(&[
            "tidings_webhooks_recorded_total{",
            &format!("status=\"{status}\""),
        ]) as u64
    }

    /// Webhooks recorded as delivered: Tidings' counter `tidings_webhooks_recorded_total`
    /// where it has one (since 74f08ff); for an older `--tidings-bin`, the store's gauge of
    /// measured webhooks.
    pub fn succeeded(&self) -> u64 {
        if self.has_recorded_counter() {
            self.recorded("succeeded")
        } else {
            self.changed("succeeded")
        }
    }

    /// Whether this Tidings counts recorded attempts (`tidings_webhooks_recorded_total`).
    pub fn has_recorded_counter(&self) -> bool {
        self.0
            .iter()
            .any(|(k, _)| k.starts_with("tidings_webhooks_recorded_total"))
    }

    /// Measured webhooks (MEETING_CHANGED) the store holds with this status.
    pub fn changed(&self, status: &str) -> u64 {
        self.sum(&[
            "tidings_webhooks{",
            "type=\"MEETING_CHANGED\"",
            &format!("status=\"{status}\""),
        ]) as u64
    }
}

/// Which level entities answer 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failing {
    None,
    /// Every fifth entity of each level (20 % of the webhooks of uniformly spread events).
    OneInFive,
    /// The first reseller and everything below it.
    FirstSubtree,
}

/// The hierarchy's fan-out: per reseller, dealers; per dealer, companies; per company, sites.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Shape {
    pub resellers: usize,
    pub dealers: usize,
    pub companies: usize,
    pub sites: usize,
}

/// A personal meeting: its events go to its site, company, dealer and reseller.
#[derive(Debug, Clone)]
pub struct Meeting {
    pub id: String,
    /// Which receiving levels answer 500, in the order of [`LEVELS`].
    pub failing: [bool; 4],
}

impl Meeting {
    pub fn failing_levels(&self) -> usize {
        self.failing.iter().filter(|f| **f).count()
    }
}

pub struct Hierarchy {
    /// The resellers' ids in order of creation (with [`Failing::FirstSubtree`], the first
    /// one's subtree answers 500).
    pub resellers: Vec<String>,
    /// Levels with a webhook URL, and how many of them answer 500.
    pub levels: usize,
    pub failing_levels: usize,
    pub meetings: Vec<Meeting>,
    /// Destinations (sink ports) that answer 500.
    pub failing_ports: usize,
}

impl Hierarchy {
    /// Fraction of the measured webhooks that go to failing levels.
    pub fn failing_share(&self) -> f64 {
        let n: usize = self.meetings.iter().map(Meeting::failing_levels).sum();
        n as f64 / (self.meetings.len() * 4) as f64
    }

    pub fn healthy_meetings(&self) -> Vec<Meeting> {
        self.meetings
            .iter()
            .filter(|m| m.failing_levels() == 0)
            .cloned()
            .collect()
    }

    pub fn failing_meetings(&self) -> Vec<Meeting> {
        self.meetings
            .iter()
            .filter(|m| m.failing_levels() == 4)
            .cloned()
            .collect()
    }
}

/// Creates resellers → dealers → companies → sites, each with a webhook URL on the sink, a
/// user per company and a personal meeting per site; registers each level's secret with
/// the sink. Failing levels get URLs on their own ports (destinations), 20 % of the ports.
pub async fn build_hierarchy(
    api: &Api,
    sink: &Sink,
    shape: Shape,
    failing: Failing,
    ordered: bool,
) -> anyhow::Result<Hierarchy> {
    let ports = sink.ports().len();
    let failing_ports = if failing == Failing::None {
        0
    } else {
        (ports / 5).max(1)
    };
    let mut counters = [0usize; 4];
    let mut levels = (0usize, 0usize);
    let count = |levels: &mut (usize, usize), failing: bool| {
        levels.0 += 1;
        levels.1 += usize::from(failing);
    };
    let mut meetings = Vec::new();
    let mut resellers = Vec::new();
    let contact = json!({"first_name": "Bench", "last_name": "Mark", "email": "bench@example.com"});
    // The URL for the next entity of `level`; failing ones on the failing ports.
    let mut url_for = |level: usize, in_failing_subtree: bool| {
        let k = counters[level];
        counters[level] += 1;
        let fails = match failing {
            Failing::None => false,
            Failing::OneInFive => k % 5 == 0,
            Failing::FirstSubtree => in_failing_subtree,
        };
        let n = counters.iter().sum::<usize>();
        let port = if fails {
            n % failing_ports
        } else {
            failing_ports + n % (ports - failing_ports)
        };
        let path = format!(
            "/{}/{}/{k}",
            if fails { "fail" } else { "ok" },
            LEVELS[level]
        );
        (sink.url(port, &path), path, fails)
    };
    for r in 0..shape.resellers {
        let sub = r == 0;
        let (url, rpath, rfail) = url_for(3, sub);
        let reseller = api
            .post(
                "/v1/resellers",
                json!({"name": format!("Reseller {r}"), "contact": contact, "webhook_url": url}),
            )
            .await?;
        let rid = id(&reseller)?;
        resellers.push(rid.clone());
        register(api, sink, "resellers", &rid, &rpath, ordered).await?;
        count(&mut levels, rfail);
        for d in 0..shape.dealers {
            let (url, dpath, dfail) = url_for(2, sub);
            let dealer = api
                .post(
                    "/v1/dealers",
                    json!({"name": format!("Dealer {r}.{d}"), "contact": contact, "reseller": {"id": rid}, "webhook_url": url}),
                )
                .await?;
            let did = id(&dealer)?;
            register(api, sink, "dealers", &did, &dpath, ordered).await?;
            count(&mut levels, dfail);
            for c in 0..shape.companies {
                let (url, cpath, cfail) = url_for(1, sub);
                let company = api
                    .post(
                        "/v1/companies",
                        json!({"name": format!("Company {r}.{d}.{c}"), "contact": contact, "dealer": {"id": did}, "webhook_url": url}),
                    )
                    .await?;
                let cid = id(&company)?;
                register(api, sink, "companies", &cid, &cpath, ordered).await?;
                count(&mut levels, cfail);
                let user = api
                    .post(
                        "/v1/users",
                        json!({"first_name": "Bench", "last_name": format!("User {r}.{d}.{c}"),
                               "email": format!("user{r}.{d}.{c}@example.com"),
                               "entity": {"type": "company", "id": cid}}),
                    )
                    .await?;
                let uid = id(&user)?;
                for s in 0..shape.sites {
                    let (url, spath, sfail) = url_for(0, sub);
                    let site = api
                        .post(
                            "/v1/sites",
                            json!({"name": format!("Site {r}.{d}.{c}.{s}"), "company": {"id": cid}, "webhook_url": url}),
                        )
                        .await?;
                    let sid = id(&site)?;
                    register(api, sink, "sites", &sid, &spath, ordered).await?;
                    count(&mut levels, sfail);
                    let meeting = api
                        .post(
                            "/v1/meetings",
                            json!({"company": {"id": cid}, "site": {"id": sid}, "created_by": {"id": uid}, "subject": "setup"}),
                        )
                        .await?;
                    meetings.push(Meeting {
                        id: id(&meeting)?,
                        failing: [sfail, cfail, dfail, rfail],
                    });
                }
            }
        }
    }
    Ok(Hierarchy {
        resellers,
        levels: levels.0,
        failing_levels: levels.1,
        meetings,
        failing_ports,
    })
}

fn id(v: &Value) -> anyhow::Result<String> {
    Ok(v.get("id")
        .and_then(Value::as_str)
        .context("no id in the answer")?
        .to_owned())
}

async fn register(
    api: &Api,
    sink: &Sink,
    collection: &str,
    id: &str,
    path: &str,
    ordered: bool,
) -> anyhow::Result<()> {
    if ordered {
        // Every level's webhooks about one meeting go one at a time, in order.
        api.patch(
            &format!("/v1/{collection}/{id}/endpoint"),
            json!({"ordered": true}),
        )
        .await?;
    }
    let v = api.get(&format!("/v1/{collection}/{id}/secret")).await?;
    let secret = v
        .get("secret")
        .and_then(Value::as_str)
        .context("no secret")?;
    sink.state.set_secret(
        path,
        secret
            .parse()
            .map_err(|e| anyhow::anyhow!("secret: {e:?}"))?,
    );
    Ok(())
}

/// How fast to fire.
#[derive(Debug, Clone, Copy)]
pub enum Rate {
    /// Events per second, open loop (a request is sent on schedule even if others are slow).
    Fixed(f64),
    /// As fast as `concurrency` connections allow, closed loop.
    Max,
}

/// What one firing phase did.
pub struct Fired {
    pub accepted: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub started: Instant,
    pub elapsed: Duration,
    /// (sequence number, acknowledgement time in ns since the epoch), accepted events only.
    pub acks: Vec<(u64, u64)>,
    /// Request to acknowledgement, microseconds.
    pub api_latency: Histogram<u64>,
}

/// Live counters of a firing phase, for the progress display.
#[derive(Default)]
pub struct Firing {
    pub accepted: AtomicU64,
    pub errors: AtomicU64,
}

struct Shared {
    acks: Mutex<Vec<(u64, u64)>>,
    latency: Mutex<Histogram<u64>>,
    first_error: Mutex<Option<String>>,
    live: Arc<Firing>,
}

/// Fires meeting changes at `meetings` (round robin) for `duration`, spread over the API's
/// instances.
#[allow(clippy::too_many_arguments)]
pub async fn fire(
    api: &Api,
    meetings: &[Meeting],
    rate: Rate,
    duration: Duration,
    limit: Option<u64>,
    concurrency: usize,
    seq: &Arc<AtomicU64>,
    epoch: Instant,
    live: Arc<Firing>,
) -> Fired {
    let first_seq = seq.load(Ordering::SeqCst);
    let shared = Arc::new(Shared {
        acks: Mutex::new(Vec::new()),
        latency: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")),
        first_error: Mutex::new(None),
        live,
    });
    // Per instance, the URL of each meeting.
    let urls: Arc<Vec<Vec<String>>> = Arc::new(
        api.bases
            .iter()
            .map(|base| {
                meetings
                    .iter()
                    .map(|m| format!("{base}/v1/meetings/{}", m.id))
                    .collect()
            })
            .collect(),
    );
    let started = Instant::now();
    let deadline = started + duration;
    let end_seq = limit.map_or(u64::MAX, |l| first_seq + l);
    match rate {
        Rate::Max => {
            let mut workers = Vec::new();
            // Connection w talks to instance w mod N; each takes the next event, whichever
            // meeting it is about.
            for w in 0..concurrency {
                let (api, urls, seq, shared) =
                    (api.clone(), urls.clone(), seq.clone(), shared.clone());
                workers.push(tokio::spawn(async move {
                    let urls = &urls[w % urls.len()];
                    while Instant::now() < deadline {
                        let n = seq.fetch_add(1, Ordering::SeqCst);
                        if n >= end_seq {
                            break;
                        }
                        one(&api, urls, n, epoch, &shared).await;
                    }
                }));
            }
            for w in workers {
                let _ = w.await;
            }
        }
        Rate::Fixed(per_second) => {
            let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let mut tasks = tokio::task::JoinSet::new();
            let mut i = 0u64;
            loop {
                let due = started + Duration::from_secs_f64(i as f64 / per_second);
                if due >= deadline || first_seq + i >= end_seq {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let permit = limit.clone().acquire_owned().await.expect("never closed");
                let (api, urls, shared) = (api.clone(), urls.clone(), shared.clone());
                let n = seq.fetch_add(1, Ordering::SeqCst);
                let instance = instance_of(i, meetings.len(), urls.len());
                tasks.spawn(async move {
                    one(&api, &urls[instance], n, epoch, &shared).await;
                    drop(permit);
                });
                i += 1;
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let elapsed = started.elapsed();
    // Workers that drew a number past the limit did not use it.
    seq.fetch_min(end_seq, Ordering::SeqCst);
    let shared = Arc::try_unwrap(shared)
        .ok()
        .expect("all firing tasks have ended");
    let mut acks = shared.acks.into_inner().unwrap();
    acks.sort_unstable();
    Fired {
        accepted: shared.live.accepted.load(Ordering::SeqCst),
        errors: shared.live.errors.load(Ordering::SeqCst),
        first_error: shared.first_error.into_inner().unwrap(),
        started,
        elapsed,
        acks,
        api_latency: shared.latency.into_inner().unwrap(),
    }
}

/// The instance that takes the `i`th request of a fixed-rate phase: round robin, moved on by
/// one at each pass over the meetings, so that each meeting's changes go through every
/// instance in turn rather than always through the same one.
fn instance_of(i: u64, meetings: usize, instances: usize) -> usize {
    let i = i as usize;
    (i + i / meetings.max(1)) % instances.max(1)
}

async fn one(api: &Api, urls: &[String], n: u64, epoch: Instant, shared: &Shared) {
    let url = &urls[n as usize % urls.len()];
    let body = format!("{{\"subject\":\"{SUBJECT_PREFIX}{n}\"}}");
    let sent = Instant::now();
    let result = api
        .client
        .patch(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    // The acknowledgement: the status line and headers of the answer have arrived.
    let acked = Instant::now();
    match result {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
            shared
                .acks
                .lock()
                .unwrap()
                .push((n, acked.duration_since(epoch).as_nanos() as u64));
            let _ = shared
                .latency
                .lock()
                .unwrap()
                .record(acked.duration_since(sent).as_micros().max(1) as u64);
            shared.live.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(r) => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            shared.live.errors.fetch_add(1, Ordering::Relaxed);
            shared
                .first_error
                .lock()
                .unwrap()
                .get_or_insert(format!("{status} {text}"));
        }
        Err(e) => {
            shared.live.errors.fetch_add(1, Ordering::Relaxed);
            shared
                .first_error
                .lock()
                .unwrap()
                .get_or_insert(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_measured_webhooks_by_status() {
        let m = Metrics::parse(
            "# TYPE tidings_webhooks gauge\n\
             tidings_webhooks{type=\"MEETING_CHANGED\",status=\"succeeded\"} 40\n\
             tidings_webhooks{type=\"MEETING_CHANGED\",status=\"pending\"} 2\n\
             tidings_webhooks{type=\"MEETING_CREATED\",status=\"succeeded\"} 7\n\
             tidings_queue_depth 2\n\
             tidings_webhooks_recorded_total{status=\"succeeded\"} 45\n\
             tidings_webhooks_recorded_total{status=\"pending\"} 3\n",
        );
        assert_eq!(m.recorded("succeeded"), 45);
        assert_eq!(m.succeeded(), 45, "the counter where Tidings has it");
        let older =
            Metrics::parse("tidings_webhooks{type=\"MEETING_CHANGED\",status=\"succeeded\"} 40\n");
        assert_eq!(older.succeeded(), 40, "else the store's gauge");
        assert_eq!(m.recorded("pending"), 3);
        assert_eq!(m.changed("succeeded"), 40);
        assert_eq!(m.changed("pending"), 2);
        assert_eq!(m.sum(&["tidings_queue_depth"]), 2.0);
    }

    #[test]
    fn instances_counters_add_up_and_the_stores_gauges_do_not() {
        let first = Metrics::parse(
            "tidings_webhooks_recorded_total{status=\"succeeded\"} 45\n\
             tidings_attempts_total{outcome=\"http_status\"} 3\n\
             tidings_webhooks_created_total{type=\"MEETING_CHANGED\"} 50\n\
             tidings_api_connections_open 16\n\
             tidings_webhooks{type=\"MEETING_CHANGED\",status=\"succeeded\"} 75\n\
             tidings_webhooks{type=\"MEETING_CHANGED\",status=\"pending\"} 2\n\
             tidings_events{type=\"MEETING_CHANGED\"} 18\n\
             tidings_queue_depth 2\n\
             tidings_oldest_due_age_seconds 0.5\n\
             tidings_store_size_bytes 4096\n",
        );
        // Read a moment later: the store has moved on, and one more status is counted.
        let second = Metrics::parse(
            "tidings_webhooks_recorded_total{status=\"succeeded\"} 25\n\
             tidings_webhooks_recorded_total{status=\"pending\"} 4\n\
             tidings_webhooks_created_total{type=\"MEETING_CHANGED\"} 30\n\
             tidings_api_connections_open 16\n\
             tidings_webhooks{type=\"MEETING_CHANGED\",status=\"succeeded\"} 77\n\
             tidings_webhooks{type=\"MEETING_CHANGED\",status=\"failed\"} 1\n\
             tidings_events{type=\"MEETING_CHANGED\"} 19\n\
             tidings_queue_depth 1\n\
             tidings_oldest_due_age_seconds 0.7\n\
             tidings_store_size_bytes 8192\n",
        );
        let m = Metrics::combine([first, second]);
        assert_eq!(m.succeeded(), 70, "recorded by either instance");
        assert_eq!(m.recorded("pending"), 4);
        assert_eq!(m.sum(&["tidings_attempts_total"]), 3.0);
        assert_eq!(m.sum(&["tidings_webhooks_created_total"]), 80.0);
        assert_eq!(m.sum(&["tidings_api_connections_open"]), 32.0);
        // The store's gauges: the first instance's read alone.
        assert_eq!(m.changed("succeeded"), 75);
        assert_eq!(m.changed("pending"), 2);
        assert_eq!(m.changed("failed"), 0);
        assert_eq!(m.sum(&["tidings_events{"]), 18.0);
        assert_eq!(m.sum(&["tidings_queue_depth"]), 2.0);
        assert_eq!(m.sum(&["tidings_oldest_due_age_seconds"]), 0.5);
        assert_eq!(m.sum(&["tidings_store_size_bytes"]), 4096.0);
    }

    #[test]
    fn one_instances_metrics_are_its_own() {
        let text = "tidings_webhooks_recorded_total{status=\"succeeded\"} 45\n\
                    tidings_queue_depth 2\n";
        let m = Metrics::combine([Metrics::parse(text)]);
        assert_eq!(m.succeeded(), 45);
        assert_eq!(m.sum(&["tidings_queue_depth"]), 2.0);
    }

    #[test]
    fn fixed_rate_requests_take_every_instance_for_every_meeting() {
        // 4 meetings, 2 instances: each meeting goes to both instances over two passes.
        let took: Vec<(u64, usize)> = (0..8).map(|i| (i % 4, instance_of(i, 4, 2))).collect();
        for meeting in 0..4 {
            let mut instances: Vec<usize> = took
                .iter()
                .filter(|(m, _)| *m == meeting)
                .map(|(_, i)| *i)
                .collect();
            instances.sort_unstable();
            assert_eq!(instances, [0, 1], "meeting {meeting}");
        }
        // And the requests are shared evenly.
        let first = took.iter().filter(|(_, i)| *i == 0).count();
        assert_eq!(first, 4);
        assert!((0..10).all(|i| instance_of(i, 4, 1) == 0));
    }
}
