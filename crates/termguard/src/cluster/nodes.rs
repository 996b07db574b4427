//! Node state for a drain: cordon, the `termguard.io/terminating` taint, the
//! exclude-from-load-balancers label, and the progress annotations that let a second run —
//! after a crash, on another replica, or from a duplicate message — continue instead of
//! starting over (`docs/drain-semantics.md#marking-the-node`,
//! `docs/drain-semantics.md#running-twice`).

use crate::cluster::index::{has_unschedulable_taint, NodeIndex};
use crate::cluster::retry::{self, Bound, Failed, Op};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// Taint every node termguard is draining carries (NoSchedule; value: the cause).
pub const TERMINATING_TAINT: &str = "termguard.io/terminating";
/// Label that makes load balancers stop sending traffic before pods stop.
pub const EXCLUDE_LB_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// Value of [`EXCLUDE_LB_LABEL`] when termguard set it (removed on uncordon only then).
pub const EXCLUDE_LB_VALUE: &str = "termguard";

/// Prefix of every progress annotation.
pub const ANNOTATION_PREFIX: &str = "termguard.io/drain-";
/// Who runs the drain.
pub const OWNER: &str = "termguard.io/drain-owner";
/// When the owner last said it is alive.
pub const RENEWED: &str = "termguard.io/drain-renewed";
/// Which notice asked for the drain (`manual` for the CLI).
pub const NOTICE: &str = "termguard.io/drain-notice";
/// Why the node is going.
pub const CAUSE: &str = "termguard.io/drain-cause";
/// When the instance will be gone.
pub const DEADLINE: &str = "termguard.io/drain-deadline";
/// An earlier deadline asked for by a notice that arrived while another replica owned the
/// drain (a Spot warning during a lifecycle drain): the owner reads it and clips by it.
pub const URGENT: &str = "termguard.io/drain-urgent-deadline";
/// The node's boot id (`status.nodeInfo.bootID`) when the drain started: a different one on a
/// Ready node later means the instance came back (stop/start, warm pool, new root volume, reboot).
pub const BOOT_ID: &str = "termguard.io/drain-boot-id";
/// When the drain finished.
pub const FINISHED: &str = "termguard.io/drain-finished";
/// When the drain started.
pub const STARTED: &str = "termguard.io/drain-started";
/// Where the drain is: `draining`, `wave-N`, `drained`, `timed-out`, `failed`.
pub const PHASE: &str = "termguard.io/drain-phase";
/// The final summary (JSON), so a follower reports the same result.
pub const RESULT: &str = "termguard.io/drain-result";
/// Every pod of the drain and where it stands (compact JSON, kept up to date by the owner), so
/// that a run taking over an interrupted drain reports the pods the earlier run evicted.
pub const PODS: &str = "termguard.io/drain-pods";
/// The notices whose drains were undone because the instance came back (or its maintenance
/// was called off), the latest last, space-separated, at most [`UNDONE_KEPT`]: a late copy of
/// one (SQS delivers at least once; a backlog or a dead-letter redrive can bring it hours
/// later, after other notices came and went) must not drain the node again. Kept when the
/// drain's own annotations are removed.
pub const UNDONE_NOTICE: &str = "termguard.io/undone-notice";
/// How many undone notices a Node remembers.
pub const UNDONE_KEPT: usize = 10;

fn undone_notices(node: &Node) -> impl Iterator<Item = &str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(UNDONE_NOTICE))
        .map(|v| v.split_whitespace())
        .into_iter()
        .flatten()
}

/// Whether the node's drain for `notice` was undone since (see [`UNDONE_NOTICE`]).
pub fn undone_for(node: &Node, notice: &str) -> bool {
    undone_notices(node).any(|n| n == notice)
}

/// [`UNDONE_NOTICE`]'s value once `notice` is added: the oldest go past [`UNDONE_KEPT`].
fn with_undone(node: &Node, notice: &str) -> String {
    let mut kept: Vec<&str> = undone_notices(node).filter(|n| *n != notice).collect();
    kept.push(notice);
    let skip = kept.len().saturating_sub(UNDONE_KEPT);
    kept[skip..].join(" ")
}

/// How long an owner's renewal stays valid; a drain not renewed for this long was abandoned.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often an owner renews.
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

/// How long a claim that conflicted on a watch's copy waits for the watch's newer one before
/// it reads the Node itself.
const NEWER_WITHIN: Duration = Duration::from_secs(1);

/// Errors of node-state operations.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The Node does not exist.
    #[error("node {0:?} not found")]
    NotFound(String),
    /// An API call failed for good: a permanent error, or one retried until its bound
    /// (`docs/drain-semantics.md#api-errors`).
    #[error("{action} node {node}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The node.
        node: String,
        /// The cause, explained.
        #[source]
        source: Failed,
    },
}

/// The drain progress recorded on a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainState {
    /// Owner identity.
    pub owner: Option<String>,
    /// Last renewal.
    pub renewed: Option<Timestamp>,
    /// Notice id.
    pub notice: Option<String>,
    /// Cause.
    pub cause: Option<String>,
    /// Deadline.
    pub deadline: Option<Timestamp>,
    /// An earlier deadline another notice asked the owner to keep.
    pub urgent: Option<Timestamp>,
    /// Start time.
    pub started: Option<Timestamp>,
    /// Phase.
    pub phase: Option<String>,
    /// Final result (JSON).
    pub result: Option<String>,
    /// The boot id when the drain started.
    pub boot_id: Option<String>,
    /// When the drain finished.
    pub finished: Option<Timestamp>,
}

impl DrainState {
    /// Reads the annotations of a Node.
    pub fn of(node: &Node) -> Self {
        let a = node.metadata.annotations.clone().unwrap_or_default();
        let ts = |k: &str| a.get(k).and_then(|v| v.parse::<Timestamp>().ok());
        DrainState {
            owner: a.get(OWNER).cloned(),
            renewed: ts(RENEWED),
            notice: a.get(NOTICE).cloned(),
            cause: a.get(CAUSE).cloned(),
            deadline: ts(DEADLINE),
            urgent: ts(URGENT),
            started: ts(STARTED),
            phase: a.get(PHASE).cloned(),
            result: a.get(RESULT).cloned(),
            boot_id: a.get(BOOT_ID).cloned(),
            finished: ts(FINISHED),
        }
    }

    /// Whether the recorded drain has finished (whatever its outcome).
    pub fn is_finished(&self) -> bool {
        matches!(
            self.phase.as_deref(),
            Some("drained" | "timed-out" | "failed")
        )
    }

    /// Whether another live process owns a running drain (renewed within the lease).
    pub fn active_owner(&self, me: &str, now: Timestamp) -> Option<&str> {
        let owner = self.owner.as_deref()?;
        if owner == me || self.is_finished() || self.phase.is_none() {
            return None;
        }
        let fresh = self
            .renewed
            .is_some_and(|r| now.duration_since(r).unsigned_abs() < LEASE);
        fresh.then_some(owner)
    }
}

/// Whether the process `owner` names has ended, as far as `me` can tell: both identities are
/// `host/pid` (`termguard::commands::identity`), the host is this one, and no process of that
/// pid runs here. Anything else — another host, a name of another form, a system without
/// `/proc` — cannot be told, and the owner's lease decides.
pub fn owner_ended(owner: &str, me: &str) -> bool {
    let (Some((host, pid)), Some((my_host, my_pid))) =
        (owner.rsplit_once('/'), me.rsplit_once('/'))
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == my_host
        && pid.to_string() != my_pid
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// What the caller wants recorded when it claims a drain.
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// Who claims.
    pub owner: &'a str,
    /// Notice id.
    pub notice: &'a str,
    /// Cause (taint value).
    pub cause: &'a str,
    /// Deadline.
    pub deadline: Option<Timestamp>,
}

/// The outcome of trying to claim a node's drain.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// We own the drain now; `resumed` says a previous unfinished drain was taken over.
    Owned {
        /// A previous owner's drain was unfinished.
        resumed: bool,
        /// The earliest deadline still ahead that another notice recorded for this drain (a
        /// resumed drain of another notice, or a notice that asked the owner to hurry).
        inherited: Option<Timestamp>,
        /// Whether the node was already cordoned.
        was_cordoned: bool,
        /// The Node's UID (for Events about it).
        uid: Option<String>,
    },
    /// Another live process is draining the node.
    Busy {
        /// Its identity.
        owner: String,
    },
    /// This notice's drain of the node already ended ([`already_ended`]): nothing was
    /// written; the Node as read (fresh, never only the watch's copy) holds its record.
    Ended(Box<Node>),
}

/// Whether the drain `c` asks for already ended, so that claiming the node would drain it a
/// second time for one notice (SQS delivers at least once: a copy can come at any time after
/// the drain): this notice's drain finished — one that failed is tried again while the
/// notice's deadline is ahead — or was undone when the instance came back ([`UNDONE_NOTICE`]).
/// A manual drain always runs again, as `kubectl drain` does.
pub fn already_ended(node: &Node, c: &Claim<'_>, now: Timestamp) -> bool {
    if c.notice == "manual" {
        return false;
    }
    if undone_for(node, c.notice) {
        return true;
    }
    let state = DrainState::of(node);
    let again = state.phase.as_deref() == Some("failed") && c.deadline.is_some_and(|d| d > now);
    state.is_finished() && state.notice.as_deref() == Some(c.notice) && !again
}

fn api_err(action: &'static str, node: &str) -> impl FnOnce(Failed) -> NodeError {
    let node = node.to_string();
    move |source| match source.code() {
        Some(404) => NodeError::NotFound(node),
        _ => NodeError::Api {
            action,
            node,
            source,
        },
    }
}

fn is_conflict(e: &Failed) -> bool {
    e.code() == Some(409)
}

/// GETs the Node, retried on transient errors within `bound`.
pub async fn get(api: &Api<Node>, name: &str, bound: Bound) -> Result<Node, NodeError> {
    retry::call(Op::new("get", "nodes", name), bound, || api.get(name))
        .await
        .map_err(api_err("getting", name))
}

/// PATCHes the Node, retried on transient errors within `bound`. Every patch termguard sends
/// is safe to repeat: the same merge, or one guarded by a resourceVersion (a repeat of one
/// that was applied after all answers 409, and the caller reads the Node again).
async fn patch(
    api: &Api<Node>,
    name: &str,
    patch: &Patch<serde_json::Value>,
    bound: Bound,
) -> Result<Node, Failed> {
    let params = PatchParams::default();
    retry::call(Op::new("patch", "nodes", name), bound, || {
        api.patch(name, &params, patch)
    })
    .await
}

/// Taint values are label values: at most 63 characters of `[A-Za-z0-9._-]`.
pub fn taint_value(cause: &str) -> String {
    let cleaned: String = cause
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Cordons like kubectl (strategic merge patch, no call if already cordoned); returns whether
/// it was already cordoned. Each request is retried on transient errors within `bound`.
pub async fn cordon(api: &Api<Node>, name: &str, bound: Bound) -> Result<bool, NodeError> {
    let node = get(api, name, bound).await?;
    cordon_node(api, node, bound).await.map(|(was, _)| was)
}

/// Cordons a node as last seen by a watch, without reading it first: no call if it was seen
/// cordoned. Returns whether it was.
pub async fn cordon_watched(api: &Api<Node>, seen: &Node, bound: Bound) -> Result<bool, NodeError> {
    cordon_node(api, seen.clone(), bound)
        .await
        .map(|(was, _)| was)
}

/// Whether `node` is marked unschedulable.
pub fn is_cordoned(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

/// Cordons `node` (as just read) unless it is; returns whether it was, and the Node after.
async fn cordon_node(api: &Api<Node>, node: Node, bound: Bound) -> Result<(bool, Node), NodeError> {
    if is_cordoned(&node) {
        return Ok((true, node));
    }
    let name = node.metadata.name.clone().unwrap_or_default();
    let cordon = Patch::Strategic(json!({"spec": {"unschedulable": true}}));
    let after = patch(api, &name, &cordon, bound)
        .await
        .map_err(api_err("cordoning", &name))?;
    Ok((false, after))
}

/// Claims the node's drain: cordon, then one resourceVersion-guarded merge patch that adds the
/// taint (read-modify-write of the whole list), the load-balancer label (only if absent) and
/// the progress annotations (`docs/drain-semantics.md#marking-the-node`). Conflicts are retried
/// with a fresh read; every request, on a transient error, within `bound`. `seen`, a copy of
/// the Node from a watch, saves the first read: the claim's patch is guarded by its
/// resourceVersion, so a stale copy costs a conflict and a fresh read, never a wrong claim;
/// with the watch's `index`, the conflict waits a moment for the watch's newer copy instead
/// of reading.
pub async fn claim(
    api: &Api<Node>,
    name: &str,
    c: &Claim<'_>,
    bound: Bound,
    seen: Option<Node>,
    index: Option<&NodeIndex>,
) -> Result<ClaimOutcome, NodeError> {
    let watched = seen.is_some();
    let mut first = match seen {
        Some(n) => n,
        None => get(api, name, bound).await?,
    };
    // Ended already: nothing to write — not even the cordon (an undone drain's node is back in
    // service). An answer without a write, so never from the watch's copy alone.
    if already_ended(&first, c, Timestamp::now()) {
        if watched {
            first = get(api, name, bound).await?;
        }
        if already_ended(&first, c, Timestamp::now()) {
            return Ok(ClaimOutcome::Ended(Box::new(first)));
        }
    }
    let (was_cordoned, cordoned) = cordon_node(api, first, bound).await?;
    // Still the watch's copy (no cordon answered with the Node as stored): every write below
    // is guarded by its resourceVersion, but "busy" is an answer without a write — read
    // afresh before giving it.
    let mut from_watch = watched && was_cordoned;
    // A copy from the watch of a Node just cordoned, which the node lifecycle controller has
    // not tainted yet: its write is on the way and would make the claim's guarded patch
    // conflict. Waiting for it through the watch costs no request; the conflict costs one.
    let cordoned = match index {
        Some(index)
            if from_watch
                && index.taints_cordoned_nodes()
                && !has_unschedulable_taint(&cordoned) =>
        {
            // Else the watch's latest copy, which is no older than this one.
            match index
                .until(name, NEWER_WITHIN, has_unschedulable_taint)
                .await
            {
                Some(n) => Node::clone(&n),
                None => {
                    tracing::debug!(
                        node = name,
                        "no unschedulable taint came after the cordon; claims stop waiting for it"
                    );
                    index.no_taint_came();
                    index.get(name).map_or(cordoned, |n| Node::clone(&n))
                }
            }
        }
        _ => cordoned,
    };
    // The first attempt works on the Node as the cordon left it; a retry reads it afresh.
    let mut fresh = Some(cordoned);
    // What the last claim patch that answered 409 would have recorded: a retried patch whose
    // first try was applied after all (its answer lost to a timeout or a reset) answers 409 to
    // the repeat, and the Node read next is our own claim, not a drain to resume.
    let mut sent: Option<(Timestamp, ClaimOutcome)> = None;
    loop {
        let node = match fresh.take() {
            Some(n) => n,
            None => {
                from_watch = false;
                get(api, name, bound).await?
            }
        };
        let now = Timestamp::now();
        let state = DrainState::of(&node);
        if let Some((stamp, outcome)) = sent.take() {
            if state.owner.as_deref() == Some(c.owner) && state.renewed == Some(stamp) {
                return Ok(outcome);
            }
        }
        // A read after a conflict: the drain may have ended meanwhile (another replica
        // following a copy of the notice). Never answered from a watch's copy alone.
        if already_ended(&node, c, now) {
            if from_watch {
                continue;
            }
            return Ok(ClaimOutcome::Ended(Box::new(node)));
        }
        let live = state
            .active_owner(c.owner, now)
            .filter(|o| !owner_ended(o, c.owner));
        if let Some(owner) = live {
            if from_watch {
                continue;
            }
            let owner = owner.to_string();
            // Our deadline is earlier than the one the owner keeps: tell it (the earliest
            // deadline of any notice wins, on whichever replica runs the drain).
            let kept = earliest(state.deadline, state.urgent);
            if let Some(ours) = c.deadline.filter(|d| kept.is_none_or(|k| *d < k)) {
                let urgent = Patch::Merge(json!({"metadata": {
                    "resourceVersion": node.metadata.resource_version,
                    "annotations": {URGENT: ours.to_string()},
                }}));
                match patch(api, name, &urgent, bound).await {
                    Ok(_) => {}
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(api_err("asking for an earlier deadline on", name)(e)),
                }
            }
            return Ok(ClaimOutcome::Busy { owner });
        }
        let resumed = state.phase.is_some() && !state.is_finished();
        let inherited = if resumed {
            inherited_deadline(&state, c.notice, c.deadline, now)
        } else {
            None
        };
        let deadline = earliest(inherited, c.deadline);
        let mut taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        taints.retain(|t| t.key != TERMINATING_TAINT);
        taints.push(Taint {
            key: TERMINATING_TAINT.into(),
            value: Some(taint_value(c.cause)),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        let mut annotations = BTreeMap::from([
            (OWNER.to_string(), json!(c.owner)),
            (RENEWED.to_string(), json!(now.to_string())),
            (NOTICE.to_string(), json!(c.notice)),
            (CAUSE.to_string(), json!(c.cause)),
            (PHASE.to_string(), json!("draining")),
            (RESULT.to_string(), serde_json::Value::Null),
            (URGENT.to_string(), serde_json::Value::Null),
            (
                DEADLINE.to_string(),
                deadline.map_or(serde_json::Value::Null, |d| json!(d.to_string())),
            ),
        ]);
        if !resumed {
            annotations.insert(STARTED.to_string(), json!(now.to_string()));
            annotations.insert(FINISHED.to_string(), serde_json::Value::Null);
            annotations.insert(PODS.to_string(), serde_json::Value::Null);
            annotations.insert(
                BOOT_ID.to_string(),
                boot_id(&node).map_or(serde_json::Value::Null, |b| json!(b)),
            );
        }
        // The cordon again, in the same guarded patch: whatever uncordoned the node since our
        // first cordon (an undo of an earlier drain on another replica) cannot leave it open.
        let mut claim = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version, "annotations": annotations},
            "spec": {"taints": taints, "unschedulable": true},
        });
        let has_label = node
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(EXCLUDE_LB_LABEL));
        if !has_label {
            claim["metadata"]["labels"] = json!({EXCLUDE_LB_LABEL: EXCLUDE_LB_VALUE});
        }
        let owned = ClaimOutcome::Owned {
            resumed,
            inherited,
            was_cordoned,
            uid: node.metadata.uid.clone(),
        };
        match patch(api, name, &Patch::Merge(claim), bound).await {
            Ok(_) => return Ok(owned),
            Err(e) if is_conflict(&e) => {
                sent = Some((now, owned));
                // The watch's copy was stale: the write that made it so (the node lifecycle
                // controller's own unschedulable taint, after the cordon) comes through the
                // watch within moments. Still a watch's copy: "ended" and "busy" are read
                // afresh before they are answered.
                if let (true, Some(index), Some(rv)) =
                    (from_watch, index, node.metadata.resource_version.as_deref())
                {
                    fresh = index
                        .newer(name, rv, NEWER_WITHIN)
                        .await
                        .map(|n| Node::clone(&n));
                }
                continue;
            }
            Err(e) => return Err(api_err("claiming", name)(e)),
        }
    }
}

/// The node's `status.nodeInfo.bootID`, when its kubelet reports one.
pub fn boot_id(node: &Node) -> Option<&str> {
    node.status
        .as_ref()?
        .node_info
        .as_ref()
        .map(|i| i.boot_id.as_str())
        .filter(|b| !b.is_empty())
}

/// When the node's kubelet last became Ready, if it is Ready now.
pub fn ready_since(node: &Node) -> Option<Timestamp> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(c.last_transition_time.as_ref()?.0)
}

/// Whether the instance behind a node termguard drained for a notice has come back: its drain
/// finished, and the node is Ready again after a new boot (another boot id) or after having
/// been NotReady since the drain ended. A manual drain is the operator's to undo.
pub fn returned(node: &Node) -> bool {
    let state = DrainState::of(node);
    if !state.is_finished() || state.notice.as_deref().is_none_or(|n| n == "manual") {
        return false;
    }
    let Some(ready) = ready_since(node) else {
        return false;
    };
    let rebooted =
        matches!((state.boot_id.as_deref(), boot_id(node)), (Some(then), Some(now)) if then != now);
    let ready_again = state.finished.is_some_and(|f| ready > f);
    rebooted || ready_again
}

/// The earlier of two optional deadlines (none when neither is set).
pub fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a resumed drain takes over from the recorded one: the deadline another notice recorded,
/// and an urgent deadline a notice asked for — each only while still ahead. The notice's own
/// recorded deadline is not inherited when the notice brings one (it computed it again, from
/// the hook itself: the recorded one may have been a guess), and one that has passed with the
/// instance still here was not that instance's end.
pub fn inherited_deadline(
    state: &DrainState,
    notice: &str,
    requested: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    let ahead = |t: Option<Timestamp>| t.filter(|t| *t > now);
    let same_notice = state.notice.as_deref() == Some(notice);
    let recorded = ahead(state.deadline).filter(|_| !same_notice || requested.is_none());
    earliest(recorded, ahead(state.urgent))
}

/// Sets progress annotations (plain merge patch: only our own keys change); returns the Node
/// as the API server stored it. Retried on transient errors within `bound`.
pub async fn annotate(
    api: &Api<Node>,
    name: &str,
    values: &[(&str, Option<String>)],
    bound: Bound,
) -> Result<Node, NodeError> {
    let map: BTreeMap<&str, serde_json::Value> = values
        .iter()
        .map(|(k, v)| {
            (
                *k,
                v.clone()
                    .map_or(serde_json::Value::Null, serde_json::Value::String),
            )
        })
        .collect();
    let annotations = Patch::Merge(json!({"metadata": {"annotations": map}}));
    patch(api, name, &annotations, bound)
        .await
        .map_err(api_err("annotating", name))
}

/// Gives up `owner`'s claim of the node's drain without finishing it (the drain failed): its
/// lease ends now, so the next run takes the drain over at once instead of waiting a lease
/// period for renewals that will not come. The node stays cordoned and marked. Nothing
/// changes if another process owns the drain by now.
pub async fn release(
    api: &Api<Node>,
    name: &str,
    owner: &str,
    bound: Bound,
) -> Result<(), NodeError> {
    loop {
        let node = get(api, name, bound).await?;
        if DrainState::of(&node).owner.as_deref() != Some(owner) {
            return Ok(());
        }
        let release = json!({"metadata": {
            "resourceVersion": node.metadata.resource_version,
            "annotations": {RENEWED: null},
        }});
        match patch(api, name, &Patch::Merge(release), bound).await {
            Ok(_) => return Ok(()),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(api_err("releasing the drain of", name)(e)),
        }
    }
}

/// Undoes everything a drain did: uncordon, remove our taint, the load-balancer label if we
/// set it, and the progress annotations. Returns whether anything changed. Each request is
/// retried on transient errors within `bound`.
pub async fn uncordon(api: &Api<Node>, name: &str, bound: Bound) -> Result<bool, NodeError> {
    undo(api, name, |_| true, false, bound).await
}

/// [`uncordon`], only while `still` holds for the Node as read: checked again on every read,
/// so a drain another replica claimed meanwhile (a conflict, then a fresh read) is never undone.
/// The undone notice is recorded ([`UNDONE_NOTICE`]); a manual [`uncordon`] leaves nothing.
pub async fn uncordon_if(
    api: &Api<Node>,
    name: &str,
    still: impl Fn(&Node) -> bool,
    bound: Bound,
) -> Result<bool, NodeError> {
    undo(api, name, still, true, bound).await
}

async fn undo(
    api: &Api<Node>,
    name: &str,
    still: impl Fn(&Node) -> bool,
    record_undone: bool,
    bound: Bound,
) -> Result<bool, NodeError> {
    loop {
        let node = get(api, name, bound).await?;
        if !still(&node) {
            return Ok(false);
        }
        let cordoned = is_cordoned(&node);
        let mut undo = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"unschedulable": null}});
        let marked = take_back_marks(&node, &mut undo);
        let annotations: Vec<String> = node
            .metadata
            .annotations
            .as_ref()
            .map(|a| {
                a.keys()
                    .filter(|k| k.starts_with(ANNOTATION_PREFIX))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !cordoned && !marked && annotations.is_empty() {
            return Ok(false);
        }
        if !annotations.is_empty() {
            let mut changes: BTreeMap<String, serde_json::Value> = annotations
                .into_iter()
                .map(|k| (k, serde_json::Value::Null))
                .collect();
            let notice = DrainState::of(&node).notice.filter(|n| n != "manual");
            if let Some(notice) = notice.filter(|_| record_undone) {
                changes.insert(
                    UNDONE_NOTICE.to_string(),
                    json!(with_undone(&node, &notice)),
                );
            }
            undo["metadata"]["annotations"] = json!(changes);
        }
        match patch(api, name, &Patch::Merge(undo), bound).await {
            Ok(_) => return Ok(true),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(api_err("uncordoning", name)(e)),
        }
    }
}

/// Adds to `patch` (a merge patch with `metadata` and possibly `spec`) what takes back the
/// marks a claim added: the termguard taint (the rest of the list kept), and the load-balancer
/// label when its value is termguard's. Returns whether there was anything to take back.
fn take_back_marks(node: &Node, patch: &mut serde_json::Value) -> bool {
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let kept: Vec<&Taint> = taints
        .iter()
        .filter(|t| t.key != TERMINATING_TAINT)
        .collect();
    let ours_label = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(EXCLUDE_LB_LABEL))
        .is_some_and(|v| v == EXCLUDE_LB_VALUE);
    let tainted = kept.len() != taints.len();
    if tainted {
        patch["spec"]["taints"] = if kept.is_empty() {
            serde_json::Value::Null
        } else {
            json!(kept)
        };
    }
    if ours_label {
        patch["metadata"]["labels"] = json!({EXCLUDE_LB_LABEL: null});
    }
    tainted || ours_label
}

/// Takes back the marks a claim added — the termguard taint, and the load-balancer label when
/// termguard set it — and keeps the cordon and the progress annotations: what a refused manual
/// drain leaves, as kubectl leaves a node whose drain it refused (cordoned, nothing else).
/// Returns whether anything changed.
pub async fn release_marks(api: &Api<Node>, name: &str, bound: Bound) -> Result<bool, NodeError> {
    loop {
        let node = get(api, name, bound).await?;
        let mut release = json!({"metadata": {"resourceVersion": node.metadata.resource_version}});
        if !take_back_marks(&node, &mut release) {
            return Ok(false);
        }
        match patch(api, name, &Patch::Merge(release), bound).await {
            Ok(_) => return Ok(true),
            Err(e) if is_conflict(&e) => continue,
            Err(e) => return Err(api_err("releasing", name)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn node_with(annotations: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn undone_notices_are_remembered_latest_last_and_the_oldest_go() {
        let one = node_with(&[(UNDONE_NOTICE, "spot-1")]);
        assert!(undone_for(&one, "spot-1"));
        assert!(!undone_for(&one, "spot"));
        assert_eq!(with_undone(&one, "spot-2"), "spot-1 spot-2");
        let two = node_with(&[(UNDONE_NOTICE, "spot-1 spot-2")]);
        assert!(undone_for(&two, "spot-1") && undone_for(&two, "spot-2"));
        assert_eq!(
            with_undone(&two, "spot-1"),
            "spot-2 spot-1",
            "moved, not repeated"
        );
        let ids: Vec<String> = (0..UNDONE_KEPT).map(|i| format!("n{i}")).collect();
        let full = node_with(&[(UNDONE_NOTICE, &ids.join(" "))]);
        let after = with_undone(&full, "new");
        assert_eq!(after.split(' ').count(), UNDONE_KEPT);
        assert!(after.ends_with(" new") && !after.contains("n0 "), "{after}");
        assert_eq!(with_undone(&node_with(&[]), "a"), "a");
    }

    #[test]
    fn only_a_notices_own_ended_drain_is_not_claimed_again() {
        let now = Timestamp::now();
        let later = now.checked_add(jiff::SignedDuration::from_secs(60)).ok();
        let earlier = now.checked_sub(jiff::SignedDuration::from_secs(60)).ok();
        let claim = |notice, deadline| Claim {
            owner: "me",
            notice,
            cause: "spot-interruption",
            deadline,
        };
        let drained = node_with(&[(NOTICE, "n1"), (PHASE, "drained")]);
        assert!(already_ended(&drained, &claim("n1", later), now));
        assert!(
            !already_ended(&drained, &claim("n2", later), now),
            "another notice"
        );
        assert!(!already_ended(&drained, &claim("manual", later), now));
        let running = node_with(&[(NOTICE, "n1"), (PHASE, "wave-1")]);
        assert!(
            !already_ended(&running, &claim("n1", later), now),
            "resumed"
        );
        let failed = node_with(&[(NOTICE, "n1"), (PHASE, "failed")]);
        assert!(
            !already_ended(&failed, &claim("n1", later), now),
            "tried again"
        );
        assert!(
            already_ended(&failed, &claim("n1", earlier), now),
            "too late to"
        );
        let timed_out = node_with(&[(NOTICE, "n1"), (PHASE, "timed-out")]);
        assert!(already_ended(&timed_out, &claim("n1", later), now));
        let undone = node_with(&[(UNDONE_NOTICE, "n0 n1")]);
        assert!(already_ended(&undone, &claim("n1", later), now));
        assert!(!already_ended(&undone, &claim("n2", later), now));
    }

    #[test]
    fn a_fresh_foreign_owner_is_active() {
        let now = Timestamp::now();
        let n = node_with(&[
            (OWNER, "other"),
            (RENEWED, &now.to_string()),
            (PHASE, "draining"),
        ]);
        assert_eq!(DrainState::of(&n).active_owner("me", now), Some("other"));
        assert_eq!(DrainState::of(&n).active_owner("other", now), None);
    }

    #[test]
    fn a_stale_or_finished_owner_is_not_active() {
        let now = Timestamp::now();
        let old = now
            .checked_sub(jiff::SignedDuration::from_secs(120))
            .unwrap_or(now);
        let stale = node_with(&[
            (OWNER, "other"),
            (RENEWED, &old.to_string()),
            (PHASE, "wave-1"),
        ]);
        assert_eq!(DrainState::of(&stale).active_owner("me", now), None);
        let done = node_with(&[
            (OWNER, "other"),
            (RENEWED, &now.to_string()),
            (PHASE, "drained"),
        ]);
        assert_eq!(DrainState::of(&done).active_owner("me", now), None);
    }

    #[test]
    fn a_resumed_drain_inherits_only_live_deadlines_of_other_notices() {
        let now = Timestamp::now();
        let at = |s: i64| {
            now.checked_add(jiff::SignedDuration::from_secs(s))
                .unwrap_or(now)
        };
        let state = |notice: &str, deadline: i64, urgent: Option<i64>| DrainState {
            notice: Some(notice.into()),
            deadline: Some(at(deadline)),
            urgent: urgent.map(at),
            ..DrainState::default()
        };
        let ours = Some(at(172_800));
        // Another notice's deadline still ahead: kept.
        assert_eq!(
            inherited_deadline(&state("spot", 60, None), "hook", ours, now),
            Some(at(60))
        );
        // Our own notice's: computed again, not inherited (it may have been a guess) — unless
        // the notice brings none.
        assert_eq!(
            inherited_deadline(&state("hook", 60, None), "hook", ours, now),
            None
        );
        assert_eq!(
            inherited_deadline(&state("hook", 60, None), "hook", None, now),
            Some(at(60))
        );
        // Passed with the instance still here: not its end.
        assert_eq!(
            inherited_deadline(&state("old", -3600, None), "hook", ours, now),
            None
        );
        assert_eq!(
            inherited_deadline(&state("hook", -60, None), "hook", None, now),
            None
        );
        // An urgent deadline ahead is kept whoever recorded it.
        assert_eq!(
            inherited_deadline(&state("hook", 600, Some(90)), "hook", ours, now),
            Some(at(90))
        );
        assert_eq!(
            inherited_deadline(&state("hook", 600, Some(-5)), "hook", ours, now),
            None
        );
    }

    #[test]
    fn a_renewal_stamp_reads_back_exactly() {
        // `claim` knows its own applied patch by the renewal stamp it wrote.
        let now = Timestamp::now();
        let n = node_with(&[(OWNER, "me"), (RENEWED, &now.to_string())]);
        assert_eq!(DrainState::of(&n).renewed, Some(now));
    }

    #[test]
    fn taint_values_are_valid_label_values() {
        assert_eq!(taint_value("AZRebalance"), "AZRebalance");
        assert_eq!(taint_value("scale-in (policy)"), "scale-in--policy");
        assert_eq!(taint_value(&"x".repeat(100)).len(), 63);
    }
}
