//! [`Activities`] over the Auto Scaling API: why an instance is going, from the scaling activity
//! that terminates it (`DescribeScalingActivities`;
//! `docs/aws-semantics.md#scaling-activity-causes`).
//!
//! A scale-in of many instances sends a burst of notices for one group; each would list the
//! same activities. Lookups are therefore single-flight per group and reuse a listing for a few
//! seconds: a burst costs a few calls instead of one per instance (Auto Scaling's API is rate
//! limited per account).

use super::sdk::classify_sdk;
use super::{Activities, ActivityCause};
use crate::notice::{Cause, GroupName, InstanceId};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pages of 100 activities read before giving up on finding the instance's (bounded: the
/// activity of a waiting instance is in progress, and AWS lists those first).
const MAX_PAGES: usize = 3;

/// How long a group's listing answers lookups before it is read again.
const FRESH: Duration = Duration::from_secs(5);

/// One activity as the lookup needs it: start time (epoch seconds), description, cause.
type Row = (i64, String, Option<String>);

/// A group's activities as last listed.
struct Listing {
    at: Instant,
    rows: Vec<Row>,
}

/// Scaling-activity lookups through the AWS SDK.
pub struct SdkActivities {
    client: aws_sdk_autoscaling::Client,
    groups: Mutex<HashMap<GroupName, Arc<tokio::sync::Mutex<Option<Listing>>>>>,
}

impl SdkActivities {
    /// Calls go through `client`.
    pub fn new(client: aws_sdk_autoscaling::Client) -> Self {
        SdkActivities {
            client,
            groups: Mutex::default(),
        }
    }

    fn slot(&self, group: &GroupName) -> Arc<tokio::sync::Mutex<Option<Listing>>> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.entry(group.clone()).or_default().clone()
    }

    /// Lists the group's activities, page by page, until one explains `instance`.
    async fn list(&self, group: &GroupName, instance: &InstanceId) -> Result<Vec<Row>, String> {
        let mut rows: Vec<Row> = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .client
                .describe_scaling_activities()
                .auto_scaling_group_name(group.as_str())
                .max_records(100)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "DescribeScalingActivities for {group}: {}",
                        classify_sdk(&e)
                    )
                })?;
            rows.extend(out.activities().iter().map(|a| {
                (
                    a.start_time().map_or(i64::MIN, |t| t.secs()),
                    a.description().unwrap_or_default().to_string(),
                    a.cause().map(str::to_string),
                )
            }));
            if newest_cause(borrowed(&rows), instance).is_some() {
                break;
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(rows)
    }
}

fn borrowed(rows: &[Row]) -> impl Iterator<Item = (i64, &str, Option<&str>)> {
    rows.iter().map(|(t, d, c)| (*t, d.as_str(), c.as_deref()))
}

/// Whether an activity's `Description` (`Terminating EC2 instance: i-…`) names the instance.
pub fn names_instance(description: &str, instance: &InstanceId) -> bool {
    description
        .split(|c: char| c.is_whitespace() || c == ':' || c == ',')
        .any(|word| word == instance.as_str())
}

/// The newest of `activities` (start time, description, cause) that terminates the instance
/// (`Terminating EC2 instance: i-…`) and carries a cause. On equal start times the one listed
/// first wins: AWS lists in-progress activities first.
pub fn newest_cause<'a>(
    activities: impl IntoIterator<Item = (i64, &'a str, Option<&'a str>)>,
    instance: &InstanceId,
) -> Option<ActivityCause> {
    let mut best: Option<(i64, &str)> = None;
    for (start, description, cause) in activities {
        let Some(cause) = cause.filter(|c| !c.is_empty()) else {
            continue;
        };
        if !description.starts_with("Terminating") || !names_instance(description, instance) {
            continue;
        }
        if best.is_none_or(|(t, _)| start > t) {
            best = Some((start, cause));
        }
    }
    best.map(|(_, text)| ActivityCause {
        cause: Cause::from_activity_cause(text),
        text: text.to_string(),
    })
}

impl Activities for SdkActivities {
    fn termination_cause<'a>(
        &'a self,
        group: &'a GroupName,
        instance: &'a InstanceId,
    ) -> BoxFuture<'a, Result<Option<ActivityCause>, String>> {
        async move {
            let slot = self.slot(group);
            // Single flight per group: concurrent lookups wait for one listing and share it.
            let mut listing = slot.lock().await;
            if let Some(l) = listing.as_ref().filter(|l| l.at.elapsed() < FRESH) {
                if let Some(found) = newest_cause(borrowed(&l.rows), instance) {
                    return Ok(Some(found));
                }
            }
            let rows = self.list(group, instance).await?;
            let found = newest_cause(borrowed(&rows), instance);
            *listing = Some(Listing {
                at: Instant::now(),
                rows,
            });
            Ok(found)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> InstanceId {
        s.parse().expect("instance id")
    }

    #[test]
    fn descriptions_name_the_instance_exactly() {
        let i = id("i-0123456789abcdef0");
        assert!(names_instance(
            "Terminating EC2 instance: i-0123456789abcdef0",
            &i
        ));
        assert!(!names_instance(
            "Terminating EC2 instance: i-0123456789abcdef01",
            &i
        ));
        assert!(!names_instance("Launching a new EC2 instance: i-0aaa", &i));
    }

    #[test]
    fn the_newest_activity_naming_the_instance_explains_it() {
        let i = id("i-0123456789abcdef0");
        let launch = "At 2024-05-14T08:00:00Z an instance was started in response to a difference between desired and actual capacity, increasing the capacity from 0 to 6.";
        let rebalance = "At 2024-05-14T09:05:00Z instances were launched to balance instances in zones us-east-1c with other zones resulting in more than desired number of instances in the group.";
        let other = "At 2024-05-14T09:06:00Z instance i-0fff was taken out of service in response to a user request.";
        let rows = vec![
            (300, "Terminating EC2 instance: i-0fff", Some(other)),
            (
                200,
                "Launching a new EC2 instance: i-0123456789abcdef0",
                Some(launch),
            ),
            (
                200,
                "Terminating EC2 instance: i-0123456789abcdef0",
                Some(rebalance),
            ),
            (
                100,
                "Launching a new EC2 instance: i-0123456789abcdef0",
                Some(launch),
            ),
        ];
        let found = newest_cause(rows.clone(), &i).expect("found");
        assert_eq!(found.cause, Cause::AzRebalance);
        assert_eq!(found.text, rebalance);
        assert_eq!(newest_cause(rows, &id("i-0abc")), None);
    }
}
