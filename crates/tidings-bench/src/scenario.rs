//! The benchmark's scenarios (a, b, c, d; BENCHMARKS.md) and the measured phase they are made of.
//!
//! A scenario starts a sink and a fresh Tidings (one instance, or for a and b on PostgreSQL
//! several sharing the database), builds the hierarchy, waits until the setup's own webhooks
//! are delivered, then runs one or more phases: fire events, wait until every webhook to a
//! healthy destination is recorded as delivered, read the figures. The ceiling run follows
//! the main phase, on the same sink, in the same process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::api::{self, Api, Failing, Firing, Hierarchy, Meeting, Metrics, Rate, Shape};
use crate::ceiling::{self, Ceiling};
use crate::child::{self, ChildConfig, Instances, ProcReading, ProcSampler, StoreKind};
use crate::report::{self, Delivery, Latency, Machine, Phase, Process, Report, Target};
use crate::sink::Sink;

/// Settings shared by every scenario (the command line).
#[derive(Debug, Clone)]
pub struct Options {
    pub bin: PathBuf,
    pub postgres_url: String,
    pub out_dir: PathBuf,
    pub ports: usize,
    pub api_concurrency: usize,
    pub max_in_flight: usize,
    pub per_destination: usize,
    /// Overrides each scenario's own phase length.
    pub duration: Option<f64>,
    /// Overrides the fixed rate of scenarios a and c.
    pub rate: Option<f64>,
    pub ceiling_seconds: f64,
    /// Pending retries to store in scenario d.
    pub pending: u64,
    pub shape: Shape,
    pub rust_log: String,
    pub drain_timeout: f64,
    pub keep: bool,
    /// Events of scenario b's dispatcher-only phase (4 webhooks each).
    pub dispatch_events: u64,
    /// Every level's endpoint `ordered`: the cost of ordered delivery (compare b with and
    /// without).
    pub ordered: bool,
    /// TIDINGS_RETENTION of the child (scenario f: 60s unless given).
    pub retention: Option<String>,
    /// `tidings serve` processes on the run's one database (PostgreSQL; scenarios a and b).
    pub instances: usize,
}

const MIB: f64 = 1024.0 * 1024.0;

/// One scenario on one store: a sink, a Tidings (one or more instances), a hierarchy.
struct Run {
    opts: Options,
    store: StoreKind,
    sink: Sink,
    tidings: Option<Instances>,
    api: Api,
    epoch: Instant,
    seq: Arc<AtomicU64>,
    hierarchy: Hierarchy,
    dir: PathBuf,
    setup_seconds: f64,
    retry_schedule: String,
}

impl Run {
    async fn start(
        opts: &Options,
        store: StoreKind,
        name: &str,
        failing: Failing,
        retry_schedule: &str,
    ) -> anyhow::Result<Run> {
        let epoch = Instant::now();
        let dir = opts
            .out_dir
            .join("runs")
            .join(format!("{name}-{}", store.as_str()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let sink = Sink::start(opts.ports, epoch).await?;
        let ca_file = dir.join("sink-ca.pem");
        std::fs::write(&ca_file, sink.ca_pem())?;
        let cfg = ChildConfig {
            bin: opts.bin.clone(),
            store,
            postgres_url: opts.postgres_url.clone(),
            dir: dir.clone(),
            secret_key_file: dir.join("tidings.key"),
            ca_file,
            retry_schedule: retry_schedule.to_owned(),
            max_in_flight: opts.max_in_flight,
            per_destination: opts.per_destination,
            rust_log: opts.rust_log.clone(),
            retention: opts.retention.clone(),
        };
        let tidings = Instances::start(&cfg, name, opts.instances).await?;
        let api = Api::new(&tidings.base_urls(), opts.api_concurrency)?;
        let started = Instant::now();
        let hierarchy = api::build_hierarchy(&api, &sink, opts.shape, failing, opts.ordered)
            .await
            .context("building the hierarchy")?;
        // The setup's own webhooks (DEALER_CREATED, MEETING_CREATED, ...) go out first:
        // nothing due, and the sink quiet for a second. (Webhooks to failing levels may stay
        // pending for their next attempt, hours away in scenario d.)
        let mut quiet_since = (Instant::now(), sink.state.counts().requests);
        wait_until(&api, Duration::from_secs(120), |m| {
            let requests = sink.state.counts().requests;
            if requests != quiet_since.1 {
                quiet_since = (Instant::now(), requests);
            }
            m.sum(&["tidings_oldest_due_age_seconds"]) == 0.0
                && quiet_since.0.elapsed() >= Duration::from_secs(1)
        })
        .await?;
        let setup_seconds = started.elapsed().as_secs_f64();
        Ok(Run {
            opts: opts.clone(),
            store,
            sink,
            tidings: Some(tidings),
            api,
            epoch,
            seq: Arc::new(AtomicU64::new(0)),
            hierarchy,
            dir,
            setup_seconds,
            retry_schedule: retry_schedule.to_owned(),
        })
    }

    fn tidings(&self) -> &Instances {
        self.tidings.as_ref().expect("running")
    }

    /// Fires events at `meetings`, waits until the healthy webhooks are recorded, measures.
    async fn phase(
        &self,
        name: &str,
        meetings: &[Meeting],
        rate: Rate,
        duration: Duration,
        limit: Option<u64>,
        sample: bool,
    ) -> anyhow::Result<Phase> {
        let before = self.api.metrics().await?;
        let sink_before = self.sink.state.counts();
        let samplers = self.tidings().samplers();
        let proc_before: Vec<ProcReading> = samplers.iter().map(|s| s.mark()).collect();
        let self_before = child::read_self();
        let machine_before = child::machine_cpu();
        let pg_before = child::processes_cpu("postgres");
        let live = Arc::new(Firing::default());
        let progress = Progress::start(name, &self.sink, samplers.clone(), live.clone());
        self.sink.state.set_sampling(sample);
        let fired = api::fire(
            &self.api,
            meetings,
            rate,
            duration,
            limit,
            self.opts.api_concurrency,
            &self.seq,
            self.epoch,
            live,
        )
        .await;
        self.sink.state.set_sampling(false);
        let sink_fired = self.sink.state.counts().since(&sink_before);
        let open_connections = sink_fired.open_connections;
        let fire_seconds = fired.elapsed.as_secs_f64();
        // While the sink fails everything (the dispatcher-only setup) nothing is delivered.
        let expected: u64 = if self.sink.state.failing_all() {
            0
        } else {
            fired
                .acks
                .iter()
                .map(|(n, _)| 4 - meetings[*n as usize % meetings.len()].failing_levels() as u64)
                .sum()
        };
        // Drain: until every healthy webhook of the accepted events is recorded as delivered.
        progress.draining(expected);
        // Counted by Tidings after each commit: unlike the store's gauges it costs no scan, so
        // polling it does not slow the drain down when the store holds millions of rows.
        let base = before.succeeded();
        let drain_limit =
            Duration::from_secs_f64(self.opts.drain_timeout.max(duration.as_secs_f64() * 3.0));
        let mut delivered;
        let mut last = before.clone();
        loop {
            last = self.api.metrics().await.unwrap_or(last);
            delivered = last.succeeded().saturating_sub(base);
            progress.recorded(delivered);
            if delivered >= expected || fired.started.elapsed() > duration + drain_limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let delivered_seconds = fired.started.elapsed().as_secs_f64();
        progress.stop();
        let wall = delivered_seconds;
        let per_instance: Vec<Process> = samplers
            .iter()
            .zip(&proc_before)
            .map(|(s, before)| measured(s, before, wall, delivered))
            .collect();
        let self_after = child::read_self();
        let machine_after = child::machine_cpu();
        let pg_after = child::processes_cpu("postgres");

        // Latency: first arrival at the sink minus the acknowledgement of its event.
        let mut healthy = (Histogram::<u64>::new(3).expect("valid"), 0u64, 0u64);
        let mut failing = (Histogram::<u64>::new(3).expect("valid"), 0u64, 0u64);
        let mut any_failing = false;
        for (n, ack) in &fired.acks {
            let m = &meetings[*n as usize % meetings.len()];
            for (level, fails) in m.failing.iter().enumerate() {
                let (h, before_ack, missing) = if *fails {
                    any_failing = true;
                    &mut failing
                } else {
                    &mut healthy
                };
                match self.sink.state.arrivals.get(*n, level) {
                    Some(at) => {
                        if at < *ack {
                            *before_ack += 1;
                        }
                        let _ = h.record(at.saturating_sub(*ack) / 1000);
                    }
                    None => *missing += 1,
                }
            }
        }
        let delivery = |(h, before_ack, missing): (Histogram<u64>, u64, u64)| Delivery {
            latency: Latency::of(&h),
            before_ack,
            missing,
        };
        let attempts = outcomes(&before, &last);
        let mut notes = vec![format!(
            "connections from Tidings open at the sink when firing stopped: {open_connections}"
        )];
        if delivered < expected {
            notes.push(format!(
                "only {delivered} of {expected} healthy webhooks were recorded as delivered within the drain limit"
            ));
        }
        Ok(Phase {
            name: name.to_owned(),
            rate: match rate {
                Rate::Max => "max".into(),
                Rate::Fixed(r) => format!("{r:.0}"),
            },
            events_accepted: fired.accepted,
            api_errors: fired.errors,
            first_api_error: fired.first_error,
            fire_seconds,
            events_per_second: fired.accepted as f64 / fire_seconds,
            api_latency: Latency::of(&fired.api_latency),
            webhooks_expected: expected,
            webhooks_delivered: delivered,
            delivered_seconds,
            webhooks_per_second: delivered as f64 / delivered_seconds,
            sink_per_second_while_firing: sink_fired.first_ok as f64 / fire_seconds,
            all_delivered: delivered >= expected,
            healthy: delivery(healthy),
            failing: any_failing.then(|| delivery(failing)),
            tidings: Process::sum(&per_instance),
            tidings_per_instance: per_instance,
            bench_cores_avg: (self_after.cpu_seconds - self_before.cpu_seconds) / wall,
            machine_cores_busy: (machine_after.0 - machine_before.0) / wall,
            postgres_cores_avg: (pg_after - pg_before).max(0.0) / wall,
            sink: self.sink.state.counts().since(&sink_before),
            attempts,
            queue_depth_end: last.sum(&["tidings_queue_depth"]) as u64,
            notes,
        })
    }

    /// The ceiling with the bodies sampled in the main phase and the concurrency Tidings had.
    async fn ceiling(&self) -> anyhow::Result<Ceiling> {
        let samples: Vec<_> = self
            .sink
            .state
            .samples()
            .into_iter()
            .filter_map(|s| self.sink.state.secret(&s.path).map(|secret| (s, secret)))
            .collect();
        let destinations = {
            let mut p: Vec<u16> = samples.iter().map(|(s, _)| s.port).collect();
            p.sort_unstable();
            p.dedup();
            p.len().max(1)
        };
        // Each instance has its own limits: together they were allowed as many times more.
        let concurrency = self
            .opts
            .max_in_flight
            .min(self.opts.per_destination * destinations)
            * self.tidings().count();
        let pb = spinner("ceiling: the sink driven directly");
        let c = ceiling::run(
            &self.sink,
            samples,
            concurrency,
            Duration::from_secs_f64(self.opts.ceiling_seconds),
        )
        .await;
        pb.finish_and_clear();
        c
    }

    fn settings(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut v = json!({
            "api_concurrency": self.opts.api_concurrency,
            "sink_ports": self.opts.ports,
            "failing_ports": self.hierarchy.failing_ports,
            "failing_share_of_webhooks": self.hierarchy.failing_share(),
            "TIDINGS_MAX_IN_FLIGHT": self.opts.max_in_flight,
            "TIDINGS_PER_DESTINATION": self.opts.per_destination,
            "TIDINGS_RETRY_SCHEDULE": self.retry_schedule,
            "RUST_LOG": self.opts.rust_log,
            "shape": self.opts.shape,
            "levels_with_webhook_url": self.hierarchy.levels,
            "every_level_ordered": self.opts.ordered,
            "failing_levels": self.hierarchy.failing_levels,
            "meetings": self.hierarchy.meetings.len(),
            "tidings_pid": self.tidings().first().pid,
            "tidings_pids": self.tidings().pids(),
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    /// Stops Tidings and drops its store; counts in `r` what the sink saw delivered twice
    /// over the whole run, a target when several instances shared the store.
    async fn finish(mut self, r: &mut Report) -> anyhow::Result<()> {
        r.delivered_again = self.sink.state.counts().delivered_again;
        if self.opts.instances > 1 {
            r.targets.push(Target {
                what: format!(
                    "webhooks answered 200 more than once for one (event, level), {} instances on one store",
                    self.opts.instances
                ),
                target: "0".into(),
                measured: r.delivered_again.to_string(),
                met: r.delivered_again == 0,
            });
        }
        if let Some(t) = self.tidings.take() {
            t.stop().await?;
        }
        if !self.opts.keep {
            let _ = std::fs::remove_file(self.dir.join("tidings.db"));
            let _ = std::fs::remove_file(self.dir.join("tidings.db-wal"));
            let _ = std::fs::remove_file(self.dir.join("tidings.db-shm"));
        }
        Ok(())
    }
}

/// One instance's CPU and memory over `wall` seconds since `before` (its sampler's mark).
fn measured(sampler: &ProcSampler, before: &ProcReading, wall: f64, delivered: u64) -> Process {
    let after = sampler.read();
    let (rss_peak, cores_peak) = sampler.peaks();
    let switches = after
        .context_switches
        .saturating_sub(before.context_switches) as f64;
    Process {
        cpu_cores_avg: (after.cpu_seconds - before.cpu_seconds) / wall,
        cpu_cores_peak: cores_peak,
        rss_peak_mib: rss_peak as f64 / MIB,
        rss_end_mib: after.rss_bytes as f64 / MIB,
        hwm_mib: after.hwm_bytes as f64 / MIB,
        context_switches_per_second: switches / wall,
        context_switches_per_webhook: switches / delivered.max(1) as f64,
        threads: after.threads,
    }
}

/// Attempts by outcome between two scrapes.
fn outcomes(before: &Metrics, after: &Metrics) -> Vec<(String, u64)> {
    let mut out = BTreeMap::new();
    for outcome in [
        "succeeded",
        "http_status",
        "timeout",
        "connect",
        "tls",
        "refused",
        "transport",
        "no_secret",
    ] {
        let key = format!("outcome=\"{outcome}\"");
        let n = after.sum(&["tidings_attempts_total", &key])
            - before.sum(&["tidings_attempts_total", &key]);
        if n > 0.0 {
            out.insert(outcome.to_owned(), n as u64);
        }
    }
    out.into_iter().collect()
}

/// Fires `events` as fast as the API takes them at `meetings`, whose destinations answer
/// 500, then waits (at most `limit`) until every one of their 4 webhooks per event has had its
/// failed attempt recorded.
async fn fire_until_each_failed_once(
    run: &Run,
    name: &str,
    meetings: &[Meeting],
    events: u64,
    limit: Duration,
) -> anyhow::Result<Phase> {
    let m0 = run.api.metrics().await?;
    let fill = run
        .phase(
            name,
            meetings,
            Rate::Max,
            Duration::from_secs(3600),
            Some(events),
            false,
        )
        .await?;
    let want = 4 * fill.events_accepted;
    let failed = |m: &Metrics| {
        (m.sum(&["tidings_attempts_total", "outcome=\"http_status\""])
            - m0.sum(&["tidings_attempts_total", "outcome=\"http_status\""])) as u64
    };
    wait_until(&run.api, limit, |m| failed(m) >= want).await?;
    // The last batch of attempts is recorded right after it is counted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(fill)
}

async fn wait_until(
    api: &Api,
    limit: Duration,
    mut done: impl FnMut(&Metrics) -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let m = api.metrics().await?;
        if done(&m) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "Tidings did not reach the expected state within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed:>4}] {msg}").expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb.set_message(msg.to_owned());
    pb
}

/// The live line: events accepted, deliveries seen by the sink, Tidings' CPU and memory.
struct Progress {
    pb: ProgressBar,
    stop: Arc<AtomicBool>,
    expected: Arc<AtomicU64>,
    recorded: Arc<AtomicU64>,
}

impl Progress {
    /// `samplers`: Tidings' instances, whose CPU and memory the line shows summed.
    fn start(
        name: &str,
        sink: &Sink,
        samplers: Vec<Arc<ProcSampler>>,
        live: Arc<Firing>,
    ) -> Progress {
        let pb = spinner(name);
        let stop = Arc::new(AtomicBool::new(false));
        let expected = Arc::new(AtomicU64::new(u64::MAX));
        let recorded = Arc::new(AtomicU64::new(0));
        let (pb2, stop2, expected2, recorded2) =
            (pb.clone(), stop.clone(), expected.clone(), recorded.clone());
        let (state, name) = (sink.state.clone(), name.to_owned());
        // CPU seconds and RSS bytes of all the instances.
        let read = move || {
            samplers
                .iter()
                .map(|s| s.read())
                .fold((0.0, 0), |(cpu, rss), r| {
                    (cpu + r.cpu_seconds, rss + r.rss_bytes)
                })
        };
        tokio::spawn(async move {
            let mut prev = (Instant::now(), 0u64, state.counts().first_ok, read().0);
            let base = state.counts().first_ok;
            while !stop2.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = Instant::now();
                let accepted = live.accepted.load(Ordering::Relaxed);
                let arrived = state.counts().first_ok;
                let (cpu, rss) = read();
                let dt = now.duration_since(prev.0).as_secs_f64();
                let cores = (cpu - prev.3) / dt;
                let exp = expected2.load(Ordering::SeqCst);
                let tail = if exp == u64::MAX {
                    String::new()
                } else {
                    format!(
                        " | draining: {}/{} recorded",
                        recorded2.load(Ordering::SeqCst),
                        exp
                    )
                };
                pb2.set_message(format!(
                    "{name}: {accepted} events ({:.0}/s, {} errors) | sink {} ({:.0}/s) | tidings {:.2} cores {:.0} MiB{tail}",
                    (accepted - prev.1) as f64 / dt,
                    live.errors.load(Ordering::Relaxed),
                    arrived - base,
                    (arrived - prev.2) as f64 / dt,
                    cores,
                    rss as f64 / MIB,
                ));
                prev = (now, accepted, arrived, cpu);
            }
        });
        Progress {
            pb,
            stop,
            expected,
            recorded,
        }
    }

    fn draining(&self, expected: u64) {
        self.expected.store(expected, Ordering::SeqCst);
    }

    fn recorded(&self, n: u64) {
        self.recorded.store(n, Ordering::SeqCst);
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.pb.finish_and_clear();
    }
}

fn report(
    run: &Run,
    scenario: &str,
    title: &str,
    load_before: [f64; 3],
    settings: serde_json::Value,
) -> Report {
    Report {
        scenario: scenario.to_owned(),
        title: title.to_owned(),
        store: run.store.as_str().to_owned(),
        instances: run.tidings().count(),
        machine: Machine::read(),
        load_average_before: load_before,
        load_average_after: report::load_average(),
        settings: run.settings(settings),
        setup_seconds: run.setup_seconds,
        phases: Vec::new(),
        ceiling: None,
        ratio_to_ceiling: None,
        delivered_again: 0,
        targets: Vec::new(),
        notes: Vec::new(),
    }
}

fn secs(opts: &Options, default: f64) -> Duration {
    Duration::from_secs_f64(opts.duration.unwrap_or(default))
}

fn summary(p: &Phase) {
    let instances = match p.tidings_per_instance.len() {
        0 | 1 => String::new(),
        n => format!(" ({n} instances)"),
    };
    println!(
        "  {:<18} {:>7.0} events/s accepted, {:>7.0} webhooks/s delivered ({}/{}), p50 {:.2} ms p99 {:.2} ms max {:.1} ms, tidings{instances} {:.2} cores {:.0} MiB, bench {:.2} cores, postgres {:.2} cores, machine {:.2} cores busy, delivered again {}",
        p.name,
        p.events_per_second,
        p.webhooks_per_second,
        p.webhooks_delivered,
        p.webhooks_expected,
        p.healthy.latency.p50_ms,
        p.healthy.latency.p99_ms,
        p.healthy.latency.max_ms,
        p.tidings.cpu_cores_avg,
        p.tidings.rss_peak_mib,
        p.bench_cores_avg,
        p.postgres_cores_avg,
        p.machine_cores_busy,
        p.sink.delivered_again
    );
}

fn with_ceiling(r: &mut Report, c: Ceiling) {
    println!(
        "  ceiling            {:>7.0} requests/s over {} destinations, {} in flight, {} new connections ({:.0}% HTTP/2)",
        c.requests_per_second,
        c.destinations,
        c.concurrency,
        c.connections,
        c.http2_share * 100.0
    );
    // The first phase at maximum rate, else the first phase.
    let main = r
        .phases
        .iter()
        .find(|p| p.rate == "max")
        .or(r.phases.first());
    r.ratio_to_ceiling = main.map(|p| p.webhooks_per_second / c.requests_per_second);
    r.ceiling = Some(c);
}

/// (a) A steady 1,000 events/s: acknowledgement-to-first-attempt latency.
pub async fn steady(opts: &Options, store: StoreKind) -> anyhow::Result<Report> {
    let load = report::load_average();
    let run = Run::start(opts, store, "a", Failing::None, "1s,1s,1s,1s").await?;
    let rate = opts.rate.unwrap_or(1000.0);
    let mut r = report(
        &run,
        "a",
        "steady rate: latency from API acknowledgement to first attempt",
        load,
        json!({"rate": rate}),
    );
    let meetings = run.hierarchy.meetings.clone();
    let p = run
        .phase(
            "steady",
            &meetings,
            Rate::Fixed(rate),
            secs(opts, 30.0),
            None,
            true,
        )
        .await?;
    summary(&p);
    let p99 = p.healthy.latency.p99_ms;
    r.targets.push(Target {
        what: format!("p99 acknowledgement to first attempt at {rate:.0} events/s"),
        target: "< 10 ms".into(),
        measured: format!("{p99:.2} ms"),
        met: p99 < 10.0 && p.all_delivered,
    });
    r.phases.push(p);
    with_ceiling(&mut r, run.ceiling().await?);
    run.finish(&mut r).await?;
    Ok(r)
}

/// (f) Soak: a steady 1,000 events/s for a long phase (10 minutes unless `--duration`) with
/// a short retention (60 s unless `--retention`), sampling the store's size on disk and the
/// rows pruned: with pruning keeping up, the size levels off once the retention's worth of
/// data is stored.
pub async fn soak(opts: &Options, store: StoreKind) -> anyhow::Result<Report> {
    let load = report::load_average();
    let mut opts = opts.clone();
    let retention = opts.retention.get_or_insert_with(|| "60s".into()).clone();
    let run = Run::start(&opts, store, "f", Failing::None, "1s,1s,1s,1s").await?;
    let rate = opts.rate.unwrap_or(1000.0);
    let duration = secs(&opts, 600.0);
    let mut r = report(
        &run,
        "f",
        "soak: steady rate with a short retention, the store's size over time",
        load,
        json!({"rate": rate, "retention": retention}),
    );
    // The store's size every twentieth of the phase (at least every 5 s).
    let every = (duration / 20).max(Duration::from_secs(5));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (api, sampling) = (run.api.clone(), sampling.clone());
        let started = Instant::now();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while sampling.load(Ordering::SeqCst) {
                if let Ok(m) = api.metrics().await {
                    samples.push((
                        started.elapsed().as_secs_f64(),
                        m.sum(&["tidings_store_size_bytes"]) / MIB,
                        m.sum(&["tidings_pruned_rows_total{", "kind=\"webhook\""]),
                        m.sum(&["tidings_webhooks{"]),
                    ));
                }
                tokio::time::sleep(every).await;
            }
            samples
        })
    };
    let meetings = run.hierarchy.meetings.clone();
    let p = run
        .phase("soak", &meetings, Rate::Fixed(rate), duration, None, true)
        .await?;
    sampling.store(false, Ordering::SeqCst);
    let samples = sampler.await?;
    summary(&p);
    println!(
        "  {:>8} {:>10} {:>14} {:>14}",
        "seconds", "size MiB", "pruned webhooks", "stored webhooks"
    );
    for (t, size, pruned, stored) in &samples {
        println!("  {t:>8.0} {size:>10.1} {pruned:>14.0} {stored:>14.0}");
        r.notes.push(format!(
            "at {t:.0} s: store {size:.1} MiB, {pruned:.0} webhooks pruned, {stored:.0} stored"
        ));
    }
    // Levelled off: the last third of the phase grew the store by less than 10 %.
    let third = samples.len() * 2 / 3;
    if let (Some(mid), Some(last)) = (samples.get(third), samples.last()) {
        let growth = if mid.1 > 0.0 {
            (last.1 - mid.1) / mid.1
        } else {
            0.0
        };
        r.targets.push(Target {
            what: format!("store growth over the last third of the phase (retention {retention})"),
            target: "< 10 %".into(),
            measured: format!(
                "{:.1} % ({:.1} -> {:.1} MiB)",
                growth * 100.0,
                mid.1,
                last.1
            ),
            met: growth < 0.10,
        });
    }
    r.phases.push(p);
    run.finish(&mut r).await?;
    Ok(r)
}

/// (b) As fast as possible, 4 receiving levels per event: the throughput ceiling ratio.
pub async fn max_throughput(opts: &Options, store: StoreKind) -> anyhow::Result<Report> {
    let load = report::load_average();
    // The first retry 20 s after a failed first attempt: the dispatcher-only phase below.
    let mut run = Run::start(opts, store, "b", Failing::None, "20s,1s,1s,1s").await?;
    let mut r = report(
        &run,
        "b",
        "maximum throughput, 4 receiving levels per event",
        load,
        json!({}),
    );
    let meetings = run.hierarchy.meetings.clone();
    let p = run
        .phase("max", &meetings, Rate::Max, secs(opts, 20.0), None, true)
        .await?;
    summary(&p);
    if store == StoreKind::Sqlite {
        r.targets.push(Target {
            what: "webhooks/s delivered end to end on SQLite".into(),
            target: ">= 20000".into(),
            measured: format!("{:.0}", p.webhooks_per_second),
            met: p.webhooks_per_second >= 20_000.0,
        });
    }
    r.phases.push(p);
    with_ceiling(&mut r, run.ceiling().await?);
    // The dispatcher-only phase waits until every queued webhook has failed once; an ordered
    // level attempts only the oldest of each meeting's, so that state never comes.
    if opts.ordered && opts.dispatch_events > 0 {
        println!("  dispatcher-only phase skipped: it needs every webhook attempted at once, which ordered levels do not do");
    } else if opts.dispatch_events > 0 {
        let d = dispatcher_only(&mut run, &meetings, opts.dispatch_events).await?;
        r.phases.push(d);
    }
    run.finish(&mut r).await?;
    Ok(r)
}

/// The dispatcher alone, with no API traffic: `events` events are fired while every
/// destination answers 500, so each of their webhooks waits for its retry 20 s later.
/// Tidings is stopped meanwhile and started again once all of them are due, with the sink
/// answering 200: the phase measures how fast a fresh Tidings claims, sends and records a
/// backlog that is all due.
async fn dispatcher_only(
    run: &mut Run,
    meetings: &[Meeting],
    events: u64,
) -> anyhow::Result<Phase> {
    let sink = &run.sink.state;
    sink.set_fail_all(true);
    let fill = fire_until_each_failed_once(
        run,
        "queue-retries",
        meetings,
        events,
        Duration::from_secs(300),
    )
    .await?;
    let want = 4 * fill.events_accepted;
    let queued_at = Instant::now();
    // Stopped (every instance) while the retries come due, so that all of them are due at
    // once when it is back; the sink answers 200 again.
    let pb = spinner("dispatcher only: Tidings stopped until every retry is due");
    let tidings = run.tidings.as_mut().expect("running");
    tidings.pause().await;
    sink.set_fail_all(false);
    tokio::time::sleep(Duration::from_secs(21).saturating_sub(queued_at.elapsed())).await;
    let sink_before = sink.counts();
    tidings.resume().await?;
    pb.finish_and_clear();
    run.api = Api::new(&run.tidings().base_urls(), run.opts.api_concurrency)?;
    // Tidings' counters belong to the processes just started: everything they counted is
    // this phase's (they start on the due retries at once, before a first read could take a
    // base). An older Tidings without the counter: the store's gauge, from a first read.
    let first = run.api.metrics().await?;
    let before = if first.has_recorded_counter() {
        Metrics::default()
    } else {
        first
    };
    let base = before.succeeded();
    let samplers = run.tidings().samplers();
    let proc_before: Vec<ProcReading> = samplers.iter().map(|s| s.mark()).collect();
    let machine_before = child::machine_cpu();
    let pg_before = child::processes_cpu("postgres");
    let pb = spinner("dispatcher only: draining the due retries");
    let started = Instant::now();
    let mut last;
    loop {
        last = run.api.metrics().await?;
        let delivered = last.succeeded().saturating_sub(base);
        pb.set_message(format!("dispatcher only: {delivered}/{want} delivered"));
        if delivered >= want || started.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pb.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let delivered = last.succeeded().saturating_sub(base);
    let per_instance: Vec<Process> = samplers
        .iter()
        .zip(&proc_before)
        .map(|(s, before)| measured(s, before, seconds, delivered))
        .collect();
    let machine_after = child::machine_cpu();
    let p = Phase {
        name: "dispatcher-only".into(),
        rate: "due".into(),
        webhooks_expected: want,
        webhooks_delivered: delivered,
        delivered_seconds: seconds,
        webhooks_per_second: delivered as f64 / seconds,
        all_delivered: delivered >= want,
        tidings: Process::sum(&per_instance),
        tidings_per_instance: per_instance,
        machine_cores_busy: (machine_after.0 - machine_before.0) / seconds,
        postgres_cores_avg: (child::processes_cpu("postgres") - pg_before).max(0.0) / seconds,
        attempts: outcomes(&before, &last),
        sink: sink.counts().since(&sink_before),
        notes: vec![format!(
            "{want} webhooks all due at once, no API traffic: claimed, sent and recorded in {seconds:.1} s (polling /metrics every 200 ms)"
        )],
        ..Phase::default()
    };
    summary(&p);
    Ok(p)
}

/// (c) 20 % of the destinations answer 500: retries, and whether healthy ones notice.
pub async fn failing(opts: &Options, store: StoreKind) -> anyhow::Result<Report> {
    let load = report::load_average();
    let run = Run::start(opts, store, "c", Failing::OneInFive, "1s,1s,1s,1s").await?;
    let rate = opts.rate.unwrap_or(1000.0);
    let mut r = report(
        &run,
        "c",
        "20 % of destinations failing (HTTP 500): retries and isolation",
        load,
        json!({"rate": rate}),
    );
    let meetings = run.hierarchy.meetings.clone();
    let p = run
        .phase(
            "steady-20%-fail",
            &meetings,
            Rate::Fixed(rate),
            secs(opts, 20.0),
            None,
            true,
        )
        .await?;
    summary(&p);
    r.phases.push(p);
    // Let the failing webhooks finish their 5 attempts before the next phase.
    settle(&run, &mut r).await;
    let p = run
        .phase(
            "max-20%-fail",
            &meetings,
            Rate::Max,
            secs(opts, 20.0),
            None,
            false,
        )
        .await?;
    summary(&p);
    r.phases.push(p);
    settle(&run, &mut r).await;
    let m = run.api.metrics().await?;
    r.notes.push(format!(
        "after both phases the store holds {} MEETING_CHANGED webhooks failed for good (5 attempts) and {} succeeded",
        m.changed("failed"),
        m.changed("succeeded")
    ));
    with_ceiling(&mut r, run.ceiling().await?);
    run.finish(&mut r).await?;
    Ok(r)
}

/// Waits (up to 5 minutes) until no measured webhook is pending any more.
async fn settle(run: &Run, r: &mut Report) {
    let started = Instant::now();
    if wait_until(&run.api, Duration::from_secs(300), |m| {
        m.changed("pending") == 0
    })
    .await
    .is_err()
    {
        r.notes
            .push("retries of failing webhooks were still pending 5 minutes after a phase".into());
    }
    r.notes.push(format!(
        "waited {:.1} s for the failing webhooks' retries to end",
        started.elapsed().as_secs_f64()
    ));
}

/// (d) A million pending retries in the store: Tidings' memory, and the delivery rate to
/// healthy destinations compared with the same instance before the backlog existed.
pub async fn backlog(opts: &Options, store: StoreKind) -> anyhow::Result<Report> {
    let load = report::load_average();
    let run = Run::start(opts, store, "d", Failing::FirstSubtree, "24h,24h,24h,24h").await?;
    let mut r = report(
        &run,
        "d",
        "one million pending retries: memory, and healthy delivery rate meanwhile",
        load,
        json!({"pending_target": opts.pending}),
    );
    let healthy = run.hierarchy.healthy_meetings();
    let failing = run.hierarchy.failing_meetings();
    let d = secs(opts, 15.0);
    let base = run
        .phase("healthy-before", &healthy, Rate::Max, d, None, true)
        .await?;
    summary(&base);

    // The backlog: events whose 4 webhooks all go to destinations answering 500. With the
    // retry schedule at 24 h, each stays pending after its first attempt.
    let events = opts.pending.div_ceil(4);
    let started = Instant::now();
    let fill = fire_until_each_failed_once(
        &run,
        "fill-backlog",
        &failing,
        events,
        Duration::from_secs(1800),
    )
    .await?;
    let want = 4 * fill.events_accepted;
    let fill_seconds = started.elapsed().as_secs_f64();
    let m = run.api.metrics().await?;
    let pending = m.changed("pending");
    println!(
        "  backlog            {pending} pending retries stored in {fill_seconds:.0} s ({:.0} events/s accepted, first attempts {:.0}/s)",
        fill.events_per_second,
        want as f64 / fill_seconds
    );
    r.notes.push(format!(
        "backlog: {} events ({} webhooks) fired at max rate to destinations answering 500; {pending} MEETING_CHANGED webhooks pending after their first attempt; took {fill_seconds:.1} s ({:.0} events/s accepted while filling)",
        fill.events_accepted, want, fill.events_per_second
    ));

    // Idle with the backlog: memory and CPU when nothing is due.
    // Scenario d runs one instance.
    let sampler = &run.tidings().first().sampler;
    let idle_before = sampler.mark();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_after = sampler.read();
    let (idle_peak, _) = sampler.peaks();
    let idle_cores = (idle_after.cpu_seconds - idle_before.cpu_seconds)
        / idle_after
            .at
            .zip(idle_before.at)
            .map_or(10.0, |(a, b)| a.duration_since(b).as_secs_f64());
    r.notes.push(format!(
        "idle for 10 s with the backlog stored: RSS {:.0} MiB (peak {:.0} MiB), {:.3} cores",
        idle_after.rss_bytes as f64 / MIB,
        idle_peak as f64 / MIB,
        idle_cores
    ));
    println!(
        "  idle with backlog  RSS {:.0} MiB, {idle_cores:.3} cores",
        idle_after.rss_bytes as f64 / MIB
    );

    // The console's pages with the backlog stored: as the operator, as the reseller whose
    // subtree holds the backlog, and as a healthy reseller.
    let mut keys = vec![("operator", crate::child::ADMIN_KEY.to_owned())];
    for (who, reseller) in [
        ("the backlog's reseller", run.hierarchy.resellers.first()),
        ("a healthy reseller", run.hierarchy.resellers.get(1)),
    ] {
        if let Some(id) = reseller {
            keys.push((who, run.api.scoped_key("reseller", id).await?));
        }
    }
    for (who, key) in &keys {
        for p in crate::console::time_pages(&run.tidings().first().base_url, key, 5).await? {
            println!(
                "  console {:<26} {who:<22} HTTP {} p50 {:.0} ms, max {:.0} ms",
                p.path, p.status, p.p50_ms, p.max_ms
            );
            r.targets.push(Target {
                what: format!(
                    "console page {} as {who} with {pending} pending retries stored",
                    p.path
                ),
                target: "< 200 ms".into(),
                measured: format!("p50 {:.0} ms, max {:.0} ms", p.p50_ms, p.max_ms),
                met: p.status == 200 && p.max_ms < 200.0,
            });
        }
    }

    let with = run
        .phase("healthy-backlog", &healthy, Rate::Max, d, None, false)
        .await?;
    summary(&with);
    let slowdown = 1.0 - with.webhooks_per_second / base.webhooks_per_second;
    let rss = with
        .tidings
        .rss_peak_mib
        .max(idle_after.rss_bytes as f64 / MIB);
    r.targets.push(Target {
        what: format!("RSS with {pending} pending retries stored (idle and while delivering)"),
        target: "< 300 MiB".into(),
        measured: format!("{rss:.0} MiB"),
        met: rss < 300.0 && pending >= opts.pending,
    });
    r.targets.push(Target {
        what: "healthy delivery rate with the backlog vs. without".into(),
        target: "slowdown <= 10 %".into(),
        measured: format!(
            "{:.0} vs {:.0} webhooks/s: {:+.1} % slower",
            with.webhooks_per_second,
            base.webhooks_per_second,
            slowdown * 100.0
        ),
        met: slowdown <= 0.10,
    });
    r.notes.push(format!(
        "peak RSS since start (VmHWM, includes filling the backlog): {:.0} MiB",
        with.tidings.hwm_mib
    ));
    r.phases.push(base);
    r.phases.push(fill);
    r.phases.push(with);
    with_ceiling(&mut r, run.ceiling().await?);
    run.finish(&mut r).await?;
    Ok(r)
}
