#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: allocation-heavy async work on several threads
/// contended on glibc's arena locks (BENCHMARKS.md, "Measurements behind the design").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tidings",
    version,
    about = "Hierarchy-aware webhook delivery service",
    long_about = "Tidings delivers signed webhooks about a reseller > dealer > company > site \
                  hierarchy to every level that asked for them, durably and with retries.",
    after_help = tidings::config::help()
)]
struct Cli {
    /// TOML settings file; TIDINGS_* environment variables override it.
    #[arg(long, global = true, env = "TIDINGS_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API and the delivery engine (SQLite file by default: no setup needed).
    #[command(after_help = tidings::config::help())]
    Serve,
    /// Create or upgrade the database schema, then exit (serve also does this on start).
    #[command(after_help = tidings::config::help())]
    Migrate,
    /// Copy the SQLite store to PATH while `serve` runs (a consistent snapshot); keep the key
    /// file with the copy. For PostgreSQL, use pg_dump (docs/operations.md).
    #[command(after_help = tidings::config::help())]
    Backup {
        /// Where to write the copy (a new file).
        path: PathBuf,
    },
    /// Run the example webhook receiver that verifies signatures (for integrators).
    Receiver(tidings::receiver::ReceiverArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    // First: SQLite accepts its allocator only before its first use in the process.
    let sqlite_alloc = tidings_sqlite_alloc::install();
    // Spans for OpenTelemetry, when OTEL_EXPORTER_OTLP_ENDPOINT is set; the log leaves them out.
    let (otel, _flush_spans) = match tidings::telemetry::layer()? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info".into())
        .add_directive(format!("{}=off", tidings::telemetry::TARGET).parse()?);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                // Colours only for a terminal, not in files and log collectors.
                .with_ansi(std::io::stdout().is_terminal())
                .with_filter(filter),
        )
        .with(otel)
        .init();
    if !sqlite_alloc {
        tracing::warn!("SQLite's allocator did not go in: it keeps its own");
    }
    let cli = Cli::parse();
    let settings =
        || tidings::config::Settings::load(cli.config.as_deref()).context("reading settings");
    match cli.command {
        Command::Serve => tidings::startup::serve(settings()?).await,
        Command::Migrate => tidings::startup::migrate(settings()?).await,
        Command::Backup { path } => tidings::startup::backup(settings()?, &path),
        Command::Receiver(args) => tidings::receiver::run(args).await,
    }
}
