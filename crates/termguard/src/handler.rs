//! One notice end to end: resolve the node → drain → complete the lifecycle action → say what
//! to do with the message. Idempotent: the drain's progress lives on the Node, duplicate
//! notices for one node share one drain, and heartbeats start the moment a notice arrives —
//! also after a restart mid-drain (`docs/aws-semantics.md#heartbeats`,
//! `docs/drain-semantics.md#running-twice`).

use crate::aws::{
    ActionRef, Activities, ActivityCause, Groups, HookTimeouts, Lifecycle, LifecycleError,
    LifecycleResult,
};
use crate::cluster::drain::{DrainOptions, DrainReport, DrainRequest, Drainer, Outcome, Role};
use crate::cluster::index::NodeIndex;
use crate::cluster::nodes::{self, NodeError};
use crate::cluster::retry::Bound;
use crate::notice::{Cause, GroupName, HookName, InstanceState, Notice, NoticeKind};
use crate::report::metrics::Metrics;
use crate::report::notify::{Notification, Notifier, NotifyEvent};
use futures::future::{BoxFuture, FutureExt, Shared, WeakShared};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the source should do with the message that carried a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The work is done (or there is none): delete the message.
    Done(String),
    /// Not ours: make it visible again at once for whoever owns it.
    Release(String),
    /// Not ours and older than its own deadline: delete it (and count it) so it never loops
    /// for the queue's whole retention period.
    Dropped(String),
    /// The work failed for now: leave it for a retry (and eventually the redrive policy).
    Keep(String),
}

/// Knobs of the handler.
#[derive(Debug, Clone)]
pub struct HandlerConfig {
    /// Drain options for notices. The instance goes whatever we do, so by default
    /// DaemonSet pods are ignored and emptyDir/unreplicated pods are not a reason to refuse.
    pub drain: DrainOptions,
    /// Safety margin before deadlines.
    pub margin: Duration,
    /// Drain (not only cordon) on a rebalance recommendation.
    pub drain_on_rebalance: bool,
    /// Complete launch lifecycle actions when the new node is Ready.
    pub complete_launch: bool,
    /// Time allowed for a best-effort drain after a stopping/shutting-down state change.
    pub state_change_window: Duration,
    /// How long the why-lookup may take before the drain goes on without it.
    pub lookup_timeout: Duration,
    /// How long to keep retrying a CompleteLifecycleAction that fails with a retryable error.
    pub complete_retry_for: Duration,
    /// With `complete_launch`: how long a new instance has to become a Ready node before its
    /// launch is abandoned (and the instance replaced by its group).
    pub launch_timeout: Duration,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        let drain = DrainOptions {
            ignore_daemonsets: true,
            delete_emptydir_data: true,
            force: true,
            ..DrainOptions::default()
        };
        HandlerConfig {
            drain,
            margin: Duration::from_secs(10),
            drain_on_rebalance: false,
            complete_launch: false,
            state_change_window: Duration::from_secs(30),
            lookup_timeout: Duration::from_secs(5),
            complete_retry_for: Duration::from_secs(120),
            launch_timeout: Duration::from_secs(600),
        }
    }
}

type SharedDrain = Shared<BoxFuture<'static, Result<DrainReport, String>>>;
type WeakDrain = WeakShared<BoxFuture<'static, Result<DrainReport, String>>>;

/// The deadlines the notices for one node asked for; the drain keeps the earliest.
#[derive(Debug)]
struct NodeDeadlines {
    by_notice: Mutex<HashMap<String, Option<Timestamp>>>,
    tx: tokio::sync::watch::Sender<Option<Timestamp>>,
}

impl NodeDeadlines {
    fn new(notice: &str, at: Option<Timestamp>) -> Self {
        let (tx, _) = tokio::sync::watch::channel(at);
        NodeDeadlines {
            by_notice: Mutex::new(HashMap::from([(notice.to_string(), at)])),
            tx,
        }
    }

    /// Records (or moves) one notice's deadline; the earliest of all is published.
    fn set(&self, notice: &str, at: Option<Timestamp>) {
        let earliest = {
            let mut by_notice = lock(&self.by_notice);
            by_notice.insert(notice.to_string(), at);
            by_notice.values().flatten().min().copied()
        };
        self.tx.send_if_modified(|d| {
            let changed = *d != earliest;
            *d = earliest;
            changed
        });
    }
}

/// A drain running in this process.
struct Running {
    drain: WeakDrain,
    deadlines: Arc<NodeDeadlines>,
}

/// Handles notices.
pub struct Handler {
    drainer: Drainer,
    nodes: NodeIndex,
    node_api: Api<Node>,
    lifecycle: Arc<dyn Lifecycle>,
    activities: Arc<dyn Activities>,
    groups: Arc<dyn Groups>,
    config: HandlerConfig,
    /// Running drains, held weakly: a drain lives only while a notice awaits it. (A strong
    /// entry would keep an abandoned drain — and its lease renewal — alive for ever, since the
    /// drain future itself holds the handler.)
    inflight: Mutex<HashMap<String, Running>>,
    /// Lifecycle actions a heartbeat loop of this process keeps alive.
    beating: Mutex<std::collections::HashSet<String>>,
    /// First cordons on their way.
    cordoning: tokio::sync::watch::Sender<usize>,
    metrics: std::sync::OnceLock<Arc<Metrics>>,
    notifier: std::sync::OnceLock<Notifier>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_sub(d).ok())
        .unwrap_or(t)
}

/// Whether the node's kubelet reports Ready.
fn is_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

impl Handler {
    /// A handler over the given cluster and AWS interfaces.
    pub fn new(
        drainer: Drainer,
        nodes: NodeIndex,
        client: kube::Client,
        lifecycle: Arc<dyn Lifecycle>,
        activities: Arc<dyn Activities>,
        groups: Arc<dyn Groups>,
        config: HandlerConfig,
    ) -> Arc<Self> {
        Arc::new(Handler {
            drainer,
            nodes,
            node_api: Api::all(client),
            lifecycle,
            activities,
            groups,
            config,
            inflight: Mutex::default(),
            beating: Mutex::default(),
            cordoning: tokio::sync::watch::Sender::new(0),
            metrics: std::sync::OnceLock::new(),
            notifier: std::sync::OnceLock::new(),
        })
    }

    /// The node cache (for readiness).
    pub fn nodes(&self) -> &NodeIndex {
        &self.nodes
    }

    /// Handles one notice.
    pub async fn handle(self: &Arc<Self>, notice: &Notice) -> Disposition {
        if !notice.kind.is_actionable() {
            return Disposition::Done(format!("{} notice: nothing to do", notice.kind.label()));
        }
        let Some(instance) = notice.instance.clone() else {
            return Disposition::Done("notice names no instance".into());
        };
        let found = self.nodes.node_for(&instance);
        let node = found.as_ref().and_then(|n| n.metadata.name.clone());
        if let Some(n) = found.as_deref() {
            if nodes::undone_for(n, &drain_id(notice)) {
                tracing::info!(instance = %instance, node = node.as_deref().unwrap_or("-"),
                    "a late copy of a notice whose drain was undone when the instance came back: not draining again");
                return Disposition::Done(format!(
                    "{} notice already handled: the node was drained for it and put back in service when the instance came back",
                    notice.kind.label()
                ));
            }
        }
        let span = tracing::info_span!("notice", instance = %instance, kind = notice.kind.label(),
            node = node.as_deref().unwrap_or("-"), cause = notice.cause.as_ref().map_or("-", Cause::label));
        // Cordon first: a node that is going is closed to new pods at once, from the watched
        // Node (one PATCH, no read), beside everything else — heartbeats, the hook's timeouts,
        // the drain's claim (which cordons again, retried, if this one failed).
        let closing = found.clone().filter(|n| self.closes(notice, n));
        let work = async {
            match closing {
                Some(n) => tokio::join!(self.cordon_first(&n), self.dispatch(notice, node, None)).1,
                None => self.dispatch(notice, node, found.as_deref()).await,
            }
        };
        // Instrumented, not entered: an entered span held across awaits would tag other tasks'
        // logs on this worker thread.
        tracing::Instrument::instrument(work, span).await
    }

    /// Cordon first, everything else after: a drain's requests (claim, listing, evictions,
    /// Events) wait while first cordons are on their way, so that in a burst of notices every
    /// node is closed to new pods before the API server is busy with drains. Bounded: a burst
    /// that never ends delays a drain by [`CORDONS_FIRST_FOR`] at most.
    async fn after_cordons(&self) {
        let mut rx = self.cordoning.subscribe();
        let _ = tokio::time::timeout(CORDONS_FIRST_FOR, rx.wait_for(|n| *n == 0)).await;
    }

    /// Whether handling `notice` drains `node` (and so cordons it first thing). A rebalance
    /// recommendation that only cordons does so itself; a closed maintenance event, a launch
    /// or a stale or late state change leaves the node open.
    fn closes(&self, notice: &Notice, node: &Node) -> bool {
        match &notice.kind {
            NoticeKind::LifecycleTerminate | NoticeKind::SpotInterruption { .. } => true,
            NoticeKind::ScheduledMaintenance { closed, .. } => !closed,
            NoticeKind::RebalanceRecommendation => self.config.drain_on_rebalance,
            NoticeKind::StateChange {
                state: InstanceState::Stopping | InstanceState::ShuttingDown,
            } => !ready_after(node, notice.event_time),
            NoticeKind::StateChange { .. } | NoticeKind::LifecycleLaunch | NoticeKind::Test => {
                false
            }
        }
    }

    /// The first cordon: one try, bounded, its failure only logged (the claim cordons again).
    /// While any is on its way, drains wait to start (see [`Handler::after_cordons`]).
    async fn cordon_first(&self, node: &Node) {
        self.cordoning.send_modify(|n| *n += 1);
        struct Done<'a>(&'a tokio::sync::watch::Sender<usize>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n = n.saturating_sub(1));
            }
        }
        let _done = Done(&self.cordoning);
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let cordon = nodes::cordon_watched(&self.node_api, node, Bound::once());
        match tokio::time::timeout(self.config.lookup_timeout, cordon).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => tracing::debug!(node = name, "cordoned"),
            Ok(Err(e)) => {
                tracing::warn!(node = name, error = %e, "cordoning at once failed; the drain cordons again, retried")
            }
            Err(_) => {
                tracing::warn!(
                    node = name,
                    "cordoning at once timed out; the drain cordons again, retried"
                )
            }
        }
    }

    /// `seen`: the watch's copy of the node, when nothing cordoned it first.
    async fn dispatch(
        self: &Arc<Self>,
        notice: &Notice,
        node: Option<String>,
        seen: Option<&Node>,
    ) -> Disposition {
        match &notice.kind {
            NoticeKind::LifecycleTerminate => self.lifecycle_terminate(notice, node).await,
            NoticeKind::LifecycleLaunch => self.lifecycle_launch(notice, node).await,
            NoticeKind::ScheduledMaintenance { closed: true, .. } => match node {
                Some(node) => self.maintenance_over(&node).await,
                None => self.foreign(notice),
            },
            NoticeKind::SpotInterruption { .. } | NoticeKind::ScheduledMaintenance { .. } => {
                match node {
                    Some(node) => {
                        let deadline = notice.deadline.map(|d| d.at);
                        self.drain_to_done(notice, &node, deadline).await
                    }
                    None => self.foreign(notice),
                }
            }
            NoticeKind::RebalanceRecommendation => match node {
                Some(node) if self.config.drain_on_rebalance => {
                    self.drain_to_done(notice, &node, None).await
                }
                Some(node) => match self.cordon_only(&node, seen).await {
                    Ok(_) => {
                        Disposition::Done(format!("rebalance recommendation: node {node} cordoned"))
                    }
                    Err(e) => Disposition::Keep(format!("cordoning {node}: {e}")),
                },
                None => self.foreign(notice),
            },
            NoticeKind::StateChange { state } => {
                match (node, state) {
                    (None, _) => self.foreign(notice),
                    (Some(node), InstanceState::Stopping | InstanceState::ShuttingDown)
                        if self.started_since(&node, notice.event_time) =>
                    {
                        tracing::info!(node = %node, "stale state change: the node's kubelet became Ready after the event; not draining");
                        Disposition::Done(format!("stale {state:?} event: node {node} has been Ready again since; not drained"))
                    }
                    (Some(node), InstanceState::Stopping | InstanceState::ShuttingDown) => {
                        let deadline = add(Timestamp::now(), self.config.state_change_window);
                        self.drain_to_done(notice, &node, Some(deadline)).await
                    }
                    (Some(node), _) => {
                        tracing::warn!(node = %node, "late event: the instance is already gone");
                        Disposition::Done(format!("late event: instance already {state:?}; node {node} could not be drained"))
                    }
                }
            }
            NoticeKind::Test => Disposition::Done("test notification".into()),
        }
    }

    /// Cordons a node that is not drained: one PATCH when the watch shows it open (the patch
    /// only sets `spec.unschedulable`, so a stale copy cannot make it wrong); a fresh read when
    /// the watch shows it cordoned already, since an uncordon may not have reached the watch.
    async fn cordon_only(&self, node: &str, seen: Option<&Node>) -> Result<bool, NodeError> {
        let budget = Bound::default_budget();
        match seen {
            Some(n) if !nodes::is_cordoned(n) => {
                nodes::cordon_watched(&self.node_api, n, budget).await
            }
            _ => nodes::cordon(&self.node_api, node, budget).await,
        }
    }

    /// Whether the node's kubelet became Ready after `event_time`: the instance started (again)
    /// since the event was sent, which is then stale (a backlog, a dead-letter redrive).
    fn started_since(&self, node: &str, event_time: Timestamp) -> bool {
        self.nodes
            .all()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node))
            .is_some_and(|n| ready_after(n, event_time))
    }

    /// An AWS Health event is closed (the change is done or cancelled): nothing to drain. A node
    /// termguard drained for maintenance gets its marks undone.
    async fn maintenance_over(&self, node: &str) -> Disposition {
        // Only a 404 says the node is gone: an API server that fails the read (retried first)
        // leaves the message for later, or the node would stay cordoned for good.
        let n = match nodes::get(&self.node_api, node, Bound::default_budget()).await {
            Ok(n) => n,
            Err(nodes::NodeError::NotFound(_)) => {
                return Disposition::Done(format!("maintenance over; node {node} is gone"))
            }
            Err(e) => return Disposition::Keep(format!("maintenance over; {e}")),
        };
        let drained_for_it = |n: &Node| {
            let state = nodes::DrainState::of(n);
            state.is_finished() && state.cause.as_deref() == Some(Cause::Maintenance.label())
        };
        if !drained_for_it(&n) {
            return Disposition::Done("maintenance over; nothing of termguard's to undo".into());
        }
        match nodes::uncordon_if(
            &self.node_api,
            node,
            drained_for_it,
            Bound::default_budget(),
        )
        .await
        {
            Ok(false) => Disposition::Done(
                "maintenance over; the node is being drained again: left as it is".into(),
            ),
            Ok(true) => {
                tracing::info!(node, "maintenance over: node uncordoned");
                if let Some(m) = self.metrics.get() {
                    m.nodes_returned.inc();
                }
                Disposition::Done(format!("maintenance over: node {node} uncordoned"))
            }
            Err(e) => Disposition::Keep(format!("uncordoning {node}: {e}")),
        }
    }

    /// Undoes termguard's marks on nodes whose instance came back after a drain (stop/start,
    /// warm pool, new root volume, Spot stop or hibernation, reboot maintenance), until
    /// `shutdown`: otherwise they would stay cordoned, tainted and out of the load balancers.
    pub async fn undo_returned(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            for n in self.nodes.all() {
                let Some(name) = n.metadata.name.as_deref() else {
                    continue;
                };
                if !nodes::returned(&n) || lock(&self.inflight).contains_key(name) {
                    continue;
                }
                // One try: the next round is the retry.
                match nodes::uncordon_if(&self.node_api, name, nodes::returned, Bound::once()).await
                {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!(node = name, "the instance came back after its drain: node uncordoned, termguard's taint, label and annotations removed");
                        if let Some(m) = self.metrics.get() {
                            m.nodes_returned.inc();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = name, error = %e, "undoing the drain of a returned instance failed; retrying")
                    }
                }
            }
        }
    }

    /// A notice about an instance that is not a node here: leave it for its owner until it
    /// is older than its own deadline, then drop it so it never loops for the queue's
    /// whole retention period.
    fn foreign(&self, notice: &Notice) -> Disposition {
        let expired = notice.deadline.is_some_and(|d| d.at < Timestamp::now())
            || notice.deadline.is_none()
                && Timestamp::now().duration_since(notice.event_time)
                    > SignedDuration::from_hours(1);
        if expired {
            Disposition::Dropped("not a node of this cluster and past its deadline".into())
        } else {
            Disposition::Release("not a node of this cluster: left for its owner".into())
        }
    }

    async fn drain_to_done(
        self: &Arc<Self>,
        notice: &Notice,
        node: &str,
        deadline: Option<Timestamp>,
    ) -> Disposition {
        let cause = notice
            .cause
            .as_ref()
            .map_or(notice.kind.label(), Cause::label)
            .to_string();
        match self
            .drain_shared(node, &drain_id(notice), &cause, deadline)
            .await
        {
            Ok(r) => Disposition::Done(format!(
                "node {node} {:?} ({} pods evicted)",
                r.outcome, r.evicted
            )),
            Err(e) => Disposition::Keep(e),
        }
    }

    /// Runs the drain of `node`, or joins the one already running in this process — lowering
    /// its deadline when this notice's is earlier (a Spot warning during a lifecycle drain).
    async fn drain_shared(
        self: &Arc<Self>,
        node: &str,
        notice_id: &str,
        cause: &str,
        deadline: Option<Timestamp>,
    ) -> Result<DrainReport, String> {
        let fut = {
            let mut inflight = lock(&self.inflight);
            let joined = inflight
                .get(node)
                .and_then(|r| Some((r.drain.upgrade()?, r.deadlines.clone())));
            if let Some((f, deadlines)) = joined {
                deadlines.set(notice_id, deadline);
                f
            } else {
                let this = self.clone();
                let deadlines = Arc::new(NodeDeadlines::new(notice_id, deadline));
                let mut req = DrainRequest::manual(node, self.config.drain.clone());
                req.notice = notice_id.to_string();
                req.cause = cause.to_string();
                req.deadline = deadline;
                req.deadline_updates = Some(deadlines.tx.subscribe());
                req.margin = self.config.margin;
                let node_name = node.to_string();
                let f: BoxFuture<'static, Result<DrainReport, String>> = async move {
                    this.after_cordons().await;
                    // A copy of a notice whose drain already ended is answered by the
                    // claim, from a fresh read of the Node: never drained twice.
                    let r = this.drain_with_retries(&req).await;
                    lock(&this.inflight).remove(&node_name);
                    r
                }
                .boxed();
                let shared: SharedDrain = f.shared();
                if let Some(weak) = shared.downgrade() {
                    inflight.insert(
                        node.to_string(),
                        Running {
                            drain: weak,
                            deadlines,
                        },
                    );
                }
                shared
            }
        };
        fut.await
    }

    /// Moves one notice's deadline in the node's running drain, if there is one.
    fn move_deadline(&self, node: &str, notice_id: &str, at: Option<Timestamp>) {
        if let Some(r) = lock(&self.inflight).get(node) {
            r.deadlines.set(notice_id, at);
        }
    }

    /// API blips must not lose a drain: retry until the deadline.
    /// Reports drains to these metrics (the first call wins).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Sends webhook notifications through `notifier` (the first call wins).
    pub fn set_notifier(&self, notifier: Notifier) {
        let _ = self.notifier.set(notifier);
    }

    async fn drain_with_retries(&self, req: &DrainRequest) -> Result<DrainReport, String> {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.drainer.drain(req).await {
                Ok(r) => {
                    // A follower only watched another replica's drain: count work done here.
                    if let (Some(m), false) = (self.metrics.get(), r.role == Role::Followed) {
                        Metrics::count(&m.drains, outcome_label(r.outcome));
                        m.drain_seconds.observe(r.duration_ms as f64 / 1000.0);
                    }
                    // A drain that could not run to the end (a lookup that failed, an eviction
                    // refused for good) is not a drained node: completing the lifecycle action
                    // now would terminate the instance with its pods. Retry until the pods are
                    // gone or the deadline comes, where the drain clips and deletes instead.
                    if unfinished(r.outcome) && before_deadline(req) {
                        tracing::warn!(
                            node = %req.node,
                            outcome = outcome_label(r.outcome),
                            reason = r.refused.as_deref().unwrap_or(""),
                            retry_in = ?delay,
                            "the drain did not finish; retrying (the lifecycle action keeps waiting)"
                        );
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                        continue;
                    }
                    return Ok(r);
                }
                Err(e) => {
                    let past = req
                        .current_deadline()
                        .is_some_and(|d| d <= Timestamp::now());
                    if past {
                        if let Some(m) = self.metrics.get() {
                            Metrics::count(&m.drains, "error");
                        }
                        return Err(format!("draining {}: {e}", req.node));
                    }
                    if let crate::cluster::drain::DrainError::Node(nodes::NodeError::NotFound(_)) =
                        e
                    {
                        return Err(format!("draining {}: {e}", req.node));
                    }
                    tracing::warn!(node = %req.node, error = %e, retry_in = ?delay, "drain failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// The hook's timeouts (`DescribeLifecycleHooks`, cached for a few minutes by the
    /// client), or `None` when they cannot be read in time.
    async fn timeouts(&self, group: &GroupName, hook: &HookName) -> Option<HookTimeouts> {
        match tokio::time::timeout(
            self.config.lookup_timeout,
            self.lifecycle.hook_timeouts(group, hook),
        )
        .await
        {
            Ok(Ok(t)) => Some(t),
            Ok(Err(e)) => {
                tracing::warn!(group = %group, hook = %hook, error = %e, "reading the hook's timeouts failed");
                None
            }
            Err(_) => {
                tracing::warn!(group = %group, hook = %hook, "reading the hook's timeouts timed out");
                None
            }
        }
    }

    async fn lifecycle_terminate(
        self: &Arc<Self>,
        notice: &Notice,
        node: Option<String>,
    ) -> Disposition {
        let (Some(hook), Some(instance)) = (notice.hook.clone(), notice.instance.clone()) else {
            return Disposition::Keep("lifecycle notice without hook coordinates".into());
        };
        let action = ActionRef {
            group: hook.group.clone(),
            hook: hook.hook_name.clone(),
            token: hook.token.clone(),
            instance,
        };
        let Some(node) = node else {
            return self.not_a_node(notice, &action).await;
        };
        let id = drain_id(notice);
        // Heartbeats start before anything else can take time ([lifecycle hooks](https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks.html)).
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let heartbeats = {
            let this = self.clone();
            let (action, node, event_time) = (action.clone(), node.clone(), notice.event_time);
            tokio::spawn(
                async move { this.heartbeat_loop(action, node, event_time, stop_rx).await },
            )
        };
        // Two lookups the drain's first write records: the hook's timeouts (its deadline is
        // the hook's global timeout) and the scaling activity's cause (its cause annotation
        // and taint value). The node is cordoned and heartbeats run meanwhile; the drain waits
        // for both, each within the lookup timeout, so that its claim writes them and no
        // write of their own follows (a burst of terminations makes both APIs slow just when
        // drains start; a lifecycle drain has minutes, and its evictions wait for the burst's
        // first cordons anyway). What has not come by then is left behind: the drain starts
        // with the shortest global timeout AWS allows (earlier, so never too late) and the
        // notice's own cause, each recorded once it comes. Unreadable, the hook's timeouts
        // are raised by the heartbeat task once it answers.
        let hook_timeouts = self.timeouts(&action.group, &action.hook);
        tokio::pin!(hook_timeouts);
        let mut lookup = {
            let this = self.clone();
            let (group, instance, node) =
                (action.group.clone(), action.instance.clone(), node.clone());
            tokio::spawn(async move { this.termination_cause(&group, &instance, &node).await })
        };
        let wait = self.config.lookup_timeout + LOOKUPS_SLACK;
        let (early_hook, early_cause) = tokio::join!(
            tokio::time::timeout(wait, &mut hook_timeouts),
            tokio::time::timeout(wait, &mut lookup),
        );
        let hook_deadline = |t: HookTimeouts| add(notice.event_time, t.global);
        let deadline = match early_hook {
            Ok(Some(t)) => hook_deadline(t),
            _ => add(notice.event_time, HookTimeouts::SAFE_DEFAULT.global),
        };
        let later_deadline = async {
            if early_hook.is_err() {
                if let Some(t) = hook_timeouts.await {
                    self.move_deadline(&node, &id, Some(hook_deadline(t)));
                }
            }
        };
        let early_cause = early_cause.ok().map(|answer| answer.ok().flatten());
        let cause = match &early_cause {
            Some(Some(c)) => c.cause.label().to_string(),
            _ => notice
                .cause
                .as_ref()
                .map_or("lifecycle-terminate", Cause::label)
                .to_string(),
        };
        // Bounded (lookup timeout + claim wait), and not cancelled when the drain is quicker.
        if early_cause.is_none() {
            let this = self.clone();
            let (node, id) = (node.clone(), id.clone());
            tokio::spawn(async move {
                if let Ok(Some(c)) = lookup.await {
                    this.record_cause(&node, &id, &c).await;
                }
            });
        }
        let drained = {
            let drain = self.drain_shared(&node, &id, &cause, Some(deadline));
            tokio::pin!(drain, later_deadline);
            tokio::select! {
                // The drain first: it registers the node's deadlines the answer moves.
                biased;
                d = &mut drain => d,
                () = &mut later_deadline => drain.await,
            }
        };
        let _ = stop_tx.send(true);
        let beats = heartbeats.await.unwrap_or(0);
        let report = match drained {
            Ok(r) => r,
            Err(e) => {
                // The drain could not run at all; the instance still must not wait forever.
                tracing::error!(node = %node, error = %e, "drain failed; completing the lifecycle action anyway at the deadline is the hook's job: keeping the message");
                return Disposition::Keep(e);
            }
        };
        match self.complete(&action).await {
            Ok(msg) => {
                // The deadline came first: the drain timed out, or it deleted pods with their
                // grace clipped (past their budgets) to be done by it.
                let at_deadline = report.outcome == Outcome::TimedOut
                    || report
                        .pods
                        .iter()
                        .any(|p| p.action == crate::cluster::drain::PodAction::DeletedClipped);
                if at_deadline && report.role != Role::Followed {
                    if let Some(n) = self.notifier.get() {
                        n.notify(Notification {
                            event: NotifyEvent::CompletedAtDeadline,
                            node: node.clone(),
                            detail: format!(
                                "{msg} at the deadline, {} pod(s) deleted with a clipped grace \
                                 period; instance {}, group {}",
                                report
                                    .pods
                                    .iter()
                                    .filter(|p| p.action
                                        == crate::cluster::drain::PodAction::DeletedClipped)
                                    .count(),
                                action.instance,
                                action.group
                            ),
                        });
                    }
                }
                Disposition::Done(format!(
                    "node {node} {:?} after {beats} heartbeats; {msg}",
                    report.outcome
                ))
            }
            Err(e) => Disposition::Keep(e),
        }
    }

    /// A lifecycle action of an instance that is not a node here. Completed at once only when
    /// its group is this cluster's (a tag names the cluster) and every node can be matched to
    /// its instance — a node without an AWS providerID could be this very instance, pods and
    /// all. Anything else is left for its owner: another cluster sharing the queue may be
    /// draining it right now.
    async fn not_a_node(&self, notice: &Notice, action: &ActionRef) -> Disposition {
        match self.groups.is_managed(&action.group).await {
            Ok(true) => {
                let unmatched = self.nodes.unmatched();
                if !unmatched.is_empty() {
                    tracing::warn!(group = %action.group, nodes = ?unmatched,
                        "instance is not a node here, but some nodes have no AWS providerID and could be it: not completing its lifecycle action");
                    return self.foreign(notice);
                }
                match self.complete(action).await {
                    Ok(msg) => Disposition::Done(format!(
                        "instance never joined this cluster; group {} is this cluster's: {msg}",
                        action.group
                    )),
                    Err(e) => Disposition::Keep(e),
                }
            }
            Ok(false) => self.foreign(notice),
            Err(e) => {
                tracing::warn!(group = %action.group, error = %e, "group tag lookup failed; leaving the action for now");
                self.foreign(notice)
            }
        }
    }

    /// Sends heartbeats until stopped, the action is gone, or the global timeout; returns the
    /// count. The first goes within half a second (spread, so that a burst of actions does not
    /// meet Auto Scaling's rate limit at once): it restarts the action's heartbeat timeout from
    /// a moment known for sure, whatever the message spent in transit and however clocks differ.
    /// Each next one is scheduled from the last one that succeeded, and a failed one is retried
    /// within seconds, not an interval later — by then the action could have expired. The
    /// hook's timeouts are read again every few minutes; a change moves the drain's deadline.
    async fn heartbeat_loop(
        self: Arc<Self>,
        action: ActionRef,
        node: String,
        event_time: Timestamp,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> u32 {
        // One loop per action in this process, however many copies of its message are being
        // handled: the others stand by and take over if the one heartbeating goes away.
        let token = action.token.to_string();
        loop {
            if lock(&self.beating).insert(token.clone()) {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return 0,
            }
        }
        struct Beating<'a>(&'a Mutex<std::collections::HashSet<String>>, String);
        impl Drop for Beating<'_> {
            fn drop(&mut self) {
                lock(self.0).remove(&self.1);
            }
        }
        let _beating = Beating(&self.beating, token);
        // Until the hook answers, the shortest timeouts AWS allows: never a late heartbeat.
        let mut timeouts = HookTimeouts::SAFE_DEFAULT;
        let mut known = false;
        let mut sent = 0;
        let mut last_ok: Option<Timestamp> = None;
        let mut failures: u32 = 0;
        let first_at = add(
            Timestamp::now(),
            FIRST_HEARTBEAT_WITHIN.mul_f64(fastrand::f64()),
        );
        // The first heartbeat does not wait for the hook's timeouts: they are read right after
        // it went (or failed), never before — in a burst the lookup queues behind everything.
        let mut refresh_at = first_at;
        loop {
            let beat_at = if failures == 0 {
                last_ok.map_or(first_at, |t| add(t, timeouts.heartbeat_interval()))
            } else {
                add(Timestamp::now(), heartbeat_retry_delay(failures))
            };
            let wake = beat_at.min(refresh_at);
            tokio::select! {
                () = tokio::time::sleep(until(wake)) => {}
                _ = stop.wait_for(|s| *s) => return sent,
            }
            let now = Timestamp::now();
            let tried = sent > 0 || failures > 0;
            if tried && now >= refresh_at {
                if let Some(t) = self.timeouts(&action.group, &action.hook).await {
                    if known && t != timeouts {
                        tracing::info!(token = %action.token, global = ?t.global, heartbeat = ?t.heartbeat, "the hook's timeouts changed; the drain's deadline follows them");
                    }
                    self.move_deadline(
                        &node,
                        action.token.as_str(),
                        Some(add(event_time, t.global)),
                    );
                    timeouts = t;
                    known = true;
                }
                refresh_at = add(Timestamp::now(), refresh_every(known));
                if now < beat_at {
                    continue;
                }
            }
            if now >= add(event_time, timeouts.global) {
                tracing::warn!(token = %action.token, "global timeout reached: no more heartbeats can extend the wait");
                return sent;
            }
            tracing::debug!(token = %action.token, "sending a heartbeat");
            match self.lifecycle.heartbeat(&action).await {
                Ok(()) => {
                    sent += 1;
                    failures = 0;
                    last_ok = Some(Timestamp::now());
                    if let Some(m) = self.metrics.get() {
                        Metrics::count(&m.heartbeats, "sent");
                    }
                    tracing::debug!(token = %action.token, sent, "heartbeat");
                }
                Err(LifecycleError::NoActiveAction(m)) => {
                    tracing::warn!(token = %action.token, message = %m, "heartbeat: the lifecycle action is over; stopping heartbeats");
                    return sent;
                }
                Err(e) => {
                    failures += 1;
                    let retry_in = heartbeat_retry_delay(failures);
                    tracing::warn!(token = %action.token, error = %e, failures, ?retry_in, "heartbeat failed; retrying soon");
                    if let Some(m) = self.metrics.get() {
                        Metrics::count(&m.heartbeats, "failed");
                    }
                }
            }
        }
    }

    /// Why the instance is going, from its scaling activity (bounded by the lookup timeout);
    /// `None`, logged, when nothing explains it or the lookup fails.
    async fn termination_cause(
        &self,
        group: &GroupName,
        instance: &crate::notice::InstanceId,
        node: &str,
    ) -> Option<ActivityCause> {
        match tokio::time::timeout(
            self.config.lookup_timeout,
            self.activities.termination_cause(group, instance),
        )
        .await
        {
            Ok(Ok(Some(c))) => {
                tracing::info!(node, cause = c.cause.label(), text = %c.text, "termination cause");
                Some(c)
            }
            Ok(Ok(None)) => {
                tracing::info!(node, "no scaling activity explains this termination");
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(node, error = %e, "scaling activity lookup failed; draining without the cause");
                None
            }
            Err(_) => {
                tracing::warn!(
                    node,
                    "scaling activity lookup timed out; draining without the cause"
                );
                None
            }
        }
    }

    /// Records a cause that came after the drain's claim: once the claim is on the Node (its
    /// own cause annotation would overwrite an earlier write).
    async fn record_cause(&self, node: &str, notice_id: &str, c: &ActivityCause) {
        self.wait_for_claim(node, notice_id).await;
        if let Err(e) = nodes::annotate(
            &self.node_api,
            node,
            &[(nodes::CAUSE, Some(c.cause.label().to_string()))],
            Bound::default_budget(),
        )
        .await
        {
            tracing::warn!(node, error = %e, "recording the cause failed");
        }
    }

    /// Waits (bounded) until the Node records a drain for this notice.
    /// Read from the node watch's cache, not the API server.
    async fn wait_for_claim(&self, node: &str, notice_id: &str) {
        for _ in 0..50 {
            if let Some(n) = self.nodes.get(node) {
                if nodes::DrainState::of(&n).notice.as_deref() == Some(notice_id) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// CompleteLifecycleAction(CONTINUE), retried while the error is retryable.
    async fn complete(&self, action: &ActionRef) -> Result<String, String> {
        self.complete_with(action, LifecycleResult::Continue).await
    }

    /// CompleteLifecycleAction with `result`, retried while the error is retryable.
    async fn complete_with(
        &self,
        action: &ActionRef,
        result: LifecycleResult,
    ) -> Result<String, String> {
        let give_up = tokio::time::Instant::now() + self.config.complete_retry_for;
        let mut delay = Duration::from_millis(500);
        loop {
            let outcome = self.lifecycle.complete(action, result).await;
            if let Some(m) = self.metrics.get() {
                let label = match &outcome {
                    Ok(()) => result.as_str().to_ascii_lowercase(),
                    Err(LifecycleError::NoActiveAction(_)) => "already-over".into(),
                    Err(_) => "failed".into(),
                };
                Metrics::count(&m.completions, &label);
            }
            match outcome {
                Ok(()) => {
                    return Ok(format!(
                        "lifecycle action completed with {}",
                        result.as_str()
                    ))
                }
                Err(LifecycleError::NoActiveAction(m)) => {
                    tracing::warn!(token = %action.token, message = %m, "lifecycle action was already over (completed, expired or instance gone)");
                    return Ok(format!("lifecycle action already over: {m}"));
                }
                Err(LifecycleError::Retryable(m)) if tokio::time::Instant::now() < give_up => {
                    tracing::warn!(token = %action.token, error = %m, "completing the lifecycle action failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(format!("completing lifecycle action {}: {e}", action.token)),
            }
        }
    }

    async fn lifecycle_launch(
        self: &Arc<Self>,
        notice: &Notice,
        _node: Option<String>,
    ) -> Disposition {
        // Not ours to complete: leave it for whoever is (another consumer of a shared queue).
        if !self.config.complete_launch {
            return match self.foreign(notice) {
                Disposition::Release(_) => Disposition::Release(
                    "launch lifecycle actions are not handled here (--complete-launch is off): left for their owner".into(),
                ),
                d => d,
            };
        }
        let (Some(hook), Some(instance)) = (notice.hook.clone(), notice.instance.clone()) else {
            return Disposition::Keep("lifecycle notice without hook coordinates".into());
        };
        let action = ActionRef {
            group: hook.group.clone(),
            hook: hook.hook_name.clone(),
            token: hook.token.clone(),
            instance: instance.clone(),
        };
        match self.groups.is_managed(&action.group).await {
            Ok(true) => {}
            Ok(false) => return self.foreign(notice),
            Err(e) => {
                tracing::warn!(group = %action.group, error = %e, "group tag lookup failed; leaving the launch action for now");
                return self.foreign(notice);
            }
        }
        // Heartbeats keep the action while the instance joins; it has until the launch timeout
        // (or the hook's own end), then it is abandoned: an instance that never became a node
        // is replaced by its group, not let into service.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let heartbeats = {
            let this = self.clone();
            let (action, event_time) = (action.clone(), notice.event_time);
            tokio::spawn(async move {
                this.heartbeat_loop(action, String::new(), event_time, stop_rx)
                    .await
            })
        };
        let global = self
            .timeouts(&action.group, &action.hook)
            .await
            .unwrap_or(HookTimeouts::SAFE_DEFAULT)
            .global;
        let give_up = add(notice.event_time, self.config.launch_timeout)
            .min(sub(add(notice.event_time, global), self.config.margin));
        let joined = loop {
            if self.nodes.node_for(&instance).is_some_and(|n| is_ready(&n)) {
                break true;
            }
            if Timestamp::now() >= give_up {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let _ = stop_tx.send(true);
        let beats = heartbeats.await.unwrap_or(0);
        let result = if joined {
            LifecycleResult::Continue
        } else {
            tracing::warn!(instance = %instance, "the instance never became a Ready node; abandoning its launch");
            LifecycleResult::Abandon
        };
        match self.complete_with(&action, result).await {
            Ok(m) if joined => {
                Disposition::Done(format!("node Ready after {beats} heartbeats; {m}"))
            }
            Ok(m) => Disposition::Done(format!("never joined by the launch timeout; {m}")),
            Err(e) => Disposition::Keep(e),
        }
    }
}

/// The longest a drain waits for first cordons still on their way ([`Handler::after_cordons`]).
const CORDONS_FIRST_FOR: Duration = Duration::from_secs(2);

/// Beyond the lookup timeout, how long a lifecycle drain waits for its hook's timeouts and
/// its scaling activity's cause before it claims the node: each lookup is bounded by the
/// lookup timeout itself, so this only absorbs scheduling.
const LOOKUPS_SLACK: Duration = Duration::from_millis(100);

/// The first heartbeat of an action goes within this long of its message (a random point in it).
const FIRST_HEARTBEAT_WITHIN: Duration = Duration::from_millis(500);

/// Whether the node's kubelet became Ready after `t`.
fn ready_after(node: &Node, t: Timestamp) -> bool {
    nodes::ready_since(node).is_some_and(|ready| ready > t)
}

/// How soon a failed heartbeat is tried again: 1, 2, 4, then every 5 s.
/// The id a notice's drain is recorded under on the Node (`termguard.io/drain-notice`): the
/// lifecycle action's token, or the producer's event id (the same in every copy of a message).
fn drain_id(notice: &Notice) -> String {
    if let (NoticeKind::LifecycleTerminate, Some(hook)) = (&notice.kind, &notice.hook) {
        return hook.token.to_string();
    }
    notice.event_id.as_ref().map_or_else(
        || format!("{}-{}", notice.kind.label(), notice.event_time),
        |e| e.to_string(),
    )
}

fn heartbeat_retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(3)).min(Duration::from_secs(5))
}

/// How often the hook's timeouts are read again: every few minutes once known, every 30 s
/// while they are not.
fn refresh_every(known: bool) -> Duration {
    if known {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(30)
    }
}

/// Time left until `t` (zero once past).
fn until(t: Timestamp) -> Duration {
    Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
}

/// Outcomes after which pods that could still move may be left on the node.
fn unfinished(o: Outcome) -> bool {
    matches!(o, Outcome::Refused | Outcome::Failed)
}

/// Whether a notice-driven drain's deadline is still ahead (a drain without one is manual).
fn before_deadline(req: &DrainRequest) -> bool {
    req.current_deadline().is_some_and(|d| d > Timestamp::now())
}

/// How a drain outcome reads in logs.
pub fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Drained => "drained",
        Outcome::TimedOut => "timed-out",
        Outcome::Failed => "failed",
        Outcome::Refused => "refused",
        Outcome::Interrupted => "interrupted",
    }
}
