//! Shared setup for the drain engine's integration tests: a simulator started in-process from
//! inline scenario YAML, a kube-rs client over HTTP, a recorder of the store's pod changes
//! (the order of deletions, in resourceVersion order), and a runner for the built binary.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use kube_sim::resources::{NODES, PODS};
use kube_sim::scenario::{Capacity, NodeSpec, Scenario};
use kube_sim::store::{Change, EventType};
use kube_sim::Sim;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use termguard::cluster::drain::{Backoff, DrainOptions, DrainRequest, Drainer};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Starts a simulator for the scenario on a free loopback port.
pub async fn start(scenario_yaml: &str) -> Sim {
    let scenario = Scenario::from_yaml(scenario_yaml).expect("valid scenario YAML");
    Sim::start(&scenario, "127.0.0.1:0".parse().expect("loopback address"))
        .await
        .expect("kube-sim starts")
}

/// Starts a simulator and waits until every workload is Ready.
pub async fn start_settled(scenario_yaml: &str) -> Sim {
    let sim = start(scenario_yaml).await;
    settle(&sim).await;
    sim
}

/// Waits until every pod is Ready and every workload at its scale.
pub async fn settle(sim: &Sim) {
    assert!(
        sim.wait_settled(Duration::from_secs(60)).await,
        "the scenario did not settle"
    );
}

/// A kube-rs client talking to the simulator over HTTP, built the way the engine needs it:
/// kube's default client would retry a PodDisruptionBudget's 429 by itself, out of sight.
pub fn client(sim: &Sim) -> kube::Client {
    let config = kube::Config::new(sim.url().parse().expect("simulator URL"));
    termguard::cluster::drain::client(config).expect("kube client")
}

/// Backoff short enough that a blocked eviction is retried within the test's time.
pub fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
        jitter: 0.2,
    }
}

/// A drainer with the given identity and a fast backoff.
pub fn drainer(sim: &Sim, identity: &str) -> Drainer {
    Drainer::new(client(sim), identity).with_backoff(fast_backoff())
}

/// A manual drain request for `node`.
pub fn request(node: &str, options: DrainOptions) -> DrainRequest {
    DrainRequest::manual(node, options)
}

/// Adds a schedulable node (somewhere for replacements to go).
pub fn add_node(sim: &Sim, name: &str) {
    sim.add_node(&NodeSpec {
        name: name.to_string(),
        zone: "us-east-1b".into(),
        instance_id: String::new(),
        instance_type: "m5.large".into(),
        group: String::new(),
        capacity: Capacity::default(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
    })
    .expect("node added");
}

/// The Node object as stored.
pub fn node(sim: &Sim, name: &str) -> Arc<Value> {
    sim.store.get(&NODES, "", name).expect("node exists")
}

/// Every pod bound to `node`, as stored.
pub fn pods_on(sim: &Sim, node: &str) -> Vec<Arc<Value>> {
    let (pods, _) = sim.store.list(&PODS, None);
    pods.into_iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .collect()
}

/// A pod by namespace and name, as stored.
pub fn pod(sim: &Sim, ns: &str, name: &str) -> Option<Arc<Value>> {
    sim.store.get(&PODS, ns, name)
}

/// Whether a pod with this UID still exists.
pub fn pod_uid_exists(sim: &Sim, uid: &str) -> bool {
    let (pods, _) = sim.store.list(&PODS, None);
    pods.iter().any(|p| p["metadata"]["uid"] == uid)
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> String {
    obj["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

/// `metadata.name`.
pub fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or("").to_string()
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// `namespace/name`, as the drain report prints pods.
pub fn ns_name(obj: &Value) -> String {
    format!("{}/{}", namespace(obj), name(obj))
}

/// Whether the pod has a deletionTimestamp.
pub fn terminating(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// Whether the pod is Ready and not terminating (what a PodDisruptionBudget counts).
pub fn healthy(obj: &Value) -> bool {
    !terminating(obj)
        && obj["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True")
}

/// Requests served for one path and verb (see `Faults::count_path`).
pub fn requests(sim: &Sim, verb: &str, path: &str) -> u64 {
    sim.faults
        .path_counts()
        .get(&format!("{verb} {path}"))
        .copied()
        .unwrap_or(0)
}

/// Eviction requests the simulator served for one pod.
pub fn evictions_of(sim: &Sim, pod: &Value) -> u64 {
    requests(
        sim,
        "evict",
        &format!(
            "/api/v1/namespaces/{}/pods/{}/eviction",
            namespace(pod),
            name(pod)
        ),
    )
}

/// DELETE requests the simulator served for one pod.
pub fn deletes_of(sim: &Sim, pod: &Value) -> u64 {
    requests(
        sim,
        "delete",
        &format!("/api/v1/namespaces/{}/pods/{}", namespace(pod), name(pod)),
    )
}

/// Requests served for a verb since the last reset.
pub fn verb_count(sim: &Sim, verb: &str) -> u64 {
    sim.faults.counts().get(verb).copied().unwrap_or(0)
}

/// Every pod change committed to the store after it started, in resourceVersion order, plus
/// the pods that existed when it started. Started before a drain, it shows exactly when each
/// pod was asked to go (its deletionTimestamp appeared) and when it was gone.
pub struct PodFeed {
    /// The pods at the moment recording started.
    pub initial: Vec<Arc<Value>>,
    log: Arc<Mutex<Vec<Arc<Change>>>>,
    lagged: Arc<AtomicBool>,
    seen_rv: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for PodFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodFeed {
    /// Starts recording; the snapshot and the subscription are taken atomically.
    pub fn start(sim: &Sim) -> Self {
        let (initial, rv, mut rx) = sim.store.snapshot_and_subscribe(&PODS);
        let log = Arc::new(Mutex::new(Vec::new()));
        let lagged = Arc::new(AtomicBool::new(false));
        let seen_rv = Arc::new(AtomicU64::new(rv));
        let task = {
            let (log, lagged, seen_rv) = (log.clone(), lagged.clone(), seen_rv.clone());
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(change) => {
                            let rv = change.rv;
                            if change.storage == "pods" {
                                log.lock().unwrap_or_else(|e| e.into_inner()).push(change);
                            }
                            seen_rv.fetch_max(rv, Ordering::SeqCst);
                        }
                        Err(RecvError::Lagged(_)) => lagged.store(true, Ordering::SeqCst),
                        Err(RecvError::Closed) => return,
                    }
                }
            })
        };
        PodFeed {
            initial,
            log,
            lagged,
            seen_rv,
            task,
        }
    }

    /// The pod changes recorded so far, oldest first. Panics if the recorder fell behind.
    pub fn changes(&self) -> Vec<Arc<Change>> {
        assert!(
            !self.lagged.load(Ordering::SeqCst),
            "the change recorder lagged"
        );
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the recorder has seen every change committed so far.
    pub async fn sync(&self, sim: &Sim) {
        let target = sim.store.current_rv();
        let caught_up = eventually(Duration::from_secs(10), || {
            self.seen_rv.load(Ordering::SeqCst) >= target
        })
        .await;
        assert!(caught_up, "the change recorder did not catch up");
    }

    /// The initial pods bound to `node`.
    pub fn initial_on(&self, node: &str) -> Vec<Arc<Value>> {
        self.initial
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .cloned()
            .collect()
    }

    /// The changes of one pod UID.
    pub fn of(&self, uid: &str) -> Vec<Arc<Change>> {
        self.changes()
            .into_iter()
            .filter(|c| c.object["metadata"]["uid"] == uid)
            .collect()
    }

    /// resourceVersion at which the pod first got a deletionTimestamp.
    pub fn deletion_requested_rv(&self, uid: &str) -> Option<u64> {
        self.of(uid)
            .into_iter()
            .find(|c| terminating(&c.object) && !c.old.as_deref().is_some_and(terminating))
            .map(|c| c.rv)
    }

    /// How many times the pod went from running to terminating (at most once for a pod).
    pub fn deletion_requests(&self, uid: &str) -> usize {
        self.of(uid)
            .into_iter()
            .filter(|c| {
                c.ty != EventType::Deleted
                    && terminating(&c.object)
                    && !c.old.as_deref().is_some_and(terminating)
            })
            .count()
    }

    /// resourceVersion at which the pod was removed from the API.
    pub fn removed_rv(&self, uid: &str) -> Option<u64> {
        self.of(uid)
            .into_iter()
            .find(|c| c.ty == EventType::Deleted)
            .map(|c| c.rv)
    }

    /// The grace period the pod was deleted with, when it first got a deletionTimestamp.
    pub fn deletion_grace_seconds(&self, uid: &str) -> Option<i64> {
        self.of(uid)
            .into_iter()
            .find(|c| terminating(&c.object))
            .and_then(|c| c.object["metadata"]["deletionGracePeriodSeconds"].as_i64())
    }

    /// The smallest number of healthy pods among those `selects`, after every recorded change
    /// (starting from the initial snapshot).
    pub fn min_healthy(&self, selects: impl Fn(&Value) -> bool) -> usize {
        let mut state: BTreeMap<String, bool> = self
            .initial
            .iter()
            .filter(|p| selects(p))
            .map(|p| (uid(p), healthy(p)))
            .collect();
        let count = |s: &BTreeMap<String, bool>| s.values().filter(|h| **h).count();
        let mut min = count(&state);
        for c in self.changes() {
            if !selects(&c.object) {
                continue;
            }
            if c.ty == EventType::Deleted {
                state.remove(&uid(&c.object));
            } else {
                state.insert(uid(&c.object), healthy(&c.object));
            }
            min = min.min(count(&state));
        }
        min
    }
}

/// Waits until `f` holds (checked every 25 ms), for at most `limit`; returns whether it did.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What the built binary did.
pub struct Run {
    /// Exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the built `termguard` binary against the simulator (its kubeconfig written to a file,
/// stdin closed) and waits for it to exit.
pub async fn termguard(sim: &Sim, args: &[&str]) -> Run {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "drain-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)
        .expect("kubeconfig written");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
        .args(args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env_remove("KUBECONFIG")
        .env("TERMGUARD_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("termguard runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
