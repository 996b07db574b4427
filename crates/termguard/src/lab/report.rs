//! The lab's results: one entry per run, a side-by-side table, and JSON.

use serde::Serialize;
use std::collections::BTreeMap;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `unprotected`, `per-zone-groups` or `protected`.
    pub mode: String,
    /// Worker threads blocked on a dead connection at the end.
    pub stalled_worker_threads: usize,
    /// Jobs waiting in the queue at the end.
    pub jobs_waiting: u64,
    /// Jobs that failed.
    pub failed_jobs: u64,
    /// Jobs completed during the run.
    pub completed_jobs: u64,
    /// Workload pods (not DaemonSet or mirror pods) killed without a graceful stop.
    pub ungraceful_pod_kills: usize,
    /// Their names.
    pub ungraceful_pods: Vec<String>,
    /// Drain time of the node the rebalance took, in seconds (0: nobody drained it).
    pub drain_seconds: f64,
    /// How long the group waited for the lifecycle hook, in seconds.
    pub group_waited_seconds: f64,
    /// Whether the lifecycle action was completed (before the hook's timeout).
    pub lifecycle_completed: bool,
    /// Heartbeats the group received.
    pub heartbeats: u32,
    /// Auto Scaling groups needed.
    pub groups: usize,
    /// In-service instances per zone at the end.
    pub zones_at_end: BTreeMap<String, usize>,
    /// Whether an AZ rebalance happened.
    pub rebalanced: bool,
    /// What happened, in order: (seconds, event).
    pub timeline: Vec<(f64, String)>,
}

/// The whole lab run.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    /// Seed of the run.
    pub seed: u64,
    /// The client timeout modelled, if any.
    pub client_timeout_seconds: Option<f64>,
    /// One entry per mode.
    pub runs: Vec<RunReport>,
}

impl LabReport {
    /// The side-by-side table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, Vec<String>)> = vec![
            (
                "stalled worker threads".into(),
                self.runs
                    .iter()
                    .map(|r| r.stalled_worker_threads.to_string())
                    .collect(),
            ),
            (
                "jobs waiting at the end".into(),
                self.runs
                    .iter()
                    .map(|r| r.jobs_waiting.to_string())
                    .collect(),
            ),
            (
                "failed jobs".into(),
                self.runs
                    .iter()
                    .map(|r| r.failed_jobs.to_string())
                    .collect(),
            ),
            (
                "pods killed without graceful stop".into(),
                self.runs
                    .iter()
                    .map(|r| r.ungraceful_pod_kills.to_string())
                    .collect(),
            ),
            (
                "drain time".into(),
                self.runs
                    .iter()
                    .map(|r| {
                        if r.drain_seconds > 0.0 {
                            format!("{:.1}s", r.drain_seconds)
                        } else {
                            "-".into()
                        }
                    })
                    .collect(),
            ),
            (
                "time the group waited".into(),
                self.runs
                    .iter()
                    .map(|r| {
                        if r.group_waited_seconds > 0.0 {
                            format!("{:.1}s", r.group_waited_seconds)
                        } else {
                            "-".into()
                        }
                    })
                    .collect(),
            ),
            (
                "lifecycle action completed".into(),
                self.runs
                    .iter()
                    .map(|r| {
                        if r.lifecycle_completed {
                            "yes".into()
                        } else {
                            "-".into()
                        }
                    })
                    .collect(),
            ),
            (
                "Auto Scaling groups".into(),
                self.runs.iter().map(|r| r.groups.to_string()).collect(),
            ),
            (
                "instances per zone at end".into(),
                self.runs
                    .iter()
                    .map(|r| {
                        r.zones_at_end
                            .values()
                            .map(usize::to_string)
                            .collect::<Vec<_>>()
                            .join("/")
                    })
                    .collect(),
            ),
        ];
        let header: Vec<String> = self.runs.iter().map(|r| r.mode.clone()).collect();
        rows.insert(0, (String::new(), header));
        let w0 = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let ncols = self.runs.len();
        let widths: Vec<usize> = (0..ncols)
            .map(|c| {
                rows.iter()
                    .map(|(_, v)| v.get(c).map_or(0, String::len))
                    .max()
                    .unwrap_or(0)
                    .max(8)
            })
            .collect();
        let mut out = String::new();
        for (k, vals) in rows {
            out.push_str(&format!("  {k:<w0$}"));
            for (c, v) in vals.iter().enumerate() {
                out.push_str(&format!("  {v:>w$}", w = widths[c]));
            }
            out.push('\n');
        }
        out
    }
}
