//! What a run reports: one JSON document per scenario and store, and a table for the
//! terminal. Figures are what was measured; nothing here is estimated.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::ceiling::Ceiling;
use crate::sink::Counts;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub memory_mib: u64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024;
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_mib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Milliseconds at the usual quantiles, from a histogram of microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// Acknowledgement to first attempt, for the webhooks of one kind of destination.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivery {
    pub latency: Latency,
    /// Webhooks whose first attempt reached the sink before the API answer reached the
    /// generator (the dispatcher starts at commit); counted as 0 ms in the latency.
    pub before_ack: u64,
    /// Webhooks of accepted events that never reached the sink in the phase.
    pub missing: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Process {
    /// CPU time over wall time during the phase, in cores (2.0 = both cores busy).
    pub cpu_cores_avg: f64,
    /// The busiest 250 ms sample, in cores.
    pub cpu_cores_peak: f64,
    pub rss_peak_mib: f64,
    pub rss_end_mib: f64,
    /// Peak RSS since the process started (VmHWM).
    pub hwm_mib: f64,
    /// Context switches of all threads per second, and per webhook delivered.
    pub context_switches_per_second: f64,
    pub context_switches_per_webhook: f64,
    pub threads: u64,
}

impl Process {
    /// Several instances' figures as one: totals. Each instance is sampled on its own, so the
    /// sums of their peaks (CPU, RSS, VmHWM) are at most the peaks of their sum, which would
    /// be reached only if the instances peaked at the same moment.
    pub fn sum(instances: &[Process]) -> Process {
        let total = |f: fn(&Process) -> f64| instances.iter().map(f).sum::<f64>();
        Process {
            cpu_cores_avg: total(|p| p.cpu_cores_avg),
            cpu_cores_peak: total(|p| p.cpu_cores_peak),
            rss_peak_mib: total(|p| p.rss_peak_mib),
            rss_end_mib: total(|p| p.rss_end_mib),
            hwm_mib: total(|p| p.hwm_mib),
            context_switches_per_second: total(|p| p.context_switches_per_second),
            context_switches_per_webhook: total(|p| p.context_switches_per_webhook),
            threads: instances.iter().map(|p| p.threads).sum(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub name: String,
    /// `max` or events per second.
    pub rate: String,
    pub events_accepted: u64,
    pub api_errors: u64,
    pub first_api_error: Option<String>,
    pub fire_seconds: f64,
    pub events_per_second: f64,
    /// Request to acknowledgement at the generator.
    pub api_latency: Latency,
    /// Webhooks to healthy destinations of the accepted events.
    pub webhooks_expected: u64,
    /// Of those, recorded as succeeded in the store (Tidings' counter
    /// `tidings_webhooks_recorded_total{status="succeeded"}`, counted after each commit).
    pub webhooks_delivered: u64,
    /// From the first event sent to the last of them recorded as delivered.
    pub delivered_seconds: f64,
    /// `webhooks_delivered / delivered_seconds`: end to end, acknowledged by the sink and
    /// recorded as delivered.
    pub webhooks_per_second: f64,
    /// First arrivals at healthy destinations per second while events were being fired.
    pub sink_per_second_while_firing: f64,
    pub all_delivered: bool,
    pub healthy: Delivery,
    /// First attempts to failing destinations (scenario c).
    pub failing: Option<Delivery>,
    /// Tidings' CPU and memory, summed over its instances ([`Process::sum`]).
    pub tidings: Process,
    /// The same for each instance, in the order they were started.
    pub tidings_per_instance: Vec<Process>,
    /// CPU of this process (generator + sink) meanwhile, in cores.
    pub bench_cores_avg: f64,
    /// CPU of the PostgreSQL server processes meanwhile, in cores (0 on SQLite runs).
    pub postgres_cores_avg: f64,
    /// CPU of the whole machine meanwhile (Tidings, this process, PostgreSQL, others), in
    /// cores busy.
    pub machine_cores_busy: f64,
    pub sink: Counts,
    /// Delivery attempts by outcome during the phase, from Tidings' counters.
    pub attempts: Vec<(String, u64)>,
    pub queue_depth_end: u64,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub title: String,
    pub store: String,
    /// `tidings serve` processes sharing the store.
    pub instances: usize,
    pub machine: Machine,
    pub load_average_before: [f64; 3],
    pub load_average_after: [f64; 3],
    pub settings: serde_json::Value,
    pub setup_seconds: f64,
    pub phases: Vec<Phase>,
    pub ceiling: Option<Ceiling>,
    /// The main phase's webhooks/s ÷ the ceiling's requests/s (the first phase at maximum
    /// rate, else the first phase).
    pub ratio_to_ceiling: Option<f64>,
    /// (event, level) pairs the sink answered 200 more than once over the whole run: webhooks
    /// delivered twice (each phase's share is in its `sink` counts).
    pub delivered_again: u64,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

/// The table printed at the end of a run.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<3} {:<8} {:>4} {:<16} {:>7} {:>9} {:>9} {:>8} {:>6} {:>8} {:>8} {:>8} {:>6} {:>8} {:>5} {:>5}",
        "sc",
        "store",
        "inst",
        "phase",
        "rate",
        "events/s",
        "webhk/s",
        "ceiling",
        "ratio",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cores",
        "rss MiB",
        "load",
        "again"
    );
    for r in reports {
        for (i, p) in r.phases.iter().enumerate() {
            let main = r.phases.iter().position(|p| p.rate == "max").unwrap_or(0);
            let (ceiling, ratio) = match (&r.ceiling, i == main) {
                (Some(c), true) => (
                    format!("{:.0}", c.requests_per_second),
                    r.ratio_to_ceiling.map_or("-".into(), |x| format!("{x:.2}")),
                ),
                _ => ("-".into(), "-".into()),
            };
            let l = &p.healthy.latency;
            let _ = writeln!(
                out,
                "{:<3} {:<8} {:>4} {:<16} {:>7} {:>9.0} {:>9.0} {:>8} {:>6} {:>8.2} {:>8.2} {:>8.1} {:>6.2} {:>8.0} {:>5.1} {:>5}",
                r.scenario,
                r.store,
                r.instances,
                p.name,
                p.rate,
                p.events_per_second,
                p.webhooks_per_second,
                ceiling,
                ratio,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                p.tidings.cpu_cores_avg,
                p.tidings.rss_peak_mib,
                r.load_average_before[0],
                p.sink.delivered_again,
            );
        }
    }
    if reports.iter().any(|r| !r.targets.is_empty()) {
        let _ = writeln!(out, "\ntargets:");
        for r in reports {
            for t in &r.targets {
                let _ = writeln!(
                    out,
                    "  [{}] ({} {}) {}: {} (target {})",
                    if t.met { "met" } else { "MISSED" },
                    r.scenario,
                    r.store,
                    t.what,
                    t.measured,
                    t.target
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_figures_add_up() {
        let one = Process {
            cpu_cores_avg: 0.5,
            cpu_cores_peak: 0.75,
            rss_peak_mib: 40.0,
            rss_end_mib: 30.0,
            hwm_mib: 50.0,
            context_switches_per_second: 1000.0,
            context_switches_per_webhook: 0.25,
            threads: 6,
        };
        let other = Process {
            cpu_cores_avg: 0.25,
            cpu_cores_peak: 0.5,
            rss_peak_mib: 20.0,
            rss_end_mib: 10.0,
            hwm_mib: 25.0,
            context_switches_per_second: 500.0,
            context_switches_per_webhook: 0.5,
            threads: 5,
        };
        let sum = Process::sum(&[one.clone(), other]);
        assert_eq!(sum.cpu_cores_avg, 0.75);
        assert_eq!(sum.cpu_cores_peak, 1.25);
        assert_eq!(
            (sum.rss_peak_mib, sum.rss_end_mib, sum.hwm_mib),
            (60.0, 40.0, 75.0)
        );
        assert_eq!(sum.context_switches_per_second, 1500.0);
        assert_eq!(sum.context_switches_per_webhook, 0.75);
        assert_eq!(sum.threads, 11);
        let alone = Process::sum(std::slice::from_ref(&one));
        assert_eq!(
            (alone.cpu_cores_avg, alone.threads),
            (one.cpu_cores_avg, one.threads)
        );
    }

    #[test]
    fn the_table_shows_the_instances_and_what_was_delivered_again() {
        let phase = Phase {
            name: "max".into(),
            rate: "max".into(),
            sink: Counts {
                delivered_again: 3,
                ..Counts::default()
            },
            ..Phase::default()
        };
        let report = Report {
            scenario: "b".into(),
            title: String::new(),
            store: "postgres".into(),
            instances: 2,
            machine: Machine::read(),
            load_average_before: [0.0; 3],
            load_average_after: [0.0; 3],
            settings: serde_json::Value::Null,
            setup_seconds: 0.0,
            phases: vec![phase],
            ceiling: None,
            ratio_to_ceiling: None,
            delivered_again: 3,
            targets: Vec::new(),
            notes: Vec::new(),
        };
        let table = table(&[report]);
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
        // The instance count follows the store; what was delivered again ends the row.
        assert_eq!((header[2], row[2]), ("inst", "2"));
        assert_eq!((header.last(), row.last()), (Some(&"again"), Some(&"3")));
    }
}
