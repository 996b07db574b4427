//! Drain benchmark on the Kubernetes API simulator, termguard and the real `kubectl drain`
//! side by side (issue 4). Prints, for each scenario and tool: drain wall time, the overhead
//! above the physical limit (wall time minus the longest pod shutdown), and API requests per
//! pod; then termguard's figures as ratios of kubectl's. Not a test: nothing is asserted.
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

struct Summary {
    overhead: Vec<f64>,
    per_pod: Vec<f64>,
}

fn print(tool: &str, s: &mut Summary) -> (f64, f64) {
    let (lo, hi) = (
        s.overhead.iter().cloned().fold(f64::MAX, f64::min),
        s.overhead.iter().cloned().fold(f64::MIN, f64::max),
    );
    let o = median(&mut s.overhead);
    let r = median(&mut s.per_pod);
    println!("  {tool:<9} overhead above physical limit: median {o:>6.3} s (min {lo:.3}, max {hi:.3})   API requests per pod: {r:>5.2}");
    (o, r)
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
    for (label, nodes, per_node, spare) in [
        (
            "one node, 110 pods, shutdown up to 2 s",
            1usize,
            110usize,
            3usize,
        ),
        (
            "50 nodes at once, 30 pods each, shutdown up to 2 s",
            50,
            30,
            50,
        ),
    ] {
        let yaml = scenario(nodes, per_node, max_shutdown_ms);
        let physical = max_shutdown_ms as f64 / 1000.0;
        let mut tg = Summary {
            overhead: vec![],
            per_pod: vec![],
        };
        let mut kc = Summary {
            overhead: vec![],
            per_pod: vec![],
        };
        for _ in 0..runs {
            let f = run_termguard(&yaml, spare).await?;
            tg.overhead.push(f.wall.as_secs_f64() - physical);
            tg.per_pod
                .push(f.requests as f64 / (nodes * per_node) as f64);
            if kubectl_ok {
                let f = run_kubectl(&yaml, spare).await?;
                kc.overhead.push(f.wall.as_secs_f64() - physical);
                kc.per_pod
                    .push(f.requests as f64 / (nodes * per_node) as f64);
            }
        }
        println!("{label} (physical limit {physical:.1} s):");
        let (to, tr) = print("termguard", &mut tg);
        if kubectl_ok {
            let (ko, kr) = print("kubectl", &mut kc);
            println!(
                "  ratio termguard/kubectl: overhead {:.3} (kubectl's is {:.0}x termguard's), requests per pod {:.2}",
                to / ko,
                ko / to.max(1e-3),
                tr / kr
            );
        }
    }
    Ok(())
}
