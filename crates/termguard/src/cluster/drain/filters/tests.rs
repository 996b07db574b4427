use std::time::Duration;

use super::*;
use crate::cluster::drain::selector::PodSelector;
use crate::cluster::drain::testutil::*;

fn ctx() -> PlanContext {
    PlanContext::new(ts("2025-01-01T12:00:00Z"))
}

fn opts() -> DrainOptions {
    DrainOptions::default()
}

fn evicted(warnings: &[&str]) -> Selection {
    Selection::Evict {
        warnings: warnings.iter().map(|w| w.to_string()).collect(),
    }
}

fn refused(rule: &'static str, reason: &str) -> Selection {
    Selection::Refuse {
        rule,
        reason: reason.into(),
    }
}

#[test]
fn rules_run_in_kubectls_order_after_the_selector() {
    let names: Vec<_> = FILTERS.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "pod-selector",
            "own-pod",
            "skip-deleted",
            "daemonset",
            "mirror-pod",
            "local-storage",
            "unreplicated"
        ]
    );
}

#[test]
fn replicaset_pod_is_evicted_without_warnings() {
    assert_eq!(
        select(&pod("default", "web-1"), &opts(), &ctx()),
        evicted(&[])
    );
}

#[test]
fn mirror_pod_is_never_evicted_even_with_force() {
    let opts = DrainOptions {
        force: true,
        ..opts()
    };
    let selection = select(&mirror(pod("kube-system", "etcd-node1")), &opts, &ctx());
    assert!(matches!(
        selection,
        Selection::Skip {
            rule: "mirror-pod",
            warning: false,
            ..
        }
    ));
}

#[test]
fn finished_mirror_pod_is_still_skipped() {
    let pod = with_phase(mirror(pod("kube-system", "etcd-node1")), "Succeeded");
    assert!(matches!(
        select(&pod, &opts(), &ctx()),
        Selection::Skip {
            rule: "mirror-pod",
            ..
        }
    ));
}

#[test]
fn daemonset_pod_refuses_the_drain_without_ignore_daemonsets() {
    let pod = daemonset_pod("kube-system", "aws-node-x", "aws-node");
    assert_eq!(
        select(&pod, &opts(), &ctx()),
        refused(
            "daemonset",
            "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"
        )
    );
}

#[test]
fn daemonset_pod_is_skipped_with_a_warning_under_ignore_daemonsets() {
    let opts = DrainOptions {
        ignore_daemonsets: true,
        ..opts()
    };
    let pod = daemonset_pod("kube-system", "aws-node-x", "aws-node");
    assert_eq!(
        select(&pod, &opts, &ctx()),
        Selection::Skip {
            rule: "daemonset",
            reason: "ignoring DaemonSet-managed Pods".into(),
            warning: true,
        }
    );
}

#[test]
fn daemonset_pod_is_skipped_under_ignore_daemonsets_even_with_force() {
    let opts = DrainOptions {
        ignore_daemonsets: true,
        force: true,
        ..opts()
    };
    let pod = daemonset_pod("kube-system", "aws-node-x", "aws-node");
    assert!(matches!(
        select(&pod, &opts, &ctx()),
        Selection::Skip {
            rule: "daemonset",
            ..
        }
    ));
}

#[test]
fn daemonset_is_recognised_by_controller_kind_whatever_its_api_version() {
    let pod = owned_by(
        pod("kube-system", "kruise-ds-x"),
        vec![owner(
            "DaemonSet",
            "apps.kruise.io/v1alpha1",
            "kruise-ds",
            true,
        )],
    );
    assert!(matches!(
        select(&pod, &opts(), &ctx()),
        Selection::Refuse {
            rule: "daemonset",
            ..
        }
    ));
}

#[test]
fn non_controller_daemonset_owner_does_not_make_a_daemonset_pod() {
    let pod = owned_by(
        pod("default", "odd"),
        vec![
            owner("DaemonSet", "apps/v1", "ds", false),
            owner("ReplicaSet", "apps/v1", "rs", true),
        ],
    );
    assert_eq!(select(&pod, &opts(), &ctx()), evicted(&[]));
}

#[test]
fn finished_daemonset_pod_is_deleted() {
    let pod = with_phase(daemonset_pod("kube-system", "ds-x", "ds"), "Failed");
    assert_eq!(select(&pod, &opts(), &ctx()), evicted(&[]));
}

#[test]
fn orphaned_daemonset_pod_is_deleted_with_a_warning_under_force() {
    let opts = DrainOptions {
        force: true,
        ..opts()
    };
    let ctx = ctx().with_daemonset("kube-system", "gone", DaemonSetLookup::NotFound);
    let pod = daemonset_pod("kube-system", "gone-x", "gone");
    assert_eq!(
        select(&pod, &opts, &ctx),
        evicted(&["daemonsets.apps \"gone\" not found"])
    );
}

#[test]
fn orphaned_daemonset_pod_refuses_the_drain_without_force() {
    let ctx = ctx().with_daemonset("kube-system", "gone", DaemonSetLookup::NotFound);
    let pod = daemonset_pod("kube-system", "gone-x", "gone");
    assert_eq!(
        select(&pod, &opts(), &ctx),
        refused(
            "daemonset",
            "cannot delete daemonsets.apps \"gone\" not found"
        )
    );
}

#[test]
fn failed_daemonset_lookup_refuses_the_drain_even_with_flags() {
    let opts = DrainOptions {
        force: true,
        ignore_daemonsets: true,
        ..opts()
    };
    let ctx = ctx().with_daemonset(
        "kube-system",
        "ds",
        DaemonSetLookup::Failed("the server is currently unable to handle the request".into()),
    );
    assert_eq!(
        select(&daemonset_pod("kube-system", "ds-x", "ds"), &opts, &ctx),
        refused(
            "daemonset",
            "cannot delete the server is currently unable to handle the request"
        )
    );
}

#[test]
fn emptydir_pod_refuses_the_drain_without_delete_emptydir_data() {
    let pod = with_empty_dir(pod("default", "cache"));
    assert_eq!(
        select(&pod, &opts(), &ctx()),
        refused(
            "local-storage",
            "cannot delete Pods with local storage (use --delete-emptydir-data to override)"
        )
    );
}

#[test]
fn emptydir_pod_is_evicted_with_a_warning_under_delete_emptydir_data() {
    let opts = DrainOptions {
        delete_emptydir_data: true,
        ..opts()
    };
    let pod = with_empty_dir(pod("default", "cache"));
    assert_eq!(
        select(&pod, &opts, &ctx()),
        evicted(&["deleting Pods with local storage"])
    );
}

#[test]
fn pod_without_controller_refuses_the_drain_without_force() {
    assert_eq!(
        select(&bare(pod("default", "solo")), &opts(), &ctx()),
        refused(
            "unreplicated",
            "cannot delete Pods that declare no controller (use --force to override)"
        )
    );
}

#[test]
fn owner_without_controller_flag_counts_as_no_controller() {
    let pod = owned_by(
        pod("default", "x"),
        vec![owner("ReplicaSet", "apps/v1", "rs", false)],
    );
    assert!(matches!(
        select(&pod, &opts(), &ctx()),
        Selection::Refuse {
            rule: "unreplicated",
            ..
        }
    ));
}

#[test]
fn pod_without_controller_is_evicted_with_a_warning_under_force() {
    let opts = DrainOptions {
        force: true,
        ..opts()
    };
    assert_eq!(
        select(&bare(pod("default", "solo")), &opts, &ctx()),
        evicted(&["deleting Pods that declare no controller"])
    );
}

#[test]
fn every_warning_is_kept_when_several_rules_warn() {
    let opts = DrainOptions {
        force: true,
        delete_emptydir_data: true,
        ..opts()
    };
    let pod = with_empty_dir(bare(pod("default", "solo")));
    assert_eq!(
        select(&pod, &opts, &ctx()),
        evicted(&[
            "deleting Pods with local storage",
            "deleting Pods that declare no controller"
        ])
    );
}

#[test]
fn finished_pods_are_deleted_without_the_storage_and_controller_checks() {
    for phase in ["Succeeded", "Failed"] {
        let pod = with_phase(with_empty_dir(bare(pod("default", "job-x"))), phase);
        assert_eq!(select(&pod, &opts(), &ctx()), evicted(&[]), "{phase}");
    }
}

#[test]
fn pending_pod_is_checked_like_a_running_one() {
    let pod = with_phase(bare(pod("default", "p")), "Pending");
    assert!(matches!(
        select(&pod, &opts(), &ctx()),
        Selection::Refuse { .. }
    ));
}

#[test]
fn pods_outside_the_pod_selector_are_skipped_before_any_refusal() {
    let opts = DrainOptions {
        pod_selector: PodSelector::parse("app=web").unwrap(),
        ..opts()
    };
    let outside = bare(labelled(pod("default", "db"), "app", "db"));
    assert_eq!(
        select(&outside, &opts, &ctx()),
        Selection::Skip {
            rule: "pod-selector",
            reason: "does not match --pod-selector=app=web".into(),
            warning: false,
        }
    );
    let inside = labelled(pod("default", "web"), "app", "web");
    assert_eq!(select(&inside, &opts, &ctx()), evicted(&[]));
}

#[test]
fn pod_terminating_longer_than_skip_wait_for_delete_timeout_is_skipped() {
    let opts = DrainOptions {
        skip_wait_for_delete_timeout: Some(Duration::from_secs(60)),
        ..opts()
    };
    let old = deleted_at(bare(pod("default", "old")), ts("2025-01-01T11:58:59Z"));
    assert_eq!(
        select(&old, &opts, &ctx()),
        Selection::Skip {
            rule: "skip-deleted",
            reason: "has DeletionTimestamp older than 60 seconds".into(),
            warning: false,
        }
    );
}

#[test]
fn skip_wait_for_delete_timeout_compares_whole_seconds_strictly() {
    let opts = DrainOptions {
        skip_wait_for_delete_timeout: Some(Duration::from_secs(60)),
        ..opts()
    };
    // 60.9 s truncates to 60, which is not > 60: kubectl keeps the pod.
    let recent = deleted_at(pod("default", "recent"), ts("2025-01-01T11:58:59.1Z"));
    assert_eq!(select(&recent, &opts, &ctx()), evicted(&[]));
}

#[test]
fn terminating_pod_is_kept_when_skip_wait_for_delete_timeout_is_off() {
    let old = deleted_at(pod("default", "old"), ts("2025-01-01T10:00:00Z"));
    assert_eq!(select(&old, &opts(), &ctx()), evicted(&[]));
}

#[test]
fn only_running_daemonset_pods_need_a_daemonset_lookup() {
    let pods = [
        daemonset_pod("kube-system", "a-1", "a"),
        daemonset_pod("kube-system", "a-2", "a"),
        with_phase(daemonset_pod("kube-system", "b-1", "b"), "Succeeded"),
        daemonset_pod("monitoring", "c-1", "c"),
        pod("default", "web"),
    ];
    let wanted: Vec<_> = daemonsets_to_look_up(&pods)
        .into_iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(wanted, ["kube-system/a", "monitoring/c"]);
}
