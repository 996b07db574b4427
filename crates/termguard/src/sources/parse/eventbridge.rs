//! EventBridge events: the envelope every rule target receives, dispatched on
//! (`source`, `detail-type`) to the family that reads its `detail` (events README, item 1).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{activity, health, lifecycle, rebalance, required, rfc3339, spot, state_change};
use super::{from_value, Meta, ParseError};
use crate::notice::{EventId, Notice, NoticeSource};

/// The EventBridge envelope fields shared by every family.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: Option<String>,
    id: Option<String>,
    time: Option<String>,
    detail: Option<Value>,
}

/// The EventBridge families termguard reads.
enum Family {
    Lifecycle,
    TerminateSuccessful,
    Spot,
    Rebalance,
    StateChange,
    Health,
}

/// Reads an EventBridge event (the whole body, or an SNS `Message`).
pub(super) fn from_object(
    object: Map<String, Value>,
    source: NoticeSource,
) -> Result<Vec<Notice>, ParseError> {
    let envelope: Envelope = from_value("event", Value::Object(object))?;
    let event_source = required("source", envelope.source)?;
    // Dispatch before reading anything else, so an event termguard ignores is reported as
    // such even when it lacks fields the families need.
    let family = match (event_source.as_str(), envelope.detail_type.as_str()) {
        ("aws.autoscaling", lifecycle::TERMINATE_DETAIL_TYPE | lifecycle::LAUNCH_DETAIL_TYPE) => {
            Family::Lifecycle
        }
        ("aws.autoscaling", activity::DETAIL_TYPE) => Family::TerminateSuccessful,
        ("aws.ec2", spot::DETAIL_TYPE) => Family::Spot,
        ("aws.ec2", rebalance::DETAIL_TYPE) => Family::Rebalance,
        ("aws.ec2", state_change::DETAIL_TYPE) => Family::StateChange,
        ("aws.health", health::DETAIL_TYPE) => Family::Health,
        _ => {
            return Err(ParseError::UnknownDetailType {
                event_source,
                detail_type: envelope.detail_type,
            })
        }
    };
    let time = required("time", envelope.time)?;
    let meta = Meta {
        event_time: rfc3339("time", &time)?,
        event_id: envelope.id.map(EventId::new),
        source,
    };
    let detail = envelope
        .detail
        .ok_or(ParseError::MissingField { field: "detail" })?;
    let one = |notice| vec![notice];
    match family {
        Family::Lifecycle => {
            lifecycle::from_eventbridge(&envelope.detail_type, detail, meta).map(one)
        }
        Family::TerminateSuccessful => activity::from_eventbridge(detail, meta).map(one),
        Family::Spot => spot::from_eventbridge(detail, meta).map(one),
        Family::Rebalance => rebalance::from_eventbridge(detail, meta).map(one),
        Family::StateChange => state_change::from_eventbridge(detail, meta).map(one),
        Family::Health => health::from_eventbridge(detail, meta),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, rfc3339, ts};
    use super::*;

    fn err(body: &[u8]) -> ParseError {
        parse(body).expect_err("body must not parse")
    }

    #[test]
    fn eventbridge_event_of_unknown_detail_type_is_not_actionable() {
        let e = err(br#"{"detail-type":"EC2 Instance Launch Successful","source":"aws.autoscaling","detail":{}}"#);
        assert!(
            matches!(&e, ParseError::UnknownDetailType { event_source, detail_type }
                if event_source == "aws.autoscaling" && detail_type == "EC2 Instance Launch Successful"),
            "{e:?}"
        );
        assert!(e.is_not_actionable());
        assert_eq!(e.label(), "unknown-detail-type");
    }

    #[test]
    fn known_detail_type_from_another_source_is_unknown() {
        let e = err(br#"{"detail-type":"EC2 Spot Instance Interruption Warning","source":"my.app","detail":{}}"#);
        assert!(matches!(e, ParseError::UnknownDetailType { .. }), "{e:?}");
    }

    #[test]
    fn eventbridge_event_without_source_or_detail_is_a_missing_field() {
        let e = err(br#"{"detail-type":"EC2 Instance Rebalance Recommendation","time":"2024-05-14T09:55:31Z","detail":{}}"#);
        assert!(
            matches!(e, ParseError::MissingField { field: "source" }),
            "{e:?}"
        );
        let e = err(br#"{"detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2","time":"2024-05-14T09:55:31Z"}"#);
        assert!(
            matches!(e, ParseError::MissingField { field: "detail" }),
            "{e:?}"
        );
    }

    #[test]
    fn eventbridge_event_with_bad_time_is_a_bad_timestamp() {
        for time in [
            "2024-05-14 09:55",
            "2024-05-14T09:55:31",
            "Tue, 14 May 2024 09:55:31 GMT",
        ] {
            let body = format!(
                r#"{{"detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2","time":"{time}","detail":{{"instance-id":"i-0123456789abcdef0"}}}}"#
            );
            let e = err(body.as_bytes());
            assert!(
                matches!(&e, ParseError::BadTimestamp { field: "time", value, .. } if value == time),
                "{e:?}"
            );
        }
    }

    #[test]
    fn eventbridge_time_with_and_without_milliseconds_is_accepted() {
        assert_eq!(
            rfc3339("time", "2024-05-14T09:12:03Z").unwrap(),
            ts("2024-05-14T09:12:03Z")
        );
        assert_eq!(
            rfc3339("time", "2024-05-14T09:12:03.417Z")
                .unwrap()
                .as_millisecond(),
            ts("2024-05-14T09:12:03Z").as_millisecond() + 417
        );
    }
}
