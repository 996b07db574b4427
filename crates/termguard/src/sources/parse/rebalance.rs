//! EC2 instance rebalance recommendations (EventBridge `aws.ec2`).

use serde::Deserialize;
use serde_json::Value;

use super::{from_value, instance_id, Meta, ParseError};
use crate::notice::{Cause, Notice, NoticeKind};

/// `detail-type` of a rebalance recommendation.
pub(super) const DETAIL_TYPE: &str = "EC2 Instance Rebalance Recommendation";

#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "instance-id")]
    instance_id: Option<String>,
}

/// Reads the `detail` of a rebalance recommendation.
pub(super) fn from_eventbridge(detail: Value, meta: Meta) -> Result<Notice, ParseError> {
    let detail: Detail = from_value("detail", detail)?;
    let instance = instance_id("detail.instance-id", detail.instance_id)?;
    Ok(Notice {
        kind: NoticeKind::RebalanceRecommendation,
        instance: Some(instance),
        cause: Some(Cause::RebalanceRecommendation),
        event_time: meta.event_time,
        // A risk signal, not a schedule: it may come long before an interruption, or with none
        // at all (`docs/aws-semantics.md#rebalance-recommendation`), so there is no deadline.
        deadline: None,
        hook: None,
        source: meta.source,
        event_id: meta.event_id,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ts};
    use super::*;

    #[test]
    fn rebalance_recommendation_has_a_cause_but_no_deadline() {
        let n = parse(fixture!("eventbridge-rebalance-recommendation.json")).unwrap();
        assert_eq!(n.kind, NoticeKind::RebalanceRecommendation);
        assert_eq!(n.instance.unwrap().as_str(), "i-0123456789abcdef0");
        assert_eq!(n.cause, Some(Cause::RebalanceRecommendation));
        assert_eq!(n.event_time, ts("2024-05-14T09:55:31Z"));
        assert_eq!(n.deadline, None);
        assert_eq!(n.hook, None);
    }

    #[test]
    fn instance_id_is_never_taken_from_resources() {
        let body = br#"{"detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2",
            "time":"2024-05-14T09:55:31Z","resources":["arn:aws:ec2:us-east-1b:instance/i-0123456789abcdef0"],"detail":{}}"#;
        let err = parse(body).unwrap_err();
        assert!(
            matches!(
                err,
                ParseError::MissingField {
                    field: "detail.instance-id"
                }
            ),
            "{err:?}"
        );
    }
}
