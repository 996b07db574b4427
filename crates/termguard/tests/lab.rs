//! `termguard lab` end to end: the incident replayed unprotected and protected, on several
//! seeds. Asserts what the lab exists to show, not timings.

use termguard::lab::{self, LabOptions, Mode, RunReport};

async fn runs(seed: u64) -> (RunReport, RunReport) {
    let opts = LabOptions {
        seed,
        ..LabOptions::default()
    };
    let report = lab::run(&opts, &[Mode::Unprotected, Mode::Protected])
        .await
        .expect("lab run");
    let mut it = report.runs.into_iter();
    let unprotected = it.next().expect("unprotected run");
    let protected = it.next().expect("protected run");
    (unprotected, protected)
}

fn check(seed: u64, unprotected: &RunReport, protected: &RunReport) {
    assert_eq!(unprotected.mode, "unprotected");
    assert!(
        unprotected.rebalanced,
        "seed {seed}: the rebalance must happen: {:#?}",
        unprotected.timeline
    );
    assert!(
        unprotected.stalled_worker_threads > 0,
        "seed {seed}: unprotected run must leave stalled threads: {unprotected:#?}"
    );
    assert!(
        unprotected
            .ungraceful_pods
            .iter()
            .any(|p| p.starts_with("db/pgbouncer-")),
        "seed {seed}: the pgbouncer pod must be killed without a graceful stop: {:?}",
        unprotected.ungraceful_pods
    );
    assert!(!unprotected.lifecycle_completed);

    assert_eq!(protected.mode, "protected");
    assert!(protected.rebalanced);
    assert_eq!(
        protected.stalled_worker_threads, 0,
        "seed {seed}: {protected:#?}"
    );
    assert_eq!(
        protected.ungraceful_pod_kills, 0,
        "seed {seed}: {:?}",
        protected.ungraceful_pods
    );
    assert!(
        protected.lifecycle_completed,
        "seed {seed}: the lifecycle action must be completed before the hook's timeout"
    );
    assert!(protected.drain_seconds > 0.0);
    assert!(
        protected
            .timeline
            .iter()
            .any(|(_, l)| l.contains("drain wave 2") && l.contains("pgbouncer")),
        "seed {seed}: pgbouncer must leave in the drain-last wave"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_seed_1_protected_run_loses_nothing_and_unprotected_stalls() {
    let (u, p) = runs(1).await;
    check(1, &u, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_seed_7_protected_run_loses_nothing_and_unprotected_stalls() {
    let (u, p) = runs(7).await;
    check(7, &u, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_seed_42_protected_run_loses_nothing_and_unprotected_stalls() {
    let (u, p) = runs(42).await;
    check(42, &u, &p);
}

#[test]
fn lab_json_has_the_documented_fields() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_termguard"))
        .args([
            "lab",
            "--json",
            "--seed",
            "3",
            "--mode",
            "protected",
            "--log",
            "error",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running termguard lab");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("lab --json prints JSON");
    let run = &v["runs"][0];
    assert_eq!(run["mode"], "protected");
    for field in [
        "stalled_worker_threads",
        "ungraceful_pod_kills",
        "failed_jobs",
        "drain_seconds",
        "lifecycle_completed",
    ] {
        assert!(!run[field].is_null(), "missing {field} in {run}");
    }
    assert_eq!(run["lifecycle_completed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_zone_groups_avoid_the_rebalance_kill_but_cost_groups_and_even_zones() {
    let opts = LabOptions {
        seed: 5,
        ..LabOptions::default()
    };
    let report = lab::run(&opts, &[Mode::PerZoneGroups])
        .await
        .expect("lab run");
    let run = &report.runs[0];
    assert_eq!(run.mode, "per-zone-groups");
    assert_eq!(run.groups, 3, "one group per zone");
    assert!(!run.rebalanced, "no AZ rebalance across per-zone groups");
    assert_eq!(run.stalled_worker_threads, 0);
    assert_eq!(run.ungraceful_pod_kills, 0, "{:?}", run.ungraceful_pods);
    let counts: Vec<usize> = run.zones_at_end.values().copied().collect();
    assert!(
        counts.iter().min() != counts.iter().max(),
        "zones stay uneven after the scale-in: {:?}",
        run.zones_at_end
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_timeout_turns_hung_threads_into_failed_jobs() {
    let mut opts = LabOptions {
        seed: 9,
        ..LabOptions::default()
    };
    opts.conn.client_timeout = Some(std::time::Duration::from_secs(1));
    let report = lab::run(&opts, &[Mode::Unprotected])
        .await
        .expect("lab run");
    let run = &report.runs[0];
    assert!(run.rebalanced);
    assert_eq!(run.stalled_worker_threads, 0, "{run:#?}");
    assert!(
        run.failed_jobs > 0,
        "the hung queries fail after the timeout: {run:#?}"
    );
    assert!(run
        .ungraceful_pods
        .iter()
        .any(|p| p.starts_with("db/pgbouncer-")));
}
