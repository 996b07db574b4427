//! What the audit read, as plain data: the rules are pure functions of it.

use serde::Serialize;

/// The lifecycle transition of a termination hook.
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// Why a group is in the audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Named with `--group`.
    Named,
    /// One of its tags names the cluster.
    Tagged,
    /// Its instances are nodes of the cluster (through their providerIDs).
    HasNodes,
}

/// A group in the audit, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scoped {
    /// The group's name.
    pub group: String,
    /// Why it is looked at (every reason that applies).
    pub reasons: Vec<Reason>,
}

/// A lifecycle hook as `DescribeLifecycleHooks` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hook {
    /// `LifecycleHookName`.
    pub name: String,
    /// `LifecycleTransition`.
    pub transition: String,
    /// `HeartbeatTimeout`, seconds.
    pub heartbeat_timeout: i64,
    /// `GlobalTimeout`, seconds.
    pub global_timeout: i64,
    /// `DefaultResult`: `CONTINUE` or `ABANDON`.
    pub default_result: String,
    /// `NotificationTargetARN`, when the hook sends to a target of its own.
    pub target: Option<String>,
}

/// An Auto Scaling group as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Group {
    /// `AutoScalingGroupName`.
    pub name: String,
    /// `AutoScalingGroupARN`.
    pub arn: String,
    /// `AvailabilityZones`.
    pub zones: Vec<String>,
    /// `SuspendedProcesses` (process names).
    pub suspended: Vec<String>,
    /// Lifecycle hooks of every transition.
    pub hooks: Vec<Hook>,
    /// Tags, key and value.
    pub tags: Vec<(String, String)>,
    /// `CapacityRebalance`.
    pub capacity_rebalance: bool,
    /// `MaxInstanceLifetime`, seconds (0 or absent: none).
    pub max_instance_lifetime: Option<i64>,
    /// A warm pool is configured.
    pub warm_pool: bool,
    /// A `MixedInstancesPolicy` is set.
    pub mixed_instances: bool,
    /// Some capacity is Spot (a mixed-instances policy whose on-demand share is under 100 %).
    pub spot: bool,
    /// The instance ids in the group now.
    pub instances: Vec<String>,
    /// `InstanceLifecyclePolicy.RetentionTriggers.TerminateHookAbandon` is `retain`: an
    /// instance whose termination hook is abandoned is kept, not terminated.
    pub retains_on_abandon: bool,
    /// Some of its instances are nodes of the cluster.
    pub has_cluster_nodes: bool,
}

impl Group {
    /// The hooks on instance termination.
    pub fn termination_hooks(&self) -> impl Iterator<Item = &Hook> {
        self.hooks.iter().filter(|h| h.transition == TERMINATING)
    }

    /// Whether a process (`AZRebalance`, `Terminate`, …) is suspended.
    pub fn is_suspended(&self, process: &str) -> bool {
        self.suspended.iter().any(|p| p == process)
    }
}

/// An EventBridge rule on the default bus, with its targets' ARNs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// `Name`.
    pub name: String,
    /// `ARN`.
    pub arn: String,
    /// `State`: only `ENABLED` rules deliver.
    pub enabled: bool,
    /// `EventPattern`, parsed (`None` for a scheduled rule or an unreadable pattern).
    pub pattern: Option<serde_json::Value>,
    /// Target ARNs.
    pub targets: Vec<String>,
}

/// The SQS queue termguard reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Queue {
    /// `QueueUrl`.
    pub url: String,
    /// `QueueArn`.
    pub arn: String,
    /// `Policy`, parsed.
    pub policy: Option<serde_json::Value>,
    /// From `RedrivePolicy`: the dead-letter queue's ARN and `maxReceiveCount`.
    pub dead_letter: Option<(String, i64)>,
    /// `ApproximateNumberOfMessagesNotVisible` at the last look: messages received and not
    /// yet deleted (termguard keeps a notice's message in flight until its drain ends).
    pub in_flight: Option<i64>,
    /// `ApproximateNumberOfMessages` when messages were waiting and none was in flight at two
    /// looks [`BACKLOG_RECHECK`] apart: nobody receives from the queue.
    pub unreceived: Option<i64>,
}

/// How long the audit waits before it looks at a queue's backlog a second time. A consumer
/// long-polls without a pause, so a message that waits this long with nothing in flight has
/// no consumer.
pub const BACKLOG_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The termguard replicas the cluster runs for a queue, as the audit found them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replicas {
    /// Running, Ready pods whose termguard container reads the queue.
    pub reading: Vec<String>,
    /// termguard pods that do not: not ready, or reading another queue (`ns/name: why`).
    pub others: Vec<String>,
}

/// The event routing of the account and region.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routing {
    /// Rules of the default event bus.
    pub rules: Vec<Rule>,
    /// The queue termguard reads, when `--queue-url` names it.
    pub queue: Option<Queue>,
}

/// One scaling activity, as the history needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// `StartTime`.
    pub start: jiff::Timestamp,
    /// `Description`: `Terminating EC2 instance: i-…` for a termination.
    pub description: String,
    /// `Cause`.
    pub cause: String,
    /// `StatusCode`.
    pub status: String,
}

impl Activity {
    /// The instance a termination activity terminates.
    pub fn terminated_instance(&self) -> Option<&str> {
        self.description
            .strip_prefix("Terminating EC2 instance: ")
            .map(|rest| rest.split_whitespace().next().unwrap_or(rest))
            .filter(|id| id.starts_with("i-"))
    }
}
