//! termguard's entry point: parse the command line, start tracing, dispatch.

use termguard::cli::Command;
#[cfg(feature = "lab")]
use termguard::cli::SimCommand;
use termguard::commands;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = termguard::config::parse();
    // kube-rs logs every failed request at ERROR level, a 500 that termguard then retries
    // included; termguard logs its own failures with their context and what it does next.
    let default = match cli.command {
        Command::Run(_) => "info,kube_client::client::builder=off",
        #[cfg(feature = "lab")]
        Command::Sim(_) => "info,kube_client::client::builder=off",
        _ => "warn,kube_client::client::builder=off",
    };
    let filter = tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a file or a log collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    let code = match &cli.command {
        #[cfg(feature = "lab")]
        Command::Lab(args) => commands::lab::lab(args).await?,
        Command::Drain(args) => commands::drain::drain(args).await?,
        Command::Uncordon(args) => commands::drain::uncordon(args).await?,
        Command::Run(args) => commands::run::run(args).await?,
        Command::Explain(args) => commands::explain::explain(args)?,
        Command::Audit(args) => commands::audit::audit(args).await,
        #[cfg(feature = "lab")]
        Command::Sim(sim) => match &sim.command {
            SimCommand::Serve(args) => commands::sim::serve(args).await.map(|()| 0)?,
            SimCommand::Apply(args) => commands::sim::apply(args).await.map(|()| 0)?,
        },
    };
    std::process::exit(code);
}
