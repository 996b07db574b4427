//! Which pods a drain evicts: kubectl's `pkg/drain/filters.go` rules, one small named function each.
//!
//! The rules, their order and their messages follow kubectl (`docs/drain-semantics.md#pod-rules`,
//! `docs/drain-semantics.md#pod-selection`): a pod goes through the rules in order until one
//! skips or refuses it. Two deliberate differences: a `--pod-selector` rule runs first (kubectl
//! filters server-side), and the warnings of every rule are kept instead of only the last one
//! (kubectl's own TODO).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::plan::{DrainOptions, NamespacedName};

/// Annotation the kubelet puts on mirror pods of static pods (`corev1.MirrorPodAnnotationKey`).
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Refusal for DaemonSet pods without `--ignore-daemonsets` (kubectl's text).
pub const DAEMONSET_FATAL: &str =
    "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)";
/// Warning for DaemonSet pods left in place under `--ignore-daemonsets` (kubectl's text).
pub const DAEMONSET_WARNING: &str = "ignoring DaemonSet-managed Pods";
/// Refusal for pods with emptyDir volumes without `--delete-emptydir-data` (kubectl's text).
pub const LOCAL_STORAGE_FATAL: &str =
    "cannot delete Pods with local storage (use --delete-emptydir-data to override)";
/// Warning for pods whose emptyDir data is deleted (kubectl's text).
pub const LOCAL_STORAGE_WARNING: &str = "deleting Pods with local storage";
/// Refusal for pods without a controller without `--force` (kubectl's text).
pub const UNMANAGED_FATAL: &str =
    "cannot delete Pods that declare no controller (use --force to override)";
/// Warning for controller-less pods deleted under `--force` (kubectl's text).
pub const UNMANAGED_WARNING: &str = "deleting Pods that declare no controller";

/// What one rule decided about one pod (kubectl's `PodDeleteStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The rule lets the pod through to the next rule; a warning is printed once for the drain.
    Keep {
        /// kubectl-style warning, e.g. "deleting Pods with local storage".
        warning: Option<String>,
    },
    /// The pod stays on the node and the drain goes on.
    Skip {
        /// Why, for `--dry-run` and reports.
        reason: String,
        /// Whether kubectl prints it as a warning (otherwise the skip is silent in kubectl).
        warning: bool,
    },
    /// The whole drain is refused before anything is evicted
    /// (`docs/drain-semantics.md#pod-selection`).
    Refuse {
        /// kubectl's error message, without the pod list.
        reason: String,
    },
}

impl Verdict {
    fn keep() -> Self {
        Verdict::Keep { warning: None }
    }

    fn warn(message: impl Into<String>) -> Self {
        Verdict::Keep {
            warning: Some(message.into()),
        }
    }

    fn skip(reason: impl Into<String>, warning: bool) -> Self {
        Verdict::Skip {
            reason: reason.into(),
            warning,
        }
    }

    fn refuse(reason: impl Into<String>) -> Self {
        Verdict::Refuse {
            reason: reason.into(),
        }
    }
}

/// One named pod rule.
#[derive(Clone, Copy, Debug)]
pub struct Filter {
    /// Stable name, shown in `--dry-run` and JSON output.
    pub name: &'static str,
    /// The rule itself: pure over the pod, the options and what the caller looked up.
    pub check: fn(&Pod, &DrainOptions, &PlanContext) -> Verdict,
}

/// The rules in the order they run (kubectl's `makeFilters`, with the selector first).
pub const FILTERS: [Filter; 7] = [
    Filter {
        name: "pod-selector",
        check: pod_selector,
    },
    Filter {
        name: "own-pod",
        check: own_pod,
    },
    Filter {
        name: "skip-deleted",
        check: skip_deleted,
    },
    Filter {
        name: "daemonset",
        check: daemonset,
    },
    Filter {
        name: "mirror-pod",
        check: mirror_pod,
    },
    Filter {
        name: "local-storage",
        check: local_storage,
    },
    Filter {
        name: "unreplicated",
        check: unreplicated,
    },
];

/// What the caller read from the cluster and the clock, so that the rules stay pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanContext {
    /// The time the pod list was read; `--skip-wait-for-delete-timeout` measures from it.
    pub now: Timestamp,
    /// Result of GETting each DaemonSet that owns a running pod; absent means it exists.
    pub daemonsets: BTreeMap<NamespacedName, DaemonSetLookup>,
}

impl PlanContext {
    /// A context with no DaemonSet lookups (every DaemonSet is taken to exist).
    pub fn new(now: Timestamp) -> Self {
        Self {
            now,
            daemonsets: BTreeMap::new(),
        }
    }

    /// Records the result of GETting the DaemonSet `namespace/name`.
    pub fn with_daemonset(mut self, namespace: &str, name: &str, lookup: DaemonSetLookup) -> Self {
        self.daemonsets
            .insert(NamespacedName::new(namespace, name), lookup);
        self
    }
}

/// The answer to `GET daemonsets/<name>` that kubectl's DaemonSet rule asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DaemonSetLookup {
    /// The DaemonSet exists: its pods are never evicted (`docs/drain-semantics.md#pod-rules`).
    #[default]
    Exists,
    /// 404: the pod is orphaned, so `--force` deletes it like kubectl does.
    NotFound,
    /// Any other error, with its text; kubectl refuses the drain with it.
    Failed(String),
}

/// The final decision for one pod after all rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Evict the pod; the warnings of the rules that let it through.
    Evict {
        /// Warnings in rule order.
        warnings: Vec<String>,
    },
    /// Leave it on the node.
    Skip {
        /// The rule that decided.
        rule: &'static str,
        /// Why.
        reason: String,
        /// Whether kubectl prints it as a warning.
        warning: bool,
    },
    /// Refuse the drain because of it.
    Refuse {
        /// The rule that decided.
        rule: &'static str,
        /// kubectl's message without the pod list.
        reason: String,
    },
}

/// Runs every rule in order and stops at the first skip or refusal (kubectl's `filterPods`).
pub fn select(pod: &Pod, opts: &DrainOptions, ctx: &PlanContext) -> Selection {
    let mut warnings = Vec::new();
    for filter in &FILTERS {
        match (filter.check)(pod, opts, ctx) {
            Verdict::Keep { warning } => warnings.extend(warning),
            Verdict::Skip { reason, warning } => {
                return Selection::Skip {
                    rule: filter.name,
                    reason,
                    warning,
                }
            }
            Verdict::Refuse { reason } => {
                return Selection::Refuse {
                    rule: filter.name,
                    reason,
                }
            }
        }
    }
    Selection::Evict { warnings }
}

/// The DaemonSets the caller must GET before planning: owners of pods that are still running.
pub fn daemonsets_to_look_up(pods: &[Pod]) -> BTreeSet<NamespacedName> {
    pods.iter()
        .filter(|pod| !is_finished(pod))
        .filter_map(|pod| {
            let owner = daemonset_owner(pod)?;
            Some(NamespacedName::new(namespace(pod), &owner.name))
        })
        .collect()
}

/// termguard's own pod stays: evicting it would end the drain that evicts it, midway (its
/// lease then lapses and another replica resumes after a pause the deadline may not have).
pub fn own_pod(pod: &Pod, opts: &DrainOptions, _: &PlanContext) -> Verdict {
    if opts
        .own_pod
        .as_ref()
        .is_some_and(|me| *me == NamespacedName::of(pod))
    {
        Verdict::skip(
            "termguard's own pod: it leaves with the instance, once its drain is done",
            true,
        )
    } else {
        Verdict::keep()
    }
}

/// Pods outside `--pod-selector` are not part of the drain (kubectl lists with it server-side).
pub fn pod_selector(pod: &Pod, opts: &DrainOptions, _: &PlanContext) -> Verdict {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    if opts.pod_selector.matches(labels) {
        Verdict::keep()
    } else {
        Verdict::skip(
            format!("does not match --pod-selector={}", opts.pod_selector),
            false,
        )
    }
}

/// `--skip-wait-for-delete-timeout`: a pod terminating for longer than N seconds is left alone.
///
/// kubectl compares whole seconds, `int(now - deletionTimestamp) > N`
/// (`docs/drain-semantics.md#pod-rules`).
pub fn skip_deleted(pod: &Pod, opts: &DrainOptions, ctx: &PlanContext) -> Verdict {
    let (Some(timeout), Some(deleted)) = (
        opts.skip_wait_for_delete_timeout,
        pod.metadata.deletion_timestamp.as_ref(),
    ) else {
        return Verdict::keep();
    };
    let limit = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
    if limit > 0 && ctx.now.duration_since(deleted.0).as_secs() > limit {
        Verdict::skip(
            format!("has DeletionTimestamp older than {limit} seconds"),
            false,
        )
    } else {
        Verdict::keep()
    }
}

/// DaemonSet pods are never evicted: the DaemonSet tolerates the cordon and would recreate them.
///
/// Without `--ignore-daemonsets` their presence refuses the drain; finished pods and orphans
/// (DaemonSet gone, with `--force`) are deleted, as kubectl does
/// (`docs/drain-semantics.md#pod-rules`).
pub fn daemonset(pod: &Pod, opts: &DrainOptions, ctx: &PlanContext) -> Verdict {
    let Some(owner) = daemonset_owner(pod) else {
        return Verdict::keep();
    };
    if is_finished(pod) {
        return Verdict::keep();
    }
    let key = NamespacedName::new(namespace(pod), &owner.name);
    match ctx.daemonsets.get(&key).unwrap_or(&DaemonSetLookup::Exists) {
        DaemonSetLookup::NotFound => {
            // kubectl passes the GET error's text through: `daemonsets.apps "<name>" not found`.
            let error = format!("daemonsets.apps \"{}\" not found", owner.name);
            if opts.force {
                Verdict::warn(error)
            } else {
                Verdict::refuse(format!("cannot delete {error}"))
            }
        }
        DaemonSetLookup::Failed(error) => Verdict::refuse(format!("cannot delete {error}")),
        DaemonSetLookup::Exists if opts.ignore_daemonsets => Verdict::skip(DAEMONSET_WARNING, true),
        DaemonSetLookup::Exists => Verdict::refuse(DAEMONSET_FATAL),
    }
}

/// Mirror pods belong to the kubelet's static pods; deleting them through the API does nothing.
pub fn mirror_pod(pod: &Pod, _: &DrainOptions, _: &PlanContext) -> Verdict {
    let is_mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
    if is_mirror {
        Verdict::skip(
            format!("mirror pod ({MIRROR_POD_ANNOTATION}), managed by the kubelet"),
            false,
        )
    } else {
        Verdict::keep()
    }
}

/// emptyDir data dies with the pod, so deleting it needs `--delete-emptydir-data` (only emptyDir,
/// not hostPath, as in kubectl).
pub fn local_storage(pod: &Pod, opts: &DrainOptions, _: &PlanContext) -> Verdict {
    let has_empty_dir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|volumes| volumes.iter().any(|v| v.empty_dir.is_some()));
    if !has_empty_dir || is_finished(pod) {
        Verdict::keep()
    } else if opts.delete_emptydir_data {
        Verdict::warn(LOCAL_STORAGE_WARNING)
    } else {
        Verdict::refuse(LOCAL_STORAGE_FATAL)
    }
}

/// A pod with no controller is not recreated elsewhere, so deleting it needs `--force`.
///
/// Any controller kind counts and its existence is not checked, as in kubectl.
pub fn unreplicated(pod: &Pod, opts: &DrainOptions, _: &PlanContext) -> Verdict {
    if is_finished(pod) || controller_of(pod).is_some() {
        Verdict::keep()
    } else if opts.force {
        Verdict::warn(UNMANAGED_WARNING)
    } else {
        Verdict::refuse(UNMANAGED_FATAL)
    }
}

/// A pod in phase Succeeded or Failed has no process left to stop.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The owner reference with `controller: true` (`metav1.GetControllerOf`).
pub fn controller_of(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))
}

/// The controlling DaemonSet; kubectl compares the kind only, not the apiVersion.
fn daemonset_owner(pod: &Pod) -> Option<&OwnerReference> {
    controller_of(pod).filter(|o| o.kind == "DaemonSet")
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

#[cfg(test)]
mod tests;
