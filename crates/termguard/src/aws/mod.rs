//! The AWS side, behind small traits so the handler runs the same against the SDK (queue mode)
//! and against the lab's in-process Auto Scaling simulation.
//!
//! * [`Lifecycle`] — heartbeats and completion of lifecycle actions, and the hook's timeouts
//!   (`docs/aws-semantics.md#lifecycle-api-calls`, `docs/aws-semantics.md#heartbeats`,
//!   `docs/aws-semantics.md#global-timeout`).
//! * [`Activities`] — why an instance is going: the scaling activity's cause
//!   (`docs/aws-semantics.md#scaling-activity-causes`).
//! * [`Groups`] — whether a group is one this cluster manages (the tag check).

pub mod activity;
pub mod groups;
pub mod lifecycle;
pub mod sdk;

use crate::notice::{Cause, GroupName, HookName, InstanceId, LifecycleToken};
use futures::future::BoxFuture;
use std::time::Duration;

/// The hook's timeouts as `DescribeLifecycleHooks` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookTimeouts {
    /// `HeartbeatTimeout`: a heartbeat restarts this clock.
    pub heartbeat: Duration,
    /// `GlobalTimeout`: the longest the instance can wait, heartbeats included.
    pub global: Duration,
}

impl HookTimeouts {
    /// What to assume when the hook cannot be read: the shortest timeouts AWS allows
    /// (HeartbeatTimeout ≥ 30 s, so GlobalTimeout ≥ 100 × 30 s), so heartbeats are never late.
    pub const SAFE_DEFAULT: HookTimeouts = HookTimeouts {
        heartbeat: Duration::from_secs(30),
        global: Duration::from_secs(3000),
    };

    /// How often to heartbeat: half the heartbeat timeout, so one lost call is survivable.
    pub fn heartbeat_interval(&self) -> Duration {
        // AWS allows no heartbeat timeout under 30 s; the floor only matters for simulations.
        (self.heartbeat / 2).max(Duration::from_millis(500))
    }
}

/// CONTINUE or ABANDON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleResult {
    /// Let the termination proceed (and other hooks run).
    Continue,
    /// Stop other hooks; with instance retention this keeps the instance: avoid
    /// (`docs/aws-semantics.md#default-results-and-instance-retention`).
    Abandon,
}

impl LifecycleResult {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleResult::Continue => "CONTINUE",
            LifecycleResult::Abandon => "ABANDON",
        }
    }
}

/// Identifies one lifecycle action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRef {
    /// The group.
    pub group: GroupName,
    /// The hook.
    pub hook: HookName,
    /// The token from the notification.
    pub token: LifecycleToken,
    /// The instance.
    pub instance: InstanceId,
}

/// Errors of lifecycle calls, classified where they are handled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LifecycleError {
    /// The action no longer exists (completed, timed out, instance gone, wrong token):
    /// AWS's `ValidationError` "No active Lifecycle Action found …". Terminal.
    #[error("no active lifecycle action: {0}")]
    NoActiveAction(String),
    /// `ResourceContention`, throttling, 5xx, timeouts: retry with backoff.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Anything else (permissions, bad parameters): report, do not retry.
    #[error("{0}")]
    Fatal(String),
}

/// Lifecycle-action calls.
pub trait Lifecycle: Send + Sync {
    /// `RecordLifecycleActionHeartbeat`.
    fn heartbeat<'a>(&'a self, action: &'a ActionRef) -> BoxFuture<'a, Result<(), LifecycleError>>;
    /// `CompleteLifecycleAction`.
    fn complete<'a>(
        &'a self,
        action: &'a ActionRef,
        result: LifecycleResult,
    ) -> BoxFuture<'a, Result<(), LifecycleError>>;
    /// `DescribeLifecycleHooks` for one hook.
    fn hook_timeouts<'a>(
        &'a self,
        group: &'a GroupName,
        hook: &'a HookName,
    ) -> BoxFuture<'a, Result<HookTimeouts, LifecycleError>>;
}

/// A scaling activity's explanation of a termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityCause {
    /// The classified cause.
    pub cause: Cause,
    /// AWS's text.
    pub text: String,
}

/// Why-lookups.
pub trait Activities: Send + Sync {
    /// The cause of the latest scaling activity terminating `instance` in `group`, if any.
    fn termination_cause<'a>(
        &'a self,
        group: &'a GroupName,
        instance: &'a InstanceId,
    ) -> BoxFuture<'a, Result<Option<ActivityCause>, String>>;
}

/// Whether a group belongs to this cluster.
pub trait Groups: Send + Sync {
    /// True when one of the group's tags names this cluster (see [`groups::ClusterTags`]).
    fn is_managed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<bool, String>>;
}
