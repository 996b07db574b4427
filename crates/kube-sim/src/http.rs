//! The HTTP front: path routing, content negotiation (JSON or Table), list paging, watch
//! streams, and every verb kubectl 1.32 and kube-rs need (`docs/simulator.md#what-it-serves`).

use crate::errors::ApiError;
use crate::faults::Faults;
use crate::ops::{self, DeleteOptions, Deleted};
use crate::patch::{self, PatchType};
use crate::resources::{self, ResourceDef, CORE_EVENTS, NAMESPACES, PODS};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{self, Store};
use crate::table::{self, IncludeObject};
use crate::{events, openapi, proto, validation};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Hooks the HTTP layer offers for simulator-only actions (`/sim/...`).
pub trait Admin: Send + Sync {
    /// Kills the instance behind a node: NotReady, pods stop ungracefully.
    fn kill_node(&self, name: &str) -> Result<Value, ApiError>;
}

/// Shared state of the HTTP server.
pub struct AppState {
    /// The object store.
    pub store: Arc<Store>,
    /// Fault injection and request counters.
    pub faults: Arc<Faults>,
    /// Simulator actions, when a cluster is attached.
    pub admin: Option<Arc<dyn Admin>>,
}

/// The router serving the whole API.
pub fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

pub(crate) type Resp = Response<Body>;

/// The Content-Type of a Table reply: kube-apiserver names no `as=Table` parameters in it,
/// kubectl recognises the Table by its `kind`.
pub(crate) const TABLE_CT: &str = "application/json";

fn json_response(code: u16, body: &Value) -> Resp {
    let text = serde_json::to_vec(body).unwrap_or_default();
    raw_response(code, "application/json", text)
}

fn raw_response(code: u16, ct: &str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn error_response(e: &ApiError) -> Resp {
    let mut r = raw_response(e.code, "application/json", e.to_json().into_bytes());
    if let Some(secs) = e
        .details
        .as_ref()
        .map(|d| d.retry_after_seconds)
        .filter(|s| *s > 0)
    {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// Decoded query string (`+` is a space, as Go's url.ParseQuery reads it).
fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        out.insert(dec(k), dec(v));
    }
    out
}

/// Where a request points.
pub(crate) struct Target {
    pub(crate) res: &'static ResourceDef,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_target(segs: &[&str]) -> Option<Target> {
    // segs start after the group/version prefix.
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (ns, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let res = resources::lookup(group, version, rest.first()?)?;
    if (!res.namespaced && ns.is_some()) || (res.namespaced && ns.is_none() && rest.len() > 1) {
        return None;
    }
    // Only the subresources the simulator serves exist; anything else (`pods/x/log`,
    // `deployments/x/scale`, `nodes/x/proxy/...`) is the generic 404, not the object
    // (`docs/simulator.md#resources-and-verbs`).
    let served = match rest.get(2).copied() {
        None => true,
        Some("status") => STATUS_SUBRESOURCE.contains(&res.storage),
        Some("eviction") => std::ptr::eq(res, &PODS),
        Some(_) => false,
    };
    if !served || rest.len() > 3 {
        return None;
    }
    Some(Target {
        res,
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
    })
}

async fn handle(
    State(app): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Resp {
    let path = uri.path().trim_end_matches('/');
    let q = parse_query(uri.query());
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let wants_table = accept.contains("as=Table");
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();

    // Paths under an unserved group reach no API handler: the mux's plain-text 404.
    if let ["apis", g, ..] = segs.as_slice() {
        if !resources::GROUPS.iter().any(|(name, _)| name == g) {
            return raw_response(
                404,
                "text/plain; charset=utf-8",
                b"404 page not found\n".to_vec(),
            );
        }
    }
    // kubectl asks for aggregated discovery first (`as=APIGroupDiscoveryList`, v2).
    let aggregated = accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        ["g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"]
            .iter()
            .all(|p| params.contains(p))
    });
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["api" | "apis"]) if aggregated => {
            let doc = resources::aggregated(segs == ["api"]);
            return raw_response(
                200,
                resources::AGGREGATED_CT,
                serde_json::to_vec(&doc).unwrap_or_default(),
            );
        }
        ("GET", ["version"]) => {
            return json_response(
                200,
                &json!({"major": "1", "minor": "32", "emulationMajor": "1", "emulationMinor": "32",
                "minCompatibilityMajor": "1", "minCompatibilityMinor": "31", "gitVersion": "v1.32.0-kube-sim",
                "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"}),
            )
        }
        ("GET", ["healthz" | "readyz" | "livez"]) => {
            return raw_response(200, "text/plain", b"ok".to_vec())
        }
        ("GET", ["api"]) => {
            return json_response(
                200,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
            )
        }
        ("GET", ["apis"]) => return json_response(200, &resources::group_list()),
        ("GET", ["api", v]) => return discovery("", v),
        ("GET", ["apis", g, v]) => return discovery(g, v),
        ("GET", ["openapi", "v3"]) => return json_response(200, &openapi::root()),
        ("GET", ["openapi", "v3", rest @ ..]) => {
            return match openapi::group_doc(&rest.join("/")) {
                Some(doc) => json_response(200, &doc),
                None => error_response(&ApiError::no_route()),
            }
        }
        (_, ["sim", rest @ ..]) => return sim_admin(&app, method.as_str(), rest, &body),
        _ => {}
    }

    let Some(target) = parse_target(&segs) else {
        return error_response(&ApiError::no_route());
    };
    let verb = match (method.as_str(), &target.name, target.sub.as_deref()) {
        ("GET", None, _) if is_true(q.get("watch")) => "watch",
        ("GET", None, _) => "list",
        (m, Some(_), Some("eviction")) if m != "POST" => {
            return error_response(&ApiError::method_not_allowed(m))
        }
        ("GET", Some(_), _) => "get",
        ("POST", Some(_), Some("eviction")) => "evict",
        ("POST", None, _) => "create",
        ("PUT", Some(_), _) => "update",
        ("PATCH", Some(_), _) => "patch",
        ("DELETE", Some(_), _) => "delete",
        ("DELETE", None, _) => "deletecollection",
        (m, _, _) => return error_response(&ApiError::method_not_allowed(m)),
    };
    let decision = app.faults.decide_for(verb, target.res.plural);
    app.faults.count_path(verb, path);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    if let Some(code) = decision.fail_with {
        let err = ApiError {
            code,
            reason: if code == 429 {
                "TooManyRequests"
            } else if code == 504 {
                "Timeout"
            } else {
                "InternalError"
            },
            message: format!("injected fault: {verb} failed"),
            details: None,
        };
        return error_response(&err);
    }
    let include = match q.get("includeObject").map(String::as_str) {
        Some("Object") => IncludeObject::Object,
        Some("None") => IncludeObject::None,
        _ => IncludeObject::Metadata,
    };
    let result = match verb {
        "watch" => return crate::watch::watch(app, target, &q, wants_table, include).await,
        "list" => list(&app, &target, &q, wants_table, include),
        "get" => get(&app, &target, wants_table, include),
        "evict" => evict(&app, &target, &q, &body),
        "create" => create(&app, &target, &q, &body),
        "update" => update(&app, &target, &q, &body),
        "patch" => patch_object(&app, &target, &q, &ct, &body),
        "delete" => delete(&app, &target, &q, &ct, &body),
        _ => delete_collection(&app, &target, &q),
    };
    match result {
        Ok((code, v)) if wants_table && v["kind"] == "Table" => {
            raw_response(code, TABLE_CT, serde_json::to_vec(&v).unwrap_or_default())
        }
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

pub(crate) fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|s| s == "true" || s == "1")
}

fn discovery(group: &str, version: &str) -> Resp {
    match resources::resource_list(group, version) {
        Some(list) => json_response(200, &list),
        None => error_response(&ApiError::no_route()),
    }
}

fn sim_admin(app: &AppState, method: &str, rest: &[&str], body: &[u8]) -> Resp {
    match (method, rest) {
        ("GET", ["faults"]) => json_response(
            200,
            &serde_json::to_value(app.faults.get()).unwrap_or_default(),
        ),
        ("PUT", ["faults"]) => match serde_json::from_slice(body) {
            Ok(cfg) => {
                app.faults.set(cfg);
                json_response(
                    200,
                    &serde_json::to_value(app.faults.get()).unwrap_or_default(),
                )
            }
            Err(e) => error_response(&ApiError::bad_request(format!("fault config: {e}"))),
        },
        ("GET", ["stats"]) => json_response(
            200,
            &json!({"total": app.faults.total(), "byVerb": app.faults.counts()}),
        ),
        ("DELETE", ["stats"]) => {
            app.faults.reset_counts();
            json_response(200, &json!({}))
        }
        ("POST", ["nodes", name, "kill"]) => match &app.admin {
            Some(admin) => match admin.kill_node(name) {
                Ok(v) => json_response(200, &v),
                Err(e) => error_response(&e),
            },
            None => error_response(&ApiError::no_route()),
        },
        _ => error_response(&ApiError::no_route()),
    }
}

/// The object as the requested API shows it (events differ between core/v1 and events.k8s.io/v1).
pub(crate) fn present(res: &ResourceDef, obj: &Value) -> Value {
    if std::ptr::eq(res, &CORE_EVENTS) {
        events::to_core(obj)
    } else {
        obj.clone()
    }
}

/// Items with kind/apiVersion dropped, as the real server writes list items.
fn list_item(res: &ResourceDef, obj: &Value) -> Value {
    let mut v = present(res, obj);
    if let Some(m) = v.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    v
}

pub(crate) struct Filter {
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub(crate) fn new(target: &Target, q: &HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(Filter {
            ns: target.ns.clone(),
            labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?,
            fields: FieldSelector::parse(
                q.get("fieldSelector").map(String::as_str).unwrap_or(""),
                target.res.storage,
            )?,
        })
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.ns {
            if store::namespace_of(obj) != ns {
                return false;
            }
        }
        self.labels.matches(&obj["metadata"]["labels"]) && self.fields.matches(obj)
    }
}

fn list(
    app: &AppState,
    target: &Target,
    q: &HashMap<String, String>,
    wants_table: bool,
    include: IncludeObject,
) -> Result<(u16, Value), ApiError> {
    let filter = Filter::new(target, q)?;
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // Continue token: "<list rv>/<namespace>/<name>" of the last item served.
    let cont = q.get("continue").filter(|c| !c.is_empty());
    let (rv, after) = match cont {
        Some(c) => {
            let mut parts = c.splitn(3, '/');
            let rv = parts.next().and_then(|r| r.parse::<u64>().ok());
            let ns = parts.next();
            let name = parts.next();
            match (rv, ns, name) {
                (Some(rv), Some(ns), Some(name)) => (rv, Some((ns.to_string(), name.to_string()))),
                // kube-apiserver's prefix; what follows is its decoder's complaint about
                // the token's bytes (real tokens are base64 JSON, these are not).
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid continue token: continue key is not valid: not a token this server issued",
                    ))
                }
            }
        }
        None => (app.store.current_rv(), None),
    };
    let candidates = app
        .store
        .list_after(target.res, target.ns.as_deref(), after.as_ref());
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining = 0usize;
    for obj in candidates.iter().filter(|o| filter.matches(o)) {
        if items.len() < limit {
            items.push(obj.clone());
        } else {
            remaining += 1;
        }
    }
    if remaining > 0 {
        if let Some(last) = items.last() {
            next = Some(format!(
                "{rv}/{}/{}",
                store::namespace_of(last),
                store::name_of(last)
            ));
        }
    }
    if wants_table {
        let shown: Vec<Value> = items.iter().map(|o| present(target.res, o)).collect();
        return Ok((
            200,
            table::table(target.res.storage, shown.iter(), rv, next, include),
        ));
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(n) = next {
        meta["continue"] = json!(n);
        meta["remainingItemCount"] = json!(remaining);
    }
    Ok((
        200,
        json!({
            "kind": format!("{}List", target.res.kind),
            "apiVersion": target.res.api_version(),
            "metadata": meta,
            "items": items.iter().map(|o| list_item(target.res, o)).collect::<Vec<_>>(),
        }),
    ))
}

fn get(
    app: &AppState,
    target: &Target,
    wants_table: bool,
    include: IncludeObject,
) -> Result<(u16, Value), ApiError> {
    let name = target.name.as_deref().unwrap_or("");
    let obj = app
        .store
        .get_or_404(target.res, target.ns.as_deref().unwrap_or(""), name)?;
    let shown = present(target.res, &obj);
    if wants_table && target.sub.is_none() {
        return Ok((
            200,
            table::table(
                target.res.storage,
                std::iter::once(&shown),
                store::rv_of(&obj),
                None,
                include,
            ),
        ));
    }
    Ok((200, shown))
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't decode the request body as JSON: {e}"))
    })
}

fn ensure_namespace(app: &AppState, target: &Target) -> Result<(), ApiError> {
    match &target.ns {
        Some(ns) if app.store.get(&NAMESPACES, "", ns).is_none() => {
            Err(ApiError::not_found(&NAMESPACES, ns))
        }
        _ => Ok(()),
    }
}

fn create(
    app: &AppState,
    target: &Target,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    if target.name.is_some() {
        return Err(ApiError::method_not_allowed("POST"));
    }
    ensure_namespace(app, target)?;
    let mut obj = parse_body(body)?;
    if std::ptr::eq(target.res, &CORE_EVENTS) {
        obj = events::from_core(&obj);
    }
    if std::ptr::eq(target.res, &PODS) {
        // The pod strategy's PrepareForCreate: a new pod's status is the server's.
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    validation::validate(target.res, &obj)?;
    let ns = target.ns.as_deref().unwrap_or("");
    if q.get("dryRun").is_some_and(|d| d == "All") {
        let would = app.store.dry_run_create(target.res, ns, obj)?;
        return Ok((201, present(target.res, &would)));
    }
    let created = app.store.create(target.res, ns, obj)?;
    Ok((201, present(target.res, &created)))
}

const STATUS_SUBRESOURCE: &[&str] = &[
    "pods",
    "nodes",
    "poddisruptionbudgets",
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
];

/// Keeps the part of the object the endpoint may not change: status for the main resource,
/// everything but status for `/status` (the real server's status strategies).
fn restrict_to_endpoint(res: &ResourceDef, sub: Option<&str>, old: &Value, new: &mut Value) {
    if !STATUS_SUBRESOURCE.contains(&res.storage) {
        return;
    }
    match sub {
        Some("status") => {
            let status = new.get("status").cloned();
            *new = old.clone();
            match status {
                Some(s) => new["status"] = s,
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        _ => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        },
    }
}

/// The last step of every replace and patch: keep what this endpoint may not change, refuse
/// immutable-field changes, then store `next` — or, for a dry run, hand it back unstored.
fn admit(
    res: &ResourceDef,
    name: &str,
    sub: Option<&str>,
    cur: &mut Value,
    mut next: Value,
    dry: bool,
) -> Result<Option<Value>, ApiError> {
    restrict_to_endpoint(res, sub, cur, &mut next);
    check_immutable(res, name, cur, &next)?;
    if dry {
        return Ok(Some(next));
    }
    *cur = next;
    Ok(None)
}

fn check_rv(
    res: &ResourceDef,
    name: &str,
    current: &Value,
    wanted: &Value,
) -> Result<(), ApiError> {
    match wanted["metadata"]["resourceVersion"].as_str() {
        Some(rv)
            if !rv.is_empty() && Some(rv) != current["metadata"]["resourceVersion"].as_str() =>
        {
            Err(ApiError::stale(res, name))
        }
        _ => Ok(()),
    }
}

/// The fields of a running pod's spec an update may change (`ValidatePodUpdate`).
const POD_SPEC_MUTABLE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// A pod spec without what an update may change, for comparing old and new.
fn pod_spec_fixed(spec: &Value) -> Value {
    let mut s = spec.clone();
    if let Some(m) = s.as_object_mut() {
        for field in [
            "activeDeadlineSeconds",
            "terminationGracePeriodSeconds",
            "tolerations",
        ] {
            m.remove(field);
        }
    }
    for list in ["containers", "initContainers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.remove("image");
            }
        }
    }
    s
}

fn check_immutable(
    res: &ResourceDef,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    if res.storage == "pods" {
        // Compared as the server compares them: after defaulting.
        let mut after = new.clone();
        crate::defaults::on_write(res, &mut after);
        let tolerations = |p: &Value| {
            p["spec"]["tolerations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        let (was, now) = (tolerations(old), tolerations(&after));
        let only_added = now.len() >= was.len() && now[..was.len()] == was[..];
        if !only_added || pod_spec_fixed(&old["spec"]) != pod_spec_fixed(&after["spec"]) {
            // The real message goes on with a diff of the internal PodSpec.
            return Err(ApiError::invalid(
                res,
                name,
                "spec",
                &format!("Forbidden: {POD_SPEC_MUTABLE}"),
            ));
        }
    }
    Ok(())
}

fn update(
    app: &AppState,
    target: &Target,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let name = target.name.clone().unwrap_or_default();
    // `?dryRun=All` (kube-rs `PostParams::dry_run`): validate and answer, persist nothing
    // (`docs/simulator.md#resources-and-verbs`).
    let dry = q.get("dryRun").is_some_and(|d| d == "All");
    let mut dry_result = None;
    let mut wanted = parse_body(body)?;
    if std::ptr::eq(target.res, &CORE_EVENTS) {
        wanted = events::from_core(&wanted);
    }
    if store::name_of(&wanted) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            store::name_of(&wanted)
        )));
    }
    let res = target.res;
    let sub = target.sub.clone();
    let updated = app
        .store
        .update(res, target.ns.as_deref().unwrap_or(""), &name, |cur| {
            check_rv(res, &name, cur, &wanted)?;
            dry_result = admit(res, &name, sub.as_deref(), cur, wanted.clone(), dry)?;
            Ok(())
        })?;
    Ok((
        200,
        present(res, &dry_result.unwrap_or_else(|| (*updated).clone())),
    ))
}

fn patch_object(
    app: &AppState,
    target: &Target,
    q: &HashMap<String, String>,
    ct: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let Some(ty) = PatchType::from_content_type(ct) else {
        return Err(ApiError::unsupported_media(ct));
    };
    let name = target.name.clone().unwrap_or_default();
    let ns = target.ns.clone().unwrap_or_default();
    let res = target.res;
    if ty == PatchType::Apply && app.store.get(res, &ns, &name).is_none() {
        if q.get("fieldManager").is_none_or(|f| f.is_empty()) {
            return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
        }
        ensure_namespace(app, target)?;
        let obj = parse_body(body)?;
        let created = app.store.create(res, &ns, obj)?;
        return Ok((201, present(res, &created)));
    }
    let is_core_event = std::ptr::eq(res, &CORE_EVENTS);
    let dry = q.get("dryRun").is_some_and(|d| d == "All");
    let sub = target.sub.clone();
    let mut dry_result = None;
    let updated = app.store.update(res, &ns, &name, |cur| {
        let mut doc = if is_core_event {
            events::to_core(cur)
        } else {
            cur.clone()
        };
        patch::apply(&mut doc, ty, body)?;
        if is_core_event {
            doc = events::from_core(&doc);
        }
        // A patch that names a resourceVersion is an optimistic-concurrency update
        // (`docs/simulator.md#patch`).
        check_rv(res, &name, cur, &doc)?;
        doc["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        dry_result = admit(res, &name, sub.as_deref(), cur, doc, dry)?;
        Ok(())
    })?;
    Ok((
        200,
        present(res, &dry_result.unwrap_or_else(|| (*updated).clone())),
    ))
}

fn delete_options(
    q: &HashMap<String, String>,
    ct: &str,
    body: &[u8],
) -> Result<DeleteOptions, ApiError> {
    let mut opts: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else if ct.starts_with(proto::CONTENT_TYPE) {
        // kubectl drain's delete path (typed clientset) sends protobuf DeleteOptions.
        proto::delete_options(body)?
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't decode DeleteOptions: {e}")))?
    };
    if let Some(g) = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()) {
        opts.grace_period_seconds = Some(g);
    }
    if q.get("dryRun").is_some_and(|d| d == "All") {
        opts.dry_run = Some(vec!["All".into()]);
    }
    Ok(opts)
}

fn delete(
    app: &AppState,
    target: &Target,
    q: &HashMap<String, String>,
    ct: &str,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let opts = delete_options(q, ct, body)?;
    let name = target.name.clone().unwrap_or_default();
    match ops::delete(
        &app.store,
        target.res,
        target.ns.as_deref().unwrap_or(""),
        &name,
        &opts,
    )? {
        Deleted::Object(o) => Ok((200, present(target.res, &o))),
        Deleted::Status(s) => Ok((200, s)),
    }
}

fn delete_collection(
    app: &AppState,
    target: &Target,
    q: &HashMap<String, String>,
) -> Result<(u16, Value), ApiError> {
    let filter = Filter::new(target, q)?;
    let opts = delete_options(q, "", b"")?;
    let (items, _) = app.store.list(target.res, target.ns.as_deref());
    let mut deleted = Vec::new();
    for obj in items.iter().filter(|o| filter.matches(o)) {
        match ops::delete(
            &app.store,
            target.res,
            store::namespace_of(obj),
            store::name_of(obj),
            &opts,
        ) {
            Ok(_) | Err(ApiError { code: 404, .. }) => deleted.push(list_item(target.res, obj)),
            Err(e) => return Err(e),
        }
    }
    Ok((
        200,
        json!({
            "kind": format!("{}List", target.res.kind),
            "apiVersion": target.res.api_version(),
            "metadata": {"resourceVersion": app.store.current_rv().to_string()},
            "items": deleted,
        }),
    ))
}

/// An Eviction body: policy/v1 (`deleteOptions`), policy/v1beta1 (same), or kube-rs's
/// snake_case `delete_options`, which a real server drops as an unknown field
/// (`docs/simulator.md#eviction`, `docs/simulator.md#client-pitfalls-it-reproduces`).
fn evict(
    app: &AppState,
    target: &Target,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    if !std::ptr::eq(target.res, &PODS) {
        return Err(ApiError::no_route());
    }
    let name = target.name.clone().unwrap_or_default();
    let eviction = parse_body(body)?;
    if let Some(n) = eviction["metadata"]["name"].as_str() {
        if n != name {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
    }
    let mut opts: DeleteOptions = match eviction.get("deleteOptions") {
        Some(o) if !o.is_null() => serde_json::from_value(o.clone()).map_err(|e| {
            ApiError::bad_request(format!("couldn't decode Eviction deleteOptions: {e}"))
        })?,
        _ => DeleteOptions::default(),
    };
    // `?dryRun=All` (kube-rs `EvictParams::post_options.dry_run`): run the checks, change
    // nothing (`docs/simulator.md#eviction`).
    if q.get("dryRun").is_some_and(|d| d == "All") {
        opts.dry_run = Some(vec!["All".into()]);
    }
    let ns = target.ns.as_deref().unwrap_or("");
    let status = ops::evict(&app.store, ns, &name, &opts)?;
    if opts.dry_run.is_none() {
        // Evictions the server accepted, per pod: how often one pod was asked to go and did.
        app.faults.count_path("evicted", &format!("{ns}/{name}"));
    }
    Ok((201, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_resources() {
        let t = parse_target(&[
            "api",
            "v1",
            "namespaces",
            "default",
            "pods",
            "web-0",
            "eviction",
        ]);
        assert!(t.as_ref().is_some_and(|t| t.res.plural == "pods"
            && t.ns.as_deref() == Some("default")
            && t.name.as_deref() == Some("web-0")
            && t.sub.as_deref() == Some("eviction")));
        let t = parse_target(&["api", "v1", "namespaces", "kube-system"]);
        assert!(t.as_ref().is_some_and(|t| t.res.plural == "namespaces"
            && t.ns.is_none()
            && t.name.as_deref() == Some("kube-system")));
        let t = parse_target(&["apis", "policy", "v1", "poddisruptionbudgets"]);
        assert!(t
            .as_ref()
            .is_some_and(|t| t.res.plural == "poddisruptionbudgets" && t.ns.is_none()));
        let t = parse_target(&[
            "apis",
            "apps",
            "v1",
            "namespaces",
            "kube-system",
            "daemonsets",
            "ds1",
        ]);
        assert!(t
            .as_ref()
            .is_some_and(|t| t.res.plural == "daemonsets" && t.name.as_deref() == Some("ds1")));
        assert!(parse_target(&["api", "v1", "widgets"]).is_none());
        // Unserved subresources are 404s, not the parent object (`kubectl logs`, `scale`).
        assert!(
            parse_target(&["api", "v1", "namespaces", "default", "pods", "web-0", "log"]).is_none()
        );
        assert!(parse_target(&[
            "apis",
            "apps",
            "v1",
            "namespaces",
            "default",
            "deployments",
            "web",
            "scale"
        ])
        .is_none());
        assert!(parse_target(&["api", "v1", "nodes", "n1", "proxy", "stats"]).is_none());
        assert!(parse_target(&["api", "v1", "nodes", "n1", "status"]).is_some());
    }

    #[test]
    fn dry_run_eviction_and_replace_persist_nothing() {
        let app = AppState {
            store: Arc::new(Store::default()),
            faults: Arc::new(Faults::default()),
            admin: None,
        };
        let pod = json!({"metadata": {"name": "web-0"}, "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let created = app.store.create(&PODS, "default", pod).ok();
        let rv = created.as_deref().map(store::rv_of);
        let dry = parse_query(Some("dryRun=All"));
        let target = |sub: Option<&str>| Target {
            res: &PODS,
            ns: Some("default".into()),
            name: Some("web-0".into()),
            sub: sub.map(str::to_string),
        };
        let evicted = evict(
            &app,
            &target(Some("eviction")),
            &dry,
            br#"{"delete_options":null,"metadata":{"name":"web-0"}}"#,
        );
        assert_eq!(evicted.map(|(code, _)| code).ok(), Some(201));
        let mut changed = app
            .store
            .get(&PODS, "default", "web-0")
            .map(|p| (*p).clone());
        assert!(changed
            .as_ref()
            .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_null()));
        if let Some(p) = changed.as_mut() {
            p["metadata"]["labels"] = json!({"dry": "run"});
        }
        let body = serde_json::to_vec(&changed).unwrap_or_default();
        let replied = update(&app, &target(None), &dry, &body);
        assert!(replied.is_ok_and(|(_, v)| v["metadata"]["labels"]["dry"] == "run"));
        let stored = app.store.get(&PODS, "default", "web-0");
        assert!(stored
            .as_ref()
            .is_some_and(|p| p["metadata"]["labels"].is_null()));
        assert_eq!(stored.as_deref().map(store::rv_of), rv);
    }

    #[test]
    fn query_decodes_selectors() {
        let q = parse_query(Some("fieldSelector=spec.nodeName%3Dn1%2Cstatus.phase%21%3DFailed&labelSelector=tier+in+%28a%2Cb%29"));
        assert_eq!(
            q.get("fieldSelector").map(String::as_str),
            Some("spec.nodeName=n1,status.phase!=Failed")
        );
        assert_eq!(
            q.get("labelSelector").map(String::as_str),
            Some("tier in (a,b)")
        );
    }
}
