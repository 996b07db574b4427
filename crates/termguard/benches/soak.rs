//! The chaos soak: many notices of every kind, with faults all along, and the promise checked
//! at the end as invariants that must all be 0.
//!
//! Over real sockets: the moto peer (tests/aws/moto_server.py) with this cluster's Auto Scaling
//! group (a termination hook, instances replaced as they go) and another cluster's group whose
//! hook sends to the same queue; the Kubernetes simulator with a Node per instance; termguard's
//! queue mode, several replicas in this process on one queue. A seeded generator sends the
//! notices — lifecycle terminations, Spot warnings (stop: the instance comes back), rebalance
//! recommendations, late `stopping` events for live instances, AWS Health changes and their
//! closing, the other cluster's terminations, duplicates, malformed messages — while faults are
//! injected: API 5xx and 429 on every verb and cut watches (the simulator), throttled and
//! failing heartbeats, completions, receives and deletes (the peer), replicas killed and
//! restarted mid-drain, nodes killed mid-drain. A "cloud" loop plays EC2: it kills the Node of
//! every instance the group terminated (counting the pods still on it), joins a Node for every
//! replacement, and brings stopped Spot instances back.
//!
//! Printed at the end, one line each (`invariant <name> <value>`), then `soak: …`; exits 1
//! naming the invariants that are not 0.
//!
//! Run: `cargo bench -p termguard --bench soak -- --notices 1000 --seed 1` (also `--nodes`,
//! `--replicas`, `--interval-ms`). Simulator backend; TERMGUARD_LOG=termguard=info shows logs.

#[path = "common/args.rs"]
mod args;
#[path = "../tests/common/moto.rs"]
mod moto;

use kube_sim::resources::{NODES, PODS};
use kube_sim::scenario::{NodeSpec, Scenario};
use kube_sim::Sim;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use termguard::aws::groups::ClusterTags;
use termguard::cluster::drain::Backoff;
use termguard::commands::run::{QueueMode, Settings};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Options {
    notices: usize,
    seed: u64,
    nodes: usize,
    replicas: usize,
    interval_ms: u64,
}

fn options() -> anyhow::Result<Options> {
    let f = args::numeric_flags(&["notices", "seed", "nodes", "replicas", "interval-ms"])?;
    let get = |k: &str, d: u64| f.get(k).copied().unwrap_or(d);
    Ok(Options {
        notices: get("notices", 1000) as usize,
        seed: get("seed", 1),
        nodes: get("nodes", 24) as usize,
        replicas: get("replicas", 2).max(1) as usize,
        interval_ms: get("interval-ms", 40),
    })
}

const CLUSTER: &str = "soak";
const GROUP: &str = "soak";
const THEIRS: &str = "soak-other";

fn node_name(instance: &str) -> String {
    format!("ip-{}.ec2.internal", instance.trim_start_matches("i-"))
}

/// What the cloud loop and the generator saw.
#[derive(Default)]
struct Record {
    /// Instance → node, for every Node this cluster ever had.
    nodes: HashMap<String, String>,
    /// Instances of ours the group has terminated (their Nodes killed).
    terminated: HashSet<String>,
    /// Workload pods still on a Node when its instance was terminated.
    undrained_pods: Vec<String>,
    /// Nodes killed on purpose mid-drain: their pods could not move, by design.
    chaos_killed: HashSet<String>,
    /// When each was killed, until the taint manager's eviction of its pods.
    killed_at: HashMap<String, Instant>,
    /// Nodes a Spot stop warning was sent for, and whether their drain was seen finished.
    spot_stopped: HashMap<String, bool>,
    /// Nodes whose instance came back (a new boot).
    returned: HashSet<String>,
    /// Instances with a termination in flight (ours), so no two notices overlap on purpose.
    terminating: HashSet<String>,
    /// Message bodies sent, for duplicates.
    bodies: Vec<String>,
    /// Kinds sent.
    kinds: BTreeMap<&'static str, usize>,
    /// Replicas killed and restarted.
    restarts: usize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_daemon(pod: &Value) -> bool {
    pod["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| o.iter().any(|r| r["kind"] == "DaemonSet"))
}

fn pods_on(sim: &Sim, node: &str) -> Vec<Arc<Value>> {
    sim.store
        .list(&PODS, None)
        .0
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .collect()
}

fn node_obj(sim: &Sim, node: &str) -> Option<Arc<Value>> {
    sim.store.get(&NODES, "", node)
}

fn annotation(n: &Value, key: &str) -> Option<String> {
    n["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

/// One termguard replica.
struct Replica {
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn start_replica(
    sim_url: &str,
    aws: &aws_config::SdkConfig,
    queue: &str,
    id: &str,
) -> anyhow::Result<Replica> {
    let client = termguard::cluster::drain::client(kube::Config::new(sim_url.parse()?))?;
    let mut settings = Settings::new(queue, id);
    settings.cluster = ClusterTags::new(Some(CLUSTER), None).map_err(anyhow::Error::msg)?;
    settings.queue.wait_time = Duration::from_secs(2);
    settings.queue.visibility = Duration::from_secs(10);
    settings.queue.extend_every = Duration::from_secs(3);
    settings.queue.shutdown_grace = Duration::from_secs(3);
    settings.returns_every = Duration::from_secs(1);
    settings.eviction_backoff = Some(Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        jitter: 0.3,
    });
    let mode = QueueMode::new(client, aws, settings);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(async move { mode.run(shutdown).await });
    Ok(Replica { stop, task })
}

fn spot_warning(instance: &str, action: &str) -> String {
    let now = jiff::Timestamp::now();
    json!({
        "version": "0", "id": format!("spot-{instance}-{}", now.as_millisecond()),
        "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
        "account": "123456789012", "time": now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": "us-east-1", "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": {"instance-id": instance, "instance-action": action},
    })
    .to_string()
}

fn ec2_event(detail_type: &str, instance: &str, detail: Value, ago: Duration) -> String {
    let time = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).unwrap_or_default();
    json!({
        "version": "0", "id": format!("{detail_type}-{instance}-{}", time.as_millisecond()),
        "detail-type": detail_type, "source": "aws.ec2", "account": "123456789012",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")],
        "detail": detail,
    })
    .to_string()
}

fn health_event(instance: &str, status: &str) -> String {
    let start = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(20);
    json!({
        "version": "0", "id": format!("health-{instance}-{status}"),
        "detail-type": "AWS Health Event", "source": "aws.health", "account": "123456789012",
        "time": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(), "region": "us-east-1",
        "resources": [instance],
        "detail": {
            "service": "EC2", "eventTypeCategory": "scheduledChange",
            "eventTypeCode": "AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED",
            "statusCode": status,
            "startTime": start.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            "affectedEntities": [{"entityValue": instance}],
        },
    })
    .to_string()
}

/// EC2 and the kubelets: Nodes for new instances, dead Nodes for terminated ones, stopped Spot
/// instances started again once drained.
async fn cloud(
    sim: Arc<Sim>,
    moto: Arc<moto::Moto>,
    record: Arc<Mutex<Record>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut known: HashSet<String> = lock(&record).nodes.keys().cloned().collect();
    let Ok(client) = sim
        .url()
        .parse()
        .map_err(anyhow::Error::from)
        .and_then(|u| Ok(kube::Client::try_from(kube::Config::new(u))?))
    else {
        eprintln!("cloud: no client for the simulator");
        return;
    };
    let mut boots = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let members: Vec<moto::Instance> = moto.instances(GROUP).await;
        let ids: HashSet<String> = members.iter().map(|i| i.id.clone()).collect();
        // Terminated by the group: the instance is gone, and so is whatever still ran on it.
        for gone in known.difference(&ids).cloned().collect::<Vec<_>>() {
            known.remove(&gone);
            let node = node_name(&gone);
            let chaos = lock(&record).chaos_killed.contains(&node);
            let left: Vec<String> = pods_on(&sim, &node)
                .iter()
                .filter(|p| !is_daemon(p))
                .map(|p| {
                    format!(
                        "{}/{}",
                        p["metadata"]["namespace"].as_str().unwrap_or(""),
                        p["metadata"]["name"].as_str().unwrap_or("")
                    )
                })
                .collect();
            let _ = sim.kill_node(&node);
            let _ = sim.delete_node(&node);
            let mut r = lock(&record);
            r.terminated.insert(gone.clone());
            r.terminating.remove(&gone);
            if !chaos {
                r.undrained_pods
                    .extend(left.into_iter().map(|p| format!("{p} on {node}")));
            }
        }
        // Replacements join as Ready nodes.
        let joining: Vec<&moto::Instance> =
            members.iter().filter(|i| !known.contains(&i.id)).collect();
        for inst in joining {
            let node = node_name(&inst.id);
            let spec = NodeSpec {
                name: node.clone(),
                zone: inst.zone.clone(),
                instance_id: inst.id.clone(),
                instance_type: "m5.large".into(),
                group: GROUP.into(),
                capacity: Default::default(),
                labels: BTreeMap::new(),
                taints: Vec::new(),
            };
            if sim.add_node(&spec).is_ok() {
                known.insert(inst.id.clone());
                lock(&record).nodes.insert(inst.id.clone(), node);
            }
        }
        // The taint manager: pods of a node unreachable for a while (here 20 s, not 300) are
        // deleted through the API; with no kubelet to confirm, they stay Terminating.
        let due: Vec<String> = {
            let mut r = lock(&record);
            let due: Vec<String> = r
                .killed_at
                .iter()
                .filter(|(_, at)| at.elapsed() > Duration::from_secs(20))
                .map(|(n, _)| n.clone())
                .collect();
            for n in &due {
                r.killed_at.remove(n);
            }
            due
        };
        for node in due {
            for p in pods_on(&sim, &node).iter().filter(|p| !is_daemon(p)) {
                let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
                let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
                    kube::Api::namespaced(client.clone(), ns);
                let _ = api
                    .delete(
                        p["metadata"]["name"].as_str().unwrap_or(""),
                        &Default::default(),
                    )
                    .await;
            }
        }
        // A stopped Spot instance starts again once drained: a new boot.
        let stopped: Vec<String> = lock(&record).spot_stopped.keys().cloned().collect();
        for node in stopped {
            // An instance its group is terminating does not start again.
            let terminating = {
                let r = lock(&record);
                r.nodes.iter().any(|(i, n)| {
                    *n == node && (r.terminating.contains(i) || r.terminated.contains(i))
                })
            };
            if terminating {
                continue;
            }
            let Some(n) = node_obj(&sim, &node) else {
                lock(&record).spot_stopped.remove(&node);
                continue;
            };
            // Drained, or timed out (a hibernation warning has no warning period: clipped at once).
            if matches!(
                annotation(&n, "termguard.io/drain-phase").as_deref(),
                Some("drained" | "timed-out")
            ) && annotation(&n, "termguard.io/drain-notice")
                .is_some_and(|id| id.starts_with("spot-"))
            {
                boots += 1;
                let boot = format!("boot-{boots}");
                let _ = sim.store.update(&NODES, "", &node, |o| {
                    o["status"]["nodeInfo"]["bootID"] = json!(boot);
                    Ok(())
                });
                let mut r = lock(&record);
                r.spot_stopped.insert(node.clone(), true);
                r.returned.insert(node);
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    if let Ok(filter) = std::env::var("TERMGUARD_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    println!(
        "chaos soak: {} notices, seed {}, {} nodes, {} replicas, simulator backend",
        o.notices, o.seed, o.nodes, o.replicas
    );
    let started = Instant::now();
    let moto = Arc::new(moto::Moto::start().await);
    let ours = moto
        .fleet(
            GROUP,
            o.nodes as i32,
            30,
            &[("termguard.io/cluster", CLUSTER)],
        )
        .await;
    let _theirs = moto
        .fleet_on(
            THEIRS,
            4,
            30,
            &[("termguard.io/cluster", "another-cluster")],
            Some(&ours.queue_url),
        )
        .await;

    let record = Arc::new(Mutex::new(Record::default()));
    let mut yaml =
        String::from("name: soak\ndefaults: {startupMs: 100, shutdownMs: 300}\nnodes:\n");
    for inst in &ours.instances {
        let node = node_name(&inst.id);
        yaml.push_str(&format!(
            "  - {{name: {node}, zone: {}, instanceId: {}, group: {GROUP}}}\n",
            inst.zone, inst.id
        ));
        lock(&record).nodes.insert(inst.id.clone(), node);
    }
    yaml.push_str(&format!(
        "workloads:\n  - {{kind: Deployment, name: web, replicas: {}, terminationGracePeriodSeconds: 5, pdb: {{maxUnavailable: 2}}}}\n  - {{kind: Deployment, name: pooler, replicas: 2, terminationGracePeriodSeconds: 5, annotations: {{termguard.io/drain-order: last}}}}\n  - {{kind: DaemonSet, name: agent, namespace: kube-system, tolerations: [{{operator: Exists}}]}}\n",
        o.nodes * 2
    ));
    let sim = Arc::new(Sim::start(&Scenario::from_yaml(&yaml)?, "127.0.0.1:0".parse()?).await?);
    anyhow::ensure!(
        sim.wait_settled(Duration::from_secs(120)).await,
        "the scenario did not settle"
    );

    // Faults, seeded: the API server and AWS fail now and then, all along.
    sim.faults.seed(o.seed);
    sim.faults.set(serde_json::from_value(json!({
        "verbs": {
            "get": {"errorRate": 0.03, "errorCode": 503},
            "list": {"errorRate": 0.03, "errorCode": 500},
            "patch": {"errorRate": 0.03, "errorCode": 500},
            "create": {"errorRate": 0.03, "errorCode": 429},
            "delete": {"errorRate": 0.03, "errorCode": 500},
            "evict": {"errorRate": 0.05, "errorCode": 429},
        },
        "watchCutAfter": 40,
    }))?);
    moto.set_faults(&json!({"seed": o.seed, "rules": [
        {"action": "RecordLifecycleActionHeartbeat", "error_rate": 0.15, "error": "throttling"},
        {"action": "CompleteLifecycleAction", "error_rate": 0.1, "error": "internal"},
        {"action": "DescribeLifecycleHooks", "error_rate": 0.1, "error": "throttling"},
        {"action": "DescribeScalingActivities", "error_rate": 0.1, "error": "unavailable"},
        {"action": "ReceiveMessage", "error_rate": 0.05, "error": "throttling"},
        {"action": "DeleteMessage", "error_rate": 0.05, "error": "unavailable"},
        {"action": "ChangeMessageVisibility", "error_rate": 0.05, "error": "internal"},
    ]}))
    .await;

    let sim_url = sim.url();
    let mut replicas: Vec<Replica> = Vec::new();
    let mut crashed_ok = 0usize;
    for i in 0..o.replicas {
        replicas.push(start_replica(
            &sim_url,
            &moto.aws,
            &ours.queue_url,
            &format!("replica-{i}"),
        )?);
    }
    let (cloud_stop, cloud_rx) = watch::channel(false);
    let cloud_task = tokio::spawn(cloud(sim.clone(), moto.clone(), record.clone(), cloud_rx));
    println!("setup: {:.1} s", started.elapsed().as_secs_f64());

    let mut rng = fastrand::Rng::with_seed(o.seed);
    let mut next_replica = o.replicas;
    let mut sent = 0usize;
    let mut tries = 0usize;
    let (mut last_restart, mut last_kill) = (usize::MAX, usize::MAX);
    while sent < o.notices && tries < o.notices * 20 {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(o.interval_ms)).await;
        // Chaos every so often: a replica killed where it stands and another started; a node
        // killed while its drain runs.
        if sent % 60 == 59 && last_restart != sent {
            last_restart = sent;
            let i = rng.usize(..replicas.len());
            let old = replicas.swap_remove(i);
            old.task.abort();
            if let Err(e) = old.task.await {
                if e.is_panic() {
                    crashed_ok += 1;
                }
            }
            replicas.push(start_replica(
                &sim_url,
                &moto.aws,
                &ours.queue_url,
                &format!("replica-{next_replica}"),
            )?);
            next_replica += 1;
            lock(&record).restarts += 1;
        }
        if sent % 150 == 149 && last_kill != sent {
            last_kill = sent;
            let waiting: Vec<String> = lock(&record).terminating.iter().cloned().collect();
            if let Some(inst) = waiting.get(rng.usize(..waiting.len().max(1))).cloned() {
                let node = node_name(&inst);
                if sim.kill_node(&node).is_ok() {
                    let mut r = lock(&record);
                    r.killed_at.insert(node.clone(), Instant::now());
                    r.chaos_killed.insert(node);
                }
            }
        }
        // Instances of ours still in service; `schedulable` also not cordoned (a node a Spot
        // warning or maintenance can still take, as opposed to one already drained).
        let live: Vec<(String, String)> = {
            let r = lock(&record);
            r.nodes
                .iter()
                .filter(|(i, n)| {
                    !r.terminated.contains(*i)
                        && !r.terminating.contains(*i)
                        && !r.chaos_killed.contains(*n)
                })
                .filter(|(_, n)| node_obj(&sim, n).is_some())
                .map(|(i, n)| (i.clone(), n.clone()))
                .collect()
        };
        let schedulable: Vec<(String, String)> = live
            .iter()
            .filter(|(_, n)| node_obj(&sim, n).is_some_and(|o| o["spec"]["unschedulable"] != true))
            .cloned()
            .collect();
        let any = |rng: &mut fastrand::Rng| live.get(rng.usize(..live.len().max(1))).cloned();
        let pick = |rng: &mut fastrand::Rng| {
            schedulable
                .get(rng.usize(..schedulable.len().max(1)))
                .cloned()
        };
        let roll = rng.f64();
        let kind: &'static str = if roll < 0.35 {
            match any(&mut rng) {
                Some((inst, _)) if lock(&record).terminating.len() < o.nodes / 3 => {
                    lock(&record).terminating.insert(inst.clone());
                    let r = moto
                        .asg
                        .terminate_instance_in_auto_scaling_group()
                        .instance_id(&inst)
                        .should_decrement_desired_capacity(false)
                        .send()
                        .await;
                    if r.is_err() {
                        lock(&record).terminating.remove(&inst);
                        continue;
                    }
                    "lifecycle-terminate"
                }
                _ => continue,
            }
        } else if roll < 0.50 {
            let Some((inst, node)) = pick(&mut rng) else {
                continue;
            };
            let action = if rng.bool() { "stop" } else { "hibernate" };
            let body = spot_warning(&inst, action);
            lock(&record).spot_stopped.insert(node, false);
            lock(&record).bodies.push(body.clone());
            moto.send(&ours.queue_url, &body).await;
            "spot-interruption"
        } else if roll < 0.52 {
            let Some((inst, _)) = pick(&mut rng) else {
                continue;
            };
            let body = ec2_event(
                "EC2 Instance Rebalance Recommendation",
                &inst,
                json!({"instance-id": inst}),
                Duration::ZERO,
            );
            moto.send(&ours.queue_url, &body).await;
            "rebalance-recommendation"
        } else if roll < 0.63 {
            // A `stopping` event that comes late, for an instance that has been running since.
            let Some((inst, _)) = pick(&mut rng) else {
                continue;
            };
            let body = ec2_event(
                "EC2 Instance State-change Notification",
                &inst,
                json!({"instance-id": inst, "state": "stopping"}),
                Duration::from_secs(3600),
            );
            moto.send(&ours.queue_url, &body).await;
            "stale-state-change"
        } else if roll < 0.68 {
            let Some((inst, _)) = pick(&mut rng) else {
                continue;
            };
            moto.send(&ours.queue_url, &health_event(&inst, "closed"))
                .await;
            "health-closed"
        } else if roll < 0.80 {
            // The other cluster's terminations, on our queue.
            let members = moto.instances(THEIRS).await;
            let Some(inst) = members.get(rng.usize(..members.len().max(1))).cloned() else {
                continue;
            };
            let _ = moto
                .asg
                .terminate_instance_in_auto_scaling_group()
                .instance_id(&inst.id)
                .should_decrement_desired_capacity(false)
                .send()
                .await;
            "other-cluster"
        } else if roll < 0.92 {
            // A duplicate delivery of an earlier message, or the lifecycle message of a
            // termination in flight.
            let waiting = moto.lifecycle_actions(&format!("group={GROUP}")).await;
            let body = if rng.bool() {
                let w: Vec<&Value> = waiting.iter().filter(|a| a["state"] == "waiting").collect();
                w.get(rng.usize(..w.len().max(1)))
                    .map(|a| a["notification"]["body"].to_string())
            } else {
                let r = lock(&record);
                r.bodies.get(rng.usize(..r.bodies.len().max(1))).cloned()
            };
            let Some(body) = body else { continue };
            moto.send(&ours.queue_url, &body).await;
            "duplicate"
        } else {
            let garbage = ["not json at all", "{\"detail-type\": 7}", "{}", "{\"source\":\"aws.ec2\",\"detail-type\":\"EC2 Spot Instance Interruption Warning\"}"];
            moto.send(&ours.queue_url, garbage[rng.usize(..garbage.len())])
                .await;
            "malformed"
        };
        *lock(&record).kinds.entry(kind).or_default() += 1;
        sent += 1;
    }
    let sent_at = started.elapsed();
    println!(
        "sent: {:?} in {:.1} s",
        lock(&record).kinds,
        sent_at.as_secs_f64()
    );

    // Let the work finish: every action of ours ended, returned instances back in service.
    let settle_by = Instant::now() + Duration::from_secs(240);
    loop {
        let waiting = moto
            .lifecycle_actions(&format!("group={GROUP}"))
            .await
            .iter()
            .filter(|a| a["state"] == "waiting")
            .count();
        // And every Spot warning's node drained (or gone): a warning sent near the end may
        // still be draining past a budget.
        let spot_pending = {
            let r = lock(&record);
            r.spot_stopped
                .iter()
                .filter(|(n, seen)| {
                    !**seen && node_obj(&sim, n).is_some() && !r.chaos_killed.contains(*n)
                })
                .count()
        };
        if (waiting == 0 && spot_pending == 0) || Instant::now() > settle_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sim.faults.set(Default::default());
    tokio::time::sleep(Duration::from_secs(10)).await;
    for r in replicas {
        let _ = r.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(20), r.task).await {
            Ok(Err(e)) if e.is_panic() => crashed_ok += 1,
            Ok(Ok(Err(e))) => eprintln!("a replica stopped with an error: {e:#}"),
            _ => {}
        }
    }
    let _ = cloud_stop.send(true);
    let _ = cloud_task.await;

    // The invariants.
    let actions = moto.lifecycle_actions("").await;
    let ours_actions: Vec<&Value> = actions.iter().filter(|a| a["group"] == GROUP).collect();
    let theirs_actions: Vec<&Value> = actions.iter().filter(|a| a["group"] == THEIRS).collect();
    let expired = ours_actions
        .iter()
        .filter(|a| {
            a["state"] == "expired"
                || (a["state"] != "waiting"
                    && a["ended_by"] != "CompleteLifecycleAction"
                    && a["state"] != "cancelled")
        })
        .count();
    let still_waiting = ours_actions
        .iter()
        .filter(|a| a["state"] == "waiting")
        .count();
    let foreign_completed = theirs_actions
        .iter()
        .filter(|a| a["ended_by"] == "CompleteLifecycleAction")
        .count();
    let (_, deletions) = moto.http("GET", "/_termguard/sqs-deletions", None).await;
    let deletions: Value = serde_json::from_str(&deletions).unwrap_or(Value::Null);
    let mut deleted_early = 0usize;
    let mut foreign_deleted = 0usize;
    let by_token: HashMap<&str, &Value> = actions
        .iter()
        .map(|a| (a["token"].as_str().unwrap_or(""), a))
        .collect();
    for d in deletions["deletions"].as_array().into_iter().flatten() {
        let body = d["body"].as_str().unwrap_or("");
        let Ok(msg) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        let token = msg["detail"]["LifecycleActionToken"]
            .as_str()
            .or(msg["LifecycleActionToken"].as_str())
            .unwrap_or("");
        if let Some(a) = by_token.get(token) {
            if a["group"] == THEIRS {
                foreign_deleted += 1;
            } else if a["ended_at_ms"]
                .as_i64()
                .is_none_or(|end| d["deleted_at_ms"].as_i64().unwrap_or(0) < end)
            {
                deleted_early += 1;
            }
        }
    }
    let aws_injected = {
        let (_, f) = moto.http("GET", "/_termguard/faults", None).await;
        serde_json::from_str::<Value>(&f)
            .ok()
            .and_then(|f| {
                f["injected"]
                    .as_object()
                    .map(|m| m.values().filter_map(Value::as_u64).sum::<u64>())
            })
            .unwrap_or(0)
    };
    let r = lock(&record);
    let spot_undrained = r
        .spot_stopped
        .iter()
        .filter(|(n, seen)| !**seen && node_obj(&sim, n).is_some() && !r.chaos_killed.contains(*n))
        .count();
    // Nodes whose instance came back after their drain (termguard's own test of it, on the Node
    // as it is now) and that are still cordoned.
    let cordoned_after_return = r
        .returned
        .iter()
        .filter_map(|n| node_obj(&sim, n))
        .filter_map(|o| {
            serde_json::from_value::<k8s_openapi::api::core::v1::Node>((*o).clone()).ok()
        })
        .filter(|n| {
            termguard::cluster::nodes::returned(n)
                && n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
        })
        .count();
    let evicted_twice = sim
        .faults
        .path_counts()
        .iter()
        .filter(|(k, v)| k.starts_with("evicted ") && **v > 1)
        .count();
    let injected =
        sim.faults.injected() + aws_injected + r.restarts as u64 + r.chaos_killed.len() as u64;
    let invariants: Vec<(&str, usize)> = vec![
        (
            "instances-terminated-with-pods-that-could-still-move",
            r.undrained_pods.len(),
        ),
        (
            "lifecycle-actions-expired-into-their-default-result",
            expired,
        ),
        ("other-cluster-actions-completed-by-us", foreign_completed),
        ("other-cluster-messages-deleted-by-us", foreign_deleted),
        ("messages-lost", still_waiting + spot_undrained),
        ("messages-deleted-before-their-work-was-done", deleted_early),
        (
            "nodes-left-cordoned-after-their-instance-returned",
            cordoned_after_return,
        ),
        ("pods-evicted-twice", evicted_twice),
        ("process-crashes", crashed_ok),
    ];
    for p in r.undrained_pods.iter().take(10) {
        println!("  undrained: {p}");
    }
    for a in ours_actions.iter().filter(|a| a["state"] == "waiting") {
        let node = node_name(a["instance_id"].as_str().unwrap_or(""));
        let o = node_obj(&sim, &node).unwrap_or_default();
        println!(
            "  still waiting: {} on {node} (heartbeats {}, phase {:?}, owner {:?}, notice {:?}, cordoned {}, pods {}, chaos {})",
            a["token"], a["heartbeat_count"],
            annotation(&o, "termguard.io/drain-phase"),
            annotation(&o, "termguard.io/drain-owner"),
            annotation(&o, "termguard.io/drain-notice"),
            o["spec"]["unschedulable"],
            pods_on(&sim, &node).len(),
            r.chaos_killed.contains(&node)
        );
    }
    for (n, _) in r
        .spot_stopped
        .iter()
        .filter(|(n, seen)| !**seen && node_obj(&sim, n).is_some())
        .take(10)
    {
        let o = node_obj(&sim, n).unwrap_or_default();
        println!(
            "  spot warning not drained for: {n} (phase {:?}, notice {:?}, cordoned {})",
            annotation(&o, "termguard.io/drain-phase"),
            annotation(&o, "termguard.io/drain-notice"),
            o["spec"]["unschedulable"]
        );
    }
    for (name, value) in &invariants {
        println!("invariant {name} {value}");
    }
    println!(
        "figures: {} lifecycle actions of ours ({} waiting at the end), {} of the other cluster, {} instances terminated, {} replaced, {} returned, {} replica restarts, {} nodes killed mid-drain, {} SQS deletions, {:.0} s",
        ours_actions.len(),
        still_waiting,
        theirs_actions.len(),
        r.terminated.len(),
        r.nodes.len().saturating_sub(o.nodes),
        r.returned.len(),
        r.restarts,
        r.chaos_killed.len(),
        deletions["deletions"].as_array().map_or(0, Vec::len),
        started.elapsed().as_secs_f64()
    );
    println!(
        "command: cargo bench -p termguard --bench soak -- --notices {} --seed {} --nodes {} --replicas {} --interval-ms {}",
        o.notices, o.seed, o.nodes, o.replicas, o.interval_ms
    );
    let bad: Vec<&str> = invariants
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(n, _)| *n)
        .collect();
    if bad.is_empty() {
        println!(
            "soak: {} notices, {injected} faults injected, every invariant 0",
            o.notices
        );
        Ok(())
    } else {
        println!(
            "soak: {} notices, {injected} faults injected, NOT 0: {}",
            o.notices,
            bad.join(", ")
        );
        std::process::exit(1);
    }
}
