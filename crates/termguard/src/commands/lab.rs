//! `termguard lab`.

use crate::cli::{LabArgs, LabMode};
use crate::lab::{self, LabOptions, Mode};

/// Runs the lab; returns the exit code.
pub async fn lab(args: &LabArgs) -> anyhow::Result<i32> {
    let mut opts = LabOptions {
        seed: args.seed,
        echo: !args.json,
        ..LabOptions::default()
    };
    opts.conn.client_timeout = args.client_timeout;
    if let Some(path) = &args.scenario {
        opts.scenario = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    }
    let modes: Vec<Mode> = if args.modes.is_empty() {
        vec![Mode::Unprotected, Mode::PerZoneGroups, Mode::Protected]
    } else {
        args.modes
            .iter()
            .map(|m| match m {
                LabMode::Unprotected => Mode::Unprotected,
                LabMode::PerZoneGroups => Mode::PerZoneGroups,
                LabMode::Protected => Mode::Protected,
            })
            .collect()
    };
    if !args.json {
        println!(
            "termguard lab — the AZ-rebalance incident (seed {})",
            args.seed
        );
        println!(
            "Cluster autoscaler scales a node group in; the group, spanning three zones, then"
        );
        println!("rebalances them and terminates a node that runs pgbouncer.");
    }
    let report = lab::run(&opts, &modes).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\n== results ==");
        print!("{}", report.table());
        println!();
        for run in &report.runs {
            match run.mode.as_str() {
                "unprotected" if args.client_timeout.is_some() => println!(
                    "unprotected: the node running pgbouncer vanished without SIGTERM; with a client timeout the threads\n  holding connections through it gave up after the timeout: those jobs failed instead of hanging."
                ),
                "unprotected" => println!(
                    "unprotected: the node running pgbouncer vanished without SIGTERM; worker threads holding a connection\n  through it block forever (no keepalive, no statement timeout) and the queue backs up."
                ),
                "per-zone-groups" => println!(
                    "per-zone groups: no rebalance kill, but more groups to run and zones left uneven after scale-in."
                ),
                _ => println!(
                    "protected: the hook paused the termination, termguard drained the workers first and pgbouncer last,\n  clients reconnected to the other replica, then termguard completed the lifecycle action."
                ),
            }
        }
    }
    Ok(0)
}
