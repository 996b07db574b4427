//! Per-node kubelets: Pending → Running → Ready after the pod's start-up time; a deleted pod
//! stays Terminating for its shutdown time (capped by its grace period), then disappears;
//! mirror pods for static pods. Also the pod garbage collector: pods bound to a Node that no
//! longer exists are removed (their kubelet is gone with it).

use super::podutil::{self, MIRROR, SHUTDOWN_MS, STARTUP_MS};
use super::{ExitKind, KubeletState, Timings};
use crate::resources::PODS;
use crate::store::{name_of, namespace_of, now_rfc3339, uid_of, Store};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(super) struct Ctx<'a> {
    pub store: &'a Store,
    pub timings: &'a Timings,
    pub dead: &'a HashSet<String>,
    pub now: Instant,
}

/// Sets the pod's Ready and ContainersReady conditions and container readiness.
pub(super) fn set_ready(pod: &mut Value, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let now = now_rfc3339();
    if !pod["status"]["conditions"].is_array() {
        pod["status"]["conditions"] = json!([]);
    }
    if let Some(cs) = pod["status"]["conditions"].as_array_mut() {
        // No init containers: the pod is initialized as soon as the kubelet has it.
        if !cs.iter().any(|c| c["type"] == "Initialized") {
            cs.push(json!({"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}));
        }
        for ty in ["Ready", "ContainersReady"] {
            match cs.iter_mut().find(|c| c["type"] == ty) {
                Some(c) => {
                    if c["status"] != status {
                        c["status"] = json!(status);
                        c["lastTransitionTime"] = json!(now);
                    }
                }
                None => cs.push(json!({"type": ty, "status": status, "lastProbeTime": null, "lastTransitionTime": now})),
            }
        }
    }
    if let Some(statuses) = pod["status"]["containerStatuses"].as_array_mut() {
        for s in statuses {
            s["ready"] = json!(ready);
        }
    }
}

fn pod_ip(uid: &str) -> String {
    let h = uid
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
    format!(
        "10.{}.{}.{}",
        100 + (h % 100),
        (h >> 8) % 256,
        1 + (h >> 16) % 254
    )
}

fn container_statuses(pod: &Value, running: bool) -> Value {
    let now = now_rfc3339();
    let list: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let state = if running {
                        json!({"running": {"startedAt": now}})
                    } else {
                        json!({"waiting": {"reason": "ContainerCreating"}})
                    };
                    json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                        "restartCount": 0, "started": running, "state": state, "lastState": {}})
                })
                .collect()
        })
        .unwrap_or_default();
    json!(list)
}

/// The status a kubelet reports for a pod whose containers have stopped after a deletion:
/// each container terminated (exit 0 `Completed` when it stopped by itself, 137 `Error` when
/// SIGKILLed at the end of the grace period), not ready, and the pod's phase terminal.
fn set_terminated(pod: &mut Value, kind: ExitKind) {
    let (code, reason, phase) = match kind {
        ExitKind::Graceful => (0, "Completed", "Succeeded"),
        ExitKind::GraceExpired | ExitKind::NodeLost => (137, "Error", "Failed"),
    };
    let now = now_rfc3339();
    set_ready(pod, false);
    if let Some(statuses) = pod["status"]["containerStatuses"].as_array_mut() {
        for s in statuses {
            let started = s["state"]["running"]["startedAt"].clone();
            s["started"] = json!(false);
            s["state"] = json!({"terminated": {"exitCode": code, "reason": reason,
                "startedAt": started, "finishedAt": now, "containerID": ""}});
        }
    }
    pod["status"]["phase"] = json!(phase);
}

fn mirror_name(manifest: &Value, node: &str) -> String {
    format!("{}-{}", name_of(manifest), node)
}

pub(super) fn reconcile(
    ctx: &Ctx<'_>,
    st: &mut KubeletState,
    nodes: &[Arc<Value>],
    pods: &[Arc<Value>],
    statics: &HashMap<String, Vec<Value>>,
    exits: &mut Vec<(Value, ExitKind)>,
) -> Option<Instant> {
    let node_names: HashSet<&str> = nodes.iter().map(|n| name_of(n)).collect();
    let mut next: Option<Instant> = None;
    let mut wake = |at: Instant| next = Some(next.map_or(at, |n: Instant| n.min(at)));
    let mut seen: HashSet<&str> = HashSet::new();
    for pod in pods {
        let node = podutil::node_name(pod);
        if node.is_empty() {
            continue;
        }
        let uid = uid_of(pod);
        seen.insert(uid);
        let (ns, name) = (namespace_of(pod), name_of(pod));
        if !node_names.contains(node) {
            // Pod GC: the Node object is gone, so is the pod (force delete).
            let _ = ctx.store.remove(&PODS, ns, name, Some(uid));
            continue;
        }
        if ctx.dead.contains(node) {
            continue;
        }
        if podutil::terminating(pod) {
            let since = *st.term_at.entry(uid.to_string()).or_insert(ctx.now);
            let shutdown = Duration::from_millis(podutil::millis(
                pod,
                SHUTDOWN_MS,
                ctx.timings.shutdown.as_millis() as u64,
            ));
            let grace = Duration::from_secs(
                pod["metadata"]["deletionGracePeriodSeconds"]
                    .as_u64()
                    .unwrap_or(30),
            );
            let done_at = since + shutdown.min(grace);
            let never = pod["metadata"]["annotations"][podutil::NEVER_EXIT] == "true";
            if ctx.now >= done_at && !never {
                let kind = if shutdown > grace {
                    ExitKind::GraceExpired
                } else {
                    ExitKind::Graceful
                };
                // As a kubelet does: the containers' final state on the pod first (exit 0, or
                // 137 for the SIGKILL at the end of the grace period), then the pod goes; its
                // watchers see that state in the DELETED event.
                let _ = ctx.store.update(&PODS, ns, name, |p| {
                    set_terminated(p, kind);
                    Ok(())
                });
                if ctx.store.remove(&PODS, ns, name, Some(uid)).is_ok() {
                    exits.push(((**pod).clone(), kind));
                }
                st.term_at.remove(uid);
                st.bound_at.remove(uid);
            } else {
                if podutil::condition_true(pod, "Ready") {
                    // The container got SIGTERM: it stops being ready.
                    let _ = ctx.store.update(&PODS, ns, name, |p| {
                        set_ready(p, false);
                        Ok(())
                    });
                }
                if !never {
                    wake(done_at);
                }
            }
            continue;
        }
        if podutil::finished(pod) || podutil::healthy(pod) {
            continue;
        }
        let bound = *st.bound_at.entry(uid.to_string()).or_insert(ctx.now);
        let startup = Duration::from_millis(podutil::millis(
            pod,
            STARTUP_MS,
            ctx.timings.startup.as_millis() as u64,
        ));
        let host_ip = nodes
            .iter()
            .find(|n| name_of(n) == node)
            .and_then(|n| n["status"]["addresses"][0]["address"].as_str())
            .unwrap_or("")
            .to_string();
        if ctx.now >= bound + startup {
            let _ = ctx.store.update(&PODS, ns, name, |p| {
                p["status"]["phase"] = json!("Running");
                p["status"]["containerStatuses"] = container_statuses(p, true);
                if p["status"]["startTime"].is_null() {
                    p["status"]["startTime"] = json!(now_rfc3339());
                }
                p["status"]["hostIP"] = json!(host_ip);
                p["status"]["podIP"] = json!(pod_ip(uid));
                p["status"]["podIPs"] = json!([{"ip": pod_ip(uid)}]);
                set_ready(p, true);
                Ok(())
            });
        } else {
            if pod["status"]["containerStatuses"].is_null() {
                let _ = ctx.store.update(&PODS, ns, name, |p| {
                    p["status"]["phase"] = json!("Pending");
                    p["status"]["containerStatuses"] = container_statuses(p, false);
                    p["status"]["startTime"] = json!(now_rfc3339());
                    p["status"]["hostIP"] = json!(host_ip);
                    set_ready(p, false);
                    Ok(())
                });
            }
            wake(bound + startup);
        }
    }
    st.bound_at.retain(|uid, _| seen.contains(uid.as_str()));
    st.term_at.retain(|uid, _| seen.contains(uid.as_str()));
    ensure_mirror_pods(ctx, nodes, pods, statics);
    next
}

fn ensure_mirror_pods(
    ctx: &Ctx<'_>,
    nodes: &[Arc<Value>],
    pods: &[Arc<Value>],
    statics: &HashMap<String, Vec<Value>>,
) {
    for node in nodes {
        let node_name = name_of(node);
        if ctx.dead.contains(node_name) {
            continue;
        }
        let Some(manifests) = statics.get(node_name) else {
            continue;
        };
        for m in manifests {
            let ns = m["metadata"]["namespace"].as_str().unwrap_or("kube-system");
            let name = mirror_name(m, node_name);
            if pods
                .iter()
                .any(|p| namespace_of(p) == ns && name_of(p) == name)
            {
                continue;
            }
            let mut pod = m.clone();
            pod["metadata"]["name"] = json!(name);
            pod["metadata"]["namespace"] = json!(ns);
            if !pod["metadata"]["annotations"].is_object() {
                pod["metadata"]["annotations"] = json!({});
            }
            pod["metadata"]["annotations"][MIRROR] = json!(format!("{:x}", fastrand::u64(..)));
            pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": node_name,
                "uid": uid_of(node), "controller": true}]);
            pod["spec"]["nodeName"] = json!(node_name);
            let _ = ctx.store.create(&PODS, ns, pod);
        }
    }
}
