//! [`Groups`] over the Auto Scaling API: a group is one this cluster manages when one of its
//! tags names this cluster (`DescribeAutoScalingGroups`). The tags that count are the ones that
//! carry the cluster's name — `termguard.io/cluster=NAME`, the `kubernetes.io/cluster/NAME`
//! key that EKS and the cloud provider set, `eks:cluster-name=NAME` on EKS managed node groups —
//! or one `KEY=VALUE` the operator names. A bare key is never enough: every cluster's groups
//! could carry it, and cluster A would complete cluster B's lifecycle actions (NTH's
//! `aws-node-termination-handler/managed` tag has this flaw). Answers are cached: tags change
//! rarely, and a burst of notices for one group must not become a burst of calls.

use super::sdk::classify_sdk;
use super::Groups;
use crate::notice::GroupName;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// termguard's own cluster tag key: `termguard.io/cluster=NAME`.
pub const CLUSTER_TAG: &str = "termguard.io/cluster";
/// The prefix of the tag key EKS and the Kubernetes cloud provider use: `kubernetes.io/cluster/NAME`.
pub const KUBERNETES_CLUSTER_TAG_PREFIX: &str = "kubernetes.io/cluster/";
/// The tag EKS managed node groups carry: `eks:cluster-name=NAME`.
pub const EKS_CLUSTER_TAG: &str = "eks:cluster-name";

/// How long an answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// The tags that mark a group as this cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTags {
    /// The cluster's name (`--cluster-name`): the cluster-naming tags above.
    pub cluster: Option<String>,
    /// One more `KEY=VALUE` that marks a group as this cluster's (`--managed-asg-tag`).
    pub extra: Option<(String, String)>,
}

impl ClusterTags {
    /// The tags of the cluster named `cluster` (when given) and the extra `KEY=VALUE` (when given).
    pub fn new(cluster: Option<&str>, extra: Option<&str>) -> Result<Self, String> {
        let cluster = cluster.map(str::trim).filter(|c| !c.is_empty());
        let extra = match extra.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match s.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    Some((k.trim().to_string(), v.trim().to_string()))
                }
                _ => {
                    return Err(format!(
                        "--managed-asg-tag {s:?}: give KEY=VALUE with a value that names this cluster; \
                         a bare key matches every cluster's groups that carry it"
                    ))
                }
            },
        };
        Ok(ClusterTags {
            cluster: cluster.map(str::to_string),
            extra,
        })
    }

    /// Whether any group can be recognised as this cluster's.
    pub fn is_configured(&self) -> bool {
        self.cluster.is_some() || self.extra.is_some()
    }

    /// Whether a group with these tags (key, value) is this cluster's.
    pub fn matches<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        tags.into_iter().any(|(k, v)| {
            let by_name = self.cluster.as_deref().is_some_and(|name| {
                (k == CLUSTER_TAG || k == EKS_CLUSTER_TAG) && v == name
                    || k.strip_prefix(KUBERNETES_CLUSTER_TAG_PREFIX) == Some(name)
            });
            let by_extra = self
                .extra
                .as_ref()
                .is_some_and(|(key, value)| k == key && v == value);
            by_name || by_extra
        })
    }
}

impl std::fmt::Display for ClusterTags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(name) = &self.cluster {
            parts.push(format!(
                "{CLUSTER_TAG}={name}, {KUBERNETES_CLUSTER_TAG_PREFIX}{name}, {EKS_CLUSTER_TAG}={name}"
            ));
        }
        if let Some((k, v)) = &self.extra {
            parts.push(format!("{k}={v}"));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Group tag checks through the AWS SDK.
pub struct SdkGroups {
    client: aws_sdk_autoscaling::Client,
    tags: ClusterTags,
    cache: Mutex<HashMap<GroupName, (bool, Instant)>>,
}

impl SdkGroups {
    /// Checks groups for the cluster's `tags` through `client`.
    pub fn new(client: aws_sdk_autoscaling::Client, tags: ClusterTags) -> Self {
        SdkGroups {
            client,
            tags,
            cache: Mutex::default(),
        }
    }

    fn cached(&self, group: &GroupName) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(group)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(managed, _)| *managed)
    }
}

impl Groups for SdkGroups {
    fn is_managed<'a>(&'a self, group: &'a GroupName) -> BoxFuture<'a, Result<bool, String>> {
        async move {
            if !self.tags.is_configured() {
                return Ok(false);
            }
            if let Some(managed) = self.cached(group) {
                return Ok(managed);
            }
            let out = self
                .client
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(group.as_str())
                .send()
                .await
                .map_err(|e| format!("DescribeAutoScalingGroups {group}: {}", classify_sdk(&e)))?;
            // A group that no longer exists is not one we manage.
            let managed = out
                .auto_scaling_groups()
                .iter()
                .filter(|g| g.auto_scaling_group_name() == Some(group.as_str()))
                .any(|g| {
                    self.tags.matches(
                        g.tags()
                            .iter()
                            .map(|t| (t.key().unwrap_or_default(), t.value().unwrap_or_default())),
                    )
                });
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(group.clone(), (managed, Instant::now()));
            Ok(managed)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_key_is_refused_for_it_would_match_every_cluster() {
        assert!(ClusterTags::new(None, Some("termguard.io/managed")).is_err());
        assert!(ClusterTags::new(None, Some("=x")).is_err());
        assert!(ClusterTags::new(None, Some("team=")).is_err());
        let t = ClusterTags::new(Some("prod"), Some("team=platform")).expect("tags");
        assert_eq!(t.extra, Some(("team".into(), "platform".into())));
        assert!(!ClusterTags::new(None, None).expect("none").is_configured());
    }

    #[test]
    fn a_group_is_this_clusters_when_a_tag_names_the_cluster() {
        let prod = ClusterTags::new(Some("prod"), None).expect("tags");
        assert!(prod.matches([("Name", "w"), ("termguard.io/cluster", "prod")]));
        assert!(prod.matches([("kubernetes.io/cluster/prod", "owned")]));
        assert!(prod.matches([("kubernetes.io/cluster/prod", "shared")]));
        assert!(prod.matches([("eks:cluster-name", "prod")]));
        // Another cluster's groups, and the bare key every group may carry, are not ours.
        assert!(!prod.matches([("termguard.io/cluster", "staging")]));
        assert!(!prod.matches([("kubernetes.io/cluster/prod-2", "owned")]));
        assert!(!prod.matches([("termguard.io/managed", "true")]));
        assert!(!prod.matches([("Name", "prod")]));
        let extra = ClusterTags::new(None, Some("team=platform")).expect("tags");
        assert!(extra.matches([("team", "platform")]));
        assert!(!extra.matches([("team", "data")]));
        assert!(!ClusterTags::default().matches([("termguard.io/cluster", "prod")]));
    }
}
