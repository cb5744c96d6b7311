//! The example receiver (`tidings receiver`). Being written; see issue 8.

/// Settings of `tidings receiver`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiverArgs {
    /// Address to listen on.
    #[arg(long, env = "TIDINGS_RECEIVER_LISTEN", default_value = "0.0.0.0:9999")]
    pub listen: std::net::SocketAddr,
}

/// Runs the receiver until the process is stopped.
pub async fn run(args: ReceiverArgs) -> anyhow::Result<()> {
    anyhow::bail!("receiver not built yet (listen {})", args.listen)
}
