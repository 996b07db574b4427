//! `termguard drain` and `termguard uncordon`.

use super::{identity, kube_client};
use crate::cli::{DrainArgs, OutputFormat, UncordonArgs};
use crate::cluster::drain::engine::stop_reason;
use crate::cluster::drain::{
    DrainError, DrainOptions, DrainReport, DrainRequest, Drainer, Outcome, PlanError, PodAction,
    PodSelector, Progress, WaveKind,
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

/// Exit status of `termguard drain` (documented in `termguard drain --help`): kubectl's 1 for
/// every error, and the shell's 128 + signal number for an interrupted drain.
pub mod exit {
    /// The node is drained (or, with `--dry-run`, the drain would be allowed).
    pub const DRAINED: i32 = 0;
    /// Failed, timed out, refused, or could not run.
    pub const FAILED: i32 = 1;
    /// Interrupted by SIGINT.
    pub const SIGINT: i32 = 130;
    /// Interrupted by SIGTERM.
    pub const SIGTERM: i32 = 143;

    /// The status for an interruption by `signal` (`SIGINT`, `SIGTERM`).
    pub fn interrupted(signal: &str) -> i32 {
        if signal == "SIGTERM" {
            SIGTERM
        } else {
            SIGINT
        }
    }
}

/// A string quoted as kubectl quotes names (Go's `%q`, for the names Kubernetes allows).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// SIGINT and SIGTERM: the first stops the drain (the receiver says which); a second one exits
/// at once, without a report. `None` when the handlers cannot be installed (the signals then
/// keep their default action).
fn interrupts() -> Option<tokio::sync::watch::Receiver<Option<String>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot handle SIGINT/SIGTERM; they stop termguard at once");
            return None;
        }
    };
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tx.send_replace(Some(first.to_string()));
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        std::process::exit(exit::interrupted(first));
    });
    Some(rx)
}

/// Runs `termguard drain`; returns the process exit code. With `-o json` a report is printed
/// whatever happens: the drain's, or one saying why there is none.
pub async fn drain(args: &DrainArgs) -> anyhow::Result<i32> {
    let stop = interrupts();
    let text = args.output == OutputFormat::Text;
    let failure = match run(args, &stop).await {
        Ok(code) => return Ok(code),
        Err(e) => e,
    };
    let (outcome, code) = match failure.downcast_ref::<DrainError>() {
        Some(DrainError::Interrupted(signal)) => (Outcome::Interrupted, exit::interrupted(signal)),
        _ => (Outcome::Failed, exit::FAILED),
    };
    let message = format!("{failure:#}");
    if text {
        eprintln!("error: {message}");
    } else {
        let report = DrainReport::unstarted(&args.node, outcome, message);
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(code)
}

async fn run(
    args: &DrainArgs,
    stop: &Option<tokio::sync::watch::Receiver<Option<String>>>,
) -> anyhow::Result<i32> {
    let interrupted = |signal: String| anyhow::Error::from(DrainError::Interrupted(signal));
    let client = tokio::select! {
        c = kube_client(&args.kube) => c?,
        s = stop_reason(stop.as_ref()) => return Err(interrupted(s)),
    };
    let opts = options(args)?;
    let me = identity();
    let text = args.output == OutputFormat::Text;
    let mut drainer =
        Drainer::new(client.clone(), &me).with_progress(printer(text, args.node.clone()));
    if args.dry_run {
        let planned = tokio::select! {
            p = drainer.plan(&args.node, &opts) => p?,
            s = stop_reason(stop.as_ref()) => return Err(interrupted(s)),
        };
        let (plan, err) = match planned {
            Ok(p) => (p, None),
            Err(PlanError::Refused { message, plan }) => (*plan, Some(message)),
        };
        if text {
            print!("{plan}");
            if let Some(e) = &err {
                println!("error: unable to drain node {}: {e}", quoted(&args.node));
            }
        } else {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        return Ok(if err.is_some() {
            exit::FAILED
        } else {
            exit::DRAINED
        });
    }
    if !args.no_events {
        drainer = drainer.with_events(Events::new(client.clone(), &me));
    }
    let mut req = DrainRequest::manual(&args.node, opts);
    req.deadline = args.deadline;
    req.margin = args.deadline_margin;
    req.concurrency = args.concurrency;
    req.interrupt = stop.clone();
    let report = drainer.drain(&req).await?;
    let node = quoted(&args.node);
    if text {
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        match report.outcome {
            Outcome::Drained => println!("node/{} drained", args.node),
            Outcome::Refused => {
                // kubectl's three parts: the node's error, the pending nodes, then the error
                // itself as its error handler prints an aggregate (bare).
                let refused = report.refused.clone().unwrap_or_default();
                eprintln!(
                    "error: unable to drain node {node} due to error: {refused}, continuing command..."
                );
                eprintln!("There are pending nodes to be drained:\n {}", args.node);
                eprintln!("{refused}");
            }
            Outcome::TimedOut | Outcome::Failed | Outcome::Interrupted => {
                for n in &report.not_graceful {
                    eprintln!("not graceful: {n}");
                }
                for e in &report.errors {
                    eprintln!("{e}");
                }
                let why = match report.outcome {
                    Outcome::TimedOut => "deadline reached".to_string(),
                    Outcome::Interrupted => report.error.clone().unwrap_or_default(),
                    _ => "some pods could not be evicted".to_string(),
                };
                eprintln!("error: unable to drain node {node}: {why}");
            }
        }
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(match report.outcome {
        Outcome::Drained => exit::DRAINED,
        Outcome::Interrupted => {
            let signal = stop.as_ref().and_then(|rx| rx.borrow().clone());
            exit::interrupted(signal.as_deref().unwrap_or("SIGINT"))
        }
        _ => exit::FAILED,
    })
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
