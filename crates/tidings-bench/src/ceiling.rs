//! The ceiling: the same sink driven directly by a plain HTTP client, with the bodies Tidings
//! delivered in the measured phase, signed afresh the same way, over the same destinations
//! and with the same concurrency Tidings was allowed. What the machine can do with no
//! Tidings in between; Tidings' figures are reported as a share of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tidings_verify::Secret;

use crate::sink::{Sample, Sink};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Ceiling {
    pub requests_per_second: f64,
    pub requests: u64,
    pub failures: u64,
    pub seconds: f64,
    pub concurrency: usize,
    pub destinations: usize,
    pub connections: u64,
    pub http2_share: f64,
    /// CPU used by this process (client + sink) meanwhile, in cores.
    pub bench_cores: f64,
}

/// Replays `samples` (each with its level's secret) at `concurrency` requests in flight for
/// `duration`.
pub async fn run(
    sink: &Sink,
    samples: Vec<(Sample, Secret)>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    anyhow::ensure!(
        !samples.is_empty(),
        "no delivery was sampled for the ceiling run"
    );
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(sink.ca_pem().as_bytes())?)
        .user_agent("tidings-bench-ceiling")
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut ports: Vec<u16> = samples.iter().map(|(s, _)| s.port).collect();
    ports.sort_unstable();
    ports.dedup();
    let destinations = ports.len();
    // Each sample goes where Tidings sent it: same port (destination), same path.
    let jobs: Arc<Vec<(String, Sample, Secret)>> = Arc::new(
        samples
            .into_iter()
            .map(|(s, secret)| (format!("https://127.0.0.1:{}{}", s.port, s.path), s, secret))
            .collect(),
    );
    sink.state.set_ceiling(true);
    let before = sink.state.counts();
    // One request to each destination first, so that, like Tidings' client in the measured
    // phase, the load runs over one established connection per destination (HTTP/2
    // multiplexes the requests in flight) instead of a burst of parallel handshakes.
    let mut warmed = Vec::new();
    for (url, s, secret) in jobs.iter() {
        let port = s.port;
        if !warmed.contains(&port) {
            warmed.push(port);
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64;
            let _ = client
                .post(url)
                .header("webhook-id", &s.webhook_id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", secret.sign(&s.webhook_id, ts, &s.body))
                .body(s.body.clone())
                .send()
                .await;
        }
    }
    let cpu_before = crate::child::read_self();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, jobs, ok, failed, next) = (
            client.clone(),
            jobs.clone(),
            ok.clone(),
            failed.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let (url, s, secret) = &jobs[i % jobs.len()];
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64;
                let signature = secret.sign(&s.webhook_id, ts, &s.body);
                let r = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &s.webhook_id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", signature)
                    .body(s.body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = crate::child::read_self();
    sink.state.set_ceiling(false);
    let seen = sink.state.counts().since(&before);
    let requests = ok.load(Ordering::SeqCst);
    Ok(Ceiling {
        requests_per_second: requests as f64 / seconds,
        requests,
        failures: failed.load(Ordering::SeqCst),
        seconds,
        concurrency,
        destinations,
        connections: seen.connections,
        http2_share: seen.http2_requests as f64 / seen.requests.max(1) as f64,
        bench_cores: (cpu_after.cpu_seconds - cpu_before.cpu_seconds) / seconds,
    })
}
