//! Scenario files on a real control plane whose nodes are KWOK nodes (`scripts/cluster.sh`):
//! the same `scenarios/*.yaml` the simulator serves, created through the Kubernetes API, so a
//! test, a benchmark or the lab can run on either backend.
//!
//! Nodes become KWOK-managed Node objects (EKS-style names, providerIDs, zone and
//! instance-type labels, taints); workloads become the Deployments, StatefulSets, DaemonSets,
//! bare pods, PodDisruptionBudgets and PriorityClasses the simulator would hold. Static pods
//! have no kubelet to mirror them, so their mirror pods are created directly, owned by their
//! Node as a kubelet would make them. Pod timing travels in the annotations the simulator reads
//! (`sim.termguard.io/startup-ms`, `…/shutdown-ms`); the control plane's KWOK stages read the
//! same ones (docs/real-control-plane.md).

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::api::{GroupVersionKind, PostParams};
use kube::Client;
use kube_sim::resources::{self, ResourceDef};
use kube_sim::scenario::{self, Scenario};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// Annotation KWOK selects its nodes by (`--manage-nodes-with-annotation-selector`).
pub const MANAGED: &str = "kwok.x-k8s.io/node";
/// Label on every object the loader creates, valued with the scenario's name.
pub const SCENARIO_LABEL: &str = "sim.termguard.io/scenario";

/// Loading or settling a scenario failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused an object.
    #[error("creating {kind} {name}: {source}")]
    Create {
        /// Kind.
        kind: String,
        /// `namespace/name` or name.
        name: String,
        /// Cause.
        source: kube::Error,
    },
    /// Reading state back failed.
    #[error("reading {what}: {source}")]
    Read {
        /// What was read.
        what: String,
        /// Cause.
        source: kube::Error,
    },
    /// The scenario did not settle in time.
    #[error("the scenario did not settle within {limit:?}: {waiting}")]
    NotSettled {
        /// The limit.
        limit: Duration,
        /// What was still not ready.
        waiting: String,
    },
}

/// What a scenario created, for settling and removing it.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Namespaces the scenario's objects live in.
    pub namespaces: BTreeSet<String>,
    /// Node names.
    pub nodes: Vec<String>,
    /// Namespaced objects: (resource, namespace, name).
    pub objects: Vec<(&'static ResourceDef, String, String)>,
    /// PriorityClasses the loader created.
    pub priority_classes: Vec<String>,
}

impl Applied {
    /// What [`apply`] creates for a scenario, known without asking the cluster (but for the
    /// priority classes, which it creates only when missing).
    pub fn of(s: &Scenario) -> Applied {
        let nodes = s.all_nodes();
        let mut applied = Applied {
            nodes: nodes.iter().map(|n| n.name.clone()).collect(),
            ..Default::default()
        };
        for w in &s.workloads {
            applied.namespaces.insert(w.namespace.clone());
            let (objects, statics) = scenario::workload_objects(w, &s.defaults, &nodes);
            for (def, obj) in objects {
                let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
                applied.objects.push((def, w.namespace.clone(), name));
            }
            for (node, _) in statics {
                let name = mirror_pod_name(&w.name, &node);
                applied
                    .objects
                    .push((&resources::PODS, w.namespace.clone(), name));
            }
        }
        applied
    }
}

fn mirror_pod_name(name: &str, node: &str) -> String {
    format!("{name}-{node}")
}

/// The kube-rs resource of a simulator resource definition.
pub fn api_resource(def: &ResourceDef) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(def.group, def.version, def.kind),
        def.plural,
    )
}

fn api(client: &Client, def: &ResourceDef, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = api_resource(def);
    match ns {
        Some(ns) if def.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

fn typed(def: &ResourceDef, mut obj: Value) -> Value {
    obj["apiVersion"] = json!(def.api_version());
    obj["kind"] = json!(def.kind);
    obj
}

async fn create(
    client: &Client,
    def: &ResourceDef,
    ns: Option<&str>,
    obj: Value,
) -> Result<DynamicObject, ApplyError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let err = |source| ApplyError::Create {
        kind: def.kind.to_string(),
        name: match ns {
            Some(ns) => format!("{ns}/{name}"),
            None => name.clone(),
        },
        source,
    };
    let obj: DynamicObject =
        serde_json::from_value(typed(def, obj)).map_err(|e| err(kube::Error::SerdeError(e)))?;
    api(client, def, ns)
        .create(&PostParams::default(), &obj)
        .await
        .map_err(err)
}

/// A Node for KWOK: the simulator's Node object, annotated for KWOK, with no conditions (KWOK
/// initialises them, and the admission plugin taints the node not-ready until it has).
pub fn kwok_node(n: &scenario::NodeSpec, region: &str, scenario_name: &str) -> Value {
    let mut node = scenario::node_object(n, region);
    node["metadata"]["annotations"][MANAGED] = json!("fake");
    node["metadata"]["labels"]["type"] = json!("kwok");
    node["metadata"]["labels"][SCENARIO_LABEL] = json!(scenario_name);
    if let Some(status) = node["status"].as_object_mut() {
        status.remove("conditions");
    }
    node
}

/// Creates one KWOK node (see [`kwok_node`]); KWOK makes it Ready within moments.
pub async fn create_node(
    client: &Client,
    n: &scenario::NodeSpec,
    region: &str,
    scenario_name: &str,
) -> Result<DynamicObject, ApplyError> {
    create(
        client,
        &resources::NODES,
        None,
        kwok_node(n, region, scenario_name),
    )
    .await
}

fn label_value(s: &Scenario) -> String {
    let name: String = s
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let name = name
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if name.is_empty() {
        "unnamed".into()
    } else {
        name
    }
}

/// Creates the scenario's namespaces, priority classes, nodes and workloads.
pub async fn apply(client: &Client, s: &Scenario) -> Result<Applied, ApplyError> {
    let label = label_value(s);
    let nodes = s.all_nodes();
    let mut applied = Applied::default();

    for w in &s.workloads {
        applied.namespaces.insert(w.namespace.clone());
    }
    for ns in &applied.namespaces {
        if ns == "default" || ns == "kube-system" {
            continue;
        }
        // A namespace an earlier run deleted may still be terminating: pods cannot be
        // created in it, so wait until it is gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let exists = loop {
            let found = api(client, &resources::NAMESPACES, None)
                .get_opt(ns)
                .await
                .map_err(|source| ApplyError::Read {
                    what: format!("namespace {ns}"),
                    source,
                })?;
            match found {
                Some(n) if n.metadata.deletion_timestamp.is_some() => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ApplyError::NotSettled {
                            limit: Duration::from_secs(60),
                            waiting: format!("namespace {ns} is still terminating"),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => break other,
            }
        };
        if exists.is_none() {
            let obj = json!({"metadata": {"name": ns, "labels": {SCENARIO_LABEL: label}}});
            create(client, &resources::NAMESPACES, None, obj).await?;
        }
    }

    let classes: BTreeSet<String> = s
        .workloads
        .iter()
        .filter_map(|w| w.priority_class_name.clone())
        .filter(|c| !c.starts_with("system-"))
        .collect();
    for class in classes {
        let pcs = Api::<DynamicObject>::all_with(client.clone(), &priority_class_resource());
        let found = pcs
            .get_opt(&class)
            .await
            .map_err(|source| ApplyError::Read {
                what: format!("priority class {class}"),
                source,
            })?;
        if found.is_none() {
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": class, "labels": {SCENARIO_LABEL: label}},
                "value": 1000, "description": "created by termguard's scenario loader"
            }))
            .map_err(|e| ApplyError::Create {
                kind: "PriorityClass".into(),
                name: class.clone(),
                source: kube::Error::SerdeError(e),
            })?;
            pcs.create(&PostParams::default(), &obj)
                .await
                .map_err(|source| ApplyError::Create {
                    kind: "PriorityClass".into(),
                    name: class.clone(),
                    source,
                })?;
            applied.priority_classes.push(class);
        }
    }

    let mut node_uids = std::collections::BTreeMap::new();
    for n in &nodes {
        let created = create_node(client, n, &s.region, &label).await?;
        node_uids.insert(n.name.clone(), created.metadata.uid.unwrap_or_default());
        applied.nodes.push(n.name.clone());
    }

    // Workloads only once every node is Ready and untainted: pods created earlier would all
    // land on the first nodes KWOK initialises, and the scheduler never moves them, where the
    // simulator (whose nodes are Ready at once) spreads them.
    let just_nodes = Applied {
        nodes: applied.nodes.clone(),
        ..Default::default()
    };
    wait_settled(client, &just_nodes, Duration::from_secs(60)).await?;

    for w in &s.workloads {
        let (objects, statics) = scenario::workload_objects(w, &s.defaults, &nodes);
        for (def, mut obj) in objects {
            obj["metadata"]["labels"][SCENARIO_LABEL] = json!(label);
            // The Priority admission plugin computes spec.priority from the class and refuses
            // a pod that states a different one.
            strip_priority(&mut obj);
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
            create(client, def, Some(&w.namespace), obj).await?;
            applied.objects.push((def, w.namespace.clone(), name));
        }
        for (node, mut pod) in statics {
            let name = mirror_pod_name(&w.name, &node);
            pod["metadata"]["name"] = json!(name);
            pod["metadata"]["labels"][SCENARIO_LABEL] = json!(label);
            pod["metadata"]["annotations"][kube_sim::controllers::podutil::MIRROR] =
                json!(format!("{:016x}", fastrand::u64(..)));
            pod["metadata"]["annotations"]["kubernetes.io/config.source"] = json!("file");
            pod["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "v1", "kind": "Node", "name": node,
                "uid": node_uids.get(&node).cloned().unwrap_or_default(), "controller": true
            }]);
            pod["spec"]["nodeName"] = json!(node);
            strip_priority(&mut pod);
            create(client, &resources::PODS, Some(&w.namespace), pod).await?;
            applied
                .objects
                .push((&resources::PODS, w.namespace.clone(), name));
        }
    }
    Ok(applied)
}

fn strip_priority(obj: &mut Value) {
    for path in ["/spec/template/spec", "/spec"] {
        if let Some(spec) = obj.pointer_mut(path).and_then(Value::as_object_mut) {
            spec.remove("priority");
        }
    }
}

fn priority_class_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("scheduling.k8s.io", "v1", "PriorityClass"),
        "priorityclasses",
    )
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn ready(obj: &Value) -> bool {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

/// What is not settled yet: nodes not Ready or still tainted not-ready, workloads below their
/// scale, pods not Ready, budgets the disruption controller has not counted. Empty when settled.
pub async fn unsettled(client: &Client, applied: &Applied) -> Result<Vec<String>, ApplyError> {
    let read = |what: String| move |source| ApplyError::Read { what, source };
    let mut waiting = Vec::new();
    let nodes = api(client, &resources::NODES, None);
    for name in &applied.nodes {
        let Some(n) = nodes
            .get_opt(name)
            .await
            .map_err(read(format!("node {name}")))?
        else {
            waiting.push(format!("node {name} is missing"));
            continue;
        };
        let v = serde_json::to_value(&n).unwrap_or_default();
        let not_ready_taint = v["spec"]["taints"].as_array().is_some_and(|ts| {
            ts.iter()
                .any(|t| t["key"] == "node.kubernetes.io/not-ready")
        });
        if !ready(&v) || not_ready_taint {
            waiting.push(format!("node {name} is not Ready"));
        }
    }
    for (def, ns, name) in &applied.objects {
        let Some(obj) = api(client, def, Some(ns))
            .get_opt(name)
            .await
            .map_err(read(format!("{} {ns}/{name}", def.kind)))?
        else {
            waiting.push(format!("{} {ns}/{name} is missing", def.kind));
            continue;
        };
        let v = serde_json::to_value(&obj).unwrap_or_default();
        let st = &v["status"];
        let observed = int(&st["observedGeneration"]) >= int(&v["metadata"]["generation"]);
        let done = match def.kind {
            "Deployment" | "StatefulSet" => {
                let want = int(&v["spec"]["replicas"]);
                observed
                    && int(&st["readyReplicas"]) == want
                    && int(&st["replicas"]) == want
                    && int(&st["updatedReplicas"]) == want
            }
            "DaemonSet" => {
                observed
                    && int(&st["numberReady"]) == int(&st["desiredNumberScheduled"])
                    && int(&st["currentNumberScheduled"]) == int(&st["desiredNumberScheduled"])
            }
            "PodDisruptionBudget" => {
                observed
                    && !st["expectedPods"].is_null()
                    && int(&st["currentHealthy"]) == int(&st["expectedPods"])
            }
            "Pod" => ready(&v),
            _ => true,
        };
        if !done {
            waiting.push(format!("{} {ns}/{name}", def.kind));
        }
    }
    for ns in &applied.namespaces {
        let pods = api(client, &resources::PODS, Some(ns))
            .list(&ListParams::default())
            .await
            .map_err(read(format!("pods in {ns}")))?;
        for p in pods {
            let v = serde_json::to_value(&p).unwrap_or_default();
            if !v["metadata"]["deletionTimestamp"].is_null() {
                waiting.push(format!(
                    "pod {ns}/{} is terminating",
                    v["metadata"]["name"].as_str().unwrap_or("")
                ));
            } else if !ready(&v) && v["status"]["phase"] != "Succeeded" {
                waiting.push(format!(
                    "pod {ns}/{} is not Ready",
                    v["metadata"]["name"].as_str().unwrap_or("")
                ));
            }
        }
    }
    Ok(waiting)
}

/// Waits until [`unsettled`] is empty.
pub async fn wait_settled(
    client: &Client,
    applied: &Applied,
    limit: Duration,
) -> Result<(), ApplyError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let waiting = unsettled(client, applied).await?;
        if waiting.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let mut shown: Vec<String> = waiting.into_iter().take(8).collect();
            shown.dedup();
            return Err(ApplyError::NotSettled {
                limit,
                waiting: shown.join("; "),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes what [`apply`] created, and every pod, Event and Lease the scenario's workloads and
/// drains left in its namespaces: workloads first (so nothing recreates pods), then the pods
/// with a zero grace period, then the nodes. Returns once no pod is left in those namespaces.
pub async fn remove(client: &Client, applied: &Applied, limit: Duration) -> Result<(), ApplyError> {
    let read = |what: String| move |source| ApplyError::Read { what, source };
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..Default::default()
    };
    for (def, ns, name) in &applied.objects {
        ignore_missing(api(client, def, Some(ns)).delete(name, &now).await)
            .map_err(read(format!("deleting {} {ns}/{name}", def.kind)))?;
    }
    for ns in &applied.namespaces {
        for def in [
            &resources::PODS,
            &resources::EVENTS,
            &resources::CORE_EVENTS,
        ] {
            ignore_missing(
                api(client, def, Some(ns))
                    .delete_collection(&now, &ListParams::default())
                    .await
                    .map(|_| ()),
            )
            .map_err(read(format!("deleting {} in {ns}", def.plural)))?;
        }
    }
    for name in &applied.nodes {
        ignore_missing(
            api(client, &resources::NODES, None)
                .delete(name, &now)
                .await
                .map(|_| ()),
        )
        .map_err(read(format!("deleting node {name}")))?;
    }
    let pcs = Api::<DynamicObject>::all_with(client.clone(), &priority_class_resource());
    for class in &applied.priority_classes {
        ignore_missing(pcs.delete(class, &now).await.map(|_| ()))
            .map_err(read(format!("deleting priority class {class}")))?;
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut left = 0;
        for ns in &applied.namespaces {
            left += api(client, &resources::PODS, Some(ns))
                .list(&ListParams::default())
                .await
                .map_err(read(format!("pods in {ns}")))?
                .items
                .len();
        }
        if left == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApplyError::NotSettled {
                limit,
                waiting: format!("{left} pods still exist after removing the scenario"),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ignore_missing<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Holder a killed node's Lease is given: not KWOK's identity, so KWOK leaves the node alone.
pub const KILLED_HOLDER: &str = "termguard-killed-node";

/// Marks a node dead: KWOK stops playing anything on it — its heartbeats and its pods'
/// stages — so nothing confirms its pods gone, and the node lifecycle controller calls it
/// NotReady once its grace period passes without a renewal.
///
/// KWOK (0.8) does not let go of a node whose annotation stops matching its selector (its
/// node informer drops the update rather than reporting the node gone), but it treats a node
/// whose Lease has another holder as read-only. So the node's Lease in `kube-node-lease` is
/// taken over, held for ten years and never renewed; the annotation is set to `dead` as well,
/// a marker for whoever reads the cluster.
///
/// KWOK learns of the Lease from a watch of its own, separate from its watch of Pods, so a pod
/// deleted right after could still have its exit played. The node's pods are therefore also
/// marked `never-exit`: each pod's own watch delivers that mark before its deletion, so no
/// stage ends them, whatever the timing.
pub async fn kill_node(client: &Client, name: &str) -> Result<(), kube::Error> {
    let leases = api(client, &resources::LEASES, Some(NODE_LEASES));
    let renewed = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now());
    let spec = json!({
        "holderIdentity": KILLED_HOLDER,
        "leaseDurationSeconds": 10 * 365 * 24 * 3600,
        "renewTime": renewed,
    });
    if leases.get_opt(name).await?.is_some() {
        leases
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await?;
    } else {
        let lease: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": NODE_LEASES}, "spec": spec,
        }))
        .map_err(kube::Error::SerdeError)?;
        leases.create(&PostParams::default(), &lease).await?;
    }
    let patch = json!({"metadata": {"annotations": {MANAGED: "dead"}}});
    api(client, &resources::NODES, None)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let on_node = ListParams::default().fields(&format!("spec.nodeName={name}"));
    let never = json!({"metadata": {"annotations": {NEVER_EXIT: "true"}}});
    for pod in api(client, &resources::PODS, None).list(&on_node).await? {
        let (Some(ns), Some(pod_name)) = (pod.metadata.namespace, pod.metadata.name) else {
            continue;
        };
        ignore_missing(
            api(client, &resources::PODS, Some(&ns))
                .patch(&pod_name, &PatchParams::default(), &Patch::Merge(&never))
                .await,
        )?;
    }
    Ok(())
}

/// The annotation that keeps a pod Terminating for ever, on both backends.
pub const NEVER_EXIT: &str = kube_sim::controllers::podutil::NEVER_EXIT;

/// The namespace of the nodes' Leases.
pub const NODE_LEASES: &str = "kube-node-lease";
