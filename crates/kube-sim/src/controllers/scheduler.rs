//! The scheduler: binds pending pods to Ready, schedulable nodes whose taints they tolerate
//! and whose capacity (pods, cpu, memory requests) allows, spreading by least allocation.

use super::podutil;
use crate::resources::PODS;
use crate::store::{name_of, namespace_of, now_rfc3339, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default, Clone, Copy)]
struct Used {
    pods: i64,
    cpu: i64,
    memory: i64,
}

fn schedulable_for(node: &Value, pod: &Value) -> bool {
    if node["spec"]["unschedulable"] == true {
        return false;
    }
    if !podutil::condition_true(node, "Ready") {
        return false;
    }
    let taints = node["spec"]["taints"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let selector_ok = pod["spec"]["nodeSelector"]
        .as_object()
        .is_none_or(|sel| sel.iter().all(|(k, v)| node["metadata"]["labels"][k] == *v));
    selector_ok
        && taints.iter().all(|t| {
            !matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute"))
                || podutil::tolerates(pod, t)
        })
}

fn fits(node: &Value, used: Used, pod: &Value) -> bool {
    let alloc = &node["status"]["allocatable"];
    let max_pods = podutil::quantity_milli(&alloc["pods"]) / 1000;
    let cpu = podutil::quantity_milli(&alloc["cpu"]);
    let mem = podutil::quantity_milli(&alloc["memory"]);
    (max_pods == 0 || used.pods < max_pods)
        && (cpu == 0 || used.cpu + podutil::request_milli(pod, "cpu") <= cpu)
        && (mem == 0 || used.memory + podutil::request_milli(pod, "memory") <= mem)
}

pub(super) fn reconcile(store: &Store, nodes: &[Arc<Value>], pods: &[Arc<Value>]) {
    let pending: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| {
            podutil::node_name(p).is_empty() && !podutil::terminating(p) && !podutil::finished(p)
        })
        .collect();
    if pending.is_empty() {
        return;
    }
    let mut used: HashMap<&str, Used> = HashMap::new();
    for p in pods.iter().filter(|p| !podutil::finished(p)) {
        let u = used.entry(podutil::node_name(p)).or_default();
        u.pods += 1;
        u.cpu += podutil::request_milli(p, "cpu");
        u.memory += podutil::request_milli(p, "memory");
    }
    for pod in pending {
        let best = nodes
            .iter()
            .filter(|n| schedulable_for(n, pod))
            .filter(|n| fits(n, used.get(name_of(n)).copied().unwrap_or_default(), pod))
            .min_by_key(|n| {
                (
                    used.get(name_of(n)).map_or(0, |u| u.pods),
                    name_of(n).to_string(),
                )
            });
        let (ns, name) = (namespace_of(pod), name_of(pod));
        match best {
            Some(node) => {
                let node_name = name_of(node).to_string();
                let bound = store.update(&PODS, ns, name, |p| {
                    if !podutil::node_name(p).is_empty() {
                        return Ok(());
                    }
                    p["spec"]["nodeName"] = json!(node_name);
                    p["status"]["phase"] = json!("Pending");
                    p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True",
                        "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}]);
                    Ok(())
                });
                if bound.is_ok() {
                    let u = used.entry(name_of(node)).or_default();
                    u.pods += 1;
                    u.cpu += podutil::request_milli(pod, "cpu");
                    u.memory += podutil::request_milli(pod, "memory");
                }
            }
            None => {
                if pod["status"]["conditions"][0]["reason"] != "Unschedulable" {
                    let n = nodes.len();
                    let _ = store.update(&PODS, ns, name, |p| {
                        p["status"]["phase"] = json!("Pending");
                        p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
                            "reason": "Unschedulable", "lastProbeTime": null, "lastTransitionTime": now_rfc3339(),
                            "message": format!("0/{n} nodes are available: no node is ready, schedulable, tolerated and with room.")}]);
                        Ok(())
                    });
                }
            }
        }
    }
}
