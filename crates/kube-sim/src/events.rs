//! One Event object visible through core/v1 and events.k8s.io/v1 (`docs/simulator.md#events`).
//! Stored in the events.k8s.io/v1 shape; converted for the core/v1 API.

use serde_json::{json, Map, Value};

const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Copies an event's fields, renaming them between the two APIs; `to_core` picks the direction.
fn renamed(m: &Map<String, Value>, to_core: bool, api_version: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in m {
        let name = RENAMES
            .iter()
            .find(|(new, old)| if to_core { new == k } else { old == k })
            .map_or(k.as_str(), |(new, old)| if to_core { old } else { new });
        out.insert(name.to_string(), v.clone());
    }
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!(api_version));
    out
}

/// events.k8s.io/v1 → core/v1.
pub fn to_core(ev: &Value) -> Value {
    let Some(m) = ev.as_object() else {
        return ev.clone();
    };
    let mut out = renamed(m, true, "v1");
    if let Some(series) = m.get("series") {
        out.insert("count".into(), series["count"].clone());
    }
    Value::Object(out)
}

/// core/v1 → events.k8s.io/v1.
pub fn from_core(ev: &Value) -> Value {
    match ev.as_object() {
        Some(m) => Value::Object(renamed(m, false, "events.k8s.io/v1")),
        None => ev.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_event_reads_as_core_event() {
        let ev = json!({"regarding": {"kind": "Node", "name": "n1"}, "note": "draining", "reason": "DrainStarted",
            "reportingController": "termguard", "eventTime": "2026-01-01T00:00:00.123456Z"});
        let core = to_core(&ev);
        assert_eq!(core["involvedObject"]["name"], "n1");
        assert_eq!(core["message"], "draining");
        assert_eq!(core["reportingComponent"], "termguard");
        // kube-apiserver invents no lastTimestamp for an event that has an eventTime.
        assert!(core.get("lastTimestamp").is_none());
        assert_eq!(from_core(&core)["regarding"]["kind"], "Node");
    }
}
