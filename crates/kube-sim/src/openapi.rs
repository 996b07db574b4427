//! A minimal OpenAPI v3 document, enough for `kubectl create -f` / `apply -f` to validate
//! (`docs/simulator.md#openapi`).

use crate::resources::{ALL, GROUPS};
use serde_json::{json, Map, Value};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: one entry per served group/version.
pub fn root() -> Value {
    let mut paths = Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(GROUPS.iter().copied());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kubesim")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/<gv path>`: a post and a patch operation per served kind.
pub fn group_doc(gv: &str) -> Option<Value> {
    let mut paths = Map::new();
    let field_validation = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]);
    for r in ALL.iter().filter(|r| gv_path(r.group, r.version) == gv) {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = if r.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("/{gv}/{}", r.plural)
        };
        paths.insert(base.clone(), json!({"post": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "post", "parameters": field_validation}}));
        paths.insert(format!("{base}/{{name}}"), json!({"patch": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch", "parameters": field_validation}}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "components": {"schemas": {}}, "paths": paths}),
    )
}
