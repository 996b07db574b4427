//! A watched cache of Nodes, indexed by EC2 instance id through `spec.providerID`
//! (`aws:///<zone>/<instance-id>`; `docs/aws-semantics.md#instance-to-node`).

use crate::notice::InstanceId;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The instance id at the end of an AWS providerID, if it is one.
pub fn instance_of_provider_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws://")?;
    let id = rest.rsplit('/').next()?;
    id.starts_with("i-").then_some(id)
}

/// Nodes by instance id, kept current by a watch.
#[derive(Clone)]
pub struct NodeIndex {
    store: Store<Node>,
    task: Arc<JoinHandle<()>>,
    /// Turns true after the first full list. The store's own readiness future must have a
    /// single poller: it keeps only the last waker, so a second poller (a probe polling it with a
    /// no-op waker) would leave a task awaiting it asleep for ever.
    synced: watch::Receiver<bool>,
    /// Counts the objects the watch has delivered (see [`NodeIndex::newer`]).
    changes: watch::Receiver<u64>,
    /// Whether this cluster taints cordoned Nodes (see [`NodeIndex::taints_cordoned_nodes`]).
    controller_taints: Arc<AtomicBool>,
}

/// The taint the node lifecycle controller gives every cordoned Node
/// (<https://kubernetes.io/docs/reference/labels-annotations-taints/#node-kubernetes-io-unschedulable>).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Whether `node` carries [`UNSCHEDULABLE_TAINT`].
pub fn has_unschedulable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == UNSCHEDULABLE_TAINT))
}

impl NodeIndex {
    /// Starts the reflector.
    pub fn start(client: Client) -> Self {
        let api: Api<Node> = Api::all(client);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        let (synced_tx, synced) = watch::channel(false);
        let ready_store = store.clone();
        tokio::spawn(async move {
            if ready_store.wait_until_ready().await.is_ok() {
                synced_tx.send_replace(true);
            }
        });
        let (changes_tx, changes) = watch::channel(0u64);
        let controller_taints = Arc::new(AtomicBool::new(true));
        let seen_taint = controller_taints.clone();
        let task = tokio::spawn(async move {
            let mut stream = stream.boxed();
            while let Some(item) = stream.next().await {
                match item {
                    // In the store by now: the reflector writes before it yields.
                    Ok(node) => {
                        if has_unschedulable_taint(&node) {
                            seen_taint.store(true, Ordering::Relaxed);
                        }
                        changes_tx.send_modify(|n| *n = n.wrapping_add(1))
                    }
                    Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
                }
            }
        });
        NodeIndex {
            store,
            task: Arc::new(task),
            synced,
            changes,
            controller_taints,
        }
    }

    /// Whether this cluster taints cordoned Nodes by itself: the node lifecycle controller does,
    /// in every Kubernetes since taint-by-condition went GA (1.17), so this is assumed until a
    /// wait for the taint comes to nothing ([`NodeIndex::no_taint_came`]), and again once the
    /// watch shows the taint on any Node. A claim waits for that write instead of colliding
    /// with it.
    pub fn taints_cordoned_nodes(&self) -> bool {
        self.controller_taints.load(Ordering::Relaxed)
    }

    /// A Node cordoned a while ago still has no [`UNSCHEDULABLE_TAINT`]: this cluster does not
    /// taint cordoned Nodes (until the watch shows otherwise), and claims stop waiting for it.
    pub fn no_taint_came(&self) {
        self.controller_taints.store(false, Ordering::Relaxed);
    }

    /// The watch's copy of `name` once it is another than the one at `resource_version` (a
    /// copy from this watch, gone stale): the write that made it stale, as the watch delivers
    /// it within moments of a conflict — a read saved. `None` if none comes `within`.
    pub async fn newer(
        &self,
        name: &str,
        resource_version: &str,
        within: std::time::Duration,
    ) -> Option<Arc<Node>> {
        self.until(name, within, |n| {
            n.metadata.resource_version.as_deref() != Some(resource_version)
        })
        .await
    }

    /// The watch's copy of `name` once it satisfies `pred`; `None` if none does `within`.
    pub async fn until(
        &self,
        name: &str,
        within: std::time::Duration,
        pred: impl Fn(&Node) -> bool,
    ) -> Option<Arc<Node>> {
        let mut changes = self.changes.clone();
        let wait = async {
            loop {
                changes.borrow_and_update();
                if let Some(n) = self.get(name).filter(|n| pred(n)) {
                    return n;
                }
                if changes.changed().await.is_err() {
                    // The watch is gone: nothing newer will come.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(within, wait).await.ok()
    }

    /// Waits until the first full list has arrived.
    pub async fn ready(&self) {
        let _ = self.synced.clone().wait_for(|s| *s).await;
    }

    /// Whether the first full list has arrived.
    pub fn is_ready(&self) -> bool {
        *self.synced.borrow()
    }

    /// The Node whose providerID names this instance.
    pub fn node_for(&self, instance: &InstanceId) -> Option<Arc<Node>> {
        self.store.state().into_iter().find(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.provider_id.as_deref())
                .and_then(instance_of_provider_id)
                == Some(instance.as_str())
        })
    }

    /// The cached Node of that name.
    pub fn get(&self, name: &str) -> Option<Arc<Node>> {
        self.store.get(&reflector::ObjectRef::new(name))
    }

    /// Every cached Node.
    pub fn all(&self) -> Vec<Arc<Node>> {
        self.store.state()
    }

    /// Nodes without an AWS providerID (audit: they can never be matched to an instance).
    pub fn unmatched(&self) -> Vec<String> {
        self.store
            .state()
            .into_iter()
            .filter(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.provider_id.as_deref())
                    .and_then(instance_of_provider_id)
                    .is_none()
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    }
}

impl Drop for NodeIndex {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_yield_instance_ids() {
        assert_eq!(
            instance_of_provider_id("aws:///us-east-1a/i-0123456789abcdef0"),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(instance_of_provider_id("aws:///i-0abc"), Some("i-0abc"));
        assert_eq!(instance_of_provider_id("gce://p/z/n"), None);
        assert_eq!(
            instance_of_provider_id("aws:///us-east-1a/fargate-ip-10"),
            None
        );
    }
}
