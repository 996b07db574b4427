//! Reading the account for the audit: read-only calls only (`docs/audit.md#permissions`).
//!
//! Auto Scaling: `DescribeAutoScalingGroups`, `DescribeLifecycleHooks`, `DescribeWarmPool`,
//! `DescribeScalingActivities`. EventBridge: `ListRules`, `ListTargetsByRule`. SQS:
//! `GetQueueAttributes` (a second time, [`BACKLOG_RECHECK`](super::facts::BACKLOG_RECHECK)
//! later, when messages wait and none is in flight). A call that fails is reported in the report's `unreadable` list and
//! the audit goes on with what it has.

use super::facts::{Activity, Group, Hook, Queue, Reason, Routing, Rule, Scoped};
use crate::aws::groups::ClusterTags;
use crate::aws::sdk::classify_sdk;
use std::collections::HashSet;

/// Pages of 100 scaling activities read per group at most (AWS keeps six weeks of them).
const MAX_ACTIVITY_PAGES: usize = 50;

/// The clients the audit reads through.
pub struct Clients {
    /// Auto Scaling.
    pub asg: aws_sdk_autoscaling::Client,
    /// EventBridge.
    pub events: aws_sdk_eventbridge::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
}

impl Clients {
    /// Clients from one SDK configuration.
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        Clients {
            asg: aws_sdk_autoscaling::Client::new(aws),
            events: aws_sdk_eventbridge::Client::new(aws),
            sqs: aws_sdk_sqs::Client::new(aws),
        }
    }
}

/// A failed call of any of the three clients (they share the SDK's error type), classified.
fn sdk_error<E>(
    what: &str,
    e: &aws_sdk_autoscaling::error::SdkError<E, aws_sdk_autoscaling::config::http::HttpResponse>,
) -> String
where
    E: aws_sdk_autoscaling::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    format!("{what}: {}", classify_sdk(e))
}

/// Which groups to audit: those named, those tagged for the cluster, and those with an
/// instance that is a node of the cluster. Returns them with the groups' descriptions.
pub async fn groups(
    clients: &Clients,
    named: &[String],
    tags: &ClusterTags,
    node_instances: &HashSet<String>,
) -> Result<
    (
        Vec<Scoped>,
        Vec<aws_sdk_autoscaling::types::AutoScalingGroup>,
    ),
    String,
> {
    let mut scoped = Vec::new();
    let mut described = Vec::new();
    let mut token = None;
    loop {
        let page = clients
            .asg
            .describe_auto_scaling_groups()
            .set_next_token(token)
            .max_records(100)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeAutoScalingGroups", &e))?;
        for g in page.auto_scaling_groups() {
            let name = g.auto_scaling_group_name().unwrap_or_default();
            let mut reasons = Vec::new();
            if named.iter().any(|n| n == name) {
                reasons.push(Reason::Named);
            }
            if tags.is_configured()
                && tags.matches(
                    g.tags()
                        .iter()
                        .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
                )
            {
                reasons.push(Reason::Tagged);
            }
            if g.instances().iter().any(|i| {
                i.instance_id()
                    .is_some_and(|id| node_instances.contains(id))
            }) {
                reasons.push(Reason::HasNodes);
            }
            if !reasons.is_empty() {
                scoped.push(Scoped {
                    group: name.to_string(),
                    reasons,
                });
                described.push(g.clone());
            }
        }
        token = page.next_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    Ok((scoped, described))
}

/// The facts of one group: its settings, hooks and warm pool.
pub async fn group(
    clients: &Clients,
    g: &aws_sdk_autoscaling::types::AutoScalingGroup,
    unreadable: &mut Vec<String>,
) -> Group {
    let name = g.auto_scaling_group_name().unwrap_or_default().to_string();
    let hooks = match clients
        .asg
        .describe_lifecycle_hooks()
        .auto_scaling_group_name(&name)
        .send()
        .await
    {
        Ok(out) => out
            .lifecycle_hooks()
            .iter()
            .map(|h| Hook {
                name: h.lifecycle_hook_name().unwrap_or_default().to_string(),
                transition: h.lifecycle_transition().unwrap_or_default().to_string(),
                heartbeat_timeout: h.heartbeat_timeout().map_or(0, i64::from),
                global_timeout: h.global_timeout().map_or(0, i64::from),
                default_result: h.default_result().unwrap_or_default().to_string(),
                target: h.notification_target_arn().map(String::from),
            })
            .collect(),
        Err(e) => {
            unreadable.push(sdk_error(&format!("DescribeLifecycleHooks {name}"), &e));
            Vec::new()
        }
    };
    let warm_pool = match clients
        .asg
        .describe_warm_pool()
        .auto_scaling_group_name(&name)
        .send()
        .await
    {
        Ok(out) => out.warm_pool_configuration().is_some(),
        Err(e) => {
            unreadable.push(sdk_error(&format!("DescribeWarmPool {name}"), &e));
            false
        }
    };
    let distribution = g
        .mixed_instances_policy()
        .and_then(|m| m.instances_distribution());
    let spot = distribution
        .is_some_and(|d| d.on_demand_percentage_above_base_capacity().unwrap_or(100) < 100);
    let retains_on_abandon = g
        .instance_lifecycle_policy()
        .and_then(|p| p.retention_triggers())
        .and_then(|t| t.terminate_hook_abandon())
        .is_some_and(|a| a.as_str() == "retain");
    Group {
        name,
        arn: g.auto_scaling_group_arn().unwrap_or_default().to_string(),
        zones: g.availability_zones().to_vec(),
        suspended: g
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name().map(String::from))
            .collect(),
        hooks,
        tags: g
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_string(),
                    t.value().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        capacity_rebalance: g.capacity_rebalance().unwrap_or(false),
        max_instance_lifetime: g.max_instance_lifetime().map(i64::from),
        warm_pool,
        mixed_instances: g.mixed_instances_policy().is_some(),
        spot,
        instances: g
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(String::from))
            .collect(),
        retains_on_abandon,
        has_cluster_nodes: false,
    }
}

/// The group's scaling activities since `since`, newest first (AWS's order).
pub async fn activities(
    clients: &Clients,
    group: &str,
    since: jiff::Timestamp,
) -> Result<Vec<Activity>, String> {
    let mut out = Vec::new();
    let mut token = None;
    for _ in 0..MAX_ACTIVITY_PAGES {
        let page = clients
            .asg
            .describe_scaling_activities()
            .auto_scaling_group_name(group)
            .max_records(100)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| sdk_error(&format!("DescribeScalingActivities {group}"), &e))?;
        let mut older = false;
        for a in page.activities() {
            let start = a
                .start_time()
                .and_then(|t| jiff::Timestamp::from_second(t.secs()).ok())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            older |= start < since;
            out.push(Activity {
                start,
                description: a.description().unwrap_or_default().to_string(),
                cause: a.cause().unwrap_or_default().to_string(),
                status: a
                    .status_code()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
            });
        }
        token = page.next_token().map(String::from);
        if token.is_none() || older {
            break;
        }
    }
    Ok(out)
}

/// The rules of the default event bus with their targets, and the queue when `queue_url` is
/// given.
pub async fn routing(
    clients: &Clients,
    queue_url: Option<&str>,
    unreadable: &mut Vec<String>,
) -> Routing {
    let mut rules = Vec::new();
    let mut token = None;
    loop {
        let page = match clients
            .events
            .list_rules()
            .set_next_token(token)
            .send()
            .await
        {
            Ok(p) => p,
            Err(e) => {
                unreadable.push(sdk_error("ListRules", &e));
                break;
            }
        };
        for r in page.rules() {
            let name = r.name().unwrap_or_default().to_string();
            let targets = match clients
                .events
                .list_targets_by_rule()
                .rule(&name)
                .send()
                .await
            {
                Ok(t) => t.targets().iter().map(|t| t.arn().to_string()).collect(),
                Err(e) => {
                    unreadable.push(sdk_error(&format!("ListTargetsByRule {name}"), &e));
                    Vec::new()
                }
            };
            rules.push(Rule {
                name,
                arn: r.arn().unwrap_or_default().to_string(),
                enabled: r.state().is_some_and(|s| s.as_str() == "ENABLED"),
                pattern: r.event_pattern().and_then(|p| serde_json::from_str(p).ok()),
                targets,
            });
        }
        token = page.next_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    let queue = match queue_url {
        Some(url) => queue(clients, url, unreadable).await,
        None => None,
    };
    Routing { rules, queue }
}

async fn queue(clients: &Clients, url: &str, unreadable: &mut Vec<String>) -> Option<Queue> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let read = || async {
        clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::QueueArn)
            .attribute_names(A::Policy)
            .attribute_names(A::RedrivePolicy)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
    };
    let out = match read().await {
        Ok(o) => o,
        Err(e) => {
            unreadable.push(sdk_error(&format!("GetQueueAttributes {url}"), &e));
            return None;
        }
    };
    let count = |out: &aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput,
                 k: &A| {
        out.attributes()
            .and_then(|a| a.get(k))
            .and_then(|v| v.parse::<i64>().ok())
    };
    let depth = |out| {
        (
            count(out, &A::ApproximateNumberOfMessages),
            count(out, &A::ApproximateNumberOfMessagesNotVisible),
        )
    };
    let (mut in_flight, mut unreceived) = (depth(&out).1, None);
    if let (Some(waiting), Some(0)) = depth(&out) {
        if waiting > 0 {
            tokio::time::sleep(super::facts::BACKLOG_RECHECK).await;
            match read().await {
                Ok(again) => {
                    let (waiting, flying) = depth(&again);
                    in_flight = flying;
                    unreceived = waiting.filter(|w| *w > 0 && flying == Some(0));
                }
                Err(e) => unreadable.push(sdk_error(&format!("GetQueueAttributes {url}"), &e)),
            }
        }
    }
    let attrs = out.attributes();
    let get = |k: &A| attrs.and_then(|a| a.get(k)).cloned();
    let dead_letter = get(&A::RedrivePolicy)
        .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
        .and_then(|p| {
            let arn = p.get("deadLetterTargetArn")?.as_str()?.to_string();
            let count = match p.get("maxReceiveCount")? {
                serde_json::Value::Number(n) => n.as_i64()?,
                serde_json::Value::String(s) => s.parse().ok()?,
                _ => return None,
            };
            Some((arn, count))
        });
    Some(Queue {
        url: url.to_string(),
        arn: get(&A::QueueArn).unwrap_or_default(),
        policy: get(&A::Policy).and_then(|p| serde_json::from_str(&p).ok()),
        dead_letter,
        in_flight,
        unreceived,
    })
}
