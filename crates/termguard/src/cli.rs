//! Command-line definitions: one subcommand per user verb.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// termguard: no Kubernetes node on AWS dies undrained.
#[derive(Debug, Parser)]
#[command(name = "termguard", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `termguard=debug`.
    #[arg(long, global = true, env = "TERMGUARD_LOG", default_value = "info")]
    pub log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The Kubernetes API simulator (the test bed and the lab's cluster).
    Sim(SimArgs),
}

/// `termguard sim ...`
#[derive(Debug, Args)]
pub struct SimArgs {
    /// What to do with the simulator.
    #[command(subcommand)]
    pub command: SimCommand,
}

/// Simulator verbs.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve a scenario as a Kubernetes API that kubectl and kube-rs can use.
    ///
    /// Prints the server's address, writes a kubeconfig, and runs until interrupted.
    /// Point kubectl at it with `KUBECONFIG=<path> kubectl get nodes`.
    Serve(SimServeArgs),
}

/// `termguard sim serve`
#[derive(Debug, Args)]
pub struct SimServeArgs {
    /// Scenario file (YAML); see scenarios/ for examples.
    #[arg(long, default_value = "scenarios/incident.yaml")]
    pub scenario: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where to write the kubeconfig.
    #[arg(long, default_value = "kube-sim.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// JSON fault configuration to start with (see `kube_sim::faults::FaultConfig`), e.g.
    /// '{"verbs":{"evict":{"errorRate":0.2}}}'. Also settable at runtime with PUT /sim/faults.
    #[arg(long)]
    pub faults: Option<String>,
}
