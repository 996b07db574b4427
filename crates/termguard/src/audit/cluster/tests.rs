use super::*;
use crate::audit::facts::{Hook, TERMINATING};
use serde_json::{json, Value};

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"))
}

fn node(name: &str, instance: Option<&str>, labels: Value) -> Node {
    let mut n = json!({"metadata": {"name": name, "labels": labels}, "spec": {}});
    if let Some(i) = instance {
        n["spec"]["providerID"] = json!(format!("aws:///us-east-1a/{i}"));
    }
    obj(n)
}

fn merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

fn pod(name: &str, node: &str, app: &str, extra: Value) -> Pod {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-rs"), "uid": "u", "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": format!("example/{app}:1")}]},
        "status": {"phase": "Running"},
    });
    merge(&mut p, &extra);
    obj(p)
}

fn pdb(name: &str, app: &str, spec: Value) -> PodDisruptionBudget {
    let mut s = json!({"selector": {"matchLabels": {"app": app}}});
    merge(&mut s, &spec);
    obj(json!({"metadata": {"name": name, "namespace": "shop"}, "spec": s}))
}

fn ids_of(found: &[Finding]) -> Vec<(&'static str, String)> {
    found.iter().map(|f| (f.id, f.resource.clone())).collect()
}

fn facts() -> ClusterFacts {
    ClusterFacts {
        nodes: vec![
            node("n1", Some("i-1"), json!({})),
            node("n2", Some("i-2"), json!({})),
        ],
        pods: vec![
            pod("web-1", "n1", "web", json!({})),
            pod("web-2", "n2", "web", json!({})),
        ],
        ..Default::default()
    }
}

#[test]
fn a_budget_that_never_allows_an_eviction_names_the_pods_it_blocks() {
    for spec in [
        json!({"maxUnavailable": 0}),
        json!({"maxUnavailable": "0%"}),
        json!({"minAvailable": 2}),
        json!({"minAvailable": "100%"}),
    ] {
        let f = ClusterFacts {
            budgets: vec![pdb("web", "web", spec.clone())],
            ..facts()
        };
        let found = findings(&f, &[]);
        assert_eq!(
            ids_of(&found),
            [(ids::PDB_NEVER_ALLOWS, "pdb/shop/web".to_string())],
            "{spec}"
        );
        assert!(
            found[0].message.contains("shop/web-1, shop/web-2"),
            "{}",
            found[0].message
        );
    }
    // Room for one: no finding.
    for spec in [
        json!({"maxUnavailable": 1}),
        json!({"minAvailable": 1}),
        json!({"minAvailable": "50%"}),
    ] {
        let f = ClusterFacts {
            budgets: vec![pdb("web", "web", spec.clone())],
            ..facts()
        };
        assert!(findings(&f, &[]).is_empty(), "{spec}");
    }
}

#[test]
fn a_single_replica_workload_without_a_budget_is_found_and_a_budget_or_replicas_clear_it() {
    let deployment = |replicas: i32| -> Deployment {
        obj(json!({"metadata": {"name": "cache", "namespace": "shop"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "cache"}},
                "template": {"metadata": {"labels": {"app": "cache"}}, "spec": {"containers": [{"name": "c"}]}}}}))
    };
    let f = ClusterFacts {
        deployments: vec![deployment(1)],
        ..facts()
    };
    assert_eq!(
        ids_of(&findings(&f, &[])),
        [(ids::SINGLE_REPLICA, "deployment/shop/cache".to_string())]
    );
    let f = ClusterFacts {
        deployments: vec![deployment(2)],
        ..facts()
    };
    assert!(findings(&f, &[]).is_empty());
    let f = ClusterFacts {
        deployments: vec![deployment(1)],
        budgets: vec![pdb("cache", "cache", json!({"maxUnavailable": 1}))],
        ..facts()
    };
    assert!(findings(&f, &[]).is_empty());
}

#[test]
fn grace_periods_longer_than_a_spot_warning_or_the_hook_are_found() {
    let long = json!({"spec": {"terminationGracePeriodSeconds": 300}});
    let mut f = facts();
    f.nodes[0] = node(
        "n1",
        Some("i-1"),
        json!({"karpenter.sh/capacity-type": "spot"}),
    );
    f.pods.push(pod("batch-1", "n1", "batch", long.clone()));
    f.pods.push(pod("batch-2", "n2", "batch", long));
    // Only the pod on the Spot node.
    assert_eq!(
        ids_of(&findings(&f, &[])),
        [(ids::GRACE_BEYOND_SPOT, "pod/shop/batch-1".to_string())]
    );
    // A group's hook that allows less than the grace period.
    let hook = Hook {
        name: "h".into(),
        transition: TERMINATING.into(),
        heartbeat_timeout: 30,
        global_timeout: 200,
        ..Default::default()
    };
    let group = Group {
        name: "g".into(),
        instances: vec!["i-2".into()],
        hooks: vec![hook],
        ..Default::default()
    };
    let found = ids_of(&findings(&f, &[group]));
    assert!(
        found.contains(&(ids::GRACE_BEYOND_HOOK, "pod/shop/batch-2".to_string())),
        "{found:?}"
    );
}

#[test]
fn a_node_without_an_aws_provider_id_is_found() {
    let mut f = facts();
    f.nodes.push(node("laptop", None, json!({})));
    assert_eq!(
        ids_of(&findings(&f, &[])),
        [(ids::NO_PROVIDER_ID, "node/laptop".to_string())]
    );
}

#[test]
fn poolers_dns_and_log_shippers_should_leave_last() {
    let mut f = facts();
    f.pods
        .push(pod("pgbouncer-1", "n1", "pgbouncer", json!({})));
    assert_eq!(
        ids_of(&findings(&f, &[])),
        [(ids::DRAIN_LAST_UNMARKED, "pod/shop/pgbouncer-1".to_string())]
    );
    // Marked, a preStop hook, or a critical priority class: nothing to say.
    for extra in [
        json!({"metadata": {"annotations": {"termguard.io/drain-order": "last"}}}),
        json!({"spec": {"containers": [{"name": "c", "image": "pgbouncer", "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}}]}}),
        json!({"spec": {"priorityClassName": "system-cluster-critical"}}),
    ] {
        let mut f = facts();
        f.pods
            .push(pod("pgbouncer-1", "n1", "pgbouncer", extra.clone()));
        assert!(findings(&f, &[]).is_empty(), "{extra}");
    }
    // A DaemonSet's log shipper is never evicted.
    let mut f = facts();
    f.pods.push(pod(
        "fluent-bit-x",
        "n1",
        "fluent-bit",
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "fluent-bit", "uid": "d", "controller": true}]}}),
    ));
    assert!(findings(&f, &[]).is_empty());
}

#[test]
fn cluster_autoscaler_beside_per_zone_groups_must_balance_them() {
    let zone = |name: &str, z: &str| Group {
        name: name.into(),
        zones: vec![z.into()],
        ..Default::default()
    };
    let groups = [zone("a", "us-east-1a"), zone("b", "us-east-1b")];
    let ca = |args: Value| {
        let mut f = facts();
        f.pods.push(pod(
            "cluster-autoscaler-1",
            "n1",
            "ca",
            json!({"metadata": {"namespace": "kube-system"},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/autoscaling/cluster-autoscaler:v1.32.0",
                    "command": ["./cluster-autoscaler"], "args": args}]}}),
        ));
        ids_of(&findings(&f, &groups))
    };
    assert_eq!(
        ca(json!(["--cloud-provider=aws"])),
        [(
            ids::UNBALANCED_AUTOSCALER,
            "pod/kube-system/cluster-autoscaler-1".to_string()
        )]
    );
    assert!(ca(json!([
        "--cloud-provider=aws",
        "--balance-similar-node-groups=true"
    ]))
    .is_empty());
    // One group over two zones: nothing to balance.
    let mut f = facts();
    f.pods.push(pod(
        "cluster-autoscaler-1",
        "n1",
        "ca",
        json!({"spec": {"containers": [{"name": "c", "command": ["./cluster-autoscaler"]}]}}),
    ));
    assert!(findings(
        &f,
        &[Group {
            zones: vec!["a".into(), "b".into()],
            ..Default::default()
        }]
    )
    .is_empty());
}

#[test]
fn termguard_replicas_are_told_by_their_queue_and_readiness() {
    const URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/termguard";
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let termguard = |name: &str, container: Value, status: &Value| {
        let mut extra = json!({"spec": {"containers": [container]}});
        merge(&mut extra, status);
        pod(name, "n1", "termguard", extra)
    };
    let f = ClusterFacts {
        pods: vec![
            // The queue as an argument, the same URL with a trailing slash and another host
            // form, and in the environment.
            termguard(
                "tg-1",
                json!({"name": "c", "image": "ghcr.io/x/termguard:1", "args": ["run", "--queue-url", URL]}),
                &ready,
            ),
            termguard(
                "tg-2",
                json!({"name": "c", "image": "registry/tools:1", "command": ["/bin/termguard"],
                       "args": ["run", "--queue-url=https://queue.amazonaws.com/123456789012/termguard/"]}),
                &ready,
            ),
            termguard(
                "tg-3",
                json!({"name": "c", "image": "termguard:1", "args": ["run"],
                       "env": [{"name": "TERMGUARD_QUEUE_URL", "value": URL}]}),
                &ready,
            ),
            // Not ready, another queue, no queue, not `run`, not termguard at all.
            termguard(
                "tg-4",
                json!({"name": "c", "image": "termguard:1", "args": ["run", "--queue-url", URL]}),
                &json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
            termguard(
                "tg-5",
                json!({"name": "c", "image": "termguard:1", "args": ["run", "--queue-url", "https://sqs.us-east-1.amazonaws.com/123456789012/other"]}),
                &ready,
            ),
            termguard(
                "tg-6",
                json!({"name": "c", "image": "termguard:1", "args": ["run"]}),
                &ready,
            ),
            termguard(
                "tg-7",
                json!({"name": "c", "image": "termguard:1", "args": ["audit", "--queue-url", URL]}),
                &ready,
            ),
            pod("web-1", "n1", "web", ready.clone()),
        ],
        ..facts()
    };
    let r = replicas(&f, URL);
    assert_eq!(r.reading, ["shop/tg-1", "shop/tg-2", "shop/tg-3"]);
    assert_eq!(
        r.others,
        [
            "shop/tg-4 is not running and ready",
            "shop/tg-5 reads https://sqs.us-east-1.amazonaws.com/123456789012/other",
            "shop/tg-6 names no queue",
        ]
    );
}

#[test]
fn a_drain_its_budgets_make_longer_than_the_hook_allows_is_found() {
    // Six pods of one workload on n2, a budget letting one go at a time, replacements ready
    // after 5 s + 2 × 10 s: 5 × 25 s + 30 s = 155 s.
    let probe = json!({"spec": {"containers": [{"name": "c", "image": "example/api:1",
        "readinessProbe": {"initialDelaySeconds": 5, "periodSeconds": 10, "successThreshold": 2,
                           "httpGet": {"path": "/", "port": 80}}}]}});
    let mut f = facts();
    for i in 0..6 {
        f.pods
            .push(pod(&format!("api-{i}"), "n2", "api", probe.clone()));
    }
    f.pods.push(pod("api-x", "n1", "api", probe.clone()));
    f.budgets
        .push(pdb("api", "api", json!({"maxUnavailable": 1})));
    let group = |global_timeout| Group {
        name: "g".into(),
        instances: vec!["i-2".into()],
        hooks: vec![Hook {
            name: "h".into(),
            transition: TERMINATING.into(),
            heartbeat_timeout: 30,
            global_timeout,
            ..Default::default()
        }],
        ..Default::default()
    };
    let found = findings(&f, &[group(150)]);
    assert_eq!(
        ids_of(&found),
        [(ids::DRAIN_BEYOND_HOOK, "node/n2".to_string())]
    );
    assert!(
        found[0].message.contains("at least 155 s"),
        "{}",
        found[0].message
    );
    assert!(
        found[0].message.contains("shop/api lets 1 of its 6"),
        "{}",
        found[0].message
    );
    // Room enough: a longer hook, or a budget letting 3 go at once (1 × 25 + 30 = 55 s), or
    // a percentage that does (50 % of 7, rounded up: 4, so 2 rounds).
    assert!(findings(&f, &[group(3000)]).is_empty());
    f.budgets[0] = pdb("api", "api", json!({"maxUnavailable": 3}));
    assert!(findings(&f, &[group(150)]).is_empty());
    f.budgets[0] = pdb("api", "api", json!({"maxUnavailable": "50%"}));
    assert!(findings(&f, &[group(150)]).is_empty());
    // minAvailable 6 of 7: one at a time again.
    f.budgets[0] = pdb("api", "api", json!({"minAvailable": 6}));
    assert_eq!(
        ids_of(&findings(&f, &[group(150)])),
        [(ids::DRAIN_BEYOND_HOOK, "node/n2".to_string())]
    );
    // A node no audited group holds: nothing to compare with.
    assert!(findings(&f, &[]).is_empty());
}
