//! [`Groups`] over the Auto Scaling API: a group is one this cluster manages when it carries
//! the managed tag (`DescribeAutoScalingGroups`; NTH's `aws-node-termination-handler/managed`
//! check, spec asg-and-imds.md §8). Answers are cached: tags change rarely, and a burst of
//! notices for one group must not become a burst of calls.

use super::sdk::classify_sdk;
use super::Groups;
use crate::notice::GroupName;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tag key termguard looks for by default.
pub const DEFAULT_MANAGED_TAG: &str = "termguard.io/managed";

/// How long an answer is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// The tag that marks a group as managed: a key, and optionally the value it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedTag {
    /// Tag key.
    pub key: String,
    /// Required value; any value when `None`.
    pub value: Option<String>,
}

impl ManagedTag {
    /// Reads `key` or `key=value`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
            None => (s.trim(), None),
        };
        if key.is_empty() {
            return Err(format!("{s:?}: the managed tag needs a key"));
        }
        Ok(ManagedTag {
            key: key.to_string(),
            value,
        })
    }

    /// Whether a group with these tags (key, value) is managed.
    pub fn matches<'a>(&self, tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        tags.into_iter()
            .any(|(k, v)| k == self.key && self.value.as_deref().is_none_or(|want| want == v))
    }
}

impl Default for ManagedTag {
    fn default() -> Self {
        ManagedTag {
            key: DEFAULT_MANAGED_TAG.into(),
            value: None,
        }
    }
}

impl std::fmt::Display for ManagedTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={v}", self.key),
            None => f.write_str(&self.key),
        }
    }
}

/// Group tag checks through the AWS SDK.
pub struct SdkGroups {
    client: aws_sdk_autoscaling::Client,
    tag: ManagedTag,
    cache: Mutex<HashMap<GroupName, (bool, Instant)>>,
}

impl SdkGroups {
    /// Checks groups for `tag` through `client`.
    pub fn new(client: aws_sdk_autoscaling::Client, tag: ManagedTag) -> Self {
        SdkGroups {
            client,
            tag,
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
                    self.tag.matches(
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
    fn managed_tag_parses_key_or_key_value() {
        assert_eq!(
            ManagedTag::parse("termguard.io/managed"),
            Ok(ManagedTag::default())
        );
        assert_eq!(
            ManagedTag::parse("team=platform"),
            Ok(ManagedTag {
                key: "team".into(),
                value: Some("platform".into())
            })
        );
        assert!(ManagedTag::parse("=x").is_err());
        assert_eq!(
            ManagedTag::parse("team=platform").map(|t| t.to_string()),
            Ok("team=platform".into())
        );
    }

    #[test]
    fn a_group_is_managed_when_it_carries_the_tag() {
        let any = ManagedTag::default();
        assert!(any.matches([("Name", "w"), ("termguard.io/managed", "")]));
        assert!(!any.matches([("Name", "w")]));
        let exact = ManagedTag::parse("termguard.io/managed=prod").expect("tag");
        assert!(exact.matches([("termguard.io/managed", "prod")]));
        assert!(!exact.matches([("termguard.io/managed", "staging")]));
    }
}
