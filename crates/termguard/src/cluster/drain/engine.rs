//! The drain engine: claim the node, plan, evict wave by wave, wait for the pods to be gone,
//! record the result (`docs/drain-semantics.md#where-termguard-differs`). Safe to run twice:
//! progress lives on the Node, so a second run resumes or follows the first instead of
//! fighting it.

use super::budget::Backoff;
use super::deadline::DeadlineFeed;
use super::filters::{daemonsets_to_look_up, DaemonSetLookup, PlanContext};
use super::plan::{plan, DrainOptions, DrainPlan, PlanError, Wave};
use super::pod::PodContext;
use super::report::{DrainReport, Ledger, Outcome, PodAction, Progress, Role};
use super::tracker::PodTracker;
use crate::cluster::events::{node_ref, Events, Reason};
use crate::cluster::index::NodeIndex;
use crate::cluster::nodes::{self, Claim, ClaimOutcome, DrainState, NodeError};
use crate::cluster::retry::{self, Bound, Failed, Op};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::Client;
use std::sync::Arc;
use std::time::Duration;

/// What to drain and under which constraints.
#[derive(Debug, Clone)]
pub struct DrainRequest {
    /// The node.
    pub node: String,
    /// kubectl-compatible options.
    pub options: DrainOptions,
    /// When the instance will be gone (from a notice, or `--deadline`): past `deadline - grace`
    /// a pod is deleted with a clipped grace period, budgets or not.
    pub deadline: Option<Timestamp>,
    /// Later values of `deadline` while the drain runs (the hook's real timeout became known, a
    /// later notice came with an earlier one); overrides `deadline` when set.
    pub deadline_updates: Option<tokio::sync::watch::Receiver<Option<Timestamp>>>,
    /// Safety margin kept before the deadline when clipping grace periods.
    pub margin: Duration,
    /// Notice id (`manual` for the CLI).
    pub notice: String,
    /// Why the node is going.
    pub cause: String,
    /// Evictions in flight at once within a wave.
    pub concurrency: usize,
    /// Becomes `Some(why)` (e.g. `SIGINT`) when the drain must stop: it stops evicting, leaves
    /// the node cordoned (a manual drain takes its taint and label back, as for a refusal),
    /// releases its lease so that the next run resumes at once, and reports what it did so far
    /// ([`Outcome::Interrupted`]).
    pub interrupt: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

impl DrainRequest {
    /// A manual drain of `node` with the given options.
    pub fn manual(node: &str, options: DrainOptions) -> Self {
        DrainRequest {
            node: node.to_string(),
            options,
            deadline: None,
            deadline_updates: None,
            margin: Duration::from_secs(5),
            notice: "manual".into(),
            cause: "manual".into(),
            concurrency: 64,
            interrupt: None,
        }
    }

    /// Resolves with the reason once [`Self::interrupt`] says stop; never without one.
    async fn interrupted(&self) -> String {
        stop_reason(self.interrupt.as_ref()).await
    }

    /// The deadline as it stands now: the latest of `deadline_updates` when set.
    pub fn current_deadline(&self) -> Option<Timestamp> {
        match &self.deadline_updates {
            Some(rx) => *rx.borrow(),
            None => self.deadline,
        }
    }
}

/// Resolves with the reason once `rx` (an interrupt channel, [`DrainRequest::interrupt`]) says
/// stop; never without one, nor once its sender is gone (nobody can interrupt any more).
pub async fn stop_reason(rx: Option<&tokio::sync::watch::Receiver<Option<String>>>) -> String {
    let Some(mut rx) = rx.cloned() else {
        return std::future::pending().await;
    };
    let why = rx
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|why| why.clone());
    match why {
        Some(why) => why,
        None => std::future::pending().await,
    }
}

/// Errors that stop a drain before it can report.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// Node state could not be read or written.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Listing the node's pods failed for good (a permanent error, or one retried until the
    /// drain's bound: `docs/drain-semantics.md#api-errors`).
    #[error("listing pods on node {node}: {source}")]
    ListPods {
        /// The node.
        node: String,
        /// The cause, explained.
        #[source]
        source: Failed,
    },
    /// Interrupted (the reason: `SIGINT`, `SIGTERM`) before there was a drain to report on.
    #[error("interrupted by {0} before the drain started")]
    Interrupted(String),
}

type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Told of each Event the drain publishes about a node (its name, the reason, the note):
/// drain started, completed, timed out, failed. Called whether Events are published or not.
type ObserverFn = Arc<dyn Fn(&str, Reason, &str) + Send + Sync>;

/// How long an interrupted drain keeps trying to leave its record and take back its marks:
/// whoever interrupted it is waiting (a second signal ends the process at once).
const INTERRUPTED_BOUND: Duration = Duration::from_secs(10);

/// Time left until `t`; zero once it has passed (a passed deadline is not a future one).
pub(super) fn time_until(t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
}

/// A spawned task that ends with its handle.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The drain's lease on the Node (`termguard.io/drain-renewed`): every write of the drain's
/// record carries a renewal, and the renewer writes one of its own only when no write has
/// for [`nodes::RENEW_EVERY`]. Every answer also brings the earlier deadline another replica
/// may have asked for (`termguard.io/drain-urgent`).
#[derive(Clone)]
struct Lease {
    node: String,
    feed: Arc<DeadlineFeed>,
    /// When the last renewal that reached the Node was stamped.
    renewed: Arc<tokio::sync::watch::Sender<tokio::time::Instant>>,
}

impl Lease {
    fn new(node: &str, feed: &Arc<DeadlineFeed>) -> Self {
        Lease {
            node: node.to_string(),
            feed: feed.clone(),
            renewed: Arc::new(tokio::sync::watch::channel(tokio::time::Instant::now()).0),
        }
    }

    /// `annotations` and a renewal, in one write; one try (the next write or the renewer is
    /// the retry).
    async fn write(
        &self,
        api: &Api<Node>,
        annotations: &[(&str, Option<String>)],
    ) -> Result<Node, NodeError> {
        let stamped = tokio::time::Instant::now();
        let mut all = annotations.to_vec();
        all.push((nodes::RENEWED, Some(Timestamp::now().to_string())));
        let n = nodes::annotate(api, &self.node, &all, Bound::once()).await?;
        self.renewed.send_modify(|t| *t = (*t).max(stamped));
        if self.feed.set_urgent(DrainState::of(&n).urgent) {
            tracing::warn!(node = %self.node, deadline = ?self.feed.now().instance,
                "another notice for this node asked for an earlier deadline; clipping by it");
        }
        Ok(n)
    }

    /// Renews whenever no write has for [`nodes::RENEW_EVERY`]: a task of the drain, aborted
    /// when it ends (a dropped drain must stop renewing, so another process can take over).
    async fn keep(self, api: Api<Node>) {
        loop {
            let due = *self.renewed.borrow() + nodes::RENEW_EVERY;
            if due > tokio::time::Instant::now() {
                tokio::time::sleep_until(due).await;
                continue;
            }
            if let Err(e) = self.write(&api, &[]).await {
                tracing::warn!(node = %self.node, error = %e, "renewing the drain lease failed");
                // Tried again a renewal period later, as after a renewal.
                self.renewed.send_replace(tokio::time::Instant::now());
            }
        }
    }
}

/// How many drains evict at once (`--max-concurrent-drains`). A drain takes a slot only once
/// the node is claimed — cordoned, tainted, heartbeats already running — and a drain whose
/// instance goes soon (a Spot warning, a state change: within [`DrainSlots::URGENT_WITHIN`])
/// never waits for one: the slots bound the load of long drains, not the promise of short ones.
#[derive(Clone)]
pub struct DrainSlots {
    sem: Arc<tokio::sync::Semaphore>,
    size: usize,
    waiting: Arc<std::sync::Mutex<std::collections::BTreeMap<u64, tokio::time::Instant>>>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl DrainSlots {
    /// A drain whose instance goes within this never waits for a slot.
    pub const URGENT_WITHIN: Duration = Duration::from_secs(15 * 60);

    /// `size` slots (at least one).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        DrainSlots {
            sem: Arc::new(tokio::sync::Semaphore::new(size)),
            size,
            waiting: Arc::default(),
            next: Arc::default(),
        }
    }

    /// The number of slots.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Slots in use.
    pub fn busy(&self) -> usize {
        self.size - self.sem.available_permits()
    }

    /// Drains waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().map_or(0, |w| w.len())
    }

    /// How long the longest-waiting drain has waited.
    pub fn longest_wait(&self) -> Option<Duration> {
        let w = self.waiting.lock().ok()?;
        w.values().min().map(|t| t.elapsed())
    }

    /// A slot, or `None` once the drain is urgent (its instance goes within
    /// [`Self::URGENT_WITHIN`], perhaps because its deadline moved while it waited).
    async fn acquire(&self, feed: &DeadlineFeed) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let urgent_at = |d: Option<Timestamp>| {
            d.map(|d| {
                d.checked_sub(SignedDuration::try_from(Self::URGENT_WITHIN).unwrap_or_default())
                    .unwrap_or(d)
            })
        };
        if urgent_at(feed.now().instance).is_some_and(|u| u <= Timestamp::now()) {
            return None;
        }
        if let Ok(p) = self.sem.clone().try_acquire_owned() {
            return Some(p);
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(id, tokio::time::Instant::now());
        }
        struct Leave<'a>(&'a DrainSlots, u64);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                if let Ok(mut w) = self.0.waiting.lock() {
                    w.remove(&self.1);
                }
            }
        }
        let _leave = Leave(self, id);
        tracing::info!(
            busy = self.busy(),
            slots = self.size,
            "every drain slot is busy; waiting for one (the node stays cordoned, heartbeats go on)"
        );
        let mut moved = feed.subscribe();
        loop {
            moved.borrow_and_update();
            let urgent = urgent_at(feed.now().instance);
            if urgent.is_some_and(|u| u <= Timestamp::now()) {
                tracing::info!("the instance goes soon: draining without waiting for a slot");
                return None;
            }
            let until_urgent = async {
                match urgent {
                    Some(u) => tokio::time::sleep(time_until(u)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                p = self.sem.clone().acquire_owned() => return p.ok(),
                () = until_urgent => {}
                _ = moved.changed() => {}
            }
        }
    }
}

/// Drains nodes through the Kubernetes API.
#[derive(Clone)]
pub struct Drainer {
    pub(super) client: Client,
    nodes: Api<Node>,
    identity: String,
    events: Option<Events>,
    progress: ProgressFn,
    observer: Option<ObserverFn>,
    pub(super) backoff: Backoff,
    slots: Option<DrainSlots>,
    /// The cluster's PodDisruptionBudgets, watched from the first eviction a budget refuses
    /// on; shared by the drainer's clones.
    pub(super) budgets: super::room::SharedBudgets,
    /// A watch of every Node, when the process keeps one: the claim starts from its copy and
    /// the node's health is read from it, rather than by GETs of their own.
    watched: Option<NodeIndex>,
}

/// How long the drain's record of its pods gathers changes before it is written.
const RECORD_AFTER: Duration = Duration::from_secs(2);

/// How long a notice's drain waits for its node watch to show the handler's first cordon.
const CORDON_SEEN_WITHIN: Duration = Duration::from_secs(1);

/// How long a drain's plan waits for its pod watch's first list before listing on its own.
const TRACKER_LIST_WAIT: Duration = Duration::from_secs(10);

/// A client for draining: kube's default client retries every 429 by itself (up to 15 times,
/// backing off to minutes), which hides a PodDisruptionBudget's answer from the engine — no
/// EvictionBlocked event, no retry line, and no grace clipping while it sleeps past the
/// deadline. The engine retries blocked evictions itself
/// (`docs/drain-semantics.md#evictions-and-retries`), so build the client without that layer.
pub fn client(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    crate::cluster::http::client(config)
}

impl Drainer {
    /// A drainer identified as `identity` (recorded as the drain's owner).
    ///
    /// Build `client` with [`client`]: one that retries 429s itself hides blocked evictions.
    pub fn new(client: Client, identity: &str) -> Self {
        Drainer {
            nodes: Api::all(client.clone()),
            client,
            identity: identity.to_string(),
            events: None,
            progress: Arc::new(|_| {}),
            observer: None,
            backoff: Backoff::default(),
            slots: None,
            budgets: Default::default(),
            watched: None,
        }
    }

    /// Reads Nodes from `index` where a fresh read is not needed: the claim's first try (a
    /// stale copy only costs a conflict and a fresh read), the node's Ready condition.
    pub fn with_node_index(mut self, index: NodeIndex) -> Self {
        self.watched = Some(index);
        self
    }

    /// Bounds how many drains evict at once.
    pub fn with_slots(mut self, slots: DrainSlots) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Publishes Kubernetes Events.
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = Some(events);
        self
    }

    /// Calls `f` with the node, reason and note of every drain-level Event (started,
    /// completed, timed out, failed), whether Events are published or not.
    pub fn with_observer(mut self, f: impl Fn(&str, Reason, &str) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(f));
        self
    }

    /// Calls `f` for every progress step.
    pub fn with_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Arc::new(f);
        self
    }

    /// Overrides the 429 backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub(super) fn emit(&self, p: Progress) {
        match &p {
            Progress::Gone { pod, action } => {
                tracing::info!(pod = %pod, action = ?action, "pod left the node")
            }
            Progress::Blocked { pod, message } => {
                tracing::info!(pod = %pod, %message, "eviction refused; will retry")
            }
            Progress::PodFailed { pod, error } => {
                tracing::warn!(pod = %pod, %error, "pod could not be evicted")
            }
            Progress::WaveStarted { number, kind, pods } => {
                tracing::info!(wave = number, kind = ?kind, pods, "wave started")
            }
            Progress::Following { owner } => {
                tracing::info!(%owner, "another process is draining this node; following it")
            }
            Progress::Resuming => tracing::info!("resuming an unfinished drain"),
            _ => {}
        }
        (self.progress)(&p);
    }

    pub(super) async fn event(
        &self,
        regarding: k8s_openapi::api::core::v1::ObjectReference,
        reason: Reason,
        note: String,
    ) {
        if let (Some(f), "Node") = (
            &self.observer,
            regarding.kind.as_deref().unwrap_or_default(),
        ) {
            if matches!(
                reason,
                Reason::DrainStarted
                    | Reason::DrainCompleted
                    | Reason::DrainTimedOut
                    | Reason::DrainFailed
            ) {
                f(regarding.name.as_deref().unwrap_or_default(), reason, &note);
            }
        }
        if let Some(ev) = &self.events {
            ev.publish(&regarding, reason, note).await;
        }
    }

    /// Lists the node's pods (paged by `--chunk-size`, filtered by `--pod-selector`) and
    /// plans the drain without changing anything. Each request is retried on transient errors
    /// until `--timeout`, or for [`retry::DEFAULT_BUDGET`].
    pub async fn plan(
        &self,
        node: &str,
        opts: &DrainOptions,
    ) -> Result<Result<DrainPlan, PlanError>, DrainError> {
        let timeout = opts.timeout.and_then(|t| {
            Timestamp::now()
                .checked_add(SignedDuration::try_from(t).ok()?)
                .ok()
        });
        self.plan_within(node, opts, Bound::deadline(timeout)).await
    }

    async fn plan_within(
        &self,
        node: &str,
        opts: &DrainOptions,
        bound: Bound,
    ) -> Result<Result<DrainPlan, PlanError>, DrainError> {
        let pods = self.list_pods(node, opts, bound).await?;
        self.plan_pods(&pods, opts, bound).await
    }

    /// Plans the drain of these pods (the node's, as listed): looks up the DaemonSets that
    /// own some of them, each lookup retried within `bound`.
    async fn plan_pods(
        &self,
        pods: &[Pod],
        opts: &DrainOptions,
        bound: Bound,
    ) -> Result<Result<DrainPlan, PlanError>, DrainError> {
        let mut ctx = PlanContext::new(Timestamp::now());
        for ds in daemonsets_to_look_up(pods) {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ds.namespace);
            let op = Op::new("get", "daemonsets", &ds.name).in_namespace(&ds.namespace);
            // A lookup that still fails refuses the drain (kubectl's rule needs the answer).
            let lookup = match retry::call(op, bound, || api.get(&ds.name)).await {
                Ok(_) => DaemonSetLookup::Exists,
                Err(e) if e.code() == Some(404) => DaemonSetLookup::NotFound,
                Err(e) => DaemonSetLookup::Failed(format!("daemonsets.apps \"{}\": {e}", ds.name)),
            };
            ctx = ctx.with_daemonset(&ds.namespace, &ds.name, lookup);
        }
        Ok(plan(pods, opts, &ctx))
    }

    async fn list_pods(
        &self,
        node: &str,
        opts: &DrainOptions,
        bound: Bound,
    ) -> Result<Vec<Pod>, DrainError> {
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        if !opts.pod_selector.selects_all() {
            lp = lp.labels(opts.pod_selector.as_str());
        }
        if opts.chunk_size > 0 {
            lp = lp.limit(opts.chunk_size);
        }
        let first = lp.clone();
        let mut out = Vec::new();
        loop {
            let page = match retry::call(Op::new("list", "pods", ""), bound, || api.list(&lp)).await
            {
                Ok(page) => page,
                // The continue token expired while the pages were retried (410 Gone): list
                // again from the start, as kubectl does.
                Err(e) if e.code() == Some(410) && lp.continue_token.is_some() => {
                    tracing::warn!(node, "the pod list's continue token expired; listing again");
                    lp = first.clone();
                    out.clear();
                    continue;
                }
                Err(source) => {
                    return Err(DrainError::ListPods {
                        node: node.to_string(),
                        source,
                    })
                }
            };
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => lp = lp.continue_token(&c),
                None => return Ok(out),
            }
        }
    }

    /// Drains the node: cordon, taint, label, evict in waves, wait, record the result.
    pub async fn drain(&self, req: &DrainRequest) -> Result<DrainReport, DrainError> {
        use tracing::Instrument;
        let span = tracing::info_span!("drain", node = %req.node, notice = %req.notice, cause = %req.cause, owner = %self.identity);
        async {
            tracing::info!(deadline = ?req.deadline, timeout = ?req.options.timeout, "drain requested");
            let result = self.drain_inner(req).await;
            match &result {
                Ok(r) => tracing::info!(outcome = ?r.outcome, role = ?r.role, evicted = r.evicted, waves = r.waves,
                    duration_ms = r.duration_ms, not_graceful = r.not_graceful.len(), errors = r.errors.len(), "drain finished"),
                Err(e) => tracing::error!(error = %e, "drain could not run"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn drain_inner(&self, req: &DrainRequest) -> Result<DrainReport, DrainError> {
        let started = tokio::time::Instant::now();
        let now = Timestamp::now();
        // `--timeout` bounds the wait only (kubectl's meaning): it never clips grace periods.
        let timeout = req
            .options
            .timeout
            .and_then(|t| now.checked_add(SignedDuration::try_from(t).ok()?).ok());
        // The watch's copy of the Node for the first claim only: one that follows another
        // owner reads afresh when it takes over. A notice's node was cordoned first thing by
        // the handler: a copy that does not show it yet is waited on (briefly; no request),
        // or the claim would cordon it again.
        let mut seen = match &self.watched {
            Some(index) => match index.get(&req.node) {
                Some(n) if req.notice != "manual" && !nodes::is_cordoned(&n) => index
                    .until(&req.node, CORDON_SEEN_WITHIN, nodes::is_cordoned)
                    .await
                    .or(Some(n)),
                n => n,
            },
            None => None,
        }
        .map(|n| Node::clone(&n));
        let (role, node_uid, feed) = loop {
            let requested = req.current_deadline();
            let claim = Claim {
                owner: &self.identity,
                notice: &req.notice,
                cause: &req.cause,
                deadline: requested,
            };
            // Retried until the instance's end or `--timeout` (the clip point is not known
            // before the claim: it needs what the Node records).
            let bound = Bound::deadline(nodes::earliest(requested, timeout));
            match nodes::claim(
                &self.nodes,
                &req.node,
                &claim,
                bound,
                seen.take(),
                self.watched.as_ref(),
            )
            .await?
            {
                ClaimOutcome::Owned {
                    resumed,
                    was_cordoned,
                    inherited,
                    uid,
                } => {
                    self.emit(Progress::Cordoned {
                        already: was_cordoned,
                    });
                    if resumed {
                        self.emit(Progress::Resuming);
                    }
                    let feed =
                        Arc::new(DeadlineFeed::new(requested, inherited, timeout, req.margin));
                    break (if resumed { Role::Resumed } else { Role::Owner }, uid, feed);
                }
                ClaimOutcome::Ended(node) => {
                    tracing::info!(
                        "this notice's drain of the node already ended; not draining again"
                    );
                    return Ok(self.ended_report(req, &node));
                }
                ClaimOutcome::Busy { owner } => {
                    self.emit(Progress::Following {
                        owner: owner.clone(),
                    });
                    let followed = tokio::select! {
                        r = self.follow(&req.node) => r?,
                        why = req.interrupted() => return Err(DrainError::Interrupted(why)),
                    };
                    if let Some(report) = followed {
                        return Ok(report);
                    }
                    // The owner stopped renewing: take over.
                }
            }
        };
        // Aborted on drop too: a drain that is itself dropped (shutdown, a crashed caller) must
        // stop renewing its lease, so another process can take the drain over.
        let lease = Lease::new(&req.node, &feed);
        let renewer = AbortOnDrop(tokio::spawn(lease.clone().keep(self.nodes.clone())));
        // The request's later deadlines, and the Node's record of the one in force (what a
        // resumed drain and a follower read).
        let updates = AbortOnDrop({
            let api = self.nodes.clone();
            let node = req.node.clone();
            let feed = feed.clone();
            let mut requested = req.deadline_updates.clone();
            let mut current = feed.subscribe();
            tokio::spawn(async move {
                let mut recorded = current.borrow_and_update().instance;
                loop {
                    tokio::select! {
                        changed = async {
                            match requested.as_mut() {
                                Some(rx) => rx.changed().await.is_ok(),
                                None => std::future::pending().await,
                            }
                        } => {
                            if !changed {
                                requested = None;
                                continue;
                            }
                            let at = requested.as_mut().and_then(|rx| *rx.borrow_and_update());
                            feed.set_requested(at);
                        }
                        r = current.changed() => if r.is_err() { return },
                    }
                    let now_in_force = current.borrow_and_update().instance;
                    if now_in_force != recorded {
                        tracing::info!(node = %node, from = ?recorded, to = ?now_in_force, "the drain's deadline moved");
                        let value = now_in_force.map(|d| d.to_string());
                        if let Err(e) =
                            nodes::annotate(&api, &node, &[(nodes::DEADLINE, value)], Bound::once())
                                .await
                        {
                            tracing::warn!(node = %node, error = %e, "recording the new deadline failed");
                        }
                        recorded = now_in_force;
                    }
                }
            })
        });
        // Every pod of the drain and where it stands, on the Node as the drain goes (a few
        // seconds after a change, at most every [`RECORD_AFTER`]), so that a run taking over
        // reports them all.
        let ledger = Arc::new(if role == Role::Resumed {
            match self.nodes.get(&req.node).await {
                Ok(n) => Ledger::resume(
                    n.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(nodes::PODS))
                        .map(String::as_str),
                ),
                Err(e) => {
                    tracing::warn!(node = %req.node, error = %e,
                        "reading the interrupted drain's pods failed; reporting this run's only");
                    Ledger::default()
                }
            }
        } else {
            Ledger::default()
        });
        // Stopped, not aborted, when the drain ends: a write cut off in flight could land after
        // the final one and leave an older record.
        let (stop_recording, mut quit) = tokio::sync::watch::channel(false);
        let mut recorder = AbortOnDrop({
            let api = self.nodes.clone();
            let node = req.node.clone();
            let ledger = ledger.clone();
            let lease = lease.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = ledger.changed() => {}
                        _ = quit.changed() => return,
                    }
                    // Changes are gathered for a while: a drain that is done by then writes
                    // its final record only.
                    tokio::select! {
                        () = tokio::time::sleep(RECORD_AFTER) => {}
                        _ = quit.changed() => return,
                    }
                    let record = Some(ledger.encode());
                    // One try: the next change tries again.
                    if let Err(e) = lease.write(&api, &[(nodes::PODS, record)]).await {
                        tracing::warn!(node = %node, error = %e, "recording the drain's pods failed");
                    }
                }
            })
        });
        let work = async {
            let slot = match &self.slots {
                Some(slots) => slots.acquire(&feed).await,
                None => None,
            };
            let result = self
                .run(req, role, &lease, node_uid.as_deref(), started, &ledger)
                .await;
            drop(slot);
            result
        };
        let result = tokio::select! {
            r = work => r.map(Ok),
            why = req.interrupted() => Ok(Err(why)),
        };
        // The result is what a follower, a resumed drain and the operator read: recorded within
        // the drain's bound while it is ahead, else within the default budget.
        let record = {
            let d = feed.now();
            Bound::deadline(nodes::earliest(d.clip, d.give_up).filter(|t| *t > Timestamp::now()))
        };
        drop(renewer);
        drop(updates);
        stop_recording.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut recorder.0).await;
        drop(recorder);
        let outcome = match result {
            Ok(r) => r,
            Err(e) => {
                // Not done, and nobody renewing: let the next run take over at once.
                if let Err(release) = nodes::release(
                    &self.nodes,
                    &req.node,
                    &self.identity,
                    Bound::default_budget(),
                )
                .await
                {
                    tracing::warn!(node = %req.node, error = %release, "releasing the failed drain's claim failed; its lease ends by itself");
                }
                return Err(e);
            }
        };
        let mut report = match outcome {
            Ok(report) => report,
            Err(why) => {
                return self
                    .interrupted(req, role, &feed, node_uid.as_deref(), started, &ledger, why)
                    .await
            }
        };
        // A refused run planned nothing: what it would merge says nothing about the pods.
        if role == Role::Resumed && report.outcome != Outcome::Refused {
            let skipped: Vec<String> = report.skipped.iter().map(|s| s.pod.to_string()).collect();
            report.pods = ledger.results(&skipped, true);
            tally(&mut report);
        }
        if report.outcome == Outcome::Refused && req.notice == "manual" {
            // kubectl leaves a node whose drain it refused cordoned, and nothing else. (A
            // notice-driven drain keeps its marks: the instance goes anyway, and the handler
            // tries again until the deadline.)
            if let Err(e) = nodes::release_marks(&self.nodes, &req.node, record).await {
                tracing::warn!(node = %req.node, error = %e, "removing the taint and label of a refused drain failed");
            }
        }
        let mut stored = report.clone();
        stored.pods.clear();
        stored.skipped.clear();
        let stored = serde_json::to_string(&stored).ok();
        nodes::annotate(
            &self.nodes,
            &req.node,
            &[
                (nodes::PHASE, Some(report.outcome.phase().to_string())),
                (nodes::RESULT, stored),
                (nodes::PODS, Some(ledger.encode())),
                (nodes::URGENT, None),
                (nodes::FINISHED, Some(Timestamp::now().to_string())),
            ],
            record,
        )
        .await?;
        let (reason, note) = match report.outcome {
            Outcome::Drained => (
                Reason::DrainCompleted,
                format!(
                    "drained in {:.1}s: {} pods evicted{}",
                    report.duration_ms as f64 / 1000.0,
                    report.evicted,
                    not_graceful_note(&report)
                ),
            ),
            Outcome::TimedOut => (
                Reason::DrainTimedOut,
                format!(
                    "deadline reached: {} pods still on the node{}",
                    report
                        .pods
                        .iter()
                        .filter(|r| r.action == PodAction::Remained)
                        .count(),
                    not_graceful_note(&report)
                ),
            ),
            Outcome::Failed => (Reason::DrainFailed, fit_note(report.errors.join("; "))),
            Outcome::Refused | Outcome::Interrupted => (
                Reason::DrainFailed,
                fit_note(report.error.clone().unwrap_or_default()),
            ),
        };
        self.event(node_ref(&req.node, node_uid.as_deref()), reason, note)
            .await;
        Ok(report)
    }

    /// The end of a drain interrupted by `why`: the node stays cordoned, as kubectl leaves it
    /// (a manual drain's taint and load-balancer label are taken back: whoever stopped it may
    /// not go on, and the pods still there keep their traffic); the progress annotations stay
    /// and the lease is given up (no renewal recorded), so that the next run takes the drain
    /// over at once — marking the node again — and, from the pods recorded here, reports
    /// every pod of it.
    #[allow(clippy::too_many_arguments)]
    async fn interrupted(
        &self,
        req: &DrainRequest,
        role: Role,
        feed: &DeadlineFeed,
        node_uid: Option<&str>,
        started: tokio::time::Instant,
        ledger: &Ledger,
        why: String,
    ) -> Result<DrainReport, DrainError> {
        let mut report = DrainReport {
            deadline: feed.now().clip,
            duration_ms: started.elapsed().as_millis() as u64,
            pods: ledger.results(&[], false),
            ..DrainReport::new(
                &req.node,
                &req.notice,
                &req.cause,
                role,
                Outcome::Interrupted,
            )
        };
        report.waves = report.pods.iter().map(|r| r.wave).max().unwrap_or(0);
        tally(&mut report);
        let left = report
            .pods
            .iter()
            .filter(|r| r.gone_after_ms.is_none() && r.action != PodAction::AlreadyGone)
            .count();
        report.error = Some(format!(
            "interrupted by {why} with {left} pods not yet gone; the node stays cordoned"
        ));
        tracing::warn!(node = %req.node, reason = %why, left, "drain interrupted");
        let bound = Bound::until(tokio::time::Instant::now() + INTERRUPTED_BOUND);
        if let Err(e) = nodes::annotate(
            &self.nodes,
            &req.node,
            &[(nodes::PODS, Some(ledger.encode()))],
            bound,
        )
        .await
        {
            tracing::warn!(node = %req.node, error = %e, "recording the interrupted drain failed");
        }
        // The lease given up the way a failed drain gives it up: only while it is still ours.
        if let Err(e) = nodes::release(&self.nodes, &req.node, &self.identity, bound).await {
            tracing::warn!(node = %req.node, error = %e, "releasing the interrupted drain's claim failed; its lease ends by itself");
        }
        if req.notice == "manual" {
            if let Err(e) = nodes::release_marks(&self.nodes, &req.node, bound).await {
                tracing::warn!(node = %req.node, error = %e, "removing the taint and label of an interrupted drain failed");
            }
        }
        self.event(
            node_ref(&req.node, node_uid),
            Reason::DrainFailed,
            fit_note(report.error.clone().unwrap_or_default()),
        )
        .await;
        Ok(report)
    }

    /// Waits for another process's drain to finish; `None` once it is ours to take over: its
    /// owner stopped renewing (the lease ran out), released it on an error, or ended (a
    /// process of this host that is gone).
    async fn follow(&self, node: &str) -> Result<Option<DrainReport>, DrainError> {
        use kube::runtime::watcher::{self, Event};
        let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
        let mut stream = watcher::watcher(self.nodes.clone(), config).boxed();
        // The lease runs out with time, not with a change: the last state the watch delivered
        // is looked at again every couple of seconds however busy the watch is, read afresh
        // only while the watch has delivered nothing since it last failed (it may be down).
        // A stale state that looks expired costs a claim attempt, which reads the Node anew.
        let mut every = tokio::time::interval(Duration::from_secs(2));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Node> = None;
        loop {
            let seen = tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(Event::Apply(n) | Event::InitApply(n))) => n,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::warn!(node, error = %e, "watching the node failed; retrying");
                        last = None;
                        continue;
                    }
                    None => return Ok(None),
                },
                _ = every.tick() => match last.take() {
                    Some(n) => n,
                    None => match self.nodes.get(node).await {
                        Ok(n) => n,
                        Err(kube::Error::Api(s)) if s.code == 404 => {
                            return Err(NodeError::NotFound(node.to_string()).into())
                        }
                        Err(e) => {
                            tracing::warn!(node, error = %e, "reading the node failed; retrying");
                            continue;
                        }
                    },
                },
            };
            if let Some(r) = self.finished_report(&seen) {
                return Ok(Some(r));
            }
            match DrainState::of(&seen).active_owner(&self.identity, Timestamp::now()) {
                Some(owner) if !nodes::owner_ended(owner, &self.identity) => {}
                _ => return Ok(None),
            }
            last = Some(seen);
        }
    }

    /// The report of a drain the claim found ended for this notice: the recorded one, or —
    /// the record undone when the instance came back, or unreadable — one from its phase.
    fn ended_report(&self, req: &DrainRequest, node: &Node) -> DrainReport {
        if let Some(r) = self.finished_report(node) {
            return r;
        }
        let outcome = DrainState::of(node)
            .phase
            .as_deref()
            .and_then(Outcome::from_phase)
            .unwrap_or(Outcome::Drained);
        DrainReport::new(&req.node, &req.notice, &req.cause, Role::Followed, outcome)
    }

    fn finished_report(&self, node: &Node) -> Option<DrainReport> {
        let state = DrainState::of(node);
        if !state.is_finished() {
            return None;
        }
        let mut report: DrainReport = state
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())?;
        report.role = Role::Followed;
        // The per-pod results, from the owner's record of them.
        let recorded = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(nodes::PODS));
        if let Some(recorded) = recorded {
            report.pods = Ledger::resume(Some(recorded)).results(&[], true);
        }
        Some(report)
    }

    async fn run(
        &self,
        req: &DrainRequest,
        role: Role,
        lease: &Lease,
        node_uid: Option<&str>,
        started: tokio::time::Instant,
        ledger: &Arc<Ledger>,
    ) -> Result<DrainReport, DrainError> {
        // The lease carries the drain's deadlines.
        let feed = &*lease.feed;
        let clip_deadline = feed.now().clip;
        let opts = &req.options;
        let tracker = Arc::new(PodTracker::start(
            self.client.clone(),
            &req.node,
            opts.chunk_size,
        ));
        // The plan works on the tracker's first list (a consistent read, paged like the
        // plan's own list): one list of the node's pods per drain, not two. A watch that
        // cannot list in time leaves the plan to its own list, retried within the bound.
        let bound = feed.retry_bound();
        let planned = match tokio::time::timeout(TRACKER_LIST_WAIT, tracker.ready()).await {
            Ok(()) => {
                let pods = tracker.listed(&opts.pod_selector);
                self.plan_pods(&pods, opts, bound).await?
            }
            Err(_) => {
                tracing::warn!(node = %req.node, "the pod watch has not listed the node's pods yet; listing them for the plan");
                self.plan_within(&req.node, opts, bound).await?
            }
        };
        let mut report = DrainReport {
            deadline: clip_deadline,
            ..DrainReport::new(&req.node, &req.notice, &req.cause, role, Outcome::Drained)
        };
        let plan = match planned {
            Ok(p) => p,
            Err(PlanError::Refused { message, plan }) => {
                report.outcome = Outcome::Refused;
                report.error = Some(message.clone());
                report.refused = Some(message);
                report.skipped = plan.skipped;
                report.duration_ms = started.elapsed().as_millis() as u64;
                return Ok(report);
            }
        };
        if let Some(w) = plan.warnings() {
            self.emit(Progress::Warning(w));
        }
        report.waves = plan.waves.len();
        report.skipped = plan.skipped.clone();
        let names: Vec<(String, usize)> = plan
            .waves
            .iter()
            .flat_map(|w| w.pods.iter().map(|p| (p.pod.to_string(), w.number)))
            .collect();
        ledger.plan(names.iter().map(|(p, w)| (p.as_str(), *w)));
        // On the Node before anything is evicted: a run taking over after this one is killed
        // knows every pod of the drain, even those gone before any later record. The first
        // wave's phase goes with it.
        let first_phase = plan.waves.first().map(Wave::phase);
        let mut first = vec![(nodes::PODS, Some(ledger.encode()))];
        if let Some(phase) = &first_phase {
            first.push((nodes::PHASE, Some(phase.clone())));
        }
        // Not worth holding the evictions back for: the recorder writes the pods again.
        let first_phase_recorded = match lease.write(&self.nodes, &first).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(node = %req.node, error = %e, "recording the drain's pods failed");
                false
            }
        };
        let total: usize = plan.waves.iter().map(|w| w.pods.len()).sum();
        self.event(
            node_ref(&req.node, node_uid),
            Reason::DrainStarted,
            format!(
                "draining {total} pods in {} waves; cause {}; notice {}{}",
                plan.waves.len(),
                req.cause,
                req.notice,
                clip_deadline
                    .map(|d| format!("; deadline {d}"))
                    .unwrap_or_default()
            ),
        )
        .await;
        tracker.ready().await;
        let permits = Arc::new(tokio::sync::Semaphore::new(req.concurrency.max(1)));
        // Waves go in order: a wave's pods start once every pod of the waves before it is
        // gone — or, with a deadline, once their own clip point comes (deadline − their grace),
        // so that waiting for ordinary pods never starves the drain-last wave of its grace.
        let gates: Vec<tokio::sync::watch::Sender<bool>> = plan
            .waves
            .iter()
            .map(|_| tokio::sync::watch::channel(false).0)
            .collect();
        let left: Vec<tokio::sync::watch::Sender<usize>> = plan
            .waves
            .iter()
            .map(|w| tokio::sync::watch::channel(w.pods.len()).0)
            .collect();
        let health =
            super::pod::NodeHealth::new(self.client.clone(), &req.node, self.watched.clone());
        let driver = async {
            for (i, wave) in plan.waves.iter().enumerate() {
                self.emit(Progress::WaveStarted {
                    number: wave.number,
                    kind: wave.kind,
                    pods: wave.pods.len(),
                });
                gates[i].send_replace(true);
                // The phase is for people and followers: recording it, retried through a
                // flaky API server, never holds the wave's pods back, and failing to record it
                // stops nothing. Awaited all the same, so that no late write of it can land
                // after the next wave's or the result's (`docs/drain-semantics.md#api-errors`).
                let phase = [(nodes::PHASE, Some(wave.phase()))];
                let recorded = i == 0 && first_phase_recorded;
                let record = async {
                    if recorded {
                        return;
                    }
                    let bound = feed.retry_bound();
                    if let Err(e) = nodes::annotate(&self.nodes, &req.node, &phase, bound).await {
                        tracing::warn!(node = %req.node, error = %e, "recording the wave failed");
                    }
                };
                let mut remaining = left[i].subscribe();
                let done = async {
                    let _ = remaining.wait_for(|l| *l == 0).await;
                };
                tokio::join!(record, done);
            }
        };
        // Every pod is driven at once; only the API requests in flight are bounded, so a slow
        // pod's shutdown never holds another pod's eviction back.
        let pods =
            futures::future::join_all(plan.waves.iter().enumerate().flat_map(|(i, wave)| {
                let (gates, left, tracker, permits, health) =
                    (&gates, &left, &tracker, &permits, &health);
                wave.pods.iter().cloned().map(move |p| {
                    let req = req.clone();
                    let this = self.clone();
                    let wave_no = wave.number;
                    async move {
                        let at = PodContext {
                            tracker,
                            permits,
                            deadlines: feed,
                            node: health,
                            started,
                            ledger,
                        };
                        this.wait_turn(&p, gates[i].subscribe(), feed).await;
                        let r = this.drive_pod(&req, p, wave_no, &at).await;
                        ledger.record(&r, true);
                        left[i].send_modify(|l| *l = l.saturating_sub(1));
                        r
                    }
                })
            }));
        let ((), results) = tokio::join!(driver, pods);
        report.pods.extend(results);
        tally(&mut report);
        report.deadline = feed.now().clip;
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }
}

/// Counts, lists, the outcome and its one-line error, from the per-pod results.
fn tally(report: &mut DrainReport) {
    report.evicted = 0;
    report.not_graceful.clear();
    report.errors.clear();
    for r in &report.pods {
        if matches!(
            r.action,
            PodAction::Evicted | PodAction::Deleted | PodAction::DeletedClipped
        ) {
            report.evicted += 1;
        }
        if let Some(why) = &r.not_graceful {
            report.not_graceful.push(format!("{}: {why}", r.pod));
        }
        if let Some(e) = &r.error {
            report.errors.push(format!("{}: {e}", r.pod));
        }
    }
    if matches!(report.outcome, Outcome::Refused | Outcome::Interrupted) {
        return;
    }
    let remained = report
        .pods
        .iter()
        .filter(|r| r.action == PodAction::Remained && r.error.is_none())
        .count();
    report.outcome = if remained > 0 {
        Outcome::TimedOut
    } else if !report.errors.is_empty() {
        Outcome::Failed
    } else {
        Outcome::Drained
    };
    report.error = match report.outcome {
        Outcome::TimedOut => Some(format!("timed out with {remained} pods still on the node")),
        Outcome::Failed => Some(format!(
            "some pods could not be evicted: {}",
            report.errors.join("; ")
        )),
        _ => None,
    };
}

/// Longest Event note (the API server refuses longer ones).
const NOTE_MAX: usize = 1000;

/// `note`, cut to what an Event takes.
fn fit_note(note: String) -> String {
    if note.len() <= NOTE_MAX {
        return note;
    }
    let mut end = NOTE_MAX - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

/// `; not graceful: ns/a, ns/b` naming the pods that did not stop by themselves (SIGKILLed,
/// grace clipped, deletion not confirmed), as many as an Event note takes; empty when none.
fn not_graceful_note(report: &DrainReport) -> String {
    let names: Vec<&str> = report
        .pods
        .iter()
        .filter(|r| r.not_graceful.is_some())
        .map(|r| r.pod.as_str())
        .collect();
    if names.is_empty() {
        return String::new();
    }
    let mut note = format!("; {} not graceful: ", names.len());
    for (i, n) in names.iter().enumerate() {
        let more = format!(" and {} more (see the drain result)", names.len() - i);
        if note.len() + n.len() + 2 + more.len() > NOTE_MAX - 200 {
            note.push_str(if i == 0 { more.trim_start() } else { &more });
            return note;
        }
        if i > 0 {
            note.push_str(", ");
        }
        note.push_str(n);
    }
    note
}
