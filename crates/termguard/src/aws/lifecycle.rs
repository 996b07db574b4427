//! [`Lifecycle`] over the Auto Scaling API: `RecordLifecycleActionHeartbeat`,
//! `CompleteLifecycleAction` and `DescribeLifecycleHooks` (`docs/aws-semantics.md#heartbeats`,
//! `docs/aws-semantics.md#global-timeout`, `docs/aws-semantics.md#lifecycle-api-calls`).

use super::sdk::classify_sdk;
use super::{ActionRef, HookTimeouts, Lifecycle, LifecycleError, LifecycleResult};
use crate::notice::{GroupName, HookName};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `HeartbeatTimeout` when the hook reports none: 3600 s (`docs/aws-semantics.md#heartbeats`).
const DEFAULT_HEARTBEAT_SECS: u64 = 3600;
/// The ceiling of a hook's global timeout (48 h: `docs/aws-semantics.md#global-timeout`).
const MAX_GLOBAL_SECS: u64 = 172_800;

/// How long a hook's timeouts are reused before they are read again.
const HOOK_TTL: Duration = Duration::from_secs(300);

type HookSlot = Arc<tokio::sync::Mutex<Option<(Instant, HookTimeouts)>>>;

/// Lifecycle-action calls through the AWS SDK.
pub struct SdkLifecycle {
    client: aws_sdk_autoscaling::Client,
    /// `DescribeLifecycleHooks` answers, single-flight per hook: a burst of notices for one
    /// hook makes one call, not one each.
    hooks: Mutex<HashMap<(GroupName, HookName), HookSlot>>,
}

impl SdkLifecycle {
    /// Calls go through `client`.
    pub fn new(client: aws_sdk_autoscaling::Client) -> Self {
        SdkLifecycle {
            client,
            hooks: Mutex::default(),
        }
    }

    async fn describe_hook(
        &self,
        group: &GroupName,
        hook: &HookName,
    ) -> Result<HookTimeouts, LifecycleError> {
        let out = self
            .client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(group.as_str())
            .lifecycle_hook_names(hook.as_str())
            .send()
            .await
            .map_err(|e| classify_sdk(&e))?;
        out.lifecycle_hooks()
            .iter()
            .find(|h| h.lifecycle_hook_name() == Some(hook.as_str()))
            .map(|h| timeouts_of(h.heartbeat_timeout(), h.global_timeout()))
            .ok_or_else(|| {
                LifecycleError::Fatal(format!("no lifecycle hook {hook} on group {group}"))
            })
    }
}

/// The timeouts of a hook as `DescribeLifecycleHooks` reports them, with AWS's defaults for
/// missing values: `GlobalTimeout` = min(48 h, 100 × `HeartbeatTimeout`).
pub fn timeouts_of(heartbeat: Option<i32>, global: Option<i32>) -> HookTimeouts {
    let positive = |v: Option<i32>| v.and_then(|s| u64::try_from(s).ok()).filter(|s| *s > 0);
    let heartbeat = positive(heartbeat).unwrap_or(DEFAULT_HEARTBEAT_SECS);
    let global = positive(global).unwrap_or((heartbeat * 100).min(MAX_GLOBAL_SECS));
    HookTimeouts {
        heartbeat: Duration::from_secs(heartbeat),
        global: Duration::from_secs(global),
    }
}

impl Lifecycle for SdkLifecycle {
    fn heartbeat<'a>(&'a self, action: &'a ActionRef) -> BoxFuture<'a, Result<(), LifecycleError>> {
        async move {
            self.client
                .record_lifecycle_action_heartbeat()
                .auto_scaling_group_name(action.group.as_str())
                .lifecycle_hook_name(action.hook.as_str())
                .lifecycle_action_token(action.token.as_str())
                .instance_id(action.instance.as_str())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify_sdk(&e))
        }
        .boxed()
    }

    fn complete<'a>(
        &'a self,
        action: &'a ActionRef,
        result: LifecycleResult,
    ) -> BoxFuture<'a, Result<(), LifecycleError>> {
        async move {
            self.client
                .complete_lifecycle_action()
                .auto_scaling_group_name(action.group.as_str())
                .lifecycle_hook_name(action.hook.as_str())
                .lifecycle_action_token(action.token.as_str())
                .instance_id(action.instance.as_str())
                .lifecycle_action_result(result.as_str())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify_sdk(&e))
        }
        .boxed()
    }

    fn hook_timeouts<'a>(
        &'a self,
        group: &'a GroupName,
        hook: &'a HookName,
    ) -> BoxFuture<'a, Result<HookTimeouts, LifecycleError>> {
        async move {
            let slot = {
                let mut hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
                hooks
                    .entry((group.clone(), hook.clone()))
                    .or_default()
                    .clone()
            };
            let mut cached = slot.lock().await;
            if let Some((at, t)) = *cached {
                if at.elapsed() < HOOK_TTL {
                    return Ok(t);
                }
            }
            let t = self.describe_hook(group, hook).await?;
            *cached = Some((Instant::now(), t));
            Ok(t)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_timeouts_default_as_aws_documents() {
        assert_eq!(
            timeouts_of(Some(30), Some(3000)),
            HookTimeouts {
                heartbeat: Duration::from_secs(30),
                global: Duration::from_secs(3000)
            }
        );
        let t = timeouts_of(None, None);
        assert_eq!(t.heartbeat, Duration::from_secs(3600));
        assert_eq!(t.global, Duration::from_secs(172_800));
        assert_eq!(
            timeouts_of(Some(60), None).global,
            Duration::from_secs(6000)
        );
        assert_eq!(
            timeouts_of(Some(-5), Some(0)).heartbeat,
            Duration::from_secs(3600)
        );
    }
}
