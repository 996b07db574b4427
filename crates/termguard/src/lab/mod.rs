//! `termguard lab`: replay the AZ-rebalance incident on a laptop, three ways — unprotected,
//! per-zone groups (cluster-autoscaler's documented workaround) and protected by termguard —
//! and show what each costs. Everything runs in-process: the Kubernetes simulator over HTTP,
//! an Auto Scaling group simulation, termguard's real handler and drain engine, and a model
//! of the worker → pgbouncer connections.

pub mod asg;
pub mod connections;
mod report;
mod run;
pub mod timeline;

pub use report::{LabReport, RunReport};
pub use run::{run_mode, LabOptions, Mode};

/// The incident scenario, embedded so `termguard lab` works from any directory.
pub const INCIDENT: &str = include_str!("../../../../scenarios/incident.yaml");

/// Runs the chosen modes one after another and returns the report.
pub async fn run(opts: &LabOptions, modes: &[Mode]) -> anyhow::Result<LabReport> {
    let mut runs = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        if opts.echo {
            println!(
                "\n== run {} of {}: {} ==",
                i + 1,
                modes.len(),
                mode.describe()
            );
        }
        runs.push(run_mode(*mode, opts).await?);
    }
    Ok(LabReport {
        seed: opts.seed,
        client_timeout_seconds: opts.conn.client_timeout.map(|d| d.as_secs_f64()),
        runs,
    })
}
