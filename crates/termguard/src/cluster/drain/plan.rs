//! The drain plan: which pods leave, in which wave, and which stay or block the drain, and why.
//!
//! Pure: built from a pod list and the options, printed by `--dry-run`, serialized by
//! `--output json`, and executed wave by wave by the evictor
//! (`docs/drain-semantics.md#pod-selection`, `docs/drain-semantics.md#waves`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::Serialize;

use super::budget::effective_grace_period;
use super::filters::{is_finished, select, PlanContext, Selection};
use super::selector::PodSelector;

/// Annotation that sends a pod to the last wave when its value is `last`
/// (`docs/drain-semantics.md#waves`).
pub const DRAIN_ORDER_ANNOTATION: &str = "termguard.io/drain-order";
/// kubectl's `--chunk-size` default (`cmdutil.DefaultChunkSize`).
pub const DEFAULT_CHUNK_SIZE: u32 = 500;

/// A namespaced object's identity, printed `namespace/name` as kubectl does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NamespacedName {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl NamespacedName {
    /// Builds a name from its parts.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The pod's namespace and name (a pod listed by the API server always has both).
    pub fn of(pod: &Pod) -> Self {
        Self::new(
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or(""),
        )
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// kubectl drain's options with kubectl's names and defaults, plus termguard's drain-last rules.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainOptions {
    /// `--ignore-daemonsets`: DaemonSet pods become a warning instead of an error (never evicted).
    pub ignore_daemonsets: bool,
    /// `--delete-emptydir-data`: allow evicting pods with emptyDir volumes.
    pub delete_emptydir_data: bool,
    /// `--force`: allow deleting pods without a controller, and orphaned DaemonSet pods.
    pub force: bool,
    /// `--grace-period`: `Some(n ≥ 0)` overrides each pod's grace; `None` (kubectl's -1) keeps it.
    pub grace_period: Option<i64>,
    /// `--timeout`: the whole drain's limit; `None` (kubectl's 0) means no limit.
    pub timeout: Option<Duration>,
    /// `--pod-selector`: only pods with matching labels are drained.
    pub pod_selector: PodSelector,
    /// `--disable-eviction`: DELETE instead of evicting, bypassing PodDisruptionBudgets.
    pub disable_eviction: bool,
    /// `--skip-wait-for-delete-timeout`: leave pods terminating longer than this; `None` is off.
    pub skip_wait_for_delete_timeout: Option<Duration>,
    /// `--chunk-size`: page size of the pod list; 0 disables paging.
    pub chunk_size: u32,
    /// Which pods go to the last wave.
    pub drain_last: DrainLastRules,
    /// The pod this process runs in: never evicted by its own drain (it would end the drain
    /// midway); it leaves with the instance once the drain is done.
    pub own_pod: Option<NamespacedName>,
}

impl Default for DrainOptions {
    fn default() -> Self {
        Self {
            ignore_daemonsets: false,
            delete_emptydir_data: false,
            force: false,
            grace_period: None,
            timeout: None,
            pod_selector: PodSelector::default(),
            disable_eviction: false,
            skip_wait_for_delete_timeout: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            drain_last: DrainLastRules::default(),
            own_pod: None,
        }
    }
}

/// Which pods are evicted last: poolers, DNS, log shippers and critical pods
/// (`docs/drain-semantics.md#waves`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainLastRules {
    /// Priority classes whose pods go last; the kubelet's own shutdown order
    /// (`docs/drain-semantics.md#grace-periods`).
    pub priority_classes: BTreeSet<String>,
    /// Annotations (key → value) that send a pod last.
    pub annotations: BTreeMap<String, String>,
}

impl Default for DrainLastRules {
    fn default() -> Self {
        Self {
            priority_classes: ["system-cluster-critical", "system-node-critical"]
                .map(String::from)
                .into(),
            annotations: BTreeMap::from([(DRAIN_ORDER_ANNOTATION.to_owned(), "last".to_owned())]),
        }
    }
}

impl DrainLastRules {
    /// Why the pod belongs to the last wave, or `None` for an ordinary workload.
    pub fn reason(&self, pod: &Pod) -> Option<String> {
        let class = pod
            .spec
            .as_ref()
            .and_then(|s| s.priority_class_name.as_ref());
        if let Some(class) = class.filter(|c| self.priority_classes.contains(*c)) {
            return Some(format!("priorityClassName {class}"));
        }
        let annotations = pod.metadata.annotations.as_ref()?;
        self.annotations
            .iter()
            .find(|(key, value)| annotations.get(*key) == Some(*value))
            .map(|(key, value)| format!("annotation {key}={value}"))
    }
}

/// Whether a wave holds ordinary workloads or the drain-last pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaveKind {
    /// Everything not marked to go last.
    Ordinary,
    /// Pods matched by [`DrainLastRules`]; they start when the ordinary pods are gone.
    DrainLast,
}

/// Pods evicted in parallel; a wave starts once the previous wave's pods are gone
/// (`docs/drain-semantics.md#waves`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Wave {
    /// 1-based position in the plan.
    pub number: usize,
    /// Ordinary or drain-last.
    pub kind: WaveKind,
    /// The pods, in list order.
    pub pods: Vec<PlannedPod>,
}

impl Wave {
    /// The drain's phase while this wave runs, as recorded on the Node (`wave-N`).
    pub fn phase(&self) -> String {
        format!("wave-{}", self.number)
    }
}

/// A pod the drain evicts, with what the evictor needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedPod {
    /// Namespace and name.
    #[serde(flatten)]
    pub pod: NamespacedName,
    /// The UID sent as the eviction precondition (`docs/drain-semantics.md#evictions-and-retries`).
    pub uid: Option<String>,
    /// Effective grace period: `--grace-period`, else the pod's own, else 30 s.
    pub grace_period_seconds: i64,
    /// Phase Succeeded/Failed: deleted without checks, nothing to wait for.
    pub finished: bool,
    /// Already has a deletionTimestamp.
    pub terminating: bool,
    /// Why it is in the drain-last wave, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_last: Option<String>,
    /// Warnings of the rules that let it through.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Its labels: which PodDisruptionBudgets cover it (not part of the printed plan).
    #[serde(skip)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A pod the drain leaves on the node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedPod {
    /// Namespace and name.
    #[serde(flatten)]
    pub pod: NamespacedName,
    /// The rule that skipped it.
    pub rule: &'static str,
    /// Why.
    pub reason: String,
    /// Whether kubectl would print it as a warning.
    pub warning: bool,
}

/// A pod that makes the drain refuse to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefusedPod {
    /// Namespace and name.
    #[serde(flatten)]
    pub pod: NamespacedName,
    /// The rule that refused it.
    pub rule: &'static str,
    /// kubectl's message, e.g. "cannot delete Pods with local storage (...)".
    pub reason: String,
}

/// The whole plan for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DrainPlan {
    /// Non-empty waves in eviction order.
    pub waves: Vec<Wave>,
    /// Pods left in place, with reasons.
    pub skipped: Vec<SkippedPod>,
    /// Pods that refuse the drain; non-empty means [`plan`] returned an error.
    pub refused: Vec<RefusedPod>,
}

/// Why a drain cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Some pods are refused; kubectl aborts before evicting anything
    /// (`docs/drain-semantics.md#pod-rules`).
    #[error("{message}")]
    Refused {
        /// kubectl's aggregated error text.
        message: String,
        /// The full plan, for `--dry-run` and for deadline mode.
        plan: Box<DrainPlan>,
    },
}

/// Sorts pods into waves, skips and refusals. Pure: `ctx` carries the clock and DaemonSet lookups.
pub fn plan(pods: &[Pod], opts: &DrainOptions, ctx: &PlanContext) -> Result<DrainPlan, PlanError> {
    let mut ordinary = Vec::new();
    let mut last = Vec::new();
    let mut result = DrainPlan::default();
    for pod in pods {
        let name = NamespacedName::of(pod);
        match select(pod, opts, ctx) {
            Selection::Skip {
                rule,
                reason,
                warning,
            } => result.skipped.push(SkippedPod {
                pod: name,
                rule,
                reason,
                warning,
            }),
            Selection::Refuse { rule, reason } => result.refused.push(RefusedPod {
                pod: name,
                rule,
                reason,
            }),
            Selection::Evict { warnings } => {
                let finished = is_finished(pod);
                // A finished pod runs nothing, so it has nothing to order: it leaves with the first wave.
                let drain_last = if finished {
                    None
                } else {
                    opts.drain_last.reason(pod)
                };
                let planned = PlannedPod {
                    pod: name,
                    uid: pod.metadata.uid.clone(),
                    grace_period_seconds: effective_grace_period(opts.grace_period, pod),
                    finished,
                    terminating: pod.metadata.deletion_timestamp.is_some(),
                    drain_last,
                    warnings,
                    labels: pod.metadata.labels.clone().unwrap_or_default(),
                };
                if planned.drain_last.is_some() {
                    last.push(planned);
                } else {
                    ordinary.push(planned);
                }
            }
        }
    }
    for (kind, pods) in [(WaveKind::Ordinary, ordinary), (WaveKind::DrainLast, last)] {
        if !pods.is_empty() {
            let number = result.waves.len() + 1;
            result.waves.push(Wave { number, kind, pods });
        }
    }
    match result.refusal_message() {
        Some(message) => Err(PlanError::Refused {
            message,
            plan: Box::new(result),
        }),
        None => Ok(result),
    }
}

impl DrainPlan {
    /// Every pod to evict, wave by wave.
    pub fn pods(&self) -> impl Iterator<Item = &PlannedPod> {
        self.waves.iter().flat_map(|w| w.pods.iter())
    }

    /// kubectl's warning line: `<message>: ns/a, ns/b` groups joined by `; ` (`Warnings()`).
    pub fn warnings(&self) -> Option<String> {
        let evicted = self
            .pods()
            .flat_map(|p| p.warnings.iter().map(move |w| (w.as_str(), &p.pod)));
        let skipped = self
            .skipped
            .iter()
            .filter(|s| s.warning)
            .map(|s| (s.reason.as_str(), &s.pod));
        let groups = group(skipped.chain(evicted));
        (!groups.is_empty()).then(|| groups.join("; "))
    }

    /// kubectl's aggregated error: one `<message>: ns/a, ns/b` per message, `[a, b]` when several.
    pub fn refusal_message(&self) -> Option<String> {
        let groups = group(self.refused.iter().map(|r| (r.reason.as_str(), &r.pod)));
        match groups.len() {
            0 => None,
            // utilerrors.NewAggregate prints a lone error bare and several as a bracketed list.
            1 => groups.into_iter().next(),
            _ => Some(format!("[{}]", groups.join(", "))),
        }
    }
}

/// Groups pods by message, messages in order of first appearance (kubectl's map order is random).
fn group<'a>(items: impl Iterator<Item = (&'a str, &'a NamespacedName)>) -> Vec<String> {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for (message, pod) in items {
        match groups.iter_mut().find(|(m, _)| *m == message) {
            Some((_, pods)) => pods.push(pod.to_string()),
            None => groups.push((message, vec![pod.to_string()])),
        }
    }
    groups
        .into_iter()
        .map(|(message, pods)| format!("{message}: {}", pods.join(", ")))
        .collect()
}

/// The `--dry-run` text: warnings, waves, skips and refusals, one pod per line.
impl fmt::Display for DrainPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .pods()
            .map(|p| &p.pod)
            .chain(self.skipped.iter().map(|s| &s.pod))
            .chain(self.refused.iter().map(|r| &r.pod))
            .map(|p| p.to_string().len())
            .max()
            .unwrap_or(0);
        if let Some(warnings) = self.warnings() {
            writeln!(f, "Warning: {warnings}")?;
        }
        if self.waves.is_empty() {
            writeln!(f, "no pods to evict")?;
        }
        for wave in &self.waves {
            let count = plural(wave.pods.len());
            match (wave.kind, wave.number) {
                (WaveKind::Ordinary, n) => writeln!(f, "wave {n} (ordinary): {count}")?,
                (WaveKind::DrainLast, 1) => writeln!(f, "wave 1 (drain-last): {count}")?,
                (WaveKind::DrainLast, n) => writeln!(
                    f,
                    "wave {n} (drain-last): {count}, after wave {} is gone",
                    n - 1
                )?,
            }
            for pod in &wave.pods {
                let name = pod.pod.to_string();
                write!(f, "  {name:width$}  grace {}s", pod.grace_period_seconds)?;
                if pod.finished {
                    write!(f, ", finished")?;
                }
                if pod.terminating {
                    write!(f, ", terminating")?;
                }
                if let Some(why) = &pod.drain_last {
                    write!(f, ", last: {why}")?;
                }
                for warning in &pod.warnings {
                    write!(f, ", warning: {warning}")?;
                }
                writeln!(f)?;
            }
        }
        if !self.skipped.is_empty() {
            writeln!(f, "skipped: {}", plural(self.skipped.len()))?;
            for s in &self.skipped {
                writeln!(f, "  {:width$}  {}", s.pod.to_string(), s.reason)?;
            }
        }
        if !self.refused.is_empty() {
            writeln!(f, "refused: {}", plural(self.refused.len()))?;
            for r in &self.refused {
                writeln!(f, "  {:width$}  {}", r.pod.to_string(), r.reason)?;
            }
        }
        Ok(())
    }
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 pod".to_owned()
    } else {
        format!("{n} pods")
    }
}

#[cfg(test)]
mod tests;
