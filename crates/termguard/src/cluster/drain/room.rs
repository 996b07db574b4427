//! Waiting for a disruption budget's room, not for a timer
//! (`docs/drain-semantics.md#evictions-and-retries`). An eviction a PodDisruptionBudget refuses
//! (429) can succeed the moment the budget's `status.disruptionsAllowed` rises again — when a
//! replacement pod becomes Ready, typically seconds later. One watcher over the cluster's
//! budgets, started on the first refusal and shared by every drain of the process, tells each
//! blocked pod when a budget that covers it has room; the evictor's backoff stays as the
//! fallback (a budget status the watch has not delivered yet, a watch that is down).

use super::tracker::{keep, Kept};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::{Selector, SelectorExt};
use kube::runtime::watcher;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One budget as far as room goes.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Its namespace: a budget covers only pods of its own.
    pub namespace: String,
    /// `spec.selector`; a budget without one (or with one the server would not have taken)
    /// selects nothing. An empty selector selects every pod of the namespace
    /// ([policy/v1](https://kubernetes.io/docs/tasks/run-application/configure-pdb/#specifying-a-poddisruptionbudget)).
    pub selector: Option<Selector>,
    /// `status.disruptionsAllowed`.
    pub allowed: i32,
}

impl Budget {
    fn entry(pdb: &PodDisruptionBudget) -> Option<(String, Budget)> {
        let namespace = pdb.metadata.namespace.clone()?;
        let key = format!("{namespace}/{}", pdb.metadata.name.as_deref()?);
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .and_then(|s| Selector::try_from(s).ok());
        let allowed = pdb.status.as_ref().map_or(0, |s| s.disruptions_allowed);
        Some((
            key,
            Budget {
                namespace,
                selector,
                allowed,
            },
        ))
    }

    /// Whether the budget covers a pod of `namespace` with these labels.
    pub fn covers(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// The cluster's budgets, as a watch keeps them.
pub struct BudgetWatch {
    rx: watch::Receiver<Kept<Budget>>,
    task: JoinHandle<()>,
}

impl Drop for BudgetWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BudgetWatch {
    /// Starts watching every PodDisruptionBudget.
    pub fn start(client: Client) -> Self {
        let api: Api<PodDisruptionBudget> = Api::all(client);
        let (rx, task) = keep(
            api,
            watcher::Config::default(),
            "PodDisruptionBudgets".into(),
            Budget::entry,
        );
        BudgetWatch { rx, task }
    }

    /// A view of the budgets from now on: [`Room::wait`] looks only at the changes after
    /// this call. Take it before the eviction it is for, so that no change the watch delivers
    /// while the request is under way is missed, and no status the watch had shown before it
    /// (possibly stale: the refusal itself is the newer word) counts as room.
    pub fn subscribe(&self) -> Room {
        let mut rx = self.rx.clone();
        let before = rx.borrow_and_update().clone();
        Room { rx, before }
    }
}

/// How many budgets cover a pod and whether one has room, for a pod filter.
type Covering = Option<(usize, bool)>;

/// The budgets' changes since [`BudgetWatch::subscribe`].
pub struct Room {
    rx: watch::Receiver<Kept<Budget>>,
    before: Kept<Budget>,
}

impl Room {
    /// Resolves at the first change since the subscription after which a budget that covers
    /// the pod has room, or fewer budgets than before cover it (one deleted or re-selected):
    /// nothing may block the pod any more. Never resolves if the watch ends (the drainer is
    /// being dropped): the evictor's backoff decides then.
    pub async fn wait(mut self, namespace: &str, labels: &BTreeMap<String, String>) {
        let covering = |s: Option<&std::collections::HashMap<String, Budget>>| -> Covering {
            let mut n = 0;
            let mut room = false;
            for b in s?.values().filter(|b| b.covers(namespace, labels)) {
                n += 1;
                room |= b.allowed > 0;
            }
            Some((n, room))
        };
        let before = covering(self.before.as_deref());
        while self.rx.changed().await.is_ok() {
            let now = covering(self.rx.borrow_and_update().as_deref());
            match (before, now) {
                (_, Some((_, true))) => return,
                (Some((was, _)), Some((n, false))) if n < was => return,
                _ => {}
            }
        }
        std::future::pending::<()>().await
    }
}

/// The process's budget watch, started on first use.
#[derive(Clone, Default)]
pub struct SharedBudgets(Arc<OnceLock<BudgetWatch>>);

impl SharedBudgets {
    /// The watch, started now if this is its first use.
    pub fn get(&self, client: &Client) -> &BudgetWatch {
        self.0.get_or_init(|| BudgetWatch::start(client.clone()))
    }

    /// The watch, if something has started it.
    pub fn started(&self) -> Option<&BudgetWatch> {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_budget_covers_only_its_namespace_and_nothing_without_a_selector() {
        let pod = labels(&[("app", "web")]);
        let b = Budget {
            namespace: "shop".into(),
            selector: Selector::try_from(LabelSelector::default()).ok(),
            allowed: 0,
        };
        assert!(b.covers("shop", &pod));
        assert!(!b.covers("other", &pod));
        let none = Budget {
            selector: None,
            ..b
        };
        assert!(!none.covers("shop", &pod));
    }

    fn budgets(list: &[(&str, &str, i32)]) -> Kept<Budget> {
        let all = list
            .iter()
            .map(|(name, app, allowed)| {
                let selector = LabelSelector {
                    match_labels: Some(labels(&[("app", app)])),
                    ..Default::default()
                };
                (
                    format!("shop/{name}"),
                    Budget {
                        namespace: "shop".into(),
                        selector: Selector::try_from(selector).ok(),
                        allowed: *allowed,
                    },
                )
            })
            .collect();
        Some(Arc::new(all))
    }

    /// Whether `wait` has resolved once the task had its chance to run.
    async fn resolved(task: &tokio::task::JoinHandle<()>) -> bool {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        task.is_finished()
    }

    #[tokio::test]
    async fn room_comes_with_a_change_that_gives_a_covering_budget_room() {
        let (tx, rx) = watch::channel(budgets(&[("web", "web", 1), ("db", "db", 0)]));
        // The status seen before the refusal (room 1) is not taken as room: only changes are.
        let before = rx.borrow().clone();
        let room = Room { before, rx };
        let web = labels(&[("app", "web")]);
        let task = tokio::spawn(async move { room.wait("shop", &web).await });
        assert!(!resolved(&task).await);
        tx.send_replace(budgets(&[("web", "web", 0), ("db", "db", 1)]));
        assert!(
            !resolved(&task).await,
            "room in a budget that does not cover the pod"
        );
        tx.send_replace(budgets(&[("web", "web", 1), ("db", "db", 1)]));
        assert!(resolved(&task).await);
    }

    #[tokio::test]
    async fn a_covering_budget_deleted_is_room_too() {
        let (tx, rx) = watch::channel(budgets(&[("web", "web", 0), ("web-2", "web", 0)]));
        let before = rx.borrow().clone();
        let room = Room { before, rx };
        let web = labels(&[("app", "web")]);
        let task = tokio::spawn(async move { room.wait("shop", &web).await });
        tx.send_replace(budgets(&[("web", "web", 0), ("web-2", "web", 0)]));
        assert!(!resolved(&task).await);
        tx.send_replace(budgets(&[("web", "web", 0)]));
        assert!(resolved(&task).await);
    }

    #[tokio::test]
    async fn the_first_list_of_a_watch_started_by_the_refusal_counts() {
        let (tx, rx) = watch::channel::<Kept<Budget>>(None);
        let room = Room { before: None, rx };
        let web = labels(&[("app", "web")]);
        let task = tokio::spawn(async move { room.wait("shop", &web).await });
        tx.send_replace(budgets(&[("web", "web", 1)]));
        assert!(resolved(&task).await);
    }
}
