//! EC2 instance state-change notifications (EventBridge `aws.ec2`).

use serde::Deserialize;
use serde_json::Value;

use super::{from_value, instance_id, required, Meta, ParseError};
use crate::notice::{
    Cause, Deadline, DeadlineBasis, InstanceId, InstanceState, Notice, NoticeKind,
};

/// `detail-type` of a state-change notification.
pub(super) const DETAIL_TYPE: &str = "EC2 Instance State-change Notification";

#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "instance-id")]
    instance_id: Option<String>,
    state: Option<String>,
}

/// Reads the `detail` of a state-change notification, whatever the state: whether to act is
/// [`NoticeKind::is_actionable`]'s call, so `running` and `pending` parse too.
pub(super) fn from_eventbridge(detail: Value, meta: Meta) -> Result<Notice, ParseError> {
    let detail: Detail = from_value("detail", detail)?;
    let instance = instance_id("detail.instance-id", detail.instance_id)?;
    let state = state(&required("detail.state", detail.state)?);
    // `stopping`/`shutting-down` are already happening and `stopped`/`terminated` are over
    // (`docs/aws-semantics.md#ec2-state-change`): no time is promised beyond the event itself.
    let deadline = state.is_going_away().then_some(Deadline {
        at: meta.event_time,
        basis: DeadlineBasis::Immediate,
    });
    Ok(state_notice(instance, state, None, deadline, meta))
}

/// Reads `detail.state`.
fn state(value: &str) -> InstanceState {
    match value {
        "pending" => InstanceState::Pending,
        "running" => InstanceState::Running,
        "stopping" => InstanceState::Stopping,
        "stopped" => InstanceState::Stopped,
        "shutting-down" => InstanceState::ShuttingDown,
        "terminated" => InstanceState::Terminated,
        other => InstanceState::Unknown(other.to_owned()),
    }
}

/// A state-change notice; also used for Auto Scaling's "Terminate Successful" events.
pub(super) fn state_notice(
    instance: InstanceId,
    state: InstanceState,
    cause: Option<Cause>,
    deadline: Option<Deadline>,
    meta: Meta,
) -> Notice {
    Notice {
        kind: NoticeKind::StateChange { state },
        instance: Some(instance),
        cause,
        event_time: meta.event_time,
        deadline,
        hook: None,
        source: meta.source,
        event_id: meta.event_id,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ts};
    use super::*;

    fn immediate(at: &str) -> Option<Deadline> {
        Some(Deadline {
            at: ts(at),
            basis: DeadlineBasis::Immediate,
        })
    }

    #[test]
    fn stopping_instance_is_an_actionable_state_change_due_now() {
        let n = parse(fixture!("eventbridge-state-change-stopping.json")).unwrap();
        assert_eq!(
            n.kind,
            NoticeKind::StateChange {
                state: InstanceState::Stopping
            }
        );
        assert!(n.kind.is_actionable());
        assert_eq!(n.instance.unwrap().as_str(), "i-0123456789abcdef0");
        assert_eq!(n.deadline, immediate("2024-05-14T11:00:07Z"));
        assert_eq!((n.cause, n.hook), (None, None));
    }

    #[test]
    fn shutting_down_instance_is_an_actionable_state_change_due_now() {
        let n = parse(fixture!("eventbridge-state-change-shutting-down.json")).unwrap();
        assert_eq!(
            n.kind,
            NoticeKind::StateChange {
                state: InstanceState::ShuttingDown
            }
        );
        assert!(n.kind.is_actionable());
        assert_eq!(n.instance.unwrap().as_str(), "i-0123456789abcdef0");
        assert_eq!(n.deadline, immediate("2024-05-14T11:05:19Z"));
    }

    #[test]
    fn running_instance_parses_but_is_not_actionable() {
        let n = parse(fixture!("eventbridge-state-change-running.json")).unwrap();
        assert_eq!(
            n.kind,
            NoticeKind::StateChange {
                state: InstanceState::Running
            }
        );
        assert!(!n.kind.is_actionable());
        assert_eq!(n.event_time, ts("2024-05-14T08:40:02Z"));
        assert_eq!(n.deadline, None);
    }

    #[test]
    fn state_change_without_state_is_a_missing_field() {
        let body = br#"{"detail-type":"EC2 Instance State-change Notification","source":"aws.ec2",
            "time":"2024-05-14T11:00:07Z","detail":{"instance-id":"i-0123456789abcdef0"}}"#;
        let err = parse(body).unwrap_err();
        assert!(
            matches!(
                err,
                ParseError::MissingField {
                    field: "detail.state"
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn state_of_the_wrong_json_type_is_an_invalid_shape() {
        let body = br#"{"detail-type":"EC2 Instance State-change Notification","source":"aws.ec2",
            "time":"2024-05-14T11:00:07Z","detail":{"instance-id":"i-0123456789abcdef0","state":3}}"#;
        let err = parse(body).unwrap_err();
        assert!(
            matches!(err, ParseError::InvalidShape { part: "detail", .. }),
            "{err:?}"
        );
    }
}
