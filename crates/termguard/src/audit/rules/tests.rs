use super::*;
use crate::audit::facts::{Hook, Replicas, TERMINATING};

const QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:termguard";
const RULE_ARN: &str = "arn:aws:events:us-east-1:123456789012:rule/termguard-lifecycle";

fn incident() -> Group {
    Group {
        name: "workers".into(),
        arn: "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:1:autoScalingGroupName/workers".into(),
        zones: vec!["us-east-1a".into(), "us-east-1b".into(), "us-east-1c".into()],
        instances: vec!["i-0aaa".into()],
        tags: vec![("termguard.io/cluster".into(), "prod".into())],
        has_cluster_nodes: true,
        ..Default::default()
    }
}

fn hook(target: Option<&str>) -> Hook {
    Hook {
        name: "termguard-terminate".into(),
        transition: TERMINATING.into(),
        heartbeat_timeout: 300,
        global_timeout: 30_000,
        default_result: "CONTINUE".into(),
        target: target.map(String::from),
    }
}

fn lifecycle_rule(group: &str) -> Rule {
    Rule {
        name: "termguard-lifecycle".into(),
        arn: RULE_ARN.into(),
        enabled: true,
        pattern: Some(json!({
            "source": ["aws.autoscaling"],
            "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
            "detail": {"AutoScalingGroupName": [group]},
        })),
        targets: vec![QUEUE_ARN.into()],
    }
}

fn allowing_policy() -> Value {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": QUEUE_ARN,
        "Condition": {"ArnEquals": {"aws:SourceArn": RULE_ARN}},
    }]})
}

fn routed() -> Routing {
    Routing {
        rules: vec![lifecycle_rule("workers")],
        queue: Some(Queue {
            url: "http://sqs/termguard".into(),
            arn: QUEUE_ARN.into(),
            policy: Some(allowing_policy()),
            dead_letter: Some((
                "arn:aws:sqs:us-east-1:123456789012:termguard-dlq".into(),
                10,
            )),
            ..Default::default()
        }),
    }
}

fn ctx() -> Context {
    Context {
        tags: ClusterTags::new(Some("prod"), None).unwrap_or_default(),
    }
}

fn ids_of(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.id).collect()
}

#[test]
fn the_incidents_group_is_critical_until_a_hook_or_a_suspended_rebalance() {
    let g = incident();
    let found = group_findings(&g, &routed(), &ctx());
    assert_eq!(ids_of(&found), [ids::AZ_REBALANCE_WITHOUT_HOOK]);
    assert_eq!(found[0].severity, Severity::Critical);
    assert!(
        found[0]
            .fix
            .contains("put-lifecycle-hook --auto-scaling-group-name workers"),
        "{}",
        found[0].fix
    );
    assert!(found[0].fix.contains("--scaling-processes AZRebalance"));

    // AZRebalance suspended: still no hook, so scale-in goes undrained (high, not critical).
    let suspended = Group {
        suspended: vec!["AZRebalance".into()],
        ..incident()
    };
    assert_eq!(
        ids_of(&group_findings(&suspended, &routed(), &ctx())),
        [ids::NO_TERMINATION_HOOK]
    );
    // One zone: nothing to rebalance.
    let one_zone = Group {
        zones: vec!["us-east-1a".into()],
        ..incident()
    };
    assert_eq!(
        ids_of(&group_findings(&one_zone, &routed(), &ctx())),
        [ids::NO_TERMINATION_HOOK]
    );

    // The fix: a termination hook and a rule to the queue.
    let fixed = Group {
        hooks: vec![hook(None)],
        ..incident()
    };
    assert!(group_findings(&fixed, &routed(), &ctx()).is_empty());
}

#[test]
fn a_launch_hook_is_no_termination_hook() {
    let launch = Hook {
        transition: "autoscaling:EC2_INSTANCE_LAUNCHING".into(),
        ..hook(None)
    };
    let g = Group {
        hooks: vec![launch],
        ..incident()
    };
    assert_eq!(
        ids_of(&group_findings(&g, &routed(), &ctx())),
        [ids::AZ_REBALANCE_WITHOUT_HOOK]
    );
}

#[test]
fn what_else_replaces_nodes_is_named_in_the_no_hook_finding() {
    let g = Group {
        max_instance_lifetime: Some(7 * 86_400),
        warm_pool: true,
        ..incident()
    };
    let found = group_findings(&g, &routed(), &ctx());
    assert!(
        found[0].message.contains("within 7 days"),
        "{}",
        found[0].message
    );
    assert!(
        found[0].message.contains("warm pool"),
        "{}",
        found[0].message
    );
}

#[test]
fn a_hook_whose_events_reach_no_queue_is_found_and_each_route_clears_it() {
    let g = Group {
        hooks: vec![hook(None)],
        ..incident()
    };
    let nothing = Routing {
        rules: vec![],
        ..routed()
    };
    let found = group_findings(&g, &nothing, &ctx());
    assert_eq!(ids_of(&found), [ids::HOOK_NOT_ROUTED]);
    assert_eq!(found[0].severity, Severity::High);

    // A rule for another group, a disabled rule, a rule to another queue: still not routed.
    let other_group = Routing {
        rules: vec![lifecycle_rule("db")],
        ..routed()
    };
    assert_eq!(
        ids_of(&group_findings(&g, &other_group, &ctx())),
        [ids::HOOK_NOT_ROUTED]
    );
    let disabled = Routing {
        rules: vec![Rule {
            enabled: false,
            ..lifecycle_rule("workers")
        }],
        ..routed()
    };
    assert_eq!(
        ids_of(&group_findings(&g, &disabled, &ctx())),
        [ids::HOOK_NOT_ROUTED]
    );
    let elsewhere = Routing {
        rules: vec![Rule {
            targets: vec!["arn:aws:sqs:us-east-1:123456789012:other".into()],
            ..lifecycle_rule("workers")
        }],
        ..routed()
    };
    assert_eq!(
        ids_of(&group_findings(&g, &elsewhere, &ctx())),
        [ids::HOOK_NOT_ROUTED]
    );

    // The hook's own target is the queue: routed without EventBridge.
    let direct = Group {
        hooks: vec![hook(Some(QUEUE_ARN))],
        ..incident()
    };
    assert!(group_findings(&direct, &nothing, &ctx()).is_empty());
    // A broad rule (every Auto Scaling lifecycle action) routes it too.
    let broad = Routing {
        rules: vec![Rule {
            pattern: Some(json!({"source": ["aws.autoscaling"]})),
            ..lifecycle_rule("workers")
        }],
        ..routed()
    };
    assert!(group_findings(&g, &broad, &ctx()).is_empty());
}

#[test]
fn spot_and_capacity_rebalancing_need_their_warnings_routed() {
    let g = Group {
        hooks: vec![hook(None)],
        spot: true,
        capacity_rebalance: true,
        ..incident()
    };
    let found = group_findings(&g, &routed(), &ctx());
    assert_eq!(
        ids_of(&found),
        [ids::SPOT_WARNINGS_NOT_ROUTED, ids::REBALANCE_NOT_ROUTED]
    );
    let mut r = routed();
    r.rules.push(Rule {
        name: "termguard-ec2".into(),
        arn: "arn:aws:events:us-east-1:123456789012:rule/termguard-ec2".into(),
        enabled: true,
        pattern: Some(json!({"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation"]})),
        targets: vec![QUEUE_ARN.into()],
    });
    assert!(group_findings(&g, &r, &ctx()).is_empty());
}

#[test]
fn abandon_with_retention_keeps_half_drained_instances() {
    let abandon = Hook {
        default_result: "ABANDON".into(),
        ..hook(None)
    };
    let g = Group {
        hooks: vec![abandon.clone()],
        retains_on_abandon: true,
        ..incident()
    };
    assert_eq!(
        ids_of(&group_findings(&g, &routed(), &ctx())),
        [ids::ABANDON_RETAINS_INSTANCES]
    );
    // ABANDON alone terminates all the same: no finding.
    let g = Group {
        hooks: vec![abandon],
        ..incident()
    };
    assert!(group_findings(&g, &routed(), &ctx()).is_empty());
}

#[test]
fn a_group_of_the_cluster_not_tagged_for_it_is_not_managed() {
    let g = Group {
        hooks: vec![hook(None)],
        tags: vec![("team".into(), "infra".into())],
        ..incident()
    };
    let found = group_findings(&g, &routed(), &ctx());
    assert_eq!(ids_of(&found), [ids::GROUP_NOT_MANAGED]);
    assert!(
        found[0].fix.contains("Key=termguard.io/cluster,Value=prod"),
        "{}",
        found[0].fix
    );
    // Another cluster's tag does not count either.
    let g = Group {
        tags: vec![("kubernetes.io/cluster/staging".into(), "owned".into())],
        ..g
    };
    assert_eq!(
        ids_of(&group_findings(&g, &routed(), &ctx())),
        [ids::GROUP_NOT_MANAGED]
    );
    let g = Group {
        tags: vec![("kubernetes.io/cluster/prod".into(), "owned".into())],
        ..g
    };
    assert!(group_findings(&g, &routed(), &ctx()).is_empty());
    // A group named on the command line with no node here is not the cluster's to manage.
    let g = Group {
        tags: vec![],
        has_cluster_nodes: false,
        ..g
    };
    assert!(group_findings(&g, &routed(), &ctx()).is_empty());
}

#[test]
fn the_queue_policy_must_let_the_rule_send() {
    assert!(queue_findings(&routed()).is_empty());
    let with_policy = |policy: Option<Value>| {
        let mut r = routed();
        if let Some(q) = r.queue.as_mut() {
            q.policy = policy;
        }
        ids_of(&queue_findings(&r))
    };
    assert_eq!(with_policy(None), [ids::QUEUE_POLICY_BLOCKS_EVENTBRIDGE]);
    // A condition naming another rule.
    let mut other = allowing_policy();
    other["Statement"][0]["Condition"] =
        json!({"ArnEquals": {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/other"}});
    assert_eq!(
        with_policy(Some(other)),
        [ids::QUEUE_POLICY_BLOCKS_EVENTBRIDGE]
    );
    // Another principal, another action.
    let mut principal = allowing_policy();
    principal["Statement"][0]["Principal"] = json!({"Service": "sns.amazonaws.com"});
    assert_eq!(
        with_policy(Some(principal)),
        [ids::QUEUE_POLICY_BLOCKS_EVENTBRIDGE]
    );
    let mut action = allowing_policy();
    action["Statement"][0]["Action"] = json!("sqs:ReceiveMessage");
    assert_eq!(
        with_policy(Some(action)),
        [ids::QUEUE_POLICY_BLOCKS_EVENTBRIDGE]
    );
    // Wildcards that admit it: a rule ARN pattern, every SQS action.
    let mut like = allowing_policy();
    like["Statement"][0]["Condition"] =
        json!({"ArnLike": {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/*"}});
    like["Statement"][0]["Action"] = json!(["sqs:*"]);
    assert!(with_policy(Some(like)).is_empty());
    // ArnEquals takes wildcards too (IAM's ARN operators both do); StringEquals does not.
    let mut equals = allowing_policy();
    equals["Statement"][0]["Condition"] = json!({"ArnEquals": {"aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/termguard-*"}});
    assert!(with_policy(Some(equals.clone())).is_empty());
    equals["Statement"][0]["Condition"] = json!({"StringEquals": {
        "aws:SourceArn": "arn:aws:events:us-east-1:123456789012:rule/termguard-*"}});
    assert_eq!(
        with_policy(Some(equals)),
        [ids::QUEUE_POLICY_BLOCKS_EVENTBRIDGE]
    );
}

#[test]
fn a_missing_dead_letter_queue_or_a_low_receive_count_is_found() {
    let with_dlq = |dlq: Option<(String, i64)>| {
        let mut r = routed();
        if let Some(q) = r.queue.as_mut() {
            q.dead_letter = dlq;
        }
        ids_of(&queue_findings(&r))
    };
    assert_eq!(with_dlq(None), [ids::NO_DEAD_LETTER_QUEUE]);
    assert_eq!(
        with_dlq(Some(("dlq".into(), 2))),
        [ids::LOW_MAX_RECEIVE_COUNT]
    );
    assert!(with_dlq(Some(("dlq".into(), MIN_MAX_RECEIVE_COUNT))).is_empty());
}

#[test]
fn a_warm_pool_whose_returns_no_rule_matches_is_found_and_a_rule_for_both_clears_it() {
    let g = Group {
        hooks: vec![hook(None)],
        warm_pool: true,
        ..incident()
    };
    // Only terminations into EC2: returns to the warm pool are left to wait out the timeout.
    let mut only_ec2 = routed();
    only_ec2.rules[0].pattern = Some(json!({
        "source": ["aws.autoscaling"],
        "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
        "detail": {"AutoScalingGroupName": ["workers"], "Destination": ["EC2"]},
    }));
    let found = group_findings(&g, &only_ec2, &ctx());
    assert_eq!(ids_of(&found), [ids::WARM_POOL_RETURNS_NOT_ROUTED]);
    assert!(found[0].fix.contains("put-rule"), "{}", found[0].fix);
    // The same rule without the Destination filter matches both.
    assert!(group_findings(&g, &routed(), &ctx()).is_empty());
    // Without a warm pool, the EC2-only rule is enough.
    let no_pool = Group {
        warm_pool: false,
        ..g.clone()
    };
    assert!(group_findings(&no_pool, &only_ec2, &ctx()).is_empty());
    // A hook that sends to the queue itself delivers both.
    let own = Group {
        hooks: vec![hook(Some(QUEUE_ARN))],
        ..g
    };
    assert!(group_findings(&own, &only_ec2, &ctx()).is_empty());
}

#[test]
fn a_queue_nothing_receives_from_is_found_by_its_backlog_or_by_the_missing_replicas() {
    let queue = || routed().queue.unwrap_or_default();
    let replicas = |reading: &[&str], others: &[&str]| Replicas {
        reading: reading.iter().map(|s| s.to_string()).collect(),
        others: others.iter().map(|s| s.to_string()).collect(),
    };
    // Nothing known against it: no backlog, the cluster not read.
    assert!(consumer_findings(&queue(), None).is_empty());
    // A backlog nothing receives: high, whatever the cluster says.
    let stalled = Queue {
        unreceived: Some(3),
        in_flight: Some(0),
        ..queue()
    };
    let found = consumer_findings(&stalled, None);
    assert_eq!(ids_of(&found), [ids::QUEUE_NOT_CONSUMED]);
    assert_eq!(found[0].severity, Severity::High);
    assert!(
        found[0].message.starts_with("3 message(s)"),
        "{}",
        found[0].message
    );
    let found = consumer_findings(&stalled, Some(&replicas(&[], &["tg/a reads Q2"])));
    assert!(
        found[0].message.contains("tg/a reads Q2"),
        "{}",
        found[0].message
    );
    // No replica reads it: high when nothing is in flight, medium when something receives.
    let idle = Queue {
        in_flight: Some(0),
        ..queue()
    };
    let found = consumer_findings(&idle, Some(&replicas(&[], &[])));
    assert_eq!(
        found.iter().map(|f| (f.id, f.severity)).collect::<Vec<_>>(),
        [(ids::QUEUE_NOT_CONSUMED, Severity::High)]
    );
    let busy = Queue {
        in_flight: Some(2),
        ..queue()
    };
    let found = consumer_findings(&busy, Some(&replicas(&[], &[])));
    assert_eq!(found[0].severity, Severity::Medium);
    assert!(
        found[0].message.contains("2 message(s) in flight"),
        "{}",
        found[0].message
    );
    // A ready replica reads it.
    assert!(consumer_findings(&idle, Some(&replicas(&["tg/a"], &[]))).is_empty());
}
