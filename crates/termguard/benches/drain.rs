//! Drain benchmark on the Kubernetes API simulator, termguard and the real `kubectl drain`
//! side by side. Prints, for each scenario and tool: drain wall time, the overhead above the
//! physical limit (the least time the drain can take: the longest pod shutdown, or for the
//! budgeted scenario the replacements' start-ups the budget makes it wait for), and API
//! requests per pod; then termguard's figures as ratios of kubectl's. Not a test: nothing is
//! asserted.
//!
//! Run: `cargo bench -p termguard --bench drain` (optional: `-- --runs 5`).

use kube_sim::scenario::{NodeSpec, Scenario};
use kube_sim::Sim;
use std::time::{Duration, Instant};
use termguard::cluster::drain::{DrainOptions, DrainRequest, Drainer, Outcome};

const KUBECTL: &str = "kubectl";

struct Figures {
    wall: Duration,
    requests: u64,
}

/// One node packed with `pods` pods (shutdown times spread up to `max_shutdown_ms`), or
/// `nodes` such nodes; spare nodes are added after the pods are placed.
fn scenario(nodes: usize, pods_per_node: usize, max_shutdown_ms: u64) -> String {
    let mut s = String::from("name: bench\ndefaults: {startupMs: 50, shutdownMs: 50}\nnodes:\n");
    for i in 0..nodes {
        s.push_str(&format!(
            "  - {{name: ip-10-1-{}-{}.ec2.internal, zone: us-east-1a, capacity: {{cpu: \"64\", memory: 256Gi, pods: {}}}}}\n",
            i / 200,
            i % 200 + 10,
            pods_per_node + 5
        ));
    }
    s.push_str("workloads:\n");
    // Ten Deployments with shutdown times max/10, 2·max/10, …, max.
    let per = (pods_per_node * nodes) / 10;
    for k in 1..=10u64 {
        let replicas = if k == 10 {
            pods_per_node * nodes - per * 9
        } else {
            per
        };
        s.push_str(&format!(
            "  - {{kind: Deployment, name: app-{k}, replicas: {replicas}, shutdownMs: {}, terminationGracePeriodSeconds: 30}}\n",
            max_shutdown_ms * k / 10
        ));
    }
    s
}

async fn start(yaml: &str, spare: usize) -> anyhow::Result<(Sim, Vec<String>)> {
    let scenario = Scenario::from_yaml(yaml)?;
    let targets: Vec<String> = scenario.all_nodes().into_iter().map(|n| n.name).collect();
    let sim = Sim::start(&scenario, "127.0.0.1:0".parse()?).await?;
    if !sim.wait_settled(Duration::from_secs(120)).await {
        anyhow::bail!("scenario did not settle");
    }
    for i in 0..spare {
        sim.add_node(&NodeSpec {
            name: format!("ip-10-2-{}-{}.ec2.internal", i / 200, i % 200 + 10),
            zone: "us-east-1b".into(),
            instance_id: String::new(),
            instance_type: "m5.4xlarge".into(),
            group: String::new(),
            capacity: kube_sim::scenario::Capacity {
                cpu: "64".into(),
                memory: "256Gi".into(),
                pods: 200,
            },
            labels: Default::default(),
            taints: Vec::new(),
        })?;
    }
    Ok((sim, targets))
}

async fn run_termguard(yaml: &str, spare: usize) -> anyhow::Result<Figures> {
    let (sim, targets) = start(yaml, spare).await?;
    let client = termguard::cluster::drain::engine::client(kube::Config::new(sim.url().parse()?))?;
    let before = sim.faults.total();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, node) in targets.iter().enumerate() {
        let drainer = Drainer::new(client.clone(), &format!("bench-{i}"));
        let opts = DrainOptions {
            ignore_daemonsets: true,
            delete_emptydir_data: true,
            ..Default::default()
        };
        let req = DrainRequest::manual(node, opts);
        tasks.push(tokio::spawn(async move { drainer.drain(&req).await }));
    }
    for t in tasks {
        let report = t.await??;
        if report.outcome != Outcome::Drained {
            anyhow::bail!(
                "termguard drain of {} ended {:?}",
                report.node,
                report.outcome
            );
        }
    }
    let wall = t0.elapsed();
    Ok(Figures {
        wall,
        requests: sim.faults.total() - before,
    })
}

async fn run_kubectl(yaml: &str, spare: usize) -> anyhow::Result<Figures> {
    let (sim, targets) = start(yaml, spare).await?;
    let dir = std::env::temp_dir().join(format!("termguard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)?;
    let before = sim.faults.total();
    let t0 = Instant::now();
    let mut children = Vec::new();
    for node in &targets {
        let child = tokio::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.join(format!("cache-{node}")))
            .args([
                "drain",
                node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        children.push(child);
    }
    for mut c in children {
        let status = c.wait().await?;
        if !status.success() {
            anyhow::bail!("kubectl drain failed: {status}");
        }
    }
    let wall = t0.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Figures {
        wall,
        requests: sim.faults.total() - before,
    })
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

#[derive(Default)]
struct Summary {
    wall: Vec<f64>,
    overhead: Vec<f64>,
    per_pod: Vec<f64>,
}

impl Summary {
    fn add(&mut self, f: &Figures, physical: f64, pods: usize) {
        self.wall.push(f.wall.as_secs_f64());
        self.overhead.push(f.wall.as_secs_f64() - physical);
        self.per_pod.push(f.requests as f64 / pods as f64);
    }
}

fn spread(xs: &[f64]) -> (f64, f64) {
    (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(f64::MIN, f64::max),
    )
}

/// Prints one tool's medians; returns (wall, overhead, requests per pod).
fn print(tool: &str, s: &mut Summary) -> (f64, f64, f64) {
    let (wlo, whi) = spread(&s.wall);
    let (lo, hi) = spread(&s.overhead);
    let w = median(&mut s.wall);
    let o = median(&mut s.overhead);
    let r = median(&mut s.per_pod);
    println!("  {tool:<9} wall: median {w:>7.3} s (min {wlo:.3}, max {whi:.3})   overhead above physical limit: median {o:>6.3} s (min {lo:.3}, max {hi:.3})   API requests per pod: {r:>5.2}");
    (w, o, r)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let kubectl_ok = std::process::Command::new(KUBECTL)
        .arg("version")
        .arg("--client")
        .output()
        .is_ok();
    println!(
        "termguard drain benchmark (kube-sim; kubectl {}; {runs} runs each, alternating)",
        if kubectl_ok {
            "found"
        } else {
            "NOT found: termguard only"
        }
    );
    println!("command: cargo bench -p termguard --bench drain -- --runs {runs}");
    let max_shutdown_ms = 2000;
    let spread = max_shutdown_ms as f64 / 1000.0;
    // The pods' own shutdown bounds the first two; in the third a budget lets one of six
    // replicas go at a time, each once the last one's replacement is Ready, so the last
    // eviction can come no sooner than five start-ups after the first.
    let (replicas, startup_ms, shutdown_ms) = (6u64, 3000u64, 50u64);
    let budgeted = format!(
        "name: bench\ndefaults: {{startupMs: 50, shutdownMs: 50}}\nnodes:\n  - {{name: ip-10-1-0-10.ec2.internal, zone: us-east-1a}}\nworkloads:\n  - {{kind: Deployment, name: web, replicas: {replicas}, startupMs: {startup_ms}, shutdownMs: {shutdown_ms}, pdb: {{maxUnavailable: 1}}}}\n"
    );
    let budget_limit = ((replicas - 1) * startup_ms + shutdown_ms) as f64 / 1000.0;
    for (label, yaml, pods, spare, physical) in [
        (
            "one node, 110 pods, shutdown up to 2 s".to_string(),
            scenario(1, 110, max_shutdown_ms),
            110usize,
            3usize,
            spread,
        ),
        (
            "50 nodes at once, 30 pods each, shutdown up to 2 s".to_string(),
            scenario(50, 30, max_shutdown_ms),
            50 * 30,
            50,
            spread,
        ),
        (
            format!("{replicas} replicas behind a PDB with maxUnavailable: 1, each replacement Ready {:.0} s after it starts", startup_ms as f64 / 1000.0),
            budgeted,
            replicas as usize,
            1,
            budget_limit,
        ),
    ] {
        let mut tg = Summary::default();
        let mut kc = Summary::default();
        for _ in 0..runs {
            let f = run_termguard(&yaml, spare).await?;
            tg.add(&f, physical, pods);
            if kubectl_ok {
                let f = run_kubectl(&yaml, spare).await?;
                kc.add(&f, physical, pods);
            }
        }
        println!("{label} (physical limit {physical:.2} s):");
        let (tw, to, tr) = print("termguard", &mut tg);
        if kubectl_ok {
            let (kw, ko, kr) = print("kubectl", &mut kc);
            println!(
                "  ratio termguard/kubectl: wall {:.3}, overhead {:.3} (kubectl's is {:.0}x termguard's), requests per pod {:.2}; termguard's wall {:.2}x the physical limit",
                tw / kw,
                to / ko,
                ko / to.max(1e-3),
                tr / kr,
                tw / physical
            );
        } else {
            println!(
                "  termguard's wall {:.2}x the physical limit",
                tw / physical
            );
        }
    }
    Ok(())
}
