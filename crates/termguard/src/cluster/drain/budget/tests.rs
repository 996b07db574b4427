use super::*;
use crate::cluster::drain::testutil::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn status(json: &str) -> Status {
    serde_json::from_str(json).unwrap()
}

#[test]
fn grace_period_option_wins_over_the_pods_own() {
    let pod = with_grace(pod("default", "p"), 120);
    assert_eq!(effective_grace_period(Some(10), &pod), 10);
    assert_eq!(effective_grace_period(Some(0), &pod), 0);
}

#[test]
fn negative_grace_period_option_means_the_pods_own_then_30s() {
    assert_eq!(
        effective_grace_period(Some(-1), &with_grace(pod("default", "p"), 120)),
        120
    );
    assert_eq!(effective_grace_period(None, &pod("default", "p")), 30);
}

#[test]
fn grace_period_that_ends_before_the_deadline_is_evicted_normally() {
    let now = ts("2025-01-01T12:00:00Z");
    assert_eq!(
        clip_grace_period(now, ts("2025-01-01T12:01:00Z"), 30),
        GraceDecision::Fits
    );
    // Ending exactly at the deadline still fits: the rule is `now > deadline - grace`.
    assert_eq!(
        clip_grace_period(now, ts("2025-01-01T12:00:30Z"), 30),
        GraceDecision::Fits
    );
}

#[test]
fn grace_period_that_outlasts_the_deadline_is_clipped_to_whole_seconds_left() {
    let now = ts("2025-01-01T12:00:00Z");
    assert_eq!(
        clip_grace_period(now, ts("2025-01-01T12:00:29.9Z"), 30),
        GraceDecision::Clip {
            grace_period_seconds: 29
        }
    );
    assert_eq!(
        clip_grace_period(now, ts("2025-01-01T12:00:10Z"), 3600),
        GraceDecision::Clip {
            grace_period_seconds: 10
        }
    );
}

#[test]
fn clipped_grace_period_is_never_0_even_at_or_past_the_deadline() {
    let now = ts("2025-01-01T12:00:00Z");
    for deadline in [
        "2025-01-01T12:00:00.5Z",
        "2025-01-01T12:00:00Z",
        "2025-01-01T11:59:00Z",
    ] {
        assert_eq!(
            clip_grace_period(now, ts(deadline), 30),
            GraceDecision::Clip {
                grace_period_seconds: 1
            },
            "{deadline}"
        );
    }
}

#[test]
fn zero_grace_period_fits_until_the_deadline_passes() {
    let now = ts("2025-01-01T12:00:00Z");
    assert_eq!(clip_grace_period(now, now, 0), GraceDecision::Fits);
    assert_eq!(
        clip_grace_period(now, ts("2025-01-01T11:59:59Z"), 0),
        GraceDecision::Clip {
            grace_period_seconds: 1
        }
    );
}

#[test]
fn terminating_pod_ending_after_the_deadline_is_reclipped() {
    let now = ts("2025-01-01T12:00:00Z");
    let deadline = ts("2025-01-01T12:00:20Z");
    assert_eq!(
        reclip_terminating(now, deadline, ts("2025-01-01T12:05:00Z")),
        Some(20)
    );
    assert_eq!(reclip_terminating(now, deadline, deadline), None);
    assert_eq!(
        reclip_terminating(now, deadline, ts("2025-01-01T12:00:05Z")),
        None
    );
}

#[test]
fn first_retry_waits_at_least_kubectls_5s() {
    let backoff = Backoff::default();
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..1000 {
        let d = backoff.delay(0, None, None, &mut rng).unwrap();
        assert!(d >= secs(5) && d <= secs(6), "{d:?}");
    }
}

#[test]
fn backoff_doubles_then_stays_under_the_cap_plus_jitter() {
    let backoff = Backoff::default();
    let mut rng = fastrand::Rng::with_seed(2);
    let floors = [5, 10, 20, 30, 30, 30];
    for (attempt, floor) in floors.into_iter().enumerate() {
        for _ in 0..200 {
            let d = backoff.delay(attempt as u32, None, None, &mut rng).unwrap();
            assert!(d >= secs(floor), "attempt {attempt}: {d:?}");
            assert!(d <= secs(floor).mul_f64(1.2), "attempt {attempt}: {d:?}");
        }
    }
}

#[test]
fn backoff_survives_huge_attempt_numbers() {
    let mut rng = fastrand::Rng::with_seed(3);
    let d = Backoff::default()
        .delay(u32::MAX, None, None, &mut rng)
        .unwrap();
    assert!(d >= secs(30) && d <= secs(36));
}

#[test]
fn jitter_spreads_delays_of_parallel_retries() {
    let backoff = Backoff::default();
    let mut rng = fastrand::Rng::with_seed(4);
    let delays: std::collections::BTreeSet<_> = (0..20)
        .map(|_| backoff.delay(1, None, None, &mut rng).unwrap())
        .collect();
    assert!(delays.len() > 10);
}

#[test]
fn zero_jitter_gives_exact_delays() {
    let backoff = Backoff {
        jitter: 0.0,
        ..Backoff::default()
    };
    let mut rng = fastrand::Rng::with_seed(5);
    assert_eq!(backoff.delay(1, None, None, &mut rng), Some(secs(10)));
}

#[test]
fn retry_after_from_the_server_is_a_floor() {
    let backoff = Backoff::default();
    let mut rng = fastrand::Rng::with_seed(6);
    // 5 s plus at most 20 % jitter stays under the 10 s the server asked for.
    assert_eq!(
        backoff.delay(0, Some(secs(10)), None, &mut rng),
        Some(secs(10))
    );
    let d = backoff.delay(2, Some(secs(10)), None, &mut rng).unwrap();
    assert!(d >= secs(20), "{d:?}");
}

#[test]
fn backoff_never_waits_past_the_deadline() {
    let backoff = Backoff::default();
    let mut rng = fastrand::Rng::with_seed(7);
    assert_eq!(
        backoff.delay(3, Some(secs(60)), Some(secs(2)), &mut rng),
        Some(secs(2))
    );
}

#[test]
fn backoff_gives_up_when_no_time_is_left() {
    let mut rng = fastrand::Rng::with_seed(8);
    assert_eq!(
        Backoff::default().delay(0, None, Some(Duration::ZERO), &mut rng),
        None
    );
}

#[test]
fn retry_message_is_kubectls_with_go_durations() {
    assert_eq!(
        retry_message(
            &NamespacedName::new("db", "pgbouncer-0"),
            Duration::from_millis(7250),
            "Cannot evict pod as it would violate the pod's disruption budget."
        ),
        "error when evicting pods/\"pgbouncer-0\" -n \"db\" (will retry after 7.25s): \
         Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(go_duration(secs(5)), "5s");
    assert_eq!(go_duration(secs(90)), "1m30s");
    assert_eq!(go_duration(secs(3600)), "1h0m0s");
    assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    assert_eq!(go_duration(Duration::ZERO), "0s");
}

#[test]
fn not_found_eviction_means_the_pod_is_gone() {
    let s = status(
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#,
    );
    assert_eq!(classify_eviction_error(&s), EvictionErrorClass::Gone);
}

#[test]
fn uid_precondition_conflict_means_the_pod_is_gone() {
    let s = status(
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Operation cannot be fulfilled on pods \"web-0\": Precondition failed: UID in precondition: 1111, UID in object meta: 2222","reason":"Conflict","details":{"name":"web-0","kind":"pods"},"code":409}"#,
    );
    assert_eq!(classify_eviction_error(&s), EvictionErrorClass::Gone);
}

#[test]
fn exhausted_disruption_budget_blocks_the_eviction() {
    let s = status(
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Cannot evict pod as it would violate the pod's disruption budget.","reason":"TooManyRequests","details":{"causes":[{"reason":"DisruptionBudget","message":"The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]},"code":429}"#,
    );
    assert_eq!(
        classify_eviction_error(&s),
        EvictionErrorClass::Blocked {
            retry_after: None,
            multiple_budgets: false
        }
    );
}

#[test]
fn unobserved_disruption_budget_blocks_with_the_servers_retry_after() {
    let s = status(
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Cannot evict pod as it would violate the pod's disruption budget.","reason":"TooManyRequests","details":{"causes":[{"reason":"DisruptionBudget","message":"The disruption budget web-pdb is still being processed by the server."}],"retryAfterSeconds":10},"code":429}"#,
    );
    assert_eq!(
        classify_eviction_error(&s),
        EvictionErrorClass::Blocked {
            retry_after: Some(secs(10)),
            multiple_budgets: false
        }
    );
}

#[test]
fn several_budgets_selecting_the_pod_block_instead_of_failing() {
    let s = status(
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.","code":500}"#,
    );
    assert_eq!(
        classify_eviction_error(&s),
        EvictionErrorClass::Blocked {
            retry_after: None,
            multiple_budgets: true
        }
    );
}

#[test]
fn throttling_429_without_a_budget_cause_is_retryable() {
    let s = status(
        r#"{"status":"Failure","message":"Too many requests, please try again later.","reason":"TooManyRequests","details":{"retryAfterSeconds":1},"code":429}"#,
    );
    assert_eq!(
        classify_eviction_error(&s),
        EvictionErrorClass::Retryable {
            retry_after: Some(secs(1))
        }
    );
}

#[test]
fn terminating_namespace_is_its_own_class() {
    let s = status(
        r#"{"status":"Failure","message":"pods \"x\" is forbidden: unable to create new content in namespace ns because it is being terminated","reason":"Forbidden","details":{"name":"x","kind":"pods","causes":[{"reason":"NamespaceTerminating","message":"namespace ns is being terminated","field":"metadata.namespace"}]},"code":403}"#,
    );
    assert_eq!(
        classify_eviction_error(&s),
        EvictionErrorClass::NamespaceTerminating
    );
}

#[test]
fn forbidden_from_a_broken_budget_is_retryable() {
    for message in [
        "poddisruptionbudgets.policy \"web-pdb\" is forbidden: pdb disruptions allowed is negative",
        "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
    ] {
        let s = kube::core::Status::failure(message, "Forbidden").with_code(403);
        assert_eq!(
            classify_eviction_error(&s),
            EvictionErrorClass::Retryable { retry_after: None },
            "{message}"
        );
    }
}

#[test]
fn budget_update_conflicts_and_server_errors_are_retryable() {
    let timeout = status(
        r#"{"status":"Failure","message":"couldn't update PodDisruptionBudget \"web-pdb\" due to conflicts","reason":"Timeout","details":{"retryAfterSeconds":10},"code":504}"#,
    );
    assert_eq!(
        classify_eviction_error(&timeout),
        EvictionErrorClass::Retryable {
            retry_after: Some(secs(10))
        }
    );
    for code in [500, 502, 503] {
        let s = kube::core::Status::failure("boom", "").with_code(code);
        assert_eq!(
            classify_eviction_error(&s),
            EvictionErrorClass::Retryable { retry_after: None },
            "{code}"
        );
    }
}

#[test]
fn rbac_denials_and_invalid_requests_are_fatal() {
    let cases = [
        (
            403,
            "Forbidden",
            "pods \"x\" is forbidden: User \"bob\" cannot create resource \"pods/eviction\"",
        ),
        (
            400,
            "BadRequest",
            "name in URL does not match name in Eviction object",
        ),
        (401, "Unauthorized", "Unauthorized"),
        (422, "Invalid", "Eviction.policy \"x\" is invalid"),
    ];
    for (code, reason, message) in cases {
        let s = kube::core::Status::failure(message, reason).with_code(code);
        assert_eq!(
            classify_eviction_error(&s),
            EvictionErrorClass::Fatal,
            "{code}"
        );
    }
}

#[test]
fn missing_code_falls_back_to_the_reason() {
    let s = kube::core::Status::failure("pods \"x\" not found", "NotFound");
    assert_eq!(classify_eviction_error(&s), EvictionErrorClass::Gone);
    let s = kube::core::Status::failure("?", "");
    assert_eq!(classify_eviction_error(&s), EvictionErrorClass::Fatal);
}
