//! A running drain's deadline, which can move. The notices for a node can arrive one after the
//! other — a Spot warning (two minutes) while a lifecycle drain (hours) runs — and the hook's
//! real timeout can become known only after the drain started: the earliest live deadline of
//! any notice wins, and reaches the pods being drained at once (docs/reliability.md).
//!
//! Three inputs feed it: the request's own deadline (fixed, or updated by the caller through
//! [`DrainRequest::deadline_updates`](super::DrainRequest)), what the drain inherited from
//! the Node when it claimed it, and an urgent deadline another replica records on the Node
//! while this one owns the drain. `--timeout` only bounds how long the drain waits: it never
//! clips a grace period or bypasses a budget (kubectl's meaning of the flag).

use jiff::{SignedDuration, Timestamp};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

use crate::cluster::nodes::earliest;
use crate::cluster::retry::Bound;

/// Where a drain stands against time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Deadlines {
    /// When the instance goes (the earliest live notice deadline): the drain's end.
    pub instance: Option<Timestamp>,
    /// When the drain stops waiting: the instance's end or `--timeout`, whichever is first.
    pub give_up: Option<Timestamp>,
    /// The instance's end minus the safety margin: past `clip - grace`, a pod is deleted with
    /// its grace period clipped instead of evicted. Never set by `--timeout` alone.
    pub clip: Option<Timestamp>,
}

/// The clip point for an instance deadline seen at `now`: the margin, but never more than a
/// quarter of the time left, so a close deadline still leaves most of itself to the pods.
pub fn clip_point(deadline: Timestamp, margin: Duration, now: Timestamp) -> Timestamp {
    let left = Duration::try_from(deadline.duration_since(now)).unwrap_or(Duration::ZERO);
    let margin = margin.min(left / 4);
    deadline
        .checked_sub(SignedDuration::try_from(margin).unwrap_or_default())
        .unwrap_or(deadline)
}

#[derive(Debug, Default)]
struct Inputs {
    requested: Option<Timestamp>,
    inherited: Option<Timestamp>,
    urgent: Option<Timestamp>,
}

/// The merged deadline of one drain, published to every pod of it.
#[derive(Debug)]
pub(super) struct DeadlineFeed {
    inputs: Mutex<Inputs>,
    timeout: Option<Timestamp>,
    margin: Duration,
    tx: watch::Sender<Deadlines>,
}

impl DeadlineFeed {
    pub(super) fn new(
        requested: Option<Timestamp>,
        inherited: Option<Timestamp>,
        timeout: Option<Timestamp>,
        margin: Duration,
    ) -> Self {
        let (tx, _) = watch::channel(Deadlines::default());
        let feed = DeadlineFeed {
            inputs: Mutex::new(Inputs {
                requested,
                inherited,
                urgent: None,
            }),
            timeout,
            margin,
            tx,
        };
        feed.publish();
        feed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inputs> {
        self.inputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes and publishes; returns whether the instance deadline changed.
    fn publish(&self) -> bool {
        let instance = {
            let i = self.lock();
            earliest(earliest(i.requested, i.inherited), i.urgent)
        };
        let now = Timestamp::now();
        let give_up = earliest(instance, self.timeout);
        self.tx.send_if_modified(|d| {
            if d.instance == instance && d.give_up == give_up {
                return false;
            }
            *d = Deadlines {
                instance,
                give_up,
                clip: instance.map(|t| clip_point(t, self.margin, now)),
            };
            true
        })
    }

    /// The request's deadline moved (raised when the hook's real timeout became known, lowered
    /// by a later notice). Returns whether the drain's deadline changed.
    pub(super) fn set_requested(&self, at: Option<Timestamp>) -> bool {
        self.lock().requested = at;
        self.publish()
    }

    /// Another replica asked for an earlier deadline (read from the Node). Only ever lowers.
    pub(super) fn set_urgent(&self, at: Option<Timestamp>) -> bool {
        {
            let mut i = self.lock();
            if at.is_none() || at == i.urgent {
                return false;
            }
            i.urgent = earliest(i.urgent, at);
        }
        self.publish()
    }

    /// The deadlines now.
    pub(super) fn now(&self) -> Deadlines {
        *self.tx.borrow()
    }

    /// A receiver that wakes on every change.
    pub(super) fn subscribe(&self) -> watch::Receiver<Deadlines> {
        self.tx.subscribe()
    }

    /// How long the drain's API calls are retried now (`docs/drain-semantics.md#api-errors`):
    /// until its clip point or `--timeout`, whichever comes first, else for the default budget.
    pub(super) fn retry_bound(&self) -> Bound {
        let d = self.now();
        Bound::deadline(earliest(d.clip, d.give_up))
    }

    /// When [`Self::retry_bound`] ends.
    pub(super) fn retry_until(&self) -> tokio::time::Instant {
        self.retry_bound().ends()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now: Timestamp, s: i64) -> Timestamp {
        now.checked_add(SignedDuration::from_secs(s)).unwrap_or(now)
    }

    #[test]
    fn the_earliest_notice_deadline_wins_and_the_timeout_never_clips() {
        let now = Timestamp::now();
        let feed = DeadlineFeed::new(
            Some(at(now, 3600)),
            None,
            Some(at(now, 60)),
            Duration::from_secs(10),
        );
        let d = feed.now();
        assert_eq!(d.instance, Some(at(now, 3600)));
        assert_eq!(d.give_up, Some(at(now, 60)), "--timeout bounds the wait");
        assert!(
            d.clip.is_some_and(|c| c > at(now, 3000)),
            "but clips only by the instance's end"
        );
        // A later notice with an earlier deadline lowers it; another replica's urgent one too.
        assert!(feed.set_urgent(Some(at(now, 120))));
        assert_eq!(feed.now().instance, Some(at(now, 120)));
        assert!(
            !feed.set_urgent(Some(at(now, 600))),
            "urgent deadlines only lower"
        );
        // The hook's real timeout, longer than assumed, raises the request's own deadline, but
        // the urgent one still holds.
        assert!(!feed.set_requested(Some(at(now, 172_800))));
        assert_eq!(feed.now().instance, Some(at(now, 120)));
    }

    #[test]
    fn a_raised_deadline_moves_the_clip_point_with_it() {
        let now = Timestamp::now();
        let feed = DeadlineFeed::new(Some(at(now, 3000)), None, None, Duration::from_secs(10));
        assert!(feed.set_requested(Some(at(now, 172_800))));
        let d = feed.now();
        assert_eq!(d.give_up, Some(at(now, 172_800)));
        assert!(d.clip.is_some_and(|c| c > at(now, 172_000)));
        let none = DeadlineFeed::new(None, None, None, Duration::from_secs(10));
        assert_eq!(none.now(), Deadlines::default());
    }

    #[test]
    fn the_margin_is_at_most_a_quarter_of_the_time_left() {
        let now = Timestamp::now();
        assert_eq!(
            clip_point(at(now, 8), Duration::from_secs(10), now),
            at(now, 6)
        );
        assert_eq!(
            clip_point(at(now, 600), Duration::from_secs(10), now),
            at(now, 590)
        );
        assert_eq!(
            clip_point(at(now, -5), Duration::from_secs(10), now),
            at(now, -5)
        );
    }
}
