//! `tidings-bench`: load generator and HTTPS sink for Tidings. BENCHMARKS.md says what each scenario measures.
//!
//! It starts a release `tidings serve` on a fresh SQLite file or PostgreSQL database, an
//! HTTPS sink in this process, builds a hierarchy through the API and fires events at it,
//! then reports events/s accepted, webhooks/s delivered end to end, acknowledgement-to-first-
//! attempt latency, Tidings' CPU and memory, and the same sink's ceiling when driven
//! directly. Loopback only; every run is bounded in time. See BENCHMARKS.md.

#![forbid(unsafe_code)]

mod api;
mod ceiling;
mod child;
mod console;
mod report;
mod scenario;
mod sink;

use std::path::PathBuf;

use clap::Parser;

use crate::api::Shape;
use crate::child::StoreKind;
use crate::scenario::Options;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load generator and HTTPS sink that measure Tidings end to end"
)]
struct Cli {
    /// Scenarios, comma separated: a (steady 1,000 events/s, latency), b (maximum
    /// throughput), c (20 % of destinations failing), d (one million pending retries),
    /// e (a and b on both stores), f (soak: a steady rate for 10 minutes with a short
    /// retention, the store's size over time), all (a-d on both stores).
    #[arg(long, default_value = "a,b,c", value_delimiter = ',')]
    scenario: Vec<String>,
    /// Stores, comma separated.
    #[arg(long, default_value = "sqlite", value_delimiter = ',')]
    store: Vec<StoreKind>,
    /// The `tidings` binary (a release build).
    #[arg(long, default_value = "target/release/tidings")]
    tidings_bin: PathBuf,
    /// A PostgreSQL server where a fresh database is created (and dropped) per run.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Where reports (`{scenario}-{store}.json`) and run directories go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Phase length in seconds for every scenario (defaults: a 30, b 20, c 20, d 15).
    #[arg(long)]
    duration: Option<f64>,
    /// Events per second of the fixed-rate phases (a, c).
    #[arg(long)]
    rate: Option<f64>,
    /// Length of the ceiling run, seconds.
    #[arg(long, default_value_t = 5.0)]
    ceiling_seconds: f64,
    /// Pending retries to store in scenario d.
    #[arg(long, default_value_t = 1_000_000)]
    pending: u64,
    /// Sink ports: each is one destination for Tidings' per-destination limit.
    #[arg(long, default_value_t = 10)]
    ports: usize,
    /// Concurrent API requests of the load generator.
    #[arg(long, default_value_t = 32)]
    api_concurrency: usize,
    /// TIDINGS_MAX_IN_FLIGHT for the child.
    #[arg(long, default_value_t = 512)]
    max_in_flight: usize,
    /// TIDINGS_PER_DESTINATION for the child.
    #[arg(long, default_value_t = 32)]
    per_destination: usize,
    /// Hierarchy: resellers, dealers per reseller, companies per dealer, sites per company
    /// (one personal meeting per site).
    #[arg(long, default_value = "5,2,2,4", value_delimiter = ',', num_args = 4)]
    shape: Vec<usize>,
    /// RUST_LOG for the child.
    #[arg(long, default_value = "info")]
    rust_log: String,
    /// Longest wait, seconds, for the webhooks of a phase to be recorded after firing stops.
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Events queued for scenario b's dispatcher-only phase (4 webhooks each; 0 skips it).
    #[arg(long, default_value_t = 10_000)]
    dispatch_events: u64,
    /// TIDINGS_RETENTION for the child (scenario f: 60s unless given).
    #[arg(long)]
    retention: Option<String>,
    /// Keep the SQLite files of the runs.
    #[arg(long)]
    keep: bool,
    /// Make every level's endpoint `ordered` (webhooks about one meeting one at a time, in
    /// order): run b with and without it to see what ordered delivery costs.
    #[arg(long)]
    ordered: bool,
    /// `tidings serve` processes sharing the run's PostgreSQL database, each on its own API
    /// port; the generator's connections are spread over them (scenarios a and b only).
    #[arg(long, default_value_t = 1)]
    instances: usize,
}

fn plan(cli: &Cli) -> anyhow::Result<Vec<(String, StoreKind)>> {
    let mut out = Vec::new();
    for s in &cli.scenario {
        match s.as_str() {
            "a" | "b" | "c" | "d" | "f" => out.extend(cli.store.iter().map(|st| (s.clone(), *st))),
            "e" => {
                for st in [StoreKind::Sqlite, StoreKind::Postgres] {
                    out.push(("a".into(), st));
                    out.push(("b".into(), st));
                }
            }
            "all" => {
                for st in [StoreKind::Sqlite, StoreKind::Postgres] {
                    for sc in ["a", "b", "c", "d"] {
                        out.push((sc.into(), st));
                    }
                }
            }
            other => anyhow::bail!("unknown scenario `{other}`: use a, b, c, d, e, f or all"),
        }
    }
    out.dedup();
    check_instances(&out, cli.instances)?;
    Ok(out)
}

/// Several instances need a store they can share, and only a and b are written for them:
/// c, d and f read one instance's retries, memory with a backlog and console, and store.
fn check_instances(plan: &[(String, StoreKind)], instances: usize) -> anyhow::Result<()> {
    if instances <= 1 {
        return Ok(());
    }
    for (sc, store) in plan {
        anyhow::ensure!(
            *store == StoreKind::Postgres,
            "--instances {instances}: scenario {sc} on {} cannot share its store: one SQLite file takes one Tidings instance; use --store postgres",
            store.as_str()
        );
        anyhow::ensure!(
            sc == "a" || sc == "b",
            "--instances {instances}: scenario {sc} runs one instance; only a and b run on several"
        );
    }
    Ok(())
}

/// The same allocator as Tidings, so the sink and generator take no more of the machine
/// than they must.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let plan = plan(&cli)?;
    anyhow::ensure!(
        cli.tidings_bin.exists(),
        "{} not found: run `cargo build --release -p tidings` first (or scripts/bench)",
        cli.tidings_bin.display()
    );
    let opts = Options {
        bin: cli.tidings_bin.canonicalize()?,
        postgres_url: cli.postgres_url.clone(),
        out_dir: cli.out.clone(),
        ports: cli.ports.max(2),
        api_concurrency: cli.api_concurrency.max(1),
        max_in_flight: cli.max_in_flight,
        per_destination: cli.per_destination,
        duration: cli.duration,
        rate: cli.rate,
        ceiling_seconds: cli.ceiling_seconds,
        pending: cli.pending,
        shape: Shape {
            resellers: cli.shape[0],
            dealers: cli.shape[1],
            companies: cli.shape[2],
            sites: cli.shape[3],
        },
        rust_log: cli.rust_log.clone(),
        drain_timeout: cli.drain_timeout,
        keep: cli.keep,
        dispatch_events: cli.dispatch_events,
        ordered: cli.ordered,
        retention: cli.retention.clone(),
        instances: cli.instances.max(1),
    };
    std::fs::create_dir_all(&opts.out_dir)?;
    let machine = report::Machine::read();
    println!(
        "machine: {} cores, {}, {} MiB; load average {:?}",
        machine.nproc,
        machine.cpu_model,
        machine.memory_mib,
        report::load_average()
    );
    let mut reports = Vec::new();
    for (sc, store) in plan {
        println!("scenario {sc} on {}", store.as_str());
        let result = match sc.as_str() {
            "a" => scenario::steady(&opts, store).await,
            "b" => scenario::max_throughput(&opts, store).await,
            "c" => scenario::failing(&opts, store).await,
            "f" => scenario::soak(&opts, store).await,
            _ => scenario::backlog(&opts, store).await,
        };
        match result {
            Ok(r) => {
                // An ordered run's report, or one of several instances, sits beside the
                // one-instance unordered one, not over it.
                let ordered = if opts.ordered { "-ordered" } else { "" };
                let instances = match opts.instances {
                    1 => String::new(),
                    n => format!("-{n}-instances"),
                };
                let path = opts
                    .out_dir
                    .join(format!("{sc}-{}{ordered}{instances}.json", store.as_str()));
                std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
                println!("  report: {}", path.display());
                reports.push(r);
            }
            Err(e) => eprintln!("  scenario {sc} on {} failed: {e:#}", store.as_str()),
        }
    }
    println!("\n{}", report::table(&reports));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(args: &[&str]) -> anyhow::Result<Vec<(String, StoreKind)>> {
        let cli =
            Cli::try_parse_from(std::iter::once("tidings-bench").chain(args.iter().copied()))?;
        plan(&cli)
    }

    #[test]
    fn several_instances_run_a_and_b_on_postgres_only() {
        let p = plan_of(&[
            "--scenario",
            "a,b",
            "--store",
            "postgres",
            "--instances",
            "2",
        ]);
        assert_eq!(
            p.unwrap(),
            [
                ("a".to_owned(), StoreKind::Postgres),
                ("b".to_owned(), StoreKind::Postgres)
            ]
        );
        let sqlite = plan_of(&["--scenario", "b", "--instances", "2"]).unwrap_err();
        assert!(sqlite.to_string().contains("one SQLite file"), "{sqlite}");
        let c =
            plan_of(&["--scenario", "c", "--store", "postgres", "--instances", "3"]).unwrap_err();
        assert!(c.to_string().contains("only a and b"), "{c}");
        // e runs a and b on SQLite too.
        assert!(plan_of(&["--scenario", "e", "--instances", "2"]).is_err());
        // One instance: every scenario and store, as before.
        assert_eq!(plan_of(&["--scenario", "c,d,f"]).unwrap().len(), 3);
        assert_eq!(
            plan_of(&["--scenario", "b", "--store", "sqlite", "--instances", "1"])
                .unwrap()
                .len(),
            1
        );
    }
}
