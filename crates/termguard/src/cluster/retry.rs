//! Retrying the drain's API calls through a flaky API server
//! (`docs/drain-semantics.md#api-errors`).
//!
//! A drain makes dozens of API calls — cordon, taint, label, progress annotations, pod lists,
//! DaemonSet lookups, clipped deletes — and one 500 or throttled 429 among them must not end
//! it: the instance goes anyway, drained or not. Each call goes through [`call`], which tries
//! again on a transient error ([`classify`]: 429, 5xx, a timeout, a broken connection) with
//! capped exponential backoff and jitter ([`next_delay`]), for as long as its [`Bound`]
//! allows, and at once reports a permanent one (403, 404, 422, any other 4xx) with what it
//! means ([`explain`]). Evictions are not retried here: a refused eviction is the engine's own
//! loop (`docs/drain-semantics.md#evictions-and-retries`).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use jiff::Timestamp;
use tokio::time::Instant;

/// How long a call is retried when the drain has neither a deadline nor a `--timeout`. An API
/// server restarting behind its load balancer, or API Priority and Fairness shedding load, is
/// usually back within tens of seconds; an API server still failing after a minute is down,
/// and a drain is better off failing — with the error in its report, the node staying
/// cordoned, the caller free to try again — than hanging with no end.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(60);

/// Every call is tried at least this often, even once its bound has passed: a drain whose
/// deadline is already behind it (a late notice) still gets its clipped deletes through one
/// failed request.
pub const MIN_TRIES: u32 = 3;

/// The first retry's delay (before jitter); each next one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(200);

/// Cap of the exponential delay: an API server that comes back is noticed within seconds.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Far enough to stand for "no end" where a deadline cannot be represented (a century).
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What an error means for the call that got it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Worth trying again: throttling (429), a server-side failure (5xx but 501), a timeout,
    /// a connection refused or reset.
    Transient {
        /// The server's `details.retryAfterSeconds` (sent with a 429), if any.
        retry_after: Option<Duration>,
    },
    /// Trying again gives the same answer (401, 403, 404, 409, 422, any other 4xx, a request
    /// that could not be built or a response that could not be read).
    Permanent,
}

/// The HTTP code of an API error, or the one its reason implies when the body left `code` out.
pub fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(crate::cluster::drain::budget::code_of(s)),
        _ => None,
    }
}

/// Whether `e` is worth trying again.
pub fn classify(e: &kube::Error) -> Class {
    match e {
        kube::Error::Api(s) => {
            let retry_after = s
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s)));
            match crate::cluster::drain::budget::code_of(s) {
                429 => Class::Transient { retry_after },
                501 => Class::Permanent,
                500..=599 => Class::Transient { retry_after },
                _ => Class::Permanent,
            }
        }
        // The connection: refused, reset, closed early, timed out (hyper's and tower's
        // errors, a watch or body read cut short).
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            Class::Transient { retry_after: None }
        }
        _ => Class::Permanent,
    }
}

/// The delay before the next try, after `tries` failed ones (≥ 1), with `left` until the
/// call's bound; `None` when the call should give up.
///
/// The exponential part is `e = min(FIRST_DELAY·2^(tries-1), MAX_DELAY)`. The delay is drawn
/// from `[f, f + e/2]` with `f = max(retry_after, e/2)`: never sooner than the server asked,
/// and spread at random so that a hundred drains that failed together do not come back
/// together. It is cut to `left`, so the last try falls on the bound; once the bound has
/// passed, a call that has not had [`MIN_TRIES`] yet waits at most [`FIRST_DELAY`].
pub fn next_delay(
    tries: u32,
    retry_after: Option<Duration>,
    left: Duration,
    min_tries: u32,
    rng: &mut fastrand::Rng,
) -> Option<Duration> {
    if left.is_zero() && tries >= min_tries {
        return None;
    }
    let exponential = FIRST_DELAY
        .saturating_mul(2u32.saturating_pow(tries.saturating_sub(1)))
        .min(MAX_DELAY);
    let half = exponential / 2;
    let floor = retry_after.unwrap_or(Duration::ZERO).max(half);
    let delay = floor + half.mul_f64(rng.f64());
    Some(if left.is_zero() {
        delay.min(FIRST_DELAY)
    } else {
        delay.min(left)
    })
}

/// How long a call may be retried: until an instant, and at least a number of tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    until: Instant,
    min_tries: u32,
}

impl Bound {
    /// Until `until`, and at least [`MIN_TRIES`] tries.
    pub fn until(until: Instant) -> Self {
        Bound {
            until,
            min_tries: MIN_TRIES,
        }
    }

    /// Until `deadline` (the drain's clip point or `--timeout`) when there is one, else for
    /// [`DEFAULT_BUDGET`] from now; at least [`MIN_TRIES`] tries.
    pub fn deadline(deadline: Option<Timestamp>) -> Self {
        let left = match deadline {
            Some(d) => {
                Duration::try_from(d.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
            }
            None => DEFAULT_BUDGET,
        };
        let now = Instant::now();
        // A deadline past what an Instant can hold is as good as none ending.
        Self::until(now.checked_add(left).unwrap_or(now + FAR))
    }

    /// [`DEFAULT_BUDGET`] from now.
    pub fn default_budget() -> Self {
        Self::deadline(None)
    }

    /// One try only: for callers that retry by themselves on their own schedule (the drain's
    /// lease renewal).
    pub fn once() -> Self {
        Bound {
            until: Instant::now(),
            min_tries: 1,
        }
    }

    /// The instant it ends.
    pub fn ends(&self) -> Instant {
        self.until
    }
}

/// One API call, as the log and an error name it: `patch nodes/node-a`, `list pods`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op<'a> {
    /// The Kubernetes verb (`get`, `list`, `patch`, `delete`): what the ClusterRole grants.
    pub verb: &'static str,
    /// The resource, plural (`nodes`, `pods`, `daemonsets`).
    pub resource: &'static str,
    /// The object's namespace, if it has one.
    pub namespace: Option<&'a str>,
    /// The object's name; empty for a list.
    pub name: &'a str,
}

impl<'a> Op<'a> {
    /// `verb` on the cluster-scoped `resource` named `name`.
    pub fn new(verb: &'static str, resource: &'static str, name: &'a str) -> Self {
        Op {
            verb,
            resource,
            namespace: None,
            name,
        }
    }

    /// The same in a namespace.
    pub fn in_namespace(mut self, namespace: &'a str) -> Self {
        self.namespace = Some(namespace);
        self
    }

    fn object(&self) -> String {
        let kind = self.resource.strip_suffix('s').unwrap_or(self.resource);
        match self.namespace {
            Some(ns) => format!("{kind} {ns}/{}", self.name),
            None => format!("{kind} {}", self.name),
        }
    }
}

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        match (self.namespace, self.name) {
            (_, "") => Ok(()),
            (Some(ns), name) => write!(f, " {ns}/{name}"),
            (None, name) => write!(f, "/{name}"),
        }
    }
}

/// What a permanent error means, in words an operator can act on.
pub fn explain(op: &Op<'_>, e: &kube::Error) -> String {
    let what = match code(e) {
        Some(401) => {
            "unauthorized: the API server does not accept termguard's credentials".to_string()
        }
        Some(403) => format!(
            "forbidden: the termguard ClusterRole does not grant {} on {} \
             (deploy/helm/termguard), or an admission webhook refused it",
            op.verb, op.resource
        ),
        Some(404) => format!("not found: the {} does not exist", op.object()),
        Some(409) => format!(
            "conflict: the {} changed while termguard was changing it",
            op.object()
        ),
        Some(422) => format!(
            "invalid: the API server rejected the change to the {} as invalid",
            op.object()
        ),
        Some(400) => "bad request: the API server could not accept the request".to_string(),
        Some(c) if (400..500).contains(&c) => {
            format!("the API server refused the request ({c}); trying again would not help")
        }
        Some(c) => format!("the API server failed the request ({c})"),
        None => "the request could not be made".to_string(),
    };
    format!("{what} [{}]", brief(e))
}

/// An error in one line: `500 InternalError: injected fault` for an API error (kube's own
/// rendering repeats the whole Status in debug form), kube's text otherwise.
pub fn brief(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let code = crate::cluster::drain::budget::code_of(s);
            match (s.reason.as_str(), s.message.as_str()) {
                ("", "") => format!("HTTP {code}"),
                ("", m) => format!("HTTP {code}: {m}"),
                (r, "") => format!("HTTP {code} {r}"),
                (r, m) => format!("HTTP {code} {r}: {m}"),
            }
        }
        e => e.to_string(),
    }
}

/// A call that failed for good: permanently, or still failing when its bound ran out.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    message: String,
    /// How often the call was tried.
    pub tries: u32,
    /// Whether the last error was permanent (not retried).
    pub permanent: bool,
    /// The last error.
    #[source]
    pub source: kube::Error,
}

impl Failed {
    /// A permanent error after `tries`.
    pub fn permanent(op: &Op<'_>, source: kube::Error, tries: u32) -> Self {
        Failed {
            message: explain(op, &source),
            tries,
            permanent: true,
            source,
        }
    }

    /// A transient error that outlasted the call's bound.
    pub fn exhausted(source: kube::Error, tries: u32, over: Duration) -> Self {
        Failed {
            message: format!(
                "the API server kept failing: {tries} tries over {:.1}s, the last: {}",
                over.as_secs_f64(),
                brief(&source)
            ),
            tries,
            permanent: false,
            source,
        }
    }

    /// The HTTP code of the last error, if the API server answered.
    pub fn code(&self) -> Option<u16> {
        code(&self.source)
    }
}

/// Runs `f` until it succeeds, fails permanently, or `bound` runs out (at least its minimum
/// number of tries), sleeping [`next_delay`] between tries and logging each retry.
///
/// `f` makes one request; an error it maps to `Ok` (a 404 that means done) is never retried.
/// Only idempotent requests belong here: a request that timed out may have been applied.
pub async fn call<T, F, Fut>(op: Op<'_>, bound: Bound, mut f: F) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let started = Instant::now();
    let mut rng = fastrand::Rng::new();
    let mut tries = 0u32;
    loop {
        tries += 1;
        let error = match f().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Class::Transient { retry_after } = classify(&error) else {
            return Err(Failed::permanent(&op, error, tries));
        };
        let left = bound.until.saturating_duration_since(Instant::now());
        let Some(delay) = next_delay(tries, retry_after, left, bound.min_tries, &mut rng) else {
            return Err(Failed::exhausted(error, tries, started.elapsed()));
        };
        tracing::warn!(call = %op, tries, retry_in = ?delay, left = ?left, error = %brief(&error),
            "API call failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str, retry_after: u32) -> kube::Error {
        let mut body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "boom", "reason": reason, "code": code,
        });
        if retry_after > 0 {
            body["details"] = serde_json::json!({"retryAfterSeconds": retry_after});
        }
        match serde_json::from_value::<Status>(body) {
            Ok(s) => kube::Error::Api(s.boxed()),
            Err(e) => kube::Error::SerdeError(e),
        }
    }

    fn transport() -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )))
    }

    #[test]
    fn throttling_server_failures_and_broken_connections_are_transient() {
        assert_eq!(
            classify(&api(429, "TooManyRequests", 3)),
            Class::Transient {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            classify(&api(429, "TooManyRequests", 0)),
            Class::Transient { retry_after: None }
        );
        for c in [500, 502, 503, 504] {
            assert_eq!(
                classify(&api(c, "InternalError", 0)),
                Class::Transient { retry_after: None },
                "{c}"
            );
        }
        assert_eq!(
            classify(&transport()),
            Class::Transient { retry_after: None }
        );
        // A body without a code: its reason says what it was.
        assert_eq!(
            classify(&api(0, "ServiceUnavailable", 0)),
            Class::Transient { retry_after: None }
        );
    }

    #[test]
    fn refusals_are_permanent() {
        for c in [400, 401, 403, 404, 405, 409, 410, 422, 501] {
            assert_eq!(classify(&api(c, "x", 0)), Class::Permanent, "{c}");
        }
        let unreadable = serde_json::from_str::<Status>("{").map_err(kube::Error::SerdeError);
        assert!(unreadable.is_err_and(|e| classify(&e) == Class::Permanent));
    }

    #[test]
    fn delays_double_up_to_the_cap_within_their_jitter_bounds() {
        let mut rng = fastrand::Rng::with_seed(7);
        let far = Duration::from_secs(3600);
        for tries in 1..=12u32 {
            let e = FIRST_DELAY
                .saturating_mul(2u32.pow(tries - 1))
                .min(MAX_DELAY);
            for _ in 0..200 {
                let d = next_delay(tries, None, far, MIN_TRIES, &mut rng).unwrap_or_default();
                assert!(
                    d >= e / 2 && d <= e,
                    "try {tries}: {d:?} outside [{:?}, {e:?}]",
                    e / 2
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_retries_that_failed_together() {
        let mut rng = fastrand::Rng::with_seed(1);
        let far = Duration::from_secs(3600);
        let delays: std::collections::BTreeSet<Duration> = (0..100)
            .filter_map(|_| next_delay(4, None, far, MIN_TRIES, &mut rng))
            .collect();
        assert!(delays.len() > 50, "only {} distinct delays", delays.len());
    }

    #[test]
    fn retry_after_is_a_floor_never_cut_by_the_backoff() {
        let mut rng = fastrand::Rng::with_seed(3);
        let far = Duration::from_secs(3600);
        let ra = Some(Duration::from_secs(7));
        for tries in 1..=6 {
            let d = next_delay(tries, ra, far, MIN_TRIES, &mut rng).unwrap_or_default();
            let e = FIRST_DELAY
                .saturating_mul(2u32.pow(tries - 1))
                .min(MAX_DELAY);
            assert!(d >= Duration::from_secs(7), "{d:?}");
            assert!(d <= Duration::from_secs(7) + e / 2, "{d:?}");
        }
        // A short Retry-After does not shorten our own backoff.
        let d = next_delay(6, Some(Duration::from_millis(10)), far, MIN_TRIES, &mut rng);
        assert!(d.is_some_and(|d| d >= MAX_DELAY / 2), "{d:?}");
    }

    #[test]
    fn the_bound_cuts_the_delay_and_ends_the_retries_after_the_minimum_tries() {
        let mut rng = fastrand::Rng::with_seed(5);
        let left = Duration::from_millis(30);
        // Cut to the time left: the last try falls on the bound, whatever Retry-After says.
        assert_eq!(
            next_delay(5, Some(Duration::from_secs(10)), left, MIN_TRIES, &mut rng),
            Some(left)
        );
        // Past the bound: no more tries once the minimum is reached...
        assert_eq!(
            next_delay(MIN_TRIES, None, Duration::ZERO, MIN_TRIES, &mut rng),
            None
        );
        // ...but short ones until then.
        for tries in 1..MIN_TRIES {
            let d = next_delay(
                tries,
                Some(Duration::from_secs(10)),
                Duration::ZERO,
                MIN_TRIES,
                &mut rng,
            );
            assert!(d.is_some_and(|d| d <= FIRST_DELAY), "{d:?}");
        }
        // One try only.
        assert_eq!(next_delay(1, None, Duration::ZERO, 1, &mut rng), None);
    }

    #[test]
    fn a_bound_without_a_deadline_is_the_default_budget() {
        let b = Bound::deadline(None);
        let left = b.ends().saturating_duration_since(Instant::now());
        assert!(left > DEFAULT_BUDGET - Duration::from_secs(5) && left <= DEFAULT_BUDGET);
        let past = Bound::deadline(Some(Timestamp::now() - jiff::SignedDuration::from_secs(30)));
        assert!(past.ends() <= Instant::now());
    }

    #[test]
    fn permanent_errors_say_what_they_mean() {
        let op = Op::new("patch", "nodes", "node-a");
        let forbidden = explain(&op, &api(403, "Forbidden", 0));
        assert!(
            forbidden
                .starts_with("forbidden: the termguard ClusterRole does not grant patch on nodes"),
            "{forbidden}"
        );
        assert!(
            forbidden.contains("HTTP 403 Forbidden: boom"),
            "{forbidden}"
        );
        let missing = explain(&op, &api(404, "NotFound", 0));
        assert!(
            missing.starts_with("not found: the node node-a does not exist"),
            "{missing}"
        );
        let pod = Op::new("delete", "pods", "web-1").in_namespace("apps");
        assert_eq!(pod.to_string(), "delete pods apps/web-1");
        let invalid = explain(&pod, &api(422, "Invalid", 0));
        assert!(
            invalid.starts_with(
                "invalid: the API server rejected the change to the pod apps/web-1 as invalid"
            ),
            "{invalid}"
        );
        assert_eq!(Op::new("list", "pods", "").to_string(), "list pods");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_retries_transient_errors_and_stops_at_a_permanent_one() {
        let tries = std::sync::atomic::AtomicU32::new(0);
        let op = Op::new("patch", "nodes", "n");
        let r = call(op, Bound::default_budget(), || async {
            match tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => Err(api(500, "InternalError", 0)),
                1 => Err(transport()),
                2 => Err(api(429, "TooManyRequests", 1)),
                _ => Ok(42),
            }
        })
        .await;
        assert_eq!(r.ok(), Some(42));
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 4);

        let tries = std::sync::atomic::AtomicU32::new(0);
        let r: Result<(), _> = call(op, Bound::default_budget(), || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(api(403, "Forbidden", 0))
        })
        .await;
        let e = r.err();
        assert!(
            e.as_ref().is_some_and(|e| e.permanent && e.tries == 1),
            "{e:?}"
        );
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_gives_up_at_its_bound_after_the_minimum_tries() {
        let start = Instant::now();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let op = Op::new("get", "daemonsets", "agent").in_namespace("kube-system");
        let r: Result<(), _> = call(op, Bound::default_budget(), || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(api(503, "ServiceUnavailable", 0))
        })
        .await;
        let e = r.err();
        assert!(e.as_ref().is_some_and(|e| !e.permanent), "{e:?}");
        // Paused time: the sleeps add up exactly.
        assert!(start.elapsed() >= DEFAULT_BUDGET, "{:?}", start.elapsed());
        assert!(start.elapsed() < DEFAULT_BUDGET + Duration::from_secs(1));
        let n = tries.load(std::sync::atomic::Ordering::SeqCst);
        assert!(n > MIN_TRIES, "{n}");
        assert!(e.is_some_and(|e| e.to_string().starts_with(&format!(
            "the API server kept failing: {n} tries over 60.0s"
        ))),);

        // A bound already passed: still the minimum number of tries.
        let tries = std::sync::atomic::AtomicU32::new(0);
        let r: Result<(), _> = call(op, Bound::until(Instant::now()), || async {
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(api(500, "InternalError", 0))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), MIN_TRIES);
        let once = std::sync::atomic::AtomicU32::new(0);
        let _ = call(op, Bound::once(), || async {
            once.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err::<(), _>(api(500, "InternalError", 0))
        })
        .await;
        assert_eq!(once.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
