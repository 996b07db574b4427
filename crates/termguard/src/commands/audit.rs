//! `termguard audit`: read, judge, print (`docs/audit.md`).

use crate::audit::cluster::{self, ClusterFacts};
use crate::audit::collect::{self, Clients};
use crate::audit::rules::{self, Context};
use crate::audit::{history, output, Report};
use crate::aws::groups::ClusterTags;
use crate::cli::AuditArgs;
use crate::cluster::index::instance_of_provider_id;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use std::collections::{HashMap, HashSet};

/// Runs the audit and prints its report; returns the exit status.
pub async fn audit(args: &AuditArgs) -> i32 {
    match run(args).await {
        Ok(report) => {
            print!("{}", output::render(&report, args.output));
            match (args.fail_on, report.worst()) {
                (Some(bar), Some(worst)) if worst >= bar => 1,
                _ => 0,
            }
        }
        Err(e) => {
            eprintln!("termguard audit: {e:#}");
            2
        }
    }
}

/// What the cluster rules read: Nodes, Pods, PodDisruptionBudgets, Deployments, StatefulSets.
/// The Nodes are needed; each other list that cannot be read is reported and left empty.
async fn cluster_facts(
    args: &AuditArgs,
    unreadable: &mut Vec<String>,
) -> anyhow::Result<ClusterFacts> {
    let client = super::kube_client(&args.kube).await?;
    let lp = ListParams::default();
    let nodes = Api::<Node>::all(client.clone()).list(&lp).await?.items;
    async fn all<K>(client: &kube::Client, what: &str, unreadable: &mut Vec<String>) -> Vec<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match Api::<K>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                unreadable.push(format!("the cluster's {what}: {e}"));
                Vec::new()
            }
        }
    }
    Ok(ClusterFacts {
        nodes,
        pods: all(&client, "pods", unreadable).await,
        budgets: all(&client, "PodDisruptionBudgets", unreadable).await,
        deployments: all(&client, "Deployments", unreadable).await,
        statefulsets: all(&client, "StatefulSets", unreadable).await,
    })
}

/// Instance id → node name.
fn nodes_by_instance(facts: &ClusterFacts) -> HashMap<String, String> {
    facts
        .nodes
        .iter()
        .filter_map(|n| {
            let id = instance_of_provider_id(n.spec.as_ref()?.provider_id.as_deref()?)?;
            Some((id.to_string(), n.metadata.name.clone()?))
        })
        .collect()
}

async fn run(args: &AuditArgs) -> anyhow::Result<Report> {
    let tags = ClusterTags::new(
        args.cluster_name.as_deref(),
        args.managed_asg_tag.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let mut report = Report::default();
    let cluster = if args.no_cluster {
        None
    } else {
        match cluster_facts(args, &mut report.unreadable).await {
            Ok(f) => Some(f),
            Err(e) => {
                report.unreadable.push(format!(
                    "the cluster: {e:#} (give --no-cluster to audit AWS only)"
                ));
                None
            }
        }
    };
    let nodes = cluster.as_ref().map(nodes_by_instance).unwrap_or_default();
    if args.groups.is_empty() && !tags.is_configured() && nodes.is_empty() {
        anyhow::bail!(
            "no group to audit: name groups with --group, the cluster with --cluster-name, or \
             let the audit read the cluster's nodes{}",
            report
                .unreadable
                .first()
                .map(|u| format!(" (could not read {u})"))
                .unwrap_or_default()
        );
    }
    let aws = crate::aws::sdk::config_loader().load().await;
    let clients = Clients::new(&aws);
    let node_instances: HashSet<String> = nodes.keys().cloned().collect();
    let (scoped, described) = collect::groups(&clients, &args.groups, &tags, &node_instances)
        .await
        .map_err(anyhow::Error::msg)?;
    for name in &args.groups {
        if !scoped.iter().any(|s| &s.group == name) {
            report
                .unreadable
                .push(format!("group {name}: no such Auto Scaling group"));
        }
    }
    let routing =
        collect::routing(&clients, args.queue_url.as_deref(), &mut report.unreadable).await;
    let ctx = Context { tags };
    let now = jiff::Timestamp::now();
    let since = now
        .checked_sub(jiff::SignedDuration::from_hours(24 * history::KEPT_DAYS))
        .unwrap_or(now);
    let mut audited = Vec::new();
    for (scope, described) in scoped.iter().zip(&described) {
        let mut group = collect::group(&clients, described, &mut report.unreadable).await;
        group.has_cluster_nodes = scope
            .reasons
            .contains(&crate::audit::facts::Reason::HasNodes);
        report
            .findings
            .extend(rules::group_findings(&group, &routing, &ctx));
        match collect::activities(&clients, &group.name, since).await {
            Ok(activities) => report
                .history
                .push(history::of(&group, &activities, &nodes, now)),
            Err(e) => report.unreadable.push(e),
        }
        audited.push(group);
    }
    report.findings.extend(rules::queue_findings(&routing));
    if let Some(queue) = &routing.queue {
        let replicas = cluster.as_ref().map(|f| cluster::replicas(f, &queue.url));
        report
            .findings
            .extend(rules::consumer_findings(queue, replicas.as_ref()));
    }
    if let Some(facts) = &cluster {
        report.findings.extend(cluster::findings(facts, &audited));
    }
    report.groups = scoped;
    report.sort();
    Ok(report)
}
