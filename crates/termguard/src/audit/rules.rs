//! The AWS rules: pure functions from [`facts`](super::facts) to [`Finding`]s. Each rule's id,
//! what it looks for and its fix are listed in `docs/audit.md`.

use super::facts::{Group, Queue, Replicas, Routing, Rule, BACKLOG_RECHECK};
use super::pattern::{glob, matches};
use super::{Finding, Severity};
use crate::aws::groups::ClusterTags;
use serde_json::{json, Value};

/// The audit's rule ids, one per hazard.
pub mod ids {
    /// A group over several zones, AZRebalance active, no termination hook: the incident.
    pub const AZ_REBALANCE_WITHOUT_HOOK: &str = "az-rebalance-without-termination-hook";
    /// No termination hook: scale-in, refreshes and health replacements go undrained.
    pub const NO_TERMINATION_HOOK: &str = "no-termination-hook";
    /// A termination hook whose events reach no queue.
    pub const HOOK_NOT_ROUTED: &str = "termination-hook-not-routed";
    /// A rule sends to the queue, but the queue's policy does not let EventBridge send.
    pub const QUEUE_POLICY_BLOCKS_EVENTBRIDGE: &str = "queue-policy-blocks-eventbridge";
    /// `DefaultResult: ABANDON` with instance retention: half-drained instances are kept.
    pub const ABANDON_RETAINS_INSTANCES: &str = "abandon-retains-instances";
    /// Spot capacity and no Spot interruption warning reaches the queue.
    pub const SPOT_WARNINGS_NOT_ROUTED: &str = "spot-warnings-not-routed";
    /// Capacity Rebalancing and no rebalance recommendation reaches the queue.
    pub const REBALANCE_NOT_ROUTED: &str = "rebalance-recommendations-not-routed";
    /// The queue has no dead-letter queue.
    pub const NO_DEAD_LETTER_QUEUE: &str = "queue-without-dead-letter-queue";
    /// The dead-letter queue's `maxReceiveCount` is too low for a long drain.
    pub const LOW_MAX_RECEIVE_COUNT: &str = "dead-letter-max-receive-count-too-low";
    /// A group of the cluster whose lifecycle actions termguard leaves for another owner.
    pub const GROUP_NOT_MANAGED: &str = "group-not-managed";
    /// Nothing receives from the queue, or no termguard replica in the cluster reads it.
    pub const QUEUE_NOT_CONSUMED: &str = "queue-not-consumed";
    /// A warm pool, and the lifecycle actions of instances going back to it reach no queue.
    pub const WARM_POOL_RETURNS_NOT_ROUTED: &str = "warm-pool-returns-not-routed";
}

/// Below this `maxReceiveCount`, a few restarts or replica handovers during one long drain
/// move its message to the dead-letter queue while the node still drains: each return of an
/// in-flight message to the queue counts as a receive.
pub const MIN_MAX_RECEIVE_COUNT: i64 = 5;

/// What the rules need besides the facts.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The tags that make a group this cluster's, as `termguard run` is configured.
    pub tags: ClusterTags,
}

/// The kinds of event termguard handles, as EventBridge delivers them for a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `EC2 Instance-terminate Lifecycle Action`.
    Lifecycle,
    /// `EC2 Instance-terminate Lifecycle Action` of a scale-in that returns the instance to the
    /// group's warm pool (`Destination`: `WarmPool`).
    WarmPoolReturn,
    /// `EC2 Spot Instance Interruption Warning`.
    Spot,
    /// `EC2 Instance Rebalance Recommendation`.
    Rebalance,
}

impl Kind {
    /// An event of this kind for one of the group's instances, to match rules against.
    pub fn sample(self, group: &Group) -> Value {
        let instance = group
            .instances
            .first()
            .map_or("i-0123456789abcdef0", String::as_str);
        match self {
            Kind::Lifecycle | Kind::WarmPoolReturn => json!({
                "source": "aws.autoscaling",
                "detail-type": "EC2 Instance-terminate Lifecycle Action",
                "resources": [group.arn],
                "detail": {
                    "AutoScalingGroupName": group.name,
                    "EC2InstanceId": instance,
                    "LifecycleTransition": super::facts::TERMINATING,
                    "Origin": "AutoScalingGroup",
                    "Destination": if self == Kind::WarmPoolReturn { "WarmPool" } else { "EC2" },
                },
            }),
            Kind::Spot => json!({
                "source": "aws.ec2",
                "detail-type": "EC2 Spot Instance Interruption Warning",
                "resources": [format!("arn:aws:ec2:{}:instance/{instance}", region_account(&group.arn))],
                "detail": {"instance-id": instance, "instance-action": "terminate"},
            }),
            Kind::Rebalance => json!({
                "source": "aws.ec2",
                "detail-type": "EC2 Instance Rebalance Recommendation",
                "resources": [format!("arn:aws:ec2:{}:instance/{instance}", region_account(&group.arn))],
                "detail": {"instance-id": instance},
            }),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Lifecycle | Kind::WarmPoolReturn => "EC2 Instance-terminate Lifecycle Action",
            Kind::Spot => "EC2 Spot Instance Interruption Warning",
            Kind::Rebalance => "EC2 Instance Rebalance Recommendation",
        }
    }

    /// The event pattern of a rule that routes this kind for the group.
    fn pattern(self, group: &Group) -> Value {
        match self {
            Kind::Lifecycle | Kind::WarmPoolReturn => json!({
                "source": ["aws.autoscaling"],
                "detail-type": [self.describe()],
                "detail": {"AutoScalingGroupName": [group.name]},
            }),
            Kind::Spot | Kind::Rebalance => json!({
                "source": ["aws.ec2"],
                "detail-type": [self.describe()],
            }),
        }
    }
}

/// `us-east-1:123456789012` from an ARN (`arn:aws:SERVICE:REGION:ACCOUNT:…`).
fn region_account(arn: &str) -> String {
    let parts: Vec<&str> = arn.split(':').collect();
    match (parts.get(3), parts.get(4)) {
        (Some(r), Some(a)) => format!("{r}:{a}"),
        _ => "us-east-1:123456789012".into(),
    }
}

/// How events of one kind reach the queue, if they do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The hook sends to the queue itself.
    Hook,
    /// These enabled rules match the events and target the queue.
    Rules(Vec<String>),
    /// No rule could be told to match or not (a filter the audit does not evaluate).
    Unknown(Vec<String>),
    /// Nothing delivers them.
    None,
}

/// Whether a target ARN is the queue (or, with no queue named, any SQS queue).
fn is_queue(target: &str, queue: Option<&Queue>) -> bool {
    match queue {
        Some(q) => target == q.arn,
        None => target.split(':').nth(2) == Some("sqs"),
    }
}

/// How the group's events of `kind` reach the queue.
pub fn route(kind: Kind, group: &Group, routing: &Routing) -> Route {
    let queue = routing.queue.as_ref();
    if matches!(kind, Kind::Lifecycle | Kind::WarmPoolReturn)
        && group
            .termination_hooks()
            .any(|h| h.target.as_deref().is_some_and(|t| is_queue(t, queue)))
    {
        return Route::Hook;
    }
    let event = kind.sample(group);
    let (mut yes, mut unknown) = (Vec::new(), Vec::new());
    for rule in routing.rules.iter().filter(|r| r.enabled) {
        if !rule.targets.iter().any(|t| is_queue(t, queue)) {
            continue;
        }
        match rule.pattern.as_ref().map(|p| matches(p, &event)) {
            Some(Some(true)) => yes.push(rule.name.clone()),
            Some(None) => unknown.push(rule.name.clone()),
            _ => {}
        }
    }
    if !yes.is_empty() {
        Route::Rules(yes)
    } else if !unknown.is_empty() {
        Route::Unknown(unknown)
    } else {
        Route::None
    }
}

/// The findings of one group.
pub fn group_findings(group: &Group, routing: &Routing, ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let resource = format!("asg/{}", group.name);
    let name = &group.name;
    let hooks: Vec<_> = group.termination_hooks().collect();
    let put_hook = format!(
        "aws autoscaling put-lifecycle-hook --auto-scaling-group-name {name} \
         --lifecycle-hook-name termguard-terminate \
         --lifecycle-transition {} --heartbeat-timeout 300 --default-result CONTINUE",
        super::facts::TERMINATING
    );
    if hooks.is_empty() {
        let rebalancing = group.zones.len() > 1 && !group.is_suspended("AZRebalance");
        let also = replacers(group);
        if rebalancing {
            out.push(Finding {
                id: ids::AZ_REBALANCE_WITHOUT_HOOK,
                severity: Severity::Critical,
                resource: resource.clone(),
                message: format!(
                    "the group spans {} zones with AZRebalance active and has no termination hook: \
                     whenever its zones fall out of balance, Auto Scaling launches a node in one zone \
                     and terminates one in another at once, pods and all{also}",
                    group.zones.len()
                ),
                fix: format!(
                    "{put_hook}, route its events to termguard's queue; or, to stop the rebalancing \
                     itself: aws autoscaling suspend-processes --auto-scaling-group-name {name} \
                     --scaling-processes AZRebalance"
                ),
            });
        } else {
            out.push(Finding {
                id: ids::NO_TERMINATION_HOOK,
                severity: Severity::High,
                resource: resource.clone(),
                message: format!(
                    "the group has no termination hook: every scale-in, instance refresh and \
                     health replacement terminates a node without waiting for its drain{also}"
                ),
                fix: format!("{put_hook}, and route its events to termguard's queue"),
            });
        }
    } else {
        match route(Kind::Lifecycle, group, routing) {
            Route::None => out.push(Finding {
                id: ids::HOOK_NOT_ROUTED,
                severity: Severity::High,
                resource: resource.clone(),
                message: format!(
                    "the termination hook {} sends to no queue termguard reads, and no enabled \
                     EventBridge rule delivers the group's lifecycle actions there: every \
                     termination waits out the heartbeat timeout ({} s), undrained, then goes on",
                    hooks[0].name, hooks[0].heartbeat_timeout
                ),
                fix: rule_fix(Kind::Lifecycle, group),
            }),
            Route::Unknown(rules) => out.push(Finding {
                id: ids::HOOK_NOT_ROUTED,
                severity: Severity::Low,
                resource: resource.clone(),
                message: format!(
                    "the group's lifecycle actions reach the queue only if rule(s) {} match them, \
                     and their patterns use filters the audit does not evaluate",
                    rules.join(", ")
                ),
                fix: "check the rules' patterns against an \"EC2 Instance-terminate Lifecycle \
                      Action\" event of the group with aws events test-event-pattern"
                    .into(),
            }),
            Route::Rules(_) if group.warm_pool => {
                if route(Kind::WarmPoolReturn, group, routing) == Route::None {
                    out.push(Finding {
                        id: ids::WARM_POOL_RETURNS_NOT_ROUTED,
                        severity: Severity::High,
                        resource: resource.clone(),
                        message:
                            "the group has a warm pool, and the rules that send its lifecycle \
                                  actions to the queue do not match those of instances going back \
                                  to the pool (Destination WarmPool): those nodes are stopped \
                                  undrained once the heartbeat timeout runs out"
                                .into(),
                        fix: rule_fix(Kind::WarmPoolReturn, group),
                    });
                }
            }
            Route::Hook | Route::Rules(_) => {}
        }
        if group.retains_on_abandon {
            for h in hooks.iter().filter(|h| h.default_result == "ABANDON") {
                out.push(Finding {
                    id: ids::ABANDON_RETAINS_INSTANCES,
                    severity: Severity::Medium,
                    resource: resource.clone(),
                    message: format!(
                        "the hook {} defaults to ABANDON and the group's instance lifecycle policy \
                         retains instances whose termination hook is abandoned: an action that \
                         times out leaves a half-drained, cordoned node running (and billed)",
                        h.name
                    ),
                    fix: format!(
                        "aws autoscaling put-lifecycle-hook --auto-scaling-group-name {name} \
                         --lifecycle-hook-name {} --default-result CONTINUE",
                        h.name
                    ),
                });
            }
        }
    }
    if group.spot && route(Kind::Spot, group, routing) == Route::None {
        out.push(Finding {
            id: ids::SPOT_WARNINGS_NOT_ROUTED,
            severity: Severity::High,
            resource: resource.clone(),
            message: "the group runs Spot capacity, and no enabled EventBridge rule sends Spot \
                      interruption warnings to the queue: EC2 reclaims an instance two minutes \
                      after its warning, with no termination hook in between"
                .into(),
            fix: rule_fix(Kind::Spot, group),
        });
    }
    if group.capacity_rebalance && route(Kind::Rebalance, group, routing) == Route::None {
        out.push(Finding {
            id: ids::REBALANCE_NOT_ROUTED,
            severity: Severity::Medium,
            resource: resource.clone(),
            message: "Capacity Rebalancing is on, and no enabled EventBridge rule sends rebalance \
                      recommendations to the queue: the replacement's node is cordoned only once \
                      the old instance's termination starts"
                .into(),
            fix: rule_fix(Kind::Rebalance, group),
        });
    }
    let tagged = || {
        ctx.tags
            .matches(group.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    };
    if group.has_cluster_nodes && ctx.tags.is_configured() && !tagged() {
        out.push(Finding {
            id: ids::GROUP_NOT_MANAGED,
            severity: Severity::High,
            resource,
            message: "the group's nodes are this cluster's, but none of its tags names the cluster: \
                      termguard leaves its lifecycle actions for their owner, and they wait out the \
                      heartbeat timeout undrained"
                .into(),
            fix: ctx.tags.cluster.as_ref().map_or_else(
                || "tag the group with the tag termguard's --managed-asg-tag names".to_string(),
                |c| {
                    format!(
                        "aws autoscaling create-or-update-tags --tags \
                         ResourceId={name},ResourceType=auto-scaling-group,Key=termguard.io/cluster,Value={c},PropagateAtLaunch=false"
                    )
                },
            ),
        });
    }
    out
}

/// What else replaces the group's instances, for the no-hook findings: each goes undrained too.
fn replacers(group: &Group) -> String {
    let mut what = Vec::new();
    if let Some(s) = group.max_instance_lifetime.filter(|s| *s > 0) {
        what.push(format!(
            "its maximum instance lifetime replaces every node within {} days",
            s / 86_400
        ));
    }
    if group.capacity_rebalance {
        what.push("Capacity Rebalancing replaces Spot nodes at risk".to_string());
    }
    if group.warm_pool {
        what.push("scale-in returns nodes to its warm pool".to_string());
    }
    if what.is_empty() {
        String::new()
    } else {
        format!("; also, {}", what.join(", "))
    }
}

/// The EventBridge rule that routes `kind` for the group to the queue.
fn rule_fix(kind: Kind, group: &Group) -> String {
    format!(
        "aws events put-rule --name termguard-{} --event-pattern '{}' && aws events put-targets \
         --rule termguard-{} --targets Id=termguard,Arn=QUEUE_ARN (and a queue policy that lets \
         events.amazonaws.com send)",
        slug(kind),
        kind.pattern(group),
        slug(kind)
    )
}

fn slug(kind: Kind) -> &'static str {
    match kind {
        Kind::Lifecycle | Kind::WarmPoolReturn => "lifecycle",
        Kind::Spot => "spot",
        Kind::Rebalance => "rebalance",
    }
}

/// The findings of the queue: its policy against the rules that send to it, its dead-letter
/// queue.
pub fn queue_findings(routing: &Routing) -> Vec<Finding> {
    let Some(queue) = &routing.queue else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let resource = format!(
        "queue/{}",
        queue.arn.rsplit(':').next().unwrap_or(&queue.arn)
    );
    let senders: Vec<&Rule> = routing
        .rules
        .iter()
        .filter(|r| r.enabled && r.targets.contains(&queue.arn))
        .collect();
    let blocked: Vec<&str> = senders
        .iter()
        .filter(|r| !lets_eventbridge_send(queue, &r.arn))
        .map(|r| r.name.as_str())
        .collect();
    if !blocked.is_empty() {
        out.push(Finding {
            id: ids::QUEUE_POLICY_BLOCKS_EVENTBRIDGE,
            severity: Severity::High,
            resource: resource.clone(),
            message: format!(
                "rule(s) {} target the queue, but its access policy does not allow \
                 events.amazonaws.com to sqs:SendMessage from them: EventBridge drops their events",
                blocked.join(", ")
            ),
            fix: format!(
                "aws sqs set-queue-attributes --queue-url {} --attributes Policy='{}'",
                queue.url,
                json!({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue.arn,
                }]})
            ),
        });
    }
    match queue.dead_letter {
        None => out.push(Finding {
            id: ids::NO_DEAD_LETTER_QUEUE,
            severity: Severity::Low,
            resource,
            message: "the queue has no dead-letter queue: a message no replica can ever handle \
                      is received again and again, and nobody sees it"
                .into(),
            fix: format!(
                "aws sqs set-queue-attributes --queue-url {} --attributes \
                 RedrivePolicy='{{\"deadLetterTargetArn\":\"DLQ_ARN\",\"maxReceiveCount\":\"10\"}}'",
                queue.url
            ),
        }),
        Some((_, count)) if count < MIN_MAX_RECEIVE_COUNT => out.push(Finding {
            id: ids::LOW_MAX_RECEIVE_COUNT,
            severity: Severity::Medium,
            resource,
            message: format!(
                "the dead-letter queue takes a message after {count} receives: a long drain's \
                 message comes back to the queue at every restart or replica handover, so a few \
                 of them move it to the dead-letter queue while its node still drains"
            ),
            fix: format!(
                "aws sqs set-queue-attributes --queue-url {} --attributes \
                 RedrivePolicy='{{\"deadLetterTargetArn\":\"DLQ_ARN\",\"maxReceiveCount\":\"10\"}}'",
                queue.url
            ),
        }),
        Some(_) => {}
    }
    out
}

/// Whether anything consumes the queue: its backlog (messages waiting and none in flight at
/// two looks), and, when the cluster was read, the termguard replicas that read it.
pub fn consumer_findings(queue: &Queue, replicas: Option<&Replicas>) -> Vec<Finding> {
    let resource = format!(
        "queue/{}",
        queue.arn.rsplit(':').next().unwrap_or(&queue.arn)
    );
    let seen = match replicas {
        None => String::new(),
        Some(r) if r.others.is_empty() => {
            "; the cluster runs no termguard replica that reads it".into()
        }
        Some(r) => format!(
            "; the cluster's termguard pods do not read it ({})",
            r.others.join("; ")
        ),
    };
    let fix = format!(
        "run termguard in the cluster with --queue-url {} (the Helm chart deploy/helm/termguard, or deploy/manifests/termguard.yaml: two replicas), with sqs:ReceiveMessage on the queue in its IAM role",
        queue.url
    );
    if let Some(waiting) = queue.unreceived {
        return vec![Finding {
            id: ids::QUEUE_NOT_CONSUMED,
            severity: Severity::High,
            resource,
            message: format!(
                "{waiting} message(s) wait in the queue and none was received in {} s: nothing consumes it, so every notice waits there while its node is terminated undrained{seen}",
                BACKLOG_RECHECK.as_secs()
            ),
            fix,
        }];
    }
    match replicas {
        Some(r) if r.reading.is_empty() => {
            let in_flight = queue.in_flight.unwrap_or(0);
            let (severity, what) = if in_flight > 0 {
                (
                    Severity::Medium,
                    format!(
                        "something else receives from it ({in_flight} message(s) in flight): another handler, or termguard outside the cluster"
                    ),
                )
            } else {
                (
                    Severity::High,
                    "the next notice waits there while its node is terminated undrained".into(),
                )
            };
            vec![Finding {
                id: ids::QUEUE_NOT_CONSUMED,
                severity,
                resource,
                message: format!(
                    "no running, ready termguard replica in the cluster reads the queue{}: {what}",
                    if r.others.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.others.join("; "))
                    }
                ),
                fix,
            }]
        }
        _ => Vec::new(),
    }
}

/// Whether the queue's policy has an Allow statement that lets EventBridge send from the rule
/// `rule_arn` ([Amazon SQS permissions for EventBridge](https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html#eb-sqs-permissions)).
pub fn lets_eventbridge_send(queue: &Queue, rule_arn: &str) -> bool {
    let Some(policy) = &queue.policy else {
        return false;
    };
    let statements = match policy.get("Statement") {
        Some(Value::Array(s)) => s.iter().collect::<Vec<_>>(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => return false,
    };
    statements.into_iter().any(|s| {
        s.get("Effect").and_then(Value::as_str) == Some("Allow")
            && principal_is_eventbridge(s.get("Principal"))
            && strings(s.get("Action")).iter().any(|a| {
                ["sqs:SendMessage", "sqs:*", "*"]
                    .iter()
                    .any(|w| a.eq_ignore_ascii_case(w))
                    || glob(a, "sqs:SendMessage")
            })
            && strings(s.get("Resource"))
                .iter()
                .any(|r| glob(r, &queue.arn))
            && source_arn_allows(s.get("Condition"), rule_arn)
    })
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn principal_is_eventbridge(p: Option<&Value>) -> bool {
    match p {
        Some(Value::String(s)) => s == "*",
        Some(Value::Object(o)) => {
            strings(o.get("Service"))
                .iter()
                .any(|s| s == "events.amazonaws.com")
                || strings(o.get("AWS")).iter().any(|s| s == "*")
        }
        _ => false,
    }
}

/// A condition on `aws:SourceArn` (ArnEquals, ArnLike, StringEquals, StringLike) must admit
/// the rule; other conditions are not evaluated (taken as met). `ArnEquals` and `ArnLike`
/// both match `*` and `?` in each part of the ARN
/// ([IAM condition operators](https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html#Conditions_ARN)).
fn source_arn_allows(condition: Option<&Value>, rule_arn: &str) -> bool {
    let Some(Value::Object(ops)) = condition else {
        return true;
    };
    ops.iter().all(|(op, keys)| {
        let Some(values) = keys
            .as_object()
            .and_then(|k| {
                k.iter()
                    .find(|(key, _)| key.eq_ignore_ascii_case("aws:SourceArn"))
            })
            .map(|(_, v)| strings(Some(v)))
        else {
            return true;
        };
        // IAM's ARN operators both take wildcards; StringEquals does not.
        match op.as_str() {
            "StringEquals" => values.iter().any(|v| v == rule_arn),
            "ArnEquals" | "ArnLike" | "StringLike" => values.iter().any(|v| glob(v, rule_arn)),
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests;
