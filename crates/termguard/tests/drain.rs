//! The drain engine over HTTP through kube-rs, on two backends with one test body each
//! (`name::sim`, `name::real`; tests/common/cluster.rs): the project's simulator, and a real
//! control plane (kube-apiserver under RBAC, kube-controller-manager, kube-scheduler, KWOK
//! kubelets; `scripts/cluster.sh up DIR`, `TERMGUARD_CLUSTER_DIR=DIR`). Every selection rule
//! and option, the wave order, PodDisruptionBudgets, deadlines, resuming and concurrent
//! drains, Events, node marking, and the `termguard drain`/`uncordon` commands.
//!
//! Test bodies read the cluster through the API only. The code under test uses `c.client`,
//! which on the real backend is the `termguard` user with exactly the ClusterRole shipped in
//! deploy/manifests/termguard.yaml; request counts are the simulator's counters or the real
//! API server's audit log for that user.
//!
//! Scenarios are small and fast (pods start and stop in a few hundred milliseconds); tests
//! assert orders, counts and states, never wall-clock limits.

#[path = "common/cluster.rs"]
#[macro_use]
mod cluster;
mod common;

use cluster::{healthy, terminating, uid, Fault, PodFeed, TestCluster};
use common::*;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube_sim::controllers::ExitKind;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use termguard::cluster::drain::filters::{DAEMONSET_FATAL, LOCAL_STORAGE_FATAL, UNMANAGED_FATAL};
use termguard::cluster::drain::{
    Backoff, DrainOptions, DrainReport, Drainer, NamespacedName, Outcome, PodAction, PodResult,
    PodSelector, Progress, Role,
};
use termguard::cluster::events::{Events, Reason};
use termguard::cluster::nodes;

type Result = anyhow::Result<()>;

const NODE: &str = "node-a";

/// A scenario with one node, `node-a`, fast pods, and the given workloads (YAML list items).
fn one_node(workloads: &str) -> String {
    format!(
        "defaults: {{startupMs: 100, shutdownMs: 100}}\nnodes:\n- {{name: {NODE}, zone: us-east-1a}}\nworkloads:\n{workloads}"
    )
}

fn result_of<'a>(report: &'a DrainReport, pod: &Value) -> &'a PodResult {
    let key = ns_name(pod);
    report
        .pods
        .iter()
        .find(|r| r.pod == key)
        .unwrap_or_else(|| panic!("no result for {key} in {report:#?}"))
}

/// The pods on `node-a` whose name starts with `prefix`.
async fn pods_named(c: &TestCluster, prefix: &str) -> Vec<Value> {
    c.pods_on(NODE)
        .await
        .into_iter()
        .filter(|p| name(p).starts_with(prefix))
        .collect()
}

fn is_skipped(report: &DrainReport, pod: &Value, rule: &str) -> bool {
    report
        .skipped
        .iter()
        .any(|s| s.pod.to_string() == ns_name(pod) && s.rule == rule)
}

fn listed_not_graceful<'a>(report: &'a DrainReport, pod: &Value) -> Option<&'a String> {
    let prefix = format!("{}: ", ns_name(pod));
    report.not_graceful.iter().find(|n| n.starts_with(&prefix))
}

/// The pods a drain recorded on the Node (`nodes::PODS`), by namespace/name.
fn recorded_pods(node: &Value) -> BTreeMap<String, Value> {
    node["metadata"]["annotations"][nodes::PODS]
        .as_str()
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r["p"].as_str().unwrap_or("").to_string(), r))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Selection rules and options

both_backends! {
    async fn daemonset_pods_refuse_the_drain_without_ignore_daemonsets_and_stay_running_with_it(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: DaemonSet, name: agent}\n- {kind: Deployment, name: web, replicas: 2}\n",
            ),
        )
        .await;
        let ds = pods_named(&c, "agent-").await;
        assert_eq!(ds.len(), 1);
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 2);
        c.reset_counts();

        let refused = drainer(&c, "t")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        assert_eq!(refused.outcome, Outcome::Refused);
        let message = refused.refused.clone().unwrap_or_default();
        assert!(
            message.contains(&format!("{DAEMONSET_FATAL}: {}", ns_name(&ds[0]))),
            "{message}"
        );
        assert_eq!(c.verb_count("evict"), 0, "nothing is evicted");
        assert_eq!(c.verb_count("delete"), 0, "nothing is deleted");
        assert!(c.pods_on(NODE).await.iter().all(|p| !terminating(p)));
        let n = c.node(NODE).await;
        assert_eq!(n["spec"]["unschedulable"], true, "stays cordoned");
        assert_eq!(n["metadata"]["annotations"][nodes::PHASE], "failed");
        // As kubectl leaves it: cordoned, nothing else.
        assert!(taint(&n, nodes::TERMINATING_TAINT).is_none(), "{n:#}");
        assert!(n["metadata"]["labels"][nodes::EXCLUDE_LB_LABEL].is_null(), "{n:#}");

        let opts = DrainOptions {
            ignore_daemonsets: true,
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.evicted, 2);
        assert!(is_skipped(&report, &ds[0], "daemonset"), "{report:#?}");
        let still = c
            .pod(&namespace(&ds[0]), &name(&ds[0]))
            .await
            .expect("DaemonSet pod stays");
        assert_eq!(uid(&still), uid(&ds[0]));
        assert!(healthy(&still), "the DaemonSet pod keeps running");
        assert_eq!(c.evictions_of(&ds[0]) + c.deletes_of(&ds[0]), 0);
        for p in &web {
            assert!(!c.pod_uid_exists(&uid(p)).await, "{} is gone", name(p));
            assert_eq!(result_of(&report, p).action, PodAction::Evicted);
        }
        Ok(())
    }
}

both_backends! {
    async fn mirror_pods_are_never_touched(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(&format!(
                "- {{kind: StaticPod, name: kube-proxy, namespace: kube-system, node: {NODE}}}\n\
                 - {{kind: Deployment, name: web}}\n"
            )),
        )
        .await;
        let mirror = pods_named(&c, "kube-proxy-").await;
        assert_eq!(mirror.len(), 1);
        assert!(mirror[0]["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string());

        let report = drainer(&c, "t")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.evicted, 1);
        assert!(is_skipped(&report, &mirror[0], "mirror-pod"), "{report:#?}");
        assert_eq!(c.evictions_of(&mirror[0]) + c.deletes_of(&mirror[0]), 0);
        let still = c
            .pod("kube-system", &name(&mirror[0]))
            .await
            .expect("mirror pod stays");
        assert_eq!(uid(&still), uid(&mirror[0]));
        assert!(!terminating(&still));
        Ok(())
    }
}

both_backends! {
    async fn emptydir_pods_refuse_the_drain_without_delete_emptydir_data(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: cache, emptyDir: true}\n\
                 - {kind: Deployment, name: web}\n",
            ),
        )
        .await;
        let cache = pods_named(&c, "cache-").await;
        assert_eq!(cache.len(), 1);
        c.reset_counts();

        let refused = drainer(&c, "t")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        assert_eq!(refused.outcome, Outcome::Refused);
        let message = refused.refused.clone().unwrap_or_default();
        assert!(
            message.contains(&format!("{LOCAL_STORAGE_FATAL}: {}", ns_name(&cache[0]))),
            "{message}"
        );
        assert_eq!(c.verb_count("evict") + c.verb_count("delete"), 0);
        assert!(c.pods_on(NODE).await.iter().all(|p| !terminating(p)));

        let opts = DrainOptions {
            delete_emptydir_data: true,
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(result_of(&report, &cache[0]).action, PodAction::Evicted);
        assert!(!c.pod_uid_exists(&uid(&cache[0])).await);
        Ok(())
    }
}

both_backends! {
    async fn bare_pods_refuse_the_drain_without_force_and_are_removed_with_it(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(&format!(
                "- {{kind: Pod, name: debug, node: {NODE}}}\n- {{kind: Deployment, name: web}}\n"
            )),
        )
        .await;
        let bare = c.pod("default", "debug").await.expect("bare pod");
        c.reset_counts();

        let refused = drainer(&c, "t")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        assert_eq!(refused.outcome, Outcome::Refused);
        let message = refused.refused.clone().unwrap_or_default();
        assert!(
            message.contains(&format!("{UNMANAGED_FATAL}: default/debug")),
            "{message}"
        );
        assert_eq!(c.verb_count("evict") + c.verb_count("delete"), 0);
        assert!(!terminating(&c.pod("default", "debug").await.expect("still there")));

        let opts = DrainOptions {
            force: true,
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(result_of(&report, &bare).action, PodAction::Evicted);
        assert!(
            c.pod("default", "debug").await.is_none(),
            "gone, not recreated"
        );
        Ok(())
    }
}

both_backends! {
    async fn finished_pods_are_deleted_without_force_or_emptydir_data(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(&format!(
                "- {{kind: Pod, name: job-done, node: {NODE}, emptyDir: true}}\n\
                 - {{kind: Deployment, name: web}}\n"
            )),
        )
        .await;
        c.set_phase("default", "job-done", "Succeeded").await;
        let done = c.pod("default", "job-done").await.expect("finished pod");
        assert_eq!(done["status"]["phase"], "Succeeded");
        c.reset_counts();

        let report = drainer(&c, "t")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        let r = result_of(&report, &done);
        assert_eq!(r.action, PodAction::Deleted);
        assert_eq!(r.wave, 1);
        assert_eq!(c.deletes_of(&done), 1);
        assert_eq!(c.evictions_of(&done), 0);
        assert!(c.pod("default", "job-done").await.is_none());
        Ok(())
    }
}

both_backends! {
    async fn pod_selector_limits_the_drain_to_matching_pods(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: web, replicas: 2}\n\
                 - {kind: Deployment, name: api, replicas: 2}\n",
            ),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        let api = pods_named(&c, "api-").await;
        assert_eq!((web.len(), api.len()), (2, 2));

        let opts = DrainOptions {
            pod_selector: PodSelector::parse("app=web")?,
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.evicted, 2);
        for p in &web {
            assert!(!c.pod_uid_exists(&uid(p)).await);
        }
        for p in &api {
            let still = c.pod("default", &name(p)).await.expect("api pod stays");
            assert_eq!(uid(&still), uid(p));
            assert!(healthy(&still));
            assert_eq!(c.evictions_of(p), 0);
        }
        Ok(())
    }
}

both_backends! {
    async fn disable_eviction_deletes_and_bypasses_disruption_budgets(backend) -> Result {
        // A budget that allows no disruption at all: only DELETE can drain this node.
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 3, pdb: {minAvailable: 3}}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 3);
        c.reset_counts();

        let opts = DrainOptions {
            disable_eviction: true,
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        let counts = c.request_counts();
        assert_eq!(c.verb_count("evict"), 0, "{counts:#?}");
        assert!(c.verb_count("delete") >= 3, "{counts:#?}");
        for p in &web {
            assert_eq!(result_of(&report, p).action, PodAction::Deleted);
            assert_eq!(c.deletes_of(p), 1);
            assert!(!c.pod_uid_exists(&uid(p)).await);
        }
        Ok(())
    }
}

both_backends! {
    /// `--timeout` keeps kubectl's meaning: it bounds the wait, and a budget that allows
    /// nothing is respected to the end — the pods (30 s grace, longer than the timeout) stay,
    /// none is deleted. Clipping past budgets is for `--deadline` and notices only.
    async fn timeout_bounds_the_wait_and_never_bypasses_a_budget(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 3, pdb: {minAvailable: 3}}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 3);
        c.reset_counts();
        let opts = DrainOptions {
            timeout: Some(Duration::from_secs(4)),
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::TimedOut, "{report:#?}");
        for p in &web {
            assert_eq!(result_of(&report, p).action, PodAction::Remained);
            assert!(c.evictions_of(p) >= 1, "eviction tried");
            assert_eq!(c.deletes_of(p), 0, "never deleted past its budget");
            assert!(c.pod_uid_exists(&uid(p)).await);
        }
        Ok(())
    }
}

both_backends! {
    async fn grace_period_override_reaches_the_server(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: web, replicas: 2, terminationGracePeriodSeconds: 30}\n",
            ),
        )
        .await;
        let feed = PodFeed::start(&c).await;
        let web = feed.initial_on(NODE);
        assert_eq!(web.len(), 2);

        let opts = DrainOptions {
            grace_period: Some(3),
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        feed.sync().await;
        for p in &web {
            assert_eq!(result_of(&report, p).action, PodAction::Evicted);
            assert_eq!(
                feed.deletion_grace_seconds(&uid(p)),
                Some(3),
                "deletionGracePeriodSeconds of {}",
                name(p)
            );
        }
        Ok(())
    }
}

both_backends! {
    async fn skip_wait_for_delete_timeout_leaves_pods_that_outlive_their_deletion(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 3}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 3);
        // The instance is gone: its pods will never finish terminating.
        c.kill_node(NODE).await;
        // One pod was deleted earlier; its deletionTimestamp is now more than 1 s old.
        let api: Api<Pod> = Api::namespaced(c.admin.clone(), "default");
        api.delete(
            &name(&web[0]),
            &DeleteParams {
                grace_period_seconds: Some(1),
                ..Default::default()
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(3500)).await;
        c.reset_counts();

        let opts = DrainOptions {
            grace_period: Some(1),
            skip_wait_for_delete_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert!(is_skipped(&report, &web[0], "skip-deleted"), "{report:#?}");
        assert_eq!(c.evictions_of(&web[0]), 0);
        for p in &web[1..] {
            assert_eq!(result_of(&report, p).action, PodAction::Evicted);
            assert_eq!(c.evictions_of(p), 1);
        }
        for p in &web {
            let still = c.pod("default", &name(p)).await.expect("still in the API");
            assert!(terminating(&still), "{} is terminating", name(p));
        }
        Ok(())
    }
}

both_backends! {
    async fn skip_wait_for_delete_timeout_still_waits_for_pods_within_their_grace_period(
        backend
    ) -> Result {
        // deletionTimestamp = request time + 30 s: it is in the future for the whole shutdown.
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: slow, replicas: 2, shutdownMs: 2500, \
                 terminationGracePeriodSeconds: 30}\n",
            ),
        )
        .await;
        let slow = pods_named(&c, "slow-").await;
        assert_eq!(slow.len(), 2);
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = warnings.clone();
        let d = drainer(&c, "t").with_progress(move |p| {
            if let Progress::Warning(w) = p {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(w.clone());
            }
        });
        let opts = DrainOptions {
            skip_wait_for_delete_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let report = d.drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        for p in &slow {
            assert!(
                !c.pod_uid_exists(&uid(p)).await,
                "{} was still terminating when the drain said it was done",
                name(p)
            );
        }
        let warnings = warnings.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert!(
            !warnings.iter().any(|w| w.contains("skipping")),
            "{warnings:?}"
        );
        Ok(())
    }
}

both_backends! {
    async fn a_small_chunk_size_pages_the_pod_list_and_still_drains_every_pod(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 5}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 5);
        c.reset_counts();

        let opts = DrainOptions {
            chunk_size: 2,
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.evicted, 5);
        // Three pages of two: the drain lists the node's pods once, its pod watch's first
        // list, which the plan works on (counted before the test's own reads below, which the
        // simulator would count too).
        let counts = c.request_counts();
        assert_eq!(c.verb_count("list"), 3, "requests: {counts:#?}");
        for p in &web {
            assert!(!c.pod_uid_exists(&uid(p)).await);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Waves

both_backends! {
    /// Waiting for the ordinary pods must not starve the drain-last wave: the worker (clipped
    /// to 15 s, it takes 14) is still shutting down when the pooler's own clip point comes
    /// (deadline − margin − its 10 s grace), and the pooler starts then, with its whole grace,
    /// instead of getting one second when the worker is finally gone.
    async fn drain_last_pods_start_in_time_for_their_grace_when_a_deadline_nears(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: worker, replicas: 1, shutdownMs: 14000, terminationGracePeriodSeconds: 60}\n\
                 - {kind: Deployment, name: pgbouncer, replicas: 1, shutdownMs: 200, \
                 terminationGracePeriodSeconds: 10, annotations: {termguard.io/drain-order: last}}\n",
            ),
        )
        .await;
        let feed = PodFeed::start(&c).await;
        let initial = feed.initial_on(NODE);
        let worker = initial.iter().find(|p| name(p).starts_with("worker-")).cloned().expect("worker");
        let pooler = initial.iter().find(|p| name(p).starts_with("pgbouncer-")).cloned().expect("pooler");
        let mut req = request(NODE, DrainOptions::default());
        req.deadline = Some(Timestamp::now() + SignedDuration::from_secs(20));
        req.margin = Duration::from_secs(5);
        let report = drainer(&c, "t").drain(&req).await?;
        feed.sync().await;
        let pooled = result_of(&report, &pooler);
        assert_eq!(pooled.wave, 2);
        assert!(
            pooled.grace_period_seconds >= Some(9),
            "the pooler kept its grace: {report:#?}"
        );
        let worker_gone = feed.removed_at(&uid(&worker)).expect("worker removed");
        let pooler_asked = feed.deletion_requested_at(&uid(&pooler)).expect("pooler asked to go");
        assert!(pooler_asked < worker_gone, "the pooler started before the worker was gone");
        Ok(())
    }
}

/// What the node lifecycle controller does once a kubelet stops posting status (after its
/// grace period; at once here).
async fn mark_not_ready(c: &TestCluster, node: &str) -> Result {
    let now = Timestamp::now().to_string();
    let api: Api<Node> = Api::all(c.admin.clone());
    let patch = json!({"status": {"conditions": [{
        "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    api.patch_status(node, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}

both_backends! {
    /// A notice-driven drain of a node whose kubelet is gone: the evicted pods stay in the API,
    /// Terminating, for nothing will confirm their end. Once their grace has passed the drain
    /// stops waiting for them — the instance goes anyway — instead of holding the instance
    /// until the deadline (here an hour; a hook's global timeout can be 48).
    async fn a_notice_driven_drain_stops_waiting_for_pods_a_dead_node_cannot_confirm(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 3, terminationGracePeriodSeconds: 3}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 3);
        c.kill_node(NODE).await;
        mark_not_ready(&c, NODE).await?;
        c.reset_counts();
        let mut req = request(NODE, DrainOptions::default());
        req.deadline = Some(Timestamp::now() + SignedDuration::from_hours(1));
        let report = tokio::time::timeout(Duration::from_secs(90), drainer(&c, "t").drain(&req))
            .await??;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        for p in &web {
            let r = result_of(&report, p);
            assert_eq!(r.action, PodAction::Evicted, "{r:?}");
            assert!(
                r.not_graceful.as_deref().is_some_and(|w| w.contains("NotReady")),
                "{r:?}"
            );
            assert_eq!(c.evictions_of(p), 1);
            assert!(c.pod_uid_exists(&uid(p)).await, "still in the API: nothing confirms it gone");
        }
        Ok(())
    }
}

both_backends! {
    /// termguard's own pod, on the node it drains, is never evicted by that drain: it would
    /// end the drain midway. It leaves with the instance.
    async fn the_drain_never_evicts_termguards_own_pod(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: worker, replicas: 2, shutdownMs: 200}\n\
                 - {kind: Deployment, name: termguard, replicas: 1, \
                 annotations: {termguard.io/drain-order: last}}\n",
            ),
        )
        .await;
        let me = pods_named(&c, "termguard-").await;
        assert_eq!(me.len(), 1);
        let own = NamespacedName::new(
            me[0]["metadata"]["namespace"].as_str().unwrap_or("default"),
            &name(&me[0]),
        );
        let opts = DrainOptions {
            own_pod: Some(own.clone()),
            ..Default::default()
        };
        let report = drainer(&c, "t").drain(&request(NODE, opts)).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert!(
            report.skipped.iter().any(|s| s.pod == own),
            "reported as left on purpose: {:#?}",
            report.skipped
        );
        assert_eq!(c.evictions_of(&me[0]), 0);
        assert!(c.pod_uid_exists(&uid(&me[0])).await, "still running");
        assert!(pods_named(&c, "worker-").await.iter().all(|p| p["spec"]["nodeName"] != NODE));
        Ok(())
    }
}

both_backends! {
    async fn drain_last_pods_are_evicted_only_after_every_ordinary_pod_is_gone(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: worker, replicas: 3, shutdownMs: 300}\n\
                 - {kind: Deployment, name: pgbouncer, replicas: 2, \
                 annotations: {termguard.io/drain-order: last}}\n\
                 - {kind: Deployment, name: coredns, namespace: kube-system, \
                 priorityClassName: system-cluster-critical}\n",
            ),
        )
        .await;
        let feed = PodFeed::start(&c).await;
        let initial = feed.initial_on(NODE);
        let (workers, last): (Vec<_>, Vec<_>) =
            initial.iter().partition(|p| name(p).starts_with("worker-"));
        assert_eq!((workers.len(), last.len()), (3, 3));

        let report = drainer(&c, "t")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.waves, 2);
        feed.sync().await;

        // Positions in the watch, which delivers changes in the order the server committed them.
        let worker_gone = workers
            .iter()
            .map(|p| feed.removed_at(&uid(p)).expect("worker removed"))
            .max()
            .unwrap_or(0);
        let last_asked = last
            .iter()
            .map(|p| feed.deletion_requested_at(&uid(p)).expect("pooler deleted"))
            .min()
            .unwrap_or(0);
        assert!(
            worker_gone < last_asked,
            "last worker removed at change {worker_gone}, first drain-last pod asked to go at \
             change {last_asked}"
        );
        for p in &workers {
            assert_eq!(result_of(&report, p).wave, 1);
        }
        for p in &last {
            assert_eq!(result_of(&report, p).wave, 2);
            assert!(!c.pod_uid_exists(&uid(p)).await);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Disruption budgets

/// Three replicas on `node-a` under `minAvailable: 2`; `node-b` joins afterwards, so every
/// replacement has to start there.
///
/// Replacements take a second to become Ready: longer than the real API server's own retry of
/// an eviction that lost the race to update the budget's status (500 ms later, within the one
/// request; pkg/registry/core/pod/storage/eviction.go). With a faster start-up the server
/// could hold a concurrent eviction until a replacement was Ready and then admit it, and the
/// client would never see the refusal this scenario is about. The simulator refuses at once.
async fn budgeted_web(backend: cluster::Backend) -> TestCluster {
    let c = TestCluster::start_settled(
        backend,
        &one_node(
            "- {kind: Deployment, name: web, replicas: 3, startupMs: 1000, pdb: {minAvailable: 2}}\n",
        ),
    )
    .await;
    assert_eq!(pods_named(&c, "web-").await.len(), 3);
    c.add_node("node-b").await;
    c
}

fn is_web(p: &Value) -> bool {
    p["metadata"]["labels"]["app"] == "web"
}

both_backends! {
    async fn an_eviction_blocked_by_a_budget_is_retried_until_a_replacement_is_ready_elsewhere(
        backend
    ) -> Result {
        let c = budgeted_web(backend).await;
        let feed = PodFeed::start(&c).await;
        let web = feed.initial_on(NODE);
        assert_eq!(web.len(), 3);

        let report = drainer(&c, "t")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.evicted, 3);
        let retried = web
            .iter()
            .filter(|p| result_of(&report, p).attempts > 1)
            .count();
        assert!(retried >= 2, "only one disruption at a time: {report:#?}");
        for p in &web {
            assert_eq!(result_of(&report, p).action, PodAction::Evicted);
            assert!(!c.pod_uid_exists(&uid(p)).await);
        }
        feed.sync().await;
        assert!(
            feed.min_healthy(is_web) >= 2,
            "fewer than minAvailable web pods were Ready at some point"
        );
        // The replacements run on the other node.
        c.settle().await;
        let on_b = c.pods_on("node-b").await;
        assert_eq!(on_b.iter().filter(|p| is_web(p)).count(), 3);
        Ok(())
    }
}

both_backends! {
    /// Six replicas behind `maxUnavailable: 1`: one may go at a time, each time a replacement
    /// is Ready elsewhere. With the fallback backoff at ten minutes, only the budget's own
    /// change can wake the retries in time: the drain is paced by the budget, not a timer.
    async fn a_blocked_eviction_is_retried_when_its_budget_has_room_not_when_a_timer_fires(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: web, replicas: 6, startupMs: 1000, pdb: {maxUnavailable: 1}}\n",
            ),
        )
        .await;
        c.add_node("node-b").await;
        let feed = PodFeed::start(&c).await;
        let web = feed.initial_on(NODE);
        assert_eq!(web.len(), 6);
        let slow = Backoff {
            initial: Duration::from_secs(600),
            max: Duration::from_secs(600),
            jitter: 0.0,
        };
        let opts = DrainOptions {
            // Far more than six start-ups; far less than one fallback retry.
            timeout: Some(Duration::from_secs(150)),
            ..Default::default()
        };
        let report = drainer(&c, "t")
            .with_backoff(slow)
            .drain(&request(NODE, opts))
            .await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.evicted, 6);
        let retried = web
            .iter()
            .filter(|p| result_of(&report, p).attempts > 1)
            .count();
        assert!(retried >= 4, "one disruption at a time: {report:#?}");
        feed.sync().await;
        assert!(
            feed.min_healthy(is_web) >= 5,
            "more than maxUnavailable web pods were unavailable at some point"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Deadlines

both_backends! {
    async fn a_deadline_clips_grace_periods_and_the_pods_still_get_sigterm(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: slow, replicas: 2, terminationGracePeriodSeconds: 30, \
                 shutdownMs: 60000}\n\
                 - {kind: Deployment, name: quick, terminationGracePeriodSeconds: 30}\n",
            ),
        )
        .await;
        let feed = PodFeed::start(&c).await;
        let pods = feed.initial_on(NODE);
        assert_eq!(pods.len(), 3);
        c.reset_counts();
        let mut req = request(NODE, DrainOptions::default());
        // Clipped to about 7 s; the pods are gone ~3 s before the instance.
        req.deadline = Some(Timestamp::now() + SignedDuration::from_secs(10));
        req.margin = Duration::from_secs(3);

        let report = drainer(&c, "t").drain(&req).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        feed.sync().await;
        for p in &pods {
            let r = result_of(&report, p);
            assert_eq!(r.action, PodAction::DeletedClipped, "{r:?}");
            let granted = r.grace_period_seconds.unwrap_or(0);
            assert!((1..30).contains(&granted), "{r:?}");
            // A grace period of at least a second: the kubelet sends SIGTERM, never SIGKILL
            // straight away.
            let on_server = feed.deletion_grace_seconds(&uid(p)).unwrap_or(0);
            assert!((1..30).contains(&on_server), "server grace {on_server}");
            assert_eq!(
                c.evictions_of(p),
                0,
                "past D - g the pod is deleted, not evicted"
            );
            assert_eq!(c.deletes_of(p), 1);
        }
        // Only the simulator's kubelet records how each container ended.
        if let Some(sim) = c.sim() {
            let exits: BTreeMap<String, ExitKind> = sim
                .cluster
                .exits()
                .into_iter()
                .map(|e| (e.uid, e.kind))
                .collect();
            for p in &pods {
                let expected = if name(p).starts_with("slow-") {
                    ExitKind::GraceExpired
                } else {
                    ExitKind::Graceful
                };
                assert_eq!(exits.get(&uid(p)).copied(), Some(expected), "{}", name(p));
            }
        }
        for p in pods.iter().filter(|p| name(p).starts_with("slow-")) {
            let listed = listed_not_graceful(&report, p)
                .unwrap_or_else(|| panic!("{} not listed: {:?}", name(p), report.not_graceful));
            assert!(listed.contains("clipped"), "{listed}");
        }
        // The quick pod stopped on its own well within the shorter grace period: not cut short.
        for p in pods.iter().filter(|p| name(p).starts_with("quick-")) {
            assert!(
                listed_not_graceful(&report, p).is_none(),
                "{} stopped by itself: {:?}",
                name(p),
                report.not_graceful
            );
        }
        Ok(())
    }
}

both_backends! {
    /// Graceful or not is decided by how each pod was seen to end, clipped or not: a pod that
    /// ignores SIGTERM is killed when its grace period runs out and is reported (and named by
    /// DrainCompleted); one that stops by itself is not.
    async fn a_pod_killed_at_the_end_of_its_grace_period_is_reported_and_named_by_drain_completed(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: stubborn, terminationGracePeriodSeconds: 2, \
                 shutdownMs: 60000}\n\
                 - {kind: Deployment, name: quick, terminationGracePeriodSeconds: 30}\n",
            ),
        )
        .await;
        let feed = PodFeed::start(&c).await;
        let pods = feed.initial_on(NODE);
        assert_eq!(pods.len(), 2);
        let stubborn = pods.iter().find(|p| name(p).starts_with("stubborn-")).cloned();
        let quick = pods.iter().find(|p| name(p).starts_with("quick-")).cloned();
        let (Some(stubborn), Some(quick)) = (stubborn, quick) else {
            panic!("{pods:#?}");
        };
        let d = drainer(&c, "t").with_events(Events::new(c.client.clone(), "test"));
        let report = d.drain(&request(NODE, DrainOptions::default())).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(result_of(&report, &stubborn).action, PodAction::Evicted);
        let listed = listed_not_graceful(&report, &stubborn)
            .unwrap_or_else(|| panic!("not listed: {report:#?}"));
        assert!(listed.contains("2s grace period ran out"), "{listed}");
        assert!(
            listed_not_graceful(&report, &quick).is_none(),
            "{:?}",
            report.not_graceful
        );
        // The simulator's kubelet reports how the containers ended before the pod goes, as a
        // kubelet does: 137 for the SIGKILL, 0 for a clean exit.
        if c.sim().is_some() {
            feed.sync().await;
            for (p, code) in [(&stubborn, 137), (&quick, 0)] {
                let last = feed
                    .of(&uid(p))
                    .into_iter()
                    .rev()
                    .find(|ch| ch.ty == cluster::ChangeType::Deleted)
                    .map(|ch| ch.object)
                    .unwrap_or_default();
                let state = &last["status"]["containerStatuses"][0]["state"]["terminated"];
                assert_eq!(state["exitCode"], code, "{}: {last:#}", name(p));
            }
            assert!(listed.contains("SIGKILLed"), "{listed}");
        }
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(c.admin.clone());
        let completed: Vec<String> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("DrainCompleted"))
            .filter_map(|e| e.note)
            .collect();
        assert_eq!(completed.len(), 1, "{completed:?}");
        assert!(completed[0].contains("2 pods evicted"), "{}", completed[0]);
        assert!(
            completed[0].contains(&format!("1 not graceful: {}", ns_name(&stubborn))),
            "{}",
            completed[0]
        );
        assert!(!completed[0].contains(&name(&quick)), "{}", completed[0]);
        Ok(())
    }
}

both_backends! {
    async fn a_drain_whose_deadline_has_passed_deletes_with_one_second_and_does_not_wait(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 2}\n"),
        )
        .await;
        let feed = PodFeed::start(&c).await;
        let web = feed.initial_on(NODE);
        assert_eq!(web.len(), 2);
        // The pods can never leave: their node is gone.
        c.kill_node(NODE).await;
        let mut req = request(NODE, DrainOptions::default());
        // The notice arrived late: the deadline passed ten minutes ago.
        req.deadline = Some(Timestamp::now() - SignedDuration::from_mins(10));

        // Not a speed check: a drain past its deadline must not wait ten more minutes.
        let report =
            tokio::time::timeout(Duration::from_secs(180), drainer(&c, "t").drain(&req))
                .await
                .expect("a drain past its deadline returns")?;
        assert_eq!(report.outcome, Outcome::TimedOut, "{report:#?}");
        feed.sync().await;
        for p in &web {
            assert_eq!(result_of(&report, p).action, PodAction::Remained);
            assert_eq!(feed.deletion_grace_seconds(&uid(p)), Some(1), "never 0");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Resuming and concurrent drains

both_backends! {
    async fn a_drain_killed_halfway_resumes_without_evicting_anything_twice(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: worker, replicas: 2, shutdownMs: 4000}\n\
                 - {kind: Deployment, name: web}\n\
                 - {kind: Deployment, name: pgbouncer, \
                 annotations: {termguard.io/drain-order: last}}\n",
            ),
        )
        .await;
        let feed = PodFeed::start(&c).await;
        let pods = feed.initial_on(NODE);
        assert_eq!(pods.len(), 4);
        let web: Vec<_> = pods
            .iter()
            .filter(|p| name(p).starts_with("web-"))
            .cloned()
            .collect();
        let workers: Vec<_> = pods
            .iter()
            .filter(|p| name(p).starts_with("worker-"))
            .cloned()
            .collect();
        let first_deadline = Timestamp::now() + SignedDuration::from_mins(10);
        c.reset_counts();

        let mut req = request(NODE, DrainOptions::default());
        req.deadline = Some(first_deadline);
        req.notice = "msg-1".into();
        let a = drainer(&c, "replica-a");
        let task = tokio::spawn(async move { a.drain(&req).await });
        let (cr, wr, webr) = (&c, &workers, &web);
        let started = eventually(Duration::from_secs(30), move || async move {
            let now = cr.pods_on(NODE).await;
            let record = recorded_pods(&cr.node(NODE).await);
            wr.iter()
                .all(|w| now.iter().any(|p| uid(p) == uid(w) && terminating(p)))
                && wr
                    .iter()
                    .all(|w| record.get(&ns_name(w)).is_some_and(|r| r["a"] == "evicted"))
                && webr.iter().all(|w| {
                    record
                        .get(&ns_name(w))
                        .is_some_and(|r| r["a"] == "evicted" && r["d"] == true)
                })
        })
        .await;
        assert!(
            started,
            "the first wave started, web is gone, and the Node records both: {:#}",
            c.node(NODE).await["metadata"]["annotations"]
        );
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        let mut left = 0;
        for p in &pods {
            left += usize::from(c.pod_uid_exists(&uid(p)).await);
        }
        assert!(left > 0, "the drain was cut short");
        assert_eq!(
            c.node(NODE).await["metadata"]["annotations"][nodes::OWNER],
            "replica-a"
        );

        // Its lease runs out (made stale here instead of waiting nodes::LEASE).
        let stale = (Timestamp::now() - SignedDuration::from_mins(5)).to_string();
        let api: Api<Node> = Api::all(c.admin.clone());
        api.patch(
            NODE,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {nodes::RENEWED: stale}}})),
        )
        .await?;

        let mut req = request(NODE, DrainOptions::default());
        req.notice = "msg-1".into();
        let report = drainer(&c, "replica-b").drain(&req).await?;
        assert_eq!(report.role, Role::Resumed, "{report:#?}");
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        feed.sync().await;
        for p in &pods {
            assert!(!c.pod_uid_exists(&uid(p)).await, "{} is gone", name(p));
            assert_eq!(c.evictions_of(p), 1, "{} evicted once", name(p));
            assert_eq!(feed.deletion_requests(&uid(p)), 1);
        }
        // Every pod of the drain is reported, the killed run's too: web it evicted and saw go,
        // the workers it evicted (still terminating when the second run took over).
        assert_eq!(report.pods.len(), 4, "{report:#?}");
        assert_eq!(report.evicted, 4, "{report:#?}");
        for p in web.iter().chain(&workers) {
            let r = result_of(&report, p);
            assert_eq!(r.action, PodAction::Evicted, "{r:?}");
            assert_eq!(r.attempts, 1, "{r:?}");
        }
        assert!(result_of(&report, &web[0]).gone_after_ms.is_some());
        // The resumed drain, whose notice brings no deadline of its own, keeps the one the first
        // recorded.
        let kept = report.deadline.expect("the recorded deadline is kept");
        assert!(kept <= first_deadline, "{kept} vs {first_deadline}");
        let n = c.node(NODE).await;
        let annotations = &n["metadata"]["annotations"];
        assert_eq!(annotations[nodes::OWNER], "replica-b");
        assert_eq!(annotations[nodes::PHASE], "drained");
        Ok(())
    }
}

both_backends! {
    async fn an_aborted_drain_stops_renewing_its_lease(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: worker, shutdownMs: 30000}\n"),
        )
        .await;
        let a = drainer(&c, "replica-a");
        let task =
            tokio::spawn(async move { a.drain(&request(NODE, DrainOptions::default())).await });
        let cr = &c;
        let started = eventually(Duration::from_secs(30), move || async move {
            pods_named(cr, "worker-").await.iter().any(terminating)
        })
        .await;
        assert!(started);
        task.abort();
        assert!(task.await.is_err_and(|e| e.is_cancelled()));
        let renewed = c.node(NODE).await["metadata"]["annotations"][nodes::RENEWED].clone();
        assert!(renewed.is_string());

        tokio::time::sleep(nodes::RENEW_EVERY + Duration::from_secs(3)).await;
        assert_eq!(
            c.node(NODE).await["metadata"]["annotations"][nodes::RENEWED],
            renewed,
            "a drain that no longer runs must not keep its lease alive"
        );
        Ok(())
    }
}

/// Marks the node as claimed, just now, by `owner`, as a drain that was killed leaves it.
async fn claimed_by(c: &TestCluster, owner: &str) -> Result {
    let api: Api<Node> = Api::all(c.admin.clone());
    let annotations = json!({
        nodes::OWNER: owner,
        nodes::RENEWED: Timestamp::now().to_string(),
        nodes::NOTICE: "manual",
        nodes::CAUSE: "manual",
        nodes::PHASE: "draining",
    });
    api.patch(
        NODE,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"unschedulable": true}, "metadata": {"annotations": annotations}}),
        ),
    )
    .await?;
    Ok(())
}

/// A drainer as `identity` that counts how often it says it follows another owner.
fn counting_follows(
    c: &TestCluster,
    identity: &str,
) -> (Drainer, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let follows = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = follows.clone();
    let d = drainer(c, identity).with_progress(move |p| {
        if matches!(p, Progress::Following { .. }) {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    (d, follows)
}

both_backends! {
    /// A fresh claim whose process, on this host, has ended (a `termguard drain` killed with
    /// SIGKILL) is taken over at once: no following a dead owner for a lease period while the
    /// deadline runs. The same claim from another host is followed: only its lease can tell.
    async fn a_claim_of_an_ended_process_of_this_host_is_taken_over_at_once(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 2}\n"),
        )
        .await;
        let me = termguard::commands::identity();
        let host = me.rsplit_once('/').map(|(h, _)| h.to_string()).unwrap_or_default();
        let mut child = std::process::Command::new("true").spawn()?;
        let dead = child.id();
        child.wait()?;
        claimed_by(&c, &format!("{host}/{dead}")).await?;
        let (d, follows) = counting_follows(&c, &me);
        let report = d.drain(&request(NODE, DrainOptions::default())).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.role, Role::Resumed, "{report:#?}");
        assert_eq!(follows.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(c.node(NODE).await["metadata"]["annotations"][nodes::OWNER], me.as_str());
        assert!(!nodes::owner_ended(&format!("another-host/{dead}"), &me));
        assert!(!nodes::owner_ended(&me, &me), "this process runs");
        Ok(())
    }
}

/// A drain that fails (here: listing the node's pods is forbidden) releases its claim: the
/// next run, from anywhere, takes over at once instead of waiting out the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_drain_releases_its_claim_for_the_next_run() -> Result {
    let c = TestCluster::start_settled(
        cluster::Backend::Sim,
        &one_node("- {kind: Deployment, name: web, replicas: 2}\n"),
    )
    .await;
    let sim = c.sim().expect("the simulator backend");
    sim.faults.set(serde_json::from_value(
        json!({"verbs": {"list pods": {"errorRate": 1.0, "errorCode": 403}}}),
    )?);
    let failed = drainer(&c, "host-a/100")
        .drain(&request(NODE, DrainOptions::default()))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let n = c.node(NODE).await;
    assert_eq!(n["metadata"]["annotations"][nodes::OWNER], "host-a/100");
    assert!(
        n["metadata"]["annotations"][nodes::RENEWED].is_null(),
        "{n}"
    );
    assert_eq!(n["spec"]["unschedulable"], true, "the node stays cordoned");

    sim.faults.set(Default::default());
    let (d, follows) = counting_follows(&c, "host-b/200");
    let report = d.drain(&request(NODE, DrainOptions::default())).await?;
    assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
    assert_eq!(report.role, Role::Resumed, "{report:#?}");
    assert_eq!(follows.load(std::sync::atomic::Ordering::Relaxed), 0);
    Ok(())
}

both_backends! {
    async fn two_drains_of_one_node_at_once_do_the_work_once_and_report_the_same_result(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: worker, replicas: 3, shutdownMs: 300}\n\
                 - {kind: Deployment, name: pgbouncer, \
                 annotations: {termguard.io/drain-order: last}}\n",
            ),
        )
        .await;
        let pods = c.pods_on(NODE).await;
        assert_eq!(pods.len(), 4);
        c.reset_counts();
        let (a, b) = (drainer(&c, "replica-a"), drainer(&c, "replica-b"));
        let (ra, rb) = (
            request(NODE, DrainOptions::default()),
            request(NODE, DrainOptions::default()),
        );
        let (ra, rb) = tokio::join!(a.drain(&ra), b.drain(&rb));
        let (ra, rb) = (ra?, rb?);
        let roles: BTreeSet<_> = [ra.role, rb.role]
            .into_iter()
            .map(|r| format!("{r:?}"))
            .collect();
        assert_eq!(
            roles,
            BTreeSet::from(["Followed".to_string(), "Owner".to_string()]),
            "{ra:#?} {rb:#?}"
        );
        assert_eq!(ra.outcome, Outcome::Drained);
        assert_eq!(rb.outcome, ra.outcome);
        assert_eq!(ra.evicted, 4);
        assert_eq!(rb.evicted, ra.evicted);
        // The follower reports every pod too, from the owner's record on the Node.
        for r in [&ra, &rb] {
            assert_eq!(r.pods.len(), 4, "{r:#?}");
            assert!(r.pods.iter().all(|p| p.action == PodAction::Evicted), "{r:#?}");
        }
        for p in &pods {
            assert_eq!(c.evictions_of(p), 1, "{} evicted once", name(p));
            assert!(!c.pod_uid_exists(&uid(p)).await);
        }
        Ok(())
    }
}

both_backends! {
    /// SQS delivers at least once: a copy of a notice can come at any time after its drain —
    /// while reads of the Node fail, or after the instance came back and the drain was undone.
    /// It is answered from the Node's record, never by draining (or cordoning) again.
    async fn a_copy_of_a_notice_whose_drain_ended_never_drains_the_node_again(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 2}\n"),
        )
        .await;
        let notice = |n: &str| {
            let mut req = request(NODE, DrainOptions::default());
            req.notice = n.into();
            req.cause = "spot-interruption".into();
            req.deadline = Timestamp::now().checked_add(SignedDuration::from_mins(10)).ok();
            req
        };
        let first = drainer(&c, "t").drain(&notice("spot-1")).await?;
        assert_eq!((first.outcome, first.role), (Outcome::Drained, Role::Owner));
        let started = c.node(NODE).await["metadata"]["annotations"][nodes::STARTED].clone();
        assert!(started.is_string(), "the drain recorded its start");

        // A copy, with half the reads and writes of the Node failing.
        let api = c.faulty(11).await?;
        api.set(&[
            Fault::new("get", "nodes", 0.5, 500),
            Fault::new("patch", "nodes", 0.5, 500),
        ])
        .await?;
        let mut injected = 0;
        for _ in 0..4 {
            let copy = drainer_via(&api, "t").drain(&notice("spot-1")).await?;
            assert_eq!((copy.outcome, copy.role), (Outcome::Drained, Role::Followed), "{copy:#?}");
            assert_eq!(copy.evicted, first.evicted, "the recorded result: {copy:#?}");
        }
        injected += api.injected().await?;
        api.clear().await?;
        assert!(injected >= 1, "no read failed: the test tested nothing");
        let n = c.node(NODE).await;
        assert_eq!(n["metadata"]["annotations"][nodes::STARTED], started, "not started again");

        // The instance came back: the drain is undone; a late copy leaves the node in service.
        let node_api: Api<Node> = Api::all(c.client.clone());
        let once = termguard::cluster::retry::Bound::once();
        let undone = nodes::uncordon_if(&node_api, NODE, |_| true, once).await?;
        assert!(undone);
        let late = drainer(&c, "t").drain(&notice("spot-1")).await?;
        assert_eq!(late.role, Role::Followed, "{late:#?}");
        let n = c.node(NODE).await;
        assert_ne!(n["spec"]["unschedulable"], true, "still in service");
        assert!(taint(&n, nodes::TERMINATING_TAINT).is_none());
        assert!(n["metadata"]["annotations"][nodes::PHASE].is_null());

        // Another notice does drain it; once that drain is undone too, a copy of the first
        // still finds the node in service.
        let next = drainer(&c, "t").drain(&notice("spot-2")).await?;
        assert_eq!((next.outcome, next.role), (Outcome::Drained, Role::Owner));
        assert!(nodes::uncordon_if(&node_api, NODE, |_| true, once).await?);
        let later = drainer(&c, "t").drain(&notice("spot-1")).await?;
        assert_eq!(later.role, Role::Followed, "{later:#?}");
        assert_ne!(c.node(NODE).await["spec"]["unschedulable"], true);
        // A manual drain always runs.
        let manual = drainer(&c, "t").drain(&request(NODE, DrainOptions::default())).await?;
        assert_eq!(manual.role, Role::Owner);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Events

async fn event_reasons(c: &TestCluster) -> anyhow::Result<Vec<(String, String, String)>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(c.admin.clone());
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|e| {
            let r = e.regarding.unwrap_or_default();
            (
                e.reason.unwrap_or_default(),
                r.kind.unwrap_or_default(),
                r.name.unwrap_or_default(),
            )
        })
        .collect())
}

async fn core_event_reasons(c: &TestCluster) -> anyhow::Result<Vec<(String, String, String)>> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::all(c.admin.clone());
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.involved_object.kind.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default(),
            )
        })
        .collect())
}

fn has(events: &[(String, String, String)], reason: &str, kind: &str, name: &str) -> bool {
    events
        .iter()
        .any(|(r, k, n)| r == reason && k == kind && n == name)
}

both_backends! {
    async fn a_drain_publishes_events_on_the_node_and_on_each_pod(backend) -> Result {
        let c = budgeted_web(backend).await;
        let web = pods_named(&c, "web-").await;
        let d = drainer(&c, "t").with_events(Events::new(c.client.clone(), "test"));
        let report = d.drain(&request(NODE, DrainOptions::default())).await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");

        for events in [event_reasons(&c).await?, core_event_reasons(&c).await?] {
            assert!(has(&events, "DrainStarted", "Node", NODE), "{events:?}");
            assert!(has(&events, "DrainCompleted", "Node", NODE), "{events:?}");
            for p in &web {
                assert!(has(&events, "PodEvicted", "Pod", &name(p)), "{events:?}");
            }
            assert!(
                events
                    .iter()
                    .any(|(r, k, n)| r == "EvictionBlocked" && k == "Pod" && n.starts_with("web-")),
                "{events:?}"
            );
            assert!(!events.iter().any(|(r, ..)| r == "DrainTimedOut"));
        }
        Ok(())
    }
}

both_backends! {
    /// The same Event twice within the recorder's window becomes one Event with a series of
    /// two (kube-runtime's Recorder PATCHes the first one): the reason the ClusterRole grants
    /// `patch` on events.k8s.io events (a node drained again by one replica, a resumed drain).
    async fn a_repeated_event_is_one_event_with_a_series(backend) -> Result {
        let c = TestCluster::start_settled(backend, &one_node("- {kind: Deployment, name: web}\n"))
            .await;
        let events = Events::new(c.client.clone(), "test");
        let node_uid = uid(&c.node(NODE).await);
        let regarding = termguard::cluster::events::node_ref(NODE, Some(&node_uid));
        for _ in 0..2 {
            events
                .publish(&regarding, Reason::DrainStarted, "draining".into())
                .await;
        }
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(c.admin.clone());
        let started: Vec<_> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("DrainStarted"))
            .collect();
        assert_eq!(started.len(), 1, "{started:#?}");
        assert_eq!(
            started[0].series.as_ref().map(|s| s.count),
            Some(2),
            "{started:#?}"
        );
        Ok(())
    }
}

both_backends! {
    async fn a_drain_that_cannot_finish_by_its_deadline_reports_drain_timed_out(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 2}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 2);
        c.kill_node(NODE).await;
        let mut req = request(NODE, DrainOptions::default());
        req.deadline = Some(Timestamp::now() + SignedDuration::from_secs(3));
        req.margin = Duration::from_secs(1);
        let d = drainer(&c, "t").with_events(Events::new(c.client.clone(), "test"));
        let report = d.drain(&req).await?;
        assert_eq!(report.outcome, Outcome::TimedOut, "{report:#?}");
        for p in &web {
            assert_eq!(result_of(&report, p).action, PodAction::Remained);
            assert!(
                listed_not_graceful(&report, p).is_some(),
                "{:?}",
                report.not_graceful
            );
        }
        assert_eq!(
            c.node(NODE).await["metadata"]["annotations"][nodes::PHASE],
            "timed-out"
        );
        let events = event_reasons(&c).await?;
        assert!(has(&events, "DrainStarted", "Node", NODE), "{events:?}");
        assert!(has(&events, "DrainTimedOut", "Node", NODE), "{events:?}");
        assert!(!has(&events, "DrainCompleted", "Node", NODE), "{events:?}");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Node marking and uncordon

fn taint<'a>(node: &'a Value, key: &str) -> Option<&'a Value> {
    node["spec"]["taints"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["key"] == key))
}

both_backends! {
    async fn a_drained_node_is_marked_and_uncordon_removes_only_what_termguard_added(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &format!(
                "defaults: {{startupMs: 100, shutdownMs: 100}}\n\
                 nodes:\n\
                 - {{name: {NODE}, zone: us-east-1a, labels: {{team: infra}}, \
                 taints: [{{key: example.com/dedicated, value: db, effect: PreferNoSchedule}}]}}\n\
                 - {{name: node-c, zone: us-east-1c, \
                 labels: {{node.kubernetes.io/exclude-from-external-load-balancers: 'true'}}}}\n\
                 workloads:\n\
                 - {{kind: Deployment, name: web, replicas: 2}}\n"
            ),
        )
        .await;
        for n in [NODE, "node-c"] {
            let mut req = request(n, DrainOptions::default());
            req.cause = "spot-interruption".into();
            req.notice = "msg-7".into();
            let report = drainer(&c, "t").drain(&req).await?;
            assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        }

        let a = c.node(NODE).await;
        assert_eq!(a["spec"]["unschedulable"], true);
        let ours = taint(&a, nodes::TERMINATING_TAINT).expect("termguard taint");
        assert_eq!(ours["effect"], "NoSchedule");
        assert_eq!(ours["value"], "spot-interruption");
        assert!(taint(&a, "example.com/dedicated").is_some());
        assert_eq!(a["metadata"]["labels"][nodes::EXCLUDE_LB_LABEL], "termguard");
        assert_eq!(a["metadata"]["labels"]["team"], "infra");
        let annotations = &a["metadata"]["annotations"];
        assert_eq!(annotations[nodes::PHASE], "drained");
        assert_eq!(annotations[nodes::NOTICE], "msg-7");
        assert_eq!(annotations[nodes::CAUSE], "spot-interruption");
        assert_eq!(annotations[nodes::OWNER], "t");
        let nc = c.node("node-c").await;
        assert_eq!(
            nc["metadata"]["labels"][nodes::EXCLUDE_LB_LABEL],
            "true",
            "a label set by someone else is kept"
        );

        let run = c.termguard(&["uncordon", NODE]).await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        assert_eq!(run.stdout.trim(), format!("node/{NODE} uncordoned"));
        let a = c.node(NODE).await;
        assert_ne!(a["spec"]["unschedulable"], true);
        assert!(taint(&a, nodes::TERMINATING_TAINT).is_none());
        assert_eq!(
            taint(&a, "example.com/dedicated").map(|t| t["value"].clone()),
            Some(json!("db"))
        );
        assert!(a["metadata"]["labels"][nodes::EXCLUDE_LB_LABEL].is_null());
        assert_eq!(a["metadata"]["labels"]["team"], "infra");
        let left: Vec<&String> = a["metadata"]["annotations"]
            .as_object()
            .map(|m| m.keys().filter(|k| k.starts_with("termguard.io/")).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{left:?}");
        // Someone else's annotation (the TTL controller's) is kept.
        assert_eq!(a["metadata"]["annotations"]["node.alpha.kubernetes.io/ttl"], "0");

        let run = c.termguard(&["uncordon", "node-c"]).await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let nc = c.node("node-c").await;
        assert_ne!(nc["spec"]["unschedulable"], true);
        assert_eq!(nc["metadata"]["labels"][nodes::EXCLUDE_LB_LABEL], "true");

        let again = c.termguard(&["uncordon", NODE]).await;
        assert_eq!(again.code, Some(0));
        assert_eq!(again.stdout.trim(), format!("node/{NODE} already uncordoned"));
        Ok(())
    }
}

/// Claims `NODE` for owner `t` from a watch's copy of it, as a notice's drain does, and checks
/// that the claim is owned and found the node cordoned.
async fn claim_watched(
    c: &TestCluster,
    cause: &str,
    seen: Node,
    index: &termguard::cluster::index::NodeIndex,
) -> Result {
    let claim = nodes::Claim {
        owner: "t",
        notice: "n-1",
        cause,
        deadline: None,
    };
    let api: Api<Node> = Api::all(c.client.clone());
    let bound = termguard::cluster::retry::Bound::once();
    let outcome = nodes::claim(&api, NODE, &claim, bound, Some(seen), Some(index)).await?;
    assert!(
        matches!(
            outcome,
            nodes::ClaimOutcome::Owned {
                was_cordoned: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    Ok(())
}

both_backends! {
    async fn a_claim_that_conflicts_on_the_watchs_copy_takes_the_watchs_newer_one(backend) -> Result {
        let c = TestCluster::start_settled(backend, &one_node("")).await;
        let index = termguard::cluster::index::NodeIndex::start(c.client.clone());
        index.ready().await;
        let admin: Api<Node> = Api::all(c.admin.clone());
        let rv = |n: &Node| n.metadata.resource_version.clone().unwrap_or_default();
        // Cordoned by someone else first: the claim works on the watch's copy as it is.
        admin
            .patch(NODE, &PatchParams::default(), &Patch::Strategic(json!({"spec": {"unschedulable": true}})))
            .await?;
        let is_cordoned = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
        assert!(eventually(Duration::from_secs(10), || async { index.get(NODE).is_some_and(|n| is_cordoned(&n)) }).await);
        // Whatever else writes the Node after a cordon (the node lifecycle controller's own
        // unschedulable taint, on the real control plane) has written by the time the watch
        // has nothing newer for a while.
        let mut seen = index.get(NODE).map(|n| Node::clone(&n)).expect("watched");
        while let Some(n) = index.newer(NODE, &rv(&seen), Duration::from_secs(2)).await {
            seen = Node::clone(&n);
        }
        // Nothing newer: the wait ends empty.
        assert!(index.newer(NODE, &rv(&seen), Duration::from_millis(300)).await.is_none());
        // Someone writes the Node: the copy the claim is given is stale.
        admin
            .patch(NODE, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"team": "infra"}}})))
            .await?;
        let newer = index.newer(NODE, &rv(&seen), Duration::from_secs(10)).await;
        assert!(newer.is_some_and(|n| n.metadata.labels.as_ref().is_some_and(|l| l.contains_key("team"))));

        c.reset_counts();
        claim_watched(&c, "az-rebalance", seen, &index).await?;
        // The conflict's retry works on the watch's newer copy: no read of its own.
        assert_eq!(c.verb_count("get"), 0, "{:?}", c.request_counts());
        assert_eq!(c.verb_count("patch"), 2, "{:?}", c.request_counts());
        let n = c.node(NODE).await;
        assert_eq!(n["metadata"]["annotations"][nodes::OWNER], "t");
        assert_eq!(n["metadata"]["labels"]["team"], "infra", "the other write is kept");
        assert_eq!(taint(&n, nodes::TERMINATING_TAINT).map(|t| t["value"].clone()), Some(json!("az-rebalance")));
        Ok(())
    }
}

both_backends! {
    /// Where the cluster taints cordoned Nodes itself (the node lifecycle controller; the
    /// simulator does as it does), a claim on
    /// the watch's copy of a node just cordoned waits for that write instead of colliding with
    /// it: one PATCH, no conflict, no read.
    async fn a_claim_waits_for_the_clusters_unschedulable_taint_instead_of_conflicting(backend) -> Result {
        let c = TestCluster::start_settled(backend, &one_node("")).await;
        let index = termguard::cluster::index::NodeIndex::start(c.client.clone());
        index.ready().await;
        let admin: Api<Node> = Api::all(c.admin.clone());
        let has = termguard::cluster::index::has_unschedulable_taint;
        let cordoned = nodes::is_cordoned;
        let cordon = |on: bool| Patch::Strategic(json!({"spec": {"unschedulable": if on { json!(true) } else { Value::Null }}}));
        // The cluster's taint on a cordoned Node, seen once, tells the index that this cluster
        // taints cordoned Nodes.
        admin.patch(NODE, &PatchParams::default(), &cordon(true)).await?;
        assert!(eventually(Duration::from_secs(20), || async { index.get(NODE).is_some_and(|n| has(&n)) }).await, "the cluster taints a cordoned Node");
        admin.patch(NODE, &PatchParams::default(), &cordon(false)).await?;
        assert!(eventually(Duration::from_secs(20), || async { index.get(NODE).is_some_and(|n| !cordoned(&n) && !has(&n)) }).await);
        assert!(index.taints_cordoned_nodes());

        // Cordoned, and the watch's copy taken as soon as it shows that, before the cluster's
        // taint as a rule.
        admin.patch(NODE, &PatchParams::default(), &cordon(true)).await?;
        assert!(eventually(Duration::from_secs(10), || async { index.get(NODE).is_some_and(|n| cordoned(&n)) }).await);
        let seen = index.get(NODE).map(|n| Node::clone(&n)).expect("watched");
        c.reset_counts();
        claim_watched(&c, "spot-interruption", seen, &index).await?;
        assert_eq!(c.verb_count("patch"), 1, "no conflict: {:?}", c.request_counts());
        assert_eq!(c.verb_count("get"), 0, "{:?}", c.request_counts());
        let n = c.node(NODE).await;
        // The claim wrote after the cluster's taint (a claim appends its own to the list it read).
        let keys: Vec<&str> = n["spec"]["taints"].as_array().into_iter().flatten().filter_map(|t| t["key"].as_str()).collect();
        assert_eq!(keys, [termguard::cluster::index::UNSCHEDULABLE_TAINT, nodes::TERMINATING_TAINT], "{n}");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The command line

both_backends! {
    async fn cli_drain_prints_kubectls_lines_and_exits_zero(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: DaemonSet, name: agent}\n\
                 - {kind: Deployment, name: web, replicas: 2}\n\
                 - {kind: Deployment, name: cache, emptyDir: true}\n",
            ),
        )
        .await;
        let evicted: Vec<_> = c
            .pods_on(NODE)
            .await
            .into_iter()
            .filter(|p| !name(p).starts_with("agent-"))
            .collect();
        assert_eq!(evicted.len(), 3);
        let run = c
            .termguard(&["drain", NODE, "--ignore-daemonsets", "--delete-emptydir-data"])
            .await;
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.first(), Some(&"node/node-a cordoned"), "{}", run.stdout);
        assert_eq!(lines.last(), Some(&"node/node-a drained"), "{}", run.stdout);
        for p in &evicted {
            let evicting = format!("evicting pod {}", ns_name(p));
            let done = format!("pod/{} evicted", name(p));
            let i = lines.iter().position(|l| *l == evicting);
            let j = lines.iter().position(|l| *l == done);
            assert!(i.is_some() && j.is_some() && i < j, "{}", run.stdout);
        }
        assert!(
            run.stderr.contains("ignoring DaemonSet-managed Pods"),
            "{}",
            run.stderr
        );
        let agents = pods_named(&c, "agent-").await;
        assert_eq!(agents.len(), 1);
        assert!(agents.iter().all(healthy));
        Ok(())
    }
}

both_backends! {
    async fn cli_dry_run_prints_the_waves_and_changes_nothing(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: web, replicas: 2}\n\
                 - {kind: Deployment, name: pgbouncer, \
                 annotations: {termguard.io/drain-order: last}}\n",
            ),
        )
        .await;
        let before = c.node(NODE).await;
        c.reset_counts();
        let run = c.termguard(&["drain", NODE, "--dry-run"]).await;
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        let counts = c.request_counts();
        assert!(
            run.stdout.contains("wave 1 (ordinary): 2 pods"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains("wave 2 (drain-last): 1 pod, after wave 1 is gone"),
            "{}",
            run.stdout
        );
        let pods = c.pods_on(NODE).await;
        assert_eq!(pods.len(), 3);
        for p in &pods {
            assert!(run.stdout.contains(&ns_name(p)), "{}", run.stdout);
            assert!(healthy(p));
        }
        for verb in ["patch", "update", "evict", "delete", "create"] {
            assert_eq!(c.verb_count(verb), 0, "{verb}: {counts:#?}");
        }
        let after = c.node(NODE).await;
        assert_eq!(
            after["metadata"]["resourceVersion"],
            before["metadata"]["resourceVersion"]
        );
        assert_ne!(after["spec"]["unschedulable"], true);
        Ok(())
    }
}

both_backends! {
    async fn cli_json_output_is_the_drain_report(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 2}\n"),
        )
        .await;
        let web = c.pods_on(NODE).await;
        assert_eq!(web.len(), 2);
        let run = c.termguard(&["drain", NODE, "--output", "json"]).await;
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        let report: Value = serde_json::from_str(&run.stdout)?;
        assert_eq!(report["outcome"], "drained", "{report:#}");
        assert_eq!(report["node"], NODE);
        assert_eq!(report["role"], "owner");
        assert_eq!(report["evicted"], 2);
        let pods: BTreeSet<String> = report["pods"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["action"] == "evicted")
                    .filter_map(|p| p["pod"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(pods, web.iter().map(ns_name).collect());
        // It parses back into the library's type.
        let typed: DrainReport = serde_json::from_value(report)?;
        assert_eq!(typed.outcome, Outcome::Drained);
        Ok(())
    }
}

both_backends! {
    async fn cli_refused_drain_exits_one_with_kubectls_message(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: DaemonSet, name: agent}\n- {kind: Deployment, name: web}\n"),
        )
        .await;
        let ds = pods_named(&c, "agent-").await;
        assert_eq!(ds.len(), 1);
        let run = c.termguard(&["drain", NODE]).await;
        assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("node/node-a cordoned"), "{}", run.stdout);
        let expected = format!(
            "error: unable to drain node \"{NODE}\" due to error: {DAEMONSET_FATAL}: {}, \
             continuing command...",
            ns_name(&ds[0])
        );
        assert!(run.stderr.contains(&expected), "{}", run.stderr);
        // Then the error itself, bare, as kubectl's error handler prints an aggregate.
        let pending = format!(
            "There are pending nodes to be drained:\n {NODE}\n{DAEMONSET_FATAL}: {}\n",
            ns_name(&ds[0])
        );
        assert!(run.stderr.contains(&pending), "{}", run.stderr);
        for leak in ["Status {", "ApiError", "Some(", "Refused {"] {
            assert!(!run.stderr.contains(leak), "{}", run.stderr);
        }
        assert!(c.pods_on(NODE).await.iter().all(|p| !terminating(p)));
        // Left as kubectl leaves it: cordoned, without termguard's taint and label.
        let n = c.node(NODE).await;
        assert_eq!(n["spec"]["unschedulable"], true);
        assert!(taint(&n, nodes::TERMINATING_TAINT).is_none(), "{n:#}");
        assert!(n["metadata"]["labels"][nodes::EXCLUDE_LB_LABEL].is_null(), "{n:#}");
        Ok(())
    }
}

both_backends! {
    async fn cli_json_output_reports_a_refused_drain_and_leaves_the_node_cordoned_only(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(&format!(
                "- {{kind: Pod, name: bare, node: {NODE}}}\n- {{kind: Deployment, name: web}}\n"
            )),
        )
        .await;
        let run = c.termguard(&["drain", NODE, "-o", "json"]).await;
        assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
        let report: Value = serde_json::from_str(&run.stdout)?;
        assert_eq!(report["outcome"], "refused", "{report:#}");
        let expected = format!("{UNMANAGED_FATAL}: default/bare");
        assert_eq!(report["refused"], expected.as_str(), "{report:#}");
        assert_eq!(report["error"], expected.as_str(), "{report:#}");
        let typed: DrainReport = serde_json::from_value(report)?;
        assert_eq!(typed.outcome, Outcome::Refused);
        assert!(c.pods_on(NODE).await.iter().all(|p| !terminating(p)));
        let n = c.node(NODE).await;
        assert_eq!(n["spec"]["unschedulable"], true, "cordoned");
        assert!(taint(&n, nodes::TERMINATING_TAINT).is_none(), "{n:#}");
        assert!(n["metadata"]["labels"][nodes::EXCLUDE_LB_LABEL].is_null(), "{n:#}");
        Ok(())
    }
}

both_backends! {
    async fn cli_a_drain_that_cannot_run_still_reports_in_json_and_says_why_in_text(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(backend, &one_node("- {kind: Deployment, name: web}\n"))
            .await;
        let run = c.termguard(&["drain", "no-such-node", "-o", "json"]).await;
        assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
        let report: Value = serde_json::from_str(&run.stdout)?;
        assert_eq!(report["outcome"], "failed", "{report:#}");
        assert_eq!(report["node"], "no-such-node");
        let error = report["error"].as_str().unwrap_or("");
        assert!(error.contains("not found"), "{report:#}");
        let typed: DrainReport = serde_json::from_value(report)?;
        assert_eq!(typed.outcome, Outcome::Failed);

        let run = c.termguard(&["drain", "no-such-node"]).await;
        assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
        // kubectl's form, after the log line that says the same.
        assert_eq!(
            run.stderr.lines().last(),
            Some("error: node \"no-such-node\" not found"),
            "{}",
            run.stderr
        );
        Ok(())
    }
}

both_backends! {
    async fn cli_json_output_reports_a_timed_out_drain(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, pdb: {minAvailable: 1}}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 1);
        let run = c
            .termguard(&["drain", NODE, "-o", "json", "--timeout", "2s"])
            .await;
        assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
        let report: Value = serde_json::from_str(&run.stdout)?;
        assert_eq!(report["outcome"], "timed-out", "{report:#}");
        let error = report["error"].as_str().unwrap_or("");
        assert!(error.contains("1 pods still on the node"), "{report:#}");
        assert_eq!(report["pods"][0]["pod"], ns_name(&web[0]).as_str());
        assert_eq!(report["pods"][0]["action"], "remained");
        Ok(())
    }
}

both_backends! {
    /// SIGINT stops the drain: the report so far on stdout, exit 130, the node still cordoned
    /// and marked; the next run takes over at once and reports every pod of the drain.
    async fn cli_sigint_stops_the_drain_and_the_next_run_takes_over(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: worker, shutdownMs: 8000}\n\
                 - {kind: Deployment, name: web}\n",
            ),
        )
        .await;
        let pods = c.pods_on(NODE).await;
        assert_eq!(pods.len(), 2);
        let worker = pods.iter().find(|p| name(p).starts_with("worker-")).cloned();
        let web = pods.iter().find(|p| name(p).starts_with("web-")).cloned();
        let (Some(worker), Some(web)) = (worker, web) else {
            panic!("{pods:#?}");
        };
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
            .args(["drain", NODE, "-o", "json", "--kubeconfig"])
            .arg(c.kubeconfig())
            .env_remove("KUBECONFIG")
            .env("TERMGUARD_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        assert!(pid > 0);
        let (cr, wr, webr) = (&c, &worker, &web);
        let under_way = eventually(Duration::from_secs(30), move || async move {
            let now = cr.pods_on(NODE).await;
            // Gone as termguard itself saw it (its record of the drain on the Node), not only
            // as the API says: its watch may learn of it a moment later.
            let record = cr.node(NODE).await["metadata"]["annotations"][nodes::PODS]
                .as_str()
                .and_then(|r| serde_json::from_str::<Value>(r).ok())
                .unwrap_or_default();
            let seen_gone = record.as_array().is_some_and(|rs| {
                rs.iter()
                    .any(|r| r["p"] == ns_name(webr).as_str() && r["t"].is_u64())
            });
            now.iter().any(|p| uid(p) == uid(wr) && terminating(p)) && seen_gone
        })
        .await;
        assert!(under_way, "the worker is stopping and web is gone");
        let kill = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        assert!(kill.success());
        let out = child.wait_with_output().await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
        let report: Value = serde_json::from_str(&stdout)?;
        assert_eq!(report["outcome"], "interrupted", "{report:#}");
        let error = report["error"].as_str().unwrap_or("");
        assert!(error.contains("SIGINT"), "{report:#}");
        let typed: DrainReport = serde_json::from_value(report)?;
        assert_eq!(result_of(&typed, &web).action, PodAction::Evicted);
        assert!(result_of(&typed, &web).gone_after_ms.is_some());
        assert_eq!(result_of(&typed, &worker).action, PodAction::Evicted);
        assert!(result_of(&typed, &worker).gone_after_ms.is_none());

        // Cordoned only, as kubectl leaves an interrupted drain; the progress kept, the lease
        // given up.
        let n = c.node(NODE).await;
        assert_eq!(n["spec"]["unschedulable"], true);
        assert!(taint(&n, nodes::TERMINATING_TAINT).is_none(), "{n:#}");
        assert!(n["metadata"]["labels"][nodes::EXCLUDE_LB_LABEL].is_null(), "{n:#}");
        let annotations = &n["metadata"]["annotations"];
        assert!(annotations[nodes::RENEWED].is_null(), "{annotations:#}");
        assert!(annotations[nodes::PHASE].as_str().is_some_and(|p| p.starts_with("wave-")));

        let report = drainer(&c, "next")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        assert_eq!(report.role, Role::Resumed, "taken over, not followed: {report:#?}");
        let n = c.node(NODE).await;
        assert!(taint(&n, nodes::TERMINATING_TAINT).is_some(), "marked again: {n:#}");
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert_eq!(report.pods.len(), 2, "{report:#?}");
        assert_eq!(report.evicted, 2, "{report:#?}");
        assert_eq!(result_of(&report, &web).action, PodAction::Evicted);
        assert_eq!(result_of(&report, &worker).action, PodAction::Evicted);
        assert!(!c.pod_uid_exists(&uid(&worker)).await);
        assert_eq!(c.evictions_of(&worker), 1, "evicted once");
        Ok(())
    }
}

both_backends! {
    async fn cli_sigterm_exits_143_and_says_why_in_text_and_in_an_event(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: worker, shutdownMs: 8000}\n"),
        )
        .await;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
            .args(["drain", NODE, "--kubeconfig"])
            .arg(c.kubeconfig())
            .env_remove("KUBECONFIG")
            .env("TERMGUARD_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        let cr = &c;
        let under_way = eventually(Duration::from_secs(30), move || async move {
            pods_named(cr, "worker-").await.iter().any(terminating)
        })
        .await;
        assert!(under_way);
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        assert!(kill.success());
        let out = child.wait_with_output().await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(143), "{stderr}");
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with(&format!(
                "error: unable to drain node \"{NODE}\": interrupted by SIGTERM"
            )),
            "{stderr}"
        );
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(c.admin.clone());
        let failed: Vec<String> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("DrainFailed"))
            .filter_map(|e| e.note)
            .collect();
        assert!(
            failed.iter().any(|n| n.contains("interrupted by SIGTERM")),
            "{failed:?}"
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// A flaky API server (`docs/drain-semantics.md#api-errors`)
//
// The code under test reaches the API server through injected faults (`TestCluster::faulty`):
// the simulator's own, or on the real backend scripts/controlplane/faultproxy in front of
// kube-apiserver. Every matching request fails until the first has (so the retry is exercised
// whatever the seeded draws), then the given share of them.

/// A drainer like [`drainer`] whose requests meet `api`'s faults.
fn drainer_via(api: &cluster::FaultyApi, identity: &str) -> termguard::cluster::drain::Drainer {
    termguard::cluster::drain::Drainer::new(api.client.clone(), identity)
        .with_backoff(fast_backoff())
}

both_backends! {
    async fn a_drain_with_half_its_patches_failing_still_drains_and_cordons(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 3}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 3);
        c.reset_counts();
        let api = c.faulty(7).await?;
        // The cordon fails first, then half of every PATCH: claim, phases, result.
        let switch = api
            .set_failing_first(&[Fault::new("patch", "nodes", 0.5, 500)])
            .await?;

        let report = drainer_via(&api, "t")
            .drain(&request(NODE, DrainOptions::default()))
            .await?;
        drop(switch);
        let injected = api.injected().await?;
        api.clear().await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert!(injected >= 1, "no PATCH failed: the test tested nothing");
        for p in &web {
            assert_eq!(result_of(&report, p).action, PodAction::Evicted);
            assert!(!c.pod_uid_exists(&uid(p)).await, "{} is gone", name(p));
        }
        let n = c.node(NODE).await;
        assert_eq!(n["spec"]["unschedulable"], true, "cordoned");
        let taints = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
        assert!(
            taints.iter().any(|t| t["key"] == nodes::TERMINATING_TAINT),
            "{taints:?}"
        );
        assert_eq!(n["metadata"]["annotations"][nodes::PHASE], "drained");
        assert_eq!(n["metadata"]["annotations"][nodes::OWNER], "t");
        Ok(())
    }
}

both_backends! {
    async fn a_flaky_daemonset_lookup_is_retried_not_a_refusal(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: DaemonSet, name: agent}\n- {kind: Deployment, name: web, replicas: 2}\n",
            ),
        )
        .await;
        let ds = pods_named(&c, "agent-").await;
        assert_eq!(ds.len(), 1);
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 2);
        c.reset_counts();
        let api = c.faulty(11).await?;
        let switch = api
            .set_failing_first(&[Fault::new("get", "daemonsets", 0.3, 500)])
            .await?;

        // Through the command line, as an operator runs it.
        let run = c
            .termguard_via(api.kubeconfig(), &["drain", NODE, "--ignore-daemonsets"])
            .await;
        drop(switch);
        let injected = api.injected().await?;
        api.clear().await?;
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("node/node-a drained"), "{}", run.stdout);
        assert!(!run.stderr.contains("cannot delete"), "{}", run.stderr);
        assert!(injected >= 1, "no lookup failed: the test tested nothing");
        let ds_get = format!(
            "/apis/apps/v1/namespaces/{}/daemonsets/agent",
            namespace(&ds[0])
        );
        assert!(
            api.reached(&c, "get", &ds_get, injected) >= 1,
            "a lookup got through after the failed ones: {:#?}",
            c.request_counts()
        );
        for p in &web {
            assert!(!c.pod_uid_exists(&uid(p)).await, "{} is gone", name(p));
        }
        let agent = c
            .pod(&namespace(&ds[0]), &name(&ds[0]))
            .await
            .ok_or_else(|| anyhow::anyhow!("the DaemonSet pod stays"))?;
        assert!(healthy(&agent));
        assert_eq!(c.evictions_of(&ds[0]) + c.deletes_of(&ds[0]), 0);
        Ok(())
    }
}

both_backends! {
    async fn a_daemonset_lookup_that_keeps_failing_refuses_the_drain_once_the_timeout_is_spent(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: DaemonSet, name: agent}\n- {kind: Deployment, name: web}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 1);
        c.reset_counts();
        let api = c.faulty(2).await?;
        api.set(&[Fault::new("get", "daemonsets", 1.0, 503)]).await?;
        let opts = DrainOptions {
            ignore_daemonsets: true,
            timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        let report = drainer_via(&api, "t").drain(&request(NODE, opts)).await?;
        let injected = api.injected().await?;
        api.clear().await?;
        // Retried within `--timeout`, at least three times, then kubectl's refusal, explained.
        assert_eq!(report.outcome, Outcome::Refused, "{report:#?}");
        let message = report.refused.clone().unwrap_or_default();
        assert!(
            message.contains("cannot delete daemonsets.apps \"agent\": the API server kept failing:"),
            "{message}"
        );
        assert!(injected >= 3, "{injected} tries");
        assert_eq!(c.verb_count("evict") + c.verb_count("delete"), 0);
        assert!(c.pod_uid_exists(&uid(&web[0])).await, "nothing was evicted");
        Ok(())
    }
}

both_backends! {
    async fn clipped_deletes_that_fail_half_the_time_still_reach_every_pod(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node(
                "- {kind: Deployment, name: web, replicas: 4, terminationGracePeriodSeconds: 30}\n",
            ),
        )
        .await;
        let feed = PodFeed::start(&c).await;
        let pods = feed.initial_on(NODE);
        assert_eq!(pods.len(), 4);
        c.reset_counts();
        let api = c.faulty(5).await?;
        let switch = api
            .set_failing_first(&[Fault::new("delete", "pods", 0.5, 503)])
            .await?;
        let mut req = request(NODE, DrainOptions::default());
        // About 7 s to the clip point: every pod's 30 s grace is clipped at once.
        req.deadline = Some(Timestamp::now() + SignedDuration::from_secs(10));
        req.margin = Duration::from_secs(3);

        let report = drainer_via(&api, "t").drain(&req).await?;
        drop(switch);
        let injected = api.injected().await?;
        api.clear().await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert!(injected >= 1, "no DELETE failed: the test tested nothing");
        feed.sync().await;
        for p in &pods {
            let r = result_of(&report, p);
            assert_eq!(r.action, PodAction::DeletedClipped, "{r:?}");
            assert_eq!(r.error, None, "{r:?}");
            assert_eq!(c.evictions_of(p), 0, "clipped: deleted, not evicted");
            let on_server = feed.deletion_grace_seconds(&uid(p));
            assert!(
                on_server.is_some_and(|g| (1..30).contains(&g)),
                "{}: the server saw the clipped delete: {on_server:?}",
                name(p)
            );
            assert!(!c.pod_uid_exists(&uid(p)).await, "{} is gone", name(p));
        }
        // One DELETE per pod reached the API server; the failed ones came on top.
        let deletes: u64 = pods.iter().map(|p| c.deletes_of(p)).sum();
        let expected = pods.len() as u64 + if c.is_real() { 0 } else { injected };
        assert_eq!(deletes, expected, "{:#?}", c.request_counts());
        Ok(())
    }
}

both_backends! {
    async fn disable_eviction_deletes_through_failing_deletes(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 3}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 3);
        c.reset_counts();
        let api = c.faulty(3).await?;
        let switch = api
            .set_failing_first(&[Fault::new("delete", "pods", 0.5, 500)])
            .await?;
        let opts = DrainOptions {
            disable_eviction: true,
            ..Default::default()
        };
        let report = drainer_via(&api, "t").drain(&request(NODE, opts)).await?;
        drop(switch);
        let injected = api.injected().await?;
        api.clear().await?;
        assert_eq!(report.outcome, Outcome::Drained, "{report:#?}");
        assert!(injected >= 1, "no DELETE failed: the test tested nothing");
        for p in &web {
            assert_eq!(result_of(&report, p).action, PodAction::Deleted);
            assert!(!c.pod_uid_exists(&uid(p)).await, "{} is gone", name(p));
        }
        Ok(())
    }
}

both_backends! {
    async fn a_forbidden_patch_fails_at_once_and_says_what_the_cluster_role_lacks(
        backend
    ) -> Result {
        let c = TestCluster::start_settled(
            backend,
            &one_node("- {kind: Deployment, name: web, replicas: 2}\n"),
        )
        .await;
        let web = pods_named(&c, "web-").await;
        assert_eq!(web.len(), 2);
        c.reset_counts();
        let api = c.faulty(1).await?;
        api.set(&[Fault::new("patch", "nodes", 1.0, 403)]).await?;

        let run = c.termguard_via(api.kubeconfig(), &["drain", NODE]).await;
        let injected = api.injected().await?;
        api.clear().await?;
        assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "cordoning node {NODE}: forbidden: the termguard ClusterRole does not grant patch on nodes"
            )),
            "{}",
            run.stderr
        );
        // Every PATCH of the node answers 403: one fault is one PATCH, not retried.
        assert_eq!(injected, 1, "a 403 is not retried: {:#?}", c.request_counts());
        assert!(!run.stderr.contains("retrying"), "no retry was logged: {}", run.stderr);
        assert_eq!(c.verb_count("evict") + c.verb_count("delete"), 0);
        for p in &web {
            assert!(c.pod_uid_exists(&uid(p)).await, "{} stays", name(p));
        }

        // A forbidden DELETE fails its pod at once, with the same explanation in the report.
        api.set(&[Fault::new("delete", "pods", 1.0, 403)]).await?;
        let opts = DrainOptions {
            disable_eviction: true,
            ..Default::default()
        };
        let report = drainer_via(&api, "t").drain(&request(NODE, opts)).await?;
        let injected = api.injected().await? - injected;
        api.clear().await?;
        assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
        assert_eq!(injected, web.len() as u64, "one DELETE per pod, not retried");
        for p in &web {
            let error = result_of(&report, p).error.clone().unwrap_or_default();
            assert!(
                error.contains("forbidden: the termguard ClusterRole does not grant delete on pods"),
                "{error}"
            );
            assert!(c.pod_uid_exists(&uid(p)).await, "{} stays", name(p));
        }
        Ok(())
    }
}

// No cluster: the help text is the same whatever the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drain_help_says_where_termguard_deliberately_differs() -> Result {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
        .args(["drain", "--help"])
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("deliberately differs"), "{help}");
    for flag in [
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--grace-period",
        "--timeout",
        "--pod-selector",
        "--disable-eviction",
        "--skip-wait-for-delete-timeout",
        "--chunk-size",
        "--dry-run",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(help.contains("waves"), "{help}");
    for status in [
        "Exit status:",
        "0    the node is drained",
        "130  interrupted by SIGINT",
        "143  interrupted by SIGTERM",
    ] {
        assert!(help.contains(status), "{status} missing from:\n{help}");
    }
    Ok(())
}
