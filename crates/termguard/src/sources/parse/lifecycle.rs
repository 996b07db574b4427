//! Auto Scaling lifecycle actions and test notifications, from EventBridge or sent directly
//! (SQS target, or SNS once unwrapped). Both shapes use the same PascalCase field names.
//!
//! Every terminate action is a [`NoticeKind::LifecycleTerminate`] whatever its `Origin`,
//! `Destination` or `Action`: each one holds an instance in a wait state until someone
//! completes the action, and the handler needs the hook coordinates to do so. In particular
//! a return to the warm pool (`Destination`=`WarmPool`) stops or hibernates the instance, so
//! "the node still goes away and must be drained, but the cause is warm-pool return"; and a
//! replace-root-volume refresh reboots the node onto a new root volume: "drain it; do not
//! treat it as gone for good" (`tests/data/events/README.md`, both fixtures;
//! `docs/aws-semantics.md#lifecycle-hooks`). Both are told by the cause and
//! `LifecycleHook::instance_returns`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{after, from_value, instance_id, required, rfc3339, Meta, ParseError};
use crate::notice::{
    Cause, Deadline, DeadlineBasis, EventId, GroupName, HookName, LifecycleHook, LifecycleToken,
    LifecycleTransition, Location, Notice, NoticeKind, NoticeSource, DEFAULT_HEARTBEAT_TIMEOUT,
};

/// `detail-type` of a termination lifecycle action.
pub(super) const TERMINATE_DETAIL_TYPE: &str = "EC2 Instance-terminate Lifecycle Action";
/// `detail-type` of a launch lifecycle action.
pub(super) const LAUNCH_DETAIL_TYPE: &str = "EC2 Instance-launch Lifecycle Action";

const TEST_NOTIFICATION: &str = "autoscaling:TEST_NOTIFICATION";
const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// A lifecycle action or test notification: EventBridge `detail`, or a direct notification body.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Message {
    #[serde(rename = "EC2InstanceId")]
    instance_id: Option<String>,
    auto_scaling_group_name: Option<String>,
    lifecycle_hook_name: Option<String>,
    lifecycle_action_token: Option<String>,
    lifecycle_transition: Option<String>,
    event: Option<String>,
    origin: Option<String>,
    destination: Option<String>,
    action: Option<String>,
    notification_metadata: Option<String>,
    time: Option<String>,
    request_id: Option<String>,
}

impl Message {
    fn is_test(&self) -> bool {
        self.event.as_deref() == Some(TEST_NOTIFICATION)
            || self.lifecycle_transition.as_deref() == Some(TEST_NOTIFICATION)
    }
}

/// Field paths, so errors name the field as it appears in each shape.
struct Paths {
    instance: &'static str,
    group: &'static str,
    hook: &'static str,
    token: &'static str,
    transition: &'static str,
}

const EVENTBRIDGE: Paths = Paths {
    instance: "detail.EC2InstanceId",
    group: "detail.AutoScalingGroupName",
    hook: "detail.LifecycleHookName",
    token: "detail.LifecycleActionToken",
    transition: "detail.LifecycleTransition",
};

const DIRECT: Paths = Paths {
    instance: "EC2InstanceId",
    group: "AutoScalingGroupName",
    hook: "LifecycleHookName",
    token: "LifecycleActionToken",
    transition: "LifecycleTransition",
};

/// Whether a body without `detail-type` is a direct Auto Scaling notification.
pub(super) fn is_notification(object: &Map<String, Value>) -> bool {
    object.contains_key("LifecycleTransition") || object.contains_key("Event")
}

/// Reads the `detail` of an EventBridge lifecycle action (or NTH's test-notification fixture).
pub(super) fn from_eventbridge(
    detail_type: &str,
    detail: Value,
    meta: Meta,
) -> Result<Notice, ParseError> {
    let message: Message = from_value("detail", detail)?;
    if message.is_test() {
        return Ok(test_notice(meta));
    }
    let implied = if detail_type == LAUNCH_DETAIL_TYPE {
        LifecycleTransition::Launching
    } else {
        LifecycleTransition::Terminating
    };
    // The README's "must read" list for EventBridge leaves out the transition: the detail-type
    // implies it. When present it must agree, or the hook would be completed for the wrong action.
    if let Some(written) = message.lifecycle_transition.as_deref() {
        if transition(EVENTBRIDGE.transition, written)? != implied {
            return Err(ParseError::InvalidField {
                field: EVENTBRIDGE.transition,
                value: written.to_owned(),
                expected: "the transition the detail-type names",
            });
        }
    }
    lifecycle_notice(message, &EVENTBRIDGE, implied, meta)
}

/// Reads a direct Auto Scaling notification (body of the SQS message or of the SNS `Message`).
pub(super) fn from_notification(
    object: Map<String, Value>,
    source: NoticeSource,
) -> Result<Notice, ParseError> {
    let mut message: Message = from_value("message", Value::Object(object))?;
    let time = required("Time", message.time.take())?;
    let meta = Meta {
        event_time: rfc3339("Time", &time)?,
        event_id: message.request_id.take().map(EventId::new),
        source,
    };
    if message.is_test() {
        return Ok(test_notice(meta));
    }
    let Some(written) = message.lifecycle_transition.as_deref() else {
        // Not a lifecycle hook message: e.g. a group's scaling notification routed here.
        return Err(ParseError::UnknownAsgEvent(
            message.event.unwrap_or_default(),
        ));
    };
    let transition = transition(DIRECT.transition, written)?;
    lifecycle_notice(message, &DIRECT, transition, meta)
}

fn transition(field: &'static str, value: &str) -> Result<LifecycleTransition, ParseError> {
    match value {
        LAUNCHING => Ok(LifecycleTransition::Launching),
        TERMINATING => Ok(LifecycleTransition::Terminating),
        other => Err(ParseError::InvalidField {
            field,
            value: other.to_owned(),
            expected: "autoscaling:EC2_INSTANCE_LAUNCHING or autoscaling:EC2_INSTANCE_TERMINATING",
        }),
    }
}

/// Reads `Origin`/`Destination`.
fn location(value: &str) -> Location {
    match value {
        "EC2" => Location::Ec2,
        "AutoScalingGroup" => Location::AutoScalingGroup,
        "WarmPool" => Location::WarmPool,
        other => Location::Unknown(other.to_owned()),
    }
}

fn test_notice(meta: Meta) -> Notice {
    Notice {
        kind: NoticeKind::Test,
        instance: None,
        cause: None,
        event_time: meta.event_time,
        deadline: None,
        hook: None,
        source: meta.source,
        event_id: meta.event_id,
    }
}

fn lifecycle_notice(
    message: Message,
    paths: &Paths,
    transition: LifecycleTransition,
    meta: Meta,
) -> Result<Notice, ParseError> {
    let instance = instance_id(paths.instance, message.instance_id)?;
    let hook = LifecycleHook {
        group: GroupName::new(required(paths.group, message.auto_scaling_group_name)?),
        hook_name: HookName::new(required(paths.hook, message.lifecycle_hook_name)?),
        token: LifecycleToken::new(required(paths.token, message.lifecycle_action_token)?),
        transition,
        origin: message.origin.as_deref().map(location),
        destination: message.destination.as_deref().map(location),
        action: message.action,
        metadata: message.notification_metadata,
    };
    // Warm-pool return and root-volume replacement are known from the event itself; every other
    // cause comes from the scaling activity, looked up later
    // (`docs/aws-semantics.md#scaling-activity-causes`).
    let cause = if hook.action.as_deref() == Some("ReplaceRootVolume") {
        Some(Cause::ReplaceRootVolume)
    } else if transition == LifecycleTransition::Terminating
        && hook.destination == Some(Location::WarmPool)
    {
        Some(Cause::WarmPoolReturn)
    } else {
        None
    };
    let kind = match transition {
        LifecycleTransition::Launching => NoticeKind::LifecycleLaunch,
        LifecycleTransition::Terminating => NoticeKind::LifecycleTerminate,
    };
    // The wait lasts the hook's HeartbeatTimeout from about the event time; the message does
    // not carry it, so assume the default until the hook is described
    // (`docs/aws-semantics.md#global-timeout`).
    let deadline = Deadline {
        at: after("time", meta.event_time, DEFAULT_HEARTBEAT_TIMEOUT)?,
        basis: DeadlineBasis::AssumedHeartbeatTimeout,
    };
    Ok(Notice {
        kind,
        instance: Some(instance),
        cause,
        event_time: meta.event_time,
        deadline: Some(deadline),
        hook: Some(hook),
        source: meta.source,
        event_id: meta.event_id,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{parse, ts};
    use super::*;

    /// (instance, group, hook, token) of a lifecycle notice.
    fn coords(n: &Notice) -> (&str, &str, &str, &str) {
        let instance = n.instance.as_ref().map_or("", |i| i.as_str());
        let h = n.hook.as_ref().expect("lifecycle notice has a hook");
        (
            instance,
            h.group.as_str(),
            h.hook_name.as_str(),
            h.token.as_str(),
        )
    }

    fn notice(body: &[u8]) -> Notice {
        parse(body).expect("fixture parses")
    }

    const TERMINATE: (&str, &str, &str, &str) = (
        "i-0123456789abcdef0",
        "eks-workers-multi-az",
        "termguard-terminate",
        "c0ffee00-1234-4abc-9def-0123456789ab",
    );
    const LAUNCH: (&str, &str, &str, &str) = (
        "i-0a1b2c3d4e5f60718",
        "eks-workers-multi-az",
        "termguard-launch",
        "e2a1b3c4-9abc-4def-8123-456789abcdef",
    );
    const RETURNING: (&str, &str, &str, &str) = (
        "i-0fedcba9876543210",
        "eks-workers-multi-az",
        "termguard-terminate",
        "d1ce0000-5678-4abc-8def-0123456789cd",
    );

    #[test]
    fn eventbridge_terminate_action_yields_hook_coordinates_and_assumed_heartbeat_deadline() {
        let n = notice(fixture!("eventbridge-asg-terminate-lifecycle-action.json"));
        assert_eq!(n.kind, NoticeKind::LifecycleTerminate);
        assert_eq!(coords(&n), TERMINATE);
        assert_eq!(n.source, NoticeSource::EventBridge);
        assert_eq!(n.event_time, ts("2024-05-14T09:12:03Z"));
        let id = EventId::new("7a1c9e2b-3f4d-4c5b-9a6e-1b2c3d4e5f60");
        assert_eq!(n.event_id, Some(id));
        assert_eq!(n.cause, None);
        let deadline = n.deadline.unwrap();
        assert_eq!(deadline.at, ts("2024-05-14T10:12:03Z"));
        assert_eq!(deadline.basis, DeadlineBasis::AssumedHeartbeatTimeout);
        let h = n.hook.unwrap();
        assert_eq!(h.transition, LifecycleTransition::Terminating);
        assert_eq!(h.origin, Some(Location::AutoScalingGroup));
        assert_eq!(h.destination, Some(Location::Ec2));
        assert_eq!(h.metadata.as_deref(), Some("{\"cluster\":\"prod-eu\"}"));
        assert!(!h.instance_returns());
    }

    #[test]
    fn minimal_terminate_action_without_origin_destination_or_metadata_parses() {
        let n = notice(fixture!(
            "eventbridge-asg-terminate-lifecycle-action-minimal.json"
        ));
        assert_eq!(n.kind, NoticeKind::LifecycleTerminate);
        assert_eq!(coords(&n), TERMINATE);
        assert_eq!(n.deadline.unwrap().at, ts("2024-05-14T10:12:03Z"));
        let h = n.hook.unwrap();
        assert_eq!((h.origin, h.destination, h.metadata), (None, None, None));
    }

    #[test]
    fn return_to_warm_pool_is_a_terminate_action_caused_by_warm_pool_return() {
        let n = notice(fixture!(
            "eventbridge-asg-terminate-lifecycle-action-to-warm-pool.json"
        ));
        assert_eq!(n.kind, NoticeKind::LifecycleTerminate);
        assert_eq!(coords(&n), RETURNING);
        assert_eq!(n.cause, Some(Cause::WarmPoolReturn));
        assert_eq!(n.event_time, ts("2024-05-14T09:20:37.214Z"));
        assert_eq!(n.deadline.unwrap().at, ts("2024-05-14T10:20:37.214Z"));
        let h = n.hook.unwrap();
        assert_eq!(h.destination, Some(Location::WarmPool));
        assert!(h.instance_returns());
    }

    #[test]
    fn replace_root_volume_is_a_terminate_action_whose_instance_returns() {
        let body = fixture!("eventbridge-asg-terminate-lifecycle-action-replace-root-volume.json");
        let n = notice(body);
        assert_eq!(n.kind, NoticeKind::LifecycleTerminate);
        assert_eq!(coords(&n), RETURNING);
        assert_eq!(n.cause, Some(Cause::ReplaceRootVolume));
        assert_eq!(n.deadline.unwrap().at, ts("2024-05-14T10:31:12.008Z"));
        let h = n.hook.unwrap();
        assert_eq!(h.action.as_deref(), Some("ReplaceRootVolume"));
        assert!(h.instance_returns());
    }

    #[test]
    fn eventbridge_launch_action_is_a_lifecycle_launch() {
        let n = notice(fixture!("eventbridge-asg-launch-lifecycle-action.json"));
        assert_eq!(n.kind, NoticeKind::LifecycleLaunch);
        assert_eq!(coords(&n), LAUNCH);
        assert_eq!(n.deadline.unwrap().at, ts("2024-05-14T10:14:41Z"));
        let h = n.hook.unwrap();
        assert_eq!(h.transition, LifecycleTransition::Launching);
        assert_eq!(h.origin, Some(Location::Ec2));
    }

    #[test]
    fn eventbridge_test_notification_is_a_test_without_instance() {
        let n = notice(fixture!(
            "eventbridge-asg-test-notification-nth-fixture.json"
        ));
        assert_eq!(n.kind, NoticeKind::Test);
        assert_eq!((n.instance, n.hook, n.deadline), (None, None, None));
        assert_eq!(n.event_time, ts("2024-05-14T09:00:00Z"));
    }

    #[test]
    fn direct_terminate_notification_yields_hook_and_request_id() {
        let n = notice(fixture!("sqs-direct-asg-terminate-lifecycle.json"));
        assert_eq!(n.kind, NoticeKind::LifecycleTerminate);
        assert_eq!(coords(&n), TERMINATE);
        assert_eq!(n.source, NoticeSource::AutoScaling);
        assert_eq!(n.event_time, ts("2024-05-14T09:12:03.417Z"));
        assert_eq!(n.deadline.unwrap().at, ts("2024-05-14T10:12:03.417Z"));
        let id = EventId::new("5c9e7a0d-1bcf-4ed0-9ce0-9daebfc0d138");
        assert_eq!(n.event_id, Some(id));
    }

    #[test]
    fn direct_launch_notification_is_a_lifecycle_launch() {
        let n = notice(fixture!("sqs-direct-asg-launch-lifecycle.json"));
        assert_eq!(n.kind, NoticeKind::LifecycleLaunch);
        assert_eq!(coords(&n), LAUNCH);
        assert_eq!(n.deadline.unwrap().at, ts("2024-05-14T10:14:41.530Z"));
    }

    #[test]
    fn direct_test_notification_is_a_test_to_acknowledge() {
        let n = notice(fixture!("sqs-direct-asg-test-notification.json"));
        assert_eq!(n.kind, NoticeKind::Test);
        assert!(!n.kind.is_actionable());
        assert_eq!(n.event_time, ts("2024-05-14T08:59:12.004Z"));
        let id = EventId::new("7eb0c92f-3de1-4af2-9e02-bfc0d1e2f35a");
        assert_eq!(n.event_id, Some(id));
    }

    #[test]
    fn terminate_action_without_instance_id_is_a_missing_field() {
        let body = br#"{"LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING","Time":"2024-05-14T09:12:03Z",
            "AutoScalingGroupName":"g","LifecycleHookName":"h","LifecycleActionToken":"t"}"#;
        let err = parse(body).unwrap_err();
        assert_eq!(
            (err.label(), err.field()),
            ("missing-field", Some("EC2InstanceId"))
        );
    }

    #[test]
    fn terminate_action_without_token_is_a_missing_field() {
        let body = br#"{"detail-type":"EC2 Instance-terminate Lifecycle Action","source":"aws.autoscaling",
            "time":"2024-05-14T09:12:03Z","detail":{"EC2InstanceId":"i-0123456789abcdef0",
            "AutoScalingGroupName":"g","LifecycleHookName":"h"}}"#;
        let err = parse(body).unwrap_err();
        let want = ("missing-field", Some("detail.LifecycleActionToken"));
        assert_eq!((err.label(), err.field()), want);
    }

    #[test]
    fn transition_contradicting_detail_type_is_rejected() {
        let body = br#"{"detail-type":"EC2 Instance-terminate Lifecycle Action","source":"aws.autoscaling",
            "time":"2024-05-14T09:12:03Z","detail":{"EC2InstanceId":"i-0123456789abcdef0","AutoScalingGroupName":"g",
            "LifecycleHookName":"h","LifecycleActionToken":"t","LifecycleTransition":"autoscaling:EC2_INSTANCE_LAUNCHING"}}"#;
        let err = parse(body).unwrap_err();
        let want = ("invalid-field", Some("detail.LifecycleTransition"));
        assert_eq!((err.label(), err.field()), want);
    }

    #[test]
    fn direct_notification_with_bad_time_is_a_bad_timestamp() {
        let body = br#"{"Event":"autoscaling:TEST_NOTIFICATION","Time":"yesterday"}"#;
        let err = parse(body).unwrap_err();
        assert_eq!((err.label(), err.field()), ("bad-timestamp", Some("Time")));
    }

    #[test]
    fn scaling_notification_routed_to_the_queue_is_not_actionable() {
        let body =
            br#"{"Event":"autoscaling:EC2_INSTANCE_TERMINATE","Time":"2024-05-14T09:12:03Z"}"#;
        let err = parse(body).unwrap_err();
        let event = "autoscaling:EC2_INSTANCE_TERMINATE";
        assert!(
            matches!(&err, ParseError::UnknownAsgEvent(e) if e == event),
            "{err:?}"
        );
        assert!(err.is_not_actionable());
    }
}
