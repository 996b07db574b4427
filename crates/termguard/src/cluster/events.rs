//! Kubernetes Events about drains, on the Node and on each pod, through kube-runtime's
//! Recorder (events.k8s.io/v1). Publishing is best effort: a failed Event is logged, never a
//! reason to slow or fail a drain.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

/// Event reasons termguard emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A drain began on a node.
    DrainStarted,
    /// A pod was evicted (or deleted) by the drain.
    PodEvicted,
    /// An eviction was refused by a disruption budget and will be retried.
    EvictionBlocked,
    /// Every pod left the node.
    DrainCompleted,
    /// The deadline passed with pods still on the node.
    DrainTimedOut,
    /// The drain could not complete for another reason.
    DrainFailed,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::DrainStarted => "DrainStarted",
            Reason::PodEvicted => "PodEvicted",
            Reason::EvictionBlocked => "EvictionBlocked",
            Reason::DrainCompleted => "DrainCompleted",
            Reason::DrainTimedOut => "DrainTimedOut",
            Reason::DrainFailed => "DrainFailed",
        }
    }

    fn severity(self) -> EventType {
        match self {
            Reason::EvictionBlocked | Reason::DrainTimedOut | Reason::DrainFailed => {
                EventType::Warning
            }
            _ => EventType::Normal,
        }
    }
}

/// Publishes drain events.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// A publisher reporting as controller `termguard`, instance `instance`.
    pub fn new(client: Client, instance: &str) -> Self {
        let reporter = Reporter {
            controller: "termguard".into(),
            instance: Some(instance.to_string()),
        };
        Events {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Publishes one event; failures are logged and otherwise ignored.
    pub async fn publish(&self, regarding: &ObjectReference, reason: Reason, note: String) {
        let mut note = note;
        if note.len() > 1000 {
            // events.k8s.io/v1 notes are limited to 1 KiB.
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let ev = Event {
            type_: reason.severity(),
            reason: reason.as_str().into(),
            note: Some(note),
            action: "Drain".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, regarding).await {
            tracing::warn!(reason = reason.as_str(), object = ?regarding.name, error = %e, "publishing event failed");
        }
    }
}

/// A reference to a Node.
pub fn node_ref(name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        uid: uid.map(str::to_string),
        ..Default::default()
    }
}

/// A reference to a Pod.
pub fn pod_ref(namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: uid.map(str::to_string),
        ..Default::default()
    }
}
