//! One lab run: start the cluster and the group, let cluster-autoscaler scale in, let the
//! group rebalance its zones, and measure what the workers went through.

use super::asg::{self, AutoScaling, Hook, Instance};
use super::connections::{ConnConfig, ConnModel, Snapshot};
use super::report::RunReport;
use super::timeline::Timeline;
use crate::cluster::drain::{DrainOptions, DrainRequest, Drainer, PodAction, Progress, WaveKind};
use crate::cluster::index::{instance_of_provider_id, NodeIndex};
use crate::handler::{Handler, HandlerConfig};
use kube_sim::controllers::podutil;
use kube_sim::controllers::ExitKind;
use kube_sim::resources::{NODES, PODS};
use kube_sim::scenario::{NodeSpec, Scenario};
use kube_sim::store::{name_of, namespace_of, uid_of};
use kube_sim::Sim;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How the cluster is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One group over three zones, no hook, no termguard.
    Unprotected,
    /// One group per zone (no AZ rebalancing across them), cluster-autoscaler balancing them.
    PerZoneGroups,
    /// One group over three zones with a termination hook, and termguard.
    Protected,
}

impl Mode {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Unprotected => "unprotected",
            Mode::PerZoneGroups => "per-zone-groups",
            Mode::Protected => "protected",
        }
    }

    /// One line saying what the mode is.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Unprotected => "unprotected — one Auto Scaling group over three zones, no lifecycle hook, no termguard",
            Mode::PerZoneGroups => "per-zone groups — one group per zone, cluster-autoscaler --balance-similar-node-groups",
            Mode::Protected => "protected — one group over three zones, a termination lifecycle hook, termguard",
        }
    }
}

/// Lab settings.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Seed for the job arrivals and connection choices.
    pub seed: u64,
    /// The connection model.
    pub conn: ConnConfig,
    /// Print the timeline as it goes.
    pub echo: bool,
    /// The scenario (YAML).
    pub scenario: String,
    /// Lifecycle hook heartbeat timeout (short: this is a simulation).
    pub heartbeat_timeout: Duration,
    /// How long to watch after the rebalance.
    pub observe: Duration,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            seed: 1,
            conn: ConnConfig::default(),
            echo: false,
            scenario: super::INCIDENT.to_string(),
            heartbeat_timeout: Duration::from_secs(2),
            observe: Duration::from_secs(3),
        }
    }
}

const POOLER_APP: &str = "pgbouncer";
const WORKER_APP: &str = "async-worker";
const GROUP: &str = "eks-workers-multi-az";
const HOOK: &str = "termguard-terminate";

fn app_of(pod: &Value) -> &str {
    pod["metadata"]["labels"]["app"].as_str().unwrap_or("")
}

fn is_infra(pod: &Value) -> bool {
    podutil::controller_of(pod).is_some_and(|(kind, _, _)| kind == "DaemonSet" || kind == "Node")
        || pod["metadata"]["annotations"][podutil::MIRROR].is_string()
}

/// Observes the cluster for the connection model and remembers what each pod was.
struct Observer {
    model: ConnModel,
    pods_seen: HashMap<String, (String, bool)>,
}

impl Observer {
    fn snapshot(&mut self, sim: &Sim) -> Snapshot {
        let (pods, _) = sim.store.list(&PODS, None);
        let lost: HashSet<String> = sim
            .cluster
            .exits()
            .into_iter()
            .filter(|e| e.kind == ExitKind::NodeLost)
            .map(|e| e.uid)
            .collect();
        let mut s = Snapshot::default();
        for p in &pods {
            let uid = uid_of(p).to_string();
            self.pods_seen
                .entry(uid.clone())
                .or_insert_with(|| (format!("{}/{}", namespace_of(p), name_of(p)), is_infra(p)));
            let dead = sim.cluster.is_dead(podutil::node_name(p)) || lost.contains(&uid);
            match app_of(p) {
                POOLER_APP => {
                    s.poolers_present.insert(uid.clone());
                    if dead {
                        s.poolers_dead.insert(uid);
                    } else if podutil::healthy(p) {
                        s.poolers_ready.push(uid);
                    }
                }
                WORKER_APP => {
                    if dead {
                        s.workers_dead.insert(uid);
                    } else if podutil::terminating(p) {
                        s.workers_terminating.insert(uid);
                    } else if podutil::healthy(p) {
                        s.workers_ready.push(uid);
                    }
                }
                _ => {}
            }
        }
        // Poolers that died with their node stay dead for the clients that held them.
        for e in sim
            .cluster
            .exits()
            .into_iter()
            .filter(|e| e.kind == ExitKind::NodeLost)
        {
            if self
                .pods_seen
                .get(&e.uid)
                .is_some_and(|(n, _)| n.contains(POOLER_APP))
            {
                s.poolers_dead.insert(e.uid.clone());
            }
            if self
                .pods_seen
                .get(&e.uid)
                .is_some_and(|(n, _)| n.contains(WORKER_APP))
            {
                s.workers_dead.insert(e.uid);
            }
        }
        s
    }
}

fn instances_of(sim: &Sim) -> Vec<Instance> {
    let (nodes, _) = sim.store.list(&NODES, None);
    nodes
        .iter()
        .filter_map(|n| {
            let pid = n["spec"]["providerID"].as_str()?;
            Some(Instance {
                id: instance_of_provider_id(pid)?.to_string(),
                zone: n["metadata"]["labels"]["topology.kubernetes.io/zone"]
                    .as_str()?
                    .to_string(),
                node: name_of(n).to_string(),
                state: asg::State::InService,
            })
        })
        .collect()
}

fn pods_on(sim: &Sim, node: &str, app: &str) -> Vec<String> {
    let (pods, _) = sim.store.list(&PODS, None);
    pods.iter()
        .filter(|p| podutil::node_name(p) == node && app_of(p) == app && !podutil::terminating(p))
        .map(|p| name_of(p).to_string())
        .collect()
}

fn progress_logger(
    timeline: Arc<Timeline>,
    who: &'static str,
) -> impl Fn(&Progress) + Send + Sync + 'static {
    move |p: &Progress| match p {
        Progress::Cordoned { .. } => timeline.log(format!("{who}: node cordoned and tainted")),
        Progress::WaveStarted { number, kind, pods } => {
            let what = match kind {
                WaveKind::Ordinary => "ordinary workloads",
                WaveKind::DrainLast => "drain-last pods (pgbouncer)",
            };
            timeline.log(format!("{who}: drain wave {number}: {pods} {what}"));
        }
        Progress::Gone { pod, action } if *action != PodAction::AlreadyGone => {
            timeline.log(format!("{who}: {pod} stopped gracefully and left the node"));
        }
        Progress::Blocked { pod, .. } => timeline.log(format!(
            "{who}: eviction of {pod} blocked by its PodDisruptionBudget; retrying"
        )),
        _ => {}
    }
}

async fn wait_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Runs one mode end to end.
pub async fn run_mode(mode: Mode, opts: &LabOptions) -> anyhow::Result<RunReport> {
    let timeline = Arc::new(Timeline::new(opts.echo));
    let scenario = Scenario::from_yaml(&opts.scenario)?;
    let sim =
        Arc::new(Sim::start_seeded(&scenario, "127.0.0.1:0".parse()?, Some(opts.seed)).await?);
    if !sim.wait_settled(Duration::from_secs(30)).await {
        anyhow::bail!("the simulated cluster did not settle");
    }
    let client = crate::cluster::drain::engine::client(kube::Config::new(sim.url().parse()?))?;
    let instances = instances_of(&sim);
    let zones: BTreeMap<String, usize> = instances.iter().fold(BTreeMap::new(), |mut m, i| {
        *m.entry(i.zone.clone()).or_default() += 1;
        m
    });
    timeline.log(format!(
        "cluster ready: {} nodes in {} zones; pgbouncer ×2 (PDB minAvailable 1, drain-last), async workers, web pods, log-shipper DaemonSet",
        instances.len(),
        zones.len()
    ));

    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let asg = AutoScaling::new(
        sim.store.clone(),
        sim.cluster.clone(),
        timeline.clone(),
        (mode == Mode::Protected).then_some(msg_tx),
    );
    let group_of = |zone: &str| -> String {
        if mode == Mode::PerZoneGroups {
            format!("eks-workers-{zone}")
        } else {
            GROUP.to_string()
        }
    };
    match mode {
        Mode::PerZoneGroups => {
            for zone in zones.keys() {
                let members = instances
                    .iter()
                    .filter(|i| &i.zone == zone)
                    .cloned()
                    .collect();
                asg.add_group(&group_of(zone), None, members);
            }
            timeline.log(format!(
                "{} Auto Scaling groups, one per zone, no lifecycle hook",
                zones.len()
            ));
        }
        Mode::Unprotected => {
            asg.add_group(GROUP, None, instances.clone());
            timeline.log(format!(
                "one Auto Scaling group {GROUP} over {} zones, no lifecycle hook",
                zones.len()
            ));
        }
        Mode::Protected => {
            asg.add_group(
                GROUP,
                Some(Hook {
                    name: HOOK.into(),
                    heartbeat_timeout: opts.heartbeat_timeout,
                }),
                instances.clone(),
            );
            timeline.log(format!("one Auto Scaling group {GROUP} over {} zones with termination hook {HOOK}; termguard is running", zones.len()));
        }
    }

    // termguard: the real handler, fed through the real parser.
    let mut consumer = None;
    let rebalance_drain: Arc<Mutex<Option<f64>>> = Arc::default();
    if mode == Mode::Protected {
        let index = NodeIndex::start(client.clone());
        index.ready().await;
        let drainer = Drainer::new(client.clone(), "termguard-lab")
            .with_progress(progress_logger(timeline.clone(), "termguard"))
            .with_node_index(index.clone());
        let config = HandlerConfig {
            margin: Duration::from_secs(1),
            ..HandlerConfig::default()
        };
        let handler = Handler::new(
            drainer,
            index,
            client.clone(),
            asg.clone(),
            asg.clone(),
            asg.clone(),
            config,
        );
        let tl = timeline.clone();
        let drain_time = rebalance_drain.clone();
        consumer = Some(tokio::spawn(async move {
            while let Some(body) = msg_rx.recv().await {
                match crate::sources::parse::parse_all(&body) {
                    Ok(notices) => {
                        for n in notices {
                            let handler = handler.clone();
                            let tl = tl.clone();
                            let drain_time = drain_time.clone();
                            tokio::spawn(async move {
                                tl.log(format!(
                                    "termguard received {} for {}",
                                    n.kind.label(),
                                    n.instance.as_ref().map_or("-", |i| i.as_str())
                                ));
                                let t0 = Instant::now();
                                let d = handler.handle(&n).await;
                                *drain_time.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(t0.elapsed().as_secs_f64());
                                tl.log(format!("termguard: {d:?}"));
                            });
                        }
                    }
                    Err(e) => tl.log(format!("termguard could not parse a message: {e}")),
                }
            }
        }));
    }

    // The workers and their connections.
    let observer = Arc::new(Mutex::new(Observer {
        model: ConnModel::new(opts.conn.clone(), opts.seed),
        pods_seen: HashMap::new(),
    }));
    let ticker = {
        let (sim, observer) = (sim.clone(), observer.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let mut o = observer.lock().unwrap_or_else(|e| e.into_inner());
                let snap = o.snapshot(&sim);
                o.model.tick(Instant::now(), &snap);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let threads = observer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .model
        .stats()
        .threads;
    timeline.log(format!(
        "workers busy: {threads} threads, each holding a connection through a pgbouncer pod"
    ));

    // 1. cluster-autoscaler scales in an underutilized node, draining it first.
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let mut candidates: Vec<&Instance> = instances
        .iter()
        .filter(|i| pods_on(&sim, &i.node, POOLER_APP).is_empty())
        .collect();
    candidates.sort_by(|a, b| a.node.cmp(&b.node));
    let Some(first) = candidates
        .get(rng.usize(..candidates.len().max(1)))
        .copied()
        .or_else(|| instances.first())
    else {
        anyhow::bail!("no node to scale in");
    };
    timeline.log(format!(
        "cluster-autoscaler: node {} ({}) is unneeded; draining it",
        first.node, first.zone
    ));
    let ca = Drainer::new(client.clone(), "cluster-autoscaler")
        .with_progress(progress_logger(timeline.clone(), "cluster-autoscaler"));
    let ca_opts = DrainOptions {
        ignore_daemonsets: true,
        delete_emptydir_data: true,
        ..DrainOptions::default()
    };
    let report = ca
        .drain(&DrainRequest::manual(&first.node, ca_opts))
        .await?;
    let group = group_of(&first.zone);
    let before: usize = asg.zone_counts(&group).values().sum();
    timeline.log(format!("cluster-autoscaler: drained ({} pods); TerminateInstanceInAutoScalingGroup {} with capacity decrement", report.evicted, first.id));
    asg.terminate(
        &group,
        &first.id,
        &asg::terminate_request_cause(&first.id, before, before - 1),
    );
    let first_id = first.id.clone();
    wait_until(Duration::from_secs(30), || asg.is_terminated(&first_id)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. AZRebalance, where one group spans the zones.
    let mut rebalanced = false;
    let mut victim_id = None;
    if mode == Mode::PerZoneGroups {
        let counts: Vec<String> = zones
            .keys()
            .map(|z| {
                format!(
                    "{z}={}",
                    asg.zone_counts(&group_of(z)).values().sum::<usize>()
                )
            })
            .collect();
        timeline.log(format!(
            "no AZRebalance: each group spans one zone, so zones stay uneven ({})",
            counts.join(" ")
        ));
    } else {
        let counts = asg.zone_counts(GROUP);
        timeline.log(format!(
            "zones now uneven ({}): AZRebalance starts",
            counts
                .iter()
                .map(|(z, c)| format!("{z}={c}"))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        let (low_zone, _) = counts
            .iter()
            .min_by_key(|(_, c)| **c)
            .map(|(z, c)| (z.clone(), *c))
            .unwrap_or_default();
        let new_node = NodeSpec {
            name: format!(
                "ip-10-9-{}-{}.ec2.internal",
                low_zone.bytes().last().unwrap_or(b'a') - b'a' + 1,
                50 + rng.u32(..100)
            ),
            zone: low_zone.clone(),
            instance_id: String::new(),
            instance_type: "m5.large".into(),
            group: GROUP.into(),
            capacity: kube_sim::scenario::Capacity {
                cpu: "2".into(),
                memory: "8Gi".into(),
                pods: 29,
            },
            labels: Default::default(),
            taints: Vec::new(),
        };
        sim.add_node(&new_node)?;
        let new_id = kube_sim::scenario::instance_id_for(&new_node.name);
        asg.launched(
            GROUP,
            Instance {
                id: new_id.clone(),
                zone: low_zone.clone(),
                node: new_node.name.clone(),
                state: asg::State::InService,
            },
            &asg::az_rebalance_launch_cause(&counts),
        );
        timeline.log(format!(
            "AZRebalance: launched {new_id} (node {}) in {low_zone}",
            new_node.name
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let counts = asg.zone_counts(GROUP);
        let max = counts.values().copied().max().unwrap_or(0);
        let live: Vec<Instance> = asg
            .instances(GROUP)
            .into_iter()
            .filter(|i| {
                i.state == asg::State::InService
                    && counts.get(&i.zone) == Some(&max)
                    && i.id != new_id
            })
            .collect();
        let victim = live
            .iter()
            .find(|i| !pods_on(&sim, &i.node, POOLER_APP).is_empty())
            .or_else(|| live.first())
            .cloned();
        if let Some(v) = victim {
            let poolers = pods_on(&sim, &v.node, POOLER_APP);
            timeline.log(format!(
                "AZRebalance: {} has the most instances; terminating {} (node {}, runs {})",
                v.zone,
                v.id,
                v.node,
                if poolers.is_empty() {
                    "no pgbouncer".into()
                } else {
                    poolers.join(", ")
                }
            ));
            let total: usize = counts.values().sum();
            let zone_names: Vec<String> = counts.keys().cloned().collect();
            asg.terminate(
                GROUP,
                &v.id,
                &asg::az_rebalance_cause(&v.id, &zone_names, total, total - 1),
            );
            rebalanced = true;
            let vid = v.id.clone();
            wait_until(Duration::from_secs(60), || asg.is_terminated(&vid)).await;
            victim_id = Some(v.id.clone());
        }
    }

    // 3. Watch what the workers live through.
    tokio::time::sleep(opts.observe).await;
    ticker.abort();
    if let Some(c) = consumer {
        c.abort();
    }
    let (stats, pods_seen) = {
        let o = observer.lock().unwrap_or_else(|e| e.into_inner());
        (o.model.stats(), o.pods_seen.clone())
    };
    let ungraceful: Vec<String> = sim
        .cluster
        .exits()
        .into_iter()
        .filter(|e| e.kind == ExitKind::NodeLost)
        .filter(|e| pods_seen.get(&e.uid).is_none_or(|(_, infra)| !infra))
        .map(|e| format!("{}/{}", e.namespace, e.name))
        .collect();
    let waits = asg.waits();
    let wait = victim_id
        .as_ref()
        .and_then(|v| waits.iter().find(|w| &w.instance == v));
    let mut zones_at_end = BTreeMap::new();
    let groups: Vec<String> = if mode == Mode::PerZoneGroups {
        zones.keys().map(|z| group_of(z)).collect()
    } else {
        vec![GROUP.to_string()]
    };
    for g in &groups {
        for (z, c) in asg.zone_counts(g) {
            *zones_at_end.entry(z).or_default() += c;
        }
    }
    timeline.log(format!(
        "after {:.0}s: {} stalled worker threads, {} jobs waiting, {} failed jobs, {} pods killed without a graceful stop",
        opts.observe.as_secs_f64(),
        stats.stalled_threads,
        stats.jobs_waiting,
        stats.failed_jobs,
        ungraceful.len()
    ));
    let drain_seconds = if mode == Mode::Protected {
        rebalance_drain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(0.0)
    } else {
        0.0
    };
    Ok(RunReport {
        mode: mode.name().into(),
        stalled_worker_threads: stats.stalled_threads,
        jobs_waiting: stats.jobs_waiting,
        failed_jobs: stats.failed_jobs,
        completed_jobs: stats.completed_jobs,
        ungraceful_pod_kills: ungraceful.len(),
        ungraceful_pods: ungraceful,
        drain_seconds,
        group_waited_seconds: wait.map_or(0.0, |w| w.waited.as_secs_f64()),
        lifecycle_completed: wait.is_some_and(|w| w.completed),
        heartbeats: wait.map_or(0, |w| w.heartbeats),
        groups: groups.len(),
        zones_at_end,
        rebalanced,
        timeline: timeline.lines(),
    })
}
