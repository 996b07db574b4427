//! What a drain reports: live progress steps, per-pod results and the final summary.

use super::plan::{NamespacedName, SkippedPod, WaveKind};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Something that happened during a drain, for live display and logs.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The node was cordoned (or already was).
    Cordoned {
        /// Whether it was already cordoned.
        already: bool,
    },
    /// Another process is draining the node; we wait for its result.
    Following {
        /// Its identity.
        owner: String,
    },
    /// A previous, unfinished drain is being resumed.
    Resuming,
    /// kubectl's warning line.
    Warning(String),
    /// A wave starts.
    WaveStarted {
        /// Wave number.
        number: usize,
        /// Ordinary or drain-last.
        kind: WaveKind,
        /// Pods in it.
        pods: usize,
    },
    /// An eviction (or delete) request is about to be sent.
    Evicting(NamespacedName),
    /// An eviction was refused and will be retried.
    Blocked {
        /// The pod.
        pod: NamespacedName,
        /// kubectl's retry line.
        message: String,
    },
    /// A pod is gone.
    Gone {
        /// The pod.
        pod: NamespacedName,
        /// How it left.
        action: PodAction,
    },
    /// A pod could not be evicted.
    PodFailed {
        /// The pod.
        pod: NamespacedName,
        /// Why.
        error: String,
    },
}

/// How a pod left the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodAction {
    /// Evicted through the Eviction API.
    Evicted,
    /// Deleted (`--disable-eviction`, or a finished pod).
    Deleted,
    /// Deleted with a grace period clipped to the time left before the deadline.
    DeletedClipped,
    /// It was already terminating; we only waited.
    AlreadyTerminating,
    /// It was gone before we asked.
    AlreadyGone,
    /// It did not leave.
    Remained,
}

/// The result for one pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodResult {
    /// Namespace/name.
    pub pod: String,
    /// Wave number.
    pub wave: usize,
    /// How it left.
    pub action: PodAction,
    /// Grace period it was given, in seconds.
    pub grace_period_seconds: Option<i64>,
    /// Eviction attempts.
    pub attempts: u32,
    /// Milliseconds from the start of the drain until the pod was gone.
    pub gone_after_ms: Option<u64>,
    /// Why it could not leave gracefully, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_graceful: Option<String>,
    /// An error that stopped its eviction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every selected pod is gone.
    Drained,
    /// The deadline passed with pods still on the node.
    TimedOut,
    /// Some pods could not be evicted.
    Failed,
    /// kubectl's rules refused the drain before anything was evicted.
    Refused,
}

impl Outcome {
    pub(super) fn phase(self) -> &'static str {
        match self {
            Outcome::Drained => "drained",
            Outcome::TimedOut => "timed-out",
            Outcome::Failed | Outcome::Refused => "failed",
        }
    }
}

/// Whether this run did the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// This run drained the node from the start.
    Owner,
    /// This run took over an unfinished drain.
    Resumed,
    /// Another run did the work; this one waited and reports its result.
    Followed,
}

/// The summary of one drain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainReport {
    /// The node.
    pub node: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Who did the work.
    pub role: Role,
    /// Notice id.
    pub notice: String,
    /// Cause.
    pub cause: String,
    /// The deadline used for clipping, if any.
    pub deadline: Option<Timestamp>,
    /// Wall time of the drain in milliseconds.
    pub duration_ms: u64,
    /// Number of waves.
    pub waves: usize,
    /// Pods evicted or deleted.
    pub evicted: usize,
    /// Pods that did not leave gracefully, with the reason.
    pub not_graceful: Vec<String>,
    /// Errors that stopped evictions.
    pub errors: Vec<String>,
    /// The refusal message, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Per-pod results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodResult>,
    /// Pods left on the node on purpose.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedPod>,
}
