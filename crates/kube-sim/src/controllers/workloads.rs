//! Workload controllers: Deployment → ReplicaSet, ReplicaSet → pods (a deleted or evicted
//! pod is replaced at once: terminating pods no longer count as active), DaemonSet (one pod
//! per eligible node), StatefulSet (stable names; a pod is recreated only after the old one
//! with the same name is gone, in ordinal order).

use super::podutil;
use crate::resources::{DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS};
use crate::store::{name_of, namespace_of, uid_of, Store};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

fn owner_ref(api_version: &str, kind: &str, owner: &Value) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name_of(owner), "uid": uid_of(owner),
        "controller": true, "blockOwnerDeletion": true}])
}

/// A pod built from a workload's template.
fn pod_from_template(
    owner: &Value,
    kind: &str,
    name: Option<String>,
    generate_prefix: &str,
) -> Value {
    let template = &owner["spec"]["template"];
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    match name {
        Some(n) => meta["name"] = json!(n),
        None => meta["generateName"] = json!(generate_prefix),
    }
    meta["ownerReferences"] = owner_ref("apps/v1", kind, owner);
    let mut spec = template["spec"].clone();
    if spec["terminationGracePeriodSeconds"].is_null() {
        spec["terminationGracePeriodSeconds"] = json!(30);
    }
    json!({"metadata": meta, "spec": spec, "status": {"phase": "Pending"}})
}

fn template_hash(template: &Value) -> String {
    let text = template.to_string();
    let h = text.bytes().fold(0xcbf29ce484222325u64, |a, b| {
        (a ^ b as u64).wrapping_mul(0x100000001b3)
    });
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn owned_by<'a>(pods: &'a [Arc<Value>], owner: &Value) -> Vec<&'a Arc<Value>> {
    let uid = uid_of(owner);
    pods.iter()
        .filter(|p| podutil::controller_of(p).is_some_and(|(_, _, u)| u == uid))
        .collect()
}

fn set_status(
    store: &Store,
    res: &'static crate::resources::ResourceDef,
    obj: &Value,
    status: Value,
) {
    let mut merged = obj["status"].clone();
    if !merged.is_object() {
        merged = json!({});
    }
    if let (Some(m), Some(s)) = (merged.as_object_mut(), status.as_object()) {
        for (k, v) in s {
            m.insert(k.clone(), v.clone());
        }
    }
    merged["observedGeneration"] = obj["metadata"]["generation"].clone();
    if merged != obj["status"] {
        let _ = store.update(res, namespace_of(obj), name_of(obj), |o| {
            o["status"] = merged;
            Ok(())
        });
    }
}

fn deployments(store: &Store) {
    let (deploys, _) = store.list(&DEPLOYMENTS, None);
    if deploys.is_empty() {
        return;
    }
    let (rss, _) = store.list(&REPLICASETS, None);
    for d in &deploys {
        let ns = namespace_of(d);
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let rs_name = format!("{}-{}", name_of(d), template_hash(&d["spec"]["template"]));
        let existing = rss
            .iter()
            .find(|r| namespace_of(r) == ns && name_of(r) == rs_name);
        match existing {
            None => {
                let mut template = d["spec"]["template"].clone();
                let hash = rs_name.rsplit('-').next().unwrap_or("").to_string();
                template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({"metadata": {"name": rs_name, "namespace": ns, "labels": template["metadata"]["labels"],
                        "ownerReferences": owner_ref("apps/v1", "Deployment", d)},
                    "spec": {"replicas": replicas, "selector": selector, "template": template}});
                let _ = store.create(&REPLICASETS, ns, rs);
            }
            Some(rs) => {
                if rs["spec"]["replicas"].as_i64() != Some(replicas) {
                    let _ = store.update(&REPLICASETS, ns, &rs_name, |r| {
                        r["spec"]["replicas"] = json!(replicas);
                        Ok(())
                    });
                }
                let ready = rs["status"]["readyReplicas"].as_i64().unwrap_or(0);
                let have = rs["status"]["replicas"].as_i64().unwrap_or(0);
                set_status(
                    store,
                    &DEPLOYMENTS,
                    d,
                    json!({"replicas": have, "readyReplicas": ready,
                    "availableReplicas": ready, "updatedReplicas": have, "unavailableReplicas": (replicas - ready).max(0)}),
                );
            }
        }
    }
}

fn replicasets(store: &Store, pods: &[Arc<Value>]) {
    let (rss, _) = store.list(&REPLICASETS, None);
    for rs in &rss {
        let ns = namespace_of(rs);
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize;
        let owned = owned_by(pods, rs);
        let active: Vec<&&Arc<Value>> = owned
            .iter()
            .filter(|p| !podutil::terminating(p) && !podutil::finished(p))
            .collect();
        if active.len() < want {
            for _ in active.len()..want {
                let pod = pod_from_template(rs, "ReplicaSet", None, &format!("{}-", name_of(rs)));
                let _ = store.create(&PODS, ns, pod);
            }
        } else if active.len() > want {
            // Scale down: unscheduled first, then not ready, then newest.
            let mut victims: Vec<&&Arc<Value>> = active.clone();
            victims.sort_by_key(|p| (!podutil::node_name(p).is_empty(), podutil::healthy(p)));
            for p in victims.into_iter().take(active.len() - want) {
                let _ = crate::ops::delete(store, &PODS, ns, name_of(p), &Default::default());
            }
        }
        let ready = active.iter().filter(|p| podutil::healthy(p)).count();
        set_status(
            store,
            &REPLICASETS,
            rs,
            json!({"replicas": active.len(), "readyReplicas": ready,
            "availableReplicas": ready, "fullyLabeledReplicas": active.len()}),
        );
    }
}

fn statefulsets(store: &Store, pods: &[Arc<Value>]) {
    let (stss, _) = store.list(&STATEFULSETS, None);
    for sts in &stss {
        let ns = namespace_of(sts);
        let want = sts["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
        let parallel = sts["spec"]["podManagementPolicy"] == "Parallel";
        let by_name: HashMap<&str, &Arc<Value>> = pods
            .iter()
            .filter(|p| namespace_of(p) == ns)
            .map(|p| (name_of(p), p))
            .collect();
        let mut ready = 0;
        for i in 0..want {
            let name = format!("{}-{}", name_of(sts), i);
            match by_name.get(name.as_str()) {
                Some(p) => {
                    if podutil::healthy(p) {
                        ready += 1;
                    } else if !parallel {
                        // OrderedReady: wait for this ordinal before creating the next.
                        break;
                    }
                }
                None => {
                    let mut pod = pod_from_template(sts, "StatefulSet", Some(name.clone()), "");
                    pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
                    let _ = store.create(&PODS, ns, pod);
                    if !parallel {
                        break;
                    }
                }
            }
        }
        let current = owned_by(pods, sts).len();
        set_status(
            store,
            &STATEFULSETS,
            sts,
            json!({"replicas": current, "readyReplicas": ready,
            "availableReplicas": ready, "currentReplicas": current}),
        );
    }
}

fn daemonsets(store: &Store, nodes: &[Arc<Value>], pods: &[Arc<Value>], dead: &HashSet<String>) {
    let (dss, _) = store.list(&DAEMONSETS, None);
    for ds in &dss {
        let ns = namespace_of(ds);
        let owned = owned_by(pods, ds);
        let template_pod = json!({"spec": ds["spec"]["template"]["spec"]});
        let mut desired = 0;
        for node in nodes {
            let node_name = name_of(node);
            // DaemonSet pods tolerate unschedulable/not-ready/unreachable by default; other
            // NoSchedule/NoExecute taints must be tolerated by the template.
            let eligible = node["spec"]["taints"].as_array().is_none_or(|ts| {
                ts.iter().all(|t| {
                    let key = t["key"].as_str().unwrap_or("");
                    key.starts_with("node.kubernetes.io/")
                        || !matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute"))
                        || podutil::tolerates(&template_pod, t)
                })
            });
            if !eligible {
                continue;
            }
            desired += 1;
            let has = owned
                .iter()
                .any(|p| podutil::node_name(p) == node_name && !podutil::terminating(p));
            if !has && !dead.contains(node_name) {
                let mut pod =
                    pod_from_template(ds, "DaemonSet", None, &format!("{}-", name_of(ds)));
                pod["spec"]["nodeName"] = json!(node_name);
                let _ = store.create(&PODS, ns, pod);
            }
        }
        let ready = owned.iter().filter(|p| podutil::healthy(p)).count();
        set_status(
            store,
            &DAEMONSETS,
            ds,
            json!({"desiredNumberScheduled": desired,
            "currentNumberScheduled": owned.len(), "numberReady": ready, "numberAvailable": ready,
            "updatedNumberScheduled": owned.len(), "numberMisscheduled": 0}),
        );
    }
}

pub(super) fn reconcile(
    store: &Store,
    nodes: &[Arc<Value>],
    pods: &[Arc<Value>],
    dead: &HashSet<String>,
) {
    deployments(store);
    replicasets(store, pods);
    statefulsets(store, pods);
    daemonsets(store, nodes, pods, dead);
}
