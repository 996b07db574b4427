//! One eviction or delete request, classified (`docs/drain-semantics.md#evictions-and-retries`).

use super::budget::{classify_eviction_error, EvictionErrorClass};
use super::plan::PlannedPod;
use crate::cluster::retry::{self, Bound, Op};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use std::time::Duration;

/// POSTs a policy/v1 Eviction with the UID precondition. kube-rs's `Api::evict` sends
/// `delete_options` in snake_case, which a real API server drops, so the body is built here
/// (`docs/drain-semantics.md#evictions-and-retries`).
pub(super) async fn evict(
    api: &Api<Pod>,
    p: &PlannedPod,
    uid: &str,
    grace: Option<i64>,
) -> Result<(), Attempt> {
    let mut delete_options = serde_json::json!({});
    if !uid.is_empty() {
        delete_options["preconditions"] = serde_json::json!({"uid": uid});
    }
    if let Some(g) = grace.filter(|g| *g >= 0) {
        delete_options["gracePeriodSeconds"] = serde_json::json!(g);
    }
    let body = serde_json::json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": p.pod.name, "namespace": p.pod.namespace},
        "deleteOptions": delete_options,
    });
    match api
        .create_subresource::<_, kube::core::Status>(
            "eviction",
            &p.pod.name,
            &PostParams::default(),
            &body,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => match classify_eviction_error(&status) {
            EvictionErrorClass::Gone => Err(Attempt::Gone),
            EvictionErrorClass::Blocked { retry_after, .. } => Err(Attempt::Retry {
                message: status.message.clone(),
                retry_after,
                blocked: true,
            }),
            EvictionErrorClass::NamespaceTerminating => Err(Attempt::Retry {
                message: status.message.clone(),
                retry_after: None,
                blocked: false,
            }),
            EvictionErrorClass::Retryable { retry_after } => Err(Attempt::Retry {
                message: status.message.clone(),
                retry_after,
                blocked: false,
            }),
            EvictionErrorClass::Fatal => Err(Attempt::Fatal(format!(
                "error when evicting pods/\"{}\" -n \"{}\": {}",
                p.pod.name, p.pod.namespace, status.message
            ))),
        },
        // Transport errors and timeouts: try again.
        Err(e) => Err(Attempt::Retry {
            message: e.to_string(),
            retry_after: None,
            blocked: false,
        }),
    }
}

/// A DELETE with the grace period (when ≥ 0) and the pod's UID as a precondition.
fn delete_params(uid: &str, grace: Option<i64>) -> DeleteParams {
    DeleteParams {
        grace_period_seconds: grace
            .filter(|g| *g >= 0)
            .and_then(|g| u32::try_from(g).ok()),
        preconditions: (!uid.is_empty()).then(|| Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    }
}

/// DELETEs the pod (grace period, UID precondition), retried on a transient error (429, 5xx, a
/// connection or timeout error) until `until`, at least three tries
/// (`docs/drain-semantics.md#api-errors`): a clipped delete at the deadline is the pod's last
/// chance of a SIGTERM, so one failed request must not leave it running. A 404, or a 409 from
/// the UID precondition (the name belongs to a new pod), means this pod is gone: done.
pub(super) async fn delete(
    api: &Api<Pod>,
    p: &PlannedPod,
    uid: &str,
    grace: Option<i64>,
    until: tokio::time::Instant,
) -> Result<(), String> {
    let params = delete_params(uid, grace);
    let op = Op::new("delete", "pods", &p.pod.name).in_namespace(&p.pod.namespace);
    retry::call(op, Bound::until(until), || async {
        match api.delete(&p.pod.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await
    .map_err(|e| {
        format!(
            "error when deleting pods/\"{}\" -n \"{}\": {e}",
            p.pod.name, p.pod.namespace
        )
    })
}

/// The result of one eviction attempt.
pub(super) enum Attempt {
    Gone,
    Retry {
        message: String,
        retry_after: Option<Duration>,
        blocked: bool,
    },
    Fatal(String),
}
