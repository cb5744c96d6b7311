#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: allocation-heavy async work on several threads
/// contended on glibc's arena locks (BENCHMARKS.md, "What limits throughput").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "tidings",
    version,
    about = "Hierarchy-aware webhook delivery service",
    long_about = "Tidings delivers signed webhooks about a reseller > dealer > company > site \
                  hierarchy to every level that asked for them, durably and with retries.",
    after_help = tidings::config::HELP
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
    #[command(after_help = tidings::config::HELP)]
    Serve,
    /// Create or upgrade the database schema, then exit (serve also does this on start).
    #[command(after_help = tidings::config::HELP)]
    Migrate,
    /// Run the example webhook receiver that verifies signatures (for integrators).
    Receiver(tidings::receiver::ReceiverArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // First: SQLite accepts its allocator only before its first use in the process.
    let sqlite_alloc = tidings_sqlite_alloc::install();
    tracing_subscriber::fmt()
        // Colours only for a terminal, not in files and log collectors.
        .with_ansi(std::io::stdout().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
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
        Command::Receiver(args) => tidings::receiver::run(args).await,
    }
}
