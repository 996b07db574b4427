//! kube-sim: a Kubernetes API server simulator faithful to the subset kubectl 1.32 and kube-rs
//! use (`docs/simulator.md`), with a scheduler, workload controllers, kubelets, PDB
//! status and node loss behind it. It is the test bed of termguard's drain engine, the engine
//! of `termguard lab`, and can be served on its own for kubectl.

pub mod controllers;
pub mod defaults;
pub mod errors;
pub mod events;
pub mod faults;
pub mod http;
pub mod openapi;
pub mod ops;
pub mod patch;
pub mod proto;
pub mod resources;
pub mod scenario;
pub mod selectors;
pub mod store;
pub mod table;
pub mod validation;
mod watch;

use controllers::{Cluster, PodExit, Timings};
use errors::ApiError;
use faults::Faults;
use scenario::{NodeSpec, Scenario};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio::task::JoinHandle;

/// Starting the simulator failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A scenario object was rejected.
    #[error("loading scenario object {what}: {source}")]
    Load {
        /// Which object.
        what: String,
        /// Cause.
        source: ApiError,
    },
    /// Writing the kubeconfig failed.
    #[error("writing kubeconfig {path}: {source}")]
    Kubeconfig {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A running simulator: the API server on a loopback port plus the cluster behind it.
pub struct Sim {
    /// The object store.
    pub store: Arc<Store>,
    /// Fault injection and request counters.
    pub faults: Arc<Faults>,
    /// The controllers.
    pub cluster: Arc<Cluster>,
    addr: SocketAddr,
    region: String,
    tasks: Vec<JoinHandle<()>>,
}

impl http::Admin for Cluster {
    fn kill_node(&self, name: &str) -> Result<Value, ApiError> {
        let died = Cluster::kill_node(self, name)?;
        Ok(json!({"node": name, "podsKilled": died}))
    }
}

impl Sim {
    /// Loads the scenario and serves the API on `listen` (use port 0 for a free port).
    pub async fn start(scenario: &Scenario, listen: SocketAddr) -> Result<Sim, SimError> {
        Self::start_seeded(scenario, listen, None).await
    }

    /// Like [`Sim::start`], with generated names seeded so that a replay of the scenario
    /// names (and therefore schedules) its pods the same way.
    pub async fn start_seeded(
        scenario: &Scenario,
        listen: SocketAddr,
        seed: Option<u64>,
    ) -> Result<Sim, SimError> {
        let store = Arc::new(Store::default());
        if let Some(seed) = seed {
            store.seed(seed);
        }
        let faults = Arc::new(Faults::default());
        let timings = Timings {
            startup: Duration::from_millis(scenario.defaults.startup_ms),
            shutdown: Duration::from_millis(scenario.defaults.shutdown_ms),
        };
        let cluster = Cluster::new(store.clone(), timings);
        load(&store, &cluster, scenario)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            addr: listen,
            source,
        })?;
        let state = Arc::new(http::AppState {
            store: store.clone(),
            faults: faults.clone(),
            admin: Some(cluster.clone() as Arc<dyn http::Admin>),
        });
        let app = http::router(state);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "kube-sim HTTP server stopped");
            }
        });
        let controllers = tokio::spawn(cluster.clone().run());
        Ok(Sim {
            store,
            faults,
            cluster,
            addr,
            region: scenario.region.clone(),
            tasks: vec![server, controllers],
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that kubectl and kube-rs can use.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\nusers:\n- name: kube-sim\n  user:\n    token: kube-sim\n",
            url = self.url()
        )
    }

    /// Writes the kubeconfig to a file.
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> Result<(), SimError> {
        std::fs::write(path, self.kubeconfig()).map_err(|source| SimError::Kubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    /// Waits until every workload is fully ready and no pod is pending or terminating.
    pub async fn wait_settled(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.store.changes();
        loop {
            if self.settled() {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return self.settled(),
                _ = changes.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    /// Whether every pod is Running and Ready and every workload at its scale.
    pub fn settled(&self) -> bool {
        use controllers::podutil;
        use resources::{DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, STATEFULSETS};
        let (pods, _) = self.store.list(&PODS, None);
        let pods_ok = pods
            .iter()
            .filter(|p| !self.cluster.is_dead(podutil::node_name(p)))
            .all(|p| podutil::healthy(p) || podutil::finished(p));
        // A workload counts only once its controller has observed it: right after start no
        // ReplicaSet or pod exists yet and an empty status would otherwise look settled.
        let scaled = |res: &'static resources::ResourceDef, want: &str, have: &[&str]| {
            let (objs, _) = self.store.list(res, None);
            objs.iter().all(|o| {
                let w = if want == "spec.replicas" {
                    o["spec"]["replicas"].as_i64().unwrap_or(1)
                } else {
                    o["status"][want].as_i64().unwrap_or(0)
                };
                o["status"]["observedGeneration"].is_i64()
                    && o["status"]["observedGeneration"] == o["metadata"]["generation"]
                    && have
                        .iter()
                        .all(|h| o["status"][*h].as_i64().unwrap_or(0) == w)
            })
        };
        let ready = &["replicas", "readyReplicas"];
        pods_ok
            && scaled(&DEPLOYMENTS, "spec.replicas", ready)
            && scaled(&REPLICASETS, "spec.replicas", ready)
            && scaled(&STATEFULSETS, "spec.replicas", ready)
            && scaled(
                &DAEMONSETS,
                "desiredNumberScheduled",
                &["currentNumberScheduled", "numberReady"],
            )
    }

    /// Kills a node's instance (no graceful shutdown for its pods).
    pub fn kill_node(&self, name: &str) -> Result<Vec<PodExit>, ApiError> {
        self.cluster.kill_node(name)
    }

    /// Adds a node (a new instance joined the cluster).
    pub fn add_node(&self, node: &NodeSpec) -> Result<Value, ApiError> {
        self.store
            .create(
                &resources::NODES,
                "",
                scenario::node_object(node, &self.region),
            )
            .map(|v| (*v).clone())
    }

    /// Deletes a Node object (the cloud node controller does this once the instance is gone);
    /// the pod garbage collector then removes its pods.
    pub fn delete_node(&self, name: &str) -> Result<(), ApiError> {
        self.store
            .remove(&resources::NODES, "", name, None)
            .map(|_| ())
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Creates the scenario's namespaces, nodes and workloads.
fn load(store: &Store, cluster: &Cluster, scenario: &Scenario) -> Result<(), SimError> {
    let mut namespaces: Vec<String> = ["default", "kube-system", "kube-public", "kube-node-lease"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for w in &scenario.workloads {
        if !namespaces.contains(&w.namespace) {
            namespaces.push(w.namespace.clone());
        }
    }
    for ns in namespaces {
        store
            .create(&resources::NAMESPACES, "", json!({"metadata": {"name": ns}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}))
            .map_err(|source| SimError::Load { what: format!("namespace {ns}"), source })?;
    }
    let nodes = scenario.all_nodes();
    for n in &nodes {
        store
            .create(
                &resources::NODES,
                "",
                scenario::node_object(n, &scenario.region),
            )
            .map_err(|source| SimError::Load {
                what: format!("node {}", n.name),
                source,
            })?;
    }
    for w in &scenario.workloads {
        let (objs, statics) = scenario::workload_objects(w, &scenario.defaults, &nodes);
        for (res, obj) in objs {
            store
                .create(res, &w.namespace, obj)
                .map_err(|source| SimError::Load {
                    what: format!("{} {}/{}", res.kind, w.namespace, w.name),
                    source,
                })?;
        }
        for (node, manifest) in statics {
            cluster.add_static_pod(&node, manifest);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fresh_simulator_is_not_settled_before_its_workloads_are_ready() {
        // Pods cannot be Ready for a minute, so the cluster must not look settled now, even
        // before the controllers have created a single ReplicaSet or pod.
        let scenario = Scenario::from_yaml(
            "defaults: {startupMs: 60000}\nnodes: [{name: n1, zone: us-east-1a}]\nworkloads:\n- {kind: Deployment, name: web, replicas: 2}\n- {kind: DaemonSet, name: agent}\n",
        )
        .expect("scenario");
        let sim = Sim::start(&scenario, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("start");
        assert!(!sim.settled());
        assert!(!sim.wait_settled(Duration::from_millis(300)).await);
    }
}
