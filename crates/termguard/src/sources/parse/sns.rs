//! SNS envelopes: an Auto Scaling hook (or an EventBridge rule) publishes to a topic and the
//! queue subscribes with raw message delivery off, so the SQS body is the SNS notification and
//! its `Message` string holds the real message (`tests/data/events/README.md`, item 2).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{from_value, required, ParseError};

const NOTIFICATION: &str = "Notification";

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: Option<String>,
}

/// Whether a body without `detail-type` is an SNS envelope.
pub(super) fn is_envelope(object: &Map<String, Value>) -> bool {
    object.contains_key("Type")
        && (object.contains_key("Message") || object.contains_key("TopicArn"))
}

/// The JSON inside a notification's `Message`.
pub(super) fn unwrap(object: Map<String, Value>) -> Result<Value, ParseError> {
    let envelope: Envelope = from_value("SNS envelope", Value::Object(object))?;
    // A `SubscriptionConfirmation` reaches the queue for a cross-account subscription; it is
    // an error (kept on the queue) so that an operator finds its SubscribeURL in the DLQ.
    if envelope.kind != NOTIFICATION {
        return Err(ParseError::UnsupportedSnsType(envelope.kind));
    }
    let message = required("Message", envelope.message)?;
    serde_json::from_str(&message).map_err(ParseError::SnsMessageNotJson)
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ts};
    use super::*;
    use crate::notice::{EventId, Notice, NoticeKind, NoticeSource};

    #[test]
    fn sns_wrapped_terminate_action_parses_like_the_direct_notification() {
        let n = parse(fixture!("sns-wrapped-asg-terminate-lifecycle.json")).unwrap();
        let direct = parse(fixture!("sqs-direct-asg-terminate-lifecycle.json")).unwrap();
        assert_eq!(n.source, NoticeSource::SnsAutoScaling);
        assert_eq!(n.kind, NoticeKind::LifecycleTerminate);
        assert_eq!(n.instance.as_ref().unwrap().as_str(), "i-0123456789abcdef0");
        let hook = n.hook.as_ref().unwrap();
        assert_eq!(hook.group.as_str(), "eks-workers-multi-az");
        assert_eq!(hook.hook_name.as_str(), "termguard-terminate");
        assert_eq!(hook.token.as_str(), "c0ffee00-1234-4abc-9def-0123456789ab");
        assert_eq!(n.deadline.unwrap().at, ts("2024-05-14T10:12:03.417Z"));
        // The event id is the Auto Scaling RequestId, not the SNS MessageId.
        assert_eq!(
            n.event_id,
            Some(EventId::new("5c9e7a0d-1bcf-4ed0-9ce0-9daebfc0d138"))
        );
        assert_eq!(
            Notice {
                source: NoticeSource::AutoScaling,
                ..n
            },
            direct
        );
    }

    #[test]
    fn sns_wrapped_test_notification_is_a_test() {
        let n = parse(fixture!("sns-wrapped-asg-test-notification.json")).unwrap();
        assert_eq!(n.kind, NoticeKind::Test);
        assert_eq!(n.source, NoticeSource::SnsAutoScaling);
        assert_eq!(n.event_time, ts("2024-05-14T08:59:12.004Z"));
    }

    #[test]
    fn sns_wrapped_eventbridge_event_is_read_as_eventbridge() {
        let inner = String::from_utf8_lossy(fixture!("eventbridge-spot-interruption-warning.json"));
        let body = serde_json::json!({"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t", "Message": inner});
        let n = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(n.source, NoticeSource::SnsEventBridge);
        assert!(matches!(n.kind, NoticeKind::SpotInterruption { .. }));
    }

    #[test]
    fn sns_message_that_is_not_json_is_an_error_of_its_own() {
        let body = br#"{"Type":"Notification","TopicArn":"arn:aws:sns:us-east-1:123456789012:t","Message":"hello"}"#;
        let err = parse(body).unwrap_err();
        assert!(matches!(err, ParseError::SnsMessageNotJson(_)), "{err:?}");
        assert_eq!(err.label(), "sns-message-not-json");
    }

    #[test]
    fn sns_subscription_confirmation_is_kept_for_an_operator() {
        let body = br#"{"Type":"SubscriptionConfirmation","TopicArn":"arn:aws:sns:us-east-1:123456789012:t","Message":"You have chosen to subscribe"}"#;
        let err = parse(body).unwrap_err();
        assert!(
            matches!(&err, ParseError::UnsupportedSnsType(t) if t == "SubscriptionConfirmation")
        );
        assert!(!err.is_not_actionable());
    }

    #[test]
    fn sns_inside_sns_is_not_a_known_format() {
        let inner = r#"{"Type":"Notification","Message":"{}"}"#;
        let body = serde_json::json!({"Type": "Notification", "Message": inner});
        let err = parse(body.to_string().as_bytes()).unwrap_err();
        assert!(matches!(err, ParseError::UnknownFormat), "{err:?}");
    }
}
