//! Drives the real kubectl 1.32 (`/usr/bin/kubectl`) against an in-process simulator and
//! checks what it prints: the simulator is only useful if kubectl behaves against it the way
//! it does against a real API server (`docs/simulator.md#what-it-serves`,
//! `docs/simulator.md#client-pitfalls-it-reproduces`).
//!
//! Every test starts its own simulator on a free loopback port, writes a kubeconfig into a
//! private temporary directory and passes `--cache-dir` so kubectl's discovery cache is never
//! shared between simulators. Conditions are waited for by polling with generous timeouts;
//! nothing asserts on wall-clock speed.

use kube_sim::ops::{self, DeleteOptions};
use kube_sim::resources::{CONFIGMAPS, DAEMONSETS, DEPLOYMENTS, NODES, PDBS, PODS};
use kube_sim::scenario::Scenario;
use kube_sim::Sim;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Upper bound for one kubectl invocation, so a hang fails the test instead of blocking it.
const KUBECTL_HANG_GUARD: Duration = Duration::from_secs(300);
/// How long to wait for the simulated cluster to reach a condition.
const SETTLE: Duration = Duration::from_secs(120);

const NODE_A: &str = "ip-10-0-1-10.ec2.internal";
const NODE_B: &str = "ip-10-0-2-10.ec2.internal";
const NODE_C: &str = "ip-10-0-3-10.ec2.internal";

/// Three nodes over three zones, a Deployment with a PDB, a DaemonSet and a bare pod.
const BASIC: &str = r#"
name: kubectl-basic
defaults: {startupMs: 100, shutdownMs: 100}
nodes:
  - {name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}
  - {name: ip-10-0-2-10.ec2.internal, zone: us-east-1b}
  - {name: ip-10-0-3-10.ec2.internal, zone: us-east-1c}
workloads:
  - {kind: Deployment, name: web, replicas: 3, pdb: {maxUnavailable: 1}}
  - {kind: DaemonSet, name: agent, namespace: kube-system, tolerations: [{operator: Exists}]}
  - {kind: Pod, name: debug, node: ip-10-0-1-10.ec2.internal}
"#;

/// What a drain has to deal with: a Deployment behind a PDB, one with emptyDir volumes, and
/// DaemonSet pods on every node.
const DRAIN: &str = r#"
name: kubectl-drain
defaults: {startupMs: 100, shutdownMs: 100}
nodes:
  - {name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}
  - {name: ip-10-0-2-10.ec2.internal, zone: us-east-1b}
  - {name: ip-10-0-3-10.ec2.internal, zone: us-east-1c}
workloads:
  - {kind: Deployment, name: web, replicas: 3, pdb: {maxUnavailable: 1}}
  - {kind: Deployment, name: cache, replicas: 2, emptyDir: true}
  - {kind: DaemonSet, name: agent, namespace: kube-system, tolerations: [{operator: Exists}]}
"#;

/// A PDB that allows no disruption at all: two replicas, minAvailable 2.
const BLOCKED: &str = r#"
name: kubectl-drain-blocked
defaults: {startupMs: 100, shutdownMs: 100}
nodes:
  - {name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}
  - {name: ip-10-0-2-10.ec2.internal, zone: us-east-1b}
workloads:
  - {kind: Deployment, name: guarded, replicas: 2, pdb: {minAvailable: 2}}
  - {kind: DaemonSet, name: agent, namespace: kube-system, tolerations: [{operator: Exists}]}
"#;

/// The kubectl binary: `/usr/bin/kubectl`, else the first `kubectl` on PATH. Panics (fails
/// the test) when there is none: these tests exist to run the real client.
fn kubectl_bin() -> PathBuf {
    let fixed = Path::new("/usr/bin/kubectl");
    if fixed.is_file() {
        return fixed.to_path_buf();
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("kubectl");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "kubectl not found at /usr/bin/kubectl or on PATH: these integration tests drive the \
         real kubectl 1.32 and cannot run without it"
    );
}

/// One kubectl run.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A simulator plus a private directory holding its kubeconfig and kubectl's cache.
struct Env {
    sim: Sim,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

impl Env {
    async fn start(yaml: &str, test: &str) -> Env {
        let scenario = Scenario::from_yaml(yaml).expect("scenario parses");
        let sim = Sim::start(&scenario, "127.0.0.1:0".parse().expect("address"))
            .await
            .expect("simulator starts");
        let dir = std::env::temp_dir().join(format!(
            "kube-sim-kubectl-{}-{}-{}",
            std::process::id(),
            test,
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kubeconfig = dir.join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let env = Env {
            sim,
            dir,
            kubeconfig,
        };
        env.settle().await;
        env
    }

    /// Waits until every workload is at its scale with every pod Running and Ready.
    async fn settle(&self) {
        assert!(
            self.sim.wait_settled(SETTLE).await,
            "the simulated cluster did not settle within {SETTLE:?}; pods:\n{}",
            self.pods_summary()
        );
    }

    /// A kubectl command with this simulator's kubeconfig and a private cache directory.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_bin());
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl to completion.
    async fn kubectl(&self, args: &[&str]) -> Out {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", kubectl_bin().display()));
        let output = tokio::time::timeout(KUBECTL_HANG_GUARD, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} hung for {KUBECTL_HANG_GUARD:?}"))
            .expect("kubectl output");
        Out {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs kubectl and requires exit status 0.
    async fn kubectl_ok(&self, args: &[&str]) -> Out {
        let out = self.kubectl(args).await;
        assert!(out.ok(), "kubectl {args:?} failed:\n{out}");
        out
    }

    fn pods(&self) -> Vec<Arc<Value>> {
        self.sim.store.list(&PODS, None).0
    }

    fn pods_summary(&self) -> String {
        self.pods()
            .iter()
            .map(|p| {
                format!(
                    "{}/{} node={} phase={} terminating={} ready={}",
                    ns_of(p),
                    name_of(p),
                    node_of(p),
                    p["status"]["phase"].as_str().unwrap_or("?"),
                    p["metadata"]["deletionTimestamp"].is_string(),
                    is_ready(p)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Pods bound to `node` that are not finished.
    fn pods_on(&self, node: &str) -> Vec<Arc<Value>> {
        self.pods()
            .into_iter()
            .filter(|p| node_of(p) == node)
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .collect()
    }

    /// Pods of a Deployment (through its ReplicaSet), by the workload's `app` label.
    fn deployment_pods(&self, app: &str) -> Vec<Arc<Value>> {
        self.pods()
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .filter(|p| owner_kind(p) == Some("ReplicaSet"))
            .collect()
    }

    /// Polls `cond` until it holds; fails the test with `what` and the pod list otherwise.
    async fn wait_for(&self, what: &str, mut cond: impl FnMut(&Env) -> bool) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            if cond(self) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {SETTLE:?} waiting for {what}; pods:\n{}",
                    self.pods_summary()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

fn ns_of(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

fn owner_kind(pod: &Value) -> Option<&str> {
    pod["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)?["kind"]
        .as_str()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

fn is_running_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && is_ready(pod)
        && !pod["metadata"]["deletionTimestamp"].is_string()
}

/// The whitespace-separated cells of the table row whose cell `col` is `key`.
fn row<'a>(table: &'a str, col: usize, key: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(col) == Some(&key))
}

fn header(table: &str) -> Vec<&str> {
    table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_nodes_and_wide_pods_print_server_side_columns() {
    let env = Env::start(BASIC, "get").await;

    let out = env.kubectl_ok(&["get", "nodes"]).await;
    assert_eq!(
        header(&out.stdout),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{out}"
    );
    let nodes = env.sim.store.list(&NODES, None).0;
    assert_eq!(nodes.len(), 3);
    for n in &nodes {
        let cells = row(&out.stdout, 0, name_of(n))
            .unwrap_or_else(|| panic!("no row for node {} in:\n{out}", name_of(n)));
        assert_eq!(cells[1], "Ready", "{out}");
        assert_eq!(cells[2], "<none>", "{out}");
        assert_eq!(
            cells[4],
            n["status"]["nodeInfo"]["kubeletVersion"].as_str().unwrap(),
            "{out}"
        );
    }
    assert_eq!(out.stdout.lines().count(), 1 + nodes.len(), "{out}");

    let out = env.kubectl_ok(&["get", "pods", "-A", "-o", "wide"]).await;
    let head = header(&out.stdout);
    assert_eq!(
        head[..8],
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE"
        ],
        "{out}"
    );
    let pods = env.pods();
    // web ×3, agent ×3, debug.
    assert_eq!(pods.len(), 7, "{}", env.pods_summary());
    for p in &pods {
        assert!(is_running_ready(p), "{}", env.pods_summary());
        let cells = row(&out.stdout, 1, name_of(p))
            .unwrap_or_else(|| panic!("no row for pod {} in:\n{out}", name_of(p)));
        assert_eq!(cells[0], ns_of(p), "NAMESPACE column:\n{out}");
        assert_eq!(cells[2], "1/1", "{out}");
        assert_eq!(cells[3], "Running", "{out}");
        assert_eq!(cells[6], p["status"]["podIP"].as_str().unwrap(), "{out}");
        assert_ne!(cells[6], "<none>", "{out}");
        assert_eq!(cells[7], node_of(p), "{out}");
        assert!(
            [NODE_A, NODE_B, NODE_C].contains(&cells[7]),
            "pod on an unknown node:\n{out}"
        );
    }
    assert_eq!(out.stdout.lines().count(), 1 + pods.len(), "{out}");
    assert!(
        out.stdout.contains("kube-system"),
        "DaemonSet pods are listed with -A:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_and_uncordon_toggle_scheduling_disabled() {
    let env = Env::start(BASIC, "cordon").await;

    let out = env.kubectl_ok(&["cordon", NODE_B]).await;
    assert_eq!(
        out.stdout.trim(),
        format!("node/{NODE_B} cordoned"),
        "{out}"
    );
    let node = env.sim.store.get(&NODES, "", NODE_B).expect("node");
    assert_eq!(node["spec"]["unschedulable"], true);

    let out = env.kubectl_ok(&["get", "nodes"]).await;
    let cells = row(&out.stdout, 0, NODE_B).expect("cordoned node row");
    assert_eq!(cells[1], "Ready,SchedulingDisabled", "{out}");
    for other in [NODE_A, NODE_C] {
        let cells = row(&out.stdout, 0, other).expect("node row");
        assert_eq!(cells[1], "Ready", "{out}");
    }

    let out = env.kubectl_ok(&["cordon", NODE_B]).await;
    assert_eq!(
        out.stdout.trim(),
        format!("node/{NODE_B} already cordoned"),
        "{out}"
    );

    let out = env.kubectl_ok(&["uncordon", NODE_B]).await;
    assert_eq!(
        out.stdout.trim(),
        format!("node/{NODE_B} uncordoned"),
        "{out}"
    );
    let node = env.sim.store.get(&NODES, "", NODE_B).expect("node");
    let spec = node["spec"].as_object().expect("node spec is an object");
    assert!(
        !spec.contains_key("unschedulable"),
        "uncordon sends unschedulable:null, which must remove the key: {spec:?}"
    );
    assert!(
        spec.contains_key("providerID"),
        "the patch kept the rest of the spec"
    );

    let out = env.kubectl_ok(&["get", "nodes"]).await;
    let cells = row(&out.stdout, 0, NODE_B).expect("node row");
    assert_eq!(cells[1], "Ready", "{out}");

    let out = env.kubectl_ok(&["uncordon", NODE_B]).await;
    assert_eq!(
        out.stdout.trim(),
        format!("node/{NODE_B} already uncordoned"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_evicts_pods_which_are_recreated_on_other_nodes() {
    let env = Env::start(DRAIN, "drain").await;

    // Drain the node with the most Deployment pods (the scheduler spreads them, so every
    // node has some; pick deterministically among the busiest).
    let deployment_pods = |env: &Env, node: &str| {
        env.pods_on(node)
            .iter()
            .filter(|p| owner_kind(p) == Some("ReplicaSet"))
            .count()
    };
    let node = [NODE_A, NODE_B, NODE_C]
        .into_iter()
        .max_by_key(|n| deployment_pods(&env, n))
        .unwrap();
    let before = env.pods_on(node);
    let evictable: Vec<Arc<Value>> = before
        .iter()
        .filter(|p| owner_kind(p) == Some("ReplicaSet"))
        .cloned()
        .collect();
    let ds_pods: Vec<Arc<Value>> = before
        .iter()
        .filter(|p| owner_kind(p) == Some("DaemonSet"))
        .cloned()
        .collect();
    assert!(!evictable.is_empty(), "{}", env.pods_summary());
    assert_eq!(ds_pods.len(), 1, "{}", env.pods_summary());
    env.sim.faults.reset_counts();

    let out = env
        .kubectl(&[
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=60s",
        ])
        .await;
    assert!(out.ok(), "drain failed:\n{out}");
    let all = out.all();
    assert!(all.contains(&format!("node/{node} cordoned")), "{out}");
    assert!(
        all.contains(&format!(
            "Warning: ignoring DaemonSet-managed Pods: kube-system/{}",
            name_of(&ds_pods[0])
        )),
        "{out}"
    );
    for p in &evictable {
        let (ns, name) = (ns_of(p), name_of(p));
        assert!(
            all.contains(&format!("evicting pod {ns}/{name}")),
            "no 'evicting pod {ns}/{name}':\n{out}"
        );
        assert!(
            all.contains(&format!("pod/{name} evicted")),
            "no 'pod/{name} evicted':\n{out}"
        );
    }
    assert!(
        out.stdout.contains(&format!("node/{node} drained")),
        "{out}"
    );
    assert!(
        !all.contains("deleting pod") && !all.contains(" deleted"),
        "drain must evict, not delete:\n{out}"
    );

    // kubectl used the eviction subresource (pods/eviction is in discovery), not DELETE.
    let counts = env.sim.faults.counts();
    let evictions = counts.get("evict").copied().unwrap_or(0);
    assert!(
        evictions >= evictable.len() as u64,
        "expected at least {} evictions, request counts: {counts:?}",
        evictable.len()
    );
    assert_eq!(
        counts.get("delete").copied().unwrap_or(0),
        0,
        "drain deleted pods instead of evicting them: {counts:?}"
    );

    // The evicted pods are gone; their replacements run on the other nodes.
    let node_s = node.to_string();
    env.wait_for(
        "every Deployment back at full Ready scale off the drained node",
        |env| {
            ["web", "cache"].iter().all(|app| {
                let pods = env.deployment_pods(app);
                let want = if *app == "web" { 3 } else { 2 };
                pods.iter().all(|p| node_of(p) != node_s)
                    && pods.iter().filter(|p| is_running_ready(p)).count() == want
                    && pods.len() == want
            })
        },
    )
    .await;
    for p in &evictable {
        assert!(
            env.pods().iter().all(|q| uid_of(q) != uid_of(p)),
            "evicted pod {} still exists",
            name_of(p)
        );
    }
    env.wait_for("Deployment status to report full readiness", |env| {
        env.sim
            .store
            .list(&DEPLOYMENTS, None)
            .0
            .iter()
            .all(|d| d["status"]["readyReplicas"] == d["spec"]["replicas"])
    })
    .await;
    // The DaemonSet pod stays: drain ignores it.
    assert!(env
        .pods_on(node)
        .iter()
        .any(|p| uid_of(p) == uid_of(&ds_pods[0])));
    let n = env.sim.store.get(&NODES, "", node).expect("node");
    assert_eq!(
        n["spec"]["unschedulable"], true,
        "a drained node stays cordoned"
    );
    let ds = env
        .sim
        .store
        .get(&DAEMONSETS, "kube-system", "agent")
        .expect("daemonset");
    assert_eq!(ds["status"]["numberReady"], 3);

    let out = env.kubectl_ok(&["get", "nodes"]).await;
    let cells = row(&out.stdout, 0, node).expect("node row");
    assert_eq!(cells[1], "Ready,SchedulingDisabled", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_blocked_by_pdb_reports_budget_error_and_times_out() {
    let env = Env::start(BLOCKED, "blocked").await;
    env.wait_for("the PDB to be observed with 2 healthy pods", |env| {
        let pdb = env.sim.store.get(&PDBS, "default", "guarded");
        pdb.is_some_and(|p| {
            p["status"]["currentHealthy"] == 2 && p["status"]["disruptionsAllowed"] == 0
        })
    })
    .await;
    let guarded = env.deployment_pods("guarded");
    assert_eq!(guarded.len(), 2, "{}", env.pods_summary());
    let node = node_of(&guarded[0]).to_string();
    let on_node: Vec<Arc<Value>> = guarded
        .iter()
        .filter(|p| node_of(p) == node)
        .cloned()
        .collect();

    let out = env
        .kubectl(&[
            "drain",
            &node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=8s",
        ])
        .await;
    assert!(!out.ok(), "a drain blocked by a PDB must fail:\n{out}");
    assert!(
        out.stderr
            .contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{out}"
    );
    assert!(out.stderr.contains("global timeout reached"), "{out}");
    for p in &on_node {
        assert!(
            out.all()
                .contains(&format!("evicting pod default/{}", name_of(p))),
            "{out}"
        );
    }
    assert!(!out.stdout.contains("drained"), "{out}");
    assert!(
        env.sim.faults.counts().get("evict").copied().unwrap_or(0) > 0,
        "kubectl used evictions"
    );

    // The guarded pods were not touched.
    for p in &on_node {
        let now = env
            .sim
            .store
            .get(&PODS, "default", name_of(p))
            .unwrap_or_else(|| panic!("pod {} is gone", name_of(p)));
        assert_eq!(uid_of(&now), uid_of(p));
        assert_eq!(node_of(&now), node);
        assert!(is_running_ready(&now), "pod {} was disrupted", name_of(p));
    }
    let pdb = env.sim.store.get(&PDBS, "default", "guarded").expect("pdb");
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0);
    assert_eq!(pdb["status"]["currentHealthy"], 2);
    let n = env.sim.store.get(&NODES, "", &node).expect("node");
    assert_eq!(
        n["spec"]["unschedulable"], true,
        "the node stays cordoned after a failed drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_pod_waits_for_deletion_and_missing_pod_is_not_found() {
    let env = Env::start(BASIC, "delete").await;
    let before = env
        .sim
        .store
        .get(&PODS, "default", "debug")
        .expect("bare pod");
    assert!(is_running_ready(&before));

    let out = env
        .kubectl_ok(&["delete", "pod", "debug", "--grace-period=1"])
        .await;
    assert_eq!(out.stdout.trim(), r#"pod "debug" deleted"#, "{out}");
    // kubectl returns only after the watch delivered DELETED: the pod is already gone.
    assert!(
        env.sim.store.get(&PODS, "default", "debug").is_none(),
        "pod still in the store after kubectl delete returned"
    );

    let out = env.kubectl(&["delete", "pod", "nope"]).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(
        out.stderr.trim(),
        r#"Error from server (NotFound): pods "nope" not found"#,
        "{out}"
    );
    assert!(out.stdout.trim().is_empty(), "{out}");

    // A Deployment pod is replaced after its deletion.
    let web = env.deployment_pods("web");
    let victim = name_of(&web[0]).to_string();
    let out = env
        .kubectl_ok(&["delete", "pod", &victim, "--grace-period=1"])
        .await;
    assert_eq!(
        out.stdout.trim(),
        format!("pod \"{victim}\" deleted"),
        "{out}"
    );
    assert!(env.sim.store.get(&PODS, "default", &victim).is_none());
    env.wait_for("the Deployment to replace the deleted pod", |env| {
        let pods = env.deployment_pods("web");
        pods.len() == 3
            && pods.iter().all(|p| is_running_ready(p))
            && pods.iter().all(|p| name_of(p) != victim)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pods_watch_prints_terminating_and_replacement() {
    let env = Env::start(BASIC, "watch").await;
    let initial: Vec<String> = env
        .deployment_pods("web")
        .iter()
        .map(|p| name_of(p).to_string())
        .collect();
    assert_eq!(initial.len(), 3);

    let mut cmd = env.command(&["get", "pods", "--watch"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl get --watch starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen: Vec<String> = Vec::new();

    // Reads lines until one satisfies `pred`; fails with everything seen so far otherwise.
    async fn read_until(
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        seen: &mut Vec<String>,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let next = tokio::time::timeout_at(deadline, lines.next_line()).await;
            match next {
                Ok(Ok(Some(line))) => {
                    seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Ok(Ok(None)) => panic!(
                    "kubectl get --watch ended before {what}; output:\n{}",
                    seen.join("\n")
                ),
                Ok(Err(e)) => panic!("reading kubectl output: {e}"),
                Err(_) => panic!(
                    "no line with {what} after {SETTLE:?}; output:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }

    let head = read_until(&mut lines, &mut seen, "the table header", |l| {
        l.starts_with("NAME")
    })
    .await;
    assert_eq!(
        head.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    // The initial list: every default-namespace pod, Running.
    let mut listed = Vec::new();
    while listed.len() < initial.len() + 1 {
        let line = read_until(&mut lines, &mut seen, "the initial rows", |_| true).await;
        let cells: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        assert_eq!(cells[2], "Running", "{}", seen.join("\n"));
        listed.push(cells[0].clone());
    }
    for name in initial.iter().chain(std::iter::once(&"debug".to_string())) {
        assert!(listed.contains(name), "{name} not listed: {listed:?}");
    }

    // Delete one pod through the API: the watch shows it Terminating, then the replacement.
    let victim = initial[0].clone();
    ops::delete(
        &env.sim.store,
        &PODS,
        "default",
        &victim,
        &DeleteOptions {
            grace_period_seconds: Some(1),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("deleting {victim}: {e:?}"));
    read_until(&mut lines, &mut seen, "the victim Terminating", |l| {
        let cells: Vec<&str> = l.split_whitespace().collect();
        cells.first() == Some(&victim.as_str()) && cells.get(2) == Some(&"Terminating")
    })
    .await;
    let replacement = read_until(&mut lines, &mut seen, "a replacement web pod", |l| {
        let name = l.split_whitespace().next().unwrap_or("");
        name.starts_with("web-") && !initial.iter().any(|i| i == name)
    })
    .await;
    let replacement = replacement
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    // The replacement comes up: the watch keeps printing its progress.
    read_until(&mut lines, &mut seen, "the replacement Running", |l| {
        let cells: Vec<&str> = l.split_whitespace().collect();
        cells.first() == Some(&replacement.as_str())
            && cells.get(1) == Some(&"1/1")
            && cells.get(2) == Some(&"Running")
    })
    .await;

    // kubectl is still watching (a server-closed stream would make it exit 0;
    // `docs/simulator.md#client-pitfalls-it-reproduces`).
    assert!(
        child.try_wait().expect("child status").is_none(),
        "kubectl get --watch exited early; output:\n{}",
        seen.join("\n")
    );
    child.kill().await.expect("stopping kubectl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_node_shows_unschedulable_and_its_pods() {
    let env = Env::start(BASIC, "describe").await;
    let out = env.kubectl_ok(&["describe", "node", NODE_A]).await;
    assert!(
        out.stdout
            .contains(&format!("Name:               {NODE_A}")),
        "{out}"
    );
    let unsched = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Unschedulable:"))
        .unwrap_or_else(|| panic!("no Unschedulable: line:\n{out}"));
    assert_eq!(
        unsched.split_whitespace().collect::<Vec<_>>(),
        ["Unschedulable:", "false"]
    );
    assert!(out.stdout.contains("Non-terminated Pods:"), "{out}");
    let pods = env.pods_on(NODE_A);
    assert!(pods.len() >= 2, "{}", env.pods_summary());
    for p in &pods {
        assert!(
            out.stdout.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.first() == Some(&ns_of(p)) && cells.get(1) == Some(&name_of(p))
            }),
            "pod {}/{} not in describe output:\n{out}",
            ns_of(p),
            name_of(p)
        );
    }
    assert!(
        out.stdout.contains(&format!("({} in total)", pods.len())),
        "{out}"
    );
    assert!(out.stdout.contains("ProviderID:"), "{out}");

    // Cordoned, describe says so.
    env.kubectl_ok(&["cordon", NODE_A]).await;
    let out = env.kubectl_ok(&["describe", "node", NODE_A]).await;
    let unsched = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Unschedulable:"))
        .unwrap_or_else(|| panic!("no Unschedulable: line:\n{out}"));
    assert_eq!(
        unsched.split_whitespace().collect::<Vec<_>>(),
        ["Unschedulable:", "true"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pdb_and_pod_json() {
    let env = Env::start(BASIC, "pdb").await;
    env.wait_for("the PDB to allow one disruption", |env| {
        env.sim
            .store
            .get(&PDBS, "default", "web")
            .is_some_and(|p| p["status"]["disruptionsAllowed"] == 1)
    })
    .await;

    let out = env.kubectl_ok(&["get", "pdb", "-A"]).await;
    let first = out.stdout.lines().next().unwrap_or("");
    assert!(first.contains("ALLOWED DISRUPTIONS"), "{out}");
    assert_eq!(
        header(&out.stdout),
        [
            "NAMESPACE",
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ],
        "{out}"
    );
    let cells = row(&out.stdout, 1, "web").unwrap_or_else(|| panic!("no web PDB row:\n{out}"));
    assert_eq!(cells[..5], ["default", "web", "N/A", "1", "1"], "{out}");

    let name = name_of(&env.deployment_pods("web")[0]).to_string();
    let out = env.kubectl_ok(&["get", "pod", &name, "-o", "json"]).await;
    let pod: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("-o json is not JSON ({e}):\n{out}"));
    assert_eq!(pod["metadata"]["name"], name.as_str());
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["apiVersion"], "v1");
    assert_eq!(pod["status"]["phase"], "Running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_apply_configmap() {
    let env = Env::start(BASIC, "apply").await;
    let v1 = env.dir.join("cm-v1.yaml");
    let v2 = env.dir.join("cm-v2.yaml");
    std::fs::write(
        &v1,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  namespace: default\ndata:\n  a: \"1\"\n",
    )
    .expect("manifest");
    std::fs::write(
        &v2,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  namespace: default\ndata:\n  a: \"2\"\n  b: \"3\"\n",
    )
    .expect("manifest");

    let out = env
        .kubectl_ok(&["create", "-f", v1.to_str().expect("utf-8 path")])
        .await;
    assert_eq!(out.stdout.trim(), "configmap/cm1 created", "{out}");
    let cm = env
        .sim
        .store
        .get(&CONFIGMAPS, "default", "cm1")
        .expect("configmap stored");
    assert_eq!(cm["data"]["a"], "1");

    let out = env
        .kubectl(&["create", "-f", v1.to_str().expect("utf-8 path")])
        .await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr
            .contains(r#"Error from server (AlreadyExists): error when creating"#)
            && out.stderr.contains(r#"configmaps "cm1" already exists"#),
        "{out}"
    );

    let out = env
        .kubectl_ok(&["apply", "-f", v2.to_str().expect("utf-8 path")])
        .await;
    assert_eq!(out.stdout.trim(), "configmap/cm1 configured", "{out}");
    let cm = env
        .sim
        .store
        .get(&CONFIGMAPS, "default", "cm1")
        .expect("configmap stored");
    assert_eq!(cm["data"]["a"], "2");
    assert_eq!(cm["data"]["b"], "3");
    assert!(
        cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string(),
        "apply records its last-applied configuration: {cm}"
    );

    let out = env
        .kubectl_ok(&["apply", "-f", v2.to_str().expect("utf-8 path")])
        .await;
    assert_eq!(out.stdout.trim(), "configmap/cm1 unchanged", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_subresources_are_not_found_rather_than_the_parent_object() {
    let env = Env::start(BASIC, "subresources").await;

    // pods/log is not simulated: kubectl must get the generic 404, not print the Pod as logs.
    let out = env.kubectl(&["logs", "debug"]).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains(
            "Error from server (NotFound): the server could not find the requested resource"
        ),
        "{out}"
    );
    assert!(!out.stdout.contains("\"kind\""), "{out}");

    // deployments/scale is not simulated either: the scale must fail without touching the
    // Deployment (a patch routed to the parent object would change spec.replicas).
    let out = env
        .kubectl(&["scale", "deployment", "web", "--replicas=5"])
        .await;
    assert!(!out.ok(), "{out}");
    let d = env
        .sim
        .store
        .get(&DEPLOYMENTS, "default", "web")
        .expect("deployment");
    assert_eq!(d["spec"]["replicas"], 3, "{out}");

    // The served subresources still work.
    let out = env
        .kubectl_ok(&["get", "--raw", &format!("/api/v1/nodes/{NODE_A}/status")])
        .await;
    let node: Value = serde_json::from_str(&out.stdout).expect("node JSON");
    assert_eq!(node["metadata"]["name"], NODE_A);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_with_disable_eviction_deletes_pods_with_protobuf_delete_options() {
    // kubectl drain's delete path (also its fallback when pods/eviction is not in discovery)
    // goes through the typed clientset, which sends DeleteOptions as protobuf.
    let env = Env::start(DRAIN, "disable-eviction").await;
    let node = NODE_C;
    let deletable: Vec<Arc<Value>> = env
        .pods_on(node)
        .into_iter()
        .filter(|p| owner_kind(p) == Some("ReplicaSet"))
        .collect();
    assert!(!deletable.is_empty(), "{}", env.pods_summary());
    env.sim.faults.reset_counts();

    let out = env
        .kubectl(&[
            "drain",
            node,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--disable-eviction",
            "--grace-period=1",
            "--timeout=60s",
        ])
        .await;
    assert!(out.ok(), "drain --disable-eviction failed:\n{out}");
    for p in &deletable {
        assert!(
            out.all().contains(&format!("pod/{} deleted", name_of(p))),
            "{out}"
        );
    }
    assert!(
        out.stdout.contains(&format!("node/{node} drained")),
        "{out}"
    );
    let counts = env.sim.faults.counts();
    assert_eq!(counts.get("evict"), None, "{counts:?}");
    assert!(
        counts.get("delete").copied().unwrap_or(0) >= deletable.len() as u64,
        "{counts:?}"
    );
    let node_s = node.to_string();
    env.wait_for("the deleted pods to be replaced on other nodes", |env| {
        let pods = env.deployment_pods("web");
        pods.len() == 3
            && pods
                .iter()
                .all(|p| is_running_ready(p) && node_of(p) != node_s)
    })
    .await;
}
