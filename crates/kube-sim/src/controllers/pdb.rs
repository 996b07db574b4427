//! The disruption controller: keeps each PodDisruptionBudget's `currentHealthy`,
//! `desiredHealthy`, `expectedPods`, `disruptionsAllowed` and `observedGeneration` current
//! (Kubernetes `pkg/controller/disruption`; percentages round up).

use super::podutil;
use crate::resources::{PDBS, REPLICASETS, STATEFULSETS};
use crate::selectors::selector_object_matches;
use crate::store::{name_of, namespace_of, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => p.parse::<i64>().ok().map(|p| (p * total + 99) / 100),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

pub(super) fn reconcile(store: &Store, pods: &[Arc<Value>]) {
    let (pdbs, _) = store.list(&PDBS, None);
    if pdbs.is_empty() {
        return;
    }
    let (rss, _) = store.list(&REPLICASETS, None);
    let (stss, _) = store.list(&STATEFULSETS, None);
    let scale_of = |kind: &str, ns: &str, name: &str| -> Option<i64> {
        let list = match kind {
            "ReplicaSet" => &rss,
            "StatefulSet" => &stss,
            _ => return None,
        };
        list.iter()
            .find(|o| namespace_of(o) == ns && name_of(o) == name)
            .and_then(|o| o["spec"]["replicas"].as_i64())
    };
    for pdb in &pdbs {
        let ns = namespace_of(pdb);
        let matching: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| {
                namespace_of(p) == ns
                    && selector_object_matches(
                        &pdb["spec"]["selector"],
                        &p["metadata"]["labels"],
                        false,
                    )
            })
            .collect();
        // Expected pods: the scale of each controller owning a matching pod; pods without
        // a known controller count one each.
        let mut controllers: HashMap<(String, String), i64> = HashMap::new();
        let mut bare = 0;
        for p in &matching {
            match podutil::controller_of(p) {
                Some((kind, name, _)) => match scale_of(kind, ns, name) {
                    Some(n) => {
                        controllers.insert((kind.to_string(), name.to_string()), n);
                    }
                    None => bare += 1,
                },
                None => bare += 1,
            }
        }
        let expected: i64 = controllers.values().sum::<i64>() + bare;
        let current = matching.iter().filter(|p| podutil::healthy(p)).count() as i64;
        let desired = if let Some(min) = scaled(&pdb["spec"]["minAvailable"], expected) {
            min
        } else if let Some(max) = scaled(&pdb["spec"]["maxUnavailable"], expected) {
            (expected - max).max(0)
        } else {
            expected
        };
        // Pods evicted but not yet seen terminating still hold a disruption.
        let disrupted: serde_json::Map<String, Value> = pdb["status"]["disruptedPods"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(name, _)| {
                        matching
                            .iter()
                            .any(|p| name_of(p) == name.as_str() && !podutil::terminating(p))
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let allowed = (current - disrupted.len() as i64 - desired).max(0);
        let mut status = json!({
            "observedGeneration": pdb["metadata"]["generation"],
            "currentHealthy": current,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "disruptionsAllowed": allowed,
            "conditions": [{"type": "DisruptionAllowed", "status": if allowed > 0 { "True" } else { "False" },
                "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" }, "message": "",
                "observedGeneration": pdb["metadata"]["generation"],
                "lastTransitionTime": pdb["status"]["conditions"][0]["lastTransitionTime"].as_str().map(str::to_string).unwrap_or_else(crate::store::now_rfc3339)}],
        });
        if !disrupted.is_empty() {
            status["disruptedPods"] = Value::Object(disrupted);
        }
        if status != pdb["status"] {
            let _ = store.update(&PDBS, ns, name_of(pdb), |p| {
                p["status"] = status;
                Ok(())
            });
        }
    }
}
