//! Queue mode side by side with aws-node-termination-handler (NTH): the same AWS test peer
//! (tests/aws/moto_server.py, a fresh one per run), the same real control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, KWOK nodes; `scripts/cluster.sh`),
//! the same workload, each tool as its own process with its recommended queue-mode settings
//! (docs/benchmarks.md#queue-mode-side-by-side-with-nth), the tools taking turns.
//!
//! Workloads (`--workload`, default all):
//!   a  `--notices` lifecycle notices at once (a group scaled to zero), `--pods-per-node` pods
//!      per node shutting down in `--shutdown-ms`;
//!   b  a mixed burst: Spot warnings, rebalance recommendations, `stopping` state changes and
//!      lifecycle notices, a quarter each;
//!   c  a Spot warning while 50 drains are blocked by PodDisruptionBudgets;
//!   d  one node with 110 pods.
//!
//! Figures per tool, from outside the tools (spread: min, p50, p90, p99, max, over the nodes):
//!   * visible → cordoned: the peer made the message visible (its lifecycle action started, or
//!     the benchmark sent the event) → a watch of the Nodes saw `spec.unschedulable`;
//!   * visible → first eviction: → the API server received the tool's first eviction of a pod
//!     of that node (its audit log);
//!   * last pod gone → completed: a watch of the Pods saw the node's last pod deleted → the peer
//!     recorded CompleteLifecycleAction;
//!   * visible → completed;
//!   * visible → first received (the peer's record of when it first handed the message out), and
//!     received → first heartbeat (its arrival at the peer; termguard's target: within 1 s);
//!   * where a cordon's time goes: received → the tool's first write of the Node reaching the
//!     API server, and the API server's own time answering it (the audit log's timestamps);
//!   * API requests per pod drained (the audit log, the tool's own user; also without the
//!     Events the tool publishes), peak RSS (VmHWM) and CPU seconds of the tool's process;
//!   * c: whether the Spot node was empty before its two-minute deadline.
//!
//! and the ratios termguard/NTH. Where NTH cannot be built (`scripts/nth.sh build` fails) the
//! benchmark runs termguard alone and says so. Not a test: nothing is asserted; the targets are
//! printed beside termguard's figures.
//!
//! Run: `cargo bench -p termguard --bench queue` (options: `-- --workload a|b|c|d|all --rounds
//! 1 --tools termguard,nth --notices 200 --pods-per-node 2 --shutdown-ms 500`). It uses the
//! control plane named by `TERMGUARD_CLUSTER_DIR`, or starts one of its own (built on first use,
//! cached).

#[path = "../tests/common/cluster.rs"]
mod cluster;
#[path = "../tests/common/moto.rs"]
mod moto;
#[path = "common/nth.rs"]
mod nth;

use cluster::{Backend, TestCluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NTH_USER: &str = "system:serviceaccount:kube-system:aws-node-termination-handler";
const TERMGUARD_USER: &str = "termguard";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Termguard,
    Nth,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Termguard => "termguard",
            Tool::Nth => "NTH",
        }
    }
    fn user(self) -> &'static str {
        match self {
            Tool::Termguard => TERMGUARD_USER,
            Tool::Nth => NTH_USER,
        }
    }
}

struct Options {
    workloads: Vec<char>,
    rounds: usize,
    tools: Vec<Tool>,
    notices: usize,
    pods_per_node: usize,
    shutdown_ms: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        workloads: vec!['a', 'b', 'c', 'd'],
        rounds: 1,
        tools: vec![Tool::Termguard, Tool::Nth],
        notices: 200,
        pods_per_node: 2,
        shutdown_ms: 500,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
        };
        match a.as_str() {
            "--workload" => {
                let v = value("--workload")?;
                o.workloads = if v == "all" {
                    vec!['a', 'b', 'c', 'd']
                } else {
                    v.chars().filter(|c| c.is_ascii_alphabetic()).collect()
                };
                anyhow::ensure!(
                    o.workloads.iter().all(|w| "abcd".contains(*w)),
                    "--workload: a, b, c, d or all"
                );
            }
            "--tools" => {
                o.tools = value("--tools")?
                    .split(',')
                    .map(|t| match t.trim().to_ascii_lowercase().as_str() {
                        "termguard" => Ok(Tool::Termguard),
                        "nth" => Ok(Tool::Nth),
                        other => Err(anyhow::anyhow!("--tools: unknown tool {other}")),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--rounds" => o.rounds = value("--rounds")?.parse()?,
            "--notices" => o.notices = value("--notices")?.parse()?,
            "--pods-per-node" => o.pods_per_node = value("--pods-per-node")?.parse()?,
            "--shutdown-ms" => o.shutdown_ms = value("--shutdown-ms")?.parse()?,
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// min, p50, p90, p99, max of a sample.
fn quantiles(mut v: Vec<f64>) -> Option<[f64; 5]> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    Some([v[0], q(0.5), q(0.9), q(0.99), v[v.len() - 1]])
}

// ---------------------------------------------------------------------------------------------
// What the benchmark sees from outside the tools.

/// When each node was first seen cordoned and when its last pod went, from watches of the
/// admin user (a thread of their own would not be fairer: the tools are other processes).
#[derive(Default)]
struct Seen {
    cordoned: HashMap<String, i64>,
    last_pod_gone: HashMap<String, i64>,
    pods_left: HashMap<String, usize>,
}

struct Watches {
    seen: Arc<Mutex<Seen>>,
    /// Pod `namespace/name` → node, for the pods there when the watches started.
    pod_node: HashMap<String, String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn watch(c: &TestCluster) -> anyhow::Result<Watches> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let nodes: Api<Node> = Api::all(c.admin.clone());
    let pods: Api<Pod> = Api::all(c.admin.clone());
    let node_list = nodes.list(&ListParams::default()).await?;
    let pod_list = pods.list(&ListParams::default()).await?;
    let mut pod_node = HashMap::new();
    {
        let mut s = lock(&seen);
        for p in &pod_list.items {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            if let Some(node) = node {
                *s.pods_left.entry(node.clone()).or_default() += 1;
                pod_node.insert(
                    format!(
                        "{}/{}",
                        p.metadata.namespace.as_deref().unwrap_or(""),
                        p.metadata.name.as_deref().unwrap_or("")
                    ),
                    node,
                );
            }
        }
    }
    let node_task = {
        let seen = seen.clone();
        let rv = node_list.metadata.resource_version.unwrap_or_default();
        tokio::spawn(async move {
            let mut rv = rv;
            loop {
                let Ok(stream) = nodes.watch(&WatchParams::default().timeout(290), &rv).await
                else {
                    return;
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(Ok(ev)) = stream.next().await {
                    let t = now_ms();
                    if let WatchEvent::Added(n) | WatchEvent::Modified(n) = &ev {
                        rv = n.metadata.resource_version.clone().unwrap_or_default();
                        if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
                            let name = n.metadata.name.clone().unwrap_or_default();
                            lock(&seen).cordoned.entry(name).or_insert(t);
                        }
                    }
                }
            }
        })
    };
    let pod_task = {
        let seen = seen.clone();
        let rv = pod_list.metadata.resource_version.unwrap_or_default();
        tokio::spawn(async move {
            let mut rv = rv;
            loop {
                let Ok(stream) = pods.watch(&WatchParams::default().timeout(290), &rv).await else {
                    return;
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(Ok(ev)) = stream.next().await {
                    let t = now_ms();
                    match &ev {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                            rv = p.metadata.resource_version.clone().unwrap_or_default();
                        }
                        WatchEvent::Deleted(p) => {
                            rv = p.metadata.resource_version.clone().unwrap_or_default();
                            if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                                let mut s = lock(&seen);
                                let left = s.pods_left.entry(node.clone()).or_default();
                                *left = left.saturating_sub(1);
                                s.last_pod_gone.insert(node, t);
                            }
                        }
                        _ => {}
                    }
                }
            }
        })
    };
    Ok(Watches {
        seen,
        pod_node,
        tasks: vec![node_task, pod_task],
    })
}

/// What the API server's audit log says one tool did.
#[derive(Default)]
struct Audited {
    /// Requests by verb and resource.
    requests: BTreeMap<String, u64>,
    /// Per node, when the first eviction of one of its pods reached the API server (ms).
    first_eviction: HashMap<String, i64>,
    /// Per node, every write of the Node itself (PATCH or PUT): when it reached the API
    /// server and when the answer was complete (µs).
    node_writes: HashMap<String, Vec<(i64, i64)>>,
}

impl Audited {
    /// The tool's first write of `node` from `after_ms` on, as (reached, answered) in µs.
    fn first_node_write(&self, node: &str, after_ms: i64) -> Option<(i64, i64)> {
        self.node_writes
            .get(node)?
            .iter()
            .filter(|(at, _)| *at >= after_ms * 1000)
            .min()
            .copied()
    }
}

/// Reads the tool's requests from the API server's audit log, from byte `from` of it on.
fn audit(dir: &Path, from: u64, user: &str, pod_node: &HashMap<String, String>) -> Audited {
    let mut a = Audited::default();
    let micros = |v: &Value| {
        v.as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_microsecond())
    };
    for ev in cluster::audit_events(dir, from, user) {
        let r = &ev["objectRef"];
        let verb = ev["verb"].as_str().unwrap_or("");
        let resource = r["resource"].as_str().unwrap_or("");
        let kind = match r["subresource"].as_str() {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        };
        *a.requests.entry(kind).or_default() += 1;
        let name = r["name"].as_str().unwrap_or("");
        let at = micros(&ev["requestReceivedTimestamp"]);
        if resource == "nodes" && r["subresource"].is_null() && matches!(verb, "patch" | "update") {
            if let (Some(at), Some(done)) = (at, micros(&ev["stageTimestamp"])) {
                a.node_writes
                    .entry(name.to_string())
                    .or_default()
                    .push((at, done));
            }
            continue;
        }
        if r["subresource"] != "eviction" {
            continue;
        }
        let pod = format!("{}/{name}", r["namespace"].as_str().unwrap_or(""));
        if let (Some(node), Some(at)) = (pod_node.get(&pod), at) {
            let e = a.first_eviction.entry(node.clone()).or_insert(at / 1000);
            *e = (*e).min(at / 1000);
        }
    }
    a
}

// ---------------------------------------------------------------------------------------------
// The tools.

enum Running {
    Termguard {
        child: std::process::Child,
        pid: u32,
    },
    Nth(nth::Nth),
}

impl Running {
    fn pid(&self) -> anyhow::Result<u32> {
        match self {
            Running::Termguard { pid, .. } => Ok(*pid),
            Running::Nth(n) => n.nth_pid(),
        }
    }
    fn rss_mib(&self) -> Option<f64> {
        let kib = match self {
            Running::Termguard { pid, .. } => nth::peak_rss_kib_of(*pid).ok()?,
            Running::Nth(n) => n.peak_rss_kib().ok()?,
        };
        Some(kib as f64 / 1024.0)
    }
    fn cpu(&self) -> Option<f64> {
        match self {
            Running::Termguard { pid, .. } => nth::cpu_seconds_of(*pid).ok(),
            Running::Nth(n) => n.cpu_seconds().ok(),
        }
    }
    fn stop(self) {
        match self {
            Running::Termguard { mut child, pid } => {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::Nth(mut n) => {
                let _ = n.stop();
            }
        }
    }
}

async fn start_tool(
    tool: Tool,
    dir: &Path,
    moto: &moto::Moto,
    queue_url: &str,
    logs: &Path,
) -> anyhow::Result<Running> {
    match tool {
        Tool::Nth => Ok(Running::Nth(nth::Nth::start(
            dir,
            &moto.url,
            "us-east-1",
            queue_url,
            &[],
        )?)),
        Tool::Termguard => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let health = format!("127.0.0.1:{port}");
            let log = std::fs::File::create(logs.join(format!("termguard-{}.log", now_ms())))?;
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
                .args(["run", "--queue-url", queue_url, "--health-listen", &health])
                .arg("--kubeconfig")
                .arg(dir.join("termguard.kubeconfig"))
                .env_remove("KUBECONFIG")
                .env_remove("AWS_PROFILE")
                .env("AWS_ENDPOINT_URL", &moto.url)
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                // TERMGUARD_BENCH_LOG sets the tool's log filter (default info).
                .env(
                    "TERMGUARD_LOG",
                    std::env::var("TERMGUARD_BENCH_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()?;
            let pid = child.id();
            let running = Running::Termguard { child, pid };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let (code, _) = moto::http(&health, "GET", "/readyz", None).await;
                if code == 200 {
                    return Ok(running);
                }
                if Instant::now() > deadline {
                    running.stop();
                    anyhow::bail!("termguard was not ready within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads.

fn spot_warning(instance: &str) -> String {
    event(
        "EC2 Spot Instance Interruption Warning",
        instance,
        json!({"instance-id": instance, "instance-action": "terminate"}),
    )
}

fn event(detail_type: &str, instance: &str, detail: Value) -> String {
    let now = jiff::Timestamp::now();
    json!({
        "version": "0", "id": format!("{detail_type}-{instance}-{}", now.as_millisecond()),
        "detail-type": detail_type, "source": "aws.ec2", "account": "123456789012",
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": detail,
    })
    .to_string()
}

/// One workload's setup, as the benchmark builds it for each tool in turn.
struct Setup {
    /// Instances in the group.
    size: usize,
    /// Scenario YAML for those instances (their Nodes and workloads).
    scenario: String,
}

fn setup(w: char, o: &Options, instances: &[moto::Instance]) -> String {
    let mut yaml =
        String::from("name: queue-bench\ndefaults: {startupMs: 20, shutdownMs: 50}\nnodes:\n");
    let pods = |w: char| match w {
        'd' => 112,
        _ => o.pods_per_node + 2,
    };
    for (i, inst) in instances.iter().enumerate() {
        let role = match w {
            'c' if i == 0 => "spot",
            'c' => "blocked",
            _ => "app",
        };
        yaml.push_str(&format!(
            "  - {{name: ip-10-4-{}-{}.ec2.internal, zone: {}, instanceId: {}, capacity: {{pods: {}}}, labels: {{bench/role: {role}}}}}\n",
            i / 200,
            i % 200 + 10,
            inst.zone,
            inst.id,
            pods(w)
        ));
    }
    let n = instances.len();
    let app = |replicas: usize, role: &str, extra: &str| {
        format!(
            "  - {{kind: Deployment, name: {role}, replicas: {replicas}, shutdownMs: {}, nodeSelector: {{bench/role: {role}}}{extra}}}\n",
            o.shutdown_ms
        )
    };
    yaml.push_str("workloads:\n");
    match w {
        'a' | 'b' => yaml.push_str(&app(n * o.pods_per_node, "app", "")),
        'c' => {
            yaml.push_str(&app(o.pods_per_node, "spot", ""));
            yaml.push_str(&app(
                (n - 1) * o.pods_per_node,
                "blocked",
                ", pdb: {maxUnavailable: 0}",
            ));
        }
        _ => yaml.push_str(&app(110, "app", "")),
    }
    yaml
}

fn size_of(w: char, o: &Options) -> usize {
    match w {
        'a' => o.notices,
        'b' => o.notices.div_ceil(4) * 4,
        'c' => 51,
        _ => 1,
    }
}

/// Per node: when its notice became visible, and whether a lifecycle action stands behind it.
type Visible = BTreeMap<String, (i64, bool)>;

/// What a workload's trigger sent and measured, besides the visible times.
#[derive(Default)]
struct Sent {
    /// Per node, the id of the message the benchmark sent itself (lifecycle notices come from
    /// the Auto Scaling peer, which records theirs).
    messages: HashMap<String, String>,
    /// For (b): the nodes whose notices drain them (all but the rebalance recommendations,
    /// which only cordon).
    drained: Vec<String>,
    /// For (c): single PATCHes of a blocked Node while the 50 drains are blocked, each timed
    /// from send to answer — the API server's own floor under that load.
    floor: Vec<f64>,
}

async fn trigger(
    w: char,
    moto: &moto::Moto,
    fleet: &moto::Fleet,
    node_of: &HashMap<String, String>,
    visible: &mut Visible,
    watches: &Watches,
    c: &TestCluster,
) -> anyhow::Result<Sent> {
    let mut sent = Sent::default();
    let terminate = |id: String| async move {
        moto.asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
    };
    match w {
        'a' | 'd' => {
            moto.asg
                .set_desired_capacity()
                .auto_scaling_group_name(&fleet.group)
                .desired_capacity(0)
                .honor_cooldown(false)
                .send()
                .await?;
        }
        'b' => {
            let quarter = fleet.instances.len() / 4;
            for (i, inst) in fleet.instances.iter().enumerate() {
                let node = node_of.get(&inst.id).cloned().unwrap_or_default();
                let kind = i / quarter.max(1);
                if kind != 2 {
                    sent.drained.push(node.clone());
                }
                let body = match kind {
                    0 => None,
                    1 => Some(spot_warning(&inst.id)),
                    2 => Some(event(
                        "EC2 Instance Rebalance Recommendation",
                        &inst.id,
                        json!({"instance-id": inst.id}),
                    )),
                    _ => Some(event(
                        "EC2 Instance State-change Notification",
                        &inst.id,
                        json!({"instance-id": inst.id, "state": "stopping"}),
                    )),
                };
                match body {
                    None => {
                        terminate(inst.id.clone()).await?;
                    }
                    Some(body) => {
                        visible.insert(node.clone(), (now_ms(), false));
                        let id = moto.send(&fleet.queue_url, &body).await;
                        sent.messages.insert(node, id);
                    }
                }
            }
        }
        _ => {
            // Fifty drains blocked by their budgets first, then the Spot warning.
            for inst in &fleet.instances[1..] {
                terminate(inst.id.clone()).await?;
            }
            let blocked = fleet.instances.len() - 1;
            let by = Instant::now() + Duration::from_secs(120);
            while Instant::now() < by && lock(&watches.seen).cordoned.len() < blocked {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Their evictions refused a few times over; meanwhile, one PATCH at a time of a
            // blocked node (already cordoned, its drain waiting) times the API server alone.
            let blocked_node = node_of.get(&fleet.instances[1].id);
            for _ in 0..10 {
                sent.floor
                    .extend(patch_floor(c, blocked_node.into_iter()).await);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let spot = &fleet.instances[0];
            let node = node_of.get(&spot.id).cloned().unwrap_or_default();
            visible.insert(node.clone(), (now_ms(), false));
            let id = moto.send(&fleet.queue_url, &spot_warning(&spot.id)).await;
            sent.messages.insert(node, id);
        }
    }
    Ok(sent)
}

// ---------------------------------------------------------------------------------------------
// One run, and the figures.

#[derive(Default)]
struct Figures {
    to_cordon: Vec<f64>,
    to_evict: Vec<f64>,
    gone_to_complete: Vec<f64>,
    to_complete: Vec<f64>,
    first_heartbeat: Vec<f64>,
    to_received: Vec<f64>,
    /// The message's first receipt to the tool's first write of its Node reaching the API
    /// server: the tool's own share of "visible -> cordoned".
    received_to_write: Vec<f64>,
    /// How long the API server took to answer that write.
    write_served: Vec<f64>,
    requests_per_pod: Option<f64>,
    /// The same without the Events the tool publishes (termguard's are on by default; NTH's,
    /// `--emit-kubernetes-events`, are off).
    requests_per_pod_no_events: Option<f64>,
    request_kinds: String,
    rss_mib: Option<f64>,
    cpu_s: Option<f64>,
    not_completed: usize,
    patch_floor: Vec<f64>,
    spot_drained_before_deadline: Option<(bool, f64)>,
    wall_s: f64,
}

/// What the API server alone does on this machine with a burst like (a)'s: one merge PATCH of
/// each node at once, from one client, with no tool running — each timed from send to answer.
/// No tool can cordon faster than this; its own figure minus this one is its overhead.
async fn patch_floor<'a>(c: &TestCluster, nodes: impl Iterator<Item = &'a String>) -> Vec<f64> {
    let api: Api<Node> = Api::all(c.admin.clone());
    let patch = Patch::Merge(json!({
        "metadata": {"annotations": {"bench.termguard.io/floor": "1"}}
    }));
    let params = PatchParams::default();
    let timed = nodes.map(|n| {
        let (api, patch, params) = (&api, &patch, &params);
        async move {
            let at = Instant::now();
            api.patch(n, params, patch)
                .await
                .ok()
                .map(|_| at.elapsed().as_secs_f64())
        }
    });
    futures::future::join_all(timed)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn run_once(w: char, tool: Tool, o: &Options, logs: &Path) -> anyhow::Result<Figures> {
    let moto = moto::Moto::start().await;
    let size = size_of(w, o);
    // 300 s: far above NTH's 30-s minimum heartbeat interval.
    let fleet = moto.fleet("bench", size as i32, 300, &[]).await;
    let node_of: HashMap<String, String> = fleet
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            (
                inst.id.clone(),
                format!("ip-10-4-{}-{}.ec2.internal", i / 200, i % 200 + 10),
            )
        })
        .collect();
    let s = Setup {
        size,
        scenario: setup(w, o, &fleet.instances),
    };
    anyhow::ensure!(
        s.size == fleet.instances.len(),
        "the fleet has {} instances",
        fleet.instances.len()
    );
    let c = TestCluster::start_settled(Backend::Real, &s.scenario).await;
    let dir = c
        .real_dir()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("not the real backend"))?;
    let watches = watch(&c).await?;
    let pods_before: usize = lock(&watches.seen).pods_left.values().sum();
    // The machine's own floor for (a)'s cordons, before the tool runs.
    let floor = if w == 'a' {
        patch_floor(&c, node_of.values()).await
    } else {
        Vec::new()
    };
    let audit_from = cluster::audit_len(&dir);
    let running = start_tool(tool, &dir, &moto, &fleet.queue_url, logs).await?;
    // Both tools get the same time to settle in (NTH's first receive comes ~2 s after start).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_before = running.cpu().unwrap_or(0.0);
    let mut visible = Visible::new();
    let started = Instant::now();
    let sent = trigger(w, &moto, &fleet, &node_of, &mut visible, &watches, &c).await?;

    // Done: every lifecycle action ended, every notified node cordoned (for b, every drained
    // node empty too; for c, the Spot node empty or its deadline passed).
    let limit = Instant::now()
        + Duration::from_secs(match w {
            'c' => 130,
            _ => 300,
        });
    let spot_node = node_of
        .get(&fleet.instances[0].id)
        .cloned()
        .unwrap_or_default();
    let actions = loop {
        let actions = moto.lifecycle_actions("group=bench").await;
        let waiting = actions.iter().filter(|a| a["state"] == "waiting").count();
        let done = match w {
            'c' => {
                lock(&watches.seen)
                    .pods_left
                    .get(&spot_node)
                    .copied()
                    .unwrap_or(0)
                    == 0
            }
            // Every drain whole, so that requests per pod count whole drains only.
            'b' => {
                waiting == 0 && {
                    let seen = lock(&watches.seen);
                    visible.keys().all(|n| seen.cordoned.contains_key(n))
                        && sent
                            .drained
                            .iter()
                            .all(|n| seen.pods_left.get(n).copied().unwrap_or(0) == 0)
                }
            }
            _ => !actions.is_empty() && waiting == 0,
        };
        if done || Instant::now() > limit {
            break actions;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let wall_s = started.elapsed().as_secs_f64();
    // Let the last requests reach the audit log (and, in b, the drains that emptied their
    // nodes last write their results).
    tokio::time::sleep(Duration::from_secs(if w == 'b' { 3 } else { 1 })).await;
    let mut f = Figures {
        patch_floor: if w == 'c' { sent.floor } else { floor },
        rss_mib: running.rss_mib(),
        cpu_s: running.cpu().map(|c| c - cpu_before),
        wall_s,
        ..Figures::default()
    };
    let _ = running.pid();
    running.stop();
    for a in &actions {
        let (Some(node), Some(start)) = (
            a["instance_id"].as_str().and_then(|i| node_of.get(i)),
            a["started_at_ms"].as_i64(),
        ) else {
            continue;
        };
        visible.insert(node.clone(), (start, true));
    }
    let audited = audit(&dir, audit_from, tool.user(), &watches.pod_node);
    // When the peer first handed each message out (its record of the messages deleted).
    let (_, record) = moto.http("GET", "/_termguard/sqs-deletions", None).await;
    let record: Value = serde_json::from_str(&record).unwrap_or_default();
    let first_received: HashMap<String, i64> = record["deletions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                d["message_id"].as_str()?.to_string(),
                d["first_received_at_ms"].as_i64()?,
            ))
        })
        .collect();
    let seen = lock(&watches.seen);
    let pods_drained: usize = pods_before - seen.pods_left.values().sum::<usize>();
    let total: u64 = audited.requests.values().sum();
    f.requests_per_pod = (pods_drained > 0).then(|| total as f64 / pods_drained as f64);
    let events: u64 = audited
        .requests
        .iter()
        .filter(|(k, _)| k.ends_with(" events"))
        .map(|(_, v)| v)
        .sum();
    f.requests_per_pod_no_events =
        (pods_drained > 0).then(|| (total - events) as f64 / pods_drained as f64);
    let mut kinds: Vec<(String, u64)> = audited.requests.clone().into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    f.request_kinds = kinds
        .iter()
        .take(8)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let secs = |a: i64, b: i64| (b - a) as f64 / 1000.0;
    // Each node's message: the one the benchmark sent, or the lifecycle action's.
    let mut message_of: HashMap<&str, &str> = sent
        .messages
        .iter()
        .map(|(n, m)| (n.as_str(), m.as_str()))
        .collect();
    for a in &actions {
        if let (Some(node), Some(m)) = (
            a["instance_id"].as_str().and_then(|i| node_of.get(i)),
            a["notification"]["message_id"].as_str(),
        ) {
            message_of.insert(node.as_str(), m);
        }
    }
    for (node, (at, lifecycle)) in &visible {
        if let Some(c) = seen.cordoned.get(node) {
            f.to_cordon.push(secs(*at, *c));
        }
        if let Some(e) = audited.first_eviction.get(node) {
            f.to_evict.push(secs(*at, *e));
        }
        let received = message_of
            .get(node.as_str())
            .and_then(|m| first_received.get(*m));
        if let (Some(r), false) = (received, lifecycle) {
            f.to_received.push(secs(*at, *r));
        }
        if let (Some(r), Some((reached, answered))) =
            (received, audited.first_node_write(node, *at))
        {
            f.received_to_write.push((reached - r * 1000) as f64 / 1e6);
            f.write_served.push((answered - reached) as f64 / 1e6);
        }
    }
    for a in &actions {
        let Some(node) = a["instance_id"].as_str().and_then(|i| node_of.get(i)) else {
            continue;
        };
        let (Some(start), ended) = (a["started_at_ms"].as_i64(), a["ended_at_ms"].as_i64()) else {
            continue;
        };
        if a["result"] != "CONTINUE" || a["ended_by"] != "CompleteLifecycleAction" {
            f.not_completed += 1;
        }
        // From the message's first receipt to the first heartbeat's arrival at the peer.
        let received = a["notification"]["message_id"]
            .as_str()
            .and_then(|m| first_received.get(m));
        let first_beat = a["heartbeats_arrived_ms"]
            .as_array()
            .and_then(|h| h.first())
            .and_then(Value::as_i64);
        if let (Some(r), Some(hb)) = (received, first_beat) {
            f.first_heartbeat.push(secs(*r, hb));
        }
        if let Some(r) = received {
            f.to_received.push(secs(start, *r));
        }
        let Some(ended) = ended else { continue };
        f.to_complete.push(secs(start, ended));
        if let Some(g) = seen.last_pod_gone.get(node) {
            f.gone_to_complete.push(secs(*g, ended));
        }
    }
    if w == 'c' {
        let sent = visible.get(&spot_node).map(|v| v.0).unwrap_or(0);
        let empty = seen.pods_left.get(&spot_node).copied().unwrap_or(1) == 0;
        let at = seen.last_pod_gone.get(&spot_node).map(|g| secs(sent, *g));
        f.spot_drained_before_deadline = Some((
            empty && at.is_some_and(|s| s < 120.0),
            at.unwrap_or(f64::NAN),
        ));
        // For c, the spreads are the Spot node's alone.
        f.to_cordon = seen
            .cordoned
            .get(&spot_node)
            .map(|c| vec![secs(sent, *c)])
            .unwrap_or_default();
        f.to_evict = audited
            .first_eviction
            .get(&spot_node)
            .map(|e| vec![secs(sent, *e)])
            .unwrap_or_default();
    }
    Ok(f)
}

fn line(label: &str, v: &[f64]) -> String {
    match quantiles(v.to_vec()) {
        None => format!("  {label:<34} no samples"),
        Some([a, b, c, d, e]) => format!(
            "  {label:<34} min {a:>7.3}  p50 {b:>7.3}  p90 {c:>7.3}  p99 {d:>7.3}  max {e:>7.3} s  (n={})",
            v.len()
        ),
    }
}

fn print(tool: Tool, f: &Figures) {
    println!("  {}:", tool.name());
    println!("{}", line("visible -> cordoned", &f.to_cordon));
    println!("{}", line("visible -> first eviction", &f.to_evict));
    println!(
        "{}",
        line("last pod gone -> completed", &f.gone_to_complete)
    );
    println!("{}", line("visible -> completed", &f.to_complete));
    println!("{}", line("visible -> first received", &f.to_received));
    println!(
        "{}",
        line("received -> first Node write sent", &f.received_to_write)
    );
    println!(
        "{}",
        line("first Node write at the API server", &f.write_served)
    );
    if !f.patch_floor.is_empty() {
        // (a): measured in the same round, before the tool started; (c): while the drains
        // were blocked, before the Spot warning.
        println!("{}", line("(API server alone: PATCH)", &f.patch_floor));
    }
    println!(
        "{}",
        line("received -> first heartbeat", &f.first_heartbeat)
    );
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2}{unit}"));
    println!(
        "    API requests per pod {} ({} without Events), peak RSS {}, CPU {}, wall {:.2} s, actions not completed with CONTINUE by the tool: {}",
        opt(f.requests_per_pod, ""),
        opt(f.requests_per_pod_no_events, ""),
        opt(f.rss_mib, " MiB"),
        opt(f.cpu_s, " s"),
        f.wall_s,
        f.not_completed
    );
    if !f.request_kinds.is_empty() {
        println!("    requests: {}", f.request_kinds);
    }
    if let Some((ok, at)) = f.spot_drained_before_deadline {
        println!(
            "    Spot node empty before its 120-s deadline: {} (last pod gone {at:.2} s after the warning)",
            if ok { "yes" } else { "NO" }
        );
    }
}

fn p(v: &[f64], i: usize) -> Option<f64> {
    quantiles(v.to_vec()).map(|q| q[i])
}

fn ratios(t: &Figures, n: &Figures) {
    let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    };
    println!(
        "  ratio termguard/NTH (p50, p99): cordoned {} {}, first eviction {} {}, gone->completed {} {}, completed {} {}; requests/pod {} ({} without Events), RSS {}, CPU {}",
        r(p(&t.to_cordon, 1), p(&n.to_cordon, 1)),
        r(p(&t.to_cordon, 3), p(&n.to_cordon, 3)),
        r(p(&t.to_evict, 1), p(&n.to_evict, 1)),
        r(p(&t.to_evict, 3), p(&n.to_evict, 3)),
        r(p(&t.gone_to_complete, 1), p(&n.gone_to_complete, 1)),
        r(p(&t.gone_to_complete, 3), p(&n.gone_to_complete, 3)),
        r(p(&t.to_complete, 1), p(&n.to_complete, 1)),
        r(p(&t.to_complete, 3), p(&n.to_complete, 3)),
        r(t.requests_per_pod, n.requests_per_pod),
        r(t.requests_per_pod_no_events, n.requests_per_pod_no_events),
        r(t.rss_mib, n.rss_mib),
        r(t.cpu_s, n.cpu_s),
    );
}

fn targets(w: char, f: &Figures) {
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    match w {
        'a' => {
            let p99 = p(&f.to_cordon, 3).unwrap_or(f64::INFINITY);
            let hb = p(&f.first_heartbeat, 4).unwrap_or(f64::INFINITY);
            let rss = f.rss_mib.unwrap_or(f64::INFINITY);
            println!(
                "  targets: visible -> cordoned p99 {:.3} s <= 0.050: {}; first heartbeat max {hb:.3} s after its message was received <= 1 s: {}; peak RSS {rss:.1} MiB <= 64: {}",
                p99,
                met(p99 <= 0.050),
                met(hb <= 1.0),
                met(rss <= 64.0)
            );
            if let Some(floor) = p(&f.patch_floor, 3) {
                println!(
                    "           the API server alone answers the same burst of PATCHes with p99 {floor:.3} s on this machine: no tool cordons faster{}",
                    if floor > 0.050 { "; the 50-ms target is below that floor" } else { "" }
                );
            }
            if let (Some(hop), Some(own), Some(served)) = (
                p(&f.to_received, 3),
                p(&f.received_to_write, 3),
                p(&f.write_served, 3),
            ) {
                println!(
                    "           p99 of its parts: SQS hop {hop:.3} s, termguard (received -> PATCH sent) {own:.3} s, the API server answering termguard's PATCH {served:.3} s{}",
                    if served > 0.050 { ": the API server's share alone is over 50 ms" } else { "" }
                );
            }
        }
        'c' => {
            // One Spot warning a round: the target holds for the worst round.
            let c = p(&f.to_cordon, 4).unwrap_or(f64::INFINITY);
            println!(
                "  targets: Spot warning -> cordoned max {c:.3} s <= 0.050: {}; drained before its deadline: {}",
                met(c <= 0.050),
                met(f.spot_drained_before_deadline.is_some_and(|d| d.0))
            );
            if let (Some(floor), Some(hop), Some(own)) = (
                p(&f.patch_floor, 1),
                p(&f.to_received, 1),
                p(&f.received_to_write, 1),
            ) {
                println!(
                    "           p50 of its parts: SQS hop (visible -> received) {hop:.3} s, termguard (received -> PATCH sent) {own:.3} s; one PATCH alone under this load takes {floor:.3} s{}",
                    if hop + floor > 0.050 { ": the peers alone use up the 50 ms" } else { "" }
                );
            }
        }
        _ => {}
    }
}

/// A control plane: `TERMGUARD_CLUSTER_DIR`'s, or one this run starts (and stops).
struct ControlPlane {
    own: Option<PathBuf>,
}

impl ControlPlane {
    fn get() -> anyhow::Result<ControlPlane> {
        if cluster::real_cluster_dir().is_some() {
            return Ok(ControlPlane { own: None });
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("queue-bench-cp-{}", std::process::id()));
        println!(
            "starting a control plane in {} (scripts/cluster.sh up)",
            dir.display()
        );
        let status = std::process::Command::new("bash")
            .arg(root.join("scripts/cluster.sh"))
            .arg("up")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "scripts/cluster.sh up {} failed",
            dir.display()
        );
        std::env::set_var("TERMGUARD_CLUSTER_DIR", &dir);
        Ok(ControlPlane { own: Some(dir) })
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(dir) = &self.own {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
            let _ = std::process::Command::new("bash")
                .arg(root.join("scripts/cluster.sh"))
                .arg("down")
                .arg(dir)
                .stdin(std::process::Stdio::null())
                .status();
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut o = options()?;
    if o.tools.contains(&Tool::Nth) {
        if let Err(why) = nth::Nth::build() {
            println!("NTH could not be built ({why}): termguard alone, no NTH column");
            o.tools.retain(|t| *t != Tool::Nth);
        }
    }
    let _cp = ControlPlane::get()?;
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("queue-bench-logs");
    std::fs::create_dir_all(&logs)?;
    println!(
        "queue mode side by side: tools {:?}, workloads {:?}, {} round(s); a: {} notices, {} pods per node (shutdown {} ms)",
        o.tools.iter().map(|t| t.name()).collect::<Vec<_>>(),
        o.workloads,
        o.rounds,
        o.notices,
        o.pods_per_node,
        o.shutdown_ms
    );
    for &w in &o.workloads {
        let title = match w {
            'a' => format!("(a) {} lifecycle notices at once", o.notices),
            'b' => format!(
                "(b) a mixed burst of {} notices (Spot, rebalance, state change, lifecycle)",
                size_of('b', &o)
            ),
            'c' => "(c) a Spot warning while 50 drains are blocked by PDBs".to_string(),
            _ => "(d) one node with 110 pods".to_string(),
        };
        println!("\n{title}");
        let mut results: BTreeMap<&'static str, Vec<Figures>> = BTreeMap::new();
        for round in 0..o.rounds {
            // Take turns: the order flips every round.
            let mut order = o.tools.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for tool in order {
                match run_once(w, tool, &o, &logs).await {
                    Ok(f) => results.entry(tool.name()).or_default().push(f),
                    Err(e) => println!("  {} round {}: failed: {e:#}", tool.name(), round + 1),
                }
            }
        }
        let merged = |fs: &[Figures]| {
            let mut m = Figures::default();
            for f in fs {
                m.to_cordon.extend(&f.to_cordon);
                m.to_evict.extend(&f.to_evict);
                m.gone_to_complete.extend(&f.gone_to_complete);
                m.to_complete.extend(&f.to_complete);
                m.first_heartbeat.extend(&f.first_heartbeat);
                m.to_received.extend(&f.to_received);
                m.received_to_write.extend(&f.received_to_write);
                m.write_served.extend(&f.write_served);
                m.patch_floor.extend(&f.patch_floor);
                if m.request_kinds.is_empty() {
                    m.request_kinds = f.request_kinds.clone();
                }
                m.not_completed += f.not_completed;
                m.wall_s = m.wall_s.max(f.wall_s);
                let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                m.requests_per_pod = max(m.requests_per_pod, f.requests_per_pod);
                m.requests_per_pod_no_events =
                    max(m.requests_per_pod_no_events, f.requests_per_pod_no_events);
                m.rss_mib = max(m.rss_mib, f.rss_mib);
                m.cpu_s = max(m.cpu_s, f.cpu_s);
                m.spot_drained_before_deadline = match (
                    m.spot_drained_before_deadline,
                    f.spot_drained_before_deadline,
                ) {
                    (Some(a), Some(b)) => Some((a.0 && b.0, a.1.max(b.1))),
                    (a, b) => a.or(b),
                };
            }
            m
        };
        let t = results.get("termguard").map(|fs| merged(fs));
        let n = results.get("NTH").map(|fs| merged(fs));
        if let Some(t) = &t {
            print(Tool::Termguard, t);
            targets(w, t);
        }
        if let Some(n) = &n {
            print(Tool::Nth, n);
        }
        if let (Some(t), Some(n)) = (&t, &n) {
            ratios(t, n);
        }
    }
    println!(
        "\ncommand: cargo bench -p termguard --bench queue -- --workload {} --rounds {} --tools {} --notices {} --pods-per-node {} --shutdown-ms {}",
        o.workloads.iter().collect::<String>(),
        o.rounds,
        o.tools.iter().map(|t| t.name().to_ascii_lowercase()).collect::<Vec<_>>().join(","),
        o.notices,
        o.pods_per_node,
        o.shutdown_ms
    );
    Ok(())
}
