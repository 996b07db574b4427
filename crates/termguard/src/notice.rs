//! The one normalized type every notice source produces.
//!
//! A [`Notice`] says which instance is going away, why (where known), by when, and — for
//! Auto Scaling lifecycle actions — which hook to heartbeat and complete. It holds no I/O
//! types: the queue source pairs it with its own ack handle. These are the domain types;
//! reading AWS's wire values into them is the job of `sources::parse`.
//! The AWS facts behind them are in `docs/aws-semantics.md` (each with its AWS source), the
//! message shapes in `tests/data/events/README.md`.

use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};

/// `HeartbeatTimeout` a lifecycle hook gets when none was set (`docs/aws-semantics.md#heartbeats`).
pub const DEFAULT_HEARTBEAT_TIMEOUT: SignedDuration = SignedDuration::from_secs(3600);

/// Warning period of a Spot interruption before the action happens: ≈ event time + 2 min
/// (`docs/aws-semantics.md#spot-interruption-warning`).
pub const SPOT_WARNING: SignedDuration = SignedDuration::from_secs(120);

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wraps the value exactly as AWS wrote it.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The value as AWS wrote it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// Auto Scaling group name (`AutoScalingGroupName`).
    GroupName
);
string_newtype!(
    /// Lifecycle hook name (`LifecycleHookName`, 1–255 chars of `[A-Za-z0-9\-_\/]`).
    HookName
);
string_newtype!(
    /// Lifecycle action token (`LifecycleActionToken`, a 36-char UUID); keys the work, not the instance id.
    LifecycleToken
);
string_newtype!(
    /// Id the producer stamped on the event: EventBridge `id` or Auto Scaling `RequestId`.
    EventId
);
string_newtype!(
    /// SQS message id; assigned by the queue and attached by the source, never by parsing.
    MessageId
);

/// An EC2 instance id such as `i-0123456789abcdef0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// The id as EC2 wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string that is not an EC2 instance id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an EC2 instance id")]
pub struct InvalidInstanceId(pub String);

impl FromStr for InstanceId {
    type Err = InvalidInstanceId;

    /// Accepts `i-` plus ASCII alphanumerics, at most 19 chars in all (the API's `InstanceId`
    /// is 1–19 chars: `docs/aws-semantics.md#lifecycle-api-calls`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() <= 19
            && s.strip_prefix("i-").is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidInstanceId(s.to_owned()))
        }
    }
}

/// What a notice announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeKind {
    /// An Auto Scaling termination lifecycle action: the instance waits in `Terminating:Wait`.
    LifecycleTerminate,
    /// An Auto Scaling launch lifecycle action: the instance waits in `Pending:Wait`.
    LifecycleLaunch,
    /// EC2 reclaims a Spot instance after a two-minute warning.
    SpotInterruption {
        /// What EC2 will do to the instance.
        action: SpotAction,
    },
    /// EC2 says the Spot instance is at elevated risk of interruption; no deadline.
    RebalanceRecommendation,
    /// AWS Health announced a scheduled change (stop, retirement, reboot) for the instance.
    ScheduledMaintenance {
        /// `detail.eventTypeCode`, e.g. `AWS_EC2_INSTANCE_STOP_SCHEDULED`.
        event_type_code: String,
        /// End of the maintenance window, when AWS gave one.
        window_end: Option<Timestamp>,
        /// `detail.statusCode` is `closed`: the change is over (or was cancelled); an update of
        /// an event already drained for, not a new reason to drain.
        closed: bool,
    },
    /// The instance changed EC2 state.
    StateChange {
        /// The state it entered.
        state: InstanceState,
    },
    /// An Auto Scaling test notification: acknowledge and drop.
    Test,
}

impl NoticeKind {
    /// Metric/log label (the kinds listed in `docs/operations.md#metrics`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::LifecycleTerminate => "lifecycle-terminate",
            Self::LifecycleLaunch => "lifecycle-launch",
            Self::SpotInterruption { .. } => "spot-interruption",
            Self::RebalanceRecommendation => "rebalance-recommendation",
            Self::ScheduledMaintenance { .. } => "scheduled-maintenance",
            Self::StateChange { .. } => "state-change",
            Self::Test => "test",
        }
    }

    /// Whether there is work to do. Test notifications and state changes to `pending`/`running`
    /// are well-formed but not actionable (events README: acknowledge and count them).
    pub fn is_actionable(&self) -> bool {
        match self {
            Self::Test => false,
            Self::StateChange { state } => state.is_going_away(),
            _ => true,
        }
    }
}

/// `detail.instance-action` of a Spot interruption warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpotAction {
    /// The instance will be terminated.
    Terminate,
    /// The instance will be stopped.
    Stop,
    /// The instance will be hibernated; hibernation starts at once
    /// (`docs/aws-semantics.md#spot-interruption-warning`).
    Hibernate,
    /// A value AWS added after this was written.
    Unknown(String),
}

/// EC2 instance state from a state-change notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    /// `pending`
    Pending,
    /// `running`
    Running,
    /// `stopping`
    Stopping,
    /// `stopped`
    Stopped,
    /// `shutting-down`
    ShuttingDown,
    /// `terminated`
    Terminated,
    /// A value AWS added after this was written.
    Unknown(String),
}

impl InstanceState {
    /// The states NTH and Karpenter act on: the node is leaving or gone (events README).
    pub fn is_going_away(&self) -> bool {
        matches!(
            self,
            Self::Stopping | Self::Stopped | Self::ShuttingDown | Self::Terminated
        )
    }
}

/// Why the instance is going away. Scaling-activity text is classified by
/// `Cause::from_activity_cause` (in `sources::parse::cause`, with the other AWS text parsers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The group evened out its Availability Zones (`docs/aws-semantics.md#az-rebalancing`; the
    /// incident `termguard lab` replays).
    AzRebalance,
    /// The group's desired capacity went down.
    ScaleIn(ScaleInTrigger),
    /// `TerminateInstanceInAutoScalingGroup` ("in response to a user request"): cluster-autoscaler, operators.
    TerminateRequest,
    /// An instance refresh replaced the instance.
    InstanceRefresh,
    /// An EC2 or ELB health check failed and the group replaces the instance.
    HealthCheck,
    /// Scale-in returns the instance to the group's warm pool (`Destination`=`WarmPool`).
    WarmPoolReturn,
    /// An instance refresh replaces the root volume; the instance comes back (`Action`=`ReplaceRootVolume`).
    ReplaceRootVolume,
    /// EC2 reclaims Spot capacity.
    SpotInterruption,
    /// EC2 flagged elevated Spot interruption risk.
    RebalanceRecommendation,
    /// AWS scheduled maintenance (AWS Health `scheduledChange`).
    Maintenance,
    /// A cause text no rule recognises, kept verbatim.
    Unknown(String),
}

/// What lowered the desired capacity in a [`Cause::ScaleIn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleInTrigger {
    /// A scaling policy triggered by a CloudWatch alarm.
    Policy,
    /// Someone changed min/max/desired by hand.
    CapacityChange,
    /// A scheduled action changed the group's constraints.
    ScheduledAction,
}

impl Cause {
    /// Metric/log label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::AzRebalance => "az-rebalance",
            Self::ScaleIn(ScaleInTrigger::Policy) => "scale-in-policy",
            Self::ScaleIn(ScaleInTrigger::CapacityChange) => "scale-in-capacity-change",
            Self::ScaleIn(ScaleInTrigger::ScheduledAction) => "scale-in-scheduled-action",
            Self::TerminateRequest => "terminate-request",
            Self::InstanceRefresh => "instance-refresh",
            Self::HealthCheck => "health-check",
            Self::WarmPoolReturn => "warm-pool-return",
            Self::ReplaceRootVolume => "replace-root-volume",
            Self::SpotInterruption => "spot-interruption",
            Self::RebalanceRecommendation => "rebalance-recommendation",
            Self::Maintenance => "maintenance",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// The instant by which the instance will be gone, and what that estimate rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// When the instance will be gone (or the hook times out).
    pub at: Timestamp,
    /// What `at` was derived from.
    pub basis: DeadlineBasis,
}

/// How a [`Deadline`] was derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineBasis {
    /// Event time + [`DEFAULT_HEARTBEAT_TIMEOUT`]: the message does not carry the hook's own
    /// timeout; refine it from `DescribeLifecycleHooks` and extend it with heartbeats
    /// (`docs/aws-semantics.md#heartbeats`).
    AssumedHeartbeatTimeout,
    /// Event time + [`SPOT_WARNING`].
    SpotWarning,
    /// Start of the AWS Health maintenance window (`detail.startTime`).
    MaintenanceWindowStart,
    /// Already happening at the event time (shutting down, stopping, hibernating, gone).
    Immediate,
}

/// Where an instance comes from or goes to in a lifecycle action (`Origin`/`Destination`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `EC2`: outside the group (launched fresh, or terminated).
    Ec2,
    /// `AutoScalingGroup`: in service in the group.
    AutoScalingGroup,
    /// `WarmPool`: the group's warm pool (stopped, hibernated or running).
    WarmPool,
    /// A value AWS added after this was written.
    Unknown(String),
}

/// `LifecycleTransition` of a lifecycle action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleTransition {
    /// `autoscaling:EC2_INSTANCE_LAUNCHING`
    Launching,
    /// `autoscaling:EC2_INSTANCE_TERMINATING`
    Terminating,
}

/// The coordinates needed to heartbeat and complete a lifecycle action
/// (`docs/aws-semantics.md#lifecycle-api-calls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleHook {
    /// The Auto Scaling group.
    pub group: GroupName,
    /// The hook that paused the instance.
    pub hook_name: HookName,
    /// The token of this action.
    pub token: LifecycleToken,
    /// Launching or terminating.
    pub transition: LifecycleTransition,
    /// `Origin`, when the message carries it.
    pub origin: Option<Location>,
    /// `Destination`, when the message carries it.
    pub destination: Option<Location>,
    /// `Action`, e.g. `ReplaceRootVolume`, when the message carries it.
    pub action: Option<String>,
    /// `NotificationMetadata`: the hook owner's opaque string.
    pub metadata: Option<String>,
}

impl LifecycleHook {
    /// Whether the instance returns after this action (warm pool, root volume replacement), so its
    /// node is drained but not gone for good (events README).
    pub fn instance_returns(&self) -> bool {
        self.destination == Some(Location::WarmPool)
            || self.action.as_deref() == Some("ReplaceRootVolume")
    }
}

/// Which message format a notice was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeSource {
    /// An EventBridge event delivered to the queue as is.
    EventBridge,
    /// An EventBridge event wrapped in an SNS notification.
    SnsEventBridge,
    /// An Auto Scaling lifecycle notification sent straight to the queue (or SNS raw delivery).
    AutoScaling,
    /// An Auto Scaling lifecycle notification wrapped in an SNS notification.
    SnsAutoScaling,
    /// The instance metadata service (node mode).
    Imds,
}

/// One normalized termination (or launch) notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What is announced.
    pub kind: NoticeKind,
    /// The instance concerned; `None` only for [`NoticeKind::Test`].
    pub instance: Option<InstanceId>,
    /// Why, when the message says; lifecycle actions learn it later from the scaling activity.
    pub cause: Option<Cause>,
    /// When AWS emitted the event (for lifecycle actions: about when the wait started).
    pub event_time: Timestamp,
    /// By when the instance will be gone, when that can be known.
    pub deadline: Option<Deadline>,
    /// Lifecycle hook coordinates, for lifecycle actions.
    pub hook: Option<LifecycleHook>,
    /// Which message format this came from.
    pub source: NoticeSource,
    /// The producer's id for the event, for logs and dedupe across redeliveries.
    pub event_id: Option<EventId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_accepts_short_and_long_forms_and_rejects_others() {
        assert!("i-0123456789abcdef0".parse::<InstanceId>().is_ok());
        assert!("i-1a2b3c4d".parse::<InstanceId>().is_ok());
        for bad in [
            "",
            "i-",
            "0123456789abcdef0",
            "i-0123456789abcdef01",
            "i-01 23",
            "h-0123",
        ] {
            assert_eq!(
                bad.parse::<InstanceId>(),
                Err(InvalidInstanceId(bad.into()))
            );
        }
    }

    #[test]
    fn only_leaving_states_and_real_work_are_actionable() {
        assert!(!NoticeKind::Test.is_actionable());
        assert!(NoticeKind::LifecycleTerminate.is_actionable());
        use InstanceState::*;
        for (state, want) in [
            (Running, false),
            (Pending, false),
            (Stopping, true),
            (ShuttingDown, true),
            (Terminated, true),
            (Stopped, true),
            (Unknown("rebooting".into()), false),
        ] {
            let kind = NoticeKind::StateChange {
                state: state.clone(),
            };
            assert_eq!(kind.is_actionable(), want, "{state:?}");
        }
    }
}
