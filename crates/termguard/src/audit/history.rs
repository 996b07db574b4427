//! A group's past terminations, from its scaling activities (`DescribeScalingActivities`; AWS
//! keeps six weeks of them): how many, by cause, and how many had no chance to drain.
//!
//! A scaling activity does not say whether its termination waited for a lifecycle hook: once
//! it has ended, an activity held by a hook looks like any other. The history therefore
//! judges by the group's hooks as they are now: with no termination hook, every termination
//! it lists went undrained (`docs/audit.md#history`).

use super::facts::{Activity, Group};
use crate::notice::Cause;
use jiff::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// How far back AWS keeps scaling activities: six weeks.
pub const KEPT_DAYS: i64 = 42;

/// One past termination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Termination {
    /// The instance.
    pub instance: String,
    /// Its node, when the cluster still knows it.
    pub node: Option<String>,
    /// When the activity started.
    pub at: Timestamp,
    /// Why, as [`cause_name`] names it.
    pub cause: String,
    /// True when it had no chance to drain (the group has no termination hook).
    pub undrained: bool,
}

/// A group's past terminations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupHistory {
    /// The group.
    pub group: String,
    /// The days looked back.
    pub days: i64,
    /// Whether the group has a termination hook now (what "undrained" is judged by).
    pub hooked: bool,
    /// The terminations, newest first.
    pub terminations: Vec<Termination>,
    /// How many per cause.
    pub by_cause: BTreeMap<String, usize>,
    /// How many went undrained.
    pub undrained: usize,
}

/// The name a cause goes by in the history (AWS's own name where it has one).
pub fn cause_name(text: &str) -> String {
    let name = match Cause::from_activity_cause(text) {
        Cause::AzRebalance => "AZRebalance",
        Cause::ScaleIn(_) => "scale-in",
        Cause::TerminateRequest => "terminate request",
        Cause::InstanceRefresh => "instance refresh",
        Cause::HealthCheck => "health check",
        Cause::SpotInterruption => "Spot",
        Cause::WarmPoolReturn => "warm pool",
        Cause::ReplaceRootVolume => "root volume replacement",
        Cause::RebalanceRecommendation | Cause::Maintenance => "other",
        // AWS documents no text for these; the phrases are the ones its features are named by.
        Cause::Unknown(t) if t.contains("instance lifetime") => "max lifetime",
        Cause::Unknown(t) if t.contains("Capacity Rebalanc") || t.contains("capacity rebalanc") => {
            "capacity rebalance"
        }
        Cause::Unknown(t) if t.contains("Spot") => "Spot",
        Cause::Unknown(_) => "other",
    };
    name.to_string()
}

/// The group's terminations of the last [`KEPT_DAYS`] days, from its activities; `nodes` names
/// the instances the cluster still has a node for.
pub fn of(
    group: &Group,
    activities: &[Activity],
    nodes: &HashMap<String, String>,
    now: Timestamp,
) -> GroupHistory {
    let since = now
        .checked_sub(jiff::SignedDuration::from_hours(24 * KEPT_DAYS))
        .unwrap_or(now);
    let hooked = group.termination_hooks().next().is_some();
    let mut terminations: Vec<Termination> = activities
        .iter()
        .filter(|a| a.start >= since && !matches!(a.status.as_str(), "Failed" | "Cancelled"))
        .filter_map(|a| {
            let instance = a.terminated_instance()?;
            Some(Termination {
                instance: instance.to_string(),
                node: nodes.get(instance).cloned(),
                at: a.start,
                cause: cause_name(&a.cause),
                undrained: !hooked,
            })
        })
        .collect();
    terminations.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.instance.cmp(&b.instance)));
    let mut by_cause = BTreeMap::new();
    for t in &terminations {
        *by_cause.entry(t.cause.clone()).or_insert(0) += 1;
    }
    GroupHistory {
        group: group.name.clone(),
        days: KEPT_DAYS,
        hooked,
        undrained: terminations.iter().filter(|t| t.undrained).count(),
        terminations,
        by_cause,
    }
}

impl GroupHistory {
    /// "14 terminations in 42 days, 5 by AZRebalance, 5 undrained."
    pub fn summary(&self) -> String {
        let n = self.terminations.len();
        let mut parts = vec![format!(
            "{n} termination{} in {} days",
            if n == 1 { "" } else { "s" },
            self.days
        )];
        let mut causes: Vec<(&String, &usize)> = self.by_cause.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        parts.extend(causes.iter().map(|(c, k)| format!("{k} by {c}")));
        parts.push(format!("{} undrained", self.undrained));
        format!("{}: {}.", self.group, parts.join(", "))
    }

    /// One line per undrained termination: "i-0abc… (node ip-10-0-1-10.ec2.internal) terminated
    /// by AZRebalance on 2026-11-03, no lifecycle hook: undrained."
    pub fn undrained_lines(&self) -> Vec<String> {
        self.terminations
            .iter()
            .filter(|t| t.undrained)
            .map(|t| {
                let node = t
                    .node
                    .as_ref()
                    .map(|n| format!(" (node {n})"))
                    .unwrap_or_default();
                format!(
                    "{}{node} terminated by {} on {}, no lifecycle hook: undrained.",
                    t.instance,
                    t.cause,
                    t.at.strftime("%Y-%m-%d")
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::facts::{Hook, TERMINATING};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn terminating(instance: &str, start: &str, cause: &str) -> Activity {
        Activity {
            start: at(start),
            description: format!("Terminating EC2 instance: {instance}"),
            cause: cause.into(),
            status: "Successful".into(),
        }
    }

    const REBALANCE: &str = "At 2026-11-03T10:00:00Z instances were launched to balance instances in zones us-east-1c with other zones resulting in more than desired number of instances in the group.  At 2026-11-03T10:00:05Z an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from 4 to 3.  At 2026-11-03T10:00:05Z instance i-0abc was selected for termination.";
    const SCALE_IN: &str = "At 2026-11-20T08:00:00Z a user request explicitly set group desired capacity changing the desired capacity from 4 to 3.  At 2026-11-20T08:00:01Z an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from 4 to 3.  At 2026-11-20T08:00:01Z instance i-0def was selected for termination.";

    fn activities() -> Vec<Activity> {
        vec![
            terminating("i-0abc", "2026-11-03T10:00:05Z", REBALANCE),
            terminating("i-0def", "2026-11-20T08:00:01Z", SCALE_IN),
            // A launch, a failed termination and one older than AWS keeps: not counted.
            Activity {
                start: at("2026-11-03T10:00:00Z"),
                description: "Launching a new EC2 instance: i-0new".into(),
                cause: REBALANCE.into(),
                status: "Successful".into(),
            },
            Activity {
                status: "Failed".into(),
                ..terminating("i-0bad", "2026-11-21T08:00:00Z", SCALE_IN)
            },
            terminating("i-0old", "2026-09-01T08:00:00Z", SCALE_IN),
        ]
    }

    #[test]
    fn without_a_termination_hook_every_termination_went_undrained() {
        let g = Group {
            name: "workers".into(),
            ..Default::default()
        };
        let nodes = HashMap::from([(
            "i-0abc".to_string(),
            "ip-10-0-1-10.ec2.internal".to_string(),
        )]);
        let h = of(&g, &activities(), &nodes, at("2026-12-01T00:00:00Z"));
        assert_eq!(h.terminations.len(), 2, "{h:#?}");
        assert_eq!(h.undrained, 2);
        assert_eq!(
            h.summary(),
            "workers: 2 terminations in 42 days, 1 by AZRebalance, 1 by scale-in, 2 undrained."
        );
        assert_eq!(
            h.undrained_lines(),
            [
                "i-0def terminated by scale-in on 2026-11-20, no lifecycle hook: undrained.",
                "i-0abc (node ip-10-0-1-10.ec2.internal) terminated by AZRebalance on 2026-11-03, no lifecycle hook: undrained.",
            ]
        );
    }

    #[test]
    fn with_a_termination_hook_they_had_their_chance() {
        let hook = Hook {
            name: "h".into(),
            transition: TERMINATING.into(),
            ..Default::default()
        };
        let g = Group {
            name: "workers".into(),
            hooks: vec![hook],
            ..Default::default()
        };
        let h = of(
            &g,
            &activities(),
            &HashMap::new(),
            at("2026-12-01T00:00:00Z"),
        );
        assert_eq!(h.terminations.len(), 2);
        assert_eq!(h.undrained, 0);
        assert!(h.undrained_lines().is_empty());
    }

    #[test]
    fn causes_go_by_the_names_aws_features_have() {
        assert_eq!(cause_name(REBALANCE), "AZRebalance");
        assert_eq!(cause_name(SCALE_IN), "scale-in");
        assert_eq!(cause_name("At 2026-11-20T08:00:00Z an instance was taken out of service in response to an instance refresh."), "instance refresh");
        assert_eq!(cause_name("At 2026-11-20T08:00:00Z an instance was taken out of service in response to an EC2 health check indicating it has been terminated or stopped."), "health check");
        assert_eq!(cause_name("At 2026-11-20T08:00:00Z an instance was taken out of service in response to a maximum instance lifetime."), "max lifetime");
        assert_eq!(cause_name("something new"), "other");
    }
}
