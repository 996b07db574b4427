//! One scenario file, two backends: each shipped scenario is loaded into the simulator and into
//! the real control plane (`termguard::kwok`, the loader behind `termguard sim apply`), and the
//! settled clusters are compared through the API: the nodes as EKS would name and label them,
//! every workload at its scale, the same pods per workload and node kind, and — the part only a
//! real disruption controller can vouch for — the same PodDisruptionBudget status.

#[path = "common/cluster.rs"]
#[macro_use]
mod cluster;

use cluster::{Backend, TestCluster};
use kube::api::{Api, DynamicObject, ListParams};
use kube_sim::resources::{self, ResourceDef};
use serde_json::Value;
use std::collections::BTreeMap;

type Result = anyhow::Result<()>;

fn scenario(name: &str) -> String {
    let path = format!("{}/../../scenarios/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

async fn list(c: &TestCluster, def: &ResourceDef) -> Vec<Value> {
    Api::<DynamicObject>::all_with(c.admin.clone(), &termguard::kwok::api_resource(def))
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing {}: {e}", def.plural))
        .items
        .iter()
        .map(|o| serde_json::to_value(o).unwrap_or_default())
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn key(o: &Value) -> String {
    format!(
        "{}/{}",
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"])
    )
}

/// The owner a pod counts under: its workload (a ReplicaSet's pods under the Deployment name,
/// read off the pod-template-hash-free prefix), or the pod itself for bare and mirror pods.
fn owner(p: &Value) -> String {
    let ns = s(&p["metadata"]["namespace"]);
    let refs = p["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match refs.first() {
        Some(r) if r["kind"] == "ReplicaSet" => {
            let rs = s(&r["name"]);
            let deploy = rs
                .rsplit_once('-')
                .map_or(rs.clone(), |(d, _)| d.to_string());
            format!("{ns}/Deployment/{deploy}")
        }
        Some(r) if r["kind"] == "Node" => format!("{ns}/mirror/{}", s(&p["metadata"]["name"])),
        Some(r) => format!("{ns}/{}/{}", s(&r["kind"]), s(&r["name"])),
        None => format!("{ns}/Pod/{}", s(&p["metadata"]["name"])),
    }
}

/// What must be equal between the backends once a scenario has settled.
async fn summary(c: &TestCluster) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for n in list(c, &resources::NODES).await {
        let l = &n["metadata"]["labels"];
        let taints: Vec<String> = n["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| format!("{}={}:{}", s(&t["key"]), s(&t["value"]), s(&t["effect"])))
            .collect();
        out.insert(
            format!("node {}", s(&n["metadata"]["name"])),
            format!(
                "providerID={} zone={} region={} type={} group={} cpu={} memory={} pods={} ready={} taints={taints:?}",
                s(&n["spec"]["providerID"]),
                s(&l["topology.kubernetes.io/zone"]),
                s(&l["topology.kubernetes.io/region"]),
                s(&l["node.kubernetes.io/instance-type"]),
                s(&l["eks.amazonaws.com/nodegroup"]),
                s(&n["status"]["allocatable"]["cpu"]),
                s(&n["status"]["allocatable"]["memory"]),
                s(&n["status"]["allocatable"]["pods"]),
                n["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .map_or(String::new(), |c| s(&c["status"])),
            ),
        );
    }
    let mut pods: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for p in list(c, &resources::PODS).await {
        let e = pods.entry(owner(&p)).or_default();
        e.0 += 1;
        if cluster::healthy(&p) {
            e.1 += 1;
        }
        out.insert(
            format!("pod template {}", owner(&p)),
            format!(
                "grace={} startup={} shutdown={} priorityClass={} emptyDir={}",
                s(&p["spec"]["terminationGracePeriodSeconds"]),
                s(&p["metadata"]["annotations"]["sim.termguard.io/startup-ms"]),
                s(&p["metadata"]["annotations"]["sim.termguard.io/shutdown-ms"]),
                s(&p["spec"]["priorityClassName"]),
                p["spec"]["volumes"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(|v| v["emptyDir"].is_object())),
            ),
        );
    }
    for (owner, (all, healthy)) in pods {
        out.insert(
            format!("pods of {owner}"),
            format!("{all} ({healthy} healthy)"),
        );
    }
    for d in list(c, &resources::DEPLOYMENTS).await {
        let st = &d["status"];
        out.insert(
            format!("deployment {}", key(&d)),
            format!(
                "replicas={} ready={}",
                s(&st["replicas"]),
                s(&st["readyReplicas"])
            ),
        );
    }
    for d in list(c, &resources::STATEFULSETS).await {
        let st = &d["status"];
        out.insert(
            format!("statefulset {}", key(&d)),
            format!(
                "replicas={} ready={}",
                s(&st["replicas"]),
                s(&st["readyReplicas"])
            ),
        );
    }
    for d in list(c, &resources::DAEMONSETS).await {
        let st = &d["status"];
        out.insert(
            format!("daemonset {}", key(&d)),
            format!(
                "desired={} ready={}",
                s(&st["desiredNumberScheduled"]),
                s(&st["numberReady"])
            ),
        );
    }
    for b in list(c, &resources::PDBS).await {
        let st = &b["status"];
        out.insert(
            format!("pdb {}", key(&b)),
            format!(
                "expected={} healthy={} desiredHealthy={} disruptionsAllowed={}",
                s(&st["expectedPods"]),
                s(&st["currentHealthy"]),
                s(&st["desiredHealthy"]),
                s(&st["disruptionsAllowed"]),
            ),
        );
    }
    out
}

async fn same_on_both_backends(name: &str) -> Result {
    if !cluster::real_available(name) {
        return Ok(());
    }
    let yaml = scenario(name);
    let sim = summary(&TestCluster::start_settled(Backend::Sim, &yaml).await).await;
    let real = summary(&TestCluster::start_settled(Backend::Real, &yaml).await).await;
    let mut differences = Vec::new();
    for k in sim
        .keys()
        .chain(real.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let (a, b) = (sim.get(k), real.get(k));
        if a != b {
            differences.push(format!("{k}\n    simulator: {a:?}\n    real:      {b:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "scenario {name}: {} differences between the backends:\n{}",
        differences.len(),
        differences.join("\n")
    );
    eprintln!(
        "scenario {name}: {} facts equal on both backends",
        sim.len()
    );
    for (k, v) in sim
        .iter()
        .filter(|(k, _)| k.starts_with("pdb ") || k.starts_with("pods of"))
    {
        eprintln!("  {k}: {v}");
    }
    assert!(
        sim.keys().any(|k| k.starts_with("pdb ")),
        "the scenario has budgets to compare"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_small_scenario_settles_the_same_on_both_backends() -> Result {
    same_on_both_backends("small").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_scenario_settles_the_same_on_both_backends() -> Result {
    same_on_both_backends("incident").await
}

both_backends! {
    /// The pod lifecycle both backends give a scenario's pods: a pod leaves after its shutdown
    /// time, or when its grace period ends if it ignores SIGTERM for longer; a pod marked
    /// never-exit stays Terminating. Checked by order, not by the clock.
    async fn pods_start_and_stop_on_their_own_timings(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            "defaults: {startupMs: 100, shutdownMs: 100}\nnodes:\n- {name: node-a, zone: us-east-1a}\nworkloads:\n\
             - {kind: Pod, name: quick, node: node-a, shutdownMs: 200}\n\
             - {kind: Pod, name: slow, node: node-a, shutdownMs: 5000}\n\
             - {kind: Pod, name: stubborn, node: node-a, shutdownMs: 600000, terminationGracePeriodSeconds: 2}\n\
             - {kind: Pod, name: wedged, node: node-a, annotations: {sim.termguard.io/never-exit: 'true'}}\n",
        )
        .await;
        let feed = cluster::PodFeed::start(&c).await;
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(c.admin.clone(), "default");
        for name in ["quick", "slow", "stubborn", "wedged"] {
            pods.delete(name, &Default::default()).await?;
        }
        let uid = |name: &str| {
            feed.initial
                .iter()
                .find(|p| p["metadata"]["name"] == name)
                .map(cluster::uid)
                .unwrap_or_default()
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while feed.removed_at(&uid("slow")).is_none() {
            assert!(tokio::time::Instant::now() < deadline, "slow never left");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        feed.sync().await;
        let gone = |name: &str| feed.removed_at(&uid(name));
        let (quick, stubborn, slow) = (gone("quick"), gone("stubborn"), gone("slow"));
        assert!(quick.is_some() && stubborn.is_some(), "{quick:?} {stubborn:?}");
        assert!(quick < slow, "a 0.2 s shutdown ends before a 5 s one");
        assert!(stubborn < slow, "SIGTERM ignored: killed when its 2 s grace period ends");
        assert_eq!(gone("wedged"), None, "never-exit stays Terminating");
        let wedged = c.pod("default", "wedged").await.expect("still there");
        assert!(cluster::terminating(&wedged));
        assert_eq!(
            feed.deletion_grace_seconds(&uid("stubborn")),
            Some(2),
            "deleted with its own grace period"
        );
        Ok(())
    }
}
