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
    Ok(out)
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
                // An ordered run's report sits beside the unordered one, not over it.
                let ordered = if opts.ordered { "-ordered" } else { "" };
                let path = opts
                    .out_dir
                    .join(format!("{sc}-{}{ordered}.json", store.as_str()));
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
