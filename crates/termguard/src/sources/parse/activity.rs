//! Auto Scaling "EC2 Instance Terminate Successful" events: the scaling activity that ended an
//! instance. Informational (no token, sent after the lifecycle action ends), but the only
//! message that says *why* — the cause text that tells an AZRebalance from a scale-in.

use serde::Deserialize;
use serde_json::Value;

use super::state_change::state_notice;
use super::{from_value, instance_id, Meta, ParseError};
use crate::notice::{Cause, Deadline, DeadlineBasis, InstanceState, Notice};

/// `detail-type` of a successful scale-in activity.
pub(super) const DETAIL_TYPE: &str = "EC2 Instance Terminate Successful";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Detail {
    #[serde(rename = "EC2InstanceId")]
    instance_id: Option<String>,
    cause: Option<String>,
}

/// Reads the `detail` of a "Terminate Successful" event as a state change to `terminated`,
/// since the node is gone and only cleanup (and reporting the cause) is left.
pub(super) fn from_eventbridge(detail: Value, meta: Meta) -> Result<Notice, ParseError> {
    let detail: Detail = from_value("detail", detail)?;
    let instance = instance_id("detail.EC2InstanceId", detail.instance_id)?;
    let cause = detail
        .cause
        .filter(|text| !text.is_empty())
        .map(|text| Cause::from_activity_cause(&text));
    let deadline = Deadline {
        at: meta.event_time,
        basis: DeadlineBasis::Immediate,
    };
    Ok(state_notice(
        instance,
        InstanceState::Terminated,
        cause,
        Some(deadline),
        meta,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ts};
    use super::*;
    use crate::notice::{NoticeKind, ScaleInTrigger};

    #[test]
    fn terminate_successful_reports_a_terminated_instance_with_its_classified_cause() {
        let n = parse(fixture!("eventbridge-asg-terminate-successful.json")).unwrap();
        assert_eq!(
            n.kind,
            NoticeKind::StateChange {
                state: InstanceState::Terminated
            }
        );
        assert_eq!(n.instance.unwrap().as_str(), "i-0123456789abcdef0");
        assert_eq!(n.cause, Some(Cause::ScaleIn(ScaleInTrigger::Policy)));
        assert_eq!(n.event_time, ts("2024-05-14T09:19:55Z"));
        assert_eq!(
            n.deadline,
            Some(Deadline {
                at: ts("2024-05-14T09:19:55Z"),
                basis: DeadlineBasis::Immediate
            })
        );
        assert_eq!(n.hook, None);
    }

    #[test]
    fn terminate_successful_after_az_rebalance_names_the_incident_cause() {
        let body = br#"{"detail-type":"EC2 Instance Terminate Successful","source":"aws.autoscaling",
            "time":"2024-05-14T09:19:55Z","detail":{"EC2InstanceId":"i-0123456789abcdef0",
            "Cause":"At 2024-05-14T09:05:00Z instances were launched to balance instances in zones null with other zones resulting in more than desired number of instances in the group."}}"#;
        assert_eq!(parse(body).unwrap().cause, Some(Cause::AzRebalance));
    }
}
