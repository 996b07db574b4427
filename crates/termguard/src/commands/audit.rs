//! `termguard audit`: read, judge, print (`docs/audit.md`).

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

/// Instance id → node name, from the cluster's Nodes.
async fn cluster_nodes(args: &AuditArgs) -> anyhow::Result<HashMap<String, String>> {
    let client = super::kube_client(&args.kube).await?;
    let nodes: Api<Node> = Api::all(client);
    let list = nodes.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter_map(|n| {
            let id = instance_of_provider_id(n.spec.as_ref()?.provider_id.as_deref()?)?;
            Some((id.to_string(), n.metadata.name.clone()?))
        })
        .collect())
}

async fn run(args: &AuditArgs) -> anyhow::Result<Report> {
    let tags = ClusterTags::new(
        args.cluster_name.as_deref(),
        args.managed_asg_tag.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let mut report = Report::default();
    let nodes = if args.no_cluster {
        HashMap::new()
    } else {
        match cluster_nodes(args).await {
            Ok(n) => n,
            Err(e) => {
                report.unreadable.push(format!(
                    "the cluster's nodes: {e:#} (give --no-cluster to audit AWS only)"
                ));
                HashMap::new()
            }
        }
    };
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
    let ctx = Context {
        tags,
        queue_known: routing.queue.is_some(),
    };
    let now = jiff::Timestamp::now();
    let since = now
        .checked_sub(jiff::SignedDuration::from_hours(24 * history::KEPT_DAYS))
        .unwrap_or(now);
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
    }
    report.findings.extend(rules::queue_findings(&routing));
    report.groups = scoped;
    report.sort();
    Ok(report)
}
