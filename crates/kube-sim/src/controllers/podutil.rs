//! Small readers over pod and node JSON shared by the controllers.

use serde_json::Value;

/// Simulated start-up time annotation (milliseconds from binding to Ready).
pub const STARTUP_MS: &str = "sim.termguard.io/startup-ms";
/// Simulated shutdown time annotation (milliseconds from SIGTERM to exit).
pub const SHUTDOWN_MS: &str = "sim.termguard.io/shutdown-ms";
/// "true": the pod never exits once asked to stop and stays Terminating (a wedged kubelet or
/// runtime); the real control plane's KWOK stages read the same annotation.
pub const NEVER_EXIT: &str = "sim.termguard.io/never-exit";
/// Annotation kubelets put on mirror pods of static pods.
pub const MIRROR: &str = "kubernetes.io/config.mirror";

/// The node a pod is bound to ("" when pending).
pub fn node_name(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

/// Whether the pod has been asked to terminate.
pub fn terminating(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_string()
}

/// Pod phase (Pending when unset).
pub fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("Pending")
}

/// Whether the pod has finished (Succeeded or Failed).
pub fn finished(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether a condition of the given type is True.
pub fn condition_true(obj: &Value, ty: &str) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .is_some_and(|c| c["status"] == "True")
}

/// Whether the pod is Ready and not terminating.
pub fn healthy(pod: &Value) -> bool {
    !terminating(pod) && condition_true(pod, "Ready")
}

/// The controlling owner reference's (kind, name, uid), if any.
pub fn controller_of(obj: &Value) -> Option<(&str, &str, &str)> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|o| o["controller"] == true)
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or(""),
                o["uid"].as_str().unwrap_or(""),
            )
        })
}

/// A millisecond annotation on the pod, or a default.
pub fn millis(pod: &Value, key: &str, default: u64) -> u64 {
    pod["metadata"]["annotations"][key]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Parses a Kubernetes quantity into milli-units (cpu) or bytes (memory), approximately.
pub fn quantity_milli(q: &Value) -> i64 {
    let s = match q {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return 0,
    };
    let (num, mult): (&str, f64) = if let Some(n) = s.strip_suffix('m') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("Ki") {
        (n, 1024.0 * 1000.0)
    } else if let Some(n) = s.strip_suffix("Mi") {
        (n, 1024.0 * 1024.0 * 1000.0)
    } else if let Some(n) = s.strip_suffix("Gi") {
        (n, 1024.0 * 1024.0 * 1024.0 * 1000.0)
    } else if let Some(n) = s.strip_suffix('k') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('M') {
        (n, 1e9)
    } else if let Some(n) = s.strip_suffix('G') {
        (n, 1e12)
    } else {
        (s.as_str(), 1000.0)
    };
    num.parse::<f64>().map(|n| (n * mult) as i64).unwrap_or(0)
}

/// Summed container requests of a pod for a resource, in milli-units.
pub fn request_milli(pod: &Value, resource: &str) -> i64 {
    pod["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| quantity_milli(&c["resources"]["requests"][resource]))
                .sum()
        })
        .unwrap_or(0)
}

/// Whether the pod tolerates a taint.
pub fn tolerates(pod: &Value, taint: &Value) -> bool {
    let key = taint["key"].as_str().unwrap_or("");
    let effect = taint["effect"].as_str().unwrap_or("");
    let value = taint["value"].as_str().unwrap_or("");
    pod["spec"]["tolerations"].as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            let t_effect = t["effect"].as_str().unwrap_or("");
            if !t_effect.is_empty() && t_effect != effect {
                return false;
            }
            let t_key = t["key"].as_str().unwrap_or("");
            match t["operator"].as_str().unwrap_or("Equal") {
                "Exists" => t_key.is_empty() || t_key == key,
                _ => t_key == key && t["value"].as_str().unwrap_or("") == value,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_to_milli_units() {
        assert_eq!(quantity_milli(&json!("250m")), 250);
        assert_eq!(quantity_milli(&json!("2")), 2000);
        assert_eq!(quantity_milli(&json!(1)), 1000);
        assert_eq!(quantity_milli(&json!("1Gi")), 1024 * 1024 * 1024 * 1000);
    }

    #[test]
    fn toleration_operators() {
        let taint = json!({"key": "termguard.io/terminating", "value": "AZRebalance", "effect": "NoSchedule"});
        assert!(tolerates(
            &json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
            &taint
        ));
        assert!(tolerates(
            &json!({"spec": {"tolerations": [{"key": "termguard.io/terminating", "operator": "Exists"}]}}),
            &taint
        ));
        assert!(!tolerates(
            &json!({"spec": {"tolerations": [{"key": "other", "operator": "Exists"}]}}),
            &taint
        ));
        assert!(!tolerates(&json!({"spec": {}}), &taint));
        assert!(!tolerates(
            &json!({"spec": {"tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}}),
            &taint
        ));
    }
}
