//! `termguard drain` and `termguard uncordon`.

use super::{identity, kube_client};
use crate::cli::{DrainArgs, OutputFormat, UncordonArgs};
use crate::cluster::drain::{
    DrainOptions, DrainRequest, Drainer, Outcome, PlanError, PodAction, PodSelector, Progress,
    WaveKind,
};
use crate::cluster::events::Events;
use crate::cluster::nodes;
use crate::cluster::retry::Bound;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn options(args: &DrainArgs) -> anyhow::Result<DrainOptions> {
    let mut opts = DrainOptions {
        ignore_daemonsets: args.ignore_daemonsets,
        delete_emptydir_data: args.delete_emptydir_data,
        force: args.force,
        grace_period: (args.grace_period >= 0).then_some(args.grace_period),
        timeout: (!args.timeout.is_zero()).then_some(args.timeout),
        pod_selector: PodSelector::parse(&args.pod_selector)?,
        disable_eviction: args.disable_eviction,
        skip_wait_for_delete_timeout: (args.skip_wait_for_delete_timeout > 0)
            .then(|| std::time::Duration::from_secs(args.skip_wait_for_delete_timeout)),
        chunk_size: args.chunk_size,
        ..Default::default()
    };
    if !args.drain_last_priority_classes.is_empty() {
        opts.drain_last.priority_classes =
            args.drain_last_priority_classes.iter().cloned().collect();
    }
    Ok(opts)
}

/// kubectl-style lines on stderr/stdout, plus a live count on a terminal.
fn printer(text: bool, node: String) -> impl Fn(&Progress) + Send + Sync + 'static {
    let tty = std::io::stderr().is_terminal();
    let total = Arc::new(AtomicUsize::new(0));
    let gone = Arc::new(AtomicUsize::new(0));
    move |p: &Progress| {
        if !text {
            return;
        }
        let live = |line: String| {
            if tty {
                eprint!("\r\x1b[2K{line}\n");
            } else {
                eprintln!("{line}");
            }
        };
        match p {
            Progress::Cordoned { already: true } => println!("node/{node} already cordoned"),
            Progress::Cordoned { already: false } => println!("node/{node} cordoned"),
            Progress::Following { owner } => live(format!(
                "another drain of this node is running ({owner}); waiting for its result"
            )),
            Progress::Resuming => live("resuming an unfinished drain of this node".into()),
            Progress::Warning(w) => live(format!("Warning: {w}")),
            Progress::WaveStarted { number, kind, pods } => {
                total.fetch_add(*pods, Ordering::Relaxed);
                let kind = match kind {
                    WaveKind::Ordinary => "ordinary workloads",
                    WaveKind::DrainLast => "drain-last pods",
                };
                live(format!("wave {number}: {pods} {kind}"));
            }
            Progress::Evicting(pod) => println!("evicting pod {pod}"),
            Progress::Blocked { message, .. } => live(message.clone()),
            Progress::Gone { pod, action } => {
                let n = gone.fetch_add(1, Ordering::Relaxed) + 1;
                let verb = if *action == PodAction::Evicted {
                    "evicted"
                } else {
                    "deleted"
                };
                println!("pod/{} {verb}", pod.name);
                if tty {
                    eprint!("\r\x1b[2K{n}/{} pods gone", total.load(Ordering::Relaxed));
                    let _ = std::io::stderr().flush();
                }
            }
            Progress::PodFailed { error, .. } => live(format!("error: {error}")),
        }
    }
}

/// Runs `termguard drain`; returns the process exit code.
pub async fn drain(args: &DrainArgs) -> anyhow::Result<i32> {
    let client = kube_client(&args.kube).await?;
    let opts = options(args)?;
    let me = identity();
    let text = args.output == OutputFormat::Text;
    let mut drainer =
        Drainer::new(client.clone(), &me).with_progress(printer(text, args.node.clone()));
    if args.dry_run {
        let (plan, err) = match drainer.plan(&args.node, &opts).await? {
            Ok(p) => (p, None),
            Err(PlanError::Refused { message, plan }) => (*plan, Some(message)),
        };
        if text {
            print!("{plan}");
            if let Some(e) = &err {
                println!("error: unable to drain node {:?}: {e}", args.node);
            }
        } else {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        return Ok(i32::from(err.is_some()));
    }
    if !args.no_events {
        drainer = drainer.with_events(Events::new(client.clone(), &me));
    }
    let mut req = DrainRequest::manual(&args.node, opts);
    req.deadline = args.deadline;
    req.margin = args.deadline_margin;
    req.concurrency = args.concurrency;
    let report = drainer.drain(&req).await?;
    if text {
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        match report.outcome {
            Outcome::Drained => println!("node/{} drained", args.node),
            Outcome::Refused => {
                eprintln!(
                    "error: unable to drain node {:?} due to error: {}, continuing command...",
                    args.node,
                    report.refused.clone().unwrap_or_default()
                );
                eprintln!("There are pending nodes to be drained:\n {}", args.node);
            }
            Outcome::TimedOut | Outcome::Failed => {
                for n in &report.not_graceful {
                    eprintln!("not graceful: {n}");
                }
                for e in &report.errors {
                    eprintln!("{e}");
                }
                eprintln!(
                    "error: unable to drain node {:?}: {}",
                    args.node,
                    if report.outcome == Outcome::TimedOut {
                        "deadline reached"
                    } else {
                        "some pods could not be evicted"
                    }
                );
            }
        }
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(i32::from(report.outcome != Outcome::Drained))
}

/// Runs `termguard uncordon`.
pub async fn uncordon(args: &UncordonArgs) -> anyhow::Result<i32> {
    let client = kube_client(&args.kube).await?;
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    if nodes::uncordon(&api, &args.node, Bound::default_budget()).await? {
        println!("node/{} uncordoned", args.node);
    } else {
        println!("node/{} already uncordoned", args.node);
    }
    Ok(0)
}
