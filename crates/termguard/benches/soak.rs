//! The chaos soak: many notices of every kind, with faults all along, and the promise checked
//! at the end as invariants that must all be 0.
//!
//! Over real sockets: the moto peer (tests/aws/moto_server.py) with this cluster's Auto Scaling
//! group (a termination hook, instances replaced as they go) and another cluster's group whose
//! hook sends to the same queue; a cluster with a Node per instance — the Kubernetes simulator
//! (`--backend sim`, the default) or the real control plane of `scripts/cluster.sh` with KWOK
//! nodes (`--backend real`, `TERMGUARD_CLUSTER_DIR` naming it), reached by termguard through
//! the fault-injecting proxy of scripts/controlplane/faultproxy as the `termguard` user of the
//! shipped ClusterRole; termguard's queue mode, several replicas in this process on one queue. A seeded generator sends the
//! notices — lifecycle terminations, Spot warnings (stop: the instance comes back), rebalance
//! recommendations, late `stopping` events for live instances, AWS Health changes and their
//! closing, the other cluster's terminations, duplicates, malformed messages — while faults are
//! injected: API 5xx and 429 on every verb, cut watches, latency and reset connections (the
//! simulator's own faults, or the proxy's on the real backend), throttled and
//! failing heartbeats, completions, receives and deletes (the peer), replicas killed and
//! restarted mid-drain, nodes killed mid-drain. A "cloud" loop plays EC2: it kills the Node of
//! every instance the group terminated (counting the pods still on it), joins a Node for every
//! replacement, and brings stopped Spot instances back.
//!
//! Printed at the end, one line each (`invariant <name> <value>`), then `soak: …`; exits 1
//! naming the invariants that are not 0.
//!
//! Run: `cargo bench -p termguard --bench soak -- --notices 1000 --seed 1` (also `--backend
//! sim|real`, `--nodes`, `--replicas`, `--interval-ms`). On the real backend:
//! `scripts/cluster.sh up DIR` first, then `TERMGUARD_CLUSTER_DIR=DIR cargo bench … --backend
//! real`. TERMGUARD_LOG=termguard=info shows termguard's logs.

#[path = "common/args.rs"]
mod args;
#[path = "../tests/common/cluster.rs"]
mod cluster;
#[path = "../tests/common/moto.rs"]
mod moto;

use cluster::{Backend, FaultProxy, TestCluster};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_sim::resources::{NODES, PODS};
use kube_sim::scenario::NodeSpec;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use termguard::aws::groups::ClusterTags;
use termguard::cluster::drain::Backoff;
use termguard::commands::run::{QueueMode, Settings};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Options {
    backend: Backend,
    notices: usize,
    seed: u64,
    nodes: usize,
    replicas: usize,
    interval_ms: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut f = args::flags(&[
        "backend",
        "notices",
        "seed",
        "nodes",
        "replicas",
        "interval-ms",
    ])?;
    let backend = match f.remove("backend").as_deref() {
        None | Some("sim") => Backend::Sim,
        Some("real") => Backend::Real,
        Some(other) => anyhow::bail!("--backend {other}: sim or real"),
    };
    let f = args::numbers(f)?;
    let get = |k: &str, d: u64| f.get(k).copied().unwrap_or(d);
    Ok(Options {
        backend,
        notices: get("notices", 1000) as usize,
        seed: get("seed", 1),
        nodes: get("nodes", 24) as usize,
        replicas: get("replicas", 2).max(1) as usize,
        interval_ms: get("interval-ms", 40),
    })
}

const CLUSTER: &str = "soak";
const GROUP: &str = "soak";
const THEIRS: &str = "soak-other";

fn node_name(instance: &str) -> String {
    format!("ip-{}.ec2.internal", instance.trim_start_matches("i-"))
}

/// What the cloud loop and the generator saw.
#[derive(Default)]
struct Record {
    /// Instance → node, for every Node this cluster ever had.
    nodes: HashMap<String, String>,
    /// Instances of ours the group has terminated (their Nodes killed).
    terminated: HashSet<String>,
    /// Workload pods still on a Node when its instance was terminated.
    undrained_pods: Vec<String>,
    /// Nodes killed on purpose mid-drain: their pods could not move, by design.
    chaos_killed: HashSet<String>,
    /// When each was killed, until the taint manager's eviction of its pods.
    killed_at: HashMap<String, Instant>,
    /// Nodes a Spot stop warning was sent for, and whether their drain was seen finished.
    spot_stopped: HashMap<String, bool>,
    /// Nodes whose instance came back (a new boot), with the notice of the drain before.
    returned: HashMap<String, String>,
    /// Instances with a termination in flight (ours), so no two notices overlap on purpose.
    terminating: HashSet<String>,
    /// Message bodies sent, for duplicates.
    bodies: Vec<String>,
    /// Kinds sent.
    kinds: BTreeMap<&'static str, usize>,
    /// Replicas killed and restarted.
    restarts: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_daemon(pod: &Value) -> bool {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| o.iter().any(|r| r["kind"] == "DaemonSet"))
}

/// The cluster of the soak, on either backend, read and changed through the API (the admin
/// client: never faulted), and the faults termguard's requests meet.
struct World {
    cluster: TestCluster,
    /// The fault-injecting proxy in front of kube-apiserver (real backend).
    proxy: Option<FaultProxy>,
}

impl World {
    async fn start(o: &Options, yaml: &str) -> anyhow::Result<World> {
        let proxy = match o.backend {
            Backend::Sim => None,
            Backend::Real => {
                let dir = cluster::real_cluster_dir().ok_or_else(|| {
                    anyhow::anyhow!("--backend real: TERMGUARD_CLUSTER_DIR names no control plane (scripts/cluster.sh up DIR)")
                })?;
                Some(FaultProxy::start(&dir, o.seed).await?)
            }
        };
        let cluster = TestCluster::start(o.backend, yaml).await;
        cluster.settle().await;
        Ok(World { cluster, proxy })
    }

    /// What termguard's replicas connect with: the simulator, or the `termguard` user through
    /// the proxy.
    async fn termguard_config(&self) -> anyhow::Result<kube::Config> {
        match (&self.proxy, self.cluster.sim()) {
            (_, Some(sim)) => Ok(kube::Config::new(sim.url().parse()?)),
            (Some(proxy), None) => {
                let mut kc = kube::config::Kubeconfig::read_from(self.cluster.kubeconfig())?;
                for c in &mut kc.clusters {
                    if let Some(cluster) = c.cluster.as_mut() {
                        cluster.server = Some(proxy.url.clone());
                    }
                }
                Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
            }
            (None, None) => anyhow::bail!("a real backend without its proxy"),
        }
    }

    /// Every Node by name (empty on an error: the callers try again on their next round).
    /// On the simulator, read from its store: its faults are for termguard alone.
    async fn nodes(&self) -> HashMap<String, Value> {
        if let Some(sim) = self.cluster.sim() {
            return sim
                .store
                .list(&NODES, None)
                .0
                .into_iter()
                .filter_map(|n| Some((n["metadata"]["name"].as_str()?.to_string(), (*n).clone())))
                .collect();
        }
        let api: Api<Node> = Api::all(self.cluster.admin.clone());
        match api.list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .iter()
                .filter_map(|n| Some((n.metadata.name.clone()?, serde_json::to_value(n).ok()?)))
                .collect(),
            Err(e) => {
                eprintln!("soak: listing nodes: {e}");
                HashMap::new()
            }
        }
    }

    /// The nodes, retried until a listing succeeds (for the final counts).
    async fn nodes_surely(&self) -> HashMap<String, Value> {
        for _ in 0..20 {
            let n = self.nodes().await;
            if !n.is_empty() {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        HashMap::new()
    }

    /// The pods bound to `node`, or `None` when they could not be listed.
    async fn pods_on(&self, node: &str) -> Option<Vec<Value>> {
        if let Some(sim) = self.cluster.sim() {
            return Some(
                sim.store
                    .list(&PODS, None)
                    .0
                    .into_iter()
                    .filter(|p| p["spec"]["nodeName"] == node)
                    .map(|p| (*p).clone())
                    .collect(),
            );
        }
        let api: Api<Pod> = Api::all(self.cluster.admin.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        match api.list(&lp).await {
            Ok(list) => Some(
                list.items
                    .iter()
                    .filter_map(|p| serde_json::to_value(p).ok())
                    .collect(),
            ),
            Err(e) => {
                eprintln!("soak: listing the pods of {node}: {e}");
                None
            }
        }
    }

    /// The kubelet of the node dies.
    async fn kill(&self, node: &str) -> bool {
        self.cluster.try_kill_node(node).await.is_ok()
    }

    /// The cloud node controller deletes the Node of a terminated instance.
    async fn delete_node(&self, node: &str) {
        if let Some(sim) = self.cluster.sim() {
            let _ = sim.delete_node(node);
            return;
        }
        let api: Api<Node> = Api::all(self.cluster.admin.clone());
        let _ = api.delete(node, &Default::default()).await;
    }

    /// A new instance's kubelet registers its Node.
    async fn join(&self, spec: &NodeSpec) -> bool {
        self.cluster.join_node(spec, "soak").await.is_ok()
    }

    /// The node's kubelet reports a new boot.
    async fn set_boot(&self, node: &str, boot: &str) {
        if let Some(sim) = self.cluster.sim() {
            let _ = sim.store.update(&NODES, "", node, |o| {
                o["status"]["nodeInfo"]["bootID"] = json!(boot);
                Ok(())
            });
            return;
        }
        let api: Api<Node> = Api::all(self.cluster.admin.clone());
        let patch = json!({"status": {"nodeInfo": {"bootID": boot}}});
        let _ = api
            .patch_status(node, &PatchParams::default(), &Patch::Merge(patch))
            .await;
    }

    /// The taint manager deletes a pod of an unreachable node.
    async fn delete_pod(&self, pod: &Value) {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let api: Api<Pod> = Api::namespaced(self.cluster.admin.clone(), ns);
        let _ = api
            .delete(
                pod["metadata"]["name"].as_str().unwrap_or(""),
                &Default::default(),
            )
            .await;
    }

    /// API faults, seeded, on every verb (or none).
    async fn set_faults(&self, seed: u64, on: bool) -> anyhow::Result<()> {
        match (self.cluster.sim(), &self.proxy) {
            (Some(sim), _) => {
                sim.faults.seed(seed);
                sim.faults.set(if on {
                    serde_json::from_value(json!({
                        "verbs": {
                            "get": {"errorRate": 0.03, "errorCode": 503},
                            "list": {"errorRate": 0.03, "errorCode": 500},
                            "patch": {"errorRate": 0.03, "errorCode": 500},
                            "create": {"errorRate": 0.03, "errorCode": 429},
                            "delete": {"errorRate": 0.03, "errorCode": 500},
                            "evict": {"errorRate": 0.05, "errorCode": 429},
                        },
                        "watchCutAfter": 40,
                    }))?
                } else {
                    Default::default()
                });
            }
            (None, Some(proxy)) => {
                let rules = if on {
                    json!([
                        {"verb": "create", "resource": "pods/eviction", "error_rate": 0.05,
                         "error_codes": [429], "retry_after_seconds": 1},
                        {"verb": "watch", "resource": "nodes", "watch_cut_after_ms": [1000, 8000],
                         "watch_cut_rate": 0.5, "watch_cut_mode": "abort"},
                        {"verb": "watch", "watch_cut_after_ms": [1000, 8000], "watch_cut_rate": 0.5},
                        {"verb": "get", "error_rate": 0.03, "error_codes": [503], "reset_rate": 0.005},
                        {"verb": "list", "error_rate": 0.03, "error_codes": [500],
                         "latency_ms": [20, 300], "latency_rate": 0.05},
                        {"verb": "patch", "error_rate": 0.03, "error_codes": [500, 503],
                         "latency_ms": [20, 300], "latency_rate": 0.05, "reset_rate": 0.005},
                        {"verb": "update", "error_rate": 0.03, "error_codes": [500]},
                        {"verb": "create", "error_rate": 0.03, "error_codes": [429, 500],
                         "retry_after_seconds": 1},
                        {"verb": "delete", "error_rate": 0.03, "error_codes": [500], "reset_rate": 0.005},
                    ])
                } else {
                    json!([])
                };
                proxy
                    .control("PUT", "/faults", Some(&json!({"rules": rules}).to_string()))
                    .await?;
            }
            (None, None) => anyhow::bail!("a real backend without its proxy"),
        }
        Ok(())
    }

    /// Faults injected into the cluster API so far.
    async fn injected(&self) -> u64 {
        match (self.cluster.sim(), &self.proxy) {
            (Some(sim), _) => sim.faults.injected(),
            (None, Some(proxy)) => proxy
                .control("GET", "/stats", None)
                .await
                .ok()
                .and_then(|s| s["faults"].as_u64())
                .unwrap_or(0),
            (None, None) => 0,
        }
    }

    /// Pods whose eviction the API server accepted more than once.
    fn evicted_twice(&self) -> usize {
        self.cluster
            .accepted_evictions()
            .values()
            .filter(|n| **n > 1)
            .count()
    }

    fn backend(&self) -> &'static str {
        match self.cluster.backend {
            Backend::Sim => "simulator",
            Backend::Real => "real control plane through faultproxy",
        }
    }
}

fn pod_name(p: &Value) -> String {
    format!(
        "{}/{}",
        p["metadata"]["namespace"].as_str().unwrap_or(""),
        p["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn annotation(n: &Value, key: &str) -> Option<String> {
    n["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

/// One termguard replica.
struct Replica {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn start_replica(
    config: &kube::Config,
    aws: &aws_config::SdkConfig,
    queue: &str,
    id: &str,
) -> anyhow::Result<Replica> {
    let client = termguard::cluster::drain::client(config.clone())?;
    let mut settings = Settings::new(queue, id);
    settings.cluster = ClusterTags::new(Some(CLUSTER), None).map_err(anyhow::Error::msg)?;
    settings.queue.wait_time = Duration::from_secs(2);
    settings.queue.visibility = Duration::from_secs(10);
    settings.queue.extend_every = Duration::from_secs(3);
    settings.queue.shutdown_grace = Duration::from_secs(3);
    settings.returns_every = Duration::from_secs(1);
    settings.eviction_backoff = Some(Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        jitter: 0.3,
    });
    let mode = QueueMode::new(client, aws, settings);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(async move { mode.run(shutdown).await });
    Ok(Replica { stop, task })
}

fn spot_warning(instance: &str, action: &str) -> String {
    let now = jiff::Timestamp::now();
    json!({
        "version": "0", "id": format!("spot-{instance}-{}", now.as_millisecond()),
        "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
        "account": "123456789012", "time": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": "us-east-1", "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": {"instance-id": instance, "instance-action": action},
    })
    .to_string()
}

fn ec2_event(detail_type: &str, instance: &str, detail: Value, ago: Duration) -> String {
    let time = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).unwrap_or_default();
    json!({
        "version": "0", "id": format!("{detail_type}-{instance}-{}", time.as_millisecond()),
        "detail-type": detail_type, "source": "aws.ec2", "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": detail,
    })
    .to_string()
}

fn health_event(instance: &str, status: &str) -> String {
    let start = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(20);
    json!({
        "version": "0", "id": format!("health-{instance}-{status}"),
        "detail-type": "AWS Health Event", "source": "aws.health", "account": "123456789012",
        "time": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "region": "us-east-1",
        "resources": [instance],
        "detail": {
            "service": "EC2", "eventTypeCategory": "scheduledChange",
            "eventTypeCode": "AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED",
            "statusCode": status,
            "startTime": start.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            "affectedEntities": [{"entityValue": instance}],
        },
    })
    .to_string()
}

/// EC2 and the kubelets: Nodes for new instances, dead Nodes for terminated ones, stopped Spot
/// instances started again once drained.
async fn cloud(
    world: Arc<World>,
    moto: Arc<moto::Moto>,
    record: Arc<Mutex<Record>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut known: HashSet<String> = lock(&record).nodes.keys().cloned().collect();
    let mut boots = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let members: Vec<moto::Instance> = moto.instances(GROUP).await;
        let ids: HashSet<String> = members.iter().map(|i| i.id.clone()).collect();
        // Terminated by the group: the instance is gone, and so is whatever still ran on it.
        for gone in known.difference(&ids).cloned().collect::<Vec<_>>() {
            let node = node_name(&gone);
            let chaos = lock(&record).chaos_killed.contains(&node);
            // What still ran when the instance went, read before it is killed (a failed read is
            // tried again on the next round).
            let Some(on_node) = world.pods_on(&node).await else {
                continue;
            };
            known.remove(&gone);
            let left: Vec<String> = on_node
                .iter()
                .filter(|p| !is_daemon(p) && !finished(p))
                .map(pod_name)
                .collect();
            world.kill(&node).await;
            world.delete_node(&node).await;
            let mut r = lock(&record);
            r.terminated.insert(gone.clone());
            r.terminating.remove(&gone);
            if !chaos {
                r.undrained_pods
                    .extend(left.into_iter().map(|p| format!("{p} on {node}")));
            }
        }
        // Replacements join as Ready nodes.
        let joining: Vec<&moto::Instance> =
            members.iter().filter(|i| !known.contains(&i.id)).collect();
        for inst in joining {
            let node = node_name(&inst.id);
            let spec = NodeSpec {
                name: node.clone(),
                zone: inst.zone.clone(),
                instance_id: inst.id.clone(),
                instance_type: "m5.large".into(),
                group: GROUP.into(),
                capacity: Default::default(),
                labels: BTreeMap::new(),
                taints: Vec::new(),
            };
            if world.join(&spec).await {
                known.insert(inst.id.clone());
                lock(&record).nodes.insert(inst.id.clone(), node);
            }
        }
        // The taint manager: pods of a node unreachable for a while (here 20 s, not 300) are
        // deleted through the API; with no kubelet to confirm, they stay Terminating.
        let due: Vec<String> = {
            let mut r = lock(&record);
            let due: Vec<String> = r
                .killed_at
                .iter()
                .filter(|(_, at)| at.elapsed() > Duration::from_secs(20))
                .map(|(n, _)| n.clone())
                .collect();
            for n in &due {
                r.killed_at.remove(n);
            }
            due
        };
        for node in due {
            for p in world.pods_on(&node).await.unwrap_or_default() {
                if !is_daemon(&p) {
                    world.delete_pod(&p).await;
                }
            }
        }
        // A stopped Spot instance starts again once drained: a new boot.
        // (Once per warning: a node whose warning's drain was seen finished is not started again.)
        let stopped: Vec<String> = lock(&record)
            .spot_stopped
            .iter()
            .filter(|(_, seen)| !**seen)
            .map(|(n, _)| n.clone())
            .collect();
        if stopped.is_empty() {
            continue;
        }
        let nodes = world.nodes().await;
        for node in stopped {
            // An instance its group is terminating does not start again.
            let terminating = {
                let r = lock(&record);
                r.nodes.iter().any(|(i, n)| {
                    *n == node && (r.terminating.contains(i) || r.terminated.contains(i))
                })
            };
            if terminating || nodes.is_empty() {
                continue;
            }
            let Some(n) = nodes.get(&node) else {
                lock(&record).spot_stopped.remove(&node);
                continue;
            };
            // Drained, or timed out (a hibernation warning has no warning period: clipped at once).
            let notice = annotation(n, "termguard.io/drain-notice");
            if matches!(
                annotation(n, "termguard.io/drain-phase").as_deref(),
                Some("drained" | "timed-out")
            ) && notice.as_deref().is_some_and(|id| id.starts_with("spot-"))
            {
                boots += 1;
                world.set_boot(&node, &format!("boot-{boots}")).await;
                let mut r = lock(&record);
                r.spot_stopped.insert(node.clone(), true);
                r.returned.insert(node, notice.unwrap_or_default());
            }
        }
    }
}

/// A pod that has run to completion (nothing left to move).
fn finished(p: &Value) -> bool {
    matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    if let Ok(filter) = std::env::var("TERMGUARD_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    println!(
        "chaos soak: {} notices, seed {}, {} nodes, {} replicas, {} backend",
        o.notices,
        o.seed,
        o.nodes,
        o.replicas,
        match o.backend {
            Backend::Sim => "simulator",
            Backend::Real => "real control plane",
        }
    );
    let started = Instant::now();
    let moto = Arc::new(moto::Moto::start().await);
    let ours = moto
        .fleet(
            GROUP,
            o.nodes as i32,
            30,
            &[("termguard.io/cluster", CLUSTER)],
        )
        .await;
    let _theirs = moto
        .fleet_on(
            THEIRS,
            4,
            30,
            &[("termguard.io/cluster", "another-cluster")],
            Some(&ours.queue_url),
        )
        .await;

    let record = Arc::new(Mutex::new(Record::default()));
    let mut yaml =
        String::from("name: soak\ndefaults: {startupMs: 100, shutdownMs: 300}\nnodes:\n");
    for inst in &ours.instances {
        let node = node_name(&inst.id);
        yaml.push_str(&format!(
            "  - {{name: {node}, zone: {}, instanceId: {}, group: {GROUP}}}\n",
            inst.zone, inst.id
        ));
        lock(&record).nodes.insert(inst.id.clone(), node);
    }
    yaml.push_str(&format!(
        "workloads:\n  - {{kind: Deployment, name: web, replicas: {}, terminationGracePeriodSeconds: 5, pdb: {{maxUnavailable: 2}}}}\n  - {{kind: Deployment, name: pooler, replicas: 2, terminationGracePeriodSeconds: 5, annotations: {{termguard.io/drain-order: last}}}}\n  - {{kind: DaemonSet, name: agent, namespace: kube-system, tolerations: [{{operator: Exists}}]}}\n",
        o.nodes * 2
    ));
    let world = Arc::new(World::start(&o, &yaml).await?);
    world.cluster.reset_counts();

    // Faults, seeded: the API server and AWS fail now and then, all along.
    world.set_faults(o.seed, true).await?;
    moto.set_faults(&json!({"seed": o.seed, "rules": [
        {"action": "RecordLifecycleActionHeartbeat", "error_rate": 0.15, "error": "throttling"},
        {"action": "CompleteLifecycleAction", "error_rate": 0.1, "error": "internal"},
        {"action": "DescribeLifecycleHooks", "error_rate": 0.1, "error": "throttling"},
        {"action": "DescribeScalingActivities", "error_rate": 0.1, "error": "unavailable"},
        {"action": "ReceiveMessage", "error_rate": 0.05, "error": "throttling"},
        {"action": "DeleteMessage", "error_rate": 0.05, "error": "unavailable"},
        {"action": "ChangeMessageVisibility", "error_rate": 0.05, "error": "internal"},
    ]}))
    .await;

    let config = world.termguard_config().await?;
    let mut replicas: Vec<Replica> = Vec::new();
    let mut crashed_ok = 0usize;
    for i in 0..o.replicas {
        replicas.push(start_replica(
            &config,
            &moto.aws,
            &ours.queue_url,
            &format!("replica-{i}"),
        )?);
    }
    let (cloud_stop, cloud_rx) = watch::channel(false);
    let cloud_task = tokio::spawn(cloud(world.clone(), moto.clone(), record.clone(), cloud_rx));
    println!(
        "setup: {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        world.backend()
    );

    let mut rng = fastrand::Rng::with_seed(o.seed);
    let mut next_replica = o.replicas;
    let mut sent = 0usize;
    let mut tries = 0usize;
    let (mut last_restart, mut last_kill) = (usize::MAX, usize::MAX);
    while sent < o.notices && tries < o.notices * 20 {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(o.interval_ms)).await;
        // Chaos every so often: a replica killed where it stands and another started; a node
        // killed while its drain runs.
        if sent % 60 == 59 && last_restart != sent {
            last_restart = sent;
            let i = rng.usize(..replicas.len());
            let old = replicas.swap_remove(i);
            old.task.abort();
            if let Err(e) = old.task.await {
                if e.is_panic() {
                    crashed_ok += 1;
                }
            }
            replicas.push(start_replica(
                &config,
                &moto.aws,
                &ours.queue_url,
                &format!("replica-{next_replica}"),
            )?);
            next_replica += 1;
            lock(&record).restarts += 1;
        }
        if sent % 150 == 149 && last_kill != sent {
            last_kill = sent;
            // Sorted: the seed, not the hasher, picks.
            let mut waiting: Vec<String> = lock(&record).terminating.iter().cloned().collect();
            waiting.sort();
            if let Some(inst) = waiting.get(rng.usize(..waiting.len().max(1))).cloned() {
                let node = node_name(&inst);
                if world.kill(&node).await {
                    let mut r = lock(&record);
                    r.killed_at.insert(node.clone(), Instant::now());
                    r.chaos_killed.insert(node);
                }
            }
        }
        // Instances of ours still in service; `schedulable` also not cordoned (a node a Spot
        // warning or maintenance can still take, as opposed to one already drained).
        let nodes = world.nodes().await;
        let mut live: Vec<(String, String)> = {
            let r = lock(&record);
            r.nodes
                .iter()
                .filter(|(i, n)| {
                    !r.terminated.contains(*i)
                        && !r.terminating.contains(*i)
                        && !r.chaos_killed.contains(*n)
                })
                .filter(|(_, n)| nodes.contains_key(*n))
                .map(|(i, n)| (i.clone(), n.clone()))
                .collect()
        };
        live.sort();
        let schedulable: Vec<(String, String)> = live
            .iter()
            .filter(|(_, n)| {
                nodes
                    .get(n)
                    .is_some_and(|o| o["spec"]["unschedulable"] != true)
            })
            .cloned()
            .collect();
        let any = |rng: &mut fastrand::Rng| live.get(rng.usize(..live.len().max(1))).cloned();
        let pick = |rng: &mut fastrand::Rng| {
            schedulable
                .get(rng.usize(..schedulable.len().max(1)))
                .cloned()
        };
        let roll = rng.f64();
        let kind: &'static str = if roll < 0.35 {
            match any(&mut rng) {
                Some((inst, _)) if lock(&record).terminating.len() < o.nodes / 3 => {
                    lock(&record).terminating.insert(inst.clone());
                    let r = moto
                        .asg
                        .terminate_instance_in_auto_scaling_group()
                        .instance_id(&inst)
                        .should_decrement_desired_capacity(false)
                        .send()
                        .await;
                    if r.is_err() {
                        lock(&record).terminating.remove(&inst);
                        continue;
                    }
                    "lifecycle-terminate"
                }
                _ => continue,
            }
        } else if roll < 0.50 {
            let Some((inst, node)) = pick(&mut rng) else {
                continue;
            };
            let action = if rng.bool() { "stop" } else { "hibernate" };
            let body = spot_warning(&inst, action);
            lock(&record).spot_stopped.insert(node, false);
            lock(&record).bodies.push(body.clone());
            moto.send(&ours.queue_url, &body).await;
            "spot-interruption"
        } else if roll < 0.52 {
            let Some((inst, _)) = pick(&mut rng) else {
                continue;
            };
            let body = ec2_event(
                "EC2 Instance Rebalance Recommendation",
                &inst,
                json!({"instance-id": inst}),
                Duration::ZERO,
            );
            moto.send(&ours.queue_url, &body).await;
            "rebalance-recommendation"
        } else if roll < 0.63 {
            // A `stopping` event that comes late, for an instance that has been running since.
            let Some((inst, _)) = pick(&mut rng) else {
                continue;
            };
            let body = ec2_event(
                "EC2 Instance State-change Notification",
                &inst,
                json!({"instance-id": inst, "state": "stopping"}),
                Duration::from_secs(3600),
            );
            moto.send(&ours.queue_url, &body).await;
            "stale-state-change"
        } else if roll < 0.68 {
            let Some((inst, _)) = pick(&mut rng) else {
                continue;
            };
            moto.send(&ours.queue_url, &health_event(&inst, "closed"))
                .await;
            "health-closed"
        } else if roll < 0.80 {
            // The other cluster's terminations, on our queue.
            let members = moto.instances(THEIRS).await;
            let Some(inst) = members.get(rng.usize(..members.len().max(1))).cloned() else {
                continue;
            };
            let _ = moto
                .asg
                .terminate_instance_in_auto_scaling_group()
                .instance_id(&inst.id)
                .should_decrement_desired_capacity(false)
                .send()
                .await;
            "other-cluster"
        } else if roll < 0.92 {
            // A duplicate delivery of an earlier message, or the lifecycle message of a
            // termination in flight.
            let waiting = moto.lifecycle_actions(&format!("group={GROUP}")).await;
            let body = if rng.bool() {
                let w: Vec<&Value> = waiting.iter().filter(|a| a["state"] == "waiting").collect();
                w.get(rng.usize(..w.len().max(1)))
                    .map(|a| a["notification"]["body"].to_string())
            } else {
                let r = lock(&record);
                r.bodies.get(rng.usize(..r.bodies.len().max(1))).cloned()
            };
            let Some(body) = body else { continue };
            moto.send(&ours.queue_url, &body).await;
            "duplicate"
        } else {
            let garbage = ["not json at all", "{\"detail-type\": 7}", "{}", "{\"source\":\"aws.ec2\",\"detail-type\":\"EC2 Spot Instance Interruption Warning\"}"];
            moto.send(&ours.queue_url, garbage[rng.usize(..garbage.len())])
                .await;
            "malformed"
        };
        *lock(&record).kinds.entry(kind).or_default() += 1;
        sent += 1;
    }
    let sent_at = started.elapsed();
    println!(
        "sent: {:?} in {:.1} s",
        lock(&record).kinds,
        sent_at.as_secs_f64()
    );

    // Let the work finish: every action of ours ended, returned instances back in service.
    let settle_by = Instant::now() + Duration::from_secs(240);
    loop {
        let waiting = moto
            .lifecycle_actions(&format!("group={GROUP}"))
            .await
            .iter()
            .filter(|a| a["state"] == "waiting")
            .count();
        // And every Spot warning's node drained (or gone): a warning sent near the end may
        // still be draining past a budget.
        let nodes = world.nodes_surely().await;
        let spot_pending = {
            let r = lock(&record);
            r.spot_stopped
                .iter()
                .filter(|(n, seen)| {
                    !**seen && nodes.contains_key(*n) && !r.chaos_killed.contains(*n)
                })
                .count()
        };
        if (waiting == 0 && spot_pending == 0) || Instant::now() > settle_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    world.set_faults(o.seed, false).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    for r in replicas {
        let _ = r.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(20), r.task).await {
            Ok(Err(e)) if e.is_panic() => crashed_ok += 1,
            Ok(Ok(Err(e))) => eprintln!("a replica stopped with an error: {e:#}"),
            _ => {}
        }
    }
    let _ = cloud_stop.send(true);
    let _ = cloud_task.await;

    // The invariants.
    let actions = moto.lifecycle_actions("").await;
    let ours_actions: Vec<&Value> = actions.iter().filter(|a| a["group"] == GROUP).collect();
    let theirs_actions: Vec<&Value> = actions.iter().filter(|a| a["group"] == THEIRS).collect();
    let expired = ours_actions
        .iter()
        .filter(|a| {
            a["state"] == "expired"
                || (a["state"] != "waiting"
                    && a["ended_by"] != "CompleteLifecycleAction"
                    && a["state"] != "cancelled")
        })
        .count();
    let still_waiting = ours_actions
        .iter()
        .filter(|a| a["state"] == "waiting")
        .count();
    let foreign_completed = theirs_actions
        .iter()
        .filter(|a| a["ended_by"] == "CompleteLifecycleAction")
        .count();
    let (_, deletions) = moto.http("GET", "/_termguard/sqs-deletions", None).await;
    let deletions: Value = serde_json::from_str(&deletions).unwrap_or(Value::Null);
    let mut deleted_early = 0usize;
    let mut foreign_deleted = 0usize;
    let by_token: HashMap<&str, &Value> = actions
        .iter()
        .map(|a| (a["token"].as_str().unwrap_or(""), a))
        .collect();
    for d in deletions["deletions"].as_array().into_iter().flatten() {
        let body = d["body"].as_str().unwrap_or("");
        let Ok(msg) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        let token = msg["detail"]["LifecycleActionToken"]
            .as_str()
            .or(msg["LifecycleActionToken"].as_str())
            .unwrap_or("");
        if let Some(a) = by_token.get(token) {
            if a["group"] == THEIRS {
                foreign_deleted += 1;
            } else if a["ended_at_ms"]
                .as_i64()
                .is_none_or(|end| d["deleted_at_ms"].as_i64().unwrap_or(0) < end)
            {
                deleted_early += 1;
            }
        }
    }
    let aws_injected = {
        let (_, f) = moto.http("GET", "/_termguard/faults", None).await;
        serde_json::from_str::<Value>(&f)
            .ok()
            .and_then(|f| {
                f["injected"]
                    .as_object()
                    .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>())
            })
            .unwrap_or(0)
    };
    let nodes = world.nodes_surely().await;
    let node_obj = |n: &str| nodes.get(n).cloned();
    let mut pods_left: HashMap<String, usize> = HashMap::new();
    for a in ours_actions.iter().filter(|a| a["state"] == "waiting") {
        let node = node_name(a["instance_id"].as_str().unwrap_or(""));
        let n = world.pods_on(&node).await.map_or(0, |p| p.len());
        pods_left.insert(node, n);
    }
    let evicted_twice = world.evicted_twice();
    let api_injected = world.injected().await;
    let r = lock(&record);
    let spot_undrained = r
        .spot_stopped
        .iter()
        .filter(|(n, seen)| !**seen && nodes.contains_key(*n) && !r.chaos_killed.contains(*n))
        .count();
    // Nodes whose instance came back after their drain and that are still cordoned for that
    // drain (not for a later notice's).
    let left_cordoned: Vec<&String> = r
        .returned
        .iter()
        .filter(|(n, notice)| {
            node_obj(n).is_some_and(|o| {
                o["spec"]["unschedulable"] == true
                    && annotation(&o, "termguard.io/drain-notice").as_ref() == Some(*notice)
            })
        })
        .map(|(n, _)| n)
        .collect();
    let cordoned_after_return = left_cordoned.len();
    for n in left_cordoned.iter().take(10) {
        let o = node_obj(n).unwrap_or_default();
        let a = &o["metadata"]["annotations"];
        println!(
            "  left cordoned after its instance came back: {n} (boot {} recorded {}, phase {}, finished {}, owner {}, ready {})",
            o["status"]["nodeInfo"]["bootID"], a["termguard.io/drain-boot-id"],
            a["termguard.io/drain-phase"], a["termguard.io/drain-finished"], a["termguard.io/drain-owner"],
            o["status"]["conditions"].as_array().into_iter().flatten()
                .find(|c| c["type"] == "Ready").map_or(Value::Null, |c| c.clone())
        );
    }
    let injected = api_injected + aws_injected + r.restarts as u64 + r.chaos_killed.len() as u64;
    let invariants: Vec<(&str, usize)> = vec![
        (
            "instances-terminated-with-pods-that-could-still-move",
            r.undrained_pods.len(),
        ),
        (
            "lifecycle-actions-expired-into-their-default-result",
            expired,
        ),
        ("other-cluster-actions-completed-by-us", foreign_completed),
        ("other-cluster-messages-deleted-by-us", foreign_deleted),
        ("messages-lost", still_waiting + spot_undrained),
        ("messages-deleted-before-their-work-was-done", deleted_early),
        (
            "nodes-left-cordoned-after-their-instance-returned",
            cordoned_after_return,
        ),
        ("pods-evicted-twice", evicted_twice),
        ("process-crashes", crashed_ok),
    ];
    for p in r.undrained_pods.iter().take(10) {
        println!("  undrained: {p}");
    }
    for a in ours_actions.iter().filter(|a| a["state"] == "waiting") {
        let node = node_name(a["instance_id"].as_str().unwrap_or(""));
        let o = node_obj(&node).unwrap_or_default();
        println!(
            "  still waiting: {} on {node} (heartbeats {}, phase {:?}, owner {:?}, notice {:?}, cordoned {}, pods {}, chaos {})",
            a["token"], a["heartbeat_count"],
            annotation(&o, "termguard.io/drain-phase"),
            annotation(&o, "termguard.io/drain-owner"),
            annotation(&o, "termguard.io/drain-notice"),
            o["spec"]["unschedulable"],
            pods_left.get(&node).copied().unwrap_or(0),
            r.chaos_killed.contains(&node)
        );
    }
    for (n, _) in r
        .spot_stopped
        .iter()
        .filter(|(n, seen)| !**seen && nodes.contains_key(*n))
        .take(10)
    {
        let o = node_obj(n).unwrap_or_default();
        println!(
            "  spot warning not drained for: {n} (phase {:?}, notice {:?}, cordoned {})",
            annotation(&o, "termguard.io/drain-phase"),
            annotation(&o, "termguard.io/drain-notice"),
            o["spec"]["unschedulable"]
        );
    }
    for (name, value) in &invariants {
        println!("invariant {name} {value}");
    }
    println!(
        "figures: {} lifecycle actions of ours ({} waiting at the end), {} of the other cluster, {} instances terminated, {} replaced, {} returned, {} replica restarts, {} nodes killed mid-drain, {} SQS deletions, {:.0} s",
        ours_actions.len(),
        still_waiting,
        theirs_actions.len(),
        r.terminated.len(),
        r.nodes.len().saturating_sub(o.nodes),
        r.returned.len(),
        r.restarts,
        r.chaos_killed.len(),
        deletions["deletions"].as_array().map_or(0, Vec::len),
        started.elapsed().as_secs_f64()
    );
    println!(
        "command: cargo bench -p termguard --bench soak -- --backend {} --notices {} --seed {} --nodes {} --replicas {} --interval-ms {}",
        match o.backend {
            Backend::Sim => "sim",
            Backend::Real => "real",
        },
        o.notices, o.seed, o.nodes, o.replicas, o.interval_ms
    );
    let bad: Vec<&str> = invariants
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(n, _)| *n)
        .collect();
    if bad.is_empty() {
        println!(
            "soak: {} notices, {injected} faults injected, every invariant 0",
            o.notices
        );
        Ok(())
    } else {
        println!(
            "soak: {} notices, {injected} faults injected, NOT 0: {}",
            o.notices,
            bad.join(", ")
        );
        std::process::exit(1);
    }
}
