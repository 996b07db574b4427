//! The cluster's rules: PodDisruptionBudgets that deadlock a drain, workloads a drain takes
//! down, grace periods a notice cannot give, nodes termguard cannot match to an instance,
//! cluster-autoscaler beside per-zone groups, and pods that should leave last. Pure functions
//! of the objects read (`docs/audit.md#the-clusters-findings`).

use super::facts::{Group, Replicas};
use super::{Finding, Severity};
use crate::cluster::drain::plan::DRAIN_ORDER_ANNOTATION;
use crate::cluster::index::instance_of_provider_id;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{Selector, SelectorExt};
use std::collections::{BTreeMap, HashMap};

/// The rule ids of the cluster's findings.
pub mod ids {
    /// A PodDisruptionBudget that can never allow an eviction.
    pub const PDB_NEVER_ALLOWS: &str = "pdb-never-allows-eviction";
    /// A single-replica Deployment or StatefulSet no budget covers.
    pub const SINGLE_REPLICA: &str = "single-replica-workload";
    /// A pod whose grace period is longer than a Spot warning's two minutes.
    pub const GRACE_BEYOND_SPOT: &str = "grace-period-beyond-spot-warning";
    /// A pod whose grace period is longer than its group's hook allows.
    pub const GRACE_BEYOND_HOOK: &str = "grace-period-beyond-hook-timeout";
    /// A node whose budgets make its drain take longer than its group's hook allows.
    pub const DRAIN_BEYOND_HOOK: &str = "drain-beyond-hook-timeout";
    /// A node without an AWS providerID.
    pub const NO_PROVIDER_ID: &str = "node-without-provider-id";
    /// cluster-autoscaler without --balance-similar-node-groups beside per-zone groups.
    pub const UNBALANCED_AUTOSCALER: &str =
        "cluster-autoscaler-without-balance-similar-node-groups";
    /// A pooler, DNS server or log shipper that a drain evicts with everything else.
    pub const DRAIN_LAST_UNMARKED: &str = "drain-last-candidate-unmarked";
}

/// A Spot interruption warning comes two minutes before EC2 reclaims the instance.
pub const SPOT_WARNING_SECONDS: i64 = 120;

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: i64 = 30;

/// What the drain-time estimate takes for a replacement pod to become Ready when its pod has no
/// readiness probe to tell: an image pull and a start on an existing node.
const DEFAULT_READY_SECONDS: i64 = 10;

/// Names that mark connection poolers, DNS servers and log shippers: what should leave a node
/// last, once the pods that use them are gone.
const DRAIN_LAST_HINTS: [&str; 14] = [
    "pgbouncer",
    "pgcat",
    "odyssey",
    "proxysql",
    "pgpool",
    "twemproxy",
    "envoy",
    "haproxy",
    "coredns",
    "kube-dns",
    "dnsmasq",
    "fluent-bit",
    "fluentd",
    "vector",
];

/// Node labels that say a node is Spot capacity (EKS managed node groups, Karpenter).
const SPOT_LABELS: [(&str, &str); 2] = [
    ("eks.amazonaws.com/capacityType", "SPOT"),
    ("karpenter.sh/capacity-type", "spot"),
];

/// What the cluster rules read.
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts {
    /// Every Node.
    pub nodes: Vec<Node>,
    /// Every Pod.
    pub pods: Vec<Pod>,
    /// Every PodDisruptionBudget.
    pub budgets: Vec<PodDisruptionBudget>,
    /// Every Deployment.
    pub deployments: Vec<Deployment>,
    /// Every StatefulSet.
    pub statefulsets: Vec<StatefulSet>,
}

fn ns_name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

fn labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn selector_of(pdb: &PodDisruptionBudget) -> Option<Selector> {
    Selector::try_from(pdb.spec.as_ref()?.selector.clone()?).ok()
}

/// Whether the budget covers pods of `namespace` with these labels (an empty selector covers
/// every pod of its namespace in policy/v1).
fn covers(pdb: &PodDisruptionBudget, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
    pdb.metadata.namespace.as_deref() == Some(namespace)
        && selector_of(pdb).is_some_and(|s| s.matches(labels))
}

/// Why a budget can never allow an eviction, if it cannot: `maxUnavailable` 0, or a
/// `minAvailable` of every pod it selects.
fn never_allows(pdb: &PodDisruptionBudget, selected: usize) -> Option<String> {
    let spec = pdb.spec.as_ref()?;
    let zero = |v: &IntOrString| match v {
        IntOrString::Int(0) => true,
        IntOrString::String(s) => s.trim() == "0%" || s.trim() == "0",
        IntOrString::Int(_) => false,
    };
    if let Some(max) = &spec.max_unavailable {
        return zero(max).then(|| "maxUnavailable is 0".to_string());
    }
    match spec.min_available.as_ref()? {
        IntOrString::String(s) if s.trim() == "100%" => Some("minAvailable is 100%".into()),
        IntOrString::Int(n) if selected > 0 && *n as usize >= selected => Some(format!(
            "minAvailable is {n} and it selects {selected} pod{}",
            if selected == 1 { "" } else { "s" }
        )),
        _ => None,
    }
}

fn owner_kind(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.kind.as_str())
}

fn grace(pod: &Pod) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE)
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// Whether the pod is one a drain evicts: not a DaemonSet's, not a mirror pod, not finished.
fn evictable(pod: &Pod) -> bool {
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    node_of(pod).is_some()
        && owner_kind(pod) != Some("DaemonSet")
        && !mirror
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// How many of the `selected` pods the budget lets go at once when all are healthy (the
/// disruption controller's arithmetic: percentages of `maxUnavailable` and `minAvailable`
/// round up), or `None` when it cannot be told.
fn allowance(pdb: &PodDisruptionBudget, selected: usize) -> Option<i64> {
    let spec = pdb.spec.as_ref()?;
    let n = selected as i64;
    let scaled = |v: &IntOrString| match v {
        IntOrString::Int(i) => Some(i64::from(*i)),
        IntOrString::String(s) => {
            let pct: i64 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
            Some((pct * n + 99) / 100)
        }
    };
    match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => scaled(max),
        (None, Some(min)) => scaled(min).map(|m| n - m),
        (None, None) => None,
    }
}

/// How long a replacement of `pod` takes to become Ready: its readiness probe's initial delay
/// plus the successful probes it needs, or [`DEFAULT_READY_SECONDS`].
fn ready_seconds(pod: &Pod) -> i64 {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.readiness_probe.as_ref())
        .map(|p| {
            i64::from(p.initial_delay_seconds.unwrap_or(0))
                + i64::from(p.period_seconds.unwrap_or(10))
                    * i64::from(p.success_threshold.unwrap_or(1))
        })
        .max()
        .unwrap_or(DEFAULT_READY_SECONDS)
}

/// The least time a drain of the node's `pods` takes, and the budget that makes it so: each
/// budget lets [`allowance`] of them go at once, and the next ones only once the replacements
/// are Ready (a StatefulSet's replacement starts only when its pod is gone, so its grace
/// period counts too). Budgets run side by side. `None` when no budget holds pods back.
fn drain_estimate(f: &ClusterFacts, pods: &[&Pod]) -> Option<(i64, String)> {
    let mut worst: Option<(i64, String)> = None;
    for pdb in &f.budgets {
        let namespace = pdb.metadata.namespace.as_deref().unwrap_or("default");
        let here: Vec<&&Pod> = pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| covers(pdb, namespace, &labels(p)))
            .collect();
        if here.len() < 2 {
            continue;
        }
        let selected = f
            .pods
            .iter()
            .filter(|p| evictable(p) && covers(pdb, namespace, &labels(p)))
            .count();
        let Some(at_once) = allowance(pdb, selected).filter(|a| *a > 0) else {
            continue; // none at all is pdb-never-allows-eviction
        };
        let rounds = (here.len() as i64 + at_once - 1) / at_once;
        let round = here
            .iter()
            .map(|p| {
                let ordered = owner_kind(p) == Some("StatefulSet");
                ready_seconds(p) + if ordered { grace(p) } else { 0 }
            })
            .max()
            .unwrap_or(DEFAULT_READY_SECONDS);
        let last_grace = here.iter().map(|p| grace(p)).max().unwrap_or(DEFAULT_GRACE);
        let total = (rounds - 1) * round + last_grace;
        let why = format!(
            "budget {namespace}/{} lets {at_once} of its {} pods here go at a time, each next one \
             after a replacement is ready (about {round} s)",
            pdb.metadata.name.as_deref().unwrap_or_default(),
            here.len()
        );
        if worst.as_ref().is_none_or(|(t, _)| total > *t) {
            worst = Some((total, why));
        }
    }
    worst
}

/// The cluster's findings. `groups` are the audited groups, to tell which nodes are Spot and
/// what their termination hook allows.
pub fn findings(f: &ClusterFacts, groups: &[Group]) -> Vec<Finding> {
    let mut out = Vec::new();
    let group_of_instance: HashMap<&str, &Group> = groups
        .iter()
        .flat_map(|g| g.instances.iter().map(move |i| (i.as_str(), g)))
        .collect();
    let group_of_node: HashMap<&str, &Group> = f
        .nodes
        .iter()
        .filter_map(|n| {
            let id = instance_of_provider_id(n.spec.as_ref()?.provider_id.as_deref()?)?;
            Some((n.metadata.name.as_deref()?, *group_of_instance.get(id)?))
        })
        .collect();
    let spot_node: HashMap<&str, bool> = f
        .nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            let labelled = n.metadata.labels.as_ref().is_some_and(|l| {
                SPOT_LABELS
                    .iter()
                    .any(|(k, v)| l.get(*k).is_some_and(|x| x.eq_ignore_ascii_case(v)))
            });
            Some((
                name,
                labelled || group_of_node.get(name).is_some_and(|g| g.spot),
            ))
        })
        .collect();

    for n in &f.nodes {
        let aws = n
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(instance_of_provider_id)
            .is_some();
        if !aws {
            let name = n.metadata.name.as_deref().unwrap_or_default();
            out.push(Finding {
                id: ids::NO_PROVIDER_ID,
                severity: Severity::High,
                resource: format!("node/{name}"),
                message: "the node has no AWS providerID (aws:///ZONE/INSTANCE): a notice names \
                          an instance, and termguard cannot tell that it is this node, so it is \
                          terminated undrained"
                    .into(),
                fix: "run the kubelet with the AWS cloud provider (or --provider-id \
                      aws:///ZONE/INSTANCE-ID) so the Node records its instance"
                    .into(),
            });
        }
    }

    for pdb in &f.budgets {
        let namespace = pdb.metadata.namespace.as_deref().unwrap_or("default");
        let blocked: Vec<&Pod> = f
            .pods
            .iter()
            .filter(|p| evictable(p))
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| covers(pdb, namespace, &labels(p)))
            .collect();
        if let Some(why) = never_allows(pdb, blocked.len()) {
            let name = pdb.metadata.name.as_deref().unwrap_or_default();
            let pods: Vec<String> = blocked.iter().map(|p| ns_name(&p.metadata)).collect();
            out.push(Finding {
                id: ids::PDB_NEVER_ALLOWS,
                severity: Severity::High,
                resource: format!("pdb/{namespace}/{name}"),
                message: format!(
                    "the budget can never allow an eviction ({why}): a drain of a node with {} \
                     waits until its deadline and then deletes them with their grace period \
                     clipped, and kubectl drain waits for ever",
                    if pods.is_empty() {
                        "its pods".to_string()
                    } else {
                        pods.join(", ")
                    }
                ),
                fix: format!(
                    "kubectl patch pdb {name} -n {namespace} --type merge -p \
                     '{{\"spec\":{{\"minAvailable\":null,\"maxUnavailable\":1}}}}'"
                ),
            });
        }
    }

    let uncovered = |namespace: &str, labels: &BTreeMap<String, String>| {
        !f.budgets.iter().any(|b| covers(b, namespace, labels))
    };
    let workloads = f
        .deployments
        .iter()
        .map(|d| {
            (
                "deployment",
                &d.metadata,
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref()?.labels.clone()),
            )
        })
        .chain(f.statefulsets.iter().map(|s| {
            (
                "statefulset",
                &s.metadata,
                s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                s.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref()?.labels.clone()),
            )
        }));
    for (kind, meta, replicas, template) in workloads {
        let namespace = meta.namespace.as_deref().unwrap_or("default");
        if replicas == 1 && uncovered(namespace, &template.unwrap_or_default()) {
            let name = meta.name.as_deref().unwrap_or_default();
            out.push(Finding {
                id: ids::SINGLE_REPLICA,
                severity: Severity::Low,
                resource: format!("{kind}/{namespace}/{name}"),
                message: "one replica and no PodDisruptionBudget: every drain of its node takes \
                          its only pod down, an outage until it runs elsewhere"
                    .into(),
                fix: format!(
                    "kubectl scale {kind} {name} -n {namespace} --replicas=2, and a \
                     PodDisruptionBudget with maxUnavailable: 1"
                ),
            });
        }
    }

    for pod in f.pods.iter().filter(|p| evictable(p)) {
        let node = node_of(pod).unwrap_or_default();
        let g = grace(pod);
        let resource = format!("pod/{}", ns_name(&pod.metadata));
        if spot_node.get(node).copied().unwrap_or(false) && g > SPOT_WARNING_SECONDS {
            out.push(Finding {
                id: ids::GRACE_BEYOND_SPOT,
                severity: Severity::Medium,
                resource: resource.clone(),
                message: format!(
                    "its grace period is {g} s on the Spot node {node}: a Spot warning gives \
                     {SPOT_WARNING_SECONDS} s, so its shutdown is clipped to what is left"
                ),
                fix: format!(
                    "shut down within {SPOT_WARNING_SECONDS} s (terminationGracePeriodSeconds \
                     ≤ {SPOT_WARNING_SECONDS}), or keep it off Spot capacity"
                ),
            });
        }
        let hook = group_of_node.get(node).and_then(|grp| {
            grp.termination_hooks()
                .map(|h| h.global_timeout)
                .filter(|t| *t > 0)
                .min()
        });
        if let Some(limit) = hook.filter(|limit| g > *limit) {
            out.push(Finding {
                id: ids::GRACE_BEYOND_HOOK,
                severity: Severity::High,
                resource: resource.clone(),
                message: format!(
                    "its grace period is {g} s, and the termination hook of its node's group \
                     lets a termination wait {limit} s at most, heartbeats included"
                ),
                fix: "a shorter terminationGracePeriodSeconds, or a longer hook heartbeat timeout \
                      (the global timeout is 100 times it, at most 48 hours)"
                    .into(),
            });
        }
        let text = format!(
            "{} {}",
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.spec
                .as_ref()
                .map(|s| s
                    .containers
                    .iter()
                    .filter_map(|c| c.image.clone())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        )
        .to_lowercase();
        let marked = pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(DRAIN_ORDER_ANNOTATION));
        let critical = pod
            .spec
            .as_ref()
            .and_then(|s| s.priority_class_name.as_deref())
            .is_some_and(|p| p == "system-cluster-critical" || p == "system-node-critical");
        let pre_stop = pod.spec.as_ref().is_some_and(|s| {
            s.containers
                .iter()
                .any(|c| c.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some()))
        });
        if let Some(hint) = DRAIN_LAST_HINTS.iter().find(|h| text.contains(*h)) {
            if !marked && !critical && !pre_stop {
                out.push(Finding {
                    id: ids::DRAIN_LAST_UNMARKED,
                    severity: Severity::Low,
                    resource,
                    message: format!(
                        "it looks like {} ({hint}), has no {DRAIN_ORDER_ANNOTATION} annotation and \
                         no preStop hook: a drain evicts it together with the pods that use it",
                        if ["coredns", "kube-dns", "dnsmasq"].contains(hint) {
                            "a DNS server"
                        } else if ["fluent-bit", "fluentd", "vector"].contains(hint) {
                            "a log shipper"
                        } else {
                            "a connection pooler or proxy"
                        }
                    ),
                    fix: format!(
                        "annotate its pod template {DRAIN_ORDER_ANNOTATION}: last (termguard then \
                         evicts it once the node's other pods are gone), or give it a preStop hook \
                         that lets its clients move"
                    ),
                });
            }
        }
    }

    for n in &f.nodes {
        let Some(name) = n.metadata.name.as_deref() else {
            continue;
        };
        let Some(limit) = group_of_node.get(name).and_then(|g| {
            g.termination_hooks()
                .map(|h| h.global_timeout)
                .filter(|t| *t > 0)
                .min()
        }) else {
            continue;
        };
        let here: Vec<&Pod> = f
            .pods
            .iter()
            .filter(|p| evictable(p) && node_of(p) == Some(name))
            .collect();
        // A grace period alone beyond the hook is grace-period-beyond-hook-timeout's.
        if here.iter().any(|p| grace(p) > limit) {
            continue;
        }
        if let Some((need, why)) = drain_estimate(f, &here).filter(|(need, _)| *need > limit) {
            out.push(Finding {
                id: ids::DRAIN_BEYOND_HOOK,
                severity: Severity::High,
                resource: format!("node/{name}"),
                message: format!(
                    "its drain needs at least {need} s ({why}), and the termination hook of its \
                     group lets a termination wait {limit} s at most, heartbeats included: the \
                     rest of its pods are deleted with their grace period clipped"
                ),
                fix:
                    "a longer hook heartbeat timeout (the global timeout is 100 times it, at most \
                      48 hours), a budget that lets more pods go at once, or topology spread \
                      constraints that put fewer of the workload's pods on one node"
                        .into(),
            });
        }
    }

    let per_zone: Vec<&Group> = groups.iter().filter(|g| g.zones.len() == 1).collect();
    if per_zone.len() >= 2 {
        for pod in &f.pods {
            let args: Vec<String> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.command.iter().flatten().chain(c.args.iter().flatten()))
                .cloned()
                .collect();
            if !args.iter().any(|a| a.contains("cluster-autoscaler")) {
                continue;
            }
            let balanced = args.iter().any(|a| {
                a == "--balance-similar-node-groups" || a == "--balance-similar-node-groups=true"
            });
            if !balanced {
                out.push(Finding {
                    id: ids::UNBALANCED_AUTOSCALER,
                    severity: Severity::Medium,
                    resource: format!("pod/{}", ns_name(&pod.metadata)),
                    message: format!(
                        "cluster-autoscaler runs without --balance-similar-node-groups beside {} \
                         one-zone groups: it grows one zone's group at a time, and the zones \
                         drift apart",
                        per_zone.len()
                    ),
                    fix: "add --balance-similar-node-groups=true to cluster-autoscaler's arguments"
                        .into(),
                });
            }
        }
    }
    out
}

/// `ACCOUNT/NAME` of a queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`): the same
/// queue whatever endpoint form or trailing slash the URL was written with.
fn queue_key(url: &str) -> Option<String> {
    let mut parts = url.trim().trim_end_matches('/').rsplit('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let account = parts.next().filter(|a| !a.is_empty() && !a.contains(':'))?;
    Some(format!("{account}/{name}"))
}

/// The queue a termguard container reads: `--queue-url URL`, `--queue-url=URL`, or the
/// `TERMGUARD_QUEUE_URL` environment variable.
fn queue_of(c: &k8s_openapi::api::core::v1::Container) -> Option<String> {
    let words: Vec<&String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .collect();
    words
        .iter()
        .enumerate()
        .find_map(|(i, w)| {
            if let Some(url) = w.strip_prefix("--queue-url=") {
                Some(url.to_string())
            } else if w.as_str() == "--queue-url" {
                words.get(i + 1).map(|u| u.to_string())
            } else {
                None
            }
        })
        .or_else(|| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == "TERMGUARD_QUEUE_URL")
                .and_then(|e| e.value.clone())
        })
}

/// Whether the container runs `termguard run` (its image or its command names termguard).
fn runs_termguard(c: &k8s_openapi::api::core::v1::Container) -> bool {
    let named = c.image.as_deref().is_some_and(|i| i.contains("termguard"))
        || c.command.iter().flatten().next().is_some_and(|cmd| {
            cmd.rsplit('/')
                .next()
                .is_some_and(|b| b.contains("termguard"))
        });
    named
        && c.command
            .iter()
            .flatten()
            .chain(c.args.iter().flatten())
            .any(|w| w == "run")
}

fn ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The termguard replicas of the cluster, for the queue at `queue_url`.
pub fn replicas(f: &ClusterFacts, queue_url: &str) -> Replicas {
    let want = queue_key(queue_url);
    let mut out = Replicas::default();
    for pod in &f.pods {
        let Some(c) = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|c| runs_termguard(c))
        else {
            continue;
        };
        let name = ns_name(&pod.metadata);
        let reads = queue_of(c);
        match (reads.as_deref().and_then(queue_key), ready(pod)) {
            (Some(k), true) if Some(&k) == want.as_ref() => out.reading.push(name),
            (Some(k), _) if Some(&k) != want.as_ref() => out
                .others
                .push(format!("{name} reads {}", reads.unwrap_or(k))),
            (Some(_), _) => out.others.push(format!("{name} is not running and ready")),
            (None, _) => out.others.push(format!("{name} names no queue")),
        }
    }
    out
}

#[cfg(test)]
mod tests;
