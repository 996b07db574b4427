//! The cluster behind the API: scheduler, workload controllers, kubelets, PDB status and
//! node loss. One reconcile loop wakes on every store change (coalesced) and on the next
//! kubelet timer, and runs each controller's level-triggered pass over a snapshot.

mod kubelet;
mod pdb;
pub mod podutil;
mod scheduler;
mod workloads;

use crate::errors::ApiError;
use crate::resources::{NODES, PODS};
use crate::store::{name_of, namespace_of, uid_of, Store};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Timing defaults for pods that do not say otherwise.
#[derive(Debug, Clone)]
pub struct Timings {
    /// From binding to Ready.
    pub startup: Duration,
    /// From SIGTERM to exit.
    pub shutdown: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            startup: Duration::from_millis(200),
            shutdown: Duration::from_millis(100),
        }
    }
}

/// How a pod's containers ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ExitKind {
    /// SIGTERM, then the process exited within its grace period.
    Graceful,
    /// SIGTERM, then SIGKILL when the grace period ran out.
    GraceExpired,
    /// The node vanished: no SIGTERM, no preStop.
    NodeLost,
}

/// The record of one pod that stopped.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PodExit {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Node it ran on.
    pub node: String,
    /// How it ended.
    pub kind: ExitKind,
}

#[derive(Default)]
struct KubeletState {
    bound_at: HashMap<String, Instant>,
    term_at: HashMap<String, Instant>,
}

/// The simulated cluster's controllers.
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The node lifecycle controller's TaintNodesByCondition: a cordoned node carries the
/// `node.kubernetes.io/unschedulable:NoSchedule` taint, an uncordoned one loses it.
fn taint_unschedulable(store: &Store, nodes: &[Arc<Value>]) {
    for node in nodes {
        let cordoned = node["spec"]["unschedulable"] == true;
        let tainted = node["spec"]["taints"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["key"] == UNSCHEDULABLE));
        if cordoned == tainted {
            continue;
        }
        let _ = store.update(&NODES, "", name_of(node), |n| {
            let mut taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
            taints.retain(|t| t["key"] != UNSCHEDULABLE);
            if n["spec"]["unschedulable"] == true {
                taints.push(json!({"key": UNSCHEDULABLE, "effect": "NoSchedule",
                    "timeAdded": crate::store::now_rfc3339()}));
            }
            match n["spec"].as_object_mut() {
                Some(spec) if taints.is_empty() => {
                    spec.remove("taints");
                }
                _ => n["spec"]["taints"] = json!(taints),
            }
            Ok(())
        });
    }
}

pub struct Cluster {
    store: Arc<Store>,
    timings: Timings,
    kubelet: Mutex<KubeletState>,
    dead: Mutex<HashSet<String>>,
    static_pods: Mutex<HashMap<String, Vec<Value>>>,
    exits: Mutex<Vec<PodExit>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Controllers over the given store.
    pub fn new(store: Arc<Store>, timings: Timings) -> Arc<Self> {
        Arc::new(Cluster {
            store,
            timings,
            kubelet: Mutex::default(),
            dead: Mutex::default(),
            static_pods: Mutex::default(),
            exits: Mutex::default(),
        })
    }

    /// Registers a static pod manifest on a node; its kubelet keeps a mirror pod for it.
    pub fn add_static_pod(&self, node: &str, manifest: Value) {
        lock(&self.static_pods)
            .entry(node.to_string())
            .or_default()
            .push(manifest);
    }

    /// Every pod that stopped so far, in order.
    pub fn exits(&self) -> Vec<PodExit> {
        lock(&self.exits).clone()
    }

    /// Whether a node's instance has been killed.
    pub fn is_dead(&self, node: &str) -> bool {
        lock(&self.dead).contains(node)
    }

    fn record_exit(&self, pod: &Value, kind: ExitKind) {
        lock(&self.exits).push(PodExit {
            namespace: namespace_of(pod).to_string(),
            name: name_of(pod).to_string(),
            uid: uid_of(pod).to_string(),
            node: podutil::node_name(pod).to_string(),
            kind,
        });
    }

    /// Kills the instance behind a node: the kubelet stops at once, every pod on the node
    /// stops without SIGTERM, and the node goes NotReady with the unreachable taint (what the
    /// node lifecycle controller does). Returns the pods that died.
    pub fn kill_node(&self, name: &str) -> Result<Vec<PodExit>, ApiError> {
        self.store.get_or_404(&NODES, "", name)?;
        lock(&self.dead).insert(name.to_string());
        let now = crate::store::now_rfc3339();
        self.store.update(&NODES, "", name, |n| {
            let conds = n["status"]["conditions"].as_array_mut();
            if let Some(cs) = conds {
                for c in cs.iter_mut().filter(|c| c["type"] == "Ready") {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(now);
                }
            }
            if !n["spec"]["taints"].is_array() {
                n["spec"]["taints"] = json!([]);
            }
            if let Some(ts) = n["spec"]["taints"].as_array_mut() {
                ts.push(json!({"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now}));
            }
            Ok(())
        })?;
        let (pods, _) = self.store.list(&PODS, None);
        let mut died = Vec::new();
        for pod in pods
            .iter()
            .filter(|p| podutil::node_name(p) == name && !podutil::finished(p))
        {
            self.record_exit(pod, ExitKind::NodeLost);
            if let Some(e) = lock(&self.exits).last() {
                died.push(e.clone());
            }
            // The node lifecycle controller marks the pods NotReady; they stay in the API
            // (Running, or Terminating if a delete was pending) until the Node is deleted.
            let _ = self
                .store
                .update(&PODS, namespace_of(pod), name_of(pod), |p| {
                    kubelet::set_ready(p, false);
                    Ok(())
                });
        }
        Ok(died)
    }

    /// Runs the reconcile loop until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.store.changes();
        loop {
            let next = self.reconcile();
            let sleep = match next {
                Some(at) => tokio::time::sleep_until(at),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                _ = sleep => {}
                msg = changes.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = msg {
                        return;
                    }
                    // Coalesce a burst of changes into one pass.
                    while changes.try_recv().is_ok() {}
                }
            }
        }
    }

    /// One pass of every controller; returns when the next timer is due.
    pub fn reconcile(&self) -> Option<Instant> {
        let now = Instant::now();
        let (nodes, _) = self.store.list(&NODES, None);
        let (pods, _) = self.store.list(&PODS, None);
        let dead = lock(&self.dead).clone();
        taint_unschedulable(&self.store, &nodes);
        workloads::reconcile(&self.store, &nodes, &pods, &dead);
        pdb::reconcile(&self.store, &pods);
        scheduler::reconcile(&self.store, &nodes, &pods);
        let statics = lock(&self.static_pods).clone();
        let mut next = None;
        {
            let mut kl = lock(&self.kubelet);
            let ctx = kubelet::Ctx {
                store: &self.store,
                timings: &self.timings,
                dead: &dead,
                now,
            };
            let mut exits = Vec::new();
            next = next.min_opt(kubelet::reconcile(
                &ctx, &mut kl, &nodes, &pods, &statics, &mut exits,
            ));
            for (pod, kind) in exits {
                self.record_exit(&pod, kind);
            }
        }
        next
    }
}

trait MinOpt {
    fn min_opt(self, other: Option<Instant>) -> Option<Instant>;
}

impl MinOpt for Option<Instant> {
    fn min_opt(self, other: Option<Instant>) -> Option<Instant> {
        match (self, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
