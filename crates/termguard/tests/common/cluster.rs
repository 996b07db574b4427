//! One test body, two backends. A [`TestCluster`] is either the project's simulator, started
//! in-process for the test, or the real control plane (`scripts/cluster.sh up DIR`, named by
//! `TERMGUARD_CLUSTER_DIR`: etcd, kube-apiserver under RBAC, kube-controller-manager,
//! kube-scheduler and KWOK), with the test's scenario loaded into it by `termguard::kwok`.
//!
//! Everything a test body reads goes through the Kubernetes API (the admin client), so it
//! reads the same on both. The code under test gets [`TestCluster::client`]: on the real
//! backend that is the `termguard` user, bound to the ClusterRole shipped in
//! `deploy/manifests/termguard.yaml` (the Helm chart's), so a call the manifest does not allow fails the test.
//! Request counts come from the simulator's counters or from the API server's audit log.
//!
//! Real-backend tests share one control plane, so they run one at a time (a process-wide
//! lock) and each starts by wiping what an earlier one left. Without `TERMGUARD_CLUSTER_DIR`
//! they are skipped with a message, unless `TERMGUARD_REQUIRE_REAL_CLUSTER=1` (set by
//! `scripts/test.sh`) makes that a failure.

#![allow(dead_code)]

use kube::api::WatchParams;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, WatchEvent};
use kube_sim::resources::{self, ResourceDef};
use kube_sim::scenario::{NodeSpec, Scenario};
use kube_sim::Sim;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use termguard::kwok;

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// kube-sim, in-process.
    Sim,
    /// The real control plane of `scripts/cluster.sh`.
    Real,
}

/// The real control plane's directory, if one is configured.
pub fn real_cluster_dir() -> Option<PathBuf> {
    std::env::var_os("TERMGUARD_CLUSTER_DIR")
        .map(PathBuf::from)
        .filter(|d| d.join("kubeconfig").exists())
}

/// Whether a real-backend test should run; prints why not when it is skipped. Panics when
/// the real backend is required (`TERMGUARD_REQUIRE_REAL_CLUSTER=1`) but not there.
pub fn real_available(test: &str) -> bool {
    if real_cluster_dir().is_some() {
        return true;
    }
    assert!(
        std::env::var("TERMGUARD_REQUIRE_REAL_CLUSTER").as_deref() != Ok("1"),
        "{test}: TERMGUARD_REQUIRE_REAL_CLUSTER=1 but TERMGUARD_CLUSTER_DIR names no control plane"
    );
    // Straight to the process's stderr: the test harness captures eprintln! of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: skipped on the real backend (start one with scripts/cluster.sh up DIR and set TERMGUARD_CLUSTER_DIR=DIR)"
    );
    false
}

/// Declares a test that runs once per backend: `name::sim` and `name::real`.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident) -> $ret:ty $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($backend: $crate::cluster::Backend) -> $ret $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sim() -> $ret {
                body($crate::cluster::Backend::Sim).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real() -> $ret {
                if !$crate::cluster::real_available(concat!(stringify!($name), "::real")) {
                    return Ok(());
                }
                body($crate::cluster::Backend::Real).await
            }
        }
    };
}

/// Says so (once per process) when the control plane's KWOK runs other pod stages than
/// scripts/controlplane/kwok-stages.yaml (`scripts/cluster.sh up` reads them when it starts,
/// so a control plane started before a change runs the old ones). Tests that depend on how
/// pods stop can then fail for that reason alone.
fn warn_if_stages_differ(dir: &Path) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let env = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
        let Some(running) = env.lines().find_map(|l| l.strip_prefix("KWOK_STAGES=")) else {
            return;
        };
        let running = Path::new(running);
        let ours = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/controlplane/kwok-stages.yaml");
        let (Ok(running_text), Ok(ours_text)) = (
            std::fs::read_to_string(running),
            std::fs::read_to_string(&ours),
        ) else {
            return;
        };
        if !running_text.trim_end().ends_with(ours_text.trim_end()) {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "warning: the control plane in {} runs KWOK stages ({}) that differ from {}; \
                 tests that depend on how pods stop may fail. Restart the control plane.",
                dir.display(),
                running.display(),
                ours.display()
            );
        }
    });
}

fn real_lock() -> Arc<tokio::sync::Mutex<()>> {
    static LOCK: OnceLock<Arc<tokio::sync::Mutex<()>>> = OnceLock::new();
    LOCK.get_or_init(|| Arc::new(tokio::sync::Mutex::new(())))
        .clone()
}

struct Real {
    dir: PathBuf,
    applied: kwok::Applied,
    audit_from: Mutex<u64>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

/// A cluster for one test, on either backend.
pub struct TestCluster {
    /// Which backend this is.
    pub backend: Backend,
    sim: Option<Sim>,
    real: Option<Real>,
    /// Full access, for setting up and inspecting.
    pub admin: kube::Client,
    /// What the code under test uses (the `termguard` user on the real backend).
    pub client: kube::Client,
    kubeconfig: PathBuf,
    scenario: Scenario,
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn client_from(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig valid");
    termguard::cluster::drain::client(config).expect("kube client")
}

fn api(client: &kube::Client, def: &ResourceDef, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = kwok::api_resource(def);
    match ns {
        Some(ns) if def.namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    }
}

fn to_value(o: &DynamicObject) -> Value {
    serde_json::to_value(o).unwrap_or_default()
}

/// Deletes everything an earlier real-backend test may have left: the test namespaces'
/// workloads, pods and Events, namespaces the loader made, every Node.
async fn wipe(admin: &kube::Client) -> anyhow::Result<()> {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        propagation_policy: Some(kube::api::PropagationPolicy::Background),
        ..Default::default()
    };
    let lp = ListParams::default();
    let labelled = ListParams::default().labels(kwok::SCENARIO_LABEL);
    let mut namespaces = vec!["default".to_string(), "kube-system".to_string()];
    for ns in api(admin, &resources::NAMESPACES, None)
        .list(&labelled)
        .await?
    {
        let name = ns.metadata.name.clone().unwrap_or_default();
        api(admin, &resources::NAMESPACES, None)
            .delete(&name, &now)
            .await?;
        namespaces.push(name);
    }
    for ns in &namespaces {
        for def in [
            &resources::DEPLOYMENTS,
            &resources::STATEFULSETS,
            &resources::DAEMONSETS,
            &resources::REPLICASETS,
            &resources::PDBS,
            &resources::PODS,
            &resources::EVENTS,
        ] {
            match api(admin, def, Some(ns)).delete_collection(&now, &lp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    api(admin, &resources::NODES, None)
        .delete_collection(&now, &lp)
        .await?;
    // A killed node's Lease has another holder than KWOK (kwok::kill_node): left behind, it
    // would keep KWOK off the next node of that name.
    let leases = api(admin, &resources::LEASES, Some(kwok::NODE_LEASES));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        leases.delete_collection(&now, &lp).await?;
        let pods = api(admin, &resources::PODS, None).list(&lp).await?;
        let nodes = api(admin, &resources::NODES, None).list(&lp).await?;
        let left_leases = leases.list(&lp).await?;
        if pods.items.is_empty() && nodes.items.is_empty() && left_leases.items.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} pods, {} nodes and {} node leases left over from an earlier test would not go",
            pods.items.len(),
            nodes.items.len(),
            left_leases.items.len()
        );
        // Pods of a node killed by an earlier test are never confirmed gone: force them.
        for p in pods {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let name = p.metadata.name.clone().unwrap_or_default();
            let _ = api(admin, &resources::PODS, Some(&ns))
                .delete(&name, &now)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl TestCluster {
    /// Starts the scenario on the backend (not waiting for it to settle).
    pub async fn start(backend: Backend, scenario_yaml: &str) -> TestCluster {
        let scenario = Scenario::from_yaml(scenario_yaml).expect("valid scenario YAML");
        match backend {
            Backend::Sim => {
                let sim = Sim::start(&scenario, "127.0.0.1:0".parse().expect("loopback"))
                    .await
                    .expect("kube-sim starts");
                let kubeconfig = temp_dir("sim").join("kubeconfig");
                sim.write_kubeconfig(&kubeconfig)
                    .expect("kubeconfig written");
                let config = kube::Config::new(sim.url().parse().expect("simulator URL"));
                let client = termguard::cluster::drain::client(config).expect("kube client");
                TestCluster {
                    backend,
                    sim: Some(sim),
                    real: None,
                    admin: client.clone(),
                    client,
                    kubeconfig,
                    scenario,
                }
            }
            Backend::Real => {
                let turn = real_lock().lock_owned().await;
                let dir = real_cluster_dir().expect("TERMGUARD_CLUSTER_DIR names a control plane");
                warn_if_stages_differ(&dir);
                let admin = client_from(&dir.join("kubeconfig")).await;
                let client = client_from(&dir.join("termguard.kubeconfig")).await;
                wipe(&admin).await.expect("cleaning up after earlier tests");
                let applied = kwok::apply(&admin, &scenario)
                    .await
                    .expect("scenario applied to the real cluster");
                let audit_from = audit_len(&dir);
                TestCluster {
                    backend,
                    sim: None,
                    real: Some(Real {
                        dir: dir.clone(),
                        applied,
                        audit_from: Mutex::new(audit_from),
                        _turn: turn,
                    }),
                    admin,
                    client,
                    kubeconfig: dir.join("termguard.kubeconfig"),
                    scenario,
                }
            }
        }
    }

    /// Starts the scenario and waits until it has settled.
    pub async fn start_settled(backend: Backend, scenario_yaml: &str) -> TestCluster {
        let c = Self::start(backend, scenario_yaml).await;
        c.settle().await;
        c
    }

    /// The control plane's directory (`scripts/cluster.sh up DIR`), on the real backend.
    pub fn real_dir(&self) -> Option<&Path> {
        self.real.as_ref().map(|r| r.dir.as_path())
    }

    /// The simulator, when this is the simulator backend.
    pub fn sim(&self) -> Option<&Sim> {
        self.sim.as_ref()
    }

    /// Whether this is the real control plane.
    pub fn is_real(&self) -> bool {
        self.backend == Backend::Real
    }

    /// A kubeconfig for the code under test (the `termguard` user on the real backend).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Waits until every node and pod is Ready and every workload at its scale.
    pub async fn settle(&self) {
        match (&self.sim, &self.real) {
            (Some(sim), _) => assert!(
                sim.wait_settled(Duration::from_secs(60)).await,
                "the scenario did not settle"
            ),
            (_, Some(real)) => {
                kwok::wait_settled(&self.admin, &real.applied, Duration::from_secs(120))
                    .await
                    .expect("the scenario settles on the real cluster")
            }
            _ => unreachable!("a test cluster has a backend"),
        }
    }

    /// The Node as the API server has it.
    pub async fn node(&self, name: &str) -> Value {
        let n = api(&self.admin, &resources::NODES, None)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("node {name}: {e}"));
        to_value(&n)
    }

    /// Every pod bound to `node`.
    pub async fn pods_on(&self, node: &str) -> Vec<Value> {
        self.list_pods(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
    }

    /// Every pod of the cluster.
    pub async fn all_pods(&self) -> Vec<Value> {
        self.list_pods(&ListParams::default()).await
    }

    async fn list_pods(&self, lp: &ListParams) -> Vec<Value> {
        api(&self.admin, &resources::PODS, None)
            .list(lp)
            .await
            .expect("pods listed")
            .items
            .iter()
            .map(to_value)
            .collect()
    }

    /// A pod by namespace and name.
    pub async fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        api(&self.admin, &resources::PODS, Some(ns))
            .get_opt(name)
            .await
            .expect("pod read")
            .as_ref()
            .map(to_value)
    }

    /// Whether a pod with this UID still exists.
    pub async fn pod_uid_exists(&self, uid: &str) -> bool {
        self.all_pods()
            .await
            .iter()
            .any(|p| p["metadata"]["uid"] == uid)
    }

    /// Sets a pod's phase through its status subresource (a pod that finished).
    pub async fn set_phase(&self, ns: &str, name: &str, phase: &str) {
        let patch = json!({"status": {"phase": phase}});
        api(&self.admin, &resources::PODS, Some(ns))
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("pod status patched");
    }

    /// Adds a schedulable node in us-east-1b (somewhere for replacements to go), and waits
    /// until it is Ready.
    pub async fn add_node(&self, name: &str) {
        let spec = NodeSpec {
            name: name.to_string(),
            zone: "us-east-1b".into(),
            instance_id: String::new(),
            instance_type: "m5.large".into(),
            group: String::new(),
            capacity: Default::default(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
        };
        self.join_node(&spec, "added").await.expect("node added");
        match &self.real {
            None => {}
            Some(real) => {
                let mut applied = real.applied.clone();
                applied.nodes = vec![name.to_string()];
                applied.objects.clear();
                applied.namespaces.clear();
                kwok::wait_settled(&self.admin, &applied, Duration::from_secs(60))
                    .await
                    .expect("the added node becomes Ready");
            }
        }
    }

    /// A new instance's Node joins (not waiting for it to be Ready); `source` names what
    /// made it, in its scenario label on the real backend.
    pub async fn join_node(&self, spec: &NodeSpec, source: &str) -> anyhow::Result<()> {
        match &self.sim {
            Some(sim) => {
                sim.add_node(spec).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            None => {
                kwok::create_node(&self.admin, spec, &self.scenario.region, source).await?;
            }
        }
        Ok(())
    }

    /// Kills a node, as [`TestCluster::kill_node`], reporting a failure (a node already gone)
    /// instead of panicking.
    pub async fn try_kill_node(&self, name: &str) -> anyhow::Result<()> {
        match &self.sim {
            Some(sim) => {
                sim.kill_node(name).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            None => kwok::kill_node(&self.admin, name).await?,
        }
        Ok(())
    }

    /// Evictions the API server accepted since the last reset, per `namespace/name` of the
    /// pod (a refused one, 429 from a budget, is not counted). On the real backend, from the
    /// audit log's `termguard` requests.
    pub fn accepted_evictions(&self) -> BTreeMap<String, u64> {
        match (&self.sim, &self.real) {
            (Some(sim), _) => sim
                .faults
                .path_counts()
                .into_iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("evicted ")?.to_string(), v)))
                .collect(),
            (_, Some(real)) => {
                let from = *real.audit_from.lock().unwrap_or_else(|e| e.into_inner());
                accepted_evictions(&real.dir, from, "termguard")
            }
            _ => unreachable!(),
        }
    }

    /// Kills a node: nothing on it runs any more, and nothing confirms its pods gone.
    pub async fn kill_node(&self, name: &str) {
        match &self.sim {
            Some(sim) => {
                sim.kill_node(name).expect("node killed");
            }
            None => {
                // Also marks the node's pods never-exit, so nothing KWOK does after can end
                // them, however late it learns of the Lease.
                kwok::kill_node(&self.admin, name)
                    .await
                    .expect("node killed");
            }
        }
    }

    /// Forgets the request counts so far.
    pub fn reset_counts(&self) {
        match (&self.sim, &self.real) {
            (Some(sim), _) => sim.faults.reset_counts(),
            (_, Some(real)) => {
                *real.audit_from.lock().unwrap_or_else(|e| e.into_inner()) = audit_len(&real.dir)
            }
            _ => unreachable!(),
        }
    }

    /// Requests the code under test made since the last reset, per `"<verb> <path>"`, verbs as
    /// the simulator counts them (`evict` for a pod's eviction subresource). On the real
    /// backend, from the audit log: the `termguard` user's requests only.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        match (&self.sim, &self.real) {
            (Some(sim), _) => sim.faults.path_counts(),
            (_, Some(real)) => {
                let from = *real.audit_from.lock().unwrap_or_else(|e| e.into_inner());
                audit_counts(&real.dir, from, "termguard")
            }
            _ => unreachable!(),
        }
    }

    /// Requests for one verb and path since the last reset.
    pub fn requests(&self, verb: &str, path: &str) -> u64 {
        self.request_counts()
            .get(&format!("{verb} {path}"))
            .copied()
            .unwrap_or(0)
    }

    /// Requests for one verb, any path, since the last reset.
    pub fn verb_count(&self, verb: &str) -> u64 {
        let prefix = format!("{verb} ");
        self.request_counts()
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// Eviction requests for one pod.
    pub fn evictions_of(&self, pod: &Value) -> u64 {
        self.requests("evict", &format!("{}/eviction", pod_path(pod)))
    }

    /// DELETE requests for one pod.
    pub fn deletes_of(&self, pod: &Value) -> u64 {
        self.requests("delete", &pod_path(pod))
    }

    /// Runs the built `termguard` binary against this cluster (the code-under-test
    /// kubeconfig, stdin closed) and waits for it to exit.
    pub async fn termguard(&self, args: &[&str]) -> Run {
        self.termguard_via(&self.kubeconfig, args).await
    }
}

impl TestCluster {
    /// Runs the built `termguard` binary as [`TestCluster::termguard`] does, with another
    /// kubeconfig (one through the fault proxy: [`FaultyApi::kubeconfig`]).
    pub async fn termguard_via(&self, kubeconfig: &Path, args: &[&str]) -> Run {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env_remove("KUBECONFIG")
            .env("TERMGUARD_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .expect("termguard runs");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A way for the code under test to reach the API server through injected faults, seeded
    /// with `seed`: on the simulator, its own faults (which every client meets, the admin's
    /// reads included: fault only requests the test body does not make itself); on the real
    /// backend, the `termguard` user through a [`FaultProxy`] of its own, whose faults only
    /// the code under test meets. No faults until [`FaultyApi::set`].
    pub async fn faulty(&self, seed: u64) -> anyhow::Result<FaultyApi> {
        match (&self.sim, &self.real) {
            (Some(sim), _) => {
                sim.faults.seed(seed);
                sim.faults.set(Default::default());
                Ok(FaultyApi {
                    client: self.client.clone(),
                    kubeconfig: self.kubeconfig.clone(),
                    control: FaultControl::Sim(sim.faults.clone()),
                    _proxy: None,
                })
            }
            (_, Some(real)) => {
                let proxy = FaultProxy::start(&real.dir, seed).await?;
                let mut kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
                let beside = self.kubeconfig.parent().unwrap_or(Path::new("."));
                for c in &mut kc.clusters {
                    if let Some(cluster) = c.cluster.as_mut() {
                        cluster.server = Some(proxy.url.clone());
                        // The copy lives elsewhere: a CA path relative to the original's
                        // directory must not become one relative to the copy's.
                        if let Some(ca) = cluster.certificate_authority.as_mut() {
                            *ca = beside.join(&*ca).to_string_lossy().into_owned();
                        }
                    }
                }
                // JSON is YAML: the binary reads it as any kubeconfig.
                let kubeconfig = temp_dir("faultproxy").join("kubeconfig");
                std::fs::write(&kubeconfig, serde_json::to_vec(&kc)?)?;
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                Ok(FaultyApi {
                    client: termguard::cluster::drain::client(config)?,
                    kubeconfig,
                    control: FaultControl::Proxy(proxy.control.clone()),
                    _proxy: Some(proxy),
                })
            }
            _ => unreachable!("a test cluster has a backend"),
        }
    }
}

/// One kind of request made to fail: `verb` on `resource` (the plural, no API group:
/// `nodes`, `pods`, `daemonsets`), a share `rate` of them answered `code`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// `get`, `list`, `patch`, `delete`, ... as RBAC names them.
    pub verb: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// Share of the matching requests that fail, in [0, 1].
    pub rate: f64,
    /// The HTTP code they fail with.
    pub code: u16,
}

impl Fault {
    /// `rate` of `verb` `resource` requests answer `code`.
    pub fn new(verb: &'static str, resource: &'static str, rate: f64, code: u16) -> Self {
        Fault {
            verb,
            resource,
            rate,
            code,
        }
    }
}

/// Where a [`FaultyApi`]'s faults are set.
#[derive(Clone)]
enum FaultControl {
    Sim(Arc<kube_sim::faults::Faults>),
    /// The proxy's control address, `127.0.0.1:PORT`.
    Proxy(String),
}

impl FaultControl {
    async fn set(&self, faults: &[Fault]) -> anyhow::Result<()> {
        match self {
            FaultControl::Sim(f) => {
                let verbs: serde_json::Map<String, Value> = faults
                    .iter()
                    .map(|x| {
                        (
                            format!("{} {}", x.verb, x.resource),
                            json!({"errorRate": x.rate, "errorCode": x.code}),
                        )
                    })
                    .collect();
                f.set(serde_json::from_value(json!({ "verbs": verbs }))?);
            }
            FaultControl::Proxy(control) => {
                let rules: Vec<Value> = faults
                    .iter()
                    .map(|x| {
                        json!({"verb": x.verb, "resource": x.resource,
                               "error_rate": x.rate, "error_codes": [x.code]})
                    })
                    .collect();
                proxy_control(
                    control,
                    "PUT",
                    "/faults",
                    Some(&json!({ "rules": rules }).to_string()),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn injected(&self) -> anyhow::Result<u64> {
        match self {
            FaultControl::Sim(f) => Ok(f.injected()),
            FaultControl::Proxy(control) => {
                let stats = proxy_control(control, "GET", "/stats", None).await?;
                stats["faults"]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("faultproxy stats without faults: {stats}"))
            }
        }
    }
}

/// The code under test's way to an API server that fails requests on purpose
/// ([`TestCluster::faulty`]). On the real backend a faulted request never reaches the API
/// server, so its audit log (and [`TestCluster::request_counts`]) holds only the others; the
/// simulator counts both.
pub struct FaultyApi {
    /// The client for the code under test.
    pub client: kube::Client,
    kubeconfig: PathBuf,
    control: FaultControl,
    _proxy: Option<FaultProxy>,
}

impl FaultyApi {
    /// A kubeconfig for the `termguard` binary with the same faults.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Replaces the faults.
    pub async fn set(&self, faults: &[Fault]) -> anyhow::Result<()> {
        self.control.set(faults).await
    }

    /// `faults`, but every matching request fails until one has: whatever the seeded
    /// generator draws, the first try fails and the retry is exercised. Switches to the
    /// rates themselves (in the background) once a fault was injected.
    pub async fn set_failing_first(&self, faults: &[Fault]) -> anyhow::Result<FaultSwitch> {
        let always: Vec<Fault> = faults.iter().map(|f| Fault { rate: 1.0, ..*f }).collect();
        let before = self.control.injected().await?;
        self.control.set(&always).await?;
        let control = self.control.clone();
        let faults = faults.to_vec();
        Ok(FaultSwitch(tokio::spawn(async move {
            loop {
                if control.injected().await.unwrap_or(before) > before {
                    if let Err(e) = control.set(&faults).await {
                        eprintln!("setting the faults: {e}");
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })))
    }

    /// No more faults.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.control.set(&[]).await
    }

    /// Faults injected so far.
    pub async fn injected(&self) -> anyhow::Result<u64> {
        self.control.injected().await
    }

    /// Requests for one verb and path that reached the API server, as [`TestCluster::requests`]
    /// counts them, plus `injected` on the simulator (which counts faulted requests too).
    pub fn reached(&self, c: &TestCluster, verb: &str, path: &str, injected: u64) -> u64 {
        let counted = c.requests(verb, path);
        match self.control {
            FaultControl::Sim(_) => counted.saturating_sub(injected),
            FaultControl::Proxy(_) => counted,
        }
    }
}

/// The background switch of [`FaultyApi::set_failing_first`]; stops with its drop.
pub struct FaultSwitch(tokio::task::JoinHandle<()>);

impl Drop for FaultSwitch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running scripts/controlplane/faultproxy (its README) in front of a real control plane:
/// the API server's address with faults, and its control API. Stopped with its drop.
pub struct FaultProxy {
    _child: tokio::process::Child,
    /// `https://127.0.0.1:PORT`, the API server's address through the proxy.
    pub url: String,
    /// `127.0.0.1:PORT` of its control API.
    pub control: String,
}

impl FaultProxy {
    /// Starts `$BIN/faultproxy` (DIR/env) in front of the control plane of `dir`.
    pub async fn start(dir: &Path, seed: u64) -> anyhow::Result<FaultProxy> {
        use tokio::io::AsyncBufReadExt;
        let env = std::fs::read_to_string(dir.join("env"))?;
        let var = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
                .ok_or_else(|| anyhow::anyhow!("{k} missing from {}", dir.join("env").display()))
        };
        let bin = PathBuf::from(var("BIN")?).join("faultproxy");
        let pki = dir.join("pki");
        let mut child = tokio::process::Command::new(&bin)
            .arg("--upstream")
            .arg(var("API_URL")?)
            .arg("--ca")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("apiserver.crt"))
            .arg("--key")
            .arg(pki.join("apiserver.key"))
            .args(["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"])
            .arg("--seed")
            .arg(seed.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("{}: {e} (built by scripts/cluster.sh build)", bin.display())
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("faultproxy: no stdout"))?;
        let mut first = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::BufReader::new(stdout).read_line(&mut first),
        )
        .await??;
        let addrs: Value = serde_json::from_str(&first)
            .map_err(|e| anyhow::anyhow!("faultproxy's first line {first:?}: {e}"))?;
        let (Some(listen), Some(control)) = (addrs["listen"].as_str(), addrs["control"].as_str())
        else {
            anyhow::bail!("faultproxy's first line {first:?} names no addresses");
        };
        Ok(FaultProxy {
            _child: child,
            url: format!("https://{listen}"),
            control: control.to_string(),
        })
    }

    /// A request to its control API (`PUT /faults`, `GET /stats`, ...), answered with JSON.
    pub async fn control(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<Value> {
        proxy_control(&self.control, method, path, body).await
    }
}

/// A plain HTTP/1.0 request to faultproxy's control API at `addr`; its JSON answer.
async fn proxy_control(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, answer) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    anyhow::ensure!(
        status == 200,
        "faultproxy {method} {path}: {status} {answer}"
    );
    Ok(serde_json::from_str(answer)?)
}

/// What the built binary did.
pub struct Run {
    /// Exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// `/api/v1/namespaces/NS/pods/NAME`.
pub fn pod_path(pod: &Value) -> String {
    format!(
        "/api/v1/namespaces/{}/pods/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or(""),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// The audit log's length in bytes: where the requests made from now on start.
pub fn audit_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("audit.log")).map_or(0, |m| m.len())
}

/// The completed requests of `user` in the audit log, from byte `from` on, read as they go.
pub fn audit_events<'a>(dir: &Path, from: u64, user: &'a str) -> impl Iterator<Item = Value> + 'a {
    use std::io::{BufRead, Seek, SeekFrom};
    let file = std::fs::File::open(dir.join("audit.log"))
        .ok()
        .and_then(|mut f| f.seek(SeekFrom::Start(from)).ok().map(|_| f));
    file.into_iter()
        .flat_map(|f| std::io::BufReader::new(f).lines().map_while(|l| l.ok()))
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .filter(move |ev| ev["user"]["username"] == user && ev["stage"] == "ResponseComplete")
}

/// Requests of `user` in the audit log from byte `from` on, keyed like the simulator's
/// counters: `"<verb> <path>"`.
pub fn audit_counts(dir: &Path, from: u64, user: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for ev in audit_events(dir, from, user) {
        let uri = ev["requestURI"].as_str().unwrap_or("");
        let path = uri.split('?').next().unwrap_or(uri);
        let verb = if ev["objectRef"]["subresource"] == "eviction" {
            "evict"
        } else {
            ev["verb"].as_str().unwrap_or("")
        };
        *counts.entry(format!("{verb} {path}")).or_default() += 1;
    }
    counts
}

/// Evictions of `user` the API server accepted (2xx), from byte `from` of the audit log on,
/// per `namespace/name` of the pod.
pub fn accepted_evictions(dir: &Path, from: u64, user: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for ev in audit_events(dir, from, user) {
        let accepted = ev["responseStatus"]["code"]
            .as_u64()
            .is_some_and(|c| (200..300).contains(&c));
        if ev["objectRef"]["subresource"] != "eviction" || !accepted {
            continue;
        }
        let pod = format!(
            "{}/{}",
            ev["objectRef"]["namespace"].as_str().unwrap_or(""),
            ev["objectRef"]["name"].as_str().unwrap_or("")
        );
        *counts.entry(pod).or_default() += 1;
    }
    counts
}

/// One pod change seen by a [`PodFeed`].
#[derive(Debug, Clone)]
pub struct Change {
    /// ADDED, MODIFIED or DELETED.
    pub ty: ChangeType,
    /// The pod after the change.
    pub object: Value,
    /// The pod before it (None for ADDED).
    pub old: Option<Value>,
    /// resourceVersion of the change.
    pub rv: u64,
}

/// Kinds of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed from the API.
    Deleted,
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Every pod change after it started, in the order the API server's watch delivered them,
/// plus the pods that existed when it started: when each pod was asked to go (its
/// deletionTimestamp appeared) and when it was gone. The same watch on both backends.
pub struct PodFeed {
    /// The pods at the moment recording started.
    pub initial: Vec<Value>,
    log: Arc<Mutex<Vec<Change>>>,
    state: Arc<Mutex<BTreeMap<String, Value>>>,
    failed: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
    admin: kube::Client,
}

impl Drop for PodFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodFeed {
    /// Lists every pod and watches from the list's resourceVersion.
    pub async fn start(c: &TestCluster) -> Self {
        let pods = api(&c.admin, &resources::PODS, None);
        let list = pods
            .list(&ListParams::default())
            .await
            .expect("pods listed");
        let rv = list.metadata.resource_version.clone().unwrap_or_default();
        let initial: Vec<Value> = list.items.iter().map(to_value).collect();
        let state: BTreeMap<String, Value> = initial
            .iter()
            .map(|p| {
                (
                    p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    p.clone(),
                )
            })
            .collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(state));
        let failed = Arc::new(Mutex::new(None));
        let task = {
            let (log, state, failed) = (log.clone(), state.clone(), failed.clone());
            tokio::spawn(async move {
                use futures::StreamExt;
                let wp = WatchParams::default().timeout(290);
                let mut rv = rv;
                loop {
                    let stream = match pods.watch(&wp, &rv).await {
                        Ok(s) => s,
                        Err(e) => {
                            *lock(&failed) = Some(format!("watch: {e}"));
                            return;
                        }
                    };
                    let mut stream = std::pin::pin!(stream);
                    while let Some(ev) = stream.next().await {
                        let (ty, obj) = match ev {
                            Ok(WatchEvent::Added(o)) => (ChangeType::Added, to_value(&o)),
                            Ok(WatchEvent::Modified(o)) => (ChangeType::Modified, to_value(&o)),
                            Ok(WatchEvent::Deleted(o)) => (ChangeType::Deleted, to_value(&o)),
                            Ok(WatchEvent::Bookmark(b)) => {
                                rv = b.metadata.resource_version;
                                continue;
                            }
                            Ok(WatchEvent::Error(e)) => {
                                *lock(&failed) = Some(format!("watch error: {e:?}"));
                                return;
                            }
                            Err(e) => {
                                *lock(&failed) = Some(format!("watch stream: {e}"));
                                return;
                            }
                        };
                        rv = obj["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or(&rv)
                            .to_string();
                        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
                        let old = {
                            let mut st = lock(&state);
                            if ty == ChangeType::Deleted {
                                st.remove(&uid)
                            } else {
                                st.insert(uid, obj.clone())
                            }
                        };
                        let rv_n = rv_of(&obj);
                        lock(&log).push(Change {
                            ty,
                            object: obj,
                            old,
                            rv: rv_n,
                        });
                    }
                }
            })
        };
        PodFeed {
            initial,
            log,
            state,
            failed,
            task,
            admin: c.admin.clone(),
        }
    }

    /// The pod changes recorded so far, oldest first. Panics if the watch failed.
    pub fn changes(&self) -> Vec<Change> {
        if let Some(why) = lock(&self.failed).clone() {
            panic!("the pod feed stopped: {why}");
        }
        lock(&self.log).clone()
    }

    /// Waits until the feed has seen every pod change the API server has committed so far:
    /// its view of the pods equals a fresh list.
    pub async fn sync(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let list = api(&self.admin, &resources::PODS, None)
                .list(&ListParams::default())
                .await
                .expect("pods listed");
            let now: BTreeMap<String, String> = list
                .items
                .iter()
                .map(|p| {
                    (
                        p.metadata.uid.clone().unwrap_or_default(),
                        p.metadata.resource_version.clone().unwrap_or_default(),
                    )
                })
                .collect();
            let seen: BTreeMap<String, String> = lock(&self.state)
                .iter()
                .map(|(uid, p)| {
                    (
                        uid.clone(),
                        p["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect();
            if now == seen {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the pod feed did not catch up with the API server"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The initial pods bound to `node`.
    pub fn initial_on(&self, node: &str) -> Vec<Value> {
        self.initial
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .cloned()
            .collect()
    }

    /// The changes of one pod UID.
    pub fn of(&self, uid: &str) -> Vec<Change> {
        self.changes()
            .into_iter()
            .filter(|c| c.object["metadata"]["uid"] == uid)
            .collect()
    }

    /// Position in the feed (watch order) at which the pod first got a deletionTimestamp.
    pub fn deletion_requested_at(&self, uid: &str) -> Option<usize> {
        self.changes().iter().position(|c| {
            c.object["metadata"]["uid"] == uid
                && terminating(&c.object)
                && !c.old.as_ref().is_some_and(terminating)
        })
    }

    /// How many times the pod went from running to terminating (at most once for a pod).
    pub fn deletion_requests(&self, uid: &str) -> usize {
        self.of(uid)
            .into_iter()
            .filter(|c| {
                c.ty != ChangeType::Deleted
                    && terminating(&c.object)
                    && !c.old.as_ref().is_some_and(terminating)
            })
            .count()
    }

    /// Position in the feed at which the pod was removed from the API.
    pub fn removed_at(&self, uid: &str) -> Option<usize> {
        self.changes()
            .iter()
            .position(|c| c.object["metadata"]["uid"] == uid && c.ty == ChangeType::Deleted)
    }

    /// The grace period the pod was deleted with, when it first got a deletionTimestamp.
    pub fn deletion_grace_seconds(&self, uid: &str) -> Option<i64> {
        self.of(uid)
            .into_iter()
            .find(|c| terminating(&c.object))
            .and_then(|c| c.object["metadata"]["deletionGracePeriodSeconds"].as_i64())
    }

    /// The smallest number of healthy pods among those `selects`, after every recorded change
    /// (starting from the initial snapshot).
    pub fn min_healthy(&self, selects: impl Fn(&Value) -> bool) -> usize {
        let mut state: BTreeMap<String, bool> = self
            .initial
            .iter()
            .filter(|p| selects(p))
            .map(|p| (uid(p), healthy(p)))
            .collect();
        let count = |s: &BTreeMap<String, bool>| s.values().filter(|h| **h).count();
        let mut min = count(&state);
        for c in self.changes() {
            if !selects(&c.object) {
                continue;
            }
            if c.ty == ChangeType::Deleted {
                state.remove(&uid(&c.object));
            } else {
                state.insert(uid(&c.object), healthy(&c.object));
            }
            min = min.min(count(&state));
        }
        min
    }
}

/// Waits until the async condition holds (checked every 50 ms), for at most `limit`; returns
/// whether it did.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> String {
    obj["metadata"]["uid"].as_str().unwrap_or("").to_string()
}

/// Whether the pod has a deletionTimestamp.
pub fn terminating(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// Whether the pod is Ready and not terminating (what a PodDisruptionBudget counts).
pub fn healthy(obj: &Value) -> bool {
    !terminating(obj)
        && obj["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True")
}
