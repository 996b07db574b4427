//! The resource types the simulator serves, and their discovery metadata.
//!
//! Discovery shapes follow `docs/simulator.md#discovery`: `pods/eviction` must name group
//! `policy` and version `v1`, or `kubectl drain` silently falls back to deleting pods.

/// One served resource type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ResourceDef {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name used in paths (`pods`).
    pub plural: &'static str,
    /// Singular name for discovery.
    pub singular: &'static str,
    /// Object kind (`Pod`).
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts (`po`).
    pub short_names: &'static [&'static str],
    /// Storage key shared by resources that are one object seen through two APIs (events).
    pub storage: &'static str,
}

impl ResourceDef {
    /// `apiVersion` as objects carry it (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name used in error messages: `pods`, `poddisruptionbudgets.policy`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

macro_rules! res {
    ($group:expr, $version:expr, $plural:expr, $singular:expr, $kind:expr, $ns:expr, $short:expr) => {
        ResourceDef {
            group: $group,
            version: $version,
            plural: $plural,
            singular: $singular,
            kind: $kind,
            namespaced: $ns,
            short_names: $short,
            storage: $plural,
        }
    };
}

/// Namespaces.
pub static NAMESPACES: ResourceDef = res!(
    "",
    "v1",
    "namespaces",
    "namespace",
    "Namespace",
    false,
    &["ns"]
);
/// Nodes.
pub static NODES: ResourceDef = res!("", "v1", "nodes", "node", "Node", false, &["no"]);
/// Pods.
pub static PODS: ResourceDef = res!("", "v1", "pods", "pod", "Pod", true, &["po"]);
/// ConfigMaps (for `kubectl create/apply` demos).
pub static CONFIGMAPS: ResourceDef = res!(
    "",
    "v1",
    "configmaps",
    "configmap",
    "ConfigMap",
    true,
    &["cm"]
);
/// Core/v1 events; stored together with events.k8s.io/v1 events.
pub static CORE_EVENTS: ResourceDef = res!("", "v1", "events", "event", "Event", true, &["ev"]);
/// events.k8s.io/v1 events (what kube-runtime's Recorder writes).
pub static EVENTS: ResourceDef = ResourceDef {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    singular: "event",
    kind: "Event",
    namespaced: true,
    short_names: &["ev"],
    storage: "events",
};
/// PodDisruptionBudgets.
pub static PDBS: ResourceDef = res!(
    "policy",
    "v1",
    "poddisruptionbudgets",
    "poddisruptionbudget",
    "PodDisruptionBudget",
    true,
    &["pdb"]
);
/// Deployments.
pub static DEPLOYMENTS: ResourceDef = res!(
    "apps",
    "v1",
    "deployments",
    "deployment",
    "Deployment",
    true,
    &["deploy"]
);
/// ReplicaSets.
pub static REPLICASETS: ResourceDef = res!(
    "apps",
    "v1",
    "replicasets",
    "replicaset",
    "ReplicaSet",
    true,
    &["rs"]
);
/// DaemonSets.
pub static DAEMONSETS: ResourceDef = res!(
    "apps",
    "v1",
    "daemonsets",
    "daemonset",
    "DaemonSet",
    true,
    &["ds"]
);
/// StatefulSets.
pub static STATEFULSETS: ResourceDef = res!(
    "apps",
    "v1",
    "statefulsets",
    "statefulset",
    "StatefulSet",
    true,
    &["sts"]
);
/// Leases.
pub static LEASES: ResourceDef = res!(
    "coordination.k8s.io",
    "v1",
    "leases",
    "lease",
    "Lease",
    true,
    &[]
);

/// Every served resource, in discovery order.
pub static ALL: &[&ResourceDef] = &[
    &NAMESPACES,
    &NODES,
    &PODS,
    &CONFIGMAPS,
    &CORE_EVENTS,
    &EVENTS,
    &PDBS,
    &DEPLOYMENTS,
    &REPLICASETS,
    &DAEMONSETS,
    &STATEFULSETS,
    &LEASES,
];

/// The served groups (besides core) and their single version, in the order kube-apiserver
/// lists them (kubectl resolves a name two groups share by this order).
pub static GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("events.k8s.io", "v1"),
    ("policy", "v1"),
    ("coordination.k8s.io", "v1"),
];

/// `storageVersionHash` of each served resource as kube-apiserver v1.34 reports it (a hash
/// of the storage group/version/kind; clients use it to notice storage migrations).
fn storage_version_hash(r: &ResourceDef) -> &'static str {
    match (r.group, r.plural) {
        ("", "namespaces") => "Q3oi5N2YM8M=",
        ("", "nodes") => "XwShjMxG9Fs=",
        ("", "pods") => "xPOwRZ+Yhw8=",
        ("", "configmaps") => "qFsyl6wFWjQ=",
        (_, "events") => "r2yiGXH7wu8=",
        ("policy", "poddisruptionbudgets") => "EVWiDmWqyJw=",
        ("apps", "deployments") => "8aSe+NMegvE=",
        ("apps", "replicasets") => "P1RzHs8/mWQ=",
        ("apps", "daemonsets") => "dd7pWHUlMKQ=",
        ("apps", "statefulsets") => "H+vl74LkKdo=",
        ("coordination.k8s.io", "leases") => "gqkMMb/YqFM=",
        _ => "",
    }
}

/// The `all` category (`kubectl get all`): pods and the workload controllers.
fn categories(r: &ResourceDef) -> &'static [&'static str] {
    match r.plural {
        "pods" | "deployments" | "replicasets" | "daemonsets" | "statefulsets" => &["all"],
        _ => &[],
    }
}

/// The verbs of a resource: namespaces cannot be deleted as a collection.
fn verbs(r: &ResourceDef) -> serde_json::Value {
    let verbs: Vec<&str> = ALL_VERBS
        .iter()
        .copied()
        .filter(|v| !(r.plural == "namespaces" && *v == "deletecollection"))
        .collect();
    serde_json::json!(verbs)
}

/// Finds the resource served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    ALL.iter()
        .copied()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by its storage key (the canonical def for that storage).
pub fn by_storage(storage: &str) -> Option<&'static ResourceDef> {
    ALL.iter().copied().find(|r| r.storage == storage)
}

/// The APIResourceList for one group/version, or `None` if it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<serde_json::Value> {
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources: Vec<serde_json::Value> = ALL
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            let mut v = serde_json::json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs(r),
            });
            if !r.short_names.is_empty() {
                v["shortNames"] = serde_json::json!(r.short_names);
            }
            if !categories(r).is_empty() {
                v["categories"] = serde_json::json!(categories(r));
            }
            v["storageVersionHash"] = serde_json::json!(storage_version_hash(r));
            v
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    if group.is_empty() {
        // The eviction subresource lives in the core list but names policy/v1
        // (`docs/simulator.md#discovery`): kubectl's CheckEvictionSupport looks for exactly this.
        resources.push(serde_json::json!({
            "name": "pods/eviction", "singularName": "", "namespaced": true,
            "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]
        }));
        resources.push(serde_json::json!({
            "name": "pods/status", "singularName": "", "namespaced": true,
            "kind": "Pod", "verbs": ["get", "patch", "update"]
        }));
        resources.push(serde_json::json!({
            "name": "nodes/status", "singularName": "", "namespaced": false,
            "kind": "Node", "verbs": ["get", "patch", "update"]
        }));
    }
    if group == "policy" {
        resources.push(serde_json::json!({
            "name": "poddisruptionbudgets/status", "singularName": "", "namespaced": true,
            "kind": "PodDisruptionBudget", "verbs": ["get", "patch", "update"]
        }));
    }
    if group == "apps" {
        for (sub, kind) in [
            ("deployments/status", "Deployment"),
            ("replicasets/status", "ReplicaSet"),
            ("statefulsets/status", "StatefulSet"),
            ("daemonsets/status", "DaemonSet"),
        ] {
            resources.push(serde_json::json!({
                "name": sub, "singularName": "", "namespaced": true,
                "kind": kind, "verbs": ["get", "patch", "update"]
            }));
        }
    }
    let mut list = serde_json::json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    });
    if group.is_empty() {
        // The core group's list carries no apiVersion (kube-apiserver writes it that way).
        if let Some(m) = list.as_object_mut() {
            m.remove("apiVersion");
        }
    }
    Some(list)
}

/// The Content-Type of an aggregated discovery document.
pub const AGGREGATED_CT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The subresources the simulator serves, per resource: (name, response group, version, kind,
/// verbs). The eviction subresource answers with a policy/v1 Eviction.
fn subresources(r: &ResourceDef) -> Vec<serde_json::Value> {
    let status = |kind: &str| {
        serde_json::json!({"subresource": "status", "responseKind": {"group": "", "version": "", "kind": kind},
            "verbs": ["get", "patch", "update"]})
    };
    match (r.group, r.plural) {
        ("", "pods") => vec![
            serde_json::json!({"subresource": "eviction",
                "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]}),
            status("Pod"),
        ],
        ("", "nodes")
        | ("policy", "poddisruptionbudgets")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") => {
            vec![status(r.kind)]
        }
        _ => vec![],
    }
}

/// The aggregated discovery document (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList) that
/// kubectl asks for first: of the core group for `/api`, of the other groups for `/apis`.
pub fn aggregated(core: bool) -> serde_json::Value {
    let groups: Vec<(&str, &str)> = if core {
        vec![("", "v1")]
    } else {
        GROUPS.to_vec()
    };
    let items: Vec<serde_json::Value> = groups
        .iter()
        .map(|(g, v)| {
            let mut defs: Vec<&&ResourceDef> = ALL
                .iter()
                .filter(|r| r.group == *g && r.version == *v)
                .collect();
            defs.sort_by_key(|r| r.plural);
            let resources: Vec<serde_json::Value> = defs
                .iter()
                .map(|r| {
                    let mut e = serde_json::json!({
                        "resource": r.plural,
                        "responseKind": {"group": "", "version": "", "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": r.singular,
                        "verbs": verbs(r),
                    });
                    if !r.short_names.is_empty() {
                        e["shortNames"] = serde_json::json!(r.short_names);
                    }
                    if !categories(r).is_empty() {
                        e["categories"] = serde_json::json!(categories(r));
                    }
                    let subs = subresources(r);
                    if !subs.is_empty() {
                        e["subresources"] = serde_json::json!(subs);
                    }
                    e
                })
                .collect();
            let metadata = if g.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::json!({"name": g})
            };
            serde_json::json!({"metadata": metadata, "versions": [
                {"version": v, "resources": resources, "freshness": "Current"}]})
        })
        .collect();
    serde_json::json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {}, "items": items})
}

/// The legacy `/apis` APIGroupList.
pub fn group_list() -> serde_json::Value {
    let groups: Vec<serde_json::Value> = GROUPS
        .iter()
        .map(|(g, v)| {
            let gv = serde_json::json!({"groupVersion": format!("{g}/{v}"), "version": v});
            serde_json::json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_discovery_lists_eviction_with_policy_group() {
        let list = resource_list("", "v1").unwrap_or_default();
        let eviction = list["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["name"] == "pods/eviction"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(eviction["group"], "policy");
        assert_eq!(eviction["version"], "v1");
        assert_eq!(eviction["kind"], "Eviction");
    }

    #[test]
    fn qualified_names_carry_the_group() {
        assert_eq!(PODS.qualified(), "pods");
        assert_eq!(PDBS.qualified(), "poddisruptionbudgets.policy");
        assert_eq!(LEASES.qualified(), "leases.coordination.k8s.io");
    }

    #[test]
    fn unknown_group_has_no_resource_list() {
        assert!(resource_list("batch", "v1").is_none());
    }
}
