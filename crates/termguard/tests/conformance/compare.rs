//! Views compared by value, normalising, shape and value comparison, and the list of known
//! differences.

use super::*;

// ---------------------------------------------------------------------------------------------
// Views: the parts compared by value

/// The resources the project's clients use, as discovery lists them.
pub(crate) const SERVED: &[&str] = &[
    "namespaces",
    "nodes",
    "nodes/status",
    "pods",
    "pods/eviction",
    "pods/status",
    "configmaps",
    "events",
    "poddisruptionbudgets",
    "poddisruptionbudgets/status",
    "deployments",
    "deployments/status",
    "replicasets",
    "replicasets/status",
    "daemonsets",
    "daemonsets/status",
    "statefulsets",
    "statefulsets/status",
    "leases",
];

/// An APIResourceList with only the served resources, sorted by name.
pub(crate) fn resource_list_view(v: &Value) -> Value {
    let mut out = v.clone();
    let mut rs: Vec<Value> = items_of(v, "resources")
        .into_iter()
        .filter(|r| SERVED.contains(&r["name"].as_str().unwrap_or("")))
        .collect();
    rs.sort_by_key(|r| r["name"].as_str().unwrap_or("").to_string());
    out["resources"] = json!(rs);
    out
}

/// The APIGroupList with only the groups the simulator serves, in the server's order.
pub(crate) fn group_list_view(v: &Value) -> Value {
    let served = ["apps", "policy", "coordination.k8s.io", "events.k8s.io"];
    let mut out = v.clone();
    let gs: Vec<Value> = items_of(v, "groups")
        .into_iter()
        .filter(|g| served.contains(&g["name"].as_str().unwrap_or("")))
        .collect();
    out["groups"] = json!(gs);
    out
}

/// An aggregated discovery document with only the served groups, resources and subresources.
pub(crate) fn aggregated_view(v: &Value) -> Value {
    let groups = ["", "apps", "policy", "coordination.k8s.io", "events.k8s.io"];
    let mut out = v.clone();
    let items: Vec<Value> = items_of(v, "items")
        .into_iter()
        .filter(|g| groups.contains(&g["metadata"]["name"].as_str().unwrap_or("")))
        .map(|mut g| {
            for version in g["versions"].as_array_mut().into_iter().flatten() {
                let rs: Vec<Value> = items_of(version, "resources")
                    .into_iter()
                    .filter(|r| SERVED.contains(&r["resource"].as_str().unwrap_or("")))
                    .map(|mut r| {
                        let parent = r["resource"].as_str().unwrap_or("").to_string();
                        let subs: Vec<Value> = items_of(&r, "subresources")
                            .into_iter()
                            .filter(|s| {
                                let name =
                                    format!("{parent}/{}", s["subresource"].as_str().unwrap_or(""));
                                SERVED.contains(&name.as_str())
                            })
                            .collect();
                        match r.as_object_mut() {
                            Some(m) if subs.is_empty() => {
                                m.remove("subresources");
                            }
                            _ => r["subresources"] = json!(subs),
                        }
                        r
                    })
                    .collect();
                version["resources"] = json!(rs);
            }
            g
        })
        .collect();
    out["items"] = json!(items);
    out
}

/// A Table's column definitions (what kubectl prints as headers, and `-o wide`'s extra ones).
pub(crate) fn table_columns_view(v: &Value) -> Value {
    json!({"kind": v["kind"], "apiVersion": v["apiVersion"], "columnDefinitions": v["columnDefinitions"]})
}

pub(crate) fn items_of(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Normalising and comparing

pub(crate) fn strip_artifacts(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                meta.remove("managedFields");
                if let Some(Value::Object(l)) = meta.get_mut("labels") {
                    l.remove(kwok::SCENARIO_LABEL);
                    if l.get("type").is_some_and(|t| t == "kwok") {
                        l.remove("type");
                    }
                    if l.is_empty() {
                        meta.remove("labels");
                    }
                }
                if let Some(Value::Object(a)) = meta.get_mut("annotations") {
                    a.remove(kwok::MANAGED);
                    if a.is_empty() {
                        meta.remove("annotations");
                    }
                }
            }
            // KWOK, the real backend's kubelet, not kube-apiserver: a node's status.phase
            // (deprecated; kubelets never set it).
            if let Some(Value::Object(st)) = m.get_mut("status") {
                if st.contains_key("nodeInfo") && st.get("phase").is_some_and(|p| p == "Running") {
                    st.remove("phase");
                }
            }
            if let Some(Value::Object(d)) = m.get_mut("disruptedPods") {
                let any = d.values().next().cloned();
                d.clear();
                if let Some(x) = any {
                    d.insert("*".into(), x);
                }
            }
            for (_, c) in m.iter_mut() {
                strip_artifacts(c);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_artifacts),
        _ => {}
    }
}

/// A Table's rows with their cells keyed by column name, so shapes compare per column.
pub(crate) fn table_by_column(v: &mut Value) {
    if v["kind"] != "Table" {
        return;
    }
    let names: Vec<String> = items_of(v, "columnDefinitions")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_string())
        .collect();
    if let Some(rows) = v["rows"].as_array_mut() {
        for row in rows {
            let cells = items_of(row, "cells");
            let keyed: serde_json::Map<String, Value> = names
                .iter()
                .cloned()
                .zip(
                    cells
                        .into_iter()
                        .chain(std::iter::repeat(json!("<missing>"))),
                )
                .collect();
            row["cells"] = Value::Object(keyed);
        }
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(crate) fn shape(v: &Value, path: &str, out: &mut BTreeMap<String, BTreeSet<&'static str>>) {
    out.entry(path.to_string())
        .or_default()
        .insert(type_name(v));
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = if k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    format!("{path}.{k}")
                } else {
                    format!("{path}[\"{k}\"]")
                };
                shape(c, &p, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| shape(c, &format!("{path}[]"), out)),
        _ => {}
    }
}

pub(crate) fn types(t: &BTreeSet<&'static str>) -> String {
    t.iter().copied().collect::<Vec<_>>().join(" or ")
}

/// Shape differences, each line naming the kind of object it was found in:
/// `shape (Pod): real only .spec.priority (number)`.
pub(crate) fn shape_diff(
    kind: &str,
    prefix: &str,
    real: &Value,
    sim: &Value,
    out: &mut Vec<String>,
) {
    let (mut r, mut s) = (BTreeMap::new(), BTreeMap::new());
    shape(real, prefix, &mut r);
    shape(sim, prefix, &mut s);
    // A path missing on one side is reported once, at its top.
    let covered = |p: &str, only: &BTreeMap<String, BTreeSet<&str>>, other: &BTreeMap<_, _>| {
        let mut q = p;
        while let Some(i) = q.rfind(['.', '[']) {
            q = &q[..i];
            if only.contains_key(q) && !other.contains_key(q) {
                return true;
            }
        }
        false
    };
    for (p, t) in &r {
        match s.get(p) {
            None if !covered(p, &r, &s) => {
                out.push(format!("shape ({kind}): real only {p} ({})", types(t)))
            }
            Some(u) if u != t => out.push(format!(
                "shape ({kind}): type of {p}: real {}, sim {}",
                types(t),
                types(u)
            )),
            _ => {}
        }
    }
    for (p, t) in &s {
        if !r.contains_key(p) && !covered(p, &s, &r) {
            out.push(format!("shape ({kind}): sim only {p} ({})", types(t)));
        }
    }
}

pub(crate) fn fold_types(events: &[Value]) -> Vec<String> {
    let mut seq: Vec<String> = Vec::new();
    for e in events {
        let t = e["type"].as_str().unwrap_or("?").to_string();
        if seq.last() != Some(&t) {
            seq.push(t);
        }
    }
    seq
}

pub(crate) fn compare(real: &Answer, rc: &Ctx, sim: &Answer, sc: &Ctx) -> Vec<String> {
    let mut d = Vec::new();
    if real.status != sim.status {
        d.push(format!("status: real {}, sim {}", real.status, sim.status));
    }
    let norm_ct = |c: &str| c.replace(' ', "").to_ascii_lowercase();
    if norm_ct(&real.content_type) != norm_ct(&sim.content_type) {
        d.push(format!(
            "content-type: real {}, sim {}",
            real.content_type, sim.content_type
        ));
    }
    match (&real.body, &sim.body) {
        (Body::Json(r), Body::Json(s)) => {
            let (mut r, mut s) = (r.clone(), s.clone());
            strip_artifacts(&mut r);
            strip_artifacts(&mut s);
            if r["kind"] == "Status" || s["kind"] == "Status" {
                for key in ["status", "reason", "message", "details", "code"] {
                    let (rv, sv) = status_field(key, &r[key], rc, &s[key], sc);
                    if rv != sv {
                        d.push(format!("Status {key}: real {rv}, sim {sv}"));
                    }
                }
            }
            if let Some(view) = real.view {
                let (rv, sv) = (view(&r), view(&s));
                if rv != sv {
                    value_diff("", &rv, &sv, &mut d);
                }
            } else {
                table_by_column(&mut r);
                table_by_column(&mut s);
                let kind = r["kind"].as_str().unwrap_or("?").to_string();
                shape_diff(&kind, "", &r, &s, &mut d);
            }
        }
        (Body::Events(r), Body::Events(s)) => {
            let (ft, fs) = (fold_types(r), fold_types(s));
            if ft != fs {
                d.push(format!(
                    "events: real [{}], sim [{}]",
                    ft.join(", "),
                    fs.join(", ")
                ));
            }
            let by_type = |evs: &[Value]| {
                let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
                for e in evs {
                    let mut o = e["object"].clone();
                    strip_artifacts(&mut o);
                    m.entry(e["type"].as_str().unwrap_or("?").to_string())
                        .or_default()
                        .push(o);
                }
                m
            };
            let (mr, ms) = (by_type(r), by_type(s));
            for (t, objs) in &mr {
                let Some(sobjs) = ms.get(t) else { continue };
                if t == "ERROR" {
                    for key in ["status", "reason", "message", "code"] {
                        let (rv, sv) = status_field(key, &objs[0][key], rc, &sobjs[0][key], sc);
                        if rv != sv {
                            d.push(format!("Status {key} (in ERROR): real {rv}, sim {sv}"));
                        }
                    }
                }
                let kind = objs[0]["kind"].as_str().unwrap_or("?");
                shape_diff(kind, t, &json!(objs), &json!(sobjs), &mut d);
            }
        }
        // Plain text (the mux's 404) compares by value; other encodings not at all.
        (Body::Other(r), Body::Other(s)) if real.content_type.starts_with("text/") && r != s => {
            d.push(format!("text: real {r:?}, sim {s:?}"));
        }
        (Body::Other(_), Body::Other(_)) => {}
        (r, s) => d.push(format!("body: real {}, sim {}", body_kind(r), body_kind(s))),
    }
    d
}

/// What was compared for an answer, as the report names it.
pub(crate) fn aspects(a: &Answer) -> Vec<&'static str> {
    let mut out = vec!["code", "content-type"];
    match &a.body {
        Body::Json(v) if v["kind"] == "Status" => out.push("Status"),
        Body::Json(_) if a.view.is_some() => out.push("values"),
        Body::Json(_) => out.push("shape"),
        Body::Events(evs) => {
            out.push("events");
            if evs.iter().any(|e| e["type"] == "ERROR") {
                out.push("Status");
            }
            out.push("shape");
        }
        Body::Other(_) if a.content_type.starts_with("text/") => out.push("text"),
        Body::Other(_) => {}
    }
    out
}

/// The aspect a difference line is about.
pub(crate) fn aspect_of(diff: &str) -> &'static str {
    let head = diff.split([':', ' ']).next().unwrap_or("");
    match head {
        "status" => "code",
        "content-type" => "content-type",
        "Status" => "Status",
        "value" => "values",
        "shape" => "shape",
        "events" => "events",
        "text" => "text",
        _ => "body",
    }
}

pub(crate) fn body_kind(b: &Body) -> &'static str {
    match b {
        Body::Json(_) => "JSON",
        Body::Events(_) => "a watch stream",
        Body::Other(_) => "not JSON",
    }
}

/// Differences between two values, path by path (for the views compared by value).
pub(crate) fn value_diff(path: &str, r: &Value, s: &Value, out: &mut Vec<String>) {
    match (r, s) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => value_diff(&p, x, y, out),
                    (Some(x), None) => out.push(format!("value: real only {p} = {x}")),
                    (None, Some(y)) => out.push(format!("value: sim only {p} = {y}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            // Arrays of named entries are compared entry by entry.
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let key = x["name"].as_str().map_or(i.to_string(), str::to_string);
                value_diff(&format!("{path}[{key}]"), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.iter().all(|x| x["name"].is_string()) => {
            let names = |v: &Vec<Value>| -> Vec<String> {
                v.iter()
                    .map(|x| x["name"].as_str().unwrap_or("").to_string())
                    .collect()
            };
            let (na, nb) = (names(a), names(b));
            for (x, n) in a.iter().zip(&na) {
                match b.iter().find(|y| y["name"] == x["name"]) {
                    Some(y) => value_diff(&format!("{path}[{n}]"), x, y, out),
                    None => out.push(format!("value: real only {path}[{n}]")),
                }
            }
            for n in nb.iter().filter(|n| !na.contains(n)) {
                out.push(format!("value: sim only {path}[{n}]"));
            }
        }
        _ if r != s => out.push(format!("value: {path}: real {r}, sim {s}")),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Known differences

pub(crate) struct Known {
    pub(crate) case: String,
    pub(crate) diff: String,
    pub(crate) why: String,
    pub(crate) seen: bool,
}

pub(crate) fn read_known() -> Vec<Known> {
    let mut out = Vec::new();
    for line in KNOWN.lines() {
        let line = line.trim();
        if !line.starts_with('|') || line.starts_with("|-") || line.starts_with("| Case") {
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect();
        if cells.len() != 3 {
            panic!("known-differences.md: a row needs three cells: {line}");
        }
        out.push(Known {
            case: cells[0].clone(),
            diff: cells[1].replace("\\|", "|"),
            why: cells[2].clone(),
            seen: false,
        });
    }
    out
}

/// Glob match with `*` for any run of characters.
pub(crate) fn glob(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(j) => rest = &rest[j + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// One field of two Status bodies, ready to compare: text with each backend's values put back
/// to their placeholders; the HTTP code as it is (a resourceVersion that happens to read `429`
/// must not turn the code into a placeholder).
pub(crate) fn status_field(
    key: &str,
    real: &Value,
    rc: &Ctx,
    sim: &Value,
    sc: &Ctx,
) -> (String, String) {
    if key == "code" {
        (real.to_string(), sim.to_string())
    } else {
        (rc.unfill(&real.to_string()), sc.unfill(&sim.to_string()))
    }
}
