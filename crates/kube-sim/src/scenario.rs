//! Scenario files (YAML): nodes (explicit or as groups spread over zones, named and labelled
//! like EKS nodes), and workloads with replicas, priority classes, PDBs, start-up and
//! shutdown durations, grace periods and emptyDir volumes.

use crate::controllers::podutil::{SHUTDOWN_MS, STARTUP_MS};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A whole scenario.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    #[serde(default)]
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Region of every node (default us-east-1).
    #[serde(default = "default_region")]
    pub region: String,
    /// Pod timing defaults.
    #[serde(default)]
    pub defaults: Defaults,
    /// Groups of identical nodes spread over zones.
    #[serde(default)]
    pub node_groups: Vec<NodeGroup>,
    /// Individually listed nodes.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// Workloads.
    #[serde(default)]
    pub workloads: Vec<Workload>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Timing defaults for pods.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    /// Milliseconds from binding to Ready.
    #[serde(default = "default_startup")]
    pub startup_ms: u64,
    /// Milliseconds from SIGTERM to exit.
    #[serde(default = "default_shutdown")]
    pub shutdown_ms: u64,
}

fn default_startup() -> u64 {
    200
}
fn default_shutdown() -> u64 {
    100
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            startup_ms: default_startup(),
            shutdown_ms: default_shutdown(),
        }
    }
}

/// Node capacity.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capacity {
    /// CPU quantity.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Memory quantity.
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Maximum pods.
    #[serde(default = "default_pods")]
    pub pods: u32,
}

fn default_cpu() -> String {
    "4".into()
}
fn default_memory() -> String {
    "16Gi".into()
}
fn default_pods() -> u32 {
    110
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            cpu: default_cpu(),
            memory: default_memory(),
            pods: default_pods(),
        }
    }
}

/// A group of nodes, `per_zone` in each zone (an Auto Scaling group spanning zones).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    /// Group name (the Auto Scaling group / node group).
    pub name: String,
    /// Zones the group spans.
    pub zones: Vec<String>,
    /// Nodes per zone.
    #[serde(default = "one")]
    pub per_zone: u32,
    /// EC2 instance type.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// Capacity of each node.
    #[serde(default)]
    pub capacity: Capacity,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints.
    #[serde(default)]
    pub taints: Vec<Value>,
}

fn one() -> u32 {
    1
}
fn default_instance_type() -> String {
    "m5.large".into()
}

/// One node.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    /// Node name; EKS private-DNS form by default.
    #[serde(default)]
    pub name: String,
    /// Availability zone.
    pub zone: String,
    /// EC2 instance id; derived from the name when empty.
    #[serde(default)]
    pub instance_id: String,
    /// EC2 instance type.
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    /// Node group it belongs to.
    #[serde(default)]
    pub group: String,
    /// Capacity.
    #[serde(default)]
    pub capacity: Capacity,
    /// Extra labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints.
    #[serde(default)]
    pub taints: Vec<Value>,
}

/// Workload kinds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// A bare pod with no controller.
    Pod,
    /// A static pod, seen through its mirror pod.
    StaticPod,
}

/// A PodDisruptionBudget for a workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PdbSpec {
    /// `minAvailable` (number or percentage).
    #[serde(default)]
    pub min_available: Option<Value>,
    /// `maxUnavailable` (number or percentage).
    #[serde(default)]
    pub max_unavailable: Option<Value>,
}

/// One workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Kind.
    pub kind: WorkloadKind,
    /// Name.
    pub name: String,
    /// Namespace (default `default`).
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// Replicas (Deployment, StatefulSet).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Pod labels (default `app: <name>`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Pod annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Priority class.
    #[serde(default)]
    pub priority_class_name: Option<String>,
    /// Start-up time override.
    #[serde(default)]
    pub startup_ms: Option<u64>,
    /// Shutdown time override.
    #[serde(default)]
    pub shutdown_ms: Option<u64>,
    /// Grace period (default 30).
    #[serde(default)]
    pub termination_grace_period_seconds: Option<i64>,
    /// Whether pods mount an emptyDir volume.
    #[serde(default)]
    pub empty_dir: bool,
    /// Container requests.
    #[serde(default)]
    pub requests: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default)]
    pub tolerations: Vec<Value>,
    /// Node selector.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Node (Pod, StaticPod): bare pods are bound to it; static pods run on it. For static
    /// pods, `*` means every node.
    #[serde(default)]
    pub node: Option<String>,
    /// PodDisruptionBudget over the workload's pods.
    #[serde(default)]
    pub pdb: Option<PdbSpec>,
    /// StatefulSet pod management (`OrderedReady` by default, or `Parallel`).
    #[serde(default)]
    pub pod_management_policy: Option<String>,
}

fn default_ns() -> String {
    "default".into()
}

/// Reading a scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading scenario {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The YAML is not a scenario.
    #[error("parsing scenario: {0}")]
    Parse(#[from] serde_yaml_ng::Error),
    /// The scenario is inconsistent.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Parses YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = serde_yaml_ng::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Reads a scenario file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let mut names = std::collections::HashSet::new();
        for n in self.all_nodes() {
            if !names.insert(n.name.clone()) {
                return Err(ScenarioError::Invalid(format!(
                    "node {} is listed twice",
                    n.name
                )));
            }
        }
        for w in &self.workloads {
            if matches!(w.kind, WorkloadKind::Pod | WorkloadKind::StaticPod)
                && w.node.is_none()
                && w.kind == WorkloadKind::StaticPod
            {
                return Err(ScenarioError::Invalid(format!(
                    "static pod {} needs a node",
                    w.name
                )));
            }
        }
        Ok(())
    }

    /// Every node: the explicit ones, then each group's, zone by zone.
    pub fn all_nodes(&self) -> Vec<NodeSpec> {
        // Unnamed nodes are numbered within their zone, so two in one zone get two names.
        let mut per_zone: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        let mut out: Vec<NodeSpec> = self
            .nodes
            .iter()
            .cloned()
            .map(|mut n| {
                if n.name.is_empty() {
                    let i = per_zone.entry(n.zone.clone()).or_default();
                    n.name = private_dns_name(&n.zone, *i);
                    *i += 1;
                }
                n
            })
            .collect();
        for (gi, g) in self.node_groups.iter().enumerate() {
            for (zi, zone) in g.zones.iter().enumerate() {
                for i in 0..g.per_zone {
                    let name = format!("ip-10-{}-{}-{}.ec2.internal", gi, zi + 1, 10 + i);
                    out.push(NodeSpec {
                        name,
                        zone: zone.clone(),
                        instance_id: String::new(),
                        instance_type: g.instance_type.clone(),
                        group: g.name.clone(),
                        capacity: g.capacity.clone(),
                        labels: g.labels.clone(),
                        taints: g.taints.clone(),
                    });
                }
            }
        }
        out
    }
}

fn private_dns_name(zone: &str, i: u32) -> String {
    let z = zone
        .bytes()
        .last()
        .map_or(1, |b| (b.saturating_sub(b'a')) as u32 + 1);
    format!("ip-10-0-{z}-{}.ec2.internal", 20 + i)
}

/// A deterministic EC2-style instance id for a node name.
pub fn instance_id_for(name: &str) -> String {
    let h = name.bytes().fold(0xcbf29ce484222325u64, |a, b| {
        (a ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("i-0{:016x}", h)[..19].to_string()
}

/// A boot id for a node's first boot, stable for its name: the kubelet reports the kernel's
/// (a UUID), which changes on every boot of the instance.
pub fn boot_id_for(name: &str) -> String {
    let hash = |seed: u64| {
        name.bytes()
            .fold(seed, |a, b| (a ^ b as u64).wrapping_mul(0x100000001b3))
    };
    let h = format!(
        "{:016x}{:016x}",
        hash(0xcbf29ce484222325),
        hash(0x84222325cbf29ce4)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The Node object for a node spec, labelled like an EKS node.
pub fn node_object(n: &NodeSpec, region: &str) -> Value {
    let instance_id = if n.instance_id.is_empty() {
        instance_id_for(&n.name)
    } else {
        n.instance_id.clone()
    };
    let ip = n
        .name
        .strip_prefix("ip-")
        .and_then(|s| s.split('.').next())
        .map(|s| s.replace('-', "."))
        .unwrap_or_else(|| "10.0.0.1".into());
    let mut labels = json!({
        "kubernetes.io/hostname": n.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        // The node lifecycle controller adds the deprecated beta labels to every node.
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": n.zone,
        "topology.kubernetes.io/region": region,
        "failure-domain.beta.kubernetes.io/zone": n.zone,
        "node.kubernetes.io/instance-type": n.instance_type,
        "beta.kubernetes.io/instance-type": n.instance_type,
    });
    if !n.group.is_empty() {
        labels["eks.amazonaws.com/nodegroup"] = json!(n.group);
    }
    for (k, v) in &n.labels {
        labels[k] = json!(v);
    }
    let cap = json!({"cpu": n.capacity.cpu, "memory": n.capacity.memory, "pods": n.capacity.pods.to_string(), "ephemeral-storage": "80Gi"});
    let now = crate::store::now_rfc3339();
    let mut spec = json!({"providerID": format!("aws:///{}/{}", n.zone, instance_id)});
    if !n.taints.is_empty() {
        spec["taints"] = json!(n.taints);
    }
    json!({
        "metadata": {"name": n.name, "labels": labels, "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": spec,
        "status": {
            "capacity": cap, "allocatable": cap,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": now, "lastTransitionTime": now, "message": "kubelet has sufficient memory available"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "lastHeartbeatTime": now, "lastTransitionTime": now, "message": "kubelet has no disk pressure"},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "lastHeartbeatTime": now, "lastTransitionTime": now, "message": "kubelet has sufficient PID available"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now, "message": "kubelet is posting ready status"}
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": n.name}, {"type": "InternalDNS", "address": n.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"kubeletVersion": "v1.32.0-eks", "kubeProxyVersion": "v1.32.0-eks", "osImage": "Amazon Linux 2023",
                "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.0", "operatingSystem": "linux", "architecture": "amd64",
                "machineID": "", "systemUUID": "", "bootID": boot_id_for(&n.name)}
        }
    })
}

/// The pod template of a workload.
pub fn pod_template(w: &Workload, defaults: &Defaults) -> Value {
    let labels: BTreeMap<String, String> = if w.labels.is_empty() {
        BTreeMap::from([("app".to_string(), w.name.clone())])
    } else {
        w.labels.clone()
    };
    let mut annotations = w.annotations.clone();
    annotations.insert(
        STARTUP_MS.into(),
        w.startup_ms.unwrap_or(defaults.startup_ms).to_string(),
    );
    annotations.insert(
        SHUTDOWN_MS.into(),
        w.shutdown_ms.unwrap_or(defaults.shutdown_ms).to_string(),
    );
    let mut container =
        json!({"name": w.name, "image": format!("registry.example/{}:1.0", w.name)});
    if !w.requests.is_empty() {
        container["resources"] = json!({"requests": w.requests});
    }
    let mut spec = json!({
        "containers": [container],
        "terminationGracePeriodSeconds": w.termination_grace_period_seconds.unwrap_or(30),
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
    });
    if w.empty_dir {
        spec["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
        spec["containers"][0]["volumeMounts"] =
            json!([{"name": "scratch", "mountPath": "/scratch"}]);
    }
    if let Some(pc) = &w.priority_class_name {
        spec["priorityClassName"] = json!(pc);
        let prio = match pc.as_str() {
            "system-node-critical" => 2_000_001_000,
            "system-cluster-critical" => 2_000_000_000,
            _ => 1000,
        };
        spec["priority"] = json!(prio);
    }
    if !w.tolerations.is_empty() {
        spec["tolerations"] = json!(w.tolerations);
    }
    if !w.node_selector.is_empty() {
        spec["nodeSelector"] = json!(w.node_selector);
    }
    json!({"metadata": {"labels": labels, "annotations": annotations}, "spec": spec})
}

/// Objects to create, each with its resource type.
pub type Objects = Vec<(&'static crate::resources::ResourceDef, Value)>;
/// Static pod manifests as (node, manifest) pairs.
pub type StaticPods = Vec<(String, Value)>;

/// The objects of one workload (controller or pod, plus its PDB), and its static pods.
pub fn workload_objects(
    w: &Workload,
    defaults: &Defaults,
    nodes: &[NodeSpec],
) -> (Objects, StaticPods) {
    use crate::resources::{DAEMONSETS, DEPLOYMENTS, PDBS, PODS, STATEFULSETS};
    let template = pod_template(w, defaults);
    let selector = json!({"matchLabels": template["metadata"]["labels"]});
    let meta =
        json!({"name": w.name, "namespace": w.namespace, "labels": template["metadata"]["labels"]});
    let mut objs = Vec::new();
    let mut statics = Vec::new();
    match w.kind {
        WorkloadKind::Deployment => objs.push((&DEPLOYMENTS, json!({"metadata": meta, "spec": {"replicas": w.replicas, "selector": selector, "template": template}}))),
        WorkloadKind::StatefulSet => objs.push((&STATEFULSETS, json!({"metadata": meta, "spec": {"replicas": w.replicas, "selector": selector, "template": template, "serviceName": w.name,
            "podManagementPolicy": w.pod_management_policy.as_deref().unwrap_or("OrderedReady")}}))),
        WorkloadKind::DaemonSet => objs.push((&DAEMONSETS, json!({"metadata": meta, "spec": {"selector": selector, "template": template}}))),
        WorkloadKind::Pod => {
            let mut pod = template.clone();
            pod["metadata"]["name"] = json!(w.name);
            pod["metadata"]["namespace"] = json!(w.namespace);
            if let Some(n) = &w.node {
                pod["spec"]["nodeName"] = json!(n);
            }
            objs.push((&PODS, pod));
        }
        WorkloadKind::StaticPod => {
            let targets: Vec<String> = match w.node.as_deref() {
                Some("*") => nodes.iter().map(|n| n.name.clone()).collect(),
                Some(n) => vec![n.to_string()],
                None => vec![],
            };
            for node in targets {
                let mut m = template.clone();
                m["metadata"]["name"] = json!(w.name);
                m["metadata"]["namespace"] = json!(w.namespace);
                statics.push((node, m));
            }
        }
    }
    if let Some(pdb) = &w.pdb {
        let mut spec = json!({"selector": selector});
        if let Some(v) = &pdb.min_available {
            spec["minAvailable"] = v.clone();
        }
        if let Some(v) = &pdb.max_unavailable {
            spec["maxUnavailable"] = v.clone();
        }
        objs.push((
            &PDBS,
            json!({"metadata": {"name": w.name, "namespace": w.namespace}, "spec": spec}),
        ));
    }
    (objs, statics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_groups_expand_per_zone_with_eks_names_and_provider_ids() {
        let s = Scenario::from_yaml(
            "nodeGroups:\n- name: g\n  zones: [us-east-1a, us-east-1b]\n  perZone: 2\n",
        )
        .ok();
        let nodes = s.map(|s| s.all_nodes()).unwrap_or_default();
        assert_eq!(nodes.len(), 4);
        assert!(nodes
            .iter()
            .all(|n| n.name.starts_with("ip-10-") && n.name.ends_with(".ec2.internal")));
        let obj = node_object(&nodes[0], "us-east-1");
        let pid = obj["spec"]["providerID"].as_str().unwrap_or("");
        assert!(pid.starts_with("aws:///us-east-1a/i-0"), "{pid}");
        assert_eq!(
            obj["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "us-east-1a"
        );
    }

    #[test]
    fn unnamed_nodes_in_one_zone_get_distinct_names() {
        let s = Scenario::from_yaml(
            "nodes:\n- {zone: us-east-1a}\n- {zone: us-east-1a}\n- {zone: us-east-1b}\n",
        );
        let names: Vec<String> = s
            .map(|s| s.all_nodes().into_iter().map(|n| n.name).collect())
            .unwrap_or_default();
        assert_eq!(
            names,
            [
                "ip-10-0-1-20.ec2.internal",
                "ip-10-0-1-21.ec2.internal",
                "ip-10-0-2-20.ec2.internal"
            ]
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(Scenario::from_yaml("nodez: []").is_err());
    }

    #[test]
    fn pod_template_carries_timings_priority_and_empty_dir() {
        let w: Workload = serde_yaml_ng::from_str("kind: Deployment\nname: pgb\npriorityClassName: system-cluster-critical\nemptyDir: true\nshutdownMs: 900\n").unwrap_or_else(|_| unreachable!());
        let t = pod_template(&w, &Defaults::default());
        assert_eq!(t["metadata"]["annotations"][SHUTDOWN_MS], "900");
        assert_eq!(t["spec"]["priorityClassName"], "system-cluster-critical");
        assert!(t["spec"]["volumes"][0]["emptyDir"].is_object());
    }
}
