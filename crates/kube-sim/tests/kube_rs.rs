//! kube-rs against kube-sim over HTTP, the way termguard talks to a real API server: typed
//! APIs, paging, selectors, the runtime watcher, eviction and PodDisruptionBudgets, optimistic
//! concurrency, patches, in-stream 410s, the workload controllers, node loss, events, leases and
//! fault injection (`docs/simulator.md#what-it-serves`, and the client pitfalls in
//! `docs/simulator.md#client-pitfalls-it-reproduces`).
//!
//! Every test starts its own simulator on a free loopback port from a small inline scenario and
//! waits for conditions through kube-rs watches (never on wall-clock limits).

mod common;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, MicroTime, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, EvictParams, ListParams, Patch, PatchParams,
    PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::core::Status;
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Client, Resource, ResourceExt};
use kube_sim::controllers::ExitKind;
use kube_sim::faults::{FaultConfig, Faults, VerbFault};
use kube_sim::scenario::{Capacity, NodeSpec};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// Generous bound for anything the simulated cluster does in well under a second.
const WAIT: Duration = Duration::from_secs(20);

const PDB_BLOCKED: &str = "Cannot evict pod as it would violate the pod's disruption budget.";
const MULTIPLE_PDBS: &str =
    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn pod_condition<'a>(p: &'a Pod, ty: &str) -> Option<&'a str> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| c.status.as_str())
}

fn node_condition<'a>(n: &'a Node, ty: &str) -> Option<&'a str> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == ty)
        .map(|c| c.status.as_str())
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Running, Ready and not terminating.
fn running_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && phase(p) == "Running"
        && pod_condition(p, "Ready") == Some("True")
}

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

fn label<'a, K: Resource>(o: &'a K, key: &str) -> Option<&'a str> {
    o.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
}

/// The Status of an API error; panics on success or on a non-API error.
fn api_error<T: Debug>(result: Result<T, kube::Error>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

/// A client without kube-rs's default retry layer. kube 5 retries 429 (and 503/504) up to 15
/// times with exponential backoff from 5 ms, so a PDB-blocked eviction (429 with no Retry-After,
/// as the real server sends it) only surfaces after several minutes with the default client.
fn client_without_retry(sim: &kube_sim::Sim) -> Client {
    let mut config = kube::Config::new(sim.url().parse().expect("simulator URL"));
    config.default_retry = false;
    Client::try_from(config).expect("kube client")
}

/// A bare API server (no cluster behind it) whose store keeps only `history` changes for
/// watch replay, so resourceVersions expire quickly. Returns a client, the server's fault
/// hooks and its task.
async fn serve_bare(history: usize) -> (Client, Arc<Faults>, tokio::task::JoinHandle<()>) {
    use kube_sim::http::{router, AppState};
    let faults = Arc::new(Faults::default());
    let state = Arc::new(AppState {
        store: Arc::new(kube_sim::store::Store::new(history)),
        faults: faults.clone(),
        admin: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let server = tokio::spawn(async move {
        axum::serve(listener, router(state)).await.ok();
    });
    let url = format!("http://{addr}").parse().expect("URL");
    let client = Client::try_from(kube::Config::new(url)).expect("kube client");
    (client, faults, server)
}

fn bare_node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs a kube-rs `watcher` over `api` and keeps its view of the objects; returns that view
/// once `pred` holds (checked after the initial list and after every later event).
async fn wait_for<K>(
    api: &Api<K>,
    config: watcher::Config,
    what: &str,
    pred: impl Fn(&[K]) -> bool,
) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut stream = watcher(api.clone(), config).boxed();
    let mut objs: BTreeMap<(String, String), K> = BTreeMap::new();
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    let run = async {
        let mut buffer = BTreeMap::new();
        let mut listed = false;
        while let Some(ev) = stream.next().await {
            match ev.expect("the watcher reports no error") {
                Event::Init => buffer.clear(),
                Event::InitApply(o) => {
                    buffer.insert(key(&o), o);
                }
                Event::InitDone => {
                    objs = std::mem::take(&mut buffer);
                    listed = true;
                }
                Event::Apply(o) => {
                    objs.insert(key(&o), o);
                }
                Event::Delete(o) => {
                    objs.remove(&key(&o));
                }
            }
            if listed {
                let now: Vec<K> = objs.values().cloned().collect();
                if pred(&now) {
                    return Some(now);
                }
            }
        }
        None
    };
    let outcome = tokio::time::timeout(WAIT, run).await;
    match outcome {
        Ok(Some(found)) => found,
        _ => panic!(
            "timed out waiting for {what}; last seen: {:#?}",
            objs.values().collect::<Vec<_>>()
        ),
    }
}

fn pods_summary(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            format!(
                "{} on {} {} ready={:?} terminating={}",
                p.name_any(),
                node_of(p),
                phase(p),
                pod_condition(p, "Ready"),
                p.metadata.deletion_timestamp.is_some()
            )
        })
        .collect()
}

/// Waits until exactly `n` pods match the watcher config and all are Running and Ready.
async fn wait_ready_pods(api: &Api<Pod>, config: watcher::Config, n: usize) -> Vec<Pod> {
    wait_for(api, config, &format!("{n} Running+Ready pods"), |ps| {
        ps.len() == n && ps.iter().all(running_ready)
    })
    .await
}

/// The next item of a stream, failing the test if none comes within [`WAIT`].
async fn next_item<S: Stream + Unpin>(stream: &mut S, what: &str) -> Option<S::Item> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn is_eks_private_dns(name: &str) -> bool {
    let Some(ip) = name
        .strip_prefix("ip-")
        .and_then(|s| s.strip_suffix(".ec2.internal"))
    else {
        return false;
    };
    let octets: Vec<&str> = ip.split('-').collect();
    octets.len() == 4 && octets.iter().all(|o| o.parse::<u8>().is_ok())
}

fn pdb(name: &str, app: &str, min_available: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Whether a PDB's status has been computed for its current generation.
fn pdb_observed(p: &PodDisruptionBudget) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.observed_generation.is_some() && s.observed_generation == p.metadata.generation
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Typed Api<Node>
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_nodes_have_eks_names_provider_ids_labels_and_ready() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
region: us-east-1
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b, us-east-1c], perZone: 1, instanceType: m5.xlarge}
"#,
    )
    .await;
    let nodes: Api<Node> = Api::all(common::client(&sim));
    let list = nodes.list(&ListParams::default()).await?;
    assert_eq!(list.items.len(), 3);
    assert!(list
        .metadata
        .resource_version
        .is_some_and(|rv| !rv.is_empty()));
    let mut zones = BTreeSet::new();
    for n in &list.items {
        let name = n.name_any();
        assert!(
            is_eks_private_dns(&name),
            "not an EKS private-DNS name: {name}"
        );
        let zone = label(n, "topology.kubernetes.io/zone")
            .expect("zone label")
            .to_string();
        assert_eq!(label(n, "topology.kubernetes.io/region"), Some("us-east-1"));
        assert_eq!(
            label(n, "node.kubernetes.io/instance-type"),
            Some("m5.xlarge")
        );
        assert_eq!(label(n, "kubernetes.io/hostname"), Some(name.as_str()));
        assert_eq!(label(n, "eks.amazonaws.com/nodegroup"), Some("workers"));
        let provider_id = n
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .expect("providerID");
        let instance = provider_id
            .strip_prefix(&format!("aws:///{zone}/i-"))
            .unwrap_or_else(|| panic!("providerID {provider_id} is not aws:///{zone}/i-..."));
        assert!(
            instance.len() == 17 && instance.chars().all(|c| c.is_ascii_hexdigit()),
            "EC2 instance id in {provider_id}"
        );
        assert_eq!(node_condition(n, "Ready"), Some("True"), "{name}");
        assert!(n.uid().is_some() && n.creation_timestamp().is_some());
        zones.insert(zone);

        let got = nodes.get(&name).await?;
        assert_eq!(got.uid(), n.uid());
        assert_eq!(
            got.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
            Some(provider_id.as_str())
        );
    }
    assert_eq!(zones.len(), 3, "one node per zone");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Paging
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_paging_keeps_one_resource_version_and_sees_every_item_once() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 50}
nodes: [{name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}]
workloads:
  - {kind: Deployment, name: web, replicas: 5}
  - {kind: DaemonSet, name: agent, namespace: kube-system}
"#,
    )
    .await;
    let client = common::client(&sim);
    let pods: Api<Pod> = Api::all(client.clone());
    wait_ready_pods(&pods, watcher::Config::default(), 6).await;
    let everything: BTreeSet<String> = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
        .collect();
    assert_eq!(everything.len(), 6);

    let leases: Api<Lease> = Api::namespaced(client, "default");
    let mut seen = Vec::new();
    let mut versions = BTreeSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = pods.list(&lp).await?;
        pages += 1;
        assert!(
            page.items.len() <= 2,
            "page {pages} has {}",
            page.items.len()
        );
        if pages == 1 {
            assert_eq!(page.metadata.remaining_item_count, Some(4));
        }
        versions.insert(page.metadata.resource_version.clone().expect("page RV"));
        seen.extend(
            page.items
                .iter()
                .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())),
        );
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
        // An unrelated write between pages moves the global resourceVersion on; later pages
        // must still report the first page's (a consistent snapshot).
        leases
            .create(
                &PostParams::default(),
                &Lease {
                    metadata: ObjectMeta {
                        name: Some(format!("between-pages-{pages}")),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await?;
    }
    assert_eq!(pages, 3);
    assert_eq!(versions.len(), 1, "pages reported {versions:?}");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an item came twice: {seen:?}");
    assert_eq!(unique, everything);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Selectors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors_filter_lists() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 50}
nodes:
  - {name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}
  - {name: ip-10-0-2-10.ec2.internal, zone: us-east-1b}
workloads:
  - {kind: Deployment, name: web, replicas: 4, labels: {app: web, tier: front}}
  - {kind: Deployment, name: api, replicas: 2, labels: {app: api, tier: back}}
  - {kind: Pod, name: solo, node: ip-10-0-2-10.ec2.internal, labels: {app: solo}}
"#,
    )
    .await;
    let client = common::client(&sim);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let all = wait_ready_pods(&pods, watcher::Config::default(), 7).await;
    let names = |ps: &[Pod]| -> BTreeSet<String> { ps.iter().map(|p| p.name_any()).collect() };
    let list = |lp: ListParams| {
        let pods = pods.clone();
        async move { pods.list(&lp).await.map(|l| l.items) }
    };

    let web = list(ListParams::default().labels("app=web")).await?;
    assert_eq!(web.len(), 4);
    assert!(web.iter().all(|p| label(p, "app") == Some("web")));
    assert_eq!(
        list(ListParams::default().labels("tier in (front,back)"))
            .await?
            .len(),
        6
    );
    // notin also matches pods without the key (solo has no tier).
    let not_front = list(ListParams::default().labels("tier notin (front)")).await?;
    assert_eq!(not_front.len(), 3);
    assert!(names(&not_front).contains("solo"));
    let solo_only = list(ListParams::default().labels("app!=web,!tier")).await?;
    assert_eq!(names(&solo_only), BTreeSet::from(["solo".to_string()]));

    let node_b = "ip-10-0-2-10.ec2.internal";
    let on_b = list(ListParams::default().fields(&format!("spec.nodeName={node_b}"))).await?;
    let expect_on_b: Vec<Pod> = all
        .iter()
        .filter(|p| node_of(p) == node_b)
        .cloned()
        .collect();
    assert!(!on_b.is_empty());
    assert_eq!(names(&on_b), names(&expect_on_b));
    assert!(names(&on_b).contains("solo"));
    assert_eq!(
        list(ListParams::default().fields("status.phase!=Failed"))
            .await?
            .len(),
        7
    );
    assert!(list(ListParams::default().fields("status.phase=Failed"))
        .await?
        .is_empty());
    let running_on_b = list(ListParams::default().fields(&format!(
        "spec.nodeName={node_b},status.phase!=Succeeded,status.phase!=Failed"
    )))
    .await?;
    assert_eq!(names(&running_on_b), names(&expect_on_b));
    let solo = list(ListParams::default().fields("metadata.name=solo")).await?;
    assert_eq!(names(&solo), BTreeSet::from(["solo".to_string()]));
    assert!(list(ListParams::default().fields("metadata.name="))
        .await?
        .is_empty());
    let web_on_b = list(
        ListParams::default()
            .labels("app=web")
            .fields(&format!("spec.nodeName={node_b}")),
    )
    .await?;
    assert!(web_on_b
        .iter()
        .all(|p| node_of(p) == node_b && label(p, "app") == Some("web")));
    assert_eq!(
        web_on_b.len(),
        all.iter()
            .filter(|p| node_of(p) == node_b && label(*p, "app") == Some("web"))
            .count()
    );

    let err = api_error(pods.list(&ListParams::default().fields("spec.foo=x")).await);
    assert_eq!(err.code, 400);
    assert_eq!(err.reason, "BadRequest");

    // Nodes: spec.unschedulable reads "false" when unset.
    let nodes: Api<Node> = Api::all(client);
    let schedulable = nodes
        .list(&ListParams::default().fields("spec.unschedulable=false"))
        .await?;
    assert_eq!(schedulable.items.len(), 2);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Runtime watcher
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_init_then_apply_and_delete_after_graceful_shutdown() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 300}
nodes: [{name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}]
workloads:
  - {kind: Deployment, name: web, replicas: 2}
  - {kind: Pod, name: solo, node: ip-10-0-1-10.ec2.internal}
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(common::client(&sim), "default");
    let ready = wait_ready_pods(&pods, watcher::Config::default(), 3).await;
    let expected: BTreeSet<String> = ready.iter().map(|p| p.name_any()).collect();

    let mut stream = watcher(pods.clone(), watcher::Config::default()).boxed();
    let first = next_item(&mut stream, "Init").await.expect("stream open")?;
    assert!(matches!(first, Event::Init), "first event: {first:?}");
    let mut initial = BTreeSet::new();
    loop {
        match next_item(&mut stream, "InitApply/InitDone")
            .await
            .expect("stream open")?
        {
            Event::InitApply(p) => {
                initial.insert(p.name_any());
            }
            Event::InitDone => break,
            other => panic!("unexpected event during the initial list: {other:?}"),
        }
    }
    assert_eq!(initial, expected);

    pods.patch(
        "solo",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await?;
    loop {
        match next_item(&mut stream, "Apply of the patched pod")
            .await
            .expect("stream open")?
        {
            Event::Apply(p) if p.name_any() == "solo" && label(&p, "touched") == Some("yes") => {
                break
            }
            Event::Apply(_) => {}
            other => panic!("unexpected event after a label patch: {other:?}"),
        }
    }

    let solo = pods.get("solo").await?;
    let deleted = pods
        .delete("solo", &DeleteParams::default().grace_period(1))
        .await?;
    let terminating = deleted.left().expect("a pod delete returns the Pod");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(1));

    let mut saw_terminating = false;
    loop {
        match next_item(&mut stream, "Delete of the pod")
            .await
            .expect("stream open")?
        {
            Event::Apply(p) if p.name_any() == "solo" => {
                assert!(p.metadata.deletion_timestamp.is_some(), "{p:?}");
                saw_terminating = true;
            }
            Event::Delete(p) if p.name_any() == "solo" => {
                assert_eq!(p.uid(), solo.uid());
                assert_eq!(p.metadata.deletion_grace_period_seconds, Some(1));
                break;
            }
            Event::Apply(_) => {}
            other => panic!("unexpected event while the pod terminates: {other:?}"),
        }
    }
    assert!(
        saw_terminating,
        "the pod was Terminating before it was DELETED"
    );
    assert!(pods.get_opt("solo").await?.is_none());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Eviction of a Deployment pod
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_deployment_pod_is_replaced_on_another_node() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 100, shutdownMs: 400}
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b, us-east-1c]}
workloads:
  - {kind: Deployment, name: web, replicas: 2}
"#,
    )
    .await;
    let client = common::client(&sim);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client);
    let web = watcher::Config::default().labels("app=web");
    let before = wait_ready_pods(&pods, web.clone(), 2).await;
    let victim = before[0].clone();
    let victim_name = victim.name_any();
    let source = node_of(&victim).to_string();

    let cordoned = nodes
        .patch(
            &source,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await?;
    assert_eq!(cordoned.spec.and_then(|s| s.unschedulable), Some(true));

    let current = pods.get(&victim_name).await?;
    let mut events = pods
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={victim_name}")),
            &current.resource_version().expect("pod RV"),
        )
        .await?
        .boxed();
    // kube-rs puts the grace period under snake_case `delete_options`, which a real server
    // drops as an unknown field (`docs/simulator.md#eviction`): the pod's own 30 s grace period
    // applies.
    let evict = EvictParams {
        delete_options: Some(DeleteParams::default().grace_period(1)),
        ..Default::default()
    };
    let status = pods.evict(&victim_name, &evict).await?;
    assert!(status.is_success(), "{status:?}");
    assert_eq!(status.code, 201);

    let mut saw_deletion_timestamp = false;
    loop {
        match next_item(&mut events, "the evicted pod's DELETED")
            .await
            .expect("watch open")?
        {
            WatchEvent::Modified(p) => {
                assert!(p.metadata.deletion_timestamp.is_some(), "{p:?}");
                assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
                saw_deletion_timestamp = true;
            }
            WatchEvent::Deleted(p) => {
                assert_eq!(p.uid(), victim.uid());
                break;
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected watch event: {other:?}"),
        }
    }
    assert!(
        saw_deletion_timestamp,
        "the pod got a deletionTimestamp first"
    );

    let after = wait_for(&pods, web, "a Running+Ready replacement elsewhere", |ps| {
        ps.len() == 2
            && ps.iter().all(running_ready)
            && ps.iter().all(|p| p.name_any() != victim_name)
    })
    .await;
    let replacement = after
        .iter()
        .find(|p| before.iter().all(|b| b.uid() != p.uid()))
        .expect("a new pod");
    assert_ne!(node_of(replacement), source, "{:?}", pods_summary(&after));
    assert!(pods.get_opt(&victim_name).await?.is_none());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 6. PDB with no disruptions allowed
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_blocked_by_pdb_is_429_too_many_requests() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 50}
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b]}
workloads:
  - {kind: Deployment, name: db, replicas: 2, pdb: {minAvailable: 2}}
"#,
    )
    .await;
    let client = client_without_retry(&sim);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, "default");
    let ready = wait_ready_pods(&pods, watcher::Config::default().labels("app=db"), 2).await;
    wait_for(&pdbs, watcher::Config::default(), "the PDB status", |ps| {
        ps.iter().any(|p| {
            pdb_observed(p)
                && p.status.as_ref().is_some_and(|s| {
                    s.current_healthy == 2 && s.desired_healthy == 2 && s.disruptions_allowed == 0
                })
        })
    })
    .await;

    let name = ready[0].name_any();
    let err = api_error(pods.evict(&name, &EvictParams::default()).await);
    assert_eq!(err.code, 429);
    assert_eq!(err.reason, "TooManyRequests");
    assert_eq!(err.message, PDB_BLOCKED);
    let causes = err
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default();
    assert_eq!(causes.len(), 1, "{err:?}");
    assert_eq!(causes[0].reason, "DisruptionBudget");
    assert_eq!(
        causes[0].message,
        "The disruption budget db needs 2 healthy pods and has 2 currently"
    );
    assert_eq!(err.details.as_ref().map(|d| d.retry_after_seconds), Some(0));

    let still = pods.get(&name).await?;
    assert_eq!(still.uid(), ready[0].uid());
    assert!(still.metadata.deletion_timestamp.is_none());
    assert!(running_ready(&still));
    let budget = pdbs.get("db").await?;
    assert_eq!(budget.status.map(|s| s.disruptions_allowed), Some(0));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 7. Two PDBs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_of_pod_with_two_pdbs_is_500() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 50}
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b]}
workloads:
  - {kind: Deployment, name: web, replicas: 3, pdb: {maxUnavailable: 1}}
"#,
    )
    .await;
    let client = common::client(&sim);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, "default");
    pdbs.create(&PostParams::default(), &pdb("web-extra", "web", 1))
        .await?;
    let ready = wait_ready_pods(&pods, watcher::Config::default().labels("app=web"), 3).await;
    // Both budgets would allow a disruption on their own.
    wait_for(
        &pdbs,
        watcher::Config::default(),
        "both PDB statuses",
        |ps| {
            ps.len() == 2
                && ps.iter().all(|p| {
                    pdb_observed(p)
                        && p.status
                            .as_ref()
                            .is_some_and(|s| s.disruptions_allowed >= 1)
                })
        },
    )
    .await;

    let name = ready[0].name_any();
    let err = api_error(pods.evict(&name, &EvictParams::default()).await);
    assert_eq!(err.code, 500);
    assert_eq!(err.message, MULTIPLE_PDBS);
    assert_eq!(err.reason, "", "the real server sends no reason");
    assert!(err.details.is_none(), "{err:?}");
    let still = pods.get(&name).await?;
    assert!(still.metadata.deletion_timestamp.is_none());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 8. Stale replace, missing objects
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_node_replace_is_409_and_missing_pod_is_none() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
nodes: [{name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}]
"#,
    )
    .await;
    let client = common::client(&sim);
    let nodes: Api<Node> = Api::all(client.clone());
    let name = "ip-10-0-1-10.ec2.internal";
    let original = nodes.get(name).await?;

    let mut fresh = original.clone();
    fresh
        .labels_mut()
        .insert("termguard.io/state".into(), "ok".into());
    let replaced = nodes.replace(name, &PostParams::default(), &fresh).await?;
    assert_eq!(label(&replaced, "termguard.io/state"), Some("ok"));
    assert_ne!(replaced.resource_version(), original.resource_version());

    let mut stale = original.clone();
    stale
        .labels_mut()
        .insert("termguard.io/state".into(), "stale".into());
    let err = api_error(nodes.replace(name, &PostParams::default(), &stale).await);
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        format!("Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; please apply your changes to the latest version and try again")
    );
    assert_eq!(
        err.details
            .as_ref()
            .map(|d| (d.name.as_str(), d.kind.as_str())),
        Some((name, "nodes"))
    );
    assert_eq!(
        label(&nodes.get(name).await?, "termguard.io/state"),
        Some("ok")
    );

    let pods: Api<Pod> = Api::namespaced(client, "default");
    assert!(pods.get_opt("nope").await?.is_none());
    let err = api_error(pods.get("nope").await);
    assert_eq!(err.code, 404);
    assert_eq!(err.reason, "NotFound");
    assert_eq!(err.message, "pods \"nope\" not found");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 9. Delete preconditions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_uid_precondition() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 100}
nodes: [{name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}]
workloads:
  - {kind: Pod, name: solo, node: ip-10-0-1-10.ec2.internal}
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(common::client(&sim), "default");
    let pod = wait_ready_pods(&pods, watcher::Config::default(), 1)
        .await
        .remove(0);
    let uid = pod.uid().expect("uid");

    let wrong = DeleteParams::default().preconditions(Preconditions {
        uid: Some("00000000-0000-0000-0000-000000000000".into()),
        resource_version: None,
    });
    let err = api_error(pods.delete("solo", &wrong).await);
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        format!("Operation cannot be fulfilled on Pod \"solo\": the UID in the precondition (00000000-0000-0000-0000-000000000000) does not match the UID in record ({uid}). The object might have been deleted and then recreated")
    );
    let untouched = pods.get("solo").await?;
    assert!(untouched.metadata.deletion_timestamp.is_none());
    let stale_rv = DeleteParams::default().preconditions(Preconditions {
        uid: None,
        resource_version: Some("1".into()),
    });
    let err = api_error(pods.delete("solo", &stale_rv).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(pods
        .get("solo")
        .await?
        .metadata
        .deletion_timestamp
        .is_none());

    let right = DeleteParams::default().preconditions(Preconditions {
        uid: Some(uid.clone()),
        resource_version: None,
    });
    let deleted = pods.delete("solo", &right).await?;
    let terminating = deleted.left().expect("a pod delete returns the Pod");
    assert_eq!(terminating.uid().as_deref(), Some(uid.as_str()));
    assert!(terminating.metadata.deletion_timestamp.is_some());
    let gone = tokio::time::timeout(
        WAIT,
        await_condition(pods.clone(), "solo", conditions::is_deleted(&uid)),
    )
    .await
    .expect("the pod goes away after its shutdown");
    gone?;
    assert!(pods.get_opt("solo").await?.is_none());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 10. Patches
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_and_json_patches_on_nodes() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
nodes: [{name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}]
"#,
    )
    .await;
    let client = common::client(&sim);
    let nodes: Api<Node> = Api::all(client.clone());
    let raw: Api<DynamicObject> = Api::all_with(client, &ApiResource::erase::<Node>(&()));
    let name = "ip-10-0-1-10.ec2.internal";
    let pp = PatchParams::default();

    let cordoned = nodes
        .patch(
            name,
            &pp,
            &Patch::Strategic(json!({"spec": {"unschedulable": true}})),
        )
        .await?;
    assert_eq!(
        cordoned.spec.as_ref().and_then(|s| s.unschedulable),
        Some(true)
    );
    assert_eq!(
        raw.get(name).await?.data["spec"]["unschedulable"],
        json!(true)
    );
    let listed = nodes
        .list(&ListParams::default().fields("spec.unschedulable=true"))
        .await?;
    assert_eq!(listed.items.len(), 1);

    let uncordoned = nodes
        .patch(
            name,
            &pp,
            &Patch::Strategic(json!({"spec": {"unschedulable": null}})),
        )
        .await?;
    assert_eq!(uncordoned.spec.as_ref().and_then(|s| s.unschedulable), None);
    let spec = raw.get(name).await?.data["spec"].clone();
    assert!(
        spec.get("unschedulable").is_none(),
        "uncordon must remove the key, not store null: {spec}"
    );
    assert!(
        spec.get("providerID").is_some(),
        "the rest of spec stays: {spec}"
    );

    let merged = nodes
        .patch(
            name,
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"termguard.io/state": "draining"}}})),
        )
        .await?;
    assert_eq!(label(&merged, "termguard.io/state"), Some("draining"));
    assert_eq!(
        label(&merged, "topology.kubernetes.io/zone"),
        Some("us-east-1a")
    );

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/metadata/labels/termguard.io~1state", "value": "drained"},
        {"op": "add", "path": "/metadata/labels/extra", "value": "x"}
    ]))?;
    let patched = nodes.patch(name, &pp, &Patch::<()>::Json(ops)).await?;
    assert_eq!(label(&patched, "termguard.io/state"), Some("drained"));
    assert_eq!(label(&patched, "extra"), Some("x"));

    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/metadata/labels/extra"}]))?;
    let patched = nodes.patch(name, &pp, &Patch::<()>::Json(ops)).await?;
    assert_eq!(label(&patched, "extra"), None);
    assert_eq!(label(&patched, "termguard.io/state"), Some("drained"));

    // A failing `test` op rejects the whole patch.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/labels/termguard.io~1state", "value": "nope"},
        {"op": "add", "path": "/metadata/labels/extra", "value": "y"}
    ]))?;
    assert!(nodes
        .patch(name, &pp, &Patch::<()>::Json(ops))
        .await
        .is_err());
    assert_eq!(label(&nodes.get(name).await?, "extra"), None);

    // Server-side apply (kube-rs `Patch::Apply`) on an existing node.
    let applied = nodes
        .patch(
            name,
            &PatchParams::apply("termguard").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"termguard.io/applied": "yes"}}
            })),
        )
        .await?;
    assert_eq!(label(&applied, "termguard.io/applied"), Some("yes"));
    assert_eq!(
        applied.spec.as_ref().and_then(|s| s.provider_id.as_deref()),
        cordoned
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 11. Too-old resourceVersion
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_too_old_resource_version_is_an_in_stream_410() -> anyhow::Result<()> {
    let (client, _faults, server) = serve_bare(5).await;
    let nodes: Api<Node> = Api::all(client);
    let mut last_rv = String::new();
    for i in 0..12 {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(format!("ip-10-0-1-{}.ec2.internal", 10 + i)),
                ..Default::default()
            },
            ..Default::default()
        };
        last_rv = nodes
            .create(&PostParams::default(), &node)
            .await?
            .resource_version()
            .expect("RV");
    }

    // The HTTP request succeeds (200); the error is the stream's only event.
    let mut stream = nodes.watch(&WatchParams::default(), "1").await?.boxed();
    match next_item(&mut stream, "the ERROR event").await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(
                status.message.starts_with("too old resource version: 1 ("),
                "{}",
                status.message
            );
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    assert!(next_item(&mut stream, "the end of the stream")
        .await
        .is_none());

    // A version still in the retained history replays what came after it.
    let prev: u64 = last_rv.parse::<u64>()? - 1;
    let mut stream = nodes
        .watch(&WatchParams::default(), &prev.to_string())
        .await?
        .boxed();
    match next_item(&mut stream, "the replayed ADDED").await {
        Some(Ok(WatchEvent::Added(n))) => {
            assert_eq!(n.name_any(), "ip-10-0-1-21.ec2.internal");
            assert_eq!(n.resource_version(), Some(last_rv));
        }
        other => panic!("expected the last node's ADDED, got {other:?}"),
    }
    server.abort();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 12. StatefulSet
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pod_is_recreated_with_same_name_only_after_the_old_one_is_gone(
) -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 100, shutdownMs: 500}
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b]}
workloads:
  - {kind: StatefulSet, name: db, replicas: 2}
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(common::client(&sim), "default");
    wait_ready_pods(&pods, watcher::Config::default().labels("app=db"), 2).await;
    let old = pods.get("db-0").await?;
    let old_uid = old.uid().expect("uid");

    let mut events = pods
        .watch(
            &WatchParams::default().fields("metadata.name=db-0"),
            &old.resource_version().expect("RV"),
        )
        .await?
        .boxed();
    let status = pods.evict("db-0", &EvictParams::default()).await?;
    assert!(status.is_success());

    let mut old_deleted = false;
    let new_uid = loop {
        match next_item(&mut events, "the new db-0")
            .await
            .expect("watch open")?
        {
            WatchEvent::Modified(p) => {
                assert_eq!(p.uid().as_deref(), Some(old_uid.as_str()));
                assert!(p.metadata.deletion_timestamp.is_some());
            }
            WatchEvent::Deleted(p) => {
                assert_eq!(p.uid().as_deref(), Some(old_uid.as_str()));
                old_deleted = true;
            }
            WatchEvent::Added(p) => {
                assert!(
                    old_deleted,
                    "db-0 was recreated before the old one was gone"
                );
                let uid = p.uid().expect("uid");
                assert_ne!(uid, old_uid);
                break uid;
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected watch event: {other:?}"),
        }
    };
    let after = wait_ready_pods(&pods, watcher::Config::default().labels("app=db"), 2).await;
    let db0 = after.iter().find(|p| p.name_any() == "db-0").expect("db-0");
    assert_eq!(db0.uid(), Some(new_uid));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 13. Node loss
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_goes_unknown_and_deleting_it_reschedules_its_pods() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 50}
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b, us-east-1c]}
workloads:
  - {kind: Deployment, name: web, replicas: 3}
"#,
    )
    .await;
    let client = common::client(&sim);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client);
    let web = watcher::Config::default().labels("app=web");
    let before = wait_ready_pods(&pods, web.clone(), 3).await;
    let victim = node_of(&before[0]).to_string();
    let lost: BTreeSet<String> = before
        .iter()
        .filter(|p| node_of(p) == victim)
        .filter_map(|p| p.uid())
        .collect();

    let died = sim.kill_node(&victim)?;
    let died_uids: BTreeSet<String> = died.iter().map(|e| e.uid.clone()).collect();
    assert_eq!(died_uids, lost);

    wait_for(
        &nodes,
        watcher::Config::default().fields(&format!("metadata.name={victim}")),
        "the killed node's Ready condition to be Unknown",
        |ns| ns.len() == 1 && node_condition(&ns[0], "Ready") == Some("Unknown"),
    )
    .await;
    let on_victim = wait_for(
        &pods,
        watcher::Config::default().fields(&format!("spec.nodeName={victim}")),
        "the lost pods to be listed and not Ready",
        |ps| {
            ps.len() == lost.len()
                && ps
                    .iter()
                    .all(|p| pod_condition(p, "Ready") == Some("False"))
        },
    )
    .await;
    let listed: BTreeSet<String> = on_victim.iter().filter_map(|p| p.uid()).collect();
    assert_eq!(
        listed, lost,
        "the lost pods stay in the API until the Node goes"
    );

    sim.delete_node(&victim)?;
    let after = wait_for(&pods, web, "replacements running elsewhere", |ps| {
        ps.len() == 3 && ps.iter().all(running_ready) && ps.iter().all(|p| node_of(p) != victim)
    })
    .await;
    assert!(after
        .iter()
        .all(|p| p.uid().is_some_and(|u| !lost.contains(&u))));
    assert!(nodes.get_opt(&victim).await?.is_none());

    let exits = sim.cluster.exits();
    for uid in &lost {
        let mine: Vec<_> = exits.iter().filter(|e| &e.uid == uid).collect();
        assert_eq!(mine.len(), 1, "one exit per lost pod: {exits:?}");
        assert_eq!(mine[0].kind, ExitKind::NodeLost);
        assert_eq!(mine[0].node, victim);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 14. Events
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_events_about_a_node_are_visible_through_both_event_apis() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as NewEvent;
    let sim = common::start(
        r#"
nodes:
  - {name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}
  - {name: ip-10-0-2-10.ec2.internal, zone: us-east-1b}
"#,
    )
    .await;
    let client = common::client(&sim);
    let nodes: Api<Node> = Api::all(client.clone());
    let name = "ip-10-0-1-10.ec2.internal";
    let node = nodes.get(name).await?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "termguard".into(),
            instance: Some("termguard-test".into()),
        },
    );
    let event = RecordedEvent {
        type_: EventType::Normal,
        reason: "DrainStarted".into(),
        note: Some("draining before instance termination".into()),
        action: "Drain".into(),
        secondary: None,
    };
    recorder.publish(&event, &node.object_ref(&())).await?;

    let core: Api<CoreEvent> = Api::all(client.clone());
    let about_node = core
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await?;
    assert_eq!(about_node.items.len(), 1, "{:?}", about_node.items);
    let ev = &about_node.items[0];
    assert_eq!(ev.namespace().as_deref(), Some("default"));
    assert_eq!(ev.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(ev.involved_object.name.as_deref(), Some(name));
    assert_eq!(ev.involved_object.uid, node.uid());
    assert_eq!(ev.reason.as_deref(), Some("DrainStarted"));
    assert_eq!(
        ev.message.as_deref(),
        Some("draining before instance termination")
    );
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(ev.reporting_component.as_deref(), Some("termguard"));
    // kubectl describe node's query shape.
    let describe = core
        .list(&ListParams::default().fields(&format!(
            "involvedObject.name={name},involvedObject.namespace=,involvedObject.kind=Node"
        )))
        .await?;
    assert_eq!(describe.items.len(), 1);
    let other = core
        .list(&ListParams::default().fields("involvedObject.name=ip-10-0-2-10.ec2.internal"))
        .await?;
    assert!(other.items.is_empty());

    let new: Api<NewEvent> = Api::namespaced(client, "default");
    let listed = new.list(&ListParams::default()).await?;
    let ev = listed
        .items
        .iter()
        .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .expect("the event through events.k8s.io/v1");
    assert_eq!(
        ev.note.as_deref(),
        Some("draining before instance termination")
    );
    assert_eq!(ev.reporting_controller.as_deref(), Some("termguard"));
    assert_eq!(ev.reporting_instance.as_deref(), Some("termguard-test"));
    assert_eq!(ev.action.as_deref(), Some("Drain"));
    assert!(ev.event_time.is_some());

    // A repeat becomes a merge patch with a series, visible through both APIs.
    recorder.publish(&event, &node.object_ref(&())).await?;
    let again = new.get(&ev.name_any()).await?;
    assert_eq!(again.series.as_ref().map(|s| s.count), Some(2));
    let core_again = Api::<CoreEvent>::namespaced(common::client(&sim), "default")
        .get(&ev.name_any())
        .await?;
    assert_eq!(core_again.count, Some(2));
    assert_eq!(core_again.series.as_ref().and_then(|s| s.count), Some(2));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 15. Leases
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_replace_uses_optimistic_concurrency() -> anyhow::Result<()> {
    let sim = common::start("nodes: []\n").await;
    let leases: Api<Lease> = Api::namespaced(common::client(&sim), "kube-node-lease");
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("termguard-leader".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("replica-a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
            ..Default::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await?;
    assert!(created.resource_version().is_some());
    let err = api_error(leases.create(&PostParams::default(), &lease).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));

    let got = leases.get("termguard-leader").await?;
    assert_eq!(got.uid(), created.uid());
    assert_eq!(
        got.spec.as_ref().and_then(|s| s.holder_identity.as_deref()),
        Some("replica-a")
    );

    let mut takeover = got.clone();
    if let Some(spec) = takeover.spec.as_mut() {
        spec.holder_identity = Some("replica-b".into());
        spec.lease_transitions = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
    }
    let replaced = leases
        .replace("termguard-leader", &PostParams::default(), &takeover)
        .await?;
    assert_ne!(replaced.resource_version(), got.resource_version());
    assert_eq!(
        replaced.spec.as_ref().and_then(|s| s.lease_transitions),
        Some(1)
    );

    // A second contender still holding the old version loses.
    let mut contender = got.clone();
    if let Some(spec) = contender.spec.as_mut() {
        spec.holder_identity = Some("replica-c".into());
    }
    let err = api_error(
        leases
            .replace("termguard-leader", &PostParams::default(), &contender)
            .await,
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert_eq!(
        err.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"termguard-leader\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let now_held = leases.get("termguard-leader").await?;
    assert_eq!(
        now_held
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        Some("replica-b")
    );

    // Server-side apply creates a missing lease and updates an existing one.
    let ssa = PatchParams::apply("termguard").force();
    let body = |holder: &str| {
        Patch::Apply(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "termguard-applied"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}
        }))
    };
    let first = leases.patch("termguard-applied", &ssa, &body("a")).await?;
    let second = leases.patch("termguard-applied", &ssa, &body("b")).await?;
    assert_eq!(first.uid(), second.uid());
    assert_eq!(
        second
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        Some("b")
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 16. Fault injection
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_list_errors_and_cut_watches() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b, us-east-1c]}
"#,
    )
    .await;
    let nodes: Api<Node> = Api::all(common::client(&sim));
    let any = nodes.list(&ListParams::default()).await?.items[0].name_any();

    sim.faults.set(FaultConfig {
        verbs: BTreeMap::from([(
            "list".to_string(),
            VerbFault {
                error_rate: 1.0,
                ..Default::default()
            },
        )]),
        ..Default::default()
    });
    let err = api_error(nodes.list(&ListParams::default()).await);
    assert_eq!(err.code, 500);
    assert_eq!(err.reason, "InternalError");
    // Other verbs are unaffected.
    nodes.get(&any).await?;

    sim.faults.set(FaultConfig {
        watch_cut_after: Some(1),
        ..Default::default()
    });
    assert_eq!(nodes.list(&ListParams::default()).await?.items.len(), 3);
    // From "0" the server would send three ADDED events; the cut closes it after one.
    let stream = nodes.watch(&WatchParams::default(), "0").await?;
    let events: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the cut stream ends");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(matches!(events[0], Ok(WatchEvent::Added(_))));

    sim.faults.set(FaultConfig::default());
    let stream = nodes.watch(&WatchParams::default().timeout(1), "0").await?;
    let events: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the watch times out");
    let added = events
        .iter()
        .filter(|e| matches!(e, Ok(WatchEvent::Added(_))))
        .count();
    let others: Vec<_> = events
        .iter()
        .filter(|e| !matches!(e, Ok(WatchEvent::Added(_) | WatchEvent::Bookmark(_))))
        .collect();
    assert_eq!(added, 3, "without the cut every node comes: {events:?}");
    assert!(others.is_empty(), "{others:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 17. DaemonSet and a new node
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_node_gets_a_daemonset_pod_and_pending_pods() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 50}
nodeGroups:
  - {name: workers, zones: [us-east-1a], capacity: {pods: 3}}
workloads:
  - {kind: DaemonSet, name: agent, namespace: kube-system}
  - {kind: Deployment, name: web, replicas: 4}
"#,
    )
    .await;
    let client = common::client(&sim);
    let agents: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let daemonsets: Api<DaemonSet> = Api::namespaced(client, "kube-system");
    let web = watcher::Config::default().labels("app=web");

    let first = wait_ready_pods(&agents, watcher::Config::default(), 1).await;
    let old_node = node_of(&first[0]).to_string();
    // The node holds 3 pods: the agent and two web pods; two stay Pending, Unschedulable.
    wait_for(
        &pods,
        web.clone(),
        "two running and two unschedulable",
        |ps| {
            let running = ps.iter().filter(|p| running_ready(p)).count();
            let unschedulable = ps
                .iter()
                .filter(|p| {
                    node_of(p).is_empty()
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter().any(|c| {
                                    c.type_ == "PodScheduled"
                                        && c.status == "False"
                                        && c.reason.as_deref() == Some("Unschedulable")
                                })
                            })
                })
                .count();
            ps.len() == 4 && running == 2 && unschedulable == 2
        },
    )
    .await;

    let new_node = "ip-10-0-2-10.ec2.internal";
    sim.add_node(&NodeSpec {
        name: new_node.into(),
        zone: "us-east-1b".into(),
        instance_id: String::new(),
        instance_type: "m5.large".into(),
        group: "workers".into(),
        capacity: Capacity::default(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
    })?;

    let agents_now = wait_ready_pods(&agents, watcher::Config::default(), 2).await;
    let agent_nodes: BTreeSet<&str> = agents_now.iter().map(node_of).collect();
    assert_eq!(
        agent_nodes,
        BTreeSet::from([old_node.as_str(), new_node]),
        "one agent per node"
    );
    let web_now = wait_ready_pods(&pods, web, 4).await;
    assert_eq!(
        web_now.iter().filter(|p| node_of(p) == new_node).count(),
        2,
        "{:?}",
        pods_summary(&web_now)
    );
    let ds = wait_for(
        &daemonsets,
        watcher::Config::default(),
        "DaemonSet status",
        |ds| {
            ds.len() == 1
                && ds[0]
                    .status
                    .as_ref()
                    .is_some_and(|s| s.desired_number_scheduled == 2 && s.number_ready == 2)
        },
    )
    .await;
    assert_eq!(ds[0].name_any(), "agent");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Dry runs and watch selector transitions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_through_kube_rs_change_nothing() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 50}
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b]}
workloads:
  - {kind: Deployment, name: web, replicas: 2, pdb: {maxUnavailable: 1}}
"#,
    )
    .await;
    let client = client_without_retry(&sim);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, "default");
    let ready = wait_ready_pods(&pods, watcher::Config::default().labels("app=web"), 2).await;
    wait_for(&pdbs, watcher::Config::default(), "the PDB status", |ps| {
        ps.iter().any(|p| {
            pdb_observed(p)
                && p.status
                    .as_ref()
                    .is_some_and(|s| s.disruptions_allowed == 1)
        })
    })
    .await;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };

    // Eviction with ?dryRun=All: the checks run, nothing changes (`docs/simulator.md#eviction`).
    let name = ready[0].name_any();
    let status = pods
        .evict(
            &name,
            &EvictParams {
                post_options: dry.clone(),
                ..Default::default()
            },
        )
        .await?;
    assert!(status.is_success(), "{status:?}");
    let pod = pods.get(&name).await?;
    assert!(
        pod.metadata.deletion_timestamp.is_none(),
        "a dry-run eviction deleted the pod"
    );
    let budget = pdbs.get("web").await?;
    assert_eq!(budget.status.map(|s| s.disruptions_allowed), Some(1));

    // Replace with ?dryRun=All returns the would-be object but does not persist it
    // (`docs/simulator.md#resources-and-verbs`).
    let node_name = node_of(&pod).to_string();
    let mut node = nodes.get(&node_name).await?;
    node.labels_mut().insert("dry".into(), "run".into());
    let answered = nodes.replace(&node_name, &dry, &node).await?;
    assert_eq!(label(&answered, "dry"), Some("run"));
    assert_eq!(
        label(&nodes.get(&node_name).await?, "dry"),
        None,
        "a dry-run PUT persisted"
    );

    // Patch, create and delete with dryRun.
    let patched = nodes
        .patch(
            &node_name,
            &PatchParams {
                dry_run: true,
                ..Default::default()
            },
            &Patch::Merge(json!({"metadata": {"labels": {"dry": "patch"}}})),
        )
        .await?;
    assert_eq!(label(&patched, "dry"), Some("patch"));
    assert_eq!(label(&nodes.get(&node_name).await?, "dry"), None);
    let leases: Api<Lease> = Api::namespaced(common::client(&sim), "default");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("dry".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    leases.create(&dry, &lease).await?;
    assert!(leases.get_opt("dry").await?.is_none());
    let deleted = pods
        .delete(
            &name,
            &DeleteParams {
                dry_run: true,
                ..Default::default()
            },
        )
        .await?;
    assert!(deleted.is_left());
    assert!(pods.get(&name).await?.metadata.deletion_timestamp.is_none());

    // Evicting a pod that does not exist is a plain 404.
    let err = api_error(pods.evict("nope", &EvictParams::default()).await);
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    assert_eq!(err.message, "pods \"nope\" not found");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selector_watch_sees_objects_enter_and_leave() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
defaults: {startupMs: 50, shutdownMs: 50}
nodes: [{name: ip-10-0-1-10.ec2.internal, zone: us-east-1a}]
workloads:
  - {kind: Pod, name: solo, node: ip-10-0-1-10.ec2.internal}
"#,
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(common::client(&sim), "default");
    let pod = wait_ready_pods(&pods, watcher::Config::default(), 1)
        .await
        .remove(0);
    let mut events = pods
        .watch(
            &WatchParams::default().labels("termguard.io/drain=yes"),
            &pod.resource_version().expect("RV"),
        )
        .await?
        .boxed();
    let set = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"termguard.io/drain": v}}}));
    pods.patch("solo", &PatchParams::default(), &set("yes"))
        .await?;
    match next_item(&mut events, "ADDED on match").await {
        Some(Ok(WatchEvent::Added(p))) => assert_eq!(label(&p, "termguard.io/drain"), Some("yes")),
        other => panic!("expected ADDED, got {other:?}"),
    }
    pods.patch("solo", &PatchParams::default(), &set("no"))
        .await?;
    match next_item(&mut events, "DELETED on unmatch").await {
        Some(Ok(WatchEvent::Deleted(p))) => assert_eq!(p.name_any(), "solo"),
        other => panic!("expected DELETED, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_relists_after_an_in_stream_410() -> anyhow::Result<()> {
    use kube::runtime::WatchStreamExt;
    let (client, faults, server) = serve_bare(5).await;
    let nodes: Api<Node> = Api::all(client);
    nodes
        .create(
            &PostParams::default(),
            &bare_node("ip-10-0-1-10.ec2.internal"),
        )
        .await?;
    // Short server-side watch timeouts make the watcher reconnect from its last version.
    let mut stream = watcher(nodes.clone(), watcher::Config::default().timeout(1))
        .default_backoff()
        .boxed();
    loop {
        match next_item(&mut stream, "the first InitDone").await {
            Some(Ok(Event::InitDone)) => break,
            Some(Ok(_)) => {}
            other => panic!("unexpected item before InitDone: {other:?}"),
        }
    }

    // Refuse new watches, wait until the watcher has tried (and failed) to reconnect, then
    // write enough to push its resourceVersion out of the 5-change history.
    faults.set(FaultConfig {
        verbs: BTreeMap::from([(
            "watch".to_string(),
            VerbFault {
                error_rate: 1.0,
                ..Default::default()
            },
        )]),
        ..Default::default()
    });
    loop {
        match next_item(&mut stream, "a failed re-watch").await {
            Some(Err(_)) => break,
            Some(Ok(Event::Apply(_) | Event::Delete(_))) | None => {
                panic!("nothing changed, nothing should be reported")
            }
            Some(Ok(_)) => {}
        }
    }
    let mut all = BTreeSet::from(["ip-10-0-1-10.ec2.internal".to_string()]);
    for i in 0..12 {
        let name = format!("ip-10-0-2-{}.ec2.internal", 10 + i);
        nodes
            .create(&PostParams::default(), &bare_node(&name))
            .await?;
        all.insert(name);
    }
    faults.set(FaultConfig::default());

    // The re-watch from the expired version gets an ERROR 410 event; only that makes kube-rs
    // re-list (an HTTP 410 would leave it retrying the same version forever;
    // `docs/simulator.md#watch`).
    let mut relisted = BTreeSet::new();
    let mut saw_init = false;
    loop {
        match next_item(&mut stream, "the re-list").await {
            Some(Ok(Event::Init)) => saw_init = true,
            Some(Ok(Event::InitApply(n))) if saw_init => {
                relisted.insert(n.name_any());
            }
            Some(Ok(Event::InitDone)) if saw_init => break,
            Some(Ok(other)) => panic!("unexpected event before the re-list: {other:?}"),
            // Retries that hit the expired version surface as errors before the re-list.
            Some(Err(_)) => {}
            None => panic!("the watcher stream ended"),
        }
    }
    assert_eq!(relisted, all);
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_initial_list_strategies_all_complete() -> anyhow::Result<()> {
    let sim = common::start(
        r#"
nodeGroups:
  - {name: workers, zones: [us-east-1a, us-east-1b, us-east-1c]}
"#,
    )
    .await;
    let nodes: Api<Node> = Api::all(common::client(&sim));
    let strategies = [
        ("list then watch", watcher::Config::default()),
        ("any semantic", watcher::Config::default().any_semantic()),
        ("one item per page", watcher::Config::default().page_size(1)),
        (
            "streaming list",
            watcher::Config::default().streaming_lists(),
        ),
    ];
    for (what, config) in strategies {
        let seen = wait_for(&nodes, config, what, |ns| ns.len() == 3).await;
        assert!(
            seen.iter().all(|n| n.resource_version().is_some()),
            "{what}"
        );
    }
    Ok(())
}
