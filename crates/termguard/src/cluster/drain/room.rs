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
use std::collections::{BTreeMap, HashMap};
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
    /// `metadata.resourceVersion`: which status the room is of.
    pub version: String,
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
        let version = pdb.metadata.resource_version.clone().unwrap_or_default();
        Some((
            key,
            Budget {
                namespace,
                selector,
                allowed,
                version,
            },
        ))
    }

    /// Whether the budget covers a pod of `namespace` with these labels.
    pub fn covers(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.namespace == namespace && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// The room a budget's status shows, handed out one retry at a time: with `allowed` = 1 and
/// forty pods waiting, one retries, not forty of which thirty-nine are refused again. Keyed by
/// budget; a newer status (another resourceVersion) starts a new round, and so does a round
/// older than [`ROUND_EXPIRES`] — a retry that took the room and then did not evict (its pod
/// was gone, its deadline came) must not leave the others waiting for the fallback backoff.
#[derive(Default)]
struct Rounds(std::sync::Mutex<HashMap<String, Round>>);

struct Round {
    version: String,
    left: i32,
    started: tokio::time::Instant,
}

/// See [`Rounds`].
const ROUND_EXPIRES: std::time::Duration = std::time::Duration::from_secs(2);

impl Rounds {
    /// Takes one retry of the room `budget` shows; `false` when this status's room is taken.
    fn take(&self, key: &str, budget: &Budget) -> bool {
        let Ok(mut rounds) = self.0.lock() else {
            return true;
        };
        let now = tokio::time::Instant::now();
        let round = rounds.entry(key.to_string()).or_insert_with(|| Round {
            version: String::new(),
            left: 0,
            started: now,
        });
        if round.version != budget.version || now.duration_since(round.started) >= ROUND_EXPIRES {
            *round = Round {
                version: budget.version.clone(),
                left: budget.allowed,
                started: now,
            };
        }
        if round.left > 0 {
            round.left -= 1;
            true
        } else {
            false
        }
    }
}

/// The cluster's budgets, as a watch keeps them.
pub struct BudgetWatch {
    rx: watch::Receiver<Kept<Budget>>,
    rounds: Arc<Rounds>,
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
            |_, _| {},
            |_, _| {},
        );
        BudgetWatch {
            rx,
            rounds: Arc::default(),
            task,
        }
    }

    /// A view of the budgets from now on: [`Room::wait`] looks only at the changes after
    /// this call. Take it before the eviction it is for, so that no change the watch delivers
    /// while the request is under way is missed, and no status the watch had shown before it
    /// (possibly stale: the refusal itself is the newer word) counts as room.
    pub fn subscribe(&self) -> Room {
        let mut rx = self.rx.clone();
        let before = rx.borrow_and_update().clone();
        Room {
            rx,
            before,
            rounds: self.rounds.clone(),
        }
    }
}

/// The budgets' changes since [`BudgetWatch::subscribe`].
pub struct Room {
    rx: watch::Receiver<Kept<Budget>>,
    before: Kept<Budget>,
    rounds: Arc<Rounds>,
}

impl Room {
    /// Resolves at the first change since the subscription after which a budget that covers
    /// the pod has room this waiter may take (see [`Rounds`]), or fewer budgets than before
    /// cover it (one deleted or re-selected): nothing may block the pod any more. Never
    /// resolves if the watch ends (the drainer is being dropped): the evictor's backoff
    /// decides then.
    pub async fn wait(mut self, namespace: &str, labels: &BTreeMap<String, String>) {
        let count = |s: &Kept<Budget>| {
            s.as_ref()
                .map(|s| s.values().filter(|b| b.covers(namespace, labels)).count())
        };
        let before = count(&self.before);
        // Room seen but taken by other waiters: look again once that round expires.
        let mut taken = false;
        loop {
            tokio::select! {
                r = self.rx.changed() => if r.is_err() { break },
                () = tokio::time::sleep(ROUND_EXPIRES), if taken => {}
            }
            let now = self.rx.borrow_and_update().clone();
            let Some(all) = now.as_deref() else { continue };
            if before.is_some_and(|was| count(&now).is_some_and(|n| n < was)) {
                return;
            }
            taken = false;
            for (key, b) in all.iter().filter(|(_, b)| b.covers(namespace, labels)) {
                if b.allowed > 0 {
                    if self.rounds.take(key, b) {
                        return;
                    }
                    taken = true;
                }
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
    use crate::cluster::drain::testutil::labels;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    #[test]
    fn a_budget_covers_only_its_namespace_and_nothing_without_a_selector() {
        let pod = labels(&[("app", "web")]);
        let b = Budget {
            namespace: "shop".into(),
            selector: Selector::try_from(LabelSelector::default()).ok(),
            allowed: 0,
            version: "1".into(),
        };
        assert!(b.covers("shop", &pod));
        assert!(!b.covers("other", &pod));
        let none = Budget {
            selector: None,
            ..b
        };
        assert!(!none.covers("shop", &pod));
    }

    static VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    fn room(rx: &watch::Receiver<Kept<Budget>>, rounds: &Arc<Rounds>) -> Room {
        Room {
            before: rx.borrow().clone(),
            rx: rx.clone(),
            rounds: rounds.clone(),
        }
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
                    Arc::new(Budget {
                        namespace: "shop".into(),
                        selector: Selector::try_from(selector).ok(),
                        allowed: *allowed,
                        version: format!(
                            "{name}-{allowed}-{}",
                            VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        ),
                    }),
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
        let room = room(&rx, &Arc::default());
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
        let room = room(&rx, &Arc::default());
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
        let room = room(&rx, &Arc::default());
        let web = labels(&[("app", "web")]);
        let task = tokio::spawn(async move { room.wait("shop", &web).await });
        tx.send_replace(budgets(&[("web", "web", 1)]));
        assert!(resolved(&task).await);
    }

    #[tokio::test(start_paused = true)]
    async fn one_unit_of_room_wakes_one_waiter_and_a_taken_round_expires() {
        let (tx, rx) = watch::channel(budgets(&[("web", "web", 0)]));
        let rounds = Arc::default();
        let web = labels(&[("app", "web")]);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (room, web) = (room(&rx, &rounds), web.clone());
                tokio::spawn(async move { room.wait("shop", &web).await })
            })
            .collect();
        let done = |w: &[tokio::task::JoinHandle<()>]| w.iter().filter(|t| t.is_finished()).count();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tx.send_replace(budgets(&[("web", "web", 1)]));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(done(&waiters), 1, "one unit of room, one retry");
        tx.send_replace(budgets(&[("web", "web", 1)]));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(done(&waiters), 2, "a newer status, another retry");
        // Nobody evicted with that room: once its round expires, the last waiter takes it.
        tokio::time::sleep(ROUND_EXPIRES + std::time::Duration::from_millis(10)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(done(&waiters), 3);
    }
}
