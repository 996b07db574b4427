//! Workload controllers: Deployment → ReplicaSet, ReplicaSet → pods (a deleted or evicted
//! pod is replaced at once: terminating pods no longer count as active), DaemonSet (one pod
//! per eligible node), StatefulSet (stable names; a pod is recreated only after the old one
//! with the same name is gone, in ordinal order).

use super::podutil;
use crate::resources::{DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS};
use crate::store::{name_of, namespace_of, now_rfc3339, uid_of, Store};
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
        // Go's omitempty: a zero count is left out.
        if m.get("unavailableReplicas").is_some_and(|v| v == 0) {
            m.remove("unavailableReplicas");
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

/// A Deployment condition, keeping its times while nothing about it changes.
fn deployment_condition(
    old: &Value,
    ty: &str,
    status: bool,
    reason: &str,
    message: String,
) -> Value {
    let now = now_rfc3339();
    let status = if status { "True" } else { "False" };
    let prev = old["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    let transition = prev
        .filter(|c| c["status"] == status)
        .map_or(json!(now), |c| c["lastTransitionTime"].clone());
    let update = prev
        .filter(|c| c["status"] == status && c["reason"] == reason && c["message"] == message)
        .map_or(json!(now), |c| c["lastUpdateTime"].clone());
    json!({"type": ty, "status": status, "lastUpdateTime": update, "lastTransitionTime": transition,
        "reason": reason, "message": message})
}

/// `maxSurge`/`maxUnavailable` of a rolling update, resolved against `replicas` (percentages
/// round up for surge, down for unavailable).
fn rolling(d: &Value, key: &str, replicas: i64, up: bool) -> i64 {
    match &d["spec"]["strategy"]["rollingUpdate"][key] {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(p) => {
            let pct = p.trim_end_matches('%').parse::<i64>().unwrap_or(25);
            if up {
                (replicas * pct + 99) / 100
            } else {
                replicas * pct / 100
            }
        }
        _ => 0,
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
                let surge = rolling(d, "maxSurge", replicas, true);
                let annotations = json!({"deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                    "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string(),
                    "deployment.kubernetes.io/revision": "1"});
                let rs = json!({"metadata": {"name": rs_name, "namespace": ns, "labels": template["metadata"]["labels"],
                        "annotations": annotations, "ownerReferences": owner_ref("apps/v1", "Deployment", d)},
                    "spec": {"replicas": replicas, "selector": selector, "template": template}});
                let _ = store.create(&REPLICASETS, ns, rs);
                if d["metadata"]["annotations"]["deployment.kubernetes.io/revision"].is_null() {
                    let _ = store.update(&DEPLOYMENTS, ns, name_of(d), |o| {
                        if !o["metadata"]["annotations"].is_object() {
                            o["metadata"]["annotations"] = json!({});
                        }
                        o["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                            json!("1");
                        Ok(())
                    });
                }
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
                let min_available = replicas - rolling(d, "maxUnavailable", replicas, false);
                let available = if ready >= min_available {
                    deployment_condition(
                        d,
                        "Available",
                        true,
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.".into(),
                    )
                } else {
                    deployment_condition(
                        d,
                        "Available",
                        false,
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.".into(),
                    )
                };
                let progressing = if ready >= replicas && have == replicas {
                    deployment_condition(
                        d,
                        "Progressing",
                        true,
                        "NewReplicaSetAvailable",
                        format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                    )
                } else {
                    deployment_condition(
                        d,
                        "Progressing",
                        true,
                        "ReplicaSetUpdated",
                        format!("ReplicaSet \"{rs_name}\" is progressing."),
                    )
                };
                set_status(
                    store,
                    &DEPLOYMENTS,
                    d,
                    json!({"replicas": have, "readyReplicas": ready,
                    "availableReplicas": ready, "updatedReplicas": have, "unavailableReplicas": (replicas - ready).max(0),
                    "conditions": [available, progressing]}),
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
        let generation = ds["metadata"]["generation"]
            .as_i64()
            .unwrap_or(1)
            .to_string();
        if ds["metadata"]["annotations"]["deprecated.daemonset.template.generation"]
            != generation.as_str()
        {
            let _ = store.update(&DAEMONSETS, ns, name_of(ds), |o| {
                if !o["metadata"]["annotations"].is_object() {
                    o["metadata"]["annotations"] = json!({});
                }
                o["metadata"]["annotations"]["deprecated.daemonset.template.generation"] =
                    json!(generation);
                Ok(())
            });
        }
        let revision_hash = template_hash(&ds["spec"]["template"]);
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
                daemon_pod(&mut pod, node_name, &revision_hash, &generation);
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

/// What the DaemonSet controller adds to a daemon pod: its revision labels, the node
/// affinity that pins it to its node, and the tolerations every daemon pod has. (The real
/// controller leaves the binding to the scheduler; the simulator binds it at once.)
fn daemon_pod(pod: &mut Value, node: &str, revision_hash: &str, generation: &str) {
    pod["metadata"]["labels"]["controller-revision-hash"] = json!(revision_hash);
    pod["metadata"]["labels"]["pod-template-generation"] = json!(generation);
    pod["spec"]["nodeName"] = json!(node);
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
    let mut tolerations = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        if !tolerations
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect)
        {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": effect}));
        }
    }
    pod["spec"]["tolerations"] = json!(tolerations);
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
