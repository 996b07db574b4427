//! One pod's way off the node: evict (or, past the deadline, delete with a clipped grace
//! period), retry refusals with backoff, then wait — by watching — until it is gone
//! (`docs/drain-semantics.md#evictions-and-retries`, `docs/drain-semantics.md#deadline-clipping`,
//! `docs/drain-semantics.md#waiting-by-watching`).

use super::budget::{clip_grace_period, reclip_terminating, GraceDecision};
use super::deadline::DeadlineFeed;
use super::engine::{time_until, DrainRequest, Drainer};
use super::evict::{self, Attempt};
use super::plan::PlannedPod;
use super::report::{PodAction, PodResult, Progress};
use super::tracker::PodTracker;
use crate::cluster::events::{pod_ref, Reason};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use std::time::Duration;

impl Drainer {
    pub(super) async fn drive_pod(
        &self,
        req: &DrainRequest,
        p: PlannedPod,
        wave: usize,
        at: &PodContext<'_>,
    ) -> PodResult {
        let PodContext {
            tracker,
            permits,
            deadlines,
            started,
            ..
        } = *at;
        let mut moved = deadlines.subscribe();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &p.pod.namespace);
        let uid = p.uid.clone().unwrap_or_default();
        let mut result = PodResult::planned(&p.pod.to_string(), wave);
        let own_grace = p.grace_period_seconds;
        let mut rng = fastrand::Rng::new();
        let mut blocked_reported = false;
        if p.terminating {
            result.action = PodAction::AlreadyTerminating;
            // A pod terminating past the deadline gets a shorter grace
            // (`docs/drain-semantics.md#deadline-clipping`).
            self.reclip(&api, &p, &uid, tracker, permits, deadlines, &mut result)
                .await;
        } else {
            loop {
                let now = Timestamp::now();
                let due = deadlines.now();
                // `--timeout` passed with the pod still refused: stop trying (kubectl's
                // "global timeout reached"); the pod remains.
                if due.give_up.is_some_and(|g| g <= now) && due.clip.is_none_or(|c| c > now) {
                    break;
                }
                // Past D - g: the eviction can no longer finish gracefully in time; delete with
                // the grace clipped to the time left, bypassing budgets
                // (`docs/drain-semantics.md#deadline-clipping`).
                if let Some(d) = due.clip {
                    if let GraceDecision::Clip {
                        grace_period_seconds,
                    } = clip_grace_period(now, d, own_grace)
                    {
                        self.emit(Progress::Evicting(p.pod.clone()));
                        result.attempts += 1;
                        // Retried on a transient error until the pod's clipped grace would
                        // end: its last chance of a SIGTERM before the instance goes.
                        let until = tokio::time::Instant::now()
                            + Duration::from_secs(grace_period_seconds.max(1) as u64);
                        let deleted = {
                            let _permit = permits.acquire().await;
                            evict::delete(&api, &p, &uid, Some(grace_period_seconds), until).await
                        };
                        match deleted {
                            Ok(()) => {
                                result.action = PodAction::DeletedClipped;
                                result.grace_period_seconds = Some(grace_period_seconds);
                                if grace_period_seconds < own_grace {
                                    result.not_graceful = Some(format!(
                                        "grace period clipped from {own_grace}s to {grace_period_seconds}s to finish before the deadline {d}"
                                    ));
                                }
                            }
                            Err(e) => result.error = Some(e),
                        }
                        break;
                    }
                }
                self.emit(Progress::Evicting(p.pod.clone()));
                result.attempts += 1;
                // Taken before the request: a budget change during it is not missed.
                let room = self.budgets.started().map(|w| w.subscribe());
                let attempt = if req.options.disable_eviction || p.finished {
                    let _permit = permits.acquire().await;
                    evict::delete(
                        &api,
                        &p,
                        &uid,
                        req.options.grace_period,
                        deadlines.retry_until(),
                    )
                    .await
                    .map_err(Attempt::Fatal)
                } else {
                    let _permit = permits.acquire().await;
                    evict::evict(&api, &p, &uid, req.options.grace_period).await
                };
                match attempt {
                    Ok(()) => {
                        result.action = if req.options.disable_eviction || p.finished {
                            PodAction::Deleted
                        } else {
                            PodAction::Evicted
                        };
                        result.grace_period_seconds = Some(own_grace);
                        break;
                    }
                    Err(Attempt::Gone) => {
                        result.action = PodAction::AlreadyGone;
                        break;
                    }
                    Err(Attempt::Fatal(e)) => {
                        self.emit(Progress::PodFailed {
                            pod: p.pod.clone(),
                            error: e.clone(),
                        });
                        result.error = Some(e);
                        return result;
                    }
                    Err(Attempt::Retry {
                        message,
                        retry_after,
                        blocked,
                    }) => {
                        let due = deadlines.now();
                        let clip_in = due.clip.map(|d| {
                            let threshold = d
                                .checked_sub(SignedDuration::from_secs(own_grace))
                                .unwrap_or(d);
                            time_until(threshold)
                        });
                        let remaining = match (clip_in, due.give_up.map(time_until)) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        let delay = self
                            .backoff
                            .delay(
                                result.attempts.saturating_sub(1),
                                retry_after,
                                remaining,
                                &mut rng,
                            )
                            .unwrap_or(Duration::ZERO);
                        let line = super::budget::retry_message(&p.pod, delay, &message);
                        self.emit(Progress::Blocked {
                            pod: p.pod.clone(),
                            message: line.clone(),
                        });
                        if blocked && !blocked_reported {
                            blocked_reported = true;
                            self.event(
                                pod_ref(&p.pod.namespace, &p.pod.name, p.uid.as_deref()),
                                Reason::EvictionBlocked,
                                message,
                            )
                            .await;
                        }
                        // A budget that refused is watched: the retry goes as soon as a
                        // budget covering the pod has room again (a replacement became
                        // Ready), the backoff only bounding the wait
                        // (`docs/drain-semantics.md#evictions-and-retries`). The first
                        // refusal starts the watch; its first list counts as a change.
                        let room = blocked.then(|| {
                            room.unwrap_or_else(|| self.budgets.get(&self.client).subscribe())
                        });
                        let has_room = async {
                            match room {
                                Some(r) => r.wait(&p.pod.namespace, &p.labels).await,
                                None => std::future::pending().await,
                            }
                        };
                        // A deadline that moved (a later notice, the hook's real timeout)
                        // is acted on at once, not after the backoff.
                        moved.borrow_and_update();
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = moved.changed() => {}
                            () = has_room => {
                                // Spread out: every drain blocked by this budget heard it.
                                tokio::time::sleep(ROOM_JITTER.mul_f64(rng.f64())).await;
                            }
                        }
                    }
                }
            }
        }
        if matches!(
            result.action,
            PodAction::Evicted | PodAction::Deleted | PodAction::DeletedClipped
        ) {
            // Asked to go: on the Node's record, so a run taking over reports it.
            at.ledger.record(&result, false);
        }
        if result.action != PodAction::AlreadyGone {
            let gone = self.wait_gone(req, &p, &uid, &api, at, &mut result).await;
            // Graceful or not, from how the pod was seen to end (`ended`): one that stopped by
            // itself within a clipped or shortened grace period was not cut short; one killed
            // when its grace period ran out was, clipped or not. A finished pod had ended
            // before the drain.
            let departed = tracker.departed(&uid).filter(|_| gone && !p.finished);
            match departed.as_ref().map(ended) {
                Some(Ended::ByItself) => {
                    if matches!(
                        result.action,
                        PodAction::DeletedClipped | PodAction::AlreadyTerminating
                    ) {
                        result.not_graceful = None;
                    }
                }
                Some(Ended::Killed(how)) => {
                    result.not_graceful = Some(match result.not_graceful.take() {
                        Some(clipped) => format!("{clipped}; {how}"),
                        None => how,
                    });
                }
                Some(Ended::Unknown) | None => {}
            }
            if !gone {
                if result.action != PodAction::AlreadyTerminating {
                    result
                        .not_graceful
                        .get_or_insert_with(|| "still terminating when the deadline passed".into());
                }
                result.action = PodAction::Remained;
                if result.not_graceful.is_none() {
                    result.not_graceful = Some("still on the node when the deadline passed".into());
                }
                return result;
            }
        }
        result.gone_after_ms = Some(started.elapsed().as_millis() as u64);
        if result.action != PodAction::AlreadyGone {
            self.emit(Progress::Gone {
                pod: p.pod.clone(),
                action: result.action,
            });
            if matches!(
                result.action,
                PodAction::Evicted | PodAction::Deleted | PodAction::DeletedClipped
            ) {
                self.event(
                    pod_ref(&p.pod.namespace, &p.pod.name, p.uid.as_deref()),
                    Reason::PodEvicted,
                    format!(
                        "{} from node {} ({})",
                        if result.action == PodAction::Evicted {
                            "evicted"
                        } else {
                            "deleted"
                        },
                        req.node,
                        req.cause
                    ),
                )
                .await;
            }
        }
        result
    }

    /// Waits for the pod's wave to open (`gate`), or for its own clip point — the deadline
    /// minus its grace period — whichever comes first: past that, waiting longer for the waves
    /// before it would cut its own shutdown short.
    pub(super) async fn wait_turn(
        &self,
        p: &PlannedPod,
        mut gate: tokio::sync::watch::Receiver<bool>,
        deadlines: &DeadlineFeed,
    ) {
        let mut moved = deadlines.subscribe();
        loop {
            if *gate.borrow_and_update() {
                return;
            }
            moved.borrow_and_update();
            let turn = deadlines.now().clip.map(|c| {
                c.checked_sub(SignedDuration::from_secs(p.grace_period_seconds))
                    .unwrap_or(c)
            });
            if turn.is_some_and(|t| t <= Timestamp::now()) {
                self.emit(Progress::Warning(format!(
                    "pod {} starts before the waves ahead of it are done: its grace period would otherwise outlast the deadline",
                    p.pod
                )));
                return;
            }
            let at_turn = async {
                match turn {
                    Some(t) => tokio::time::sleep(time_until(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = gate.changed() => if r.is_err() { return },
                () = at_turn => {}
                _ = moved.changed() => {}
            }
        }
    }

    /// A pod already terminating whose deletion ends past the clip point gets a shorter grace
    /// period (the API server only ever shortens a pending deletion: [graceful termination](https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination)).
    #[allow(clippy::too_many_arguments)]
    async fn reclip(
        &self,
        api: &Api<Pod>,
        p: &PlannedPod,
        uid: &str,
        tracker: &PodTracker,
        permits: &tokio::sync::Semaphore,
        deadlines: &DeadlineFeed,
        result: &mut PodResult,
    ) {
        let deletion = tracker
            .get(uid)
            .and_then(|pod| pod.metadata.deletion_timestamp)
            .map(|t| t.0);
        if let (Some(d), Some(ts)) = (deadlines.now().clip, deletion) {
            if let Some(grace) = reclip_terminating(Timestamp::now(), d, ts) {
                let _ = {
                    let _permit = permits.acquire().await;
                    evict::delete(api, p, uid, Some(grace), deadlines.retry_until()).await
                };
                result.grace_period_seconds = Some(grace);
                result.not_graceful = Some(format!(
                    "grace period shortened to {grace}s: the instance goes at the deadline"
                ));
            }
        }
    }

    /// Waits until the pod is gone; `false` when the drain's deadline (or the skip timeout)
    /// came first. A deadline that moves earlier while the pod terminates shortens its grace.
    async fn wait_gone(
        &self,
        req: &DrainRequest,
        p: &PlannedPod,
        uid: &str,
        api: &Api<Pod>,
        at: &PodContext<'_>,
        result: &mut PodResult,
    ) -> bool {
        let tracker = at.tracker;
        let mut moved = at.deadlines.subscribe();
        loop {
            moved.borrow_and_update();
            let give_up = at.deadlines.now().give_up;
            let tick = async {
                match give_up {
                    Some(g) => tokio::time::sleep(time_until(g)).await,
                    None => std::future::pending().await,
                }
            };
            let skip_check = async {
                match req.options.skip_wait_for_delete_timeout {
                    Some(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    None => std::future::pending().await,
                }
            };
            // Notice-driven: the instance goes anyway, so a pod whose deletion nothing can
            // confirm must not hold it until the hook's global timeout.
            let stuck_check = async {
                match at.deadlines.now().instance {
                    Some(_) => tokio::time::sleep(STUCK_CHECK_EVERY).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                // A pod already gone counts as gone even when the deadline has passed too.
                biased;
                _ = tracker.gone(uid) => return true,
                _ = tick => return false,
                r = moved.changed() => {
                    if r.is_ok() {
                        self.reclip(api, p, uid, tracker, at.permits, at.deadlines, result).await;
                    }
                }
                _ = stuck_check => {
                    if let Some(why) = self.unconfirmable(uid, tracker, at.node).await {
                        self.emit(Progress::Warning(format!(
                            "pod {} {why}; not waiting for it any longer: the instance goes with it", p.pod)));
                        result.not_graceful = Some(format!("deletion not confirmed: {why}"));
                        return true;
                    }
                }
                _ = skip_check => {
                    if let (Some(limit), Some(pod)) = (req.options.skip_wait_for_delete_timeout, tracker.get(uid)) {
                        if let Some(ts) = pod.metadata.deletion_timestamp {
                            // kubectl: int(now - deletionTimestamp) > N, so a deletionTimestamp
                            // still in the future (within the grace period) never skips.
                            if Timestamp::now().duration_since(ts.0).as_secs() > limit.as_secs() as i64 {
                                self.emit(Progress::Warning(format!(
                                    "pod \"{}\" has DeletionTimestamp older than {} seconds, skipping", p.pod.name, limit.as_secs())));
                                return true;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// At most this long, at random, between a budget's room and the retry it wakes: the drains
/// blocked by one budget do not all ask at the same instant, and a room a few milliseconds
/// stale costs one more refusal at most.
const ROOM_JITTER: Duration = Duration::from_millis(200);

/// How a pod that went had ended, as far as its last state shows.
#[derive(Debug, PartialEq)]
enum Ended {
    /// Its containers exited by themselves, or it went before its deletion time.
    ByItself,
    /// It was killed when its grace period ran out (why, for the report).
    Killed(String),
    /// Nothing says (no container states, no grace period).
    Unknown,
}

/// How a pod ended, from observed facts only: first its kubelet's final container states (a
/// container killed at the end of its grace period exits 137, SIGKILL, the kubelet reporting
/// it before removing the pod); failing those, when it went against its deletionTimestamp
/// (the API server sets it to the delete's time plus the grace period, and the kubelet kills
/// the pod then): before it, the pod stopped by itself.
fn ended(d: &super::tracker::Departed) -> Ended {
    let meta = &d.pod.metadata;
    let grace = meta.deletion_grace_period_seconds.unwrap_or(0);
    let statuses = d
        .pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    let terminated: Vec<_> = statuses
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c.name.as_str(),
                        c.state.as_ref().and_then(|s| s.terminated.as_ref()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some((name, t)) = terminated.iter().find_map(|(n, t)| {
        t.filter(|t| t.exit_code == 137 || t.signal == Some(9))
            .map(|t| (n, t))
    }) {
        let reason = t.reason.as_deref().unwrap_or("Error");
        return Ended::Killed(if reason == "OOMKilled" {
            format!("container {name} was OOM-killed while stopping")
        } else {
            format!(
                "SIGKILLed when its {grace}s grace period ran out (container {name} exited 137)"
            )
        });
    }
    if !terminated.is_empty() && terminated.iter().all(|(_, t)| t.is_some()) {
        return Ended::ByItself;
    }
    let Some(deletion) = meta.deletion_timestamp.as_ref().map(|t| t.0) else {
        return Ended::Unknown;
    };
    if grace <= 0 {
        return Ended::Unknown;
    }
    if d.at < deletion {
        Ended::ByItself
    } else {
        Ended::Killed(format!(
            "killed when its {grace}s grace period ran out (still running at its deletion time {deletion})"
        ))
    }
}

/// How often a notice-driven drain checks whether a terminating pod can still be confirmed gone.
const STUCK_CHECK_EVERY: Duration = Duration::from_secs(2);
/// Past its deletion time (deletionTimestamp = the delete + its grace) plus this, a pod that is
/// still there on a NotReady node, or held by finalizers, is not coming off by itself.
const STUCK_AFTER: SignedDuration = SignedDuration::from_secs(5);

/// The Ready condition of the node being drained, read at most every couple of seconds however
/// many pods ask.
pub(super) struct NodeHealth {
    api: Api<k8s_openapi::api::core::v1::Node>,
    name: String,
    watched: Option<crate::cluster::index::NodeIndex>,
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, bool)>>,
}

impl NodeHealth {
    pub(super) fn new(
        client: kube::Client,
        name: &str,
        watched: Option<crate::cluster::index::NodeIndex>,
    ) -> Self {
        NodeHealth {
            api: Api::all(client),
            name: name.to_string(),
            watched,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the node's kubelet reports Ready (an unreadable node counts as Ready: no
    /// conclusion from a failed GET).
    async fn ready(&self) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ready)) = *last {
            if at.elapsed() < STUCK_CHECK_EVERY {
                return ready;
            }
        }
        let ready_of = |n: &k8s_openapi::api::core::v1::Node| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_none_or(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        // The process's watch of the Nodes, when it keeps one; else a GET.
        let watched = self.watched.as_ref().and_then(|i| i.get(&self.name));
        let ready = match watched {
            Some(n) => ready_of(&n),
            None => match self.api.get(&self.name).await {
                Ok(n) => ready_of(&n),
                Err(_) => true,
            },
        };
        *last = Some((tokio::time::Instant::now(), ready));
        ready
    }
}

impl Drainer {
    /// Why a pod past its deletion time cannot be confirmed gone: finalizers that nobody
    /// removes, or a node whose kubelet is gone. `None` while it may still leave by itself.
    async fn unconfirmable(
        &self,
        uid: &str,
        tracker: &PodTracker,
        node: &NodeHealth,
    ) -> Option<String> {
        let pod = tracker.get(uid)?;
        let deleted = pod.metadata.deletion_timestamp.as_ref()?.0;
        if Timestamp::now() < deleted.checked_add(STUCK_AFTER).unwrap_or(deleted) {
            return None;
        }
        if let Some(f) = pod.metadata.finalizers.as_ref().filter(|f| !f.is_empty()) {
            return Some(format!("is held by finalizers {}", f.join(", ")));
        }
        if !node.ready().await {
            return Some("is on a NotReady node: no kubelet confirms its deletion".into());
        }
        None
    }
}

/// What every pod of a drain shares.
#[derive(Clone, Copy)]
pub(super) struct PodContext<'a> {
    pub(super) tracker: &'a PodTracker,
    pub(super) permits: &'a tokio::sync::Semaphore,
    pub(super) deadlines: &'a DeadlineFeed,
    pub(super) node: &'a NodeHealth,
    pub(super) started: tokio::time::Instant,
    pub(super) ledger: &'a super::report::Ledger,
}

#[cfg(test)]
mod tests {
    use super::{ended, Ended};
    use crate::cluster::drain::tracker::Departed;
    use jiff::{SignedDuration, Timestamp};
    use serde_json::json;

    fn departed(pod: serde_json::Value, gone_after_deletion_s: i64) -> Departed {
        let pod = serde_json::from_value(pod).unwrap_or_default();
        let deletion = Timestamp::from_second(1_800_000_000).unwrap_or_default();
        Departed {
            pod,
            at: deletion + SignedDuration::from_secs(gone_after_deletion_s),
        }
    }

    fn pod(grace: i64, states: serde_json::Value) -> serde_json::Value {
        json!({
            "metadata": {"name": "p", "deletionTimestamp": "2027-01-15T08:00:00Z",
                "deletionGracePeriodSeconds": grace},
            "status": {"containerStatuses": states},
        })
    }

    fn terminated(name: &str, code: i32, reason: &str) -> serde_json::Value {
        json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason}}})
    }

    fn running(name: &str) -> serde_json::Value {
        json!({"name": name, "image": "i", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}})
    }

    #[test]
    fn a_container_that_exited_137_was_killed_whenever_the_pod_went() {
        let p = pod(
            7,
            json!([
                terminated("app", 0, "Completed"),
                terminated("sidecar", 137, "Error")
            ]),
        );
        match ended(&departed(p, -5)) {
            Ended::Killed(why) => {
                assert!(
                    why.contains("SIGKILLed when its 7s grace period ran out"),
                    "{why}"
                );
                assert!(why.contains("sidecar"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn containers_that_all_exited_otherwise_stopped_by_themselves() {
        let p = pod(
            7,
            json!([
                terminated("app", 0, "Completed"),
                terminated("web", 143, "Error")
            ]),
        );
        // Even at the deletion time: the states say how it ended.
        assert_eq!(ended(&departed(p, 1)), Ended::ByItself);
    }

    #[test]
    fn without_container_states_the_deletion_time_decides() {
        let p = pod(30, json!([running("app")]));
        assert_eq!(ended(&departed(p.clone(), -3)), Ended::ByItself);
        assert!(matches!(ended(&departed(p.clone(), 0)), Ended::Killed(_)));
        assert!(matches!(ended(&departed(p, 1)), Ended::Killed(_)));
        // No statuses at all (KWOK without a status, a pending pod).
        let bare = json!({"metadata": {"name": "p", "deletionTimestamp": "2027-01-15T08:00:00Z",
            "deletionGracePeriodSeconds": 30}});
        assert_eq!(ended(&departed(bare, -1)), Ended::ByItself);
    }

    #[test]
    fn a_deletion_without_grace_says_nothing() {
        let p = pod(0, json!([running("app")]));
        assert_eq!(ended(&departed(p, 1)), Ended::Unknown);
        let none = json!({"metadata": {"name": "p"}});
        assert_eq!(ended(&departed(none, 1)), Ended::Unknown);
    }
}
