//! Server-side printing: `meta.k8s.io/v1` Table replies for kubectl
//! (`docs/simulator.md#tables-for-kubectl`). Without them kubectl prints only `NAME AGE`.

use serde_json::{json, Value};

/// Formats an age the way kubectl does (`duration.HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{s}s")
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{mm}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let hh = h % 24;
        if hh == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{hh}h")
        }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn age(obj: &Value) -> String {
    let created = obj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok());
    match created {
        Some(t) => human_duration(jiff::Timestamp::now().as_second() - t.as_second()),
        None => "<unknown>".into(),
    }
}

// Generated from kube-apiserver v1.34's Table replies (columnDefinitions), verbatim.
const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// (name, type, format, priority, description) of each column, by storage.
fn column_defs(
    storage: &str,
) -> &'static [(&'static str, &'static str, &'static str, i32, &'static str)] {
    match storage {
        "nodes" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Status", "string", "", 0, "The status of the node"),
            ("Roles", "string", "", 0, "The roles of the node"),
            ("Age", "string", "", 0, AGE_DESC),
            ("Version", "string", "", 0, "Kubelet Version reported by the node."),
            ("Internal-IP", "string", "", 1, "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP)."),
            ("External-IP", "string", "", 1, "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP)."),
            ("OS-Image", "string", "", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
            ("Kernel-Version", "string", "", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
            ("Container-Runtime", "string", "", 1, "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
        ],
        "pods" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Ready", "string", "", 0, "The aggregate readiness state of this pod for accepting traffic."),
            ("Status", "string", "", 0, "The aggregate status of the containers in this pod."),
            ("Restarts", "string", "", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            ("Age", "string", "", 0, AGE_DESC),
            ("IP", "string", "", 1, "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
            ("Node", "string", "", 1, "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename"),
            ("Nominated Node", "string", "", 1, "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled."),
            ("Readiness Gates", "string", "", 1, "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates"),
        ],
        "deployments" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Ready", "string", "", 0, "Number of the pod with ready state"),
            ("Up-to-date", "string", "", 0, "Total number of non-terminating pods targeted by this deployment that have the desired template spec."),
            ("Available", "string", "", 0, "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment."),
            ("Age", "string", "", 0, AGE_DESC),
            ("Containers", "string", "", 1, "Names of each container in the template."),
            ("Images", "string", "", 1, "Images referenced by each container in the template."),
            ("Selector", "string", "", 1, "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
        ],
        "replicasets" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Desired", "integer", "", 0, "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
            ("Current", "integer", "", 0, "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset"),
            ("Ready", "integer", "", 0, "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition."),
            ("Age", "string", "", 0, AGE_DESC),
            ("Containers", "string", "", 1, "Names of each container in the template."),
            ("Images", "string", "", 1, "Images referenced by each container in the template."),
            ("Selector", "string", "", 1, "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
        ],
        "daemonsets" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Desired", "integer", "", 0, "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod). More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
            ("Current", "integer", "", 0, "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod. More info: https://kubernetes.io/docs/concepts/workloads/controllers/daemonset/"),
            ("Ready", "integer", "", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
            ("Up-to-date", "integer", "", 0, "The total number of nodes that are running updated daemon pod"),
            ("Available", "integer", "", 0, "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
            ("Node Selector", "string", "", 0, "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node. More info: https://kubernetes.io/docs/concepts/configuration/assign-pod-node/"),
            ("Age", "string", "", 0, AGE_DESC),
            ("Containers", "string", "", 1, "Names of each container in the template."),
            ("Images", "string", "", 1, "Images referenced by each container in the template."),
            ("Selector", "string", "", 1, "A label query over pods that are managed by the daemon set. Must match in order to be controlled. If empty, defaulted to labels on Pod template. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors"),
        ],
        "statefulsets" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Ready", "string", "", 0, "Number of the pod with ready state"),
            ("Age", "string", "", 0, AGE_DESC),
            ("Containers", "string", "", 1, "Names of each container in the template."),
            ("Images", "string", "", 1, "Images referenced by each container in the template."),
        ],
        "poddisruptionbudgets" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Min Available", "string", "", 0, "The minimum number of pods that must be available."),
            ("Max Unavailable", "string", "", 0, "The maximum number of pods that may be unavailable."),
            ("Allowed Disruptions", "integer", "", 0, "Calculated number of pods that may be disrupted at this time."),
            ("Age", "string", "", 0, AGE_DESC),
        ],
        "namespaces" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Status", "string", "", 0, "The status of the namespace"),
            ("Age", "string", "", 0, AGE_DESC),
        ],
        "configmaps" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Data", "string", "", 0, "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process."),
            ("Age", "string", "", 0, AGE_DESC),
        ],
        "events" => &[
            ("Last Seen", "string", "", 0, "The time at which the most recent occurrence of this event was recorded."),
            ("Type", "string", "", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
            ("Reason", "string", "", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
            ("Object", "string", "", 0, "The object that this event is about."),
            ("Subobject", "string", "", 1, "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object."),
            ("Source", "string", "", 1, "The component reporting this event. Should be a short machine understandable string."),
            ("Message", "string", "", 0, "A human-readable description of the status of this operation."),
            ("First Seen", "string", "", 1, "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
            ("Count", "string", "", 1, "The number of times this event has occurred."),
            ("Name", "string", "name", 1, NAME_DESC),
        ],
        "leases" => &[
            ("Name", "string", "name", 0, NAME_DESC),
            ("Holder", "string", "", 0, "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field."),
            ("Age", "string", "", 0, AGE_DESC),
        ],
        _ => &[("Name", "string", "name", 0, NAME_DESC), ("Created At", "date", "", 0, AGE_DESC)],
    }
}

/// Column definitions for one object of the given storage, as kube-apiserver's printers
/// declare them (names, types, `-o wide` priorities and descriptions).
fn columns(storage: &str) -> Vec<Value> {
    column_defs(storage)
        .iter()
        .map(|(name, ty, format, priority, description)| {
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// Pod STATUS column: Terminating, a waiting reason, or the phase.
pub fn pod_status(pod: &Value) -> String {
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    if let Some(reason) = pod["status"]["reason"].as_str() {
        return reason.to_string();
    }
    if let Some(statuses) = pod["status"]["containerStatuses"].as_array() {
        for s in statuses {
            if let Some(r) = s["state"]["waiting"]["reason"].as_str() {
                return r.to_string();
            }
        }
    }
    pod["status"]["phase"]
        .as_str()
        .unwrap_or("Pending")
        .to_string()
}

fn cells(storage: &str, obj: &Value) -> Vec<Value> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    match storage {
        "pods" => {
            let total = obj["spec"]["containers"].as_array().map_or(0, Vec::len);
            let statuses = obj["status"]["containerStatuses"].as_array();
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter().filter_map(|c| c["restartCount"].as_i64()).sum()
            });
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(pod_status(obj)),
                json!(restarts.to_string()),
                json!(age(obj)),
                json!(or_none(obj["status"]["podIP"].as_str().unwrap_or(""))),
                json!(or_none(obj["spec"]["nodeName"].as_str().unwrap_or(""))),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        "nodes" => {
            let ready = obj["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["status"].as_str());
            let mut status = match ready {
                Some("True") => "Ready".to_string(),
                Some("False") => "NotReady".to_string(),
                _ => "Unknown".to_string(),
            };
            if obj["spec"]["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<&str> = obj["metadata"]["labels"]
                .as_object()
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            let addr = |t: &str| {
                obj["status"]["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["type"] == t))
                    .and_then(|x| x["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string()
            };
            let info = &obj["status"]["nodeInfo"];
            vec![
                json!(name),
                json!(status),
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                }),
                json!(age(obj)),
                json!(info["kubeletVersion"].as_str().unwrap_or("")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(info["osImage"].as_str().unwrap_or("<unknown>")),
                json!(info["kernelVersion"].as_str().unwrap_or("<unknown>")),
                json!(info["containerRuntimeVersion"]
                    .as_str()
                    .unwrap_or("<unknown>")),
            ]
        }
        "poddisruptionbudgets" => {
            let show = |v: &Value| match v {
                Value::Null => "N/A".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vec![
                json!(name),
                json!(show(&obj["spec"]["minAvailable"])),
                json!(show(&obj["spec"]["maxUnavailable"])),
                json!(obj["status"]["disruptionsAllowed"].as_i64().unwrap_or(0)),
                json!(age(obj)),
            ]
        }
        "events" => {
            // events.k8s.io/v1 or core/v1 field names, whichever the object has.
            let pick = |a: &str, b: &str| {
                if obj[a].is_null() {
                    obj[b].clone()
                } else {
                    obj[a].clone()
                }
            };
            let r = pick("regarding", "involvedObject");
            let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
            let source = [
                pick("reportingController", "reportingComponent"),
                obj["reportingInstance"].clone(),
            ];
            let source = source
                .iter()
                .filter_map(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
            let count = obj["series"]["count"]
                .as_i64()
                .or_else(|| obj["deprecatedCount"].as_i64())
                .or_else(|| obj["count"].as_i64())
                .unwrap_or(1);
            vec![
                json!(age(obj)),
                json!(obj["type"].as_str().unwrap_or("")),
                json!(obj["reason"].as_str().unwrap_or("")),
                json!(format!("{}/{}", kind, r["name"].as_str().unwrap_or(""))),
                json!(r["fieldPath"].as_str().unwrap_or("")),
                json!(source),
                json!(pick("note", "message").as_str().unwrap_or("")),
                json!(age(obj)),
                json!(count),
                json!(name),
            ]
        }
        "deployments" => {
            let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let st = &obj["status"];
            let int = |k: &str| st[k].as_i64().unwrap_or(0);
            vec![
                json!(name),
                json!(format!("{}/{want}", int("readyReplicas"))),
                json!(int("updatedReplicas")),
                json!(int("availableReplicas")),
                json!(age(obj)),
                json!(containers(obj, "name")),
                json!(containers(obj, "image")),
                json!(selector(&obj["spec"]["selector"])),
            ]
        }
        "replicasets" => {
            let st = &obj["status"];
            vec![
                json!(name),
                json!(obj["spec"]["replicas"].as_i64().unwrap_or(1)),
                json!(st["replicas"].as_i64().unwrap_or(0)),
                json!(st["readyReplicas"].as_i64().unwrap_or(0)),
                json!(age(obj)),
                json!(containers(obj, "name")),
                json!(containers(obj, "image")),
                json!(selector(&obj["spec"]["selector"])),
            ]
        }
        "statefulsets" => {
            let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = obj["status"]["readyReplicas"].as_i64().unwrap_or(0);
            vec![
                json!(name),
                json!(format!("{ready}/{want}")),
                json!(age(obj)),
                json!(containers(obj, "name")),
                json!(containers(obj, "image")),
            ]
        }
        "daemonsets" => {
            let st = &obj["status"];
            let int = |k: &str| st[k].as_i64().unwrap_or(0);
            let node_selector = obj["spec"]["template"]["spec"]["nodeSelector"]
                .as_object()
                .filter(|m| !m.is_empty())
                .map_or("<none>".to_string(), |m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                });
            vec![
                json!(name),
                json!(int("desiredNumberScheduled")),
                json!(int("currentNumberScheduled")),
                json!(int("numberReady")),
                json!(int("updatedNumberScheduled")),
                json!(int("numberAvailable")),
                json!(node_selector),
                json!(age(obj)),
                json!(containers(obj, "name")),
                json!(containers(obj, "image")),
                json!(selector(&obj["spec"]["selector"])),
            ]
        }
        "namespaces" => vec![
            json!(name),
            json!(obj["status"]["phase"].as_str().unwrap_or("")),
            json!(age(obj)),
        ],
        "configmaps" => {
            let data = obj["data"].as_object().map_or(0, |m| m.len())
                + obj["binaryData"].as_object().map_or(0, |m| m.len());
            vec![json!(name), json!(data), json!(age(obj))]
        }
        "leases" => vec![
            json!(name),
            json!(obj["spec"]["holderIdentity"].as_str().unwrap_or("")),
            json!(age(obj)),
        ],
        _ => vec![json!(name), obj["metadata"]["creationTimestamp"].clone()],
    }
}

/// The template's containers' names or images, comma-separated (the wide columns).
fn containers(obj: &Value, field: &str) -> String {
    obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c[field].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A label selector as `metav1.LabelSelectorAsSelector(...).String()` prints it: its
/// requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`.
fn selector(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    if let Some(es) = sel["matchExpressions"].as_array() {
        for e in es {
            let key = e["key"].as_str().unwrap_or("").to_string();
            let mut values: Vec<&str> = e["values"]
                .as_array()
                .map(|vs| vs.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            values.sort_unstable();
            let text = match e["operator"].as_str().unwrap_or("") {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.clone(),
                _ => format!("!{key}"),
            };
            reqs.push((key, text));
        }
    }
    reqs.sort();
    if reqs.is_empty() {
        return "<none>".into();
    }
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

/// How much of each object a Table row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The full object.
    Object,
    /// Nothing.
    None,
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::Object => obj.clone(),
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => {
            let mut meta = obj["metadata"].clone();
            if obj["kind"] == "DaemonSet" {
                // apps/v1 shows the internal spec.templateGeneration as this annotation; the
                // Table's metadata is the internal object's, without it.
                if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                    a.remove("deprecated.daemonset.template.generation");
                    if a.is_empty() {
                        if let Some(m) = meta.as_object_mut() {
                            m.remove("annotations");
                        }
                    }
                }
            }
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
        }
    }
}

/// One Table row for an object.
pub fn row(storage: &str, obj: &Value, include: IncludeObject) -> Value {
    json!({"cells": cells(storage, obj), "object": row_object(obj, include)})
}

/// A whole Table for a list of objects.
pub fn table<'a>(
    storage: &str,
    objs: impl Iterator<Item = &'a Value>,
    rv: u64,
    cont: Option<String>,
    include: IncludeObject,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": columns(storage),
        "rows": objs.map(|o| row(storage, o, include)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_print_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(130), "2m10s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 5 * 60), "3h5m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
    }

    #[test]
    fn cordoned_ready_node_shows_scheduling_disabled() {
        let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(cells("nodes", &node)[1], json!("Ready,SchedulingDisabled"));
    }

    #[test]
    fn deleting_pod_shows_terminating() {
        let pod = json!({"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&pod), "Terminating");
    }
}
