//! `termguard explain FILE`: the Notice(s) a message body parses into, and what queue mode would
//! do with each — without touching the cluster, AWS or the queue. The decisions mirror
//! [`crate::handler::Handler`] and [`crate::sources::sqs`]; the rendering is a pure function.

use crate::cli::ExplainArgs;
use crate::notice::{
    Deadline, DeadlineBasis, InstanceState, LifecycleHook, LifecycleTransition, Location, Notice,
    NoticeKind, NoticeSource, SpotAction,
};
use crate::sources::parse::{self, ParseError};
use anyhow::Context;
use jiff::Timestamp;
use std::fmt::Write;
use std::io::Read;

/// The handler settings that change what happens to a notice.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// `--drain-on-rebalance`.
    pub drain_on_rebalance: bool,
    /// `--complete-launch`.
    pub complete_launch: bool,
}

/// Runs `termguard explain`; exit code 0 when the message parses (or is acknowledged as not
/// actionable), 1 when it is malformed.
pub fn explain(args: &ExplainArgs) -> anyhow::Result<i32> {
    let mut body = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut body)
            .context("reading standard input")?;
    } else {
        body = std::fs::read(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?;
    }
    let behaviour = Behaviour {
        drain_on_rebalance: args.drain_on_rebalance,
        complete_launch: args.complete_launch,
    };
    let parsed = parse::parse_all(&body);
    let now = args.now.unwrap_or_else(Timestamp::now);
    print!("{}", render(&parsed, behaviour, now));
    Ok(match parsed {
        Err(e) if !e.is_not_actionable() => 1,
        _ => 0,
    })
}

/// The explanation of a parse result, as printed.
pub fn render(
    parsed: &Result<Vec<Notice>, ParseError>,
    behaviour: Behaviour,
    now: Timestamp,
) -> String {
    let mut out = String::new();
    match parsed {
        Err(e) => {
            let _ = writeln!(out, "error ({}): {e}", e.label());
            let fate = if e.is_not_actionable() {
                "a well-formed message of a kind termguard does not act on: acknowledged (deleted from the queue) and counted"
            } else {
                "malformed: logged with its message id, counted in termguard_messages_invalid_total, and left on the queue untouched for its redrive policy"
            };
            let _ = writeln!(out, "message:  {fate}");
        }
        Ok(notices) => {
            let n = notices.len();
            for (i, notice) in notices.iter().enumerate() {
                if n > 1 {
                    let _ = writeln!(out, "notice {} of {n}", i + 1);
                }
                render_notice(&mut out, notice, behaviour, now);
                if i + 1 < n {
                    out.push('\n');
                }
            }
            let fate = if n > 1 {
                "deleted once every notice above is done; released if one is for another cluster; kept for a retry if one fails"
            } else {
                "deleted once the action above is done; released at once if the instance is another cluster's; kept for a retry if the work fails"
            };
            let _ = writeln!(out, "message:  {fate}");
        }
    }
    out
}

fn render_notice(out: &mut String, n: &Notice, b: Behaviour, now: Timestamp) {
    let field = |out: &mut String, name: &str, value: &str| {
        let label = if name.is_empty() {
            String::new()
        } else {
            format!("{name}:")
        };
        let _ = writeln!(out, "{label:<9} {value}");
    };
    field(out, "kind", &kind_text(&n.kind));
    field(out, "source", source_text(n.source));
    field(
        out,
        "instance",
        n.instance.as_ref().map_or("-", |i| i.as_str()),
    );
    let id = n
        .event_id
        .as_ref()
        .map(|e| format!(" (id {e})"))
        .unwrap_or_default();
    field(out, "event", &format!("{}{id}", n.event_time));
    let cause = match (&n.cause, &n.kind) {
        (Some(c), _) => c.label().to_string(),
        (None, NoticeKind::LifecycleTerminate) => {
            "looked up from the group's scaling activity (DescribeScalingActivities) when handled"
                .into()
        }
        (None, _) => "-".into(),
    };
    field(out, "cause", &cause);
    field(out, "deadline", &deadline_text(n.deadline.as_ref(), now));
    if let Some(hook) = &n.hook {
        field(out, "hook", &hook_text(hook));
    }
    let needs = match &n.kind {
        _ if !n.kind.is_actionable() => "no",
        NoticeKind::LifecycleLaunch if !b.complete_launch => "no",
        _ => "yes",
    };
    field(
        out,
        "node",
        &format!("needs a node of this cluster: {needs}"),
    );
    for (i, line) in actions(n, b, now).iter().enumerate() {
        field(out, if i == 0 { "action" } else { "" }, line);
    }
}

/// What queue mode does with the notice, one line per case.
pub fn actions(n: &Notice, b: Behaviour, now: Timestamp) -> Vec<String> {
    let instance = n.instance.as_ref().map_or("-", |i| i.as_str());
    let foreign = || {
        // The handler's rule: a notice without a deadline expires an hour after its event.
        let expires = n.deadline.map(|d| d.at).or_else(|| {
            n.event_time
                .checked_add(jiff::SignedDuration::from_hours(1))
                .ok()
        });
        if expires.is_some_and(|at| at < now) {
            format!("if {instance} is not a node here: past its deadline, so deleted and counted (termguard_foreign_expired_total)")
        } else {
            format!("if {instance} is not a node here: released at once for the cluster that owns it, until it is past its deadline")
        }
    };
    let drain = |what: &str| format!("if {instance} is a node here: {what}");
    match &n.kind {
        NoticeKind::Test => vec!["nothing: a test notification is acknowledged".into()],
        NoticeKind::StateChange { state } if !state.is_going_away() => {
            vec![format!("nothing: the instance is {}", state_text(state))]
        }
        NoticeKind::StateChange {
            state: state @ (InstanceState::Stopped | InstanceState::Terminated),
        } => vec![
            drain(&format!(
                "too late, the instance is already {}: reported and acknowledged",
                state_text(state)
            )),
            foreign(),
        ],
        NoticeKind::StateChange { .. } => vec![
            drain("drain at once, best effort, within the state-change window (30 s)"),
            foreign(),
        ],
        NoticeKind::SpotInterruption { .. } => vec![
            drain("drain before the deadline; pods whose grace period would outlast it are deleted with a clipped grace period"),
            foreign(),
        ],
        NoticeKind::ScheduledMaintenance { closed: true, .. } => vec![
            "no drain: the scheduled change is over; if termguard drained the node for it, its marks are undone".into(),
        ],
        NoticeKind::ScheduledMaintenance { .. } => vec![
            drain("drain before the maintenance window starts"),
            foreign(),
        ],
        NoticeKind::RebalanceRecommendation if b.drain_on_rebalance => vec![
            drain("drain (--drain-on-rebalance); no deadline"),
            foreign(),
        ],
        NoticeKind::RebalanceRecommendation => vec![
            drain("cordon only (pass --drain-on-rebalance to drain)"),
            foreign(),
        ],
        NoticeKind::LifecycleLaunch if !b.complete_launch => {
            vec!["released for its owner: launch lifecycle actions are not handled here (--complete-launch is off)".into()]
        }
        NoticeKind::LifecycleLaunch => vec![
            drain("heartbeat while the instance joins; CompleteLifecycleAction CONTINUE once its node is Ready, ABANDON if it is not by --launch-timeout (its group replaces it)"),
            "only for groups tagged for this cluster; others are released for their owner".into(),
        ],
        NoticeKind::LifecycleTerminate => {
            let group = n.hook.as_ref().map_or("-", |h| h.group.as_str());
            let returns = n.hook.as_ref().is_some_and(LifecycleHook::instance_returns);
            let mut lines = vec![drain(
                "read the hook's timeouts (DescribeLifecycleHooks), heartbeat (RecordLifecycleActionHeartbeat) while draining, then CompleteLifecycleAction CONTINUE once every evicted pod is gone",
            )];
            if returns {
                lines.push("the instance comes back after this action (warm pool or root volume replacement): its node is drained, not gone for good".into());
            }
            lines.push(format!("if {instance} is not a node here and group {group} is tagged for this cluster: CompleteLifecycleAction CONTINUE at once"));
            lines.push(format!("otherwise: {}", foreign().split_once(": ").map_or(String::new(), |(_, rest)| rest.to_string())));
            lines
        }
    }
}

fn kind_text(kind: &NoticeKind) -> String {
    match kind {
        NoticeKind::SpotInterruption { action } => {
            let a = match action {
                SpotAction::Terminate => "terminate",
                SpotAction::Stop => "stop",
                SpotAction::Hibernate => "hibernate",
                SpotAction::Unknown(s) => s,
            };
            format!("spot-interruption (instance-action {a})")
        }
        NoticeKind::ScheduledMaintenance {
            event_type_code,
            window_end,
            closed,
        } => {
            let end = window_end
                .map(|e| format!(", window ends {e}"))
                .unwrap_or_default();
            let closed = if *closed { ", closed" } else { "" };
            format!("scheduled-maintenance ({event_type_code}{end}{closed})")
        }
        NoticeKind::StateChange { state } => format!("state-change ({})", state_text(state)),
        k => k.label().to_string(),
    }
}

fn state_text(state: &InstanceState) -> &str {
    match state {
        InstanceState::Pending => "pending",
        InstanceState::Running => "running",
        InstanceState::Stopping => "stopping",
        InstanceState::Stopped => "stopped",
        InstanceState::ShuttingDown => "shutting-down",
        InstanceState::Terminated => "terminated",
        InstanceState::Unknown(s) => s,
    }
}

fn source_text(source: NoticeSource) -> &'static str {
    match source {
        NoticeSource::EventBridge => "EventBridge event",
        NoticeSource::SnsEventBridge => "EventBridge event in an SNS envelope",
        NoticeSource::AutoScaling => "Auto Scaling notification",
        NoticeSource::SnsAutoScaling => "Auto Scaling notification in an SNS envelope",
        NoticeSource::Imds => "instance metadata",
    }
}

fn deadline_text(deadline: Option<&Deadline>, now: Timestamp) -> String {
    let Some(d) = deadline else {
        return "none".into();
    };
    let basis = match d.basis {
        DeadlineBasis::AssumedHeartbeatTimeout => {
            "event time + an assumed HeartbeatTimeout of 3600 s; the hook's own timeouts are read when handled, and heartbeats extend it"
        }
        DeadlineBasis::SpotWarning => "event time + the two-minute Spot warning",
        DeadlineBasis::MaintenanceWindowStart => "start of the maintenance window",
        DeadlineBasis::Immediate => "already happening",
    };
    let rel = if d.at < now {
        format!("{} ago", human(now.duration_since(d.at)))
    } else {
        format!("in {}", human(d.at.duration_since(now)))
    };
    format!("{} ({rel}; {basis})", d.at)
}

fn human(d: jiff::SignedDuration) -> String {
    let s = d.as_secs().unsigned_abs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn hook_text(h: &LifecycleHook) -> String {
    let transition = match h.transition {
        LifecycleTransition::Launching => "launching",
        LifecycleTransition::Terminating => "terminating",
    };
    let loc = |l: &Option<Location>| match l {
        Some(Location::Ec2) => "EC2".to_string(),
        Some(Location::AutoScalingGroup) => "AutoScalingGroup".into(),
        Some(Location::WarmPool) => "WarmPool".into(),
        Some(Location::Unknown(s)) => s.clone(),
        None => "-".into(),
    };
    let mut s = format!(
        "group {}, hook {}, token {}, {transition}, {} -> {}",
        h.group,
        h.hook_name,
        h.token,
        loc(&h.origin),
        loc(&h.destination)
    );
    if let Some(a) = &h.action {
        let _ = write!(s, ", action {a}");
    }
    if let Some(m) = &h.metadata {
        let _ = write!(s, ", metadata {m}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explain_fixture(name: &str, b: Behaviour, now: &str) -> String {
        let path = format!("{}/tests/data/events/{name}", env!("CARGO_MANIFEST_DIR"));
        let body = std::fs::read(path).expect("fixture");
        render(&parse::parse_all(&body), b, now.parse().expect("time"))
    }

    #[test]
    fn a_termination_lifecycle_action_explains_drain_heartbeat_and_complete() {
        let out = explain_fixture(
            "eventbridge-asg-terminate-lifecycle-action.json",
            Behaviour::default(),
            "2024-05-14T09:13:03Z",
        );
        assert!(out.contains("kind:     lifecycle-terminate\n"), "{out}");
        assert!(out.contains("instance: i-0123456789abcdef0\n"), "{out}");
        assert!(out.contains("group eks-workers-multi-az, hook termguard-terminate, token c0ffee00-1234-4abc-9def-0123456789ab, terminating, AutoScalingGroup -> EC2"), "{out}");
        assert!(
            out.contains("2024-05-14T10:12:03Z (in 59m; event time + an assumed HeartbeatTimeout"),
            "{out}"
        );
        assert!(out.contains("needs a node of this cluster: yes"), "{out}");
        assert!(
            out.contains("CompleteLifecycleAction CONTINUE once every evicted pod is gone"),
            "{out}"
        );
        assert!(
            out.contains("is tagged for this cluster: CompleteLifecycleAction CONTINUE at once"),
            "{out}"
        );
        assert!(out.contains("DescribeScalingActivities"), "{out}");
    }

    #[test]
    fn a_spot_interruption_past_its_deadline_is_dropped_when_foreign() {
        let out = explain_fixture(
            "eventbridge-spot-interruption-warning.json",
            Behaviour::default(),
            "2024-05-14T10:10:00Z",
        );
        assert!(
            out.contains("spot-interruption (instance-action terminate)"),
            "{out}"
        );
        assert!(
            out.contains("2024-05-14T10:04:00Z (6m ago; event time + the two-minute Spot warning)"),
            "{out}"
        );
        assert!(
            out.contains("past its deadline, so deleted and counted"),
            "{out}"
        );
    }

    #[test]
    fn a_rebalance_recommendation_is_cordon_only_unless_asked() {
        let name = "eventbridge-rebalance-recommendation.json";
        let now = "2024-05-14T09:56:00Z";
        let out = explain_fixture(name, Behaviour::default(), now);
        assert!(out.contains("cordon only"), "{out}");
        assert!(out.contains("deadline: none"), "{out}");
        let b = Behaviour {
            drain_on_rebalance: true,
            ..Behaviour::default()
        };
        assert!(explain_fixture(name, b, now).contains("drain (--drain-on-rebalance)"));
    }

    #[test]
    fn test_notifications_and_running_instances_need_nothing() {
        let now = "2024-05-14T09:56:00Z";
        let out = explain_fixture(
            "sqs-direct-asg-test-notification.json",
            Behaviour::default(),
            now,
        );
        assert!(out.contains("kind:     test\n"), "{out}");
        assert!(out.contains("needs a node of this cluster: no"), "{out}");
        let out = explain_fixture(
            "eventbridge-state-change-running.json",
            Behaviour::default(),
            now,
        );
        assert!(out.contains("nothing: the instance is running"), "{out}");
    }

    #[test]
    fn malformed_and_not_actionable_messages_say_what_happens_to_them() {
        let now: Timestamp = "2024-05-14T09:56:00Z".parse().expect("time");
        let out = render(&parse::parse_all(b"not json"), Behaviour::default(), now);
        assert!(
            out.starts_with("error (not-json): message body is not JSON"),
            "{out}"
        );
        assert!(out.contains("left on the queue untouched"), "{out}");
        let body = br#"{"detail-type":"EC2 AMI State Change","source":"aws.ec2","time":"2024-05-14T09:00:00Z","detail":{}}"#;
        let out = render(&parse::parse_all(body), Behaviour::default(), now);
        assert!(out.starts_with("error (unknown-detail-type)"), "{out}");
        assert!(
            out.contains("acknowledged (deleted from the queue)"),
            "{out}"
        );
    }
}
