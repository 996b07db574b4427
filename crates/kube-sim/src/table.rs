//! Server-side printing: `meta.k8s.io/v1` Table replies for kubectl (`spec/kube-api-surface.md`
//! §8.1). Without them kubectl prints only `NAME AGE`.

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

fn col(name: &str, ty: &str, priority: i32) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

/// Column definitions and cells for one object of the given storage.
fn columns(storage: &str) -> Vec<Value> {
    match storage {
        "pods" => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            col("Age", "string", 0),
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ],
        "nodes" => vec![
            col("Name", "string", 0),
            col("Status", "string", 0),
            col("Roles", "string", 0),
            col("Age", "string", 0),
            col("Version", "string", 0),
            col("Internal-IP", "string", 1),
            col("External-IP", "string", 1),
            col("OS-Image", "string", 1),
            col("Kernel-Version", "string", 1),
            col("Container-Runtime", "string", 1),
        ],
        "poddisruptionbudgets" => vec![
            col("Name", "string", 0),
            col("Min Available", "string", 0),
            col("Max Unavailable", "string", 0),
            col("Allowed Disruptions", "integer", 0),
            col("Age", "string", 0),
        ],
        "events" => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Message", "string", 0),
        ],
        "deployments" | "replicasets" | "statefulsets" => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Age", "string", 0),
        ],
        "daemonsets" => vec![
            col("Name", "string", 0),
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            col("Age", "string", 0),
        ],
        _ => vec![col("Name", "string", 0), col("Age", "string", 0)],
    }
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
            let r = &obj["regarding"];
            let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
            vec![
                json!(age(obj)),
                json!(obj["type"].as_str().unwrap_or("")),
                json!(obj["reason"].as_str().unwrap_or("")),
                json!(format!("{}/{}", kind, r["name"].as_str().unwrap_or(""))),
                json!(obj["note"].as_str().unwrap_or("")),
            ]
        }
        "deployments" | "replicasets" | "statefulsets" => {
            let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = obj["status"]["readyReplicas"].as_i64().unwrap_or(0);
            vec![
                json!(name),
                json!(format!("{ready}/{want}")),
                json!(age(obj)),
            ]
        }
        "daemonsets" => vec![
            json!(name),
            json!(obj["status"]["desiredNumberScheduled"]
                .as_i64()
                .unwrap_or(0)),
            json!(obj["status"]["currentNumberScheduled"]
                .as_i64()
                .unwrap_or(0)),
            json!(obj["status"]["numberReady"].as_i64().unwrap_or(0)),
            json!(age(obj)),
        ],
        _ => vec![json!(name), json!(age(obj))],
    }
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
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"].clone(),
        }),
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
