use super::*;
use crate::cluster::drain::testutil::*;

fn ctx() -> PlanContext {
    PlanContext::new(ts("2025-01-01T12:00:00Z"))
}

fn names(wave: &Wave) -> Vec<String> {
    wave.pods.iter().map(|p| p.pod.to_string()).collect()
}

fn lenient() -> DrainOptions {
    DrainOptions {
        ignore_daemonsets: true,
        delete_emptydir_data: true,
        force: true,
        ..DrainOptions::default()
    }
}

/// The incident's node: workers, a pgbouncer pooler, CoreDNS, a DaemonSet and a static pod.
fn incident_node() -> Vec<Pod> {
    vec![
        annotated(pod("db", "pgbouncer-0"), DRAIN_ORDER_ANNOTATION, "last"),
        pod("jobs", "worker-0"),
        with_priority_class(pod("kube-system", "coredns-1"), "system-cluster-critical"),
        daemonset_pod("kube-system", "aws-node-x", "aws-node"),
        mirror(pod("kube-system", "kube-proxy-node1")),
        pod("jobs", "worker-1"),
    ]
}

#[test]
fn kubectl_defaults_are_the_default_options() {
    let o = DrainOptions::default();
    assert!(!o.ignore_daemonsets && !o.delete_emptydir_data && !o.force && !o.disable_eviction);
    assert_eq!(o.grace_period, None);
    assert_eq!(o.timeout, None);
    assert_eq!(o.skip_wait_for_delete_timeout, None);
    assert_eq!(o.chunk_size, 500);
    assert!(o.pod_selector.selects_all());
}

#[test]
fn pooler_and_critical_pods_go_in_a_wave_after_the_workers() {
    let plan = plan(&incident_node(), &lenient(), &ctx()).unwrap();
    assert_eq!(plan.waves.len(), 2);
    assert_eq!(plan.waves[0].kind, WaveKind::Ordinary);
    assert_eq!(names(&plan.waves[0]), ["jobs/worker-0", "jobs/worker-1"]);
    assert_eq!(plan.waves[1].kind, WaveKind::DrainLast);
    assert_eq!(plan.waves[1].number, 2);
    assert_eq!(
        names(&plan.waves[1]),
        ["db/pgbouncer-0", "kube-system/coredns-1"]
    );
    assert_eq!(
        plan.waves[1].pods[0].drain_last.as_deref(),
        Some("annotation termguard.io/drain-order=last")
    );
    assert_eq!(
        plan.waves[1].pods[1].drain_last.as_deref(),
        Some("priorityClassName system-cluster-critical")
    );
}

#[test]
fn daemonset_and_mirror_pods_are_listed_as_skipped() {
    let plan = plan(&incident_node(), &lenient(), &ctx()).unwrap();
    let skipped: Vec<_> = plan
        .skipped
        .iter()
        .map(|s| (s.pod.to_string(), s.rule))
        .collect();
    assert_eq!(
        skipped,
        [
            ("kube-system/aws-node-x".to_string(), "daemonset"),
            ("kube-system/kube-proxy-node1".to_string(), "mirror-pod")
        ]
    );
}

#[test]
fn system_node_critical_pods_go_last() {
    let pods = [
        with_priority_class(pod("kube-system", "ebs-csi"), "system-node-critical"),
        pod("default", "web"),
    ];
    let plan = plan(&pods, &DrainOptions::default(), &ctx()).unwrap();
    assert_eq!(names(&plan.waves[1]), ["kube-system/ebs-csi"]);
}

#[test]
fn drain_order_annotation_with_another_value_is_an_ordinary_pod() {
    let pods = [annotated(
        pod("db", "pgbouncer-0"),
        DRAIN_ORDER_ANNOTATION,
        "first",
    )];
    let plan = plan(&pods, &DrainOptions::default(), &ctx()).unwrap();
    assert_eq!(plan.waves.len(), 1);
    assert_eq!(plan.waves[0].kind, WaveKind::Ordinary);
}

#[test]
fn drain_last_rules_are_configurable() {
    let mut opts = DrainOptions::default();
    opts.drain_last.priority_classes = ["pooler".to_string()].into();
    opts.drain_last.annotations = [("example.com/tier".to_string(), "edge".to_string())].into();
    let pods = [
        with_priority_class(pod("kube-system", "coredns-1"), "system-cluster-critical"),
        with_priority_class(pod("db", "pgbouncer-0"), "pooler"),
        annotated(pod("web", "envoy-0"), "example.com/tier", "edge"),
        annotated(pod("db", "pgbouncer-1"), DRAIN_ORDER_ANNOTATION, "last"),
    ];
    let plan = plan(&pods, &opts, &ctx()).unwrap();
    assert_eq!(
        names(&plan.waves[0]),
        ["kube-system/coredns-1", "db/pgbouncer-1"]
    );
    assert_eq!(names(&plan.waves[1]), ["db/pgbouncer-0", "web/envoy-0"]);
}

#[test]
fn a_node_with_only_drain_last_pods_has_a_single_first_wave() {
    let pods = [annotated(
        pod("db", "pgbouncer-0"),
        DRAIN_ORDER_ANNOTATION,
        "last",
    )];
    let plan = plan(&pods, &DrainOptions::default(), &ctx()).unwrap();
    assert_eq!(plan.waves.len(), 1);
    assert_eq!(plan.waves[0].number, 1);
    assert_eq!(plan.waves[0].kind, WaveKind::DrainLast);
}

#[test]
fn finished_pods_leave_with_the_first_wave_whatever_their_class() {
    let pods = [with_phase(
        with_priority_class(pod("kube-system", "done"), "system-node-critical"),
        "Succeeded",
    )];
    let plan = plan(&pods, &DrainOptions::default(), &ctx()).unwrap();
    assert_eq!(plan.waves[0].kind, WaveKind::Ordinary);
    assert!(plan.waves[0].pods[0].finished);
}

#[test]
fn planned_pod_carries_uid_grace_and_terminating_state() {
    let pods = [
        with_grace(pod("default", "slow"), 120),
        deleted_at(pod("default", "leaving"), ts("2025-01-01T11:59:00Z")),
    ];
    let plan = plan(&pods, &DrainOptions::default(), &ctx()).unwrap();
    let [slow, leaving] = &plan.waves[0].pods[..] else {
        panic!("two pods expected");
    };
    assert_eq!(slow.uid.as_deref(), Some("uid-slow"));
    assert_eq!(slow.grace_period_seconds, 120);
    assert!(!slow.terminating);
    assert_eq!(leaving.grace_period_seconds, 30);
    assert!(leaving.terminating);
}

#[test]
fn grace_period_option_overrides_every_pods_own() {
    let opts = DrainOptions {
        grace_period: Some(10),
        ..DrainOptions::default()
    };
    let plan = plan(&[with_grace(pod("default", "slow"), 120)], &opts, &ctx()).unwrap();
    assert_eq!(plan.waves[0].pods[0].grace_period_seconds, 10);
}

#[test]
fn an_empty_node_plans_no_waves() {
    let plan = plan(&[], &DrainOptions::default(), &ctx()).unwrap();
    assert!(plan.waves.is_empty() && plan.skipped.is_empty());
    assert_eq!(plan.to_string(), "no pods to evict\n");
}

#[test]
fn any_refused_pod_refuses_the_drain_with_kubectls_error() {
    let pods = [pod("default", "web"), bare(pod("default", "solo"))];
    let Err(PlanError::Refused { message, plan }) = plan(&pods, &DrainOptions::default(), &ctx())
    else {
        panic!("refusal expected");
    };
    assert_eq!(
        message,
        "cannot delete Pods that declare no controller (use --force to override): default/solo"
    );
    // The plan is still there for --dry-run and for deadline mode.
    assert_eq!(names(&plan.waves[0]), ["default/web"]);
    assert_eq!(plan.refused[0].rule, "unreplicated");
}

#[test]
fn refusals_are_grouped_per_message_and_bracketed_when_several() {
    let pods = [
        bare(pod("default", "a")),
        daemonset_pod("kube-system", "ds-x", "ds"),
        bare(pod("default", "b")),
    ];
    let err = plan(&pods, &DrainOptions::default(), &ctx()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "[cannot delete Pods that declare no controller (use --force to override): default/a, \
         default/b, cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): \
         kube-system/ds-x]"
    );
}

#[test]
fn warnings_are_grouped_like_kubectls_warning_line() {
    let pods = [
        daemonset_pod("kube-system", "ds-a", "ds"),
        with_empty_dir(pod("default", "cache-1")),
        with_empty_dir(pod("default", "cache-2")),
        daemonset_pod("kube-system", "ds-b", "ds"),
    ];
    let plan = plan(&pods, &lenient(), &ctx()).unwrap();
    assert_eq!(
        plan.warnings().as_deref(),
        Some(
            "ignoring DaemonSet-managed Pods: kube-system/ds-a, kube-system/ds-b; \
             deleting Pods with local storage: default/cache-1, default/cache-2"
        )
    );
}

#[test]
fn dry_run_text_shows_waves_reasons_and_skips() {
    let mut pods = incident_node();
    pods.push(with_empty_dir(pod("jobs", "cache")));
    let text = plan(&pods, &lenient(), &ctx()).unwrap().to_string();
    let expected = "\
Warning: ignoring DaemonSet-managed Pods: kube-system/aws-node-x; deleting Pods with local storage: jobs/cache
wave 1 (ordinary): 3 pods
  jobs/worker-0                 grace 30s
  jobs/worker-1                 grace 30s
  jobs/cache                    grace 30s, warning: deleting Pods with local storage
wave 2 (drain-last): 2 pods, after wave 1 is gone
  db/pgbouncer-0                grace 30s, last: annotation termguard.io/drain-order=last
  kube-system/coredns-1         grace 30s, last: priorityClassName system-cluster-critical
skipped: 2 pods
  kube-system/aws-node-x        ignoring DaemonSet-managed Pods
  kube-system/kube-proxy-node1  mirror pod (kubernetes.io/config.mirror), managed by the kubelet
";
    assert_eq!(text, expected);
}

#[test]
fn dry_run_text_lists_refused_pods() {
    let err = plan(
        &[bare(pod("default", "solo"))],
        &DrainOptions::default(),
        &ctx(),
    )
    .unwrap_err();
    let PlanError::Refused { plan, .. } = err;
    assert_eq!(
        plan.to_string(),
        "no pods to evict\nrefused: 1 pod\n  default/solo  \
         cannot delete Pods that declare no controller (use --force to override)\n"
    );
}

#[test]
fn plan_serializes_to_json_for_output_json() {
    let pods = [
        pod("jobs", "worker-0"),
        annotated(pod("db", "pgbouncer-0"), DRAIN_ORDER_ANNOTATION, "last"),
        mirror(pod("kube-system", "kube-proxy-node1")),
    ];
    let plan = plan(&pods, &DrainOptions::default(), &ctx()).unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "waves": [
                {"number": 1, "kind": "ordinary", "pods": [{
                    "namespace": "jobs", "name": "worker-0", "uid": "uid-worker-0",
                    "gracePeriodSeconds": 30, "finished": false, "terminating": false
                }]},
                {"number": 2, "kind": "drain-last", "pods": [{
                    "namespace": "db", "name": "pgbouncer-0", "uid": "uid-pgbouncer-0",
                    "gracePeriodSeconds": 30, "finished": false, "terminating": false,
                    "drainLast": "annotation termguard.io/drain-order=last"
                }]}
            ],
            "skipped": [{
                "namespace": "kube-system", "name": "kube-proxy-node1", "rule": "mirror-pod",
                "reason": "mirror pod (kubernetes.io/config.mirror), managed by the kubelet",
                "warning": false
            }],
            "refused": []
        })
    );
}
