//! What kube-apiserver fills in on the objects it stores: the API's defaulting functions
//! (`SetDefaults_*` of core/v1 and apps/v1) for the kinds the simulator serves, the admission
//! plugins every cluster runs on a new pod (ServiceAccount, DefaultTolerationSeconds,
//! Priority) and the create strategies (`metadata.generation`, a new pod's status).
//!
//! Checked field for field against kube-apiserver v1.34 by the conformance suite
//! (`crates/termguard/tests/conformance.rs`): without these a pod read back from the
//! simulator lacks the service-account volume, the default tolerations, `dnsPolicy`,
//! `qosClass` and a dozen more fields every real pod has.

use crate::controllers::podutil::MIRROR;
use crate::resources::ResourceDef;
use serde_json::{json, Map, Value};

/// Resources whose objects carry `metadata.generation` (their strategies set it to 1 on
/// create and bump it when the spec changes); nodes, namespaces, configmaps, events and
/// leases have none.
pub const WITH_GENERATION: &[&str] = &[
    "pods",
    "deployments",
    "replicasets",
    "daemonsets",
    "statefulsets",
    "poddisruptionbudgets",
];

/// Whether objects of this resource carry `metadata.generation`.
pub fn has_generation(res: &ResourceDef) -> bool {
    WITH_GENERATION.contains(&res.storage)
}

/// Defaults applied to every write (create, replace, patch), as the decoder applies them.
pub fn on_write(res: &ResourceDef, obj: &mut Value) {
    match res.storage {
        "pods" => {
            if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
                pod_spec(spec);
                set(spec, "enableServiceLinks", json!(true));
            }
        }
        "deployments" => {
            let spec = &mut obj["spec"];
            set(spec, "replicas", json!(1));
            set(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            pod_spec(&mut spec["template"]["spec"]);
        }
        "replicasets" => {
            set(&mut obj["spec"], "replicas", json!(1));
            pod_spec(&mut obj["spec"]["template"]["spec"]);
        }
        "daemonsets" => {
            let spec = &mut obj["spec"];
            set(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            set(spec, "revisionHistoryLimit", json!(10));
            pod_spec(&mut spec["template"]["spec"]);
        }
        "statefulsets" => {
            let spec = &mut obj["spec"];
            set(spec, "replicas", json!(1));
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            set(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set(spec, "revisionHistoryLimit", json!(10));
            set(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            pod_spec(&mut spec["template"]["spec"]);
        }
        "events" => {
            // Stored as events.k8s.io/v1; Go writes these deprecated fields even when unset.
            if let Some(m) = obj.as_object_mut() {
                m.entry("deprecatedSource").or_insert_with(|| json!({}));
                m.entry("deprecatedFirstTimestamp").or_insert(Value::Null);
                m.entry("deprecatedLastTimestamp").or_insert(Value::Null);
                m.entry("eventTime").or_insert(Value::Null);
            }
        }
        "namespaces" => {
            let name = obj["metadata"]["name"].clone();
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            set(&mut obj["spec"], "finalizers", json!(["kubernetes"]));
            set(&mut obj["status"], "phase", json!("Active"));
        }
        _ => {}
    }
}

/// What happens to a new object only: its generation, and for a pod the admission plugins
/// and a fresh status. `suffix` names the service-account volume (`kube-api-access-XXXXX`).
pub fn on_create(res: &ResourceDef, obj: &mut Value, suffix: &str) {
    on_write(res, obj);
    if has_generation(res) {
        obj["metadata"]["generation"] = json!(1);
    }
    if res.storage == "pods" {
        admit_pod(obj, suffix);
        if obj["status"]["phase"].is_null() {
            obj["status"]["phase"] = json!("Pending");
        }
        obj["status"]["qosClass"] = json!(qos_class(&obj["spec"]));
    }
}

fn set(obj: &mut Value, key: &str, v: Value) {
    if !obj.is_object() {
        *obj = json!({});
    }
    if obj[key].is_null() {
        obj[key] = v;
    }
}

/// `SetDefaults_PodSpec` and `SetDefaults_Container`, for pods and pod templates alike.
fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
    if let Some(vs) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vs {
            for source in ["secret", "configMap", "projected", "downwardAPI"] {
                if v[source].is_object() {
                    set(&mut v[source], "defaultMode", json!(420));
                }
            }
        }
    }
}

fn container(c: &mut Value) {
    set(c, "resources", json!({}));
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    let image = c["image"].as_str().unwrap_or("");
    // The tag is what follows the last `:` after the last `/` (a registry may have a port).
    let tag = image
        .rsplit('/')
        .next()
        .and_then(|last| last.split('@').next())
        .and_then(|last| last.rsplit_once(':').map(|(_, t)| t));
    let policy = match tag {
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    };
    set(c, "imagePullPolicy", json!(policy));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set(p, "protocol", json!("TCP"));
        }
    }
    // Requests default to the limits they lack.
    if let Some(limits) = c["resources"]["limits"].as_object().cloned() {
        if !c["resources"]["requests"].is_object() {
            c["resources"]["requests"] = json!({});
        }
        for (k, v) in limits {
            if c["resources"]["requests"][&k].is_null() {
                c["resources"]["requests"][&k] = v;
            }
        }
    }
}

/// The admission plugins of a default kube-apiserver that change a new pod.
fn admit_pod(pod: &mut Value, suffix: &str) {
    let mirror = pod["metadata"]["annotations"][MIRROR].is_string();
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    // ServiceAccount: the default account and its token volume (mirror pods get neither).
    if !mirror {
        set(spec, "serviceAccountName", json!("default"));
        let sa = spec["serviceAccountName"].clone();
        set(spec, "serviceAccount", sa);
        if spec["automountServiceAccountToken"] != false {
            add_token_volume(spec, suffix);
        }
    }
    // DefaultTolerationSeconds.
    let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let tolerates = |key: &str| {
        tolerations.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let mut added = tolerations.clone();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerates(key) {
            added.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    if !added.is_empty() {
        spec["tolerations"] = json!(added);
    }
    // Priority: the class's value (the simulator knows the two system classes), else 0.
    if spec["priority"].is_null() {
        spec["priority"] = json!(match spec["priorityClassName"].as_str() {
            Some("system-node-critical") => 2_000_001_000,
            Some("system-cluster-critical") => 2_000_000_000,
            _ => 0,
        });
    }
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
}

fn add_token_volume(spec: &mut Value, suffix: &str) {
    const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let mounted = |spec: &Value| {
        spec["containers"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["volumeMounts"]
                    .as_array()
                    .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == MOUNT))
            })
        })
    };
    if mounted(spec) {
        return;
    }
    let name = format!("kube-api-access-{suffix}");
    let volume = json!({"name": name, "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ], "defaultMode": 420}});
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(vs) => vs.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let mount = json!({"name": name, "readOnly": true, "mountPath": MOUNT});
                match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    Some(ms) => ms.push(mount),
                    None => c["volumeMounts"] = json!([mount]),
                }
            }
        }
    }
}

/// `qos.GetPodQOS`: Guaranteed when every container has equal CPU and memory requests and
/// limits, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| spec[*l].as_array())
        .flatten()
        .collect();
    let empty = Map::new();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = c["resources"]["requests"].as_object().unwrap_or(&empty);
        let lim = c["resources"]["limits"].as_object().unwrap_or(&empty);
        let counted = |m: &Map<String, Value>| m.keys().any(|k| k == "cpu" || k == "memory");
        any |= counted(req) || counted(lim);
        for r in ["cpu", "memory"] {
            if lim.get(r).is_none() || lim.get(r) != req.get(r).or(lim.get(r)) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{DEPLOYMENTS, NODES, PODS};

    #[test]
    fn a_new_pod_gets_what_kube_apiserver_adds() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "r/c:1.0"}]}});
        on_create(&PODS, &mut pod, "abcde");
        let spec = &pod["spec"];
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["volumes"][0]["name"], "kube-api-access-abcde");
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0]["mountPath"],
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2));
        assert_eq!(spec["priority"], 0);
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["metadata"]["generation"], 1);
    }

    #[test]
    fn tolerating_everything_adds_no_default_tolerations() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "c"}]}});
        on_create(&PODS, &mut pod, "abcde");
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(1));
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    }

    #[test]
    fn qos_follows_requests_and_limits() {
        let spec = |r: Value| json!({"containers": [{"name": "c", "resources": r}]});
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&spec(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&spec(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
    }

    #[test]
    fn deployments_get_a_strategy_and_nodes_no_generation() {
        let mut d =
            json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": []}}}});
        on_create(&DEPLOYMENTS, &mut d, "x");
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        let mut n = json!({"metadata": {"name": "n"}, "spec": {}});
        on_create(&NODES, &mut n, "x");
        assert!(n["metadata"]["generation"].is_null());
    }
}
