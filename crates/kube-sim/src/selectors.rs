//! Label and field selectors as the API server evaluates them (`spec/kube-api-surface.md` §9.3).

use crate::errors::ApiError;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector` query string. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<LabelReq>);

fn split_top_level(s: &str) -> Vec<&str> {
    // Commas inside parentheses belong to a set, not to the AND list.
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let s = s.trim();
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

impl LabelSelector {
    /// Parses the query-string form (`app=web,tier in (a,b),!canary`).
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let bad = || ApiError::bad_request(format!("unable to parse requirement: {part}"));
            let req = if let Some(key) = part.strip_prefix('!') {
                LabelReq::NotExists(key.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==") {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once('=') {
                LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some(idx) = part.find(" notin ") {
                LabelReq::NotIn(
                    part[..idx].trim().to_string(),
                    parse_set(&part[idx + 7..]).ok_or_else(bad)?,
                )
            } else if let Some(idx) = part.find(" in ") {
                LabelReq::In(
                    part[..idx].trim().to_string(),
                    parse_set(&part[idx + 4..]).ok_or_else(bad)?,
                )
            } else if part
                .chars()
                .all(|c| c.is_alphanumeric() || "-_./".contains(c))
            {
                LabelReq::Exists(part.to_string())
            } else {
                return Err(bad());
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether labels (a JSON object or null) satisfy every requirement.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed `fieldSelector`: `=`, `==`, `!=`, comma = AND, empty values allowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks the field names the resource supports.
    pub fn parse(s: &str, storage: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, negate, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !supported(storage, field) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), negate, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, negate, want)| {
            let have = field_value(obj, field);
            (have == *want) != *negate
        })
    }

    /// The value required for `field` with `=`, if any (used to narrow a scan).
    pub fn equals(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, negate, _)| f == field && !negate)
            .map(|(_, _, v)| v.as_str())
    }
}

fn supported(storage: &str, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match storage {
        "pods" => matches!(
            field,
            "spec.nodeName"
                | "status.phase"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "nodes" => field == "spec.unschedulable",
        "events" => matches!(
            field,
            "involvedObject.kind"
                | "involvedObject.namespace"
                | "involvedObject.name"
                | "involvedObject.uid"
                | "involvedObject.apiVersion"
                | "involvedObject.resourceVersion"
                | "involvedObject.fieldPath"
                | "reason"
                | "source"
                | "type"
                | "reportingComponent"
                | "regarding.kind"
                | "regarding.namespace"
                | "regarding.name"
                | "regarding.uid"
                | "reportingController"
        ),
        _ => false,
    }
}

/// The string value of a selectable field; absent fields read as "" (booleans as "true"/"false").
fn field_value(obj: &Value, field: &str) -> String {
    let path: Vec<&str> = match field {
        // core/v1 field names over events stored in events.k8s.io/v1 shape.
        "involvedObject.kind" => vec!["regarding", "kind"],
        "involvedObject.namespace" => vec!["regarding", "namespace"],
        "involvedObject.name" => vec!["regarding", "name"],
        "involvedObject.uid" => vec!["regarding", "uid"],
        "involvedObject.apiVersion" => vec!["regarding", "apiVersion"],
        "involvedObject.resourceVersion" => vec!["regarding", "resourceVersion"],
        "involvedObject.fieldPath" => vec!["regarding", "fieldPath"],
        "source" => vec!["deprecatedSource", "component"],
        "reportingComponent" => vec!["reportingController"],
        other => other.split('.').collect(),
    };
    let mut cur = obj;
    for p in path {
        cur = &cur[p];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // The real server reports an unset boolean as "false" (e.g. spec.unschedulable).
        Value::Null if field == "spec.unschedulable" || field == "spec.hostNetwork" => {
            "false".into()
        }
        _ => String::new(),
    }
}

/// Whether a `metav1.LabelSelector` object (PDB, ReplicaSet `spec.selector`) matches labels.
/// `empty_matches_all` distinguishes workload selectors from PDB selectors: for eviction
/// purposes an empty PDB selector matches no pod (spec §9.3).
pub fn selector_object_matches(selector: &Value, labels: &Value, empty_matches_all: bool) -> bool {
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let exprs = selector.get("matchExpressions").and_then(Value::as_array);
    let empty = match_labels.is_none_or(|m| m.is_empty()) && exprs.is_none_or(|e| e.is_empty());
    if empty {
        return empty_matches_all;
    }
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = match_labels {
        for (k, v) in ml {
            if get(k) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(exprs) = exprs {
        for e in exprs {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|vs| vs.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = get(key);
            let ok = match e["operator"].as_str().unwrap_or("") {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_supports_every_operator() {
        let labels = json!({"app": "web", "tier": "front"});
        let m = |s: &str| {
            LabelSelector::parse(s)
                .map(|l| l.matches(&labels))
                .unwrap_or(false)
        };
        assert!(m("app=web"));
        assert!(m("app==web,tier=front"));
        assert!(!m("app!=web"));
        assert!(m("tier in (front,back)"));
        assert!(!m("tier notin (front,back)"));
        assert!(m("app"));
        assert!(m("!canary"));
        assert!(m("canary!=yes"));
        assert!(m("canary notin (yes)"));
        assert!(m(""));
    }

    #[test]
    fn field_selector_handles_not_equal_and_empty_values() {
        let pod = json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let sel = FieldSelector::parse(
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
            "pods",
        );
        assert!(sel.is_ok_and(|s| s.matches(&pod)));
        let ev = json!({"regarding": {"kind": "Node", "name": "n1"}});
        let sel = FieldSelector::parse(
            "involvedObject.name=n1,involvedObject.namespace=,involvedObject.kind=Node",
            "events",
        );
        assert!(sel.is_ok_and(|s| s.matches(&ev)));
    }

    #[test]
    fn unsupported_field_is_bad_request() {
        let err = FieldSelector::parse("spec.foo=x", "pods").err();
        assert_eq!(
            err.map(|e| e.message),
            Some("field label not supported: spec.foo".to_string())
        );
    }

    #[test]
    fn empty_pdb_selector_matches_nothing() {
        assert!(!selector_object_matches(
            &json!({}),
            &json!({"a": "b"}),
            false
        ));
        assert!(selector_object_matches(
            &json!({"matchLabels": {"a": "b"}}),
            &json!({"a": "b"}),
            false
        ));
        let expr =
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x", "b"]}]});
        assert!(selector_object_matches(&expr, &json!({"a": "b"}), false));
    }
}
