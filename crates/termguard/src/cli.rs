//! Command-line definitions: one subcommand per user verb.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// termguard: no Kubernetes node on AWS dies undrained.
#[derive(Debug, Parser)]
#[command(name = "termguard", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `termguard=debug`. Default: `info`
    /// for the long-running verbs (run, sim serve), `warn` for the interactive ones, whose own
    /// output already says what happens; both without kube-rs's line per failed request
    /// (termguard logs the failure, with its context, and the retry).
    #[arg(long, global = true, env = "TERMGUARD_LOG")]
    pub log: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// A YAML file of settings for the subcommand: its long option names as keys (for
    /// example `queue-url: https://…`, `drain-on-rebalance: true`). The command line wins
    /// over the environment, the environment over the file.
    #[arg(long, global = true, env = "TERMGUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay the AZ-rebalance incident on this machine: unprotected, with per-zone groups, and
    /// protected by termguard, side by side.
    ///
    /// Everything runs in-process: a simulated Kubernetes cluster (over HTTP, through kube-rs),
    /// a simulated Auto Scaling group over three zones, termguard's real handler and drain
    /// engine, and a model of async workers whose threads reach PostgreSQL through pgbouncer.
    #[cfg(feature = "lab")]
    Lab(LabArgs),
    /// Drain a node: cordon, taint, evict its pods in waves, wait until they are gone.
    ///
    /// Options shared with `kubectl drain` keep kubectl's names, defaults and messages. Where
    /// termguard deliberately differs:
    ///   * pods are evicted in waves: ordinary workloads first, then pods marked
    ///     `termguard.io/drain-order: last` or with priority class system-cluster-critical /
    ///     system-node-critical (connection poolers, DNS, log shippers), once the first wave is gone;
    ///   * evictions carry the pod's UID as a precondition, and PDB-blocked evictions are retried
    ///     with capped exponential backoff and jitter (kubectl: a fixed 5 s);
    ///   * a pod covered by several PDBs is retried, not failed;
    ///   * --deadline (when the instance is known to go away) is a deadline, not just a limit: a pod
    ///     whose grace period would outlast the time left is deleted with its grace period clipped
    ///     to the time left (never 0), bypassing its PDB, so it still gets SIGTERM before the
    ///     instance disappears. --timeout keeps kubectl's meaning: it only bounds the wait, and
    ///     budgets are respected to the end;
    ///   * deletion is awaited by watching the node's pods, not by polling each pod every second;
    ///   * DaemonSet and mirror pods are never evicted or deleted;
    ///   * progress is recorded on the Node, so a second run resumes or waits for the first.
    ///
    /// A refused drain (kubectl's rules: DaemonSet pods without --ignore-daemonsets, and so on)
    /// leaves the node cordoned only, as kubectl does: termguard's taint and load-balancer label
    /// are taken back. On SIGINT or SIGTERM the drain stops evicting and the node is left the
    /// same way, cordoned only; the report so far is printed, and the next run takes the drain
    /// over at once (a second signal exits without a report). With --output json a report is printed
    /// whatever happens, its `outcome` and `error` saying how the drain ended.
    ///
    /// Exit status:
    ///   0    the node is drained (with --dry-run: the drain would be allowed)
    ///   1    the drain failed, timed out or was refused, or could not run (kubectl's 1)
    ///   130  interrupted by SIGINT
    ///   143  interrupted by SIGTERM
    // The long help lives here, not on `DrainArgs`: clap lets the variant's doc comment
    // replace the struct's, so text on the struct never reached `termguard drain --help`.
    #[command(verbatim_doc_comment)]
    Drain(DrainArgs),
    /// Undo a drain: uncordon, remove termguard's taint, label and progress annotations.
    Uncordon(UncordonArgs),
    /// The Kubernetes API simulator (the test bed and the lab's cluster).
    #[cfg(feature = "lab")]
    Sim(SimArgs),
    /// Queue mode: consume the SQS queue EventBridge (or a lifecycle hook) feeds, drain the
    /// nodes AWS is about to terminate, and complete their lifecycle actions.
    ///
    /// AWS access follows the standard SDK configuration: AWS_REGION, credentials from the
    /// environment, profile, web identity or instance role, and AWS_ENDPOINT_URL to point
    /// at another endpoint. Serves /healthz, /readyz and /metrics on --health-listen; on
    /// SIGTERM it stops receiving and hands in-flight messages back undeleted.
    Run(RunArgs),
    /// Print what a queue message means and what termguard would do with it, without
    /// touching anything.
    Explain(ExplainArgs),
    /// Find the nodes that can die undrained, before they do: read the account's Auto Scaling
    /// groups, the event routing to termguard's queue and the cluster, name every hazard with
    /// its fix, and count from each group's scaling activities (AWS keeps six weeks) how often
    /// nodes have already gone without a drain.
    ///
    /// The groups audited: those named with --group, those tagged for the cluster
    /// (--cluster-name: kubernetes.io/cluster/NAME, eks:cluster-name=NAME,
    /// termguard.io/cluster=NAME; or --managed-asg-tag), and those whose instances are nodes
    /// of the cluster (by their providerIDs). Read-only: it changes nothing, anywhere.
    ///
    /// AWS access follows the standard SDK configuration (AWS_REGION, credentials, profile,
    /// AWS_ENDPOINT_URL), as for `termguard run`.
    ///
    /// Exit status:
    ///   0    no finding at or above --fail-on (or no --fail-on)
    ///   1    a finding at or above --fail-on
    ///   2    the audit could not run (the groups could not be listed)
    #[command(verbatim_doc_comment, after_long_help = AUDIT_EXAMPLE)]
    Audit(AuditArgs),
}

/// A real run's report, shown by `termguard audit --help`: the incident's setup in the AWS
/// test peer (a group over three zones, no hook, two AZ rebalances and a scale-in).
const AUDIT_EXAMPLE: &str = "\
Example: the incident's setup (a group over three zones, no termination hook, two AZ
rebalances and a scale-in), audited:

  $ termguard audit --no-cluster --cluster-name prod --queue-url $QUEUE_URL
  Auto Scaling groups audited: workers

  SEVERITY  RESOURCE         FINDING
  CRITICAL  asg/workers      az-rebalance-without-termination-hook
                             the group spans 3 zones with AZRebalance active and has no termination
                             hook: whenever its zones fall out of balance, Auto Scaling launches a
                             node in one zone and terminates one in another at once, pods and all
                             fix: aws autoscaling put-lifecycle-hook --auto-scaling-group-name workers
                                  --lifecycle-hook-name termguard-terminate --lifecycle-transition
                                  autoscaling:EC2_INSTANCE_TERMINATING --heartbeat-timeout 300
                                  --default-result CONTINUE, route its events to termguard's queue;
                                  or, to stop the rebalancing itself: aws autoscaling
                                  suspend-processes --auto-scaling-group-name workers
                                  --scaling-processes AZRebalance
  LOW       queue/termguard  queue-without-dead-letter-queue
                             ...

  History (the groups' scaling activities; AWS keeps 42 days):
    workers: 3 terminations in 42 days, 2 by AZRebalance, 1 by scale-in, 3 undrained.
      i-7dd55cf3a5945a866 terminated by AZRebalance on 2026-12-03, no lifecycle hook: undrained.

Every rule, its fix and the permissions the audit needs: docs/audit.md.";

/// `termguard audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Audit this Auto Scaling group too (repeatable).
    #[arg(long = "group", value_name = "NAME")]
    pub groups: Vec<String>,
    /// The cluster's name: its groups are those whose tags name it, and groups of its nodes
    /// that no tag names are reported (termguard leaves their lifecycle actions alone).
    #[arg(long, env = "TERMGUARD_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// One more tag, KEY=VALUE, that marks a group as this cluster's (as for `run`).
    #[arg(long)]
    pub managed_asg_tag: Option<String>,
    /// The SQS queue termguard reads: what routes events to it, its access policy and its
    /// dead-letter queue are checked. Without it, "routed" means routed to some SQS queue.
    #[arg(long, env = "TERMGUARD_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Output: a table, JSON, or SARIF 2.1.0 for code scanning.
    #[arg(short = 'o', long, value_enum, default_value_t = crate::audit::output::Format::Table)]
    pub output: crate::audit::output::Format,
    /// Exit 1 when a finding is at least this severe.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<crate::audit::Severity>,
    /// Do not read the Kubernetes cluster: audit the groups named or tagged only.
    #[arg(long)]
    pub no_cluster: bool,
    /// The cluster (when it is read).
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Lab modes.
#[cfg(feature = "lab")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabMode {
    /// One group over three zones, no hook, no termguard.
    Unprotected,
    /// One group per zone (cluster-autoscaler's documented workaround).
    PerZoneGroups,
    /// One group over three zones with a termination hook and termguard.
    Protected,
}

/// `termguard lab`
#[cfg(feature = "lab")]
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Seed for job arrivals and choices; the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the results as JSON (an object with `runs`) instead of a timeline and a table.
    #[arg(long)]
    pub json: bool,
    /// Model an application-level query timeout (what a statement or client timeout would have
    /// done), e.g. 2s. Default: none, as in the incident.
    #[arg(long, value_parser = parse_go_duration)]
    pub client_timeout: Option<std::time::Duration>,
    /// Which runs to do (repeatable); default: all three.
    #[arg(long = "mode", value_enum)]
    pub modes: Vec<LabMode>,
    /// A scenario file instead of the embedded incident (needs pgbouncer and async-worker
    /// Deployments and one node group over several zones).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
}

/// Where the cluster is.
#[derive(Debug, Args, Clone)]
pub struct KubeArgs {
    /// Path to the kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    pub context: Option<String>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// kubectl-style lines, with a live progress line on a terminal.
    Text,
    /// One JSON summary on stdout when the drain ends.
    Json,
}

/// `termguard drain NODE`; its help text is on [`Command::Drain`].
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The node to drain.
    pub node: String,
    /// Ignore DaemonSet-managed pods (they are never evicted either way).
    #[arg(long)]
    pub ignore_daemonsets: bool,
    /// Continue even if there are pods using emptyDir (local data that will be deleted when the node is drained).
    #[arg(long)]
    pub delete_emptydir_data: bool,
    /// Continue even if there are pods that do not declare a controller.
    #[arg(long)]
    pub force: bool,
    /// Period of time in seconds given to each pod to terminate gracefully. If negative, the default value specified in the pod will be used.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// The length of time to wait before giving up, zero means infinite (e.g. 90s, 5m). Budgets are respected; to clip grace periods at a known end, use --deadline.
    #[arg(long, default_value = "0s", value_parser = parse_go_duration)]
    pub timeout: std::time::Duration,
    /// Label selector to filter pods on the node.
    #[arg(long, default_value = "")]
    pub pod_selector: String,
    /// Force drain to use delete, even if eviction is supported. This will bypass checking PodDisruptionBudgets, use with caution.
    #[arg(long)]
    pub disable_eviction: bool,
    /// If pod DeletionTimestamp older than N seconds, skip waiting for the pod. Seconds must be greater than 0 to skip.
    #[arg(long, default_value_t = 0)]
    pub skip_wait_for_delete_timeout: u64,
    /// Return large lists in chunks rather than all at once. Pass 0 to disable.
    #[arg(long, default_value_t = 500)]
    pub chunk_size: u32,
    /// Print the plan (waves, pods, reasons for skips) without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Absolute deadline (RFC 3339), e.g. when the instance is known to go away: past
    /// `deadline - grace`, pods are deleted with their grace clipped to the time left, budgets or not.
    #[arg(long)]
    pub deadline: Option<jiff::Timestamp>,
    /// Safety margin kept before the deadline when clipping grace periods.
    #[arg(long, default_value = "5s", value_parser = parse_go_duration)]
    pub deadline_margin: std::time::Duration,
    /// Evictions in flight at once within a wave.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Priority classes whose pods go in the last wave (repeatable; replaces the default list).
    #[arg(long = "drain-last-priority-class")]
    pub drain_last_priority_classes: Vec<String>,
    /// Do not publish Kubernetes Events.
    #[arg(long)]
    pub no_events: bool,
    /// Where the cluster is.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `termguard run --queue-url URL`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The SQS queue to consume.
    #[arg(long, env = "TERMGUARD_QUEUE_URL")]
    pub queue_url: String,
    /// Drain (not only cordon) a node on an EC2 rebalance recommendation.
    #[arg(long)]
    pub drain_on_rebalance: bool,
    /// Complete launch lifecycle actions of this cluster's groups once the new instance's node
    /// is Ready (heartbeating meanwhile). Without it, launch messages are left for their owner.
    #[arg(long)]
    pub complete_launch: bool,
    /// With --complete-launch: how long a new instance has to become a Ready node before its
    /// launch is abandoned, so that its group replaces it.
    #[arg(long, default_value = "10m", value_parser = parse_go_duration)]
    pub launch_timeout: std::time::Duration,
    /// This cluster's name. An Auto Scaling group is this cluster's when a tag names it:
    /// `termguard.io/cluster=NAME`, `kubernetes.io/cluster/NAME` (set by EKS) or
    /// `eks:cluster-name=NAME`. Only for this cluster's groups is the lifecycle action of an
    /// instance that never became a node here completed at once; without a name, such actions
    /// are always left for their owner.
    #[arg(long, env = "TERMGUARD_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// One more tag, KEY=VALUE, that marks an Auto Scaling group as this cluster's (a bare key
    /// is refused: other clusters' groups may carry it too).
    #[arg(long)]
    pub managed_asg_tag: Option<String>,
    /// Safety margin kept before a deadline when clipping grace periods.
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    pub deadline_margin: std::time::Duration,
    /// Messages held at once (received, not yet deleted). Receiving never waits for drains:
    /// each message's heartbeats and cordon start as soon as it arrives.
    #[arg(long, default_value_t = 1000)]
    pub max_in_flight: usize,
    /// Long polls (ReceiveMessage, up to 10 messages each) kept open at once, so that one is
    /// always waiting on the queue while the others hand their messages out.
    #[arg(long, default_value_t = crate::sources::sqs::DEFAULT_RECEIVERS)]
    pub receivers: usize,
    /// Drains evicting at once. A drain waiting for a slot keeps its node cordoned and its
    /// lifecycle action heartbeating; one whose instance goes within 15 minutes (Spot warnings,
    /// state changes, a moved deadline) never waits.
    #[arg(long, default_value_t = 50)]
    pub max_concurrent_drains: usize,
    /// Visibility timeout set on each received message, and renewed while its work runs.
    #[arg(long, default_value = "90s", value_parser = parse_go_duration)]
    pub visibility_timeout: std::time::Duration,
    /// Address of the /healthz, /readyz and /metrics server.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_listen: SocketAddr,
    /// Do not publish Kubernetes Events.
    #[arg(long)]
    pub no_events: bool,
    /// POST a JSON notification here when a drain starts, finishes, times out or fails, and
    /// when a lifecycle action is completed at its deadline (Slack-compatible by default).
    /// Sending never holds up a drain; failures are logged and counted.
    #[arg(long, env = "TERMGUARD_WEBHOOK_URL", value_parser = parse_webhook_url)]
    pub webhook_url: Option<http::Uri>,
    /// A file holding the webhook's body, with {{event}}, {{node}}, {{detail}}, {{cluster}},
    /// {{identity}} and {{text}} replaced by their JSON-escaped values. Default:
    /// {"text": "{{text}}"}.
    #[arg(long, env = "TERMGUARD_WEBHOOK_TEMPLATE", requires = "webhook_url")]
    pub webhook_template: Option<std::path::PathBuf>,
    /// The events notified (comma-separated). Default: all of them.
    #[arg(long, value_enum, value_delimiter = ',', requires = "webhook_url")]
    pub webhook_events: Vec<crate::report::notify::NotifyEvent>,
    /// Where the cluster is.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `termguard explain FILE`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A file holding one message body (as SQS delivers it), or `-` for standard input.
    pub file: PathBuf,
    /// Explain as `termguard run --drain-on-rebalance` would act.
    #[arg(long)]
    pub drain_on_rebalance: bool,
    /// Explain as `termguard run --complete-launch` would act.
    #[arg(long)]
    pub complete_launch: bool,
    /// The time to judge deadlines against (RFC 3339); now by default.
    #[arg(long)]
    pub now: Option<jiff::Timestamp>,
}

/// `termguard uncordon NODE`
#[derive(Debug, Args)]
pub struct UncordonArgs {
    /// The node.
    pub node: String,
    /// Where the cluster is.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Parses a Go-style duration as kubectl accepts it: `0`, `90s`, `1m30s`, `2h`, `500ms`.
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("invalid duration {s:?}: missing or unknown unit")),
        };
        rest = &rest[unit_len..];
        total += value * factor;
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_kubectl() {
        assert_eq!(parse_go_duration("0"), Ok(std::time::Duration::ZERO));
        assert_eq!(
            parse_go_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_go_duration("1m30s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_go_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("abc").is_err());
    }

    #[test]
    fn drain_help_says_where_termguard_differs_from_kubectl() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("drain")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("deliberately differs"), "{help}");
        assert!(help.contains("--ignore-daemonsets"));
        assert!(help.contains("--skip-wait-for-delete-timeout"));
        assert!(help.contains("Exit status:"), "{help}");
        assert!(help.contains("130  interrupted by SIGINT"), "{help}");
    }
}

/// `termguard sim ...`
#[cfg(feature = "lab")]
#[derive(Debug, Args)]
pub struct SimArgs {
    /// What to do with the simulator.
    #[command(subcommand)]
    pub command: SimCommand,
}

/// Simulator verbs.
#[cfg(feature = "lab")]
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Serve a scenario as a Kubernetes API that kubectl and kube-rs can use.
    ///
    /// Prints the server's address, writes a kubeconfig, and runs until interrupted.
    /// Point kubectl at it with `KUBECONFIG=<path> kubectl get nodes`.
    Serve(SimServeArgs),
    /// Load a scenario into a real cluster whose nodes are KWOK nodes (scripts/cluster.sh).
    ///
    /// Creates the scenario's nodes (KWOK-managed, named and labelled like EKS nodes), its
    /// workloads, budgets and priority classes through the API, the same objects the simulator
    /// would hold; with --wait, returns once every node and pod is Ready. --delete removes
    /// them again.
    Apply(SimApplyArgs),
}

/// `termguard sim apply`
#[cfg(feature = "lab")]
#[derive(Debug, Args)]
pub struct SimApplyArgs {
    /// Scenario file (YAML); see scenarios/ for examples.
    pub scenario: PathBuf,
    /// Where the cluster is.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Wait up to this long for every node and pod to be Ready (0s: do not wait).
    #[arg(long, default_value = "120s", value_parser = parse_go_duration)]
    pub wait: std::time::Duration,
    /// Remove the scenario's objects instead of creating them.
    #[arg(long)]
    pub delete: bool,
}

/// `termguard sim serve`
#[cfg(feature = "lab")]
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

/// An `http://` or `https://` URL with a host.
fn parse_webhook_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err("an http:// or https:// URL with a host is needed".into()),
    }
}
