//! API errors rendered as the real API server's `Status` bodies (`docs/simulator.md#errors`).

use crate::resources::ResourceDef;
use serde::Serialize;

/// `details` of a Status, in the Go struct's field order.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StatusDetails {
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// API group; omitted for the core group.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Resource (plural) or Kind, depending on the error.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Object UID.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Individual causes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Suggested client retry delay.
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "is_zero")]
    pub retry_after_seconds: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One cause inside Status details.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusCause {
    /// Machine-readable cause (`DisruptionBudget`, `FieldValueInvalid`).
    pub reason: String,
    /// Human-readable text.
    pub message: String,
    /// Offending field, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// An error the API returns, with the exact HTTP code, reason and message of the real server.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Status reason; empty where the real server sends none (multi-PDB 500).
    pub reason: &'static str,
    /// Message kubectl prints.
    pub message: String,
    /// Optional details (boxed: errors travel through every Result in the crate).
    pub details: Option<Box<StatusDetails>>,
}

#[derive(Serialize)]
struct StatusBody<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: serde_json::Map<String, serde_json::Value>,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a StatusDetails>,
    code: u16,
}

/// The `StatusCause` reason of a field error, from the text field.ErrorType prints.
fn cause_reason(detail: &str) -> &'static str {
    [
        ("Required value", "FieldValueRequired"),
        ("Forbidden", "FieldValueForbidden"),
        ("Unsupported value", "FieldValueNotSupported"),
        ("Duplicate value", "FieldValueDuplicate"),
        ("Too long", "FieldValueTooLong"),
    ]
    .iter()
    .find(|(prefix, _)| detail.starts_with(prefix))
    .map_or("FieldValueInvalid", |(_, r)| r)
}

fn resource_details(res: &ResourceDef, name: &str) -> StatusDetails {
    StatusDetails {
        name: name.to_string(),
        group: res.group.to_string(),
        kind: res.plural.to_string(),
        ..Default::default()
    }
}

impl ApiError {
    /// 404 for a missing object.
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", res.qualified(), name),
            details: Some(Box::new(resource_details(res, name))),
        }
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(Box::default()),
        }
    }

    /// 409 AlreadyExists for a create of an existing name.
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{}\" already exists", res.qualified(), name),
            details: Some(Box::new(resource_details(res, name))),
        }
    }

    /// 409 Conflict with a given explanation after the colon.
    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                res.qualified(),
                name,
                why
            ),
            details: Some(Box::new(resource_details(res, name))),
        }
    }

    /// 409 Conflict for a failed delete precondition. `rest.BeforeDelete` names the object
    /// by its Kind (`Pod`, `PodDisruptionBudget.policy`), not its resource.
    pub fn precondition_failed(res: &ResourceDef, name: &str, why: &str) -> Self {
        let qualified = if res.group.is_empty() {
            res.kind.to_string()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
            details: Some(Box::new(StatusDetails {
                name: name.to_string(),
                group: res.group.to_string(),
                kind: res.kind.to_string(),
                ..Default::default()
            })),
        }
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn stale(res: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid for one field; `detail` starts the way field.Error prints its type
    /// (`Required value`, `Invalid value: …`, `Forbidden: …`), which picks the cause reason.
    pub fn invalid(res: &ResourceDef, name: &str, field: &str, detail: &str) -> Self {
        let prefix = if res.group.is_empty() {
            res.kind.to_string()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{prefix} \"{name}\" is invalid: {field}: {detail}"),
            details: Some(Box::new(StatusDetails {
                name: name.to_string(),
                group: res.group.to_string(),
                kind: res.kind.to_string(),
                causes: vec![StatusCause {
                    reason: cause_reason(detail).into(),
                    message: detail.to_string(),
                    field: field.to_string(),
                }],
                ..Default::default()
            })),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 415 for an unsupported patch or body type: kube-apiserver answers a patch it has no
    /// decoder for with the bare HTTP status text and empty details, whatever the type.
    pub fn unsupported_media(_content_type: &str) -> Self {
        ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: "415: Unsupported Media Type".into(),
            details: Some(Box::default()),
        }
    }

    /// 405 for a verb the resource does not allow.
    pub fn method_not_allowed(verb: &str) -> Self {
        ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!(
                "the server does not allow this method on the requested resource ({verb})"
            ),
            details: None,
        }
    }

    /// 429 for an eviction that would violate a PDB (eviction.go `createTooManyRequestsError`).
    pub fn eviction_blocked(cause: String, retry_after: u32) -> Self {
        ApiError {
            code: 429,
            reason: "TooManyRequests",
            message: "Cannot evict pod as it would violate the pod's disruption budget.".into(),
            details: Some(Box::new(StatusDetails {
                causes: vec![StatusCause {
                    reason: "DisruptionBudget".into(),
                    message: cause,
                    field: String::new(),
                }],
                retry_after_seconds: retry_after,
                ..Default::default()
            })),
        }
    }

    /// 500 for a pod covered by several PDBs: no reason, no details (`docs/simulator.md#eviction`).
    pub fn multiple_pdbs() -> Self {
        ApiError {
            code: 500,
            reason: "",
            message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            details: None,
        }
    }

    /// 403 for a PDB whose allowed disruptions went negative.
    pub fn pdb_negative(pdb: &str) -> Self {
        ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "poddisruptionbudgets.policy \"{pdb}\" is forbidden: pdb disruptions allowed is negative"
            ),
            details: Some(Box::new(StatusDetails {
                name: pdb.to_string(),
                group: "policy".into(),
                kind: "poddisruptionbudgets".into(),
                ..Default::default()
            })),
        }
    }

    /// 410 Expired for a compacted resourceVersion (sent inside a watch stream).
    pub fn expired(requested: u64, oldest: u64) -> Self {
        ApiError {
            code: 410,
            reason: "Expired",
            message: format!("too old resource version: {requested} ({oldest})"),
            details: None,
        }
    }

    /// 500 InternalError, used by fault injection.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            code: 500,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }

    /// 504 Timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        ApiError {
            code: 504,
            reason: "Timeout",
            message: message.into(),
            details: None,
        }
    }

    fn body(&self) -> StatusBody<'_> {
        StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: serde_json::Map::new(),
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref(),
            code: self.code,
        }
    }

    /// The Status body, field for field as the real server writes it.
    pub fn to_status(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or(serde_json::Value::Null)
    }

    /// The Status body as compact JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_default()
    }
}

/// The Success Status the real server returns for an eviction (201) or a plain delete (200).
pub fn success_status(code: Option<u16>, details: Option<StatusDetails>) -> serde_json::Value {
    let mut v = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    if let Some(d) = details {
        v["details"] = serde_json::to_value(d).unwrap_or_default();
    }
    if let Some(c) = code {
        v["code"] = serde_json::json!(c);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{PDBS, PODS};

    #[test]
    fn not_found_body_matches_the_real_server_byte_for_byte() {
        assert_eq!(
            ApiError::not_found(&PODS, "x").to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#
        );
        assert_eq!(
            ApiError::not_found(&PDBS, "x").to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"poddisruptionbudgets.policy \"x\" not found","reason":"NotFound","details":{"name":"x","group":"policy","kind":"poddisruptionbudgets"},"code":404}"#
        );
    }

    #[test]
    fn pdb_block_is_429_with_disruption_budget_cause() {
        let e = ApiError::eviction_blocked(
            "The disruption budget web-pdb needs 2 healthy pods and has 2 currently".into(),
            0,
        );
        assert_eq!(
            e.to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Cannot evict pod as it would violate the pod's disruption budget.","reason":"TooManyRequests","details":{"causes":[{"reason":"DisruptionBudget","message":"The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]},"code":429}"#
        );
    }

    #[test]
    fn multiple_pdbs_is_500_without_reason_or_details() {
        assert_eq!(
            ApiError::multiple_pdbs().to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.","code":500}"#
        );
    }

    #[test]
    fn stale_update_is_conflict_with_the_real_wording() {
        let e = ApiError::stale(&crate::resources::NODES, "node1");
        assert_eq!(e.code, 409);
        assert_eq!(e.message, "Operation cannot be fulfilled on nodes \"node1\": the object has been modified; please apply your changes to the latest version and try again");
    }
}
