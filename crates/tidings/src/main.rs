use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tidings", version, about = "Hierarchy-aware webhook delivery service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the example webhook receiver that verifies signatures (for integrators).
    Receiver(tidings::receiver::ReceiverArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Receiver(args) => tidings::receiver::run(args).await,
    }
}
