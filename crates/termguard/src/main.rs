//! termguard's entry point: parse the command line, start tracing, dispatch.

use clap::Parser;
use termguard::cli::{Cli, Command, SimCommand};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    match &cli.command {
        Command::Sim(sim) => match &sim.command {
            SimCommand::Serve(args) => termguard::sim::serve(args).await,
        },
    }
}
