//! AWS Health events (EventBridge `aws.health`): only EC2 `scheduledChange` events are acted
//! on, as NTH and Karpenter do (`tests/data/events/README.md`, health fixtures).

use jiff::fmt::rfc2822::DateTimeParser;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::{from_value, required, Meta, ParseError};
use crate::notice::{Cause, Deadline, DeadlineBasis, InstanceId, Notice, NoticeKind};

/// `detail-type` of every AWS Health event.
pub(super) const DETAIL_TYPE: &str = "AWS Health Event";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    service: Option<String>,
    event_type_category: Option<String>,
    event_type_code: Option<String>,
    start_time: Option<String>,
    end_time: Option<String>,
    status_code: Option<String>,
    affected_entities: Option<Vec<Entity>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entity {
    entity_value: Option<String>,
}

/// Reads the `detail` of a Health event: one notice per affected instance.
pub(super) fn from_eventbridge(detail: Value, meta: Meta) -> Result<Vec<Notice>, ParseError> {
    let detail: Detail = from_value("detail", detail)?;
    let service = required("detail.service", detail.service)?;
    let category = required("detail.eventTypeCategory", detail.event_type_category)?;
    if service != "EC2" || category != "scheduledChange" {
        return Err(ParseError::UnhandledHealthEvent { service, category });
    }
    // Strict on what the drain needs (the instances), lenient on the rest: without a type code
    // or a start time the change is still scheduled for the instance — drained, with no
    // deadline to clip by.
    let event_type_code = detail
        .event_type_code
        .unwrap_or_else(|| "AWS_EC2_SCHEDULED_CHANGE".to_owned());
    let start = detail
        .start_time
        .map(|s| rfc1123("detail.startTime", &s))
        .transpose()?;
    let window_end = detail
        .end_time
        .map(|end| rfc1123("detail.endTime", &end))
        .transpose()?;
    let entities = detail.affected_entities.ok_or(ParseError::MissingField {
        field: "detail.affectedEntities",
    })?;
    // EC2 scheduled changes can also name non-instance resources (e.g. dedicated hosts);
    // there is nothing to drain for those, so only instance ids become notices.
    let instances: Vec<InstanceId> = entities
        .into_iter()
        .filter_map(|entity| entity.entity_value?.parse().ok())
        .collect();
    if instances.is_empty() {
        return Err(ParseError::NoAffectedInstance);
    }
    let deadline = start.map(|at| Deadline {
        at,
        basis: DeadlineBasis::MaintenanceWindowStart,
    });
    Ok(instances
        .into_iter()
        .map(|instance| Notice {
            kind: NoticeKind::ScheduledMaintenance {
                event_type_code: event_type_code.clone(),
                window_end,
                closed: detail.status_code.as_deref() == Some("closed"),
            },
            instance: Some(instance),
            cause: Some(Cause::Maintenance),
            event_time: meta.event_time,
            deadline,
            hook: None,
            source: meta.source,
            event_id: meta.event_id.clone(),
        })
        .collect())
}

/// Health times are RFC 1123 (`Tue, 28 May 2024 09:00:00 GMT`), not RFC 3339 (events README).
fn rfc1123(field: &'static str, value: &str) -> Result<Timestamp, ParseError> {
    DateTimeParser::new()
        .parse_timestamp(value)
        .map_err(|source| ParseError::BadTimestamp {
            field,
            value: value.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::super::{parse, parse_all, ts};
    use super::*;

    fn scheduled_change(entities: &str, start: &str) -> String {
        format!(
            r#"{{"detail-type":"AWS Health Event","source":"aws.health","time":"2024-05-14T06:27:57Z",
            "detail":{{"service":"EC2","eventTypeCategory":"scheduledChange","eventTypeCode":"AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            "startTime":"{start}","affectedEntities":{entities}}}}}"#
        )
    }

    #[test]
    fn scheduled_change_is_due_at_the_window_start() {
        let n = parse(fixture!("eventbridge-health-scheduled-change-ec2.json")).unwrap();
        assert_eq!(
            n.kind,
            NoticeKind::ScheduledMaintenance {
                event_type_code: "AWS_EC2_INSTANCE_STOP_SCHEDULED".into(),
                window_end: Some(ts("2024-05-28T11:00:00Z")),
                closed: false,
            }
        );
        assert_eq!(n.instance.unwrap().as_str(), "i-0123456789abcdef0");
        assert_eq!(n.cause, Some(Cause::Maintenance));
        assert_eq!(n.event_time, ts("2024-05-14T06:27:57Z"));
        assert_eq!(
            n.deadline,
            Some(Deadline {
                at: ts("2024-05-28T09:00:00Z"),
                basis: DeadlineBasis::MaintenanceWindowStart
            })
        );
    }

    #[test]
    fn scheduled_change_without_code_or_start_is_still_drained() {
        let body = br#"{"detail-type":"AWS Health Event","source":"aws.health","time":"2024-05-14T06:27:57Z",
            "detail":{"service":"EC2","eventTypeCategory":"scheduledChange",
            "affectedEntities":[{"entityValue":"i-0123456789abcdef0"}]}}"#;
        let n = parse(body).unwrap();
        assert!(matches!(
            n.kind,
            NoticeKind::ScheduledMaintenance { closed: false, .. }
        ));
        assert_eq!(n.deadline, None);
        assert_eq!(n.instance.unwrap().as_str(), "i-0123456789abcdef0");
    }

    #[test]
    fn health_issue_event_is_not_actionable() {
        let err = parse(fixture!("eventbridge-health-issue-ec2.json")).unwrap_err();
        assert!(
            matches!(&err, ParseError::UnhandledHealthEvent { service, category } if service == "EC2" && category == "issue"),
            "{err:?}"
        );
        assert!(err.is_not_actionable());
    }

    #[test]
    fn scheduled_change_naming_several_instances_yields_one_notice_each() {
        let body = scheduled_change(
            r#"[{"entityValue":"i-0123456789abcdef0"},{"entityValue":"h-0123456789abcdef0"},{"entityValue":"i-0fedcba9876543210"}]"#,
            "Tue, 28 May 2024 09:00:00 GMT",
        );
        let notices = parse_all(body.as_bytes()).unwrap();
        let ids: Vec<_> = notices
            .iter()
            .filter_map(|n| n.instance.as_ref())
            .map(InstanceId::as_str)
            .collect();
        assert_eq!(ids, ["i-0123456789abcdef0", "i-0fedcba9876543210"]);
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, ParseError::SeveralNotices { count: 2 }),
            "{err:?}"
        );
    }

    #[test]
    fn scheduled_change_with_no_instance_is_not_actionable() {
        let body = scheduled_change(
            r#"[{"entityValue":"h-0123456789abcdef0"}]"#,
            "Tue, 28 May 2024 09:00:00 GMT",
        );
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(matches!(err, ParseError::NoAffectedInstance), "{err:?}");
        assert!(err.is_not_actionable());
    }

    #[test]
    fn scheduled_change_with_rfc3339_start_time_is_a_bad_timestamp() {
        let body = scheduled_change(
            r#"[{"entityValue":"i-0123456789abcdef0"}]"#,
            "2024-05-28T09:00:00Z",
        );
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                ParseError::BadTimestamp {
                    field: "detail.startTime",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
