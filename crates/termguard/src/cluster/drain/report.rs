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
    /// Milliseconds from the start of the drain until the pod was gone (of the run that saw it
    /// go, when a run took over an interrupted drain).
    pub gone_after_ms: Option<u64>,
    /// Why it could not leave gracefully, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_graceful: Option<String>,
    /// An error that stopped its eviction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PodResult {
    /// A pod of wave `wave` that nothing has happened to yet.
    pub fn planned(pod: &str, wave: usize) -> Self {
        PodResult {
            pod: pod.to_string(),
            wave,
            action: PodAction::Remained,
            grace_period_seconds: None,
            attempts: 0,
            gone_after_ms: None,
            not_graceful: None,
            error: None,
        }
    }
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
    /// The run was stopped (SIGINT, SIGTERM) before the drain ended; the node stays cordoned.
    Interrupted,
}

impl Outcome {
    pub(super) fn phase(self) -> &'static str {
        match self {
            Outcome::Drained => "drained",
            Outcome::TimedOut => "timed-out",
            Outcome::Failed | Outcome::Refused => "failed",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// The outcome a recorded phase stands for (`failed` reads as [`Outcome::Failed`]: the
    /// phase does not tell a refusal apart); `None` for a phase that is no outcome
    /// (`draining`, `wave-N`).
    pub(super) fn from_phase(phase: &str) -> Option<Self> {
        [
            Outcome::Drained,
            Outcome::TimedOut,
            Outcome::Failed,
            Outcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.phase() == phase)
    }

    /// The one-line error of an outcome other than [`Outcome::Drained`].
    pub fn summary(self) -> Option<&'static str> {
        match self {
            Outcome::Drained => None,
            Outcome::TimedOut => Some("deadline reached"),
            Outcome::Failed => Some("some pods could not be evicted"),
            Outcome::Refused => Some("the drain was refused"),
            Outcome::Interrupted => Some("interrupted"),
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
    /// Why the drain did not end drained, in one line (absent when it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Per-pod results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodResult>,
    /// Pods left on the node on purpose.
    #[serde(default, skip_deserializing, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedPod>,
}

impl DrainReport {
    /// An empty report of a drain of `node` for `notice` (its cause), as `role`, ending in
    /// `outcome` so far.
    pub fn new(node: &str, notice: &str, cause: &str, role: Role, outcome: Outcome) -> Self {
        DrainReport {
            node: node.to_string(),
            outcome,
            role,
            notice: notice.to_string(),
            cause: cause.to_string(),
            deadline: None,
            duration_ms: 0,
            waves: 0,
            evicted: 0,
            not_graceful: Vec::new(),
            errors: Vec::new(),
            refused: None,
            error: None,
            pods: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// The report of a drain that could not start (or be followed): nothing on the node was
    /// drained by this run; `error` says why.
    pub fn unstarted(node: &str, outcome: Outcome, error: String) -> Self {
        DrainReport {
            error: Some(error),
            ..DrainReport::new(node, "manual", "manual", Role::Owner, outcome)
        }
    }
}

/// Longest text kept per pod in the Node's record of a drain.
const RECORDED_TEXT_MAX: usize = 200;
/// Largest record of a drain's pods on its Node, in bytes (every annotation of an object
/// together may take 256 KiB).
pub const RECORD_MAX_BYTES: usize = 64 * 1024;

/// One pod in the Node's record of a drain (`termguard.io/drain-pods`): short keys, so that a
/// node's worth of pods fits in an annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Recorded {
    /// Namespace/name.
    p: String,
    /// Wave.
    w: usize,
    /// How it left, once the eviction or delete was accepted; absent while only planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<PodAction>,
    /// Grace period granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    g: Option<i64>,
    /// Attempts.
    #[serde(default, skip_serializing_if = "is_zero")]
    n: u32,
    /// Milliseconds from the start of the run that saw it go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<u64>,
    /// Not graceful, why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ng: Option<String>,
    /// Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    /// Its result is final (gone, or given up on).
    #[serde(default, skip_serializing_if = "is_false")]
    d: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn clipped(s: &Option<String>, keep: bool) -> Option<String> {
    s.as_ref().filter(|_| keep).map(|s| {
        if s.len() <= RECORDED_TEXT_MAX {
            s.clone()
        } else {
            let mut end = RECORDED_TEXT_MAX;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &s[..end])
        }
    })
}

/// Where one pod of a drain stands.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Planned; nothing known yet.
    Planned,
    /// Its eviction (or delete) was accepted; waiting for it to go.
    Asked,
    /// Its result is final.
    Done,
}

#[derive(Debug, Clone)]
struct Entry {
    result: PodResult,
    stage: Stage,
    /// Recorded by an earlier run of this drain.
    inherited: bool,
}

/// Every pod of one drain and where it stands, across the runs of that drain: the owner keeps
/// it on the Node as it goes ([`crate::cluster::nodes::PODS`]), so that a run taking over an
/// interrupted drain reports the pods the earlier run evicted, not only its own.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: std::sync::Mutex<Vec<Entry>>,
    changed: tokio::sync::Notify,
}

impl Ledger {
    /// A ledger continuing the record `recorded` (the annotation's value) of an earlier run.
    pub fn resume(recorded: Option<&str>) -> Self {
        let ledger = Ledger::default();
        let parsed: Vec<Recorded> = recorded
            .and_then(|r| serde_json::from_str(r).ok())
            .unwrap_or_default();
        if let Ok(mut entries) = ledger.entries.lock() {
            entries.extend(parsed.into_iter().map(|r| Entry {
                stage: match (r.d, r.a) {
                    (true, _) => Stage::Done,
                    (false, Some(_)) => Stage::Asked,
                    (false, None) => Stage::Planned,
                },
                result: PodResult {
                    pod: r.p,
                    wave: r.w,
                    action: r.a.unwrap_or(PodAction::Remained),
                    grace_period_seconds: r.g,
                    attempts: r.n,
                    gone_after_ms: r.t,
                    not_graceful: r.ng,
                    error: r.e,
                },
                inherited: true,
            }));
        }
        ledger
    }

    /// Pods this run plans to drain (kept as they are when already recorded). Not a change
    /// for [`Self::changed`]: the engine writes the plan itself, before it evicts anything.
    pub fn plan<'a>(&self, pods: impl IntoIterator<Item = (&'a str, usize)>) {
        if let Ok(mut entries) = self.entries.lock() {
            for (pod, wave) in pods {
                if !entries.iter().any(|e| e.result.pod == pod) {
                    entries.push(Entry {
                        result: PodResult::planned(pod, wave),
                        stage: Stage::Planned,
                        inherited: false,
                    });
                }
            }
        }
    }

    /// This run's result for a pod: `done` once final, else the eviction was accepted. A pod
    /// an earlier run had evicted and this run found terminating keeps the earlier action.
    pub fn record(&self, r: &PodResult, done: bool) {
        if let Ok(mut entries) = self.entries.lock() {
            let stage = if done { Stage::Done } else { Stage::Asked };
            match entries.iter_mut().find(|e| e.result.pod == r.pod) {
                Some(e) => {
                    let earlier = e.inherited
                        && e.stage != Stage::Planned
                        && r.action == PodAction::AlreadyTerminating
                        && matches!(
                            e.result.action,
                            PodAction::Evicted | PodAction::Deleted | PodAction::DeletedClipped
                        );
                    let mut next = r.clone();
                    if earlier {
                        next.action = e.result.action;
                        next.attempts += e.result.attempts;
                        next.grace_period_seconds =
                            next.grace_period_seconds.or(e.result.grace_period_seconds);
                        next.not_graceful = next.not_graceful.or(e.result.not_graceful.clone());
                    } else {
                        e.inherited = false;
                    }
                    e.result = next;
                    e.stage = stage;
                }
                None => entries.push(Entry {
                    result: r.clone(),
                    stage,
                    inherited: false,
                }),
            }
        }
        self.changed.notify_one();
    }

    /// Resolves when the ledger changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The record for the Node: compact JSON within [`RECORD_MAX_BYTES`] (texts dropped, then
    /// the pods past the limit, when a node has that many).
    pub fn encode(&self) -> String {
        let entries = self.entries.lock().map(|e| e.clone()).unwrap_or_default();
        let compact = |keep_text: bool| -> Vec<Recorded> {
            entries
                .iter()
                .map(|e| Recorded {
                    p: e.result.pod.clone(),
                    w: e.result.wave,
                    a: (e.stage != Stage::Planned).then_some(e.result.action),
                    g: e.result.grace_period_seconds,
                    n: e.result.attempts,
                    t: e.result.gone_after_ms,
                    ng: clipped(&e.result.not_graceful, keep_text),
                    e: clipped(&e.result.error, keep_text),
                    d: e.stage == Stage::Done,
                })
                .collect()
        };
        let full = serde_json::to_string(&compact(true)).unwrap_or_default();
        if full.len() <= RECORD_MAX_BYTES {
            return full;
        }
        let mut lean = compact(false);
        loop {
            let s = serde_json::to_string(&lean).unwrap_or_default();
            if s.len() <= RECORD_MAX_BYTES || lean.is_empty() {
                return s;
            }
            let over = s.len() - RECORD_MAX_BYTES;
            // Drop about enough pods from the end, at least one.
            let per = (s.len() / lean.len()).max(1);
            let drop = over.div_ceil(per).max(1).min(lean.len());
            lean.truncate(lean.len() - drop);
        }
    }

    /// Every pod of the drain, for the report. When `finished` (this run planned and drained),
    /// pods an earlier run recorded that this run did not drain are reported as that run left
    /// them: one whose eviction was accepted with that action, one only planned as gone before
    /// this run looked; those that `skipped` keeps on the node are left out (this run's plan
    /// says why). An unfinished run reports pods it knows nothing about as remaining.
    pub fn results(&self, skipped: &[String], finished: bool) -> Vec<PodResult> {
        let entries = self.entries.lock().map(|e| e.clone()).unwrap_or_default();
        entries
            .into_iter()
            .filter(|e| !(e.inherited && skipped.contains(&e.result.pod)))
            .map(|e| match (e.inherited && finished, e.stage) {
                (true, Stage::Planned) => PodResult {
                    action: PodAction::AlreadyGone,
                    ..e.result
                },
                _ => e.result,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(pod: &str, action: PodAction) -> PodResult {
        PodResult {
            pod: pod.into(),
            wave: 1,
            action,
            grace_period_seconds: Some(30),
            attempts: 1,
            gone_after_ms: Some(10),
            not_graceful: None,
            error: None,
        }
    }

    #[test]
    fn an_ended_phase_reads_back_as_its_outcome() {
        for o in [Outcome::Drained, Outcome::TimedOut, Outcome::Failed] {
            assert_eq!(Outcome::from_phase(o.phase()), Some(o));
        }
        // A refusal is recorded as failed; a drain still running has no outcome.
        assert_eq!(
            Outcome::from_phase(Outcome::Refused.phase()),
            Some(Outcome::Failed)
        );
        assert_eq!(Outcome::from_phase("wave-1"), None);
        assert_eq!(Outcome::from_phase("draining"), None);
    }

    #[test]
    fn a_resumed_ledger_reports_the_earlier_runs_pods() {
        let first = Ledger::default();
        first.plan([("ns/a", 1), ("ns/b", 1), ("ns/c", 1), ("ns/d", 2)]);
        first.record(&result("ns/a", PodAction::Evicted), true);
        first.record(&result("ns/b", PodAction::Evicted), false);
        let record = first.encode();

        let second = Ledger::resume(Some(&record));
        // b was terminating when the second run looked; d is its own.
        second.plan([("ns/b", 1), ("ns/d", 2)]);
        let mut b = result("ns/b", PodAction::AlreadyTerminating);
        b.attempts = 0;
        second.record(&b, true);
        second.record(&result("ns/d", PodAction::Evicted), true);
        let all = second.results(&[], true);
        let of = |p: &str| {
            all.iter()
                .find(|r| r.pod == p)
                .map(|r| (r.action, r.attempts))
        };
        assert_eq!(all.len(), 4, "{all:#?}");
        assert_eq!(of("ns/a"), Some((PodAction::Evicted, 1)));
        assert_eq!(of("ns/b"), Some((PodAction::Evicted, 1)));
        // c: planned by the first run, gone before the second looked.
        assert_eq!(of("ns/c"), Some((PodAction::AlreadyGone, 0)));
        assert_eq!(of("ns/d"), Some((PodAction::Evicted, 1)));
        // Skipped by the second run's plan: not reported as gone.
        assert_eq!(second.results(&["ns/c".into()], true).len(), 3);
        // And a third run still sees all four.
        let third = Ledger::resume(Some(&second.encode()));
        assert_eq!(third.results(&[], true).len(), 4);
    }

    #[test]
    fn the_record_stays_within_its_cap() {
        let ledger = Ledger::default();
        let names: Vec<String> = (0..3000)
            .map(|i| format!("some-namespace/a-fairly-long-pod-name-{i:05}"))
            .collect();
        ledger.plan(names.iter().map(|n| (n.as_str(), 1)));
        let mut r = result(&names[0], PodAction::DeletedClipped);
        r.not_graceful = Some("x".repeat(5000));
        ledger.record(&r, true);
        let s = ledger.encode();
        assert!(s.len() <= RECORD_MAX_BYTES, "{}", s.len());
        let back = Ledger::resume(Some(&s)).results(&[], true);
        assert!(back.len() > 500, "{}", back.len());
        assert_eq!(back[0].action, PodAction::DeletedClipped);

        let small = Ledger::default();
        small.record(&r, true);
        let s = small.encode();
        let back = Ledger::resume(Some(&s)).results(&[], true);
        let kept = back[0].not_graceful.clone().unwrap_or_default();
        assert!(kept.len() <= RECORDED_TEXT_MAX + 3, "{}", kept.len());
    }
}
