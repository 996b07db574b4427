//! PATCH semantics: JSON merge patch (RFC 7386), strategic merge patch (merge patch plus
//! list merging by key for the lists kubectl and controllers patch), and JSON patch (RFC 6902).
//! See `docs/simulator.md#patch`.

use crate::errors::ApiError;
use serde_json::Value;

/// The patch flavours the simulator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` (server-side apply, treated as a merge).
    Apply,
}

impl PatchType {
    /// Maps a Content-Type to a patch type.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Merge keys of the lists strategic merge patch merges element-wise (from the Kubernetes
/// types' `patchMergeKey` tags); every other list is replaced.
fn merge_key(path: &[&str]) -> Option<&'static str> {
    match path {
        [.., "conditions"] => Some("type"),
        [.., "containers"] | [.., "initContainers"] | [.., "volumes"] | [.., "env"] => Some("name"),
        [.., "ownerReferences"] => Some("uid"),
        ["spec", "taints"] => Some("key"),
        ["status", "addresses"] => Some("type"),
        [.., "ports"] => Some("containerPort"),
        _ => None,
    }
}

fn strategic_merge(target: &mut Value, patch: &Value, path: &mut Vec<String>) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        path.push(k.clone());
        let key_path: Vec<&str> = path.iter().map(String::as_str).collect();
        match (v, merge_key(&key_path)) {
            (Value::Array(items), Some(mk)) => {
                let existing = t
                    .entry(k.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !existing.is_array() {
                    *existing = Value::Array(Vec::new());
                }
                if let Value::Array(list) = existing {
                    for item in items {
                        let id = item.get(mk).cloned();
                        let pos = id
                            .as_ref()
                            .and_then(|id| list.iter().position(|e| e.get(mk) == Some(id)));
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                list.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => strategic_merge(&mut list[i], item, path),
                            (None, false) => {
                                let mut fresh = Value::Null;
                                strategic_merge(&mut fresh, item, path);
                                list.push(fresh);
                            }
                        }
                    }
                }
            }
            (Value::Object(_), _) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(entry, v, path);
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
        path.pop();
    }
}

/// Applies a patch body to `doc`.
pub fn apply(doc: &mut Value, ty: PatchType, body: &[u8]) -> Result<(), ApiError> {
    match ty {
        PatchType::Merge | PatchType::Apply => {
            let patch: Value = parse(body)?;
            json_patch::merge(doc, &patch);
        }
        PatchType::Strategic => {
            let patch: Value = parse(body)?;
            strategic_merge(doc, &patch, &mut Vec::new());
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("json: cannot unmarshal JSON patch: {e}"))
            })?;
            // kube-apiserver reports a failed operation (a `test` that does not hold, a path
            // that is not there) as a bare 422 Invalid, the failure itself left out.
            json_patch::patch(doc, &ops).map_err(|_| ApiError {
                code: 422,
                reason: "Invalid",
                message: "the server rejected our request due to an error in our request".into(),
                details: Some(Box::default()),
            })?;
        }
    }
    Ok(())
}

fn parse(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uncordon_null_removes_the_key() {
        let mut node = json!({"spec": {"unschedulable": true, "podCIDR": "x"}});
        apply(
            &mut node,
            PatchType::Strategic,
            br#"{"spec":{"unschedulable":null}}"#,
        )
        .ok();
        assert_eq!(node, json!({"spec": {"podCIDR": "x"}}));
    }

    #[test]
    fn strategic_merge_merges_conditions_by_type() {
        let mut pod = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
        apply(
            &mut pod,
            PatchType::Strategic,
            br#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
        )
        .ok();
        assert_eq!(
            pod["status"]["conditions"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(pod["status"]["conditions"][0]["status"], "True");
    }

    #[test]
    fn strategic_merge_adds_and_deletes_taints_by_key() {
        let mut node = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}});
        apply(
            &mut node,
            PatchType::Strategic,
            br#"{"spec":{"taints":[{"key":"b","effect":"NoSchedule"}]}}"#,
        )
        .ok();
        assert_eq!(node["spec"]["taints"].as_array().map(Vec::len), Some(2));
        apply(
            &mut node,
            PatchType::Strategic,
            br#"{"spec":{"taints":[{"key":"a","$patch":"delete"}]}}"#,
        )
        .ok();
        assert_eq!(
            node["spec"]["taints"],
            json!([{"key": "b", "effect": "NoSchedule"}])
        );
    }

    #[test]
    fn merge_patch_replaces_lists() {
        let mut node = json!({"spec": {"taints": [{"key": "a"}]}});
        apply(
            &mut node,
            PatchType::Merge,
            br#"{"spec":{"taints":[{"key":"b"}]}}"#,
        )
        .ok();
        assert_eq!(node["spec"]["taints"], json!([{"key": "b"}]));
    }

    #[test]
    fn json_patch_test_failure_is_rejected() {
        let mut doc = json!({"a": 1});
        let r = apply(
            &mut doc,
            PatchType::Json,
            br#"[{"op":"test","path":"/a","value":2}]"#,
        );
        assert_eq!(r.err().map(|e| e.code), Some(422));
        let r = apply(
            &mut doc,
            PatchType::Json,
            br#"[{"op":"replace","path":"/a","value":3}]"#,
        );
        assert!(r.is_ok());
        assert_eq!(doc, json!({"a": 3}));
    }
}
