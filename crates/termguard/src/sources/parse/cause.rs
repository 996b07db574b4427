//! Why did Auto Scaling end an instance? The `Cause` text of a scaling activity (from
//! `DescribeScalingActivities`, "EC2 Instance Terminate Successful" events and SNS scaling
//! notifications) classified into a [`Cause`].

use crate::notice::{Cause, ScaleInTrigger};

/// Substrings that must all occur in the text, and the cause they mean, in the order tried.
/// Order matters: an AZRebalance termination is followed by the usual "difference between
/// desired and actual capacity" sentences, so it is tested first
/// (`docs/aws-semantics.md#scaling-activity-causes`).
const RULES: [(&[&str], Cause); 10] = [
    (&["balance instances in zones"], Cause::AzRebalance),
    (&["balancing the group's zones"], Cause::AzRebalance),
    (
        &["in response to an instance refresh"],
        Cause::InstanceRefresh,
    ),
    (&["health check"], Cause::HealthCheck),
    (&["in response to a user request"], Cause::TerminateRequest),
    (
        &["monitor alarm", "triggered policy"],
        Cause::ScaleIn(ScaleInTrigger::Policy),
    ),
    (
        &["a user request update of AutoScalingGroup constraints"],
        Cause::ScaleIn(ScaleInTrigger::CapacityChange),
    ),
    // `SetDesiredCapacity` (console, CLI, cluster-autoscaler's scale-down of a whole group).
    (
        &["a user request explicitly set group desired capacity"],
        Cause::ScaleIn(ScaleInTrigger::CapacityChange),
    ),
    // `ExecutePolicy` run by hand.
    (
        &["a user request executed policy"],
        Cause::ScaleIn(ScaleInTrigger::Policy),
    ),
    (
        &["scheduled action"],
        Cause::ScaleIn(ScaleInTrigger::ScheduledAction),
    ),
];

impl Cause {
    /// Classifies the `Cause` text of a scaling activity: substring, case-sensitive, first match
    /// wins (`docs/aws-semantics.md#scaling-activity-causes`).
    pub fn from_activity_cause(text: &str) -> Self {
        RULES
            .iter()
            .find(|(needles, _)| needles.iter().all(|n| text.contains(n)))
            .map_or_else(
                || Self::Unknown(text.to_owned()),
                |(_, cause)| cause.clone(),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn az_rebalance_causes_are_recognised_on_both_sides() {
        let launch = "At 2024-05-14T09:00:00Z availability zones us-east-1a us-east-1b had 0 2 instances respectively. An instance was launched to aid in balancing the group's zones.";
        let terminate = "At 2024-05-14T09:05:00Z instances were launched to balance instances in zones null with other zones resulting in more than desired number of instances in the group.  At 2024-05-14T09:05:10Z an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from 4 to 3.  At 2024-05-14T09:05:10Z instance i-0123456789abcdef0 was selected for termination.";
        assert_eq!(Cause::from_activity_cause(launch), Cause::AzRebalance);
        assert_eq!(Cause::from_activity_cause(terminate), Cause::AzRebalance);
    }

    #[test]
    fn scaling_activity_causes_are_classified_as_the_spec_lists() {
        let cases = [
            ("At 2024-05-14T09:11:58Z a monitor alarm Low in state ALARM triggered policy cpu changing the desired capacity from 3 to 2.  At 2024-05-14T09:12:02Z an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from 3 to 2.", Cause::ScaleIn(ScaleInTrigger::Policy)),
            ("At 2024-05-14T09:11:58Z a user request update of AutoScalingGroup constraints to min: 0, max: 4, desired: 0 changing the desired capacity from 1 to 0.", Cause::ScaleIn(ScaleInTrigger::CapacityChange)),
            ("At 2024-05-14T09:11:58Z a user request explicitly set group desired capacity changing the desired capacity from 6 to 5.  At 2024-05-14T09:11:59Z an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from 6 to 5.  At 2024-05-14T09:11:59Z instance i-0123456789abcdef0 was selected for termination.", Cause::ScaleIn(ScaleInTrigger::CapacityChange)),
            ("At 2024-05-14T09:11:58Z a user request executed policy scale-in changing the desired capacity from 6 to 5.", Cause::ScaleIn(ScaleInTrigger::Policy)),
            ("At 2024-05-14T09:11:58Z a scheduled action update of AutoScalingGroup constraints to min: 0, max: 4, desired: 0 changing the desired capacity from 1 to 0.", Cause::ScaleIn(ScaleInTrigger::ScheduledAction)),
            ("At 2024-05-14T09:11:58Z instance i-0123456789abcdef0 was taken out of service in response to a user request, shrinking the capacity from 2 to 1.", Cause::TerminateRequest),
            ("At 2024-05-14T09:11:58Z an instance was taken out of service in response to an instance refresh.  At 2024-05-14T09:11:58Z instance i-0123456789abcdef0 was selected for termination.", Cause::InstanceRefresh),
            ("At 2024-05-14T09:11:58Z an instance was taken out of service in response to an EC2 health check indicating it has been terminated or stopped.", Cause::HealthCheck),
            ("At 2024-05-14T09:11:58Z an instance was taken out of service in response to an ELB system health check failure.", Cause::HealthCheck),
        ];
        for (text, want) in cases {
            assert_eq!(Cause::from_activity_cause(text), want, "{text}");
        }
    }

    #[test]
    fn unrecognised_cause_text_is_kept_verbatim() {
        let text = "At 2024-05-14T09:11:58Z something new happened.";
        let cause = Cause::from_activity_cause(text);
        assert_eq!(cause, Cause::Unknown(text.into()));
        assert_eq!(cause.label(), "unknown");
    }
}
