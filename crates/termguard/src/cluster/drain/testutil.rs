//! Pod builders shared by the drain unit tests.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod, PodSpec, PodStatus, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

/// A running pod owned by a ReplicaSet: what every rule lets through.
pub fn pod(namespace: &str, name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            owner_references: Some(vec![owner("ReplicaSet", "apps/v1", "rs", true)]),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        }),
    }
}

pub fn owner(kind: &str, api_version: &str, name: &str, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        controller: Some(controller),
        block_owner_deletion: None,
    }
}

pub fn owned_by(mut pod: Pod, owners: Vec<OwnerReference>) -> Pod {
    pod.metadata.owner_references = Some(owners);
    pod
}

pub fn daemonset_pod(namespace: &str, name: &str, daemonset: &str) -> Pod {
    owned_by(
        pod(namespace, name),
        vec![owner("DaemonSet", "apps/v1", daemonset, true)],
    )
}

pub fn bare(pod: Pod) -> Pod {
    owned_by(pod, vec![])
}

pub fn mirror(mut pod: Pod) -> Pod {
    annotate(&mut pod, "kubernetes.io/config.mirror", "hash");
    owned_by(pod, vec![owner("Node", "v1", "node1", true)])
}

pub fn annotated(mut pod: Pod, key: &str, value: &str) -> Pod {
    annotate(&mut pod, key, value);
    pod
}

fn annotate(pod: &mut Pod, key: &str, value: &str) {
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
}

pub fn labelled(mut pod: Pod, key: &str, value: &str) -> Pod {
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
    pod
}

pub fn with_phase(mut pod: Pod, phase: &str) -> Pod {
    pod.status.get_or_insert_with(Default::default).phase = Some(phase.into());
    pod
}

pub fn with_empty_dir(mut pod: Pod) -> Pod {
    pod.spec
        .get_or_insert_with(Default::default)
        .volumes
        .get_or_insert_with(Vec::new)
        .push(Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        });
    pod
}

pub fn with_priority_class(mut pod: Pod, class: &str) -> Pod {
    pod.spec
        .get_or_insert_with(Default::default)
        .priority_class_name = Some(class.into());
    pod
}

pub fn with_grace(mut pod: Pod, seconds: i64) -> Pod {
    pod.spec
        .get_or_insert_with(Default::default)
        .termination_grace_period_seconds = Some(seconds);
    pod
}

pub fn deleted_at(mut pod: Pod, at: Timestamp) -> Pod {
    pod.metadata.deletion_timestamp = Some(Time(at));
    pod
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().expect("test timestamp")
}

/// A label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
