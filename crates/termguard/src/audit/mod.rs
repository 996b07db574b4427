//! `termguard audit`: the nodes that can die undrained, found before they do
//! (`docs/audit.md`).
//!
//! Three steps, kept apart so that the rules are pure functions of what was read:
//! * [`collect`] reads the account (Auto Scaling groups, hooks, scaling activities, EventBridge
//!   rules, the queue) with read-only calls into [`facts`];
//! * [`rules`] turns the facts into [`Finding`]s, and [`history`] counts each group's past
//!   terminations by cause and how many had no chance to drain;
//! * [`output`] prints them as a table, JSON or SARIF.

pub mod cluster;
pub mod collect;
pub mod facts;
pub mod history;
pub mod output;
pub mod pattern;
pub mod rules;

use serde::Serialize;

/// How bad a finding is. Ordered: `Critical` is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing is at risk.
    Info,
    /// A weakness that needs another failure to hurt.
    Low,
    /// Drains can be cut short or delayed.
    Medium,
    /// Nodes can go without a drain, or actions wait out their timeout.
    High,
    /// Nodes are going without a drain in normal operation (the incident).
    Critical,
}

impl Severity {
    /// The lower-case name, as printed and as `--fail-on` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One hazard: what, where, why it matters and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier of the rule (`docs/audit.md` lists them).
    pub id: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The resource: `asg/NAME`, `queue/NAME`, `rule/NAME`.
    pub resource: String,
    /// Why it matters, in one sentence.
    pub message: String,
    /// The fix: an AWS CLI call, a template change or a manifest patch.
    pub fix: String,
}

/// Everything the audit found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The groups looked at, and why each was.
    pub groups: Vec<facts::Scoped>,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// Per group, its past terminations.
    pub history: Vec<history::GroupHistory>,
    /// What could not be read (the audit goes on without it, and says so).
    pub unreadable: Vec<String>,
}

impl Report {
    /// Sorts findings most severe first, then by rule and resource (a stable order for CI).
    pub fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.id.cmp(b.id))
                .then_with(|| a.resource.cmp(&b.resource))
        });
    }

    /// The most severe finding's severity.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}
