//! `termguard audit` against the AWS test peer (`tests/aws/moto_server.py`): the built binary,
//! pointed at the peer through the standard SDK configuration, reading groups, hooks, scaling
//! activities, EventBridge rules and the queue. Each rule fires on a setup with its hazard and
//! stays silent once the hazard is fixed; the incident's group is critical, and after an AZ
//! rebalance without a hook its history shows the termination as undrained.

#[path = "common/cluster.rs"]
#[macro_use]
mod cluster;
#[path = "common/moto.rs"]
mod moto;

use aws_sdk_sqs::types::QueueAttributeName;
use moto::Moto;
use serde_json::{json, Value};

type Result = anyhow::Result<()>;

struct Audit {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Audit {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

/// Runs `termguard audit ARGS` against the peer, AWS only (`--no-cluster`).
async fn audit(m: &Moto, args: &[&str]) -> Audit {
    let mut all = vec!["--no-cluster"];
    all.extend_from_slice(args);
    audit_with(m, &all).await
}

/// Runs `termguard audit ARGS` against the peer.
async fn audit_with(m: &Moto, args: &[&str]) -> Audit {
    let out = m
        .termguard()
        .arg("audit")
        .args(args)
        .output()
        .await
        .expect("termguard audit runs");
    Audit {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The (id, resource) of every finding.
fn findings(report: &Value) -> Vec<(String, String)> {
    report["findings"]
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
        .unwrap_or_default()
}

fn events(m: &Moto) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(&m.aws)
}

/// The findings of an AWS-only audit of the group `workers` with the queue at `url`.
async fn workers_findings(m: &Moto, url: &str) -> Vec<(String, String)> {
    findings(
        &audit(m, &["--group", "workers", "--queue-url", url, "-o", "json"])
            .await
            .json(),
    )
}

/// A rule sending the group's lifecycle actions to the queue; returns the rule's ARN.
async fn route_lifecycle(m: &Moto, group: &str, queue_arn: &str) -> String {
    let pattern = json!({
        "source": ["aws.autoscaling"],
        "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
        "detail": {"AutoScalingGroupName": [group]},
    });
    let arn = events(m)
        .put_rule()
        .name(format!("termguard-{group}"))
        .event_pattern(pattern.to_string())
        .send()
        .await
        .expect("PutRule")
        .rule_arn()
        .unwrap_or_default()
        .to_string();
    events(m)
        .put_targets()
        .rule(format!("termguard-{group}"))
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("termguard")
                .arn(queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("PutTargets");
    arn
}

async fn allow_eventbridge(m: &Moto, url: &str, queue_arn: &str, rule_arn: &str) {
    let policy = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
    }]});
    m.sqs
        .set_queue_attributes()
        .queue_url(url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .expect("SetQueueAttributes Policy");
}

async fn redrive(m: &Moto, url: &str, dead_letter_arn: &str, max_receive_count: u32) {
    m.sqs
        .set_queue_attributes()
        .queue_url(url)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": max_receive_count.to_string()})
                .to_string(),
        )
        .send()
        .await
        .expect("SetQueueAttributes RedrivePolicy");
}

async fn put_termination_hook(m: &Moto, group: &str) {
    m.asg
        .put_lifecycle_hook()
        .auto_scaling_group_name(group)
        .lifecycle_hook_name("termguard-terminate")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(300)
        .default_result("CONTINUE")
        .send()
        .await
        .expect("PutLifecycleHook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incidents_group_is_critical_its_history_shows_the_undrained_rebalance_and_the_fix_clears_it(
) -> Result {
    let m = Moto::start().await;
    m.group("workers", 3, &[("termguard.io/cluster", "prod")])
        .await;
    let (url, arn) = m.queue("termguard").await;
    // The incident: AZRebalance takes a node away, no hook to wait for a drain.
    let gone = m.simulate_az_rebalance("workers", None).await;

    let run = audit(
        &m,
        &[
            "--cluster-name",
            "prod",
            "--queue-url",
            &url,
            "-o",
            "json",
            "--fail-on",
            "critical",
        ],
    )
    .await;
    assert_eq!(
        run.code,
        Some(1),
        "a critical finding fails the pipeline: {}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["groups"][0]["group"], "workers");
    assert_eq!(report["groups"][0]["reasons"], json!(["tagged"]));
    let found = findings(&report);
    assert!(
        found.contains(&(
            "az-rebalance-without-termination-hook".into(),
            "asg/workers".into()
        )),
        "{found:?}"
    );
    let critical = &report["findings"][0];
    assert_eq!(critical["severity"], "critical");
    assert!(
        critical["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("put-lifecycle-hook"),
        "{critical}"
    );
    // The history: the rebalance's termination, with AWS's cause, undrained.
    let history = &report["history"][0];
    assert_eq!(history["group"], "workers");
    assert_eq!(history["hooked"], false);
    let terminations = history["terminations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let t = terminations
        .iter()
        .find(|t| t["instance"] == gone.as_str())
        .unwrap_or_else(|| panic!("{gone} is not in the history: {history:#}"));
    assert_eq!(t["cause"], "AZRebalance");
    assert_eq!(t["undrained"], true);
    assert!(history["undrained"].as_u64() >= Some(1), "{history}");
    assert!(
        run.stderr.is_empty() || !run.stderr.contains("panicked"),
        "{}",
        run.stderr
    );

    // The table says the same to a person.
    let table = audit(&m, &["--cluster-name", "prod", "--queue-url", &url]).await;
    assert_eq!(
        table.code,
        Some(0),
        "without --fail-on the exit is 0: {}",
        table.stderr
    );
    assert!(table.stdout.contains("CRITICAL"), "{}", table.stdout);
    assert!(
        table
            .stdout
            .contains(&format!("{gone} terminated by AZRebalance on ")),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("undrained."), "{}", table.stdout);
    // SARIF for code scanning.
    let sarif = audit(
        &m,
        &["--group", "workers", "--queue-url", &url, "-o", "sarif"],
    )
    .await;
    let sarif: Value = serde_json::from_str(&sarif.stdout)?;
    assert_eq!(sarif["version"], "2.1.0");
    assert!(sarif["runs"][0]["results"].as_array().is_some_and(|r| r
        .iter()
        .any(|r| r["ruleId"] == "az-rebalance-without-termination-hook" && r["level"] == "error")));

    // The hook alone: its events reach no queue yet.
    put_termination_hook(&m, "workers").await;
    let hooked = audit(
        &m,
        &[
            "--group",
            "workers",
            "--queue-url",
            &url,
            "-o",
            "json",
            "--fail-on",
            "critical",
        ],
    )
    .await;
    assert_eq!(
        hooked.code,
        Some(0),
        "no critical finding any more: {}",
        hooked.stdout
    );
    let found = findings(&hooked.json());
    assert!(
        !found
            .iter()
            .any(|(id, _)| id == "az-rebalance-without-termination-hook"),
        "{found:?}"
    );
    assert!(
        found.contains(&("termination-hook-not-routed".into(), "asg/workers".into())),
        "{found:?}"
    );

    // Routed by a rule, but the queue's policy does not let EventBridge send.
    let rule = route_lifecycle(&m, "workers", &arn).await;
    let found = workers_findings(&m, &url).await;
    assert!(
        !found
            .iter()
            .any(|(id, _)| id == "termination-hook-not-routed"),
        "{found:?}"
    );
    assert!(
        found.contains(&(
            "queue-policy-blocks-eventbridge".into(),
            "queue/termguard".into()
        )),
        "{found:?}"
    );

    // The policy, then a dead-letter queue: nothing left.
    allow_eventbridge(&m, &url, &arn, &rule).await;
    let found = workers_findings(&m, &url).await;
    assert_eq!(
        found,
        [(
            "queue-without-dead-letter-queue".to_string(),
            "queue/termguard".to_string()
        )]
    );
    let (_, dlq) = m.queue("termguard-dlq").await;
    redrive(&m, &url, &dlq, 2).await;
    let found = workers_findings(&m, &url).await;
    assert_eq!(
        found,
        [(
            "dead-letter-max-receive-count-too-low".to_string(),
            "queue/termguard".to_string()
        )]
    );
    redrive(&m, &url, &dlq, 10).await;
    let clean = audit(
        &m,
        &[
            "--group",
            "workers",
            "--queue-url",
            &url,
            "-o",
            "json",
            "--fail-on",
            "low",
        ],
    )
    .await;
    assert_eq!(findings(&clean.json()), Vec::<(String, String)>::new());
    assert_eq!(clean.code, Some(0));
    // The history now judges by the hook: the group waits for drains.
    assert_eq!(clean.json()["history"][0]["hooked"], true);
    Ok(())
}

/// The kubeconfig the audit reads the cluster with: on the real control plane the
/// `termguard-audit` user, bound to the shipped read-only ClusterRole only
/// (scripts/rbac-check.py: nothing refused, every rule used); the simulator's otherwise.
fn audit_kubeconfig(c: &cluster::TestCluster) -> String {
    match c.real_dir() {
        Some(dir) => dir.join("termguard-audit.kubeconfig"),
        None => c.kubeconfig().to_path_buf(),
    }
    .to_string_lossy()
    .into_owned()
}

/// The peer with every hook's global timeout `global_timeout` s, and one instance in a group
/// `workers` tagged for the cluster `prod`, with a termination hook.
async fn hooked_workers(global_timeout: u32) -> Moto {
    let m =
        Moto::start_with(&[("TERMGUARD_MOTO_GLOBAL_TIMEOUT", &global_timeout.to_string())]).await;
    m.group("workers", 1, &[("termguard.io/cluster", "prod")])
        .await;
    put_termination_hook(&m, "workers").await;
    m
}

/// A PodDisruptionBudget `name` over the pods labelled `app: NAME`, with `spec` added.
fn budget(
    name: &str,
    spec: Value,
) -> anyhow::Result<k8s_openapi::api::policy::v1::PodDisruptionBudget> {
    let mut s = json!({"selector": {"matchLabels": {"app": name}}});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": s}),
    )?)
}

/// Creates an EC2 launch template in the peer (the Rust tests have no EC2 client: boto3 comes
/// with moto) and returns its name.
fn launch_template(m: &Moto, name: &str) -> String {
    let script = r#"
import sys, boto3
ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
ec2.create_launch_template(LaunchTemplateName=sys.argv[2],
                           LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m5.large"})
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &m.url, name])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "CreateLaunchTemplate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    name.to_string()
}

/// A rule named `name` with `pattern`, targeting the queue.
async fn put_rule(m: &Moto, name: &str, pattern: Value, queue_arn: &str) -> String {
    let arn = events(m)
        .put_rule()
        .name(name)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .expect("PutRule")
        .rule_arn()
        .unwrap_or_default()
        .to_string();
    events(m)
        .put_targets()
        .rule(name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("termguard")
                .arn(queue_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("PutTargets");
    arn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_capacity_rebalancing_a_warm_pool_and_retention_each_need_their_route_or_setting(
) -> Result {
    use aws_sdk_autoscaling::types::{
        InstanceLifecyclePolicy, InstancesDistribution, LaunchTemplate,
        LaunchTemplateSpecification, MixedInstancesPolicy, RetentionTriggers,
    };
    let m = Moto::start().await;
    let template = launch_template(&m, "spot-lt");
    m.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("spot")
        .min_size(0)
        .max_size(10)
        .desired_capacity(2)
        .set_availability_zones(Some(moto::ZONES.iter().map(|z| z.to_string()).collect()))
        .mixed_instances_policy(
            MixedInstancesPolicy::builder()
                .launch_template(
                    LaunchTemplate::builder()
                        .launch_template_specification(
                            LaunchTemplateSpecification::builder()
                                .launch_template_name(&template)
                                .version("$Latest")
                                .build(),
                        )
                        .build(),
                )
                .instances_distribution(
                    InstancesDistribution::builder()
                        .on_demand_percentage_above_base_capacity(0)
                        .spot_allocation_strategy("price-capacity-optimized")
                        .build(),
                )
                .build(),
        )
        .capacity_rebalance(true)
        .max_instance_lifetime(7 * 86_400)
        .instance_lifecycle_policy(
            InstanceLifecyclePolicy::builder()
                .retention_triggers(
                    RetentionTriggers::builder()
                        .terminate_hook_abandon("retain".into())
                        .build(),
                )
                .build(),
        )
        .send()
        .await?;
    m.asg
        .put_warm_pool()
        .auto_scaling_group_name("spot")
        .min_size(1)
        .send()
        .await?;
    m.asg
        .put_lifecycle_hook()
        .auto_scaling_group_name("spot")
        .lifecycle_hook_name("termguard-terminate")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(300)
        .default_result("ABANDON")
        .send()
        .await?;
    let (url, arn) = m.queue("tg").await;
    let (_, dlq) = m.queue("tg-dlq").await;
    redrive(&m, &url, &dlq, 10).await;
    // Terminations into EC2 only: returns to the warm pool match no rule.
    let lifecycle = |destination: Option<&str>| {
        let mut detail = json!({"AutoScalingGroupName": ["spot"]});
        if let Some(d) = destination {
            detail["Destination"] = json!([d]);
        }
        json!({
            "source": ["aws.autoscaling"],
            "detail-type": ["EC2 Instance-terminate Lifecycle Action"],
            "detail": detail,
        })
    };
    let rule = put_rule(&m, "termguard-lifecycle", lifecycle(Some("EC2")), &arn).await;
    allow_eventbridge(&m, &url, &arn, &rule).await;

    let of_spot = |all: Vec<(String, String)>| {
        let mut ids: Vec<String> = all
            .into_iter()
            .filter(|(_, r)| r == "asg/spot")
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids
    };
    let run = || async {
        findings(
            &audit(&m, &["--group", "spot", "--queue-url", &url, "-o", "json"])
                .await
                .json(),
        )
    };
    assert_eq!(
        of_spot(run().await),
        [
            "abandon-retains-instances",
            "rebalance-recommendations-not-routed",
            "spot-warnings-not-routed",
            "warm-pool-returns-not-routed",
        ]
    );

    // The fixes: a lifecycle rule for both destinations, rules for Spot warnings and rebalance
    // recommendations (the queue's policy lets every termguard rule send), CONTINUE.
    put_rule(&m, "termguard-lifecycle", lifecycle(None), &arn).await;
    let spot = put_rule(
        &m,
        "termguard-spot",
        json!({"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]}),
        &arn,
    )
    .await;
    put_rule(
        &m,
        "termguard-rebalance",
        json!({"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]}),
        &arn,
    )
    .await;
    allow_eventbridge(
        &m,
        &url,
        &arn,
        &spot.replace("termguard-spot", "termguard-*"),
    )
    .await;
    m.asg
        .put_lifecycle_hook()
        .auto_scaling_group_name("spot")
        .lifecycle_hook_name("termguard-terminate")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(300)
        .default_result("CONTINUE")
        .send()
        .await?;
    let found = run().await;
    assert!(of_spot(found.clone()).is_empty(), "{found:?}");
    assert!(found.is_empty(), "{found:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_rebalance_leaves_the_missing_hook_high_and_a_hook_to_the_queue_clears_it(
) -> Result {
    let m = Moto::start().await;
    m.group("batch", 2, &[]).await;
    m.asg
        .suspend_processes()
        .auto_scaling_group_name("batch")
        .scaling_processes("AZRebalance")
        .send()
        .await?;
    let (url, arn) = m.queue("tg").await;
    let found = findings(
        &audit(&m, &["--group", "batch", "--queue-url", &url, "-o", "json"])
            .await
            .json(),
    );
    assert!(
        found.contains(&("no-termination-hook".into(), "asg/batch".into())),
        "{found:?}"
    );
    assert!(
        !found
            .iter()
            .any(|(id, _)| id == "az-rebalance-without-termination-hook"),
        "{found:?}"
    );
    // A hook that sends to the queue itself needs no EventBridge rule.
    m.asg
        .put_lifecycle_hook()
        .auto_scaling_group_name("batch")
        .lifecycle_hook_name("tg")
        .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
        .heartbeat_timeout(300)
        .notification_target_arn(&arn)
        .role_arn("arn:aws:iam::123456789012:role/asg-to-sqs")
        .send()
        .await?;
    let found = findings(
        &audit(&m, &["--group", "batch", "--queue-url", &url, "-o", "json"])
            .await
            .json(),
    );
    assert!(!found.iter().any(|(_, r)| r == "asg/batch"), "{found:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_nothing_receives_is_found_and_a_receive_clears_it() -> Result {
    let m = Moto::start().await;
    m.group("workers", 2, &[]).await;
    let (url, _) = m.queue("tg").await;
    let not_consumed = |found: &[(String, String)]| {
        found
            .iter()
            .any(|(id, r)| id == "queue-not-consumed" && r == "queue/tg")
    };
    assert!(
        !not_consumed(&workers_findings(&m, &url).await),
        "an empty queue says nothing"
    );
    m.send(&url, r#"{"version": "0"}"#).await;
    let report = audit(
        &m,
        &["--group", "workers", "--queue-url", &url, "-o", "json"],
    )
    .await
    .json();
    assert!(not_consumed(&findings(&report)), "{report}");
    // Something receives it (and keeps it in flight, as a drain does): consumed.
    m.sqs
        .receive_message()
        .queue_url(&url)
        .visibility_timeout(120)
        .send()
        .await?;
    assert!(!not_consumed(&workers_findings(&m, &url).await));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_a_config_file_and_the_command_line_wins() -> Result {
    let m = Moto::start().await;
    m.group("batch", 2, &[]).await;
    m.group("workers", 2, &[]).await;
    let (url, _) = m.queue("tg").await;
    let file = std::env::temp_dir().join(format!("termguard-audit-{}.yaml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "group: [batch]\nno-cluster: true\nqueue-url: {url}\noutput: json\nfail-on: critical\n"
        ),
    )?;
    let path = file.to_string_lossy().into_owned();
    let run = audit_with(&m, &["--config", &path]).await;
    let report = run.json();
    assert_eq!(report["groups"][0]["group"], "batch", "{report}");
    assert_eq!(
        run.code,
        Some(1),
        "fail-on critical from the file: {report}"
    );
    // The command line's --fail-on wins over the file's.
    let run = audit_with(
        &m,
        &["--config", &path, "--fail-on", "high", "--group", "workers"],
    )
    .await;
    let report = run.json();
    let groups: Vec<&str> = report["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["group"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        groups,
        ["workers"],
        "--group on the line replaces the file's"
    );
    // An option `audit` does not have is named.
    std::fs::write(&file, "drain-on-rebalance: true\n")?;
    let run = audit_with(&m, &["--config", &path]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`termguard audit` has no option --drain-on-rebalance"),
        "{}",
        run.stderr
    );
    let _ = std::fs::remove_file(&file);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_audit_or_an_unknown_group_is_said_plainly() -> Result {
    let m = Moto::start().await;
    let none = audit(&m, &[]).await;
    assert_eq!(none.code, Some(2), "{}", none.stdout);
    assert!(none.stderr.contains("no group to audit"), "{}", none.stderr);
    let unknown = audit(&m, &["--group", "nope", "-o", "json"]).await;
    assert_eq!(unknown.code, Some(0), "{}", unknown.stderr);
    let report = unknown.json();
    assert!(
        report["unreadable"].as_array().is_some_and(|u| u
            .iter()
            .any(|u| u.as_str().is_some_and(|s| s.contains("nope")))),
        "{report}"
    );
    let help = tokio::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
        .args(["audit", "--help"])
        .output()
        .await?;
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in ["--group", "--fail-on", "sarif", "Exit status", "six weeks"] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
    Ok(())
}

both_backends! {
    async fn the_clusters_side_finds_an_unmanaged_group_a_deadlocked_budget_and_a_node_it_cannot_match(backend) -> Result {
        use k8s_openapi::api::core::v1::Node;
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

        let m = Moto::start().await;
        // A group over three zones, with a termination hook, and no tag naming the cluster.
        m.group("workers", 2, &[]).await;
        put_termination_hook(&m, "workers").await;
        let instances = m.instances("workers").await;
        let nodes: String = instances
            .iter()
            .enumerate()
            .map(|(i, inst)| format!("- {{name: node-{i}, zone: {}, instanceId: {}}}\n", inst.zone, inst.id))
            .collect();
        let scenario = format!(
            "defaults: {{startupMs: 100, shutdownMs: 100}}\nnodes:\n{nodes}workloads:\n- {{kind: Deployment, name: web, replicas: 2}}\n"
        );
        let c = cluster::TestCluster::start_settled(backend, &scenario).await;
        let kubeconfig = audit_kubeconfig(&c);
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(c.admin.clone(), "default");
        budgets.create(&PostParams::default(), &budget("web", json!({"maxUnavailable": 0}))?).await?;
        let nodes_api: Api<Node> = Api::all(c.admin.clone());
        nodes_api
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "laptop"}}))?,
            )
            .await?;

        let (url, _) = m.queue("tg").await;
        let run = audit_with(&m, &["--kubeconfig", &kubeconfig, "--cluster-name", "prod", "--queue-url", &url, "-o", "json"]).await;
        let report = run.json();
        assert_eq!(report["groups"][0]["group"], "workers", "{report}");
        assert_eq!(report["groups"][0]["reasons"], json!(["has-nodes"]), "found through its nodes");
        let found = findings(&report);
        for want in [
            ("group-not-managed", "asg/workers"),
            ("pdb-never-allows-eviction", "pdb/default/web"),
            ("node-without-provider-id", "node/laptop"),
            ("queue-not-consumed", "queue/tg"),
        ] {
            assert!(found.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} in {found:?}: {report}");
        }
        let deadlock = report["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == "pdb-never-allows-eviction" && f["resource"] == "pdb/default/web"))
            .cloned()
            .unwrap_or_default();
        assert!(deadlock["message"].as_str().is_some_and(|m| m.contains("default/web-")), "names the pods: {deadlock}");

        // The fixes: tag the group, give the budget room, remove the node no instance backs.
        m.asg
            .create_or_update_tags()
            .tags(
                aws_sdk_autoscaling::types::Tag::builder()
                    .key("termguard.io/cluster")
                    .value("prod")
                    .resource_id("workers")
                    .resource_type("auto-scaling-group")
                    .propagate_at_launch(false)
                    .build(),
            )
            .send()
            .await?;
        budgets
            .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"maxUnavailable": 1}})))
            .await?;
        nodes_api.delete("laptop", &DeleteParams::default()).await?;
        // termguard itself, reading the queue (on a simulated node the pod runs and is Ready).
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(c.admin.clone(), "default");
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "termguard-0", "labels": {"app": "termguard"}},
                "spec": {"nodeName": "node-0", "containers": [{
                    "name": "termguard", "image": "ghcr.io/termguard/termguard:0.1",
                    "args": ["run", "--queue-url", url, "--cluster-name", "prod"],
                }]},
            }))?,
        )
        .await?;
        let ready = cluster::eventually(std::time::Duration::from_secs(60), || async {
            c.pod("default", "termguard-0").await.is_some_and(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
        })
        .await;
        assert!(ready, "the termguard pod became ready: {:?}", c.pod("default", "termguard-0").await);
        let report = audit_with(&m, &["--kubeconfig", &kubeconfig, "--cluster-name", "prod", "--queue-url", &url, "-o", "json"]).await.json();
        assert_eq!(report["groups"][0]["reasons"], json!(["tagged", "has-nodes"]), "{report}");
        let found = findings(&report);
        for gone in [
            ("group-not-managed", "asg/workers"),
            ("pdb-never-allows-eviction", "pdb/default/web"),
            ("node-without-provider-id", "node/laptop"),
            ("queue-not-consumed", "queue/tg"),
        ] {
            assert!(!found.contains(&(gone.0.to_string(), gone.1.to_string())), "{gone:?} in {found:?}");
        }
        Ok(())
    }
}

both_backends! {
    async fn a_drain_its_budget_makes_longer_than_the_hook_allows_is_found_and_a_wider_budget_clears_it(backend) -> Result {
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use kube::api::{Api, Patch, PatchParams, PostParams};

        // Every hook's global timeout is 35 s: room for one round of 30-s grace periods.
        let m = hooked_workers(35).await;
        let instance = m.instances("workers").await.remove(0);
        let scenario = format!(
            "defaults: {{startupMs: 100, shutdownMs: 100}}\nnodes:\n- {{name: node-0, zone: {}, instanceId: {}}}\n\
             workloads:\n- {{kind: Deployment, name: api, replicas: 3}}\n",
            instance.zone, instance.id
        );
        let c = cluster::TestCluster::start_settled(backend, &scenario).await;
        let kubeconfig = audit_kubeconfig(&c);
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(c.admin.clone(), "default");
        budgets.create(&PostParams::default(), &budget("api", json!({"maxUnavailable": 1}))?).await?;
        let run = || async {
            audit_with(&m, &["--kubeconfig", &kubeconfig, "--cluster-name", "prod", "-o", "json"]).await.json()
        };
        // One at a time: two waits for a replacement (10 s each, no readiness probe) and a
        // last grace period of 30 s, 50 s against the hook's 35.
        let report = run().await;
        let finding = report["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == "drain-beyond-hook-timeout").cloned())
            .unwrap_or_else(|| panic!("drain-beyond-hook-timeout in {report}"));
        assert_eq!(finding["resource"], "node/node-0", "{finding}");
        assert!(finding["message"].as_str().is_some_and(|m| m.contains("at least 50 s") && m.contains("35 s")), "{finding}");
        // All three at once: one round, 30 s.
        budgets
            .patch("api", &PatchParams::default(), &Patch::Merge(json!({"spec": {"maxUnavailable": 3}})))
            .await?;
        let report = run().await;
        assert!(!findings(&report).iter().any(|(id, _)| id == "drain-beyond-hook-timeout"), "{report}");
        Ok(())
    }
}

both_backends! {
    async fn workloads_a_drain_takes_down_grace_periods_a_notice_cannot_give_and_an_unbalanced_autoscaler_are_found_then_fixed(backend) -> Result {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::{Node, Pod};
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

        // Hooks let a termination wait 300 s at most.
        let m = hooked_workers(300).await;
        // Two one-zone groups: the per-zone workaround cluster-autoscaler must balance.
        m.asg
            .create_launch_configuration()
            .launch_configuration_name("zone-lc")
            .image_id("ami-12c6146b")
            .instance_type("m5.large")
            .send()
            .await?;
        for (name, zone) in [("zone-a", "us-east-1a"), ("zone-b", "us-east-1b")] {
            m.asg
                .create_auto_scaling_group()
                .auto_scaling_group_name(name)
                .launch_configuration_name("zone-lc")
                .min_size(0)
                .max_size(3)
                .desired_capacity(0)
                .availability_zones(zone)
                .tags(
                    aws_sdk_autoscaling::types::Tag::builder()
                        .key("termguard.io/cluster")
                        .value("prod")
                        .resource_id(name)
                        .resource_type("auto-scaling-group")
                        .propagate_at_launch(false)
                        .build(),
                )
                .send()
                .await?;
        }
        let instance = m.instances("workers").await.remove(0);
        let scenario = format!(
            "defaults: {{startupMs: 100, shutdownMs: 100}}\nnodes:\n- {{name: node-0, zone: {}, instanceId: {}}}\n",
            instance.zone, instance.id
        );
        let c = cluster::TestCluster::start_settled(backend, &scenario).await;
        let kubeconfig = audit_kubeconfig(&c);
        let pods: Api<Pod> = Api::namespaced(c.admin.clone(), "default");
        let pod = |name: &str, spec: Value| -> anyhow::Result<Pod> {
            let mut spec = spec;
            spec["nodeName"] = json!("node-0");
            Ok(serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": name}}, "spec": spec}))?)
        };
        let post = PostParams::default();
        pods.create(&post, &pod("pgbouncer-0", json!({"containers": [{"name": "c", "image": "bitnami/pgbouncer:1.23"}]}))?).await?;
        pods.create(&post, &pod("batch-0", json!({"terminationGracePeriodSeconds": 600, "containers": [{"name": "c", "image": "example/batch:1"}]}))?).await?;
        let autoscaler = |args: Value| pod("cluster-autoscaler-0", json!({"containers": [{"name": "c",
            "image": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.32.0",
            "command": ["./cluster-autoscaler"], "args": args}]}));
        pods.create(&post, &autoscaler(json!(["--cloud-provider=aws"]))?).await?;
        let deployments: Api<Deployment> = Api::namespaced(c.admin.clone(), "default");
        deployments
            .create(
                &post,
                &serde_json::from_value(json!({
                    "metadata": {"name": "solo"},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "solo"}},
                             "template": {"metadata": {"labels": {"app": "solo"}},
                                          "spec": {"containers": [{"name": "c", "image": "example/solo:1"}]}}},
                }))?,
            )
            .await?;
        // The node is Spot capacity, as Karpenter labels it.
        let nodes: Api<Node> = Api::all(c.admin.clone());
        nodes
            .patch("node-0", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"karpenter.sh/capacity-type": "spot"}}})))
            .await?;

        let run = || async {
            findings(&audit_with(&m, &["--kubeconfig", &kubeconfig, "--cluster-name", "prod", "-o", "json"]).await.json())
        };
        let hazards = [
            ("single-replica-workload", "deployment/default/solo"),
            ("drain-last-candidate-unmarked", "pod/default/pgbouncer-0"),
            ("grace-period-beyond-hook-timeout", "pod/default/batch-0"),
            ("grace-period-beyond-spot-warning", "pod/default/batch-0"),
            ("cluster-autoscaler-without-balance-similar-node-groups", "pod/default/cluster-autoscaler-0"),
        ];
        let found = run().await;
        for want in hazards {
            assert!(found.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} in {found:?}");
        }

        // The fixes: a budget over the single replica, pgbouncer marked to leave last, the
        // long shutdown gone, cluster-autoscaler balancing the groups.
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(c.admin.clone(), "default");
        budgets.create(&PostParams::default(), &budget("solo", json!({"maxUnavailable": 1}))?).await?;
        pods.patch(
            "pgbouncer-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"termguard.io/drain-order": "last"}}})),
        )
        .await?;
        let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
        pods.delete("batch-0", &now).await?;
        pods.delete("cluster-autoscaler-0", &now).await?;
        let gone = cluster::eventually(std::time::Duration::from_secs(30), || async {
            c.pod("default", "cluster-autoscaler-0").await.is_none() && c.pod("default", "batch-0").await.is_none()
        })
        .await;
        assert!(gone, "the deleted pods went");
        pods.create(&post, &autoscaler(json!(["--cloud-provider=aws", "--balance-similar-node-groups=true"]))?).await?;
        let found = run().await;
        for fixed in hazards {
            assert!(!found.contains(&(fixed.0.to_string(), fixed.1.to_string())), "{fixed:?} in {found:?}");
        }
        Ok(())
    }
}
