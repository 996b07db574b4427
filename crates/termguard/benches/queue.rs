//! Queue-mode benchmark (issue 5): a burst of termination notices, end to end over real
//! sockets — the moto peer (tests/aws/moto_server.py) scales an Auto Scaling group of N
//! instances to zero, so N instances wait in `Terminating:Wait` and N lifecycle messages land
//! on the queue at once; termguard's queue mode (in-process, default settings: 50 in flight,
//! 20 s long polls) drains the N matching Nodes of the Kubernetes simulator and completes the
//! actions. Prints, over the burst, the spread (min, p50, p90, p99, max) of:
//!   * message visible → node cordoned,
//!   * last pod gone → lifecycle action completed,
//!   * message visible → lifecycle action completed,
//!
//! and the burst's wall time. "Visible" is when moto put the instance in `Terminating:Wait` and
//! sent its message; the other instants are observed in the simulator's store and moto's
//! lifecycle-action log, all on this machine's clock. Not a test: nothing is asserted.
//!
//! Run: `cargo bench -p termguard --bench queue` (options: `-- --notices 200 --pods-per-node 2
//! --shutdown-ms 500 --max-in-flight 50`).

#[path = "common/args.rs"]
mod args;
#[path = "../tests/common/moto.rs"]
mod moto;

use kube_sim::scenario::Scenario;
use kube_sim::store::EventType;
use kube_sim::Sim;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use termguard::commands::run::{QueueMode, Settings};
use tokio::sync::broadcast::error::RecvError;

struct Options {
    notices: usize,
    pods_per_node: usize,
    shutdown_ms: u64,
    max_in_flight: usize,
}

fn options() -> anyhow::Result<Options> {
    let f = args::numeric_flags(&["notices", "pods-per-node", "shutdown-ms", "max-in-flight"])?;
    let get = |k: &str, d: u64| f.get(k).copied().unwrap_or(d);
    Ok(Options {
        notices: get("notices", 200) as usize,
        pods_per_node: get("pods-per-node", 2) as usize,
        shutdown_ms: get("shutdown-ms", 500),
        max_in_flight: get("max-in-flight", 50) as usize,
    })
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// When each node was cordoned and when its last pod went, from the store's change feed.
#[derive(Default)]
struct Observed {
    cordoned: HashMap<String, i64>,
    last_pod_gone: HashMap<String, i64>,
}

fn spread(label: &str, mut v: Vec<f64>) {
    if v.is_empty() {
        println!("  {label:<46} no samples");
        return;
    }
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "  {label:<46} min {:>7.3}  p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  max {:>7.3} s  (n={})",
        v[0],
        q(0.5),
        q(0.9),
        q(0.99),
        v[v.len() - 1],
        v.len()
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    // Logs on stderr when asked for, e.g. TERMGUARD_LOG=termguard=debug.
    if let Ok(filter) = std::env::var("TERMGUARD_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    println!(
        "queue-mode burst: {} lifecycle notices, {} pods per node (shutdown {} ms), --max-in-flight {}",
        o.notices, o.pods_per_node, o.shutdown_ms, o.max_in_flight
    );
    let setup = Instant::now();
    let moto = moto::Moto::start().await;
    let fleet = moto.fleet("bench", o.notices as i32, 300, &[]).await;

    let mut yaml =
        String::from("name: queue-bench\ndefaults: {startupMs: 20, shutdownMs: 50}\nnodes:\n");
    let mut node_of = HashMap::new();
    for (i, inst) in fleet.instances.iter().enumerate() {
        let name = format!("ip-10-3-{}-{}.ec2.internal", i / 200, i % 200 + 10);
        yaml.push_str(&format!(
            "  - {{name: {name}, zone: {}, instanceId: {}, capacity: {{pods: {}}}}}\n",
            inst.zone,
            inst.id,
            o.pods_per_node + 2
        ));
        node_of.insert(inst.id.clone(), name);
    }
    yaml.push_str(&format!(
        "workloads:\n  - {{kind: Deployment, name: app, replicas: {}, shutdownMs: {}}}\n",
        o.notices * o.pods_per_node,
        o.shutdown_ms
    ));
    let sim = Sim::start(&Scenario::from_yaml(&yaml)?, "127.0.0.1:0".parse()?).await?;
    anyhow::ensure!(
        sim.wait_settled(Duration::from_secs(300)).await,
        "scenario did not settle"
    );

    let observed = Arc::new(Mutex::new(Observed::default()));
    let (_, _, mut rx) = sim
        .store
        .snapshot_and_subscribe(&kube_sim::resources::NODES);
    // A thread of its own, so the observation is not delayed behind the runtime's busy workers.
    let feed = {
        let observed = observed.clone();
        std::thread::spawn(move || loop {
            match rx.blocking_recv() {
                Ok(c) => {
                    let t = now_ms();
                    let mut obs = observed.lock().unwrap_or_else(|e| e.into_inner());
                    if c.storage == "nodes" && c.ty == EventType::Modified {
                        let was = c
                            .old
                            .as_ref()
                            .is_some_and(|o| o["spec"]["unschedulable"] == true);
                        if !was && c.object["spec"]["unschedulable"] == true {
                            let name = c.object["metadata"]["name"]
                                .as_str()
                                .unwrap_or("")
                                .to_string();
                            obs.cordoned.entry(name).or_insert(t);
                        }
                    }
                    if c.storage == "pods" && c.ty == EventType::Deleted {
                        if let Some(node) = c.object["spec"]["nodeName"].as_str() {
                            obs.last_pod_gone.insert(node.to_string(), t);
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => eprintln!("warning: change feed lagged by {n}"),
                Err(RecvError::Closed) => return,
            }
        })
    };

    let client = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
    let mut settings = Settings::new(&fleet.queue_url, "bench");
    settings.queue.max_in_flight = o.max_in_flight;
    let mode = QueueMode::new(client, &moto.aws, settings);
    let readiness = mode.readiness();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let metrics = mode.metrics.clone();
    let task = tokio::spawn(async move { mode.run(shutdown).await });
    let ready_by = Instant::now() + Duration::from_secs(60);
    while readiness.ready().is_err() {
        anyhow::ensure!(
            Instant::now() < ready_by,
            "not ready: {:?}",
            readiness.ready()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("setup: {:.1} s", setup.elapsed().as_secs_f64());

    // The burst: the whole group is scaled in at once.
    moto.asg
        .set_desired_capacity()
        .auto_scaling_group_name(&fleet.group)
        .desired_capacity(0)
        .honor_cooldown(false)
        .send()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let actions = loop {
        let actions = moto.lifecycle_actions("group=bench").await;
        let waiting = actions.iter().filter(|a| a["state"] == "waiting").count();
        if actions.len() >= o.notices && waiting == 0 {
            break actions;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{waiting} of {} actions still waiting after 15 minutes",
            actions.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;

    // The feed thread ends with the process.
    drop(feed);
    let obs = observed.lock().unwrap_or_else(|e| e.into_inner());
    let ms = |v: &Value| v.as_i64();
    let (mut to_cordon, mut gone_to_complete, mut to_complete) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut not_continue = 0;
    let (mut first_visible, mut last_completed) = (i64::MAX, i64::MIN);
    for a in &actions {
        let instance = a["instance_id"].as_str().unwrap_or("");
        let Some(node) = node_of.get(instance) else {
            continue;
        };
        let (Some(visible), Some(ended)) = (ms(&a["started_at_ms"]), ms(&a["ended_at_ms"])) else {
            continue;
        };
        if a["result"] != "CONTINUE" || a["ended_by"] != "CompleteLifecycleAction" {
            not_continue += 1;
        }
        first_visible = first_visible.min(visible);
        last_completed = last_completed.max(ended);
        if let Some(c) = obs.cordoned.get(node) {
            to_cordon.push((c - visible) as f64 / 1000.0);
        }
        if let Some(g) = obs.last_pod_gone.get(node) {
            gone_to_complete.push((ended - g) as f64 / 1000.0);
        }
        to_complete.push((ended - visible) as f64 / 1000.0);
    }
    println!(
        "results ({} actions; {} not completed with CONTINUE by termguard; {} messages received):",
        actions.len(),
        not_continue,
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("termguard_messages_received_total"))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("?")
    );
    spread("message visible -> node cordoned", to_cordon);
    spread(
        "last pod gone -> lifecycle action completed",
        gone_to_complete,
    );
    spread("message visible -> lifecycle action completed", to_complete);
    println!(
        "  burst wall time (first visible -> last completed): {:.2} s",
        (last_completed - first_visible) as f64 / 1000.0
    );
    println!(
        "command: cargo bench -p termguard --bench queue -- --notices {} --pods-per-node {} --shutdown-ms {} --max-in-flight {}",
        o.notices, o.pods_per_node, o.shutdown_ms, o.max_in_flight
    );
    Ok(())
}
