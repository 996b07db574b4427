//! Differential conformance: the same HTTP requests sent to kube-sim and to the real control
//! plane of `scripts/cluster.sh` (kube-apiserver v1.34 with RBAC, controllers, KWOK kubelets),
//! and their answers compared.
//!
//! Both backends load `conformance/scenario.yaml`, so names line up; each case makes the
//! objects it needs. A request is written once, with `<placeholders>` for what differs by
//! backend (generated pod names, UIDs, resourceVersions), and sent over a real socket by
//! kube-rs's raw `Client::send` — the admin kubeconfig's bearer token for the real server,
//! the simulator's URL for the simulator.
//!
//! What is compared: HTTP status, Content-Type, and for `Status` bodies the `status`,
//! `reason`, `message`, `details` and `code` (with each backend's names and UIDs put back to
//! their placeholders); for every other body its SHAPE — the set of JSON paths and the type
//! found at each, not the values. Some answers are compared by value after a view picks the
//! part that must agree exactly (discovery entries, Table column definitions). Watches are
//! compared as the sequence of event types (repeats folded) and the shape of each type's
//! objects.
//!
//! Normalised before comparing, because it legitimately differs or is not part of the API:
//! - `metadata.managedFields`: the simulator keeps no field ownership (server-side apply's
//!   bookkeeping); no client of this project reads it and kubectl hides it;
//! - values (uids, timestamps, resourceVersions, generated names, IPs): only shapes compare;
//! - what the scenario loader adds on the real cluster for KWOK: the label
//!   `sim.termguard.io/scenario`, the node label `type: kwok`, the node annotation
//!   `kwok.x-k8s.io/node`;
//! - what KWOK, standing in for the kubelets, writes and a kubelet does not: a node's
//!   `status.phase: Running` (deprecated, never set by kubelets);
//! - the keys of `status.disruptedPods` (pod names).
//!
//! Every difference is either fixed in the simulator or listed, with why it does not matter,
//! in `conformance/known-differences.md`; the test fails on a difference that is neither, and
//! on a listed one that no longer occurs. It prints one row per case and the fidelity figure:
//! answers that matched exactly / answers.
//!
//! Runs when `TERMGUARD_CLUSTER_DIR` names a running control plane:
//! `scripts/cluster.sh up DIR`, then
//! `TERMGUARD_CLUSTER_DIR=DIR cargo test -p termguard --test conformance -- --nocapture`.
//! Without one it is skipped (and fails if `TERMGUARD_REQUIRE_REAL_CLUSTER=1`).

use axum::body::HttpBody;
use axum::http::{Method, Request};
use kube_sim::scenario::Scenario;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use termguard::kwok;

const SCENARIO: &str = include_str!("conformance/scenario.yaml");
const KNOWN: &str = include_str!("conformance/known-differences.md");

/// Nodes of the scenario, by role in the cases.
const NODE_A: &str = "ip-10-0-1-10.ec2.internal";
const NODE_B: &str = "ip-10-0-1-11.ec2.internal";
const NODE_C: &str = "ip-10-0-2-10.ec2.internal";
/// Label on every object a case creates, so the wipe finds them.
const CASE_LABEL: &str = "conformance.termguard.io/case";

const KUBECTL_ACCEPT_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const KUBECTL_ACCEPT_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
const KUBECTL_ACCEPT_PROTOBUF: &str = "application/vnd.kubernetes.protobuf,application/json";

#[path = "conformance/cases.rs"]
mod cases;
#[path = "conformance/client.rs"]
mod client;
#[path = "conformance/compare.rs"]
mod compare;

use cases::*;
use client::*;
use compare::*;

// ---------------------------------------------------------------------------------------------
// Setting up and tearing down

fn real_cluster_dir() -> Option<PathBuf> {
    std::env::var_os("TERMGUARD_CLUSTER_DIR")
        .map(PathBuf::from)
        .filter(|d| d.join("kubeconfig").exists())
}

fn env_value(dir: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("env")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

async fn real_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig valid");
    // The raw answers are the point: kube must not retry a 429 by itself.
    config.default_retry = false;
    kube::Client::try_from(config).expect("kube client")
}

fn sim_client(sim: &kube_sim::Sim) -> kube::Client {
    let mut config = kube::Config::new(sim.url().parse().expect("simulator URL"));
    config.default_retry = false;
    kube::Client::try_from(config).expect("kube client")
}

/// Deletes what this suite (or an earlier test) left on the real cluster: the scenario
/// namespaces' workloads, pods and Events, the cases' ConfigMaps, every Node.
async fn wipe(c: &Ctx) {
    let now = "gracePeriodSeconds=0&propagationPolicy=Background";
    for ns in ["default", "kube-system"] {
        for res in [
            "apis/apps/v1/namespaces/NS/deployments",
            "apis/apps/v1/namespaces/NS/statefulsets",
            "apis/apps/v1/namespaces/NS/daemonsets",
            "apis/apps/v1/namespaces/NS/replicasets",
            "apis/policy/v1/namespaces/NS/poddisruptionbudgets",
            "api/v1/namespaces/NS/pods",
            "api/v1/namespaces/NS/events",
        ] {
            let path = format!("/{}?{now}", res.replace("NS", ns));
            c.try_send(req(Method::DELETE, &path)).await;
        }
    }
    c.try_send(req(
        Method::DELETE,
        &format!("/api/v1/namespaces/default/configmaps?labelSelector={CASE_LABEL}&{now}"),
    ))
    .await;
    c.try_send(req(Method::DELETE, &format!("/api/v1/nodes?{now}")))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pods = items(&c.must(get("/api/v1/pods")).await);
        let nodes = items(&c.must(get("/api/v1/nodes")).await);
        if pods.is_empty() && nodes.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} pods and {} nodes would not go",
            pods.len(),
            nodes.len()
        );
        for p in pods {
            let path = format!(
                "/api/v1/namespaces/{}/pods/{}?gracePeriodSeconds=0",
                p["metadata"]["namespace"].as_str().unwrap_or(""),
                p["metadata"]["name"].as_str().unwrap_or("")
            );
            c.try_send(req(Method::DELETE, &path)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until both budgets have been counted over Ready pods.
async fn settle(c: &Ctx) {
    c.wait_pods("app%3Dweb", 3).await;
    c.wait_pods("app%3Ddb", 2).await;
    c.wait_budget("web", 1, 3).await;
    c.wait_budget("db", 0, 2).await;
}

// ---------------------------------------------------------------------------------------------
// The test

struct Row {
    case: String,
    answers: usize,
    matched: usize,
    compared: BTreeSet<&'static str>,
    known: Vec<String>,
    unexplained: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_answers_like_the_real_control_plane() {
    let Some(dir) = real_cluster_dir() else {
        assert!(
            std::env::var("TERMGUARD_REQUIRE_REAL_CLUSTER").as_deref() != Ok("1"),
            "conformance: TERMGUARD_REQUIRE_REAL_CLUSTER=1 but TERMGUARD_CLUSTER_DIR names no control plane"
        );
        eprintln!(
            "conformance: skipped (start a control plane with scripts/cluster.sh up DIR and set TERMGUARD_CLUSTER_DIR=DIR)"
        );
        return;
    };
    let scenario = Scenario::from_yaml(SCENARIO).expect("conformance scenario");
    let mut known = read_known();

    // The real control plane, wiped and loaded.
    let admin = real_client(&dir.join("kubeconfig")).await;
    let mut real = Ctx {
        name: "real",
        client: admin.clone(),
        vars: BTreeMap::new(),
        answers: Vec::new(),
        sim: None,
        etcd: env_value(&dir, "ETCD_PORT").map(|p| format!("127.0.0.1:{p}")),
    };
    wipe(&real).await;
    let applied = kwok::apply(&admin, &scenario)
        .await
        .expect("scenario applied to the real cluster");
    kwok::wait_settled(&admin, &applied, Duration::from_secs(120))
        .await
        .expect("the scenario settles on the real cluster");

    // The simulator, loaded with the same scenario.
    let sim = kube_sim::Sim::start(&scenario, "127.0.0.1:0".parse().expect("loopback"))
        .await
        .expect("kube-sim starts");
    assert!(
        sim.wait_settled(Duration::from_secs(60)).await,
        "the scenario settles on the simulator"
    );
    let mut simc = Ctx {
        name: "sim",
        client: sim_client(&sim),
        vars: BTreeMap::new(),
        answers: Vec::new(),
        sim: Some(sim),
        etcd: None,
    };
    settle(&real).await;
    settle(&simc).await;
    for c in [&mut real, &mut simc] {
        for node in [NODE_A, NODE_B, NODE_C] {
            let n = c.must(get(&format!("/api/v1/nodes/{node}"))).await;
            c.bind(
                &format!("uid of {node}"),
                n["metadata"]["uid"].as_str().unwrap_or(""),
            );
        }
    }

    let mut rows = Vec::new();
    for case in CASES {
        real.answers.clear();
        simc.answers.clear();
        run_case(case, &mut real).await;
        run_case(case, &mut simc).await;
        assert_eq!(
            real.answers.len(),
            simc.answers.len(),
            "{case}: the backends gave different numbers of answers"
        );
        let mut row = Row {
            case: case.to_string(),
            answers: real.answers.len(),
            matched: 0,
            compared: BTreeSet::new(),
            known: Vec::new(),
            unexplained: Vec::new(),
        };
        for ((label, r), (_, s)) in real.answers.iter().zip(&simc.answers) {
            let id = if label.is_empty() {
                case.to_string()
            } else {
                format!("{case} / {label}")
            };
            row.compared.extend(aspects(r));
            let diffs = compare(r, &real, s, &simc);
            if diffs.is_empty() {
                row.matched += 1;
            }
            for d in diffs {
                match known
                    .iter_mut()
                    .find(|k| glob(&k.case, &id) && glob(&k.diff, &d))
                {
                    Some(k) => {
                        k.seen = true;
                        row.known.push(format!("{id}: {d}"));
                    }
                    None => row.unexplained.push(format!("{id}: {d}")),
                }
            }
        }
        rows.push(row);
    }

    // Leave the real cluster as clean as we found it.
    wipe(&real).await;

    print_report(&rows, &known);
    let unexplained: Vec<&String> = rows.iter().flat_map(|r| &r.unexplained).collect();
    let stale: Vec<&Known> = known.iter().filter(|k| !k.seen).collect();
    assert!(
        unexplained.is_empty() && stale.is_empty(),
        "{} differences are neither fixed nor listed in tests/conformance/known-differences.md, and {} listed ones no longer occur (see the report above)",
        unexplained.len(),
        stale.len()
    );
}

fn print_report(rows: &[Row], known: &[Known]) {
    let width = rows.iter().map(|r| r.case.len()).max().unwrap_or(10);
    println!("\n{:width$}  matched  result", "case");
    let order = [
        "code",
        "content-type",
        "Status",
        "values",
        "events",
        "shape",
        "text",
        "body",
    ];
    let list = |set: &BTreeSet<&str>| {
        order
            .iter()
            .filter(|a| set.contains(*a))
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    };
    for r in rows {
        let aspect = |l: &String| aspect_of(l.split_once(": ").map_or("", |(_, d)| d));
        let known: BTreeSet<&str> = r.known.iter().map(aspect).collect();
        let unexplained: BTreeSet<&str> = r.unexplained.iter().map(aspect).collect();
        let same: BTreeSet<&str> = r
            .compared
            .iter()
            .filter(|a| !known.contains(*a) && !unexplained.contains(*a))
            .copied()
            .collect();
        let mut result = format!("same: {}", list(&same));
        if !known.is_empty() {
            result.push_str(&format!("; differ (known): {}", list(&known)));
        }
        if !unexplained.is_empty() {
            result.push_str(&format!("; differ (UNEXPLAINED): {}", list(&unexplained)));
        }
        println!(
            "{:width$}  {:>3}/{:<3}  {result}",
            r.case, r.matched, r.answers
        );
    }
    let total: usize = rows.iter().map(|r| r.answers).sum();
    let matched: usize = rows.iter().map(|r| r.matched).sum();
    println!("\nknown differences:");
    for r in rows {
        for k in &r.known {
            println!("  {k}");
        }
    }
    let unexplained: Vec<&String> = rows.iter().flat_map(|r| &r.unexplained).collect();
    if !unexplained.is_empty() {
        println!("\nUNEXPLAINED differences (fix the simulator or list them, with why):");
        for u in &unexplained {
            println!("  {u}");
        }
    }
    for k in known.iter().filter(|k| !k.seen) {
        println!(
            "\nlisted but no longer seen (remove it from known-differences.md): | {} | {} | {} |",
            k.case, k.diff, k.why
        );
    }
    println!(
        "\nfidelity: {matched}/{total} ({:.1}%)",
        100.0 * matched as f64 / total.max(1) as f64
    );
}
