//! An in-process Auto Scaling group over the simulator's nodes: instances in zones, an
//! optional termination lifecycle hook (Terminating:Wait, heartbeats extend the wait, the
//! heartbeat timeout applies the default result), scaling activities with AWS's cause texts
//! (`docs/aws-semantics.md#lifecycle-hooks`, `docs/aws-semantics.md#scaling-activity-causes`),
//! and instance termination that kills the node with no graceful shutdown. It implements the
//! same `Lifecycle`, `Activities` and `Groups` traits the SDK implementations do, so
//! termguard's real handler drives it.

use super::timeline::Timeline;
use crate::aws::{
    ActionRef, Activities, ActivityCause, Groups, HookTimeouts, Lifecycle, LifecycleError,
    LifecycleResult,
};
use crate::notice::{Cause, GroupName, HookName, InstanceId};
use futures::future::{BoxFuture, FutureExt};
use kube_sim::controllers::Cluster;
use kube_sim::resources::NODES;
use kube_sim::store::Store;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where an instance is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Serving.
    InService,
    /// Paused by the termination hook.
    TerminatingWait,
    /// Gone.
    Terminated,
}

/// One instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// EC2 instance id.
    pub id: String,
    /// Availability zone.
    pub zone: String,
    /// The Kubernetes node it runs.
    pub node: String,
    /// Lifecycle state.
    pub state: State,
}

/// A termination hook.
#[derive(Debug, Clone)]
pub struct Hook {
    /// Hook name.
    pub name: String,
    /// HeartbeatTimeout.
    pub heartbeat_timeout: Duration,
}

struct Action {
    token: String,
    instance: String,
    deadline: Instant,
    global_deadline: Instant,
    started: Instant,
    heartbeats: u32,
}

/// A finished lifecycle wait.
#[derive(Debug, Clone)]
pub struct WaitRecord {
    /// The instance.
    pub instance: String,
    /// How long the group waited.
    pub waited: Duration,
    /// Completed by a CompleteLifecycleAction (true) or by the timeout's default result (false).
    pub completed: bool,
    /// Heartbeats received.
    pub heartbeats: u32,
}

struct GroupState {
    name: String,
    hook: Option<Hook>,
    instances: Vec<Instance>,
    actions: Vec<Action>,
    activities: Vec<(String, String)>,
    waits: Vec<WaitRecord>,
}

/// The simulated Auto Scaling group(s).
pub struct AutoScaling {
    groups: Mutex<Vec<GroupState>>,
    store: Arc<Store>,
    cluster: Arc<Cluster>,
    timeline: Arc<Timeline>,
    messages: Option<mpsc::UnboundedSender<Vec<u8>>>,
    node_delete_delay: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn stamp() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl AutoScaling {
    /// Groups over the given instances; lifecycle messages go to `messages` (EventBridge JSON).
    pub fn new(
        store: Arc<Store>,
        cluster: Arc<Cluster>,
        timeline: Arc<Timeline>,
        messages: Option<mpsc::UnboundedSender<Vec<u8>>>,
    ) -> Arc<Self> {
        Arc::new(AutoScaling {
            groups: Mutex::default(),
            store,
            cluster,
            timeline,
            messages,
            node_delete_delay: Duration::from_millis(500),
        })
    }

    /// Adds a group.
    pub fn add_group(&self, name: &str, hook: Option<Hook>, instances: Vec<Instance>) {
        lock(&self.groups).push(GroupState {
            name: name.into(),
            hook,
            instances,
            actions: Vec::new(),
            activities: Vec::new(),
            waits: Vec::new(),
        });
    }

    /// In-service instance count per zone of a group.
    pub fn zone_counts(&self, group: &str) -> BTreeMap<String, usize> {
        let groups = lock(&self.groups);
        let mut out = BTreeMap::new();
        if let Some(g) = groups.iter().find(|g| g.name == group) {
            for i in g.instances.iter().filter(|i| i.state == State::InService) {
                *out.entry(i.zone.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Instances of a group.
    pub fn instances(&self, group: &str) -> Vec<Instance> {
        lock(&self.groups)
            .iter()
            .find(|g| g.name == group)
            .map(|g| g.instances.clone())
            .unwrap_or_default()
    }

    /// Finished lifecycle waits.
    pub fn waits(&self) -> Vec<WaitRecord> {
        lock(&self.groups)
            .iter()
            .flat_map(|g| g.waits.clone())
            .collect()
    }

    /// Whether an instance has terminated.
    pub fn is_terminated(&self, instance: &str) -> bool {
        lock(&self.groups)
            .iter()
            .flat_map(|g| g.instances.iter())
            .any(|i| i.id == instance && i.state == State::Terminated)
    }

    /// Registers a freshly launched instance.
    pub fn launched(&self, group: &str, instance: Instance, cause: &str) {
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.iter_mut().find(|g| g.name == group) {
            g.activities.push((instance.id.clone(), cause.to_string()));
            g.instances.push(instance);
        }
    }

    /// Terminates an instance the way Auto Scaling does: through the hook's wait when the
    /// group has a termination hook, at once otherwise.
    pub fn terminate(self: &Arc<Self>, group: &str, instance: &str, cause: &str) {
        let mut groups = lock(&self.groups);
        let Some(g) = groups.iter_mut().find(|g| g.name == group) else {
            return;
        };
        g.activities.push((instance.to_string(), cause.to_string()));
        let Some(hook) = g.hook.clone() else {
            drop(groups);
            self.finish(instance, "no lifecycle hook: terminated at once");
            return;
        };
        let Some(inst) = g.instances.iter_mut().find(|i| i.id == instance) else {
            return;
        };
        inst.state = State::TerminatingWait;
        let token = uuid_like();
        let now = Instant::now();
        g.actions.push(Action {
            token: token.clone(),
            instance: instance.to_string(),
            deadline: now + hook.heartbeat_timeout,
            global_deadline: now + hook.heartbeat_timeout * 100,
            started: now,
            heartbeats: 0,
        });
        let message = serde_json::json!({
            "version": "0", "id": uuid_like(), "detail-type": "EC2 Instance-terminate Lifecycle Action",
            "source": "aws.autoscaling", "account": "123456789012", "time": stamp(), "region": "us-east-1",
            "resources": [format!("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:lab:autoScalingGroupName/{group}")],
            "detail": {"LifecycleActionToken": token, "AutoScalingGroupName": group, "LifecycleHookName": hook.name,
                "EC2InstanceId": instance, "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
                "Origin": "AutoScalingGroup", "Destination": "EC2"}
        });
        drop(groups);
        self.timeline.log(format!("lifecycle hook {} paused the termination of {instance} (Terminating:Wait, heartbeat timeout {:?})", hook.name, hook.heartbeat_timeout));
        if let Some(tx) = &self.messages {
            let _ = tx.send(serde_json::to_vec(&message).unwrap_or_default());
        }
        let this = self.clone();
        tokio::spawn(async move { this.expire_loop(token).await });
    }

    /// Applies the default result when the heartbeat or global timeout passes.
    async fn expire_loop(self: Arc<Self>, token: String) {
        loop {
            let deadline = {
                let groups = lock(&self.groups);
                let action = groups
                    .iter()
                    .flat_map(|g| g.actions.iter())
                    .find(|a| a.token == token);
                match action {
                    Some(a) => a.deadline.min(a.global_deadline),
                    None => return,
                }
            };
            tokio::time::sleep_until(deadline).await;
            let expired = {
                let mut groups = lock(&self.groups);
                let mut found = None;
                for g in groups.iter_mut() {
                    if let Some(pos) = g.actions.iter().position(|a| a.token == token) {
                        let a = &g.actions[pos];
                        if Instant::now() >= a.deadline.min(a.global_deadline) {
                            let a = g.actions.remove(pos);
                            g.waits.push(WaitRecord {
                                instance: a.instance.clone(),
                                waited: a.started.elapsed(),
                                completed: false,
                                heartbeats: a.heartbeats,
                            });
                            found = Some(a.instance);
                        }
                    }
                }
                found
            };
            if let Some(instance) = expired {
                self.finish(
                    &instance,
                    "lifecycle hook timed out: default result applied",
                );
                return;
            }
        }
    }

    /// Terminates the instance: its node dies with every pod still on it, then the cloud
    /// node controller deletes the Node object.
    fn finish(&self, instance: &str, why: &str) {
        let node = {
            let mut groups = lock(&self.groups);
            let inst = groups
                .iter_mut()
                .flat_map(|g| g.instances.iter_mut())
                .find(|i| i.id == instance);
            match inst {
                Some(i) => {
                    i.state = State::Terminated;
                    i.node.clone()
                }
                None => return,
            }
        };
        let died = self.cluster.kill_node(&node).map(|d| d.len()).unwrap_or(0);
        self.timeline.log(format!(
            "instance {instance} terminated ({why}); node {node} gone with {died} pods still on it"
        ));
        let store = self.store.clone();
        let delay = self.node_delete_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = store.remove(&NODES, "", &node, None);
        });
    }

    fn find_action<'a>(
        groups: &'a mut [GroupState],
        token: &str,
    ) -> Option<(&'a mut GroupState, usize)> {
        groups.iter_mut().find_map(|g| {
            let pos = g.actions.iter().position(|a| a.token == token)?;
            Some((g, pos))
        })
    }
}

fn uuid_like() -> String {
    let h = fastrand::u128(..);
    let s = format!("{h:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &s[0..8],
        &s[8..12],
        &s[13..16],
        &s[17..20],
        &s[20..32]
    )
}

fn no_action(token: &str) -> LifecycleError {
    LifecycleError::NoActiveAction(format!(
        "No active Lifecycle Action found with token {token}"
    ))
}

impl Lifecycle for AutoScaling {
    fn heartbeat<'a>(&'a self, action: &'a ActionRef) -> BoxFuture<'a, Result<(), LifecycleError>> {
        async move {
            let n = {
                let mut groups = lock(&self.groups);
                let Some((g, pos)) = Self::find_action(&mut groups, action.token.as_str()) else {
                    return Err(no_action(action.token.as_str()));
                };
                let timeout = g
                    .hook
                    .as_ref()
                    .map_or(Duration::from_secs(30), |h| h.heartbeat_timeout);
                let a = &mut g.actions[pos];
                a.deadline = Instant::now() + timeout;
                a.heartbeats += 1;
                a.heartbeats
            };
            self.timeline.log(format!(
                "heartbeat #{n} for {} (RecordLifecycleActionHeartbeat)",
                action.instance
            ));
            Ok(())
        }
        .boxed()
    }

    fn complete<'a>(
        &'a self,
        action: &'a ActionRef,
        result: LifecycleResult,
    ) -> BoxFuture<'a, Result<(), LifecycleError>> {
        async move {
            let record = {
                let mut groups = lock(&self.groups);
                let Some((g, pos)) = Self::find_action(&mut groups, action.token.as_str()) else {
                    return Err(no_action(action.token.as_str()));
                };
                let a = g.actions.remove(pos);
                let r = WaitRecord {
                    instance: a.instance.clone(),
                    waited: a.started.elapsed(),
                    completed: true,
                    heartbeats: a.heartbeats,
                };
                g.waits.push(r.clone());
                r
            };
            self.timeline.log(format!(
                "CompleteLifecycleAction({}) for {} after the group waited {:.1}s",
                result.as_str(),
                record.instance,
                record.waited.as_secs_f64()
            ));
            self.finish(&record.instance, "lifecycle action completed");
            Ok(())
        }
        .boxed()
    }

    fn hook_timeouts<'a>(
        &'a self,
        group: &'a GroupName,
        _hook: &'a HookName,
    ) -> BoxFuture<'a, Result<HookTimeouts, LifecycleError>> {
        async move {
            let groups = lock(&self.groups);
            let hook = groups
                .iter()
                .find(|g| g.name == group.as_str())
                .and_then(|g| g.hook.clone());
            match hook {
                Some(h) => Ok(HookTimeouts {
                    heartbeat: h.heartbeat_timeout,
                    global: h.heartbeat_timeout * 100,
                }),
                None => Err(LifecycleError::Fatal(format!(
                    "group {group} has no lifecycle hook"
                ))),
            }
        }
        .boxed()
    }
}

impl Activities for AutoScaling {
    fn termination_cause<'a>(
        &'a self,
        group: &'a GroupName,
        instance: &'a InstanceId,
    ) -> BoxFuture<'a, Result<Option<ActivityCause>, String>> {
        async move {
            let groups = lock(&self.groups);
            let text = groups
                .iter()
                .filter(|g| g.name == group.as_str())
                .flat_map(|g| g.activities.iter())
                .rev()
                .find(|(i, _)| i == instance.as_str())
                .map(|(_, t)| t.clone());
            Ok(text.map(|t| ActivityCause {
                cause: Cause::from_activity_cause(&t),
                text: t,
            }))
        }
        .boxed()
    }
}

impl Groups for AutoScaling {
    fn is_managed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<bool, String>> {
        async move { Ok(lock(&self.groups).iter().any(|g| g.name == group.as_str())) }.boxed()
    }
}

/// AWS's cause text for an AZ rebalance termination
/// (`docs/aws-semantics.md#scaling-activity-causes`).
pub fn az_rebalance_cause(instance: &str, zones: &[String], from: usize, to: usize) -> String {
    let t = stamp();
    format!(
        "At {t} instances were launched to balance instances in zones {} with other zones resulting in more than desired number of instances in the group.  At {t} an instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from {from} to {to}.  At {t} instance {instance} was selected for termination.",
        zones.join(" ")
    )
}

/// AWS's cause text for TerminateInstanceInAutoScalingGroup with a capacity decrement.
pub fn terminate_request_cause(instance: &str, from: usize, to: usize) -> String {
    format!(
        "At {} instance {instance} was taken out of service in response to a user request, shrinking the capacity from {from} to {to}.",
        stamp()
    )
}

/// AWS's cause text for a launch that balances zones.
pub fn az_rebalance_launch_cause(zones: &BTreeMap<String, usize>) -> String {
    let names: Vec<&str> = zones.keys().map(String::as_str).collect();
    let counts: Vec<String> = zones.values().map(usize::to_string).collect();
    format!(
        "At {} availability zones {} had {} instances respectively. An instance was launched to aid in balancing the group's zones.",
        stamp(),
        names.join(" "),
        counts.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_texts_classify_as_aws_ones_do() {
        let zones = vec!["us-east-1a".to_string()];
        assert_eq!(
            Cause::from_activity_cause(&az_rebalance_cause("i-1", &zones, 6, 5)),
            Cause::AzRebalance
        );
        assert_eq!(
            Cause::from_activity_cause(&terminate_request_cause("i-1", 6, 5)),
            Cause::TerminateRequest
        );
    }

    #[test]
    fn tokens_look_like_uuids() {
        let t = uuid_like();
        assert_eq!(t.len(), 36);
        assert_eq!(t.matches('-').count(), 4);
    }
}
