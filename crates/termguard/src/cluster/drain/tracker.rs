//! Waiting for pods to be gone by watching, not polling
//! (`docs/drain-semantics.md#waiting-by-watching`): one watcher over the node's pods (list,
//! then watch from that resourceVersion; a 410 means relist) keeps the set of live pod UIDs. A
//! pod is gone when its UID is no longer in the set — a recreated pod with the same name has a
//! new UID, so it is never mistaken for the old one. The last state of a pod seen going (the
//! DELETED event's object: its kubelet's final status) is kept, with when it went, so that the
//! drain can tell a pod that stopped by itself from one that was killed.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Live pods on the node by UID; `None` until the first complete list.
type Snapshot = Kept<Pod>;

/// Objects of a watch by key (`entry` gives an object's key and what to keep of it); `None`
/// until the first complete list. Each change publishes a new map, so the values are shared:
/// a change costs a copy of the keys, not of every object (with a node's hundred pods, deep
/// copies made each change the drain's main cost).
pub(super) type Kept<V> = Option<Arc<HashMap<String, Arc<V>>>>;

/// Watches `api` (list, then watch from that resourceVersion; a 410 relists) and publishes
/// every change of the kept objects on a channel; `applied` sees every object listed or
/// changed, `deleted` every object a DELETED event removes, in its final state. The task runs
/// until its handle is aborted;
/// a failed watch is retried by kube-runtime's watcher after a pause, `what` naming it in the
/// log.
pub(super) fn keep<K, V>(
    api: Api<K>,
    config: watcher::Config,
    what: String,
    entry: fn(&K) -> Option<(String, V)>,
    applied: impl Fn(&str, &K) + Send + 'static,
    deleted: impl Fn(&str, K) + Send + 'static,
) -> (watch::Receiver<Kept<V>>, JoinHandle<()>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    let (tx, rx) = watch::channel::<Kept<V>>(None);
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).boxed();
        let mut live: HashMap<String, Arc<V>> = HashMap::new();
        let mut buffer: HashMap<String, Arc<V>> = HashMap::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::Init) => buffer.clear(),
                Ok(Event::InitApply(o)) => {
                    if let Some((k, v)) = entry(&o) {
                        applied(&k, &o);
                        buffer.insert(k, Arc::new(v));
                    }
                }
                Ok(Event::InitDone) => {
                    live = std::mem::take(&mut buffer);
                    tx.send_replace(Some(Arc::new(live.clone())));
                }
                Ok(Event::Apply(o)) => {
                    if let Some((k, v)) = entry(&o) {
                        applied(&k, &o);
                        live.insert(k, Arc::new(v));
                        tx.send_replace(Some(Arc::new(live.clone())));
                    }
                }
                Ok(Event::Delete(o)) => {
                    if let Some((k, _)) = entry(&o) {
                        live.remove(&k);
                        deleted(&k, o);
                        tx.send_replace(Some(Arc::new(live.clone())));
                    }
                }
                // The watcher retries by itself; keep going (backoff is kube-runtime's).
                Err(e) => {
                    tracing::warn!(watching = %what, error = %e, "watch failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
        }
    });
    (rx, task)
}

/// A pod seen going: its last state and when the watch saw it go.
#[derive(Debug, Clone)]
pub struct Departed {
    /// The object of the DELETED event.
    pub pod: Pod,
    /// When the event arrived.
    pub at: jiff::Timestamp,
}

/// A pod's deletion: `deletionTimestamp` and `deletionGracePeriodSeconds`.
type Deletion = (Option<Time>, Option<i64>);

type DepartedMap = Arc<std::sync::Mutex<HashMap<String, Departed>>>;

/// Tracks which pods are still on a node.
pub struct PodTracker {
    rx: watch::Receiver<Snapshot>,
    departed: DepartedMap,
    task: JoinHandle<()>,
}

impl Drop for PodTracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodTracker {
    /// Starts watching the pods bound to `node`; the first list is paged by `page_size` pods
    /// (`--chunk-size`; 0: one page).
    pub fn start(client: Client, node: &str, page_size: u32) -> Self {
        let api: Api<Pod> = Api::all(client);
        let mut config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
        config.page_size = (page_size > 0).then_some(page_size);
        let departed = DepartedMap::default();
        let gone = departed.clone();
        // A kubelet that is done removes the pod with a grace period of 0 (KWOK does), and
        // the pod's last states then say 0: the deletion that counts is the one it honoured,
        // the last with a grace period, as the watch saw it go by.
        let honoured: Arc<std::sync::Mutex<HashMap<String, Deletion>>> = Arc::default();
        let seen = honoured.clone();
        let on_apply = move |uid: &str, pod: &Pod| {
            let m = &pod.metadata;
            if m.deletion_grace_period_seconds.is_some_and(|g| g > 0) {
                if let Ok(mut h) = seen.lock() {
                    h.insert(
                        uid.to_string(),
                        (
                            m.deletion_timestamp.clone(),
                            m.deletion_grace_period_seconds,
                        ),
                    );
                }
            }
        };
        let on_delete = move |uid: &str, mut pod: Pod| {
            let earlier = honoured.lock().ok().and_then(|mut h| h.remove(uid));
            let kept = pod
                .metadata
                .deletion_grace_period_seconds
                .is_some_and(|g| g > 0);
            if let Some((ts, grace)) = earlier.filter(|_| !kept) {
                pod.metadata.deletion_timestamp = ts;
                pod.metadata.deletion_grace_period_seconds = grace;
            }
            if let Ok(mut g) = gone.lock() {
                let at = jiff::Timestamp::now();
                g.insert(uid.to_string(), Departed { pod, at });
            }
        };
        let (rx, task) = keep(
            api,
            config,
            format!("pods on node {node}"),
            |p: &Pod| Some((p.metadata.uid.clone()?, p.clone())),
            on_apply,
            on_delete,
        );
        PodTracker { rx, departed, task }
    }

    /// The last state of a pod the watch saw go, and when (`None` when it went unseen, e.g.
    /// while the watch was relisting).
    pub fn departed(&self, uid: &str) -> Option<Departed> {
        self.departed.lock().ok()?.get(uid).cloned()
    }

    /// Waits until the first complete list has arrived.
    pub async fn ready(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// The pod with this UID, if it is still on the node.
    pub fn get(&self, uid: &str) -> Option<Pod> {
        self.rx
            .borrow()
            .as_ref()
            .and_then(|m| m.get(uid).map(|p| Pod::clone(p)))
    }

    /// Resolves once the pod with this UID is gone.
    pub async fn gone(&self, uid: &str) {
        let mut rx = self.rx.clone();
        let _ = rx
            .wait_for(|s| s.as_ref().is_some_and(|m| !m.contains_key(uid)))
            .await;
    }

    /// Resolves when the pod with this UID changes (or is gone); returns its new state.
    pub async fn changed(&self, uid: &str) -> Option<Pod> {
        let mut rx = self.rx.clone();
        let _ = rx.changed().await;
        let pod = rx
            .borrow()
            .as_ref()
            .and_then(|m| m.get(uid).map(|p| Pod::clone(p)));
        pod
    }

    /// Every pod currently on the node.
    pub fn pods(&self) -> Vec<Pod> {
        self.rx
            .borrow()
            .as_ref()
            .map(|m| m.values().map(|p| Pod::clone(p)).collect())
            .unwrap_or_default()
    }

    /// The live pods the selector selects, in a list's order (namespace, then name): what
    /// the drain's plan works on.
    pub fn listed(&self, selector: &super::PodSelector) -> Vec<Pod> {
        let none = std::collections::BTreeMap::new();
        let mut pods: Vec<Pod> = self
            .pods()
            .into_iter()
            .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&none)))
            .collect();
        pods.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        pods
    }
}
