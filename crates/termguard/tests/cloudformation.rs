//! deploy/cloudformation/termguard.yaml, created in the AWS test peer (tests/aws/moto_server.py:
//! moto's CloudFormation, plus the `AWS::SQS::QueuePolicy` and `AWS::AutoScaling::LifecycleHook`
//! types moto lacks), then termguard run against what the stack made.
//!
//! What the peer models and what it does not: the stack's resources are real moto resources (the
//! queues and their redrive policy, the rules and their targets, the IAM role, the hook on the
//! group); a scale-in puts the instance in `Terminating:Wait` and the peer emits the lifecycle
//! event on the default EventBridge bus, where moto's EventBridge matches it against the stack's
//! rules and delivers it to their SQS target, as AWS does. moto's EventBridge does not check the
//! queue's access policy before delivering (AWS drops the event when it does not allow the rule):
//! `termguard audit`, run on the stack, checks the policy instead. IRSA itself (the web identity
//! exchange) is not exercised; the role's trust policy is checked as a document.
//!
//! Runs on the simulator and on the real control plane (`name::sim`, `name::real`), like
//! queue_mode.rs.

#[path = "common/cluster.rs"]
#[macro_use]
mod cluster;
#[path = "common/moto.rs"]
mod moto;

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use aws_sdk_sqs::types::QueueAttributeName;
use moto::Moto;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

type Result<T = ()> = anyhow::Result<T>;

const TEMPLATE: &str = include_str!("../../../deploy/cloudformation/termguard.yaml");
const RULES: &str = include_str!("../../../deploy/aws/eventbridge-rules.json");

/// The name termguard runs with, and the tag on the stack's group.
const CLUSTER: &str = "iac-cluster";
const OIDC: &str = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE";

/// The template's rule resources and the deploy/aws/eventbridge-rules.json rule each one is.
const RULE_OF: [(&str, &str); 5] = [
    ("AsgLifecycleRule", "termguard-asg-lifecycle"),
    ("SpotInterruptionRule", "termguard-spot-interruption"),
    (
        "RebalanceRecommendationRule",
        "termguard-rebalance-recommendation",
    ),
    ("StateChangeRule", "termguard-state-change"),
    ("ScheduledChangeRule", "termguard-scheduled-change"),
];

/// A created stack: its outputs and logical id → physical id.
struct Stack {
    outputs: BTreeMap<String, String>,
    resources: BTreeMap<String, String>,
}

async fn create_stack(m: &Moto, name: &str, groups: &str) -> Result<Stack> {
    let cfn = aws_sdk_cloudformation::Client::new(&m.aws);
    let param = |k: &str, v: &str| {
        Parameter::builder()
            .parameter_key(k)
            .parameter_value(v)
            .build()
    };
    cfn.create_stack()
        .stack_name(name)
        .template_body(TEMPLATE)
        .capabilities(Capability::CapabilityIam)
        .parameters(param("ClusterName", CLUSTER))
        .parameters(param("AutoScalingGroupNames", groups))
        .parameters(param("OidcProvider", OIDC))
        .send()
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let stack = loop {
        let out = cfn.describe_stacks().stack_name(name).send().await?;
        let stack = out
            .stacks()
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no stack {name}"))?;
        match stack.stack_status() {
            Some(StackStatus::CreateComplete) => break stack,
            Some(StackStatus::CreateInProgress) | None => {}
            Some(other) => {
                anyhow::bail!("stack {name}: {other:?} {:?}", stack.stack_status_reason())
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "stack {name} still in progress"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let outputs = stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect();
    let resources = cfn
        .describe_stack_resources()
        .stack_name(name)
        .send()
        .await?
        .stack_resources()
        .iter()
        .filter_map(|r| {
            Some((
                r.logical_resource_id()?.to_string(),
                r.physical_resource_id()?.to_string(),
            ))
        })
        .collect();
    Ok(Stack { outputs, resources })
}

impl Stack {
    fn output(&self, key: &str) -> String {
        self.outputs
            .get(key)
            .unwrap_or_else(|| panic!("output {key} in {:?}", self.outputs))
            .clone()
    }
}

async fn queue_attributes(m: &Moto, url: &str) -> Result<BTreeMap<String, String>> {
    let out = m
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await?;
    Ok(out
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect()
        })
        .unwrap_or_default())
}

/// Checks what the stack made against what the template says; returns the rules' ARNs.
async fn check_resources(m: &Moto, stack: &Stack, groups: &[&str]) -> Result<Vec<String>> {
    let queue_url = stack.output("QueueUrl");
    let queue_arn = stack.output("QueueArn");
    let dlq_arn = stack.output("DeadLetterQueueArn");
    let queue = queue_attributes(m, &queue_url).await?;
    assert_eq!(queue.get("QueueArn"), Some(&queue_arn));
    assert_eq!(
        queue.get("VisibilityTimeout").map(String::as_str),
        Some("90")
    );
    assert_eq!(
        queue.get("SqsManagedSseEnabled").map(String::as_str),
        Some("true")
    );
    let redrive: Value = serde_json::from_str(queue.get("RedrivePolicy").expect("redrive policy"))?;
    assert_eq!(redrive["deadLetterTargetArn"], json!(dlq_arn), "{redrive}");
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "10"
    );
    let dlq = queue_attributes(m, &stack.output("DeadLetterQueueUrl")).await?;
    assert_eq!(dlq.get("QueueArn"), Some(&dlq_arn));
    assert_eq!(
        dlq.get("MessageRetentionPeriod").map(String::as_str),
        Some("1209600")
    );

    // The rules: deploy/aws/eventbridge-rules.json's patterns, the lifecycle one scoped to the
    // groups, each sending to the queue alone.
    let file: Value = serde_json::from_str(RULES)?;
    let events = aws_sdk_eventbridge::Client::new(&m.aws);
    let mut arns = Vec::new();
    for (logical, file_rule) in RULE_OF {
        let name = stack
            .resources
            .get(logical)
            .unwrap_or_else(|| panic!("{logical} in {:?}", stack.resources));
        let rule = events.describe_rule().name(name).send().await?;
        let pattern: Value = serde_json::from_str(rule.event_pattern().unwrap_or_default())?;
        let mut want = file["rules"][file_rule].clone();
        assert!(want.is_object(), "{file_rule} in eventbridge-rules.json");
        if logical == "AsgLifecycleRule" {
            want["detail"] = json!({"AutoScalingGroupName": groups});
        }
        assert_eq!(pattern, want, "{logical}");
        assert_eq!(
            rule.state().map(|s| s.as_str()),
            Some("ENABLED"),
            "{logical}"
        );
        let targets = events.list_targets_by_rule().rule(name).send().await?;
        let target_arns: Vec<&str> = targets.targets().iter().map(|t| t.arn()).collect();
        assert_eq!(target_arns, [queue_arn.as_str()], "{logical}'s targets");
        arns.push(rule.arn().unwrap_or_default().to_string());
    }

    // The queue policy lets EventBridge send from exactly those rules.
    let policy: Value = serde_json::from_str(queue.get("Policy").expect("queue policy"))?;
    let statement = &policy["Statement"][0];
    assert_eq!(
        statement["Principal"],
        json!({"Service": "events.amazonaws.com"})
    );
    assert_eq!(statement["Action"], "sqs:SendMessage");
    assert_eq!(statement["Resource"], json!(queue_arn));
    assert_eq!(
        statement["Condition"]["ArnEquals"]["aws:SourceArn"],
        json!(arns),
        "{policy}"
    );

    // One termination hook per group, as the template sets it.
    for group in groups {
        let hooks = m
            .asg
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(*group)
            .send()
            .await?;
        let hooks = hooks.lifecycle_hooks();
        assert_eq!(hooks.len(), 1, "{group}: {hooks:?}");
        let hook = &hooks[0];
        assert_eq!(hook.lifecycle_hook_name(), Some(moto::HOOK));
        assert_eq!(
            hook.lifecycle_transition(),
            Some("autoscaling:EC2_INSTANCE_TERMINATING")
        );
        assert_eq!(hook.heartbeat_timeout(), Some(300));
        assert_eq!(hook.default_result(), Some("CONTINUE"));
        assert_eq!(hook.notification_target_arn(), None, "routed by the rule");
    }
    assert!(
        stack
            .output("RoleArn")
            .starts_with("arn:aws:iam::123456789012:role/"),
        "{:?}",
        stack.outputs
    );
    Ok(arns)
}

/// `termguard audit --no-cluster --group GROUP --queue-url URL -o json`: the findings' ids and
/// resources.
async fn audit(m: &Moto, group: &str, queue_url: &str) -> Result<Vec<(String, String)>> {
    let out = m
        .termguard()
        .args(["audit", "--no-cluster", "--cluster-name", CLUSTER])
        .args(["--group", group, "--queue-url", queue_url, "-o", "json"])
        .output()
        .await?;
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "audit output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(report["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| {
                    (
                        f["id"].as_str().unwrap_or_default().to_string(),
                        f["resource"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

both_backends! {
    async fn the_stack_routes_a_lifecycle_termination_to_termguard_which_drains_and_completes_it(backend) -> Result {
        let m = Moto::start().await;
        m.group("workers", 3, &[("termguard.io/cluster", CLUSTER)]).await;
        // A group of the account that is not the stack's: its events must not reach the queue.
        m.group("elsewhere", 1, &[]).await;
        let stack = create_stack(&m, "termguard", "workers").await?;
        check_resources(&m, &stack, &["workers"]).await?;
        let queue_url = stack.output("QueueUrl");

        // termguard's own audit finds nothing to fix in what the stack made.
        assert_eq!(audit(&m, "workers", &queue_url).await?, Vec::<(String, String)>::new());

        // The lifecycle rule is scoped to the stack's groups.
        m.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name("elsewhere")
            .lifecycle_hook_name("someone-else")
            .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
            .heartbeat_timeout(300)
            .send()
            .await?;
        let foreign = m.scale_in("elsewhere").await?;
        assert_eq!(foreign["state"], "waiting", "{foreign}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(m.queue_depth(&queue_url).await, (0, 0), "another group's event reached the queue");

        // The cluster: one Node per instance of the stack's group.
        let instances = m.instances("workers").await;
        let mut nodes = BTreeMap::new();
        let mut yaml = String::from("name: cloudformation\ndefaults: {startupMs: 50, shutdownMs: 200}\nnodes:\n");
        for (i, inst) in instances.iter().enumerate() {
            let name = format!("ip-10-0-{i}-10.ec2.internal");
            yaml.push_str(&format!(
                "  - {{name: {name}, zone: {}, instanceId: {}, group: workers}}\n",
                inst.zone, inst.id
            ));
            nodes.insert(inst.id.clone(), name);
        }
        yaml.push_str("workloads:\n  - {kind: Deployment, name: web, replicas: 6, shutdownMs: 300, requests: {cpu: 250m}}\n");
        let cluster = cluster::TestCluster::start_settled(backend, &yaml).await;

        // termguard run, configured the way the template's outputs say.
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cloudformation-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let health = format!("127.0.0.1:{port}");
        let log = dir.join(format!("termguard-{}.log", if cluster.is_real() { "real" } else { "sim" }));
        let mut child = m.termguard()
            .args(["run", "--queue-url", &queue_url, "--cluster-name", CLUSTER])
            .args(["--health-listen", &health, "--visibility-timeout", "10s", "--kubeconfig"])
            .arg(cluster.kubeconfig())            .env("TERMGUARD_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let logs = || std::fs::read_to_string(&log).unwrap_or_default();
        moto::wait_ready(&health, &log, &mut child).await?;

        // A scale-in of the stack's group: the hook holds the instance, the rule brings the event
        // to the queue, termguard drains the node and completes the action.
        let action = m.scale_in("workers").await?;
        assert_eq!(action["hook"], moto::HOOK);
        assert_eq!(action["default_result"], "CONTINUE");
        let instance = s(&action["instance_id"]);
        let node = nodes[&instance].clone();
        let ended = m.wait_action_ended(&s(&action["token"]), Duration::from_secs(60)).await;
        assert_eq!(ended["state"], "completed", "{ended}\n{}", logs());
        assert_eq!(ended["result"], "CONTINUE", "{ended}");
        assert_eq!(ended["ended_by"], "CompleteLifecycleAction", "{ended}");
        let drained = cluster.node(&node).await;
        assert_eq!(drained["spec"]["unschedulable"], true, "{drained}");
        assert_eq!(
            drained["metadata"]["annotations"]["termguard.io/drain-phase"], "drained",
            "{drained}"
        );
        let left: Vec<Value> = cluster
            .pods_on(&node)
            .await
            .into_iter()
            .filter(|p| p["metadata"]["namespace"] == "default")
            .collect();
        assert!(left.is_empty(), "pods left on {node}: {left:?}");
        // The other nodes were not touched; the message is gone from the stack's queue.
        for (id, other) in &nodes {
            if *id != instance {
                assert_ne!(cluster.node(other).await["spec"]["unschedulable"], true, "{other}");
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while m.queue_depth(&queue_url).await != (0, 0) {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "message not deleted\n{}", logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The other group's action was left alone: it never reached termguard.
        let foreign = m.lifecycle_actions(&format!("token={}", s(&foreign["token"]))).await;
        assert_eq!(foreign[0]["state"], "waiting", "{foreign:?}");

        let pid = child.id().map(|p| p.to_string()).unwrap_or_default();
        let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await?;
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
        assert!(status.success(), "exit {status:?}\n{}", logs());
        Ok(())
    }
}

/// Two groups: a hook on each (the conditional second hook), both in the lifecycle rule's scope,
/// and none on a group not listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_group_gets_a_hook_and_the_rules_scope() -> Result {
    let m = Moto::start().await;
    for g in ["blue", "green", "unlisted"] {
        m.group(g, 1, &[("termguard.io/cluster", CLUSTER)]).await;
    }
    let stack = create_stack(&m, "two-groups", "blue,green").await?;
    check_resources(&m, &stack, &["blue", "green"]).await?;
    let unlisted = m
        .asg
        .describe_lifecycle_hooks()
        .auto_scaling_group_name("unlisted")
        .send()
        .await?;
    assert!(unlisted.lifecycle_hooks().is_empty());
    let hooks = stack
        .resources
        .keys()
        .filter(|k| k.starts_with("TerminationHook"))
        .count();
    assert_eq!(hooks, 2, "{:?}", stack.resources);
    let queue_url = stack.output("QueueUrl");
    // The audit also reads every group tagged for the cluster: only the unlisted one is flagged.
    for g in ["blue", "green"] {
        let found: Vec<_> = audit(&m, g, &queue_url)
            .await?
            .into_iter()
            .filter(|(_, r)| r != "asg/unlisted")
            .collect();
        assert_eq!(found, Vec::<(String, String)>::new(), "{g}");
    }
    let found = audit(&m, "unlisted", &queue_url).await?;
    // no-termination-hook, or az-rebalance-without-termination-hook for a group over zones.
    assert!(
        found
            .iter()
            .any(|(id, r)| id.ends_with("termination-hook") && r == "asg/unlisted"),
        "{found:?}"
    );
    Ok(())
}
