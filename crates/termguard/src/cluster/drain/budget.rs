//! The evictor's pure arithmetic: grace periods against the deadline, retry delays for blocked
//! evictions, and what an eviction error means (`docs/drain-semantics.md#evictions-and-retries`,
//! `docs/drain-semantics.md#deadline-clipping`).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use kube::core::Status;

use super::plan::NamespacedName;

/// The pod grace period when neither `--grace-period` nor the pod sets one
/// (`docs/drain-semantics.md#grace-periods`).
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// The grace period a pod gets: `--grace-period` if ≥ 0, else its own, else 30 s
/// (`docs/drain-semantics.md#deadline-clipping`).
pub fn effective_grace_period(flag: Option<i64>, pod: &Pod) -> i64 {
    match flag {
        Some(seconds) if seconds >= 0 => seconds,
        _ => pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .filter(|seconds| *seconds >= 0)
            .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS),
    }
}

/// How a pod leaves, given the time left before the deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraceDecision {
    /// Its grace period ends before the deadline: evict it normally, PDBs respected.
    Fits,
    /// It would not: DELETE it now with this shorter grace period (≥ 1), bypassing PDBs, so it
    /// still gets SIGTERM and preStop before the instance dies
    /// (`docs/drain-semantics.md#deadline-clipping`).
    Clip {
        /// `max(floor(deadline - now), 1)`.
        grace_period_seconds: i64,
    },
}

/// When `now > deadline - grace`, clip the grace period to the whole seconds left.
///
/// `deadline` is the hard stop minus the safety margin; the caller subtracts the margin.
pub fn clip_grace_period(now: Timestamp, deadline: Timestamp, grace_seconds: i64) -> GraceDecision {
    if deadline.duration_since(now) >= SignedDuration::from_secs(grace_seconds) {
        GraceDecision::Fits
    } else {
        GraceDecision::Clip {
            grace_period_seconds: seconds_left(now, deadline),
        }
    }
}

/// A pod already terminating past the deadline gets DELETE with this shorter grace.
///
/// The API server only ever shortens a pending deletion (`docs/drain-semantics.md#grace-periods`),
/// so repeating this is safe.
pub fn reclip_terminating(
    now: Timestamp,
    deadline: Timestamp,
    deletion_timestamp: Timestamp,
) -> Option<i64> {
    (deletion_timestamp > deadline).then(|| seconds_left(now, deadline))
}

/// `max(floor(deadline - now), 1)`: never 0, which would remove the pod from the API at once
/// while its containers still run (`docs/drain-semantics.md#grace-periods`; Karpenter's
/// `forceDelete` clamps the same way).
pub fn seconds_left(now: Timestamp, deadline: Timestamp) -> i64 {
    // as_secs truncates toward zero, which is floor for the positive values that matter here.
    deadline.duration_since(now).as_secs().max(1)
}

/// Capped exponential backoff with jitter for evictions a PDB blocks
/// (`docs/drain-semantics.md#evictions-and-retries`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// First delay, and the floor of every delay: kubectl's fixed 5 s retry.
    pub initial: Duration,
    /// Cap of the exponential part, before jitter.
    pub max: Duration,
    /// Up to this fraction of the delay is added at random, so parallel retries spread out.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        // 5 s first as kubectl; 30 s cap so a budget that frees up is noticed well inside a
        // 2-minute spot window.
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// Delay before retry `attempt` (0 for the first), or `None` when no time is left.
    ///
    /// `max(retry_after, min(initial·2^attempt, max)·(1 + jitter·r))`, then cut to `remaining`.
    pub fn delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        remaining: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Option<Duration> {
        let exponential = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max);
        let jitter = exponential.mul_f64(self.jitter.clamp(0.0, 1.0) * rng.f64());
        let delay = (exponential + jitter).max(retry_after.unwrap_or(Duration::ZERO));
        match remaining {
            Some(left) if left.is_zero() => None,
            Some(left) => Some(delay.min(left)),
            None => Some(delay),
        }
    }
}

/// kubectl's line for a retried eviction (`docs/drain-semantics.md#evictions-and-retries`).
pub fn retry_message(pod: &NamespacedName, delay: Duration, error: &str) -> String {
    format!(
        "error when evicting pods/\"{}\" -n \"{}\" (will retry after {}): {error}",
        pod.name,
        pod.namespace,
        go_duration(delay)
    )
}

/// A duration as Go prints it (`5s`, `7.25s`, `1m30s`, `250ms`), to the millisecond.
pub fn go_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (secs, frac) = (millis / 1000, millis % 1000);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let s = if frac == 0 {
        s.to_string()
    } else {
        format!("{s}.{frac:03}").trim_end_matches('0').to_owned()
    };
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// What a failed eviction means for the drain (`docs/drain-semantics.md#evictions-and-retries`;
/// the bodies: `docs/drain-semantics.md#the-eviction-api`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionErrorClass {
    /// 404, or 409 from the UID precondition (the name belongs to a new pod): this pod is gone.
    Gone,
    /// A PodDisruptionBudget says no (429), or several budgets select the pod (the 500):
    /// retry with backoff until the deadline and emit an EvictionBlocked event.
    Blocked {
        /// The server's `retryAfterSeconds` (10 for a budget not yet observed).
        retry_after: Option<Duration>,
        /// The 500 "more than one PodDisruptionBudget": an operator must fix the budgets;
        /// termguard retries instead of failing the pod, unlike kubectl.
        multiple_budgets: bool,
    },
    /// 403 with cause NamespaceTerminating: wait if the pod is terminating, else retry (kubectl).
    NamespaceTerminating,
    /// Transient: throttling 429, 5xx, 504 budget conflicts, 403 from a broken budget.
    Retryable {
        /// The server's `retryAfterSeconds`, if any.
        retry_after: Option<Duration>,
    },
    /// Retrying will not help (400, 401, RBAC 403, 422, ...): fail this pod, keep draining others.
    Fatal,
}

/// The message of the multiple-PDB 500, which has neither reason nor details.
const MULTIPLE_BUDGETS: &str = "more than one PodDisruptionBudget";

/// Classifies an eviction's error Status by code, then reason, cause and message where the
/// server leaves no other mark.
pub fn classify_eviction_error(status: &Status) -> EvictionErrorClass {
    let details = status.details.as_ref();
    let has_cause =
        |reason: &str| details.is_some_and(|d| d.causes.iter().any(|c| c.reason == reason));
    let retry_after = details
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(u64::from(s)));
    let message = status.message.as_str();
    if message.contains(MULTIPLE_BUDGETS) {
        return EvictionErrorClass::Blocked {
            retry_after,
            multiple_budgets: true,
        };
    }
    match code_of(status) {
        404 | 409 => EvictionErrorClass::Gone,
        429 if has_cause("DisruptionBudget") || message.contains("disruption budget") => {
            EvictionErrorClass::Blocked {
                retry_after,
                multiple_budgets: false,
            }
        }
        403 if has_cause("NamespaceTerminating") => EvictionErrorClass::NamespaceTerminating,
        403 if message.contains("pdb disruptions allowed is negative")
            || message.contains("DisruptedPods map too big") =>
        {
            EvictionErrorClass::Retryable { retry_after }
        }
        429 | 500 | 502 | 503 | 504 => EvictionErrorClass::Retryable { retry_after },
        _ => EvictionErrorClass::Fatal,
    }
}

/// The HTTP code, or the one the reason implies when the body left `code` out.
pub(crate) fn code_of(status: &Status) -> u16 {
    if status.code != 0 {
        return status.code;
    }
    match status.reason.as_str() {
        "NotFound" => 404,
        "Conflict" => 409,
        "TooManyRequests" => 429,
        "Forbidden" => 403,
        "Timeout" => 504,
        "InternalError" | "ServerTimeout" => 500,
        "ServiceUnavailable" => 503,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
