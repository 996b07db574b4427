//! Watch streams (`docs/simulator.md#watch`): chunked NDJSON, one event per line, replay
//! from a resourceVersion, synthetic ADDED for a fresh watch, bookmarks, `timeoutSeconds`,
//! selector transitions as ADDED/DELETED, and a too-old version as an in-stream 410 ERROR.

use crate::errors::ApiError;
use crate::http::{error_response, is_true, present, AppState, Filter, Resp, Target, TABLE_CT};
use crate::resources::ResourceDef;
use crate::store::{self, Change, EventType};
use crate::table::{self, IncludeObject};
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Renders one watch event line.
fn event_line(
    res: &ResourceDef,
    ty: &str,
    obj: &Value,
    wants_table: bool,
    include: IncludeObject,
) -> Vec<u8> {
    let object = if wants_table {
        let shown = present(res, obj);
        let mut t = table::table(
            res.storage,
            std::iter::once(&shown),
            store::rv_of(obj),
            None,
            include,
        );
        t["metadata"] = json!({"resourceVersion": store::rv_of(obj).to_string()});
        t
    } else {
        present(res, obj)
    };
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The object of a BOOKMARK: an empty object of the watched kind, serialized the way Go
/// writes a zero value (fields without `omitempty` show up as empty or null).
fn zero_object(res: &ResourceDef) -> Value {
    let template = json!({"metadata": {}, "spec": {"containers": null}});
    match res.kind {
        "Pod" => json!({"spec": {"containers": null}, "status": {}}),
        "Node" => {
            json!({"spec": {}, "status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "",
                "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "",
                "operatingSystem": "", "architecture": ""}}})
        }
        "Namespace" => json!({"spec": {}, "status": {}}),
        "Event" if res.group.is_empty() => json!({"involvedObject": {}, "source": {},
            "firstTimestamp": null, "lastTimestamp": null, "eventTime": null,
            "reportingComponent": "", "reportingInstance": ""}),
        "Event" => json!({"eventTime": null, "regarding": {}, "deprecatedSource": {},
            "deprecatedFirstTimestamp": null, "deprecatedLastTimestamp": null}),
        "Deployment" => json!({"spec": {"replicas": 0, "selector": null, "template": template,
            "strategy": {}}, "status": {}}),
        "ReplicaSet" => json!({"spec": {"replicas": 0, "selector": null, "template": template},
            "status": {"replicas": 0}}),
        "DaemonSet" => {
            json!({"spec": {"selector": null, "template": template, "updateStrategy": {}},
            "status": {"currentNumberScheduled": 0, "numberMisscheduled": 0,
                "desiredNumberScheduled": 0, "numberReady": 0}})
        }
        "StatefulSet" => json!({"spec": {"replicas": 0, "selector": null, "template": template,
            "serviceName": "", "updateStrategy": {}}, "status": {"replicas": 0, "availableReplicas": 0}}),
        "PodDisruptionBudget" => json!({"spec": {}, "status": {"disruptionsAllowed": 0,
            "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}}),
        "Lease" => json!({"spec": {}}),
        _ => json!({}),
    }
}

fn bookmark_line(res: &ResourceDef, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut object = zero_object(res);
    object["kind"] = json!(res.kind);
    object["apiVersion"] = json!(res.api_version());
    object["metadata"] = json!({"resourceVersion": rv.to_string()});
    if res.kind == "DaemonSet" {
        // Defaulting reaches even the empty object.
        object["metadata"]["annotations"] =
            json!({"deprecated.daemonset.template.generation": "0"});
    }
    if initial_end {
        object["metadata"]["annotations"]["k8s.io/initial-events-end"] = json!("true");
    }
    let mut line =
        serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Resources kube-apiserver serves without a watch cache (`DefaultWatchCacheSizes`): their
/// watches read etcd, where a compacted version is gone.
fn uncached(res: &ResourceDef) -> bool {
    res.storage == "events"
}

fn error_line(e: &ApiError) -> Vec<u8> {
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Translates a change into what a filtered watcher sees: an object that starts matching is
/// ADDED, one that stops matching is DELETED — with the object as it was while it matched,
/// at the change's resourceVersion, as the watch cache sends it (`docs/simulator.md#watch`).
fn translate(change: &Change, filter: &Filter) -> Option<(&'static str, Value)> {
    let now = filter.matches(&change.object);
    let before = change.old.as_deref().is_some_and(|o| filter.matches(o));
    let current = || (*change.object).clone();
    match change.ty {
        EventType::Added => now.then(|| ("ADDED", current())),
        EventType::Deleted => before.then(|| ("DELETED", current())),
        EventType::Modified => match (before, now) {
            (true, true) => Some(("MODIFIED", current())),
            (false, true) => Some(("ADDED", current())),
            (true, false) => {
                let mut old = change.old.as_deref().cloned().unwrap_or_default();
                old["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                Some(("DELETED", old))
            }
            (false, false) => None,
        },
    }
}

pub(crate) async fn watch(
    app: Arc<AppState>,
    target: Target,
    q: &HashMap<String, String>,
    wants_table: bool,
    include: IncludeObject,
) -> Resp {
    let filter = match Filter::new(&target, q) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    let res = target.res;
    let bookmarks = is_true(q.get("allowWatchBookmarks"));
    let send_initial = is_true(q.get("sendInitialEvents"));
    // kubectl get -w sends no timeout: the real server then picks 30–60 min.
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let start_rv: u64 = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let cut_after = app.faults.watch_cut_after();
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);

    let mut initial: Vec<Vec<u8>> = Vec::new();
    let (mut live, backlog, mut last_rv) = if start_rv == 0 || send_initial {
        let (items, rv, live) = app.store.snapshot_and_subscribe(res);
        for obj in items.iter().filter(|o| filter.matches(o)) {
            initial.push(event_line(res, "ADDED", obj, wants_table, include));
        }
        // The initial events end with a bookmark saying so whenever the client takes
        // bookmarks (kube-apiserver v1.34 marks it even without sendInitialEvents).
        if send_initial || bookmarks {
            initial.push(bookmark_line(res, rv, true));
        }
        (live, Vec::new(), rv)
    } else if uncached(res) && start_rv < app.store.compacted_rv() {
        // etcd's answer for a compacted revision, not the watch cache's.
        let e = ApiError {
            code: 410,
            reason: "Expired",
            message: "The resourceVersion for the provided watch is too old.".into(),
            details: None,
        };
        return stream_response(Body::from(error_line(&e)), wants_table);
    } else {
        match app.store.subscribe_since(start_rv) {
            Ok(sub) => (sub.live, sub.backlog, start_rv),
            Err(e) => {
                // Too old: an ERROR event inside a 200 stream, never an HTTP 410
                // (`docs/simulator.md#watch`).
                return stream_response(Body::from(error_line(&e)), wants_table);
            }
        }
    };
    // The watch cache sends a bookmark only past the version the watch started at.
    let started_at = last_rv;

    tokio::spawn(async move {
        let mut sent: u64 = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        for line in initial {
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                return;
            }
            sent += 1;
            if cut_after.is_some_and(|n| sent >= n) {
                return;
            }
        }
        // `last_rv` follows every change of the resource, matching or not: it is what a
        // bookmark reports.
        let deliver = |change: &Change, last_rv: &mut u64, sent: &mut u64| -> Option<Vec<u8>> {
            if change.storage != res.storage || change.rv <= *last_rv {
                return None;
            }
            *last_rv = change.rv;
            let (ty, object) = translate(change, &filter)?;
            *sent += 1;
            Some(event_line(res, ty, &object, wants_table, include))
        };
        for change in backlog {
            if let Some(line) = deliver(&change, &mut last_rv, &mut sent) {
                if tx.send(Ok(Bytes::from(line))).await.is_err() {
                    return;
                }
                if cut_after.is_some_and(|n| sent >= n) {
                    return;
                }
            }
        }
        // The watch cache's bookmarks: every minute, and once two seconds before the
        // timeout, each only when the resource has moved past where the watch started.
        let mut bookmark_tick = tokio::time::interval(Duration::from_secs(60));
        bookmark_tick.tick().await;
        let pre_timeout = deadline.checked_sub(Duration::from_secs(2));
        let mut pre_timeout_sent = timeout <= 2;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep_until(pre_timeout.unwrap_or(deadline)), if !pre_timeout_sent => {
                    pre_timeout_sent = true;
                    if bookmarks && last_rv > started_at
                        && tx.send(Ok(Bytes::from(bookmark_line(res, last_rv, false)))).await.is_err() {
                        return;
                    }
                }
                _ = bookmark_tick.tick(), if bookmarks => {
                    if last_rv > started_at
                        && tx.send(Ok(Bytes::from(bookmark_line(res, last_rv, false)))).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
                msg = live.recv() => match msg {
                    Ok(change) => {
                        if let Some(line) = deliver(&change, &mut last_rv, &mut sent) {
                            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                                return;
                            }
                            if cut_after.is_some_and(|n| sent >= n) {
                                return;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // A watcher too slow to keep up is told to re-list, like the watch cache does.
                        let e = ApiError::expired(last_rv, last_rv);
                        let _ = tx.send(Ok(Bytes::from(error_line(&e)))).await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    stream_response(Body::from_stream(stream), wants_table)
}

fn stream_response(body: Body, wants_table: bool) -> Resp {
    let mut r = Response::new(body);
    let ct = if wants_table {
        TABLE_CT
    } else {
        "application/json"
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}
