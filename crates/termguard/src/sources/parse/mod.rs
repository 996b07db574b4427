//! Pure parsers: message bytes → `Notice` or a typed error.
//!
//! The body of an SQS message is one of three things, told apart from the body alone in the
//! order NTH uses (`tests/data/events/README.md`, "dispatch order"): an EventBridge event
//! (has `detail-type`), an SNS notification (`Type` + `Message`, whose `Message` is re-parsed),
//! or a direct Auto Scaling notification (`LifecycleTransition` or `Event`). One module per
//! message family turns the family's fields into a [`Notice`].

use jiff::{SignedDuration, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::notice::{EventId, InstanceId, InvalidInstanceId, Notice, NoticeSource};

#[cfg(test)]
macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/events/",
            $name
        ))
        .as_slice()
    };
}

mod activity;
mod cause;
mod eventbridge;
mod health;
mod lifecycle;
#[cfg(test)]
mod mangled;
mod rebalance;
mod sns;
mod spot;
mod state_change;

/// Why a message body could not be turned into a notice.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The body is empty.
    #[error("message body is empty")]
    Empty,
    /// The body is not JSON.
    #[error("message body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The body is JSON but not an EventBridge event, SNS notification or Auto Scaling notification.
    #[error("message body is JSON of no known shape")]
    UnknownFormat,
    /// An EventBridge event of a (`source`, `detail-type`) termguard does not act on.
    #[error("EventBridge event {event_source:?} / {detail_type:?} is not one termguard acts on")]
    UnknownDetailType {
        /// The event's `source`.
        event_source: String,
        /// The event's `detail-type`.
        detail_type: String,
    },
    /// An AWS Health event that is not an EC2 `scheduledChange`.
    #[error("AWS Health event ({service}, {category}) is not an EC2 scheduled change")]
    UnhandledHealthEvent {
        /// `detail.service`
        service: String,
        /// `detail.eventTypeCategory`
        category: String,
    },
    /// An AWS Health EC2 event whose affected entities include no instance.
    #[error("AWS Health event names no EC2 instance")]
    NoAffectedInstance,
    /// A direct Auto Scaling notification whose `Event` is neither a lifecycle action nor a test.
    #[error("Auto Scaling notification {0:?} is not a lifecycle action or test")]
    UnknownAsgEvent(String),
    /// A field the notice needs is absent, null or empty.
    #[error("required field {field} is missing or empty")]
    MissingField {
        /// Path of the field, e.g. `detail.EC2InstanceId`.
        field: &'static str,
    },
    /// A part of the message has fields of the wrong JSON type.
    #[error("{part} has an unexpected shape: {source}")]
    InvalidShape {
        /// Which part: `event`, `detail`, `message`, `SNS envelope`.
        part: &'static str,
        /// What serde found.
        source: serde_json::Error,
    },
    /// A field that should hold an instance id holds something else.
    #[error("{field} = {value:?} is not an EC2 instance id")]
    InvalidInstanceId {
        /// Path of the field.
        field: &'static str,
        /// The value found.
        value: String,
    },
    /// A time field that does not parse in the format AWS documents for it.
    #[error("{field} = {value:?} is not a valid time: {source}")]
    BadTimestamp {
        /// Path of the field.
        field: &'static str,
        /// The value found.
        value: String,
        /// What jiff said.
        source: jiff::Error,
    },
    /// A field with a value outside the set AWS documents.
    #[error("{field} = {value:?}, expected {expected}")]
    InvalidField {
        /// Path of the field.
        field: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An SNS notification whose `Message` is not JSON.
    #[error("SNS notification Message is not JSON: {0}")]
    SnsMessageNotJson(#[source] serde_json::Error),
    /// An SNS message other than a notification (e.g. a `SubscriptionConfirmation`).
    #[error("SNS message of type {0:?} is not a notification")]
    UnsupportedSnsType(String),
    /// [`parse`] was given a message naming several instances; [`parse_all`] reads it.
    #[error("message names {count} instances; read it with parse_all")]
    SeveralNotices {
        /// How many notices the message holds.
        count: usize,
    },
}

impl ParseError {
    /// Stable label for metrics (one per variant).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::NotJson(_) => "not-json",
            Self::UnknownFormat => "unknown-format",
            Self::UnknownDetailType { .. } => "unknown-detail-type",
            Self::UnhandledHealthEvent { .. } => "unhandled-health-event",
            Self::NoAffectedInstance => "no-affected-instance",
            Self::UnknownAsgEvent(_) => "unknown-asg-event",
            Self::MissingField { .. } => "missing-field",
            Self::InvalidShape { .. } => "invalid-shape",
            Self::InvalidInstanceId { .. } => "invalid-instance-id",
            Self::BadTimestamp { .. } => "bad-timestamp",
            Self::InvalidField { .. } => "invalid-field",
            Self::SnsMessageNotJson(_) => "sns-message-not-json",
            Self::UnsupportedSnsType(_) => "unsupported-sns-type",
            Self::SeveralNotices { .. } => "several-notices",
        }
    }

    /// Path of the field that failed, for errors about one field.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::MissingField { field }
            | Self::InvalidInstanceId { field, .. }
            | Self::BadTimestamp { field, .. }
            | Self::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Whether the message is well-formed but of a kind termguard does not act on. The events
    /// README says to acknowledge (delete) and count those; every other error is a malformed
    /// message, which stays on the queue for a redrive policy to move to a dead-letter queue.
    pub fn is_not_actionable(&self) -> bool {
        matches!(
            self,
            Self::UnknownDetailType { .. }
                | Self::UnhandledHealthEvent { .. }
                | Self::NoAffectedInstance
                | Self::UnknownAsgEvent(_)
        )
    }
}

/// Parses a message that names one instance (or none, for a test notification).
///
/// An AWS Health event can name several instances; for those this returns
/// [`ParseError::SeveralNotices`]: read such messages with [`parse_all`].
pub fn parse(body: &[u8]) -> Result<Notice, ParseError> {
    let mut notices = parse_all(body)?;
    let count = notices.len();
    match notices.pop() {
        Some(notice) if count == 1 => Ok(notice),
        _ => Err(ParseError::SeveralNotices { count }),
    }
}

/// Parses any message into its notices: one per instance it names, never none.
pub fn parse_all(body: &[u8]) -> Result<Vec<Notice>, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let value: Value = serde_json::from_slice(body).map_err(ParseError::NotJson)?;
    parse_value(value, false)
}

/// Dispatches on the shape of an already-decoded body; `in_sns` is true inside an SNS envelope.
fn parse_value(value: Value, in_sns: bool) -> Result<Vec<Notice>, ParseError> {
    let Value::Object(object) = value else {
        return Err(ParseError::UnknownFormat);
    };
    if object.contains_key("detail-type") {
        let source = if in_sns {
            NoticeSource::SnsEventBridge
        } else {
            NoticeSource::EventBridge
        };
        eventbridge::from_object(object, source)
    } else if !in_sns && sns::is_envelope(&object) {
        parse_value(sns::unwrap(object)?, true)
    } else if lifecycle::is_notification(&object) {
        let source = if in_sns {
            NoticeSource::SnsAutoScaling
        } else {
            NoticeSource::AutoScaling
        };
        lifecycle::from_notification(object, source).map(|notice| vec![notice])
    } else {
        Err(ParseError::UnknownFormat)
    }
}

/// What the envelope says about any event, handed to the family parsers.
pub(super) struct Meta {
    /// The envelope's `time` (or the notification's `Time`).
    pub event_time: Timestamp,
    /// The envelope's `id` (or the notification's `RequestId`).
    pub event_id: Option<EventId>,
    /// The format the message came in.
    pub source: NoticeSource,
}

/// Deserializes one part of a message, naming the part on failure.
pub(super) fn from_value<T: DeserializeOwned>(
    part: &'static str,
    value: Value,
) -> Result<T, ParseError> {
    serde_json::from_value(value).map_err(|source| ParseError::InvalidShape { part, source })
}

/// A field that must be present and non-empty.
pub(super) fn required(field: &'static str, value: Option<String>) -> Result<String, ParseError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(ParseError::MissingField { field })
}

/// A required field holding an instance id.
pub(super) fn instance_id(
    field: &'static str,
    value: Option<String>,
) -> Result<InstanceId, ParseError> {
    required(field, value)?
        .parse()
        .map_err(|InvalidInstanceId(value)| ParseError::InvalidInstanceId { field, value })
}

/// An RFC 3339 time (EventBridge `time`, Auto Scaling `Time`), with or without fractions.
pub(super) fn rfc3339(field: &'static str, value: &str) -> Result<Timestamp, ParseError> {
    value.parse().map_err(|source| ParseError::BadTimestamp {
        field,
        value: value.to_owned(),
        source,
    })
}

/// `start + offset`, reporting an out-of-range result against the field `start` came from.
pub(super) fn after(
    field: &'static str,
    start: Timestamp,
    offset: SignedDuration,
) -> Result<Timestamp, ParseError> {
    start
        .checked_add(offset)
        .map_err(|source| ParseError::BadTimestamp {
            field,
            value: start.to_string(),
            source,
        })
}

#[cfg(test)]
pub(super) fn ts(value: &str) -> Timestamp {
    value.parse().expect("test timestamp")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notice::NoticeKind;

    fn err(body: &[u8]) -> ParseError {
        parse(body).expect_err("body must not parse")
    }

    #[test]
    fn empty_or_blank_body_is_empty() {
        assert!(matches!(err(b""), ParseError::Empty));
        assert!(matches!(err(b" \n\t"), ParseError::Empty));
    }

    #[test]
    fn invalid_json_is_not_json() {
        let e = err(b"{\"detail-type\": ");
        assert!(matches!(e, ParseError::NotJson(_)), "{e:?}");
        assert_eq!(e.label(), "not-json");
        assert!(!e.is_not_actionable());
    }

    #[test]
    fn json_of_no_known_shape_is_unknown_format() {
        for body in [&b"[1,2]"[..], b"\"text\"", b"null", br#"{"hello":"world"}"#] {
            let e = err(body);
            assert!(matches!(e, ParseError::UnknownFormat), "{e:?}");
        }
    }

    #[test]
    fn sqs_receive_response_is_not_a_body_but_its_body_parses() {
        let response = fixture!("sqs-receive-message-response.json");
        assert!(matches!(err(response), ParseError::UnknownFormat));
        let value: Value = serde_json::from_slice(response).unwrap();
        let body = value["Messages"][0]["Body"].as_str().unwrap();
        let n = parse(body.as_bytes()).unwrap();
        assert_eq!(n.kind, NoticeKind::LifecycleTerminate);
        assert_eq!(n.instance.unwrap().as_str(), "i-0123456789abcdef0");
        assert_eq!(
            n.hook.unwrap().token.as_str(),
            "c0ffee00-1234-4abc-9def-0123456789ab"
        );
    }

    #[test]
    fn error_labels_are_distinct_kebab_case() {
        let json_error = || serde_json::from_str::<Value>("{").unwrap_err();
        let jiff_error = || "x".parse::<Timestamp>().unwrap_err();
        let all = [
            ParseError::Empty,
            ParseError::NotJson(json_error()),
            ParseError::UnknownFormat,
            ParseError::UnknownDetailType {
                event_source: String::new(),
                detail_type: String::new(),
            },
            ParseError::UnhandledHealthEvent {
                service: String::new(),
                category: String::new(),
            },
            ParseError::NoAffectedInstance,
            ParseError::UnknownAsgEvent(String::new()),
            ParseError::MissingField { field: "f" },
            ParseError::InvalidShape {
                part: "detail",
                source: json_error(),
            },
            ParseError::InvalidInstanceId {
                field: "f",
                value: String::new(),
            },
            ParseError::BadTimestamp {
                field: "f",
                value: String::new(),
                source: jiff_error(),
            },
            ParseError::InvalidField {
                field: "f",
                value: String::new(),
                expected: "e",
            },
            ParseError::SnsMessageNotJson(json_error()),
            ParseError::UnsupportedSnsType(String::new()),
            ParseError::SeveralNotices { count: 2 },
        ];
        let mut labels: Vec<_> = all.iter().map(ParseError::label).collect();
        assert!(labels
            .iter()
            .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '-')));
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }
}
