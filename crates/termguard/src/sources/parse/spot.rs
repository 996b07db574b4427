//! EC2 Spot Instance interruption warnings (EventBridge `aws.ec2`).

use serde::Deserialize;
use serde_json::Value;

use super::{after, from_value, instance_id, Meta, ParseError};
use crate::notice::{Cause, Deadline, DeadlineBasis, Notice, NoticeKind, SpotAction, SPOT_WARNING};

/// `detail-type` of a Spot interruption warning.
pub(super) const DETAIL_TYPE: &str = "EC2 Spot Instance Interruption Warning";

#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "instance-id")]
    instance_id: Option<String>,
    #[serde(rename = "instance-action")]
    instance_action: Option<String>,
}

/// Reads `instance-action` (the same values as the IMDS `spot/instance-action` `action`).
pub(super) fn action(value: &str) -> SpotAction {
    match value {
        "terminate" => SpotAction::Terminate,
        "stop" => SpotAction::Stop,
        "hibernate" => SpotAction::Hibernate,
        other => SpotAction::Unknown(other.to_owned()),
    }
}

/// Reads the `detail` of a Spot interruption warning.
pub(super) fn from_eventbridge(detail: Value, meta: Meta) -> Result<Notice, ParseError> {
    let detail: Detail = from_value("detail", detail)?;
    let instance = instance_id("detail.instance-id", detail.instance_id)?;
    // Strict on what the drain needs (the instance, the event's time), lenient on the rest: a
    // warning without its action still means the instance goes in two minutes — drained as
    // for a termination.
    let action = detail
        .instance_action
        .as_deref()
        .map_or(SpotAction::Terminate, action);
    // The event carries no action time (only IMDS does): the action comes about two minutes
    // after the event, except hibernation, which gets no warning period
    // (`docs/aws-semantics.md#spot-interruption-warning`).
    let deadline = if action == SpotAction::Hibernate {
        Deadline {
            at: meta.event_time,
            basis: DeadlineBasis::Immediate,
        }
    } else {
        Deadline {
            at: after("time", meta.event_time, SPOT_WARNING)?,
            basis: DeadlineBasis::SpotWarning,
        }
    };
    Ok(Notice {
        kind: NoticeKind::SpotInterruption { action },
        instance: Some(instance),
        cause: Some(Cause::SpotInterruption),
        event_time: meta.event_time,
        deadline: Some(deadline),
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
    fn spot_warning_gives_two_minutes_from_the_event_time() {
        let n = parse(fixture!("eventbridge-spot-interruption-warning.json")).unwrap();
        assert_eq!(
            n.kind,
            NoticeKind::SpotInterruption {
                action: SpotAction::Terminate
            }
        );
        assert_eq!(n.instance.unwrap().as_str(), "i-0123456789abcdef0");
        assert_eq!(n.cause, Some(Cause::SpotInterruption));
        assert_eq!(n.event_time, ts("2024-05-14T10:02:00Z"));
        assert_eq!(
            n.deadline,
            Some(Deadline {
                at: ts("2024-05-14T10:04:00Z"),
                basis: DeadlineBasis::SpotWarning
            })
        );
        assert_eq!(n.hook, None);
    }

    #[test]
    fn spot_hibernation_has_no_warning_period() {
        let body = br#"{"detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2",
            "time":"2024-05-14T10:02:00Z","detail":{"instance-id":"i-0123456789abcdef0","instance-action":"hibernate"}}"#;
        let n = parse(body).unwrap();
        assert_eq!(
            n.kind,
            NoticeKind::SpotInterruption {
                action: SpotAction::Hibernate
            }
        );
        assert_eq!(
            n.deadline,
            Some(Deadline {
                at: ts("2024-05-14T10:02:00Z"),
                basis: DeadlineBasis::Immediate
            })
        );
    }

    #[test]
    fn spot_warning_without_its_action_is_still_a_two_minute_warning() {
        let body = br#"{"detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2",
            "time":"2024-05-14T10:02:00Z","detail":{"instance-id":"i-0123456789abcdef0"}}"#;
        let n = parse(body).unwrap();
        assert_eq!(
            n.kind,
            NoticeKind::SpotInterruption {
                action: SpotAction::Terminate
            }
        );
        assert_eq!(n.deadline.map(|d| d.at), Some(ts("2024-05-14T10:04:00Z")));
    }

    #[test]
    fn spot_warning_without_instance_id_is_a_missing_field() {
        let body = br#"{"detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2",
            "time":"2024-05-14T10:02:00Z","detail":{"instance-action":"terminate"}}"#;
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
        assert_eq!(err.label(), "missing-field");
        assert!(!err.is_not_actionable());
    }

    #[test]
    fn spot_warning_naming_a_non_instance_is_rejected() {
        let body = br#"{"detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2",
            "time":"2024-05-14T10:02:00Z","detail":{"instance-id":"sir-abc","instance-action":"terminate"}}"#;
        let err = parse(body).unwrap_err();
        assert!(
            matches!(&err, ParseError::InvalidInstanceId { value, .. } if value == "sir-abc"),
            "{err:?}"
        );
    }
}
