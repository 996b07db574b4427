//! Watch streams (`spec/kube-api-surface.md` §6): chunked NDJSON, one event per line, replay
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

fn bookmark_line(res: &ResourceDef, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let kind = res.kind;
    let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": res.api_version(), "metadata": meta}}))
        .unwrap_or_default();
    line.push(b'\n');
    line
}

/// Translates a change into what a filtered watcher sees: an object that starts matching is
/// ADDED, one that stops matching is DELETED (real server semantics, §6).
fn translate(change: &Change, filter: &Filter) -> Option<&'static str> {
    let now = filter.matches(&change.object);
    let before = change.old.as_deref().is_some_and(|o| filter.matches(o));
    match change.ty {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => before.then_some("DELETED"),
        EventType::Modified => match (before, now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
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
        if send_initial {
            initial.push(bookmark_line(res, rv, true));
        }
        (live, Vec::new(), rv)
    } else {
        match app.store.subscribe_since(start_rv) {
            Ok(sub) => (sub.live, sub.backlog, start_rv),
            Err(e) => {
                // Too old: an ERROR event inside a 200 stream, never an HTTP 410 (§6, §12.7).
                let mut line =
                    serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()}))
                        .unwrap_or_default();
                line.push(b'\n');
                return stream_response(Body::from(line), wants_table);
            }
        }
    };

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
        let deliver = |change: &Change, last_rv: &mut u64, sent: &mut u64| -> Option<Vec<u8>> {
            if change.storage != res.storage || change.rv <= *last_rv {
                return None;
            }
            *last_rv = change.rv;
            let ty = translate(change, &filter)?;
            *sent += 1;
            Some(event_line(res, ty, &change.object, wants_table, include))
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
        let mut bookmark_tick = tokio::time::interval(Duration::from_secs(30));
        bookmark_tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(Ok(Bytes::from(bookmark_line(res, last_rv, false)))).await;
                    }
                    return;
                }
                _ = bookmark_tick.tick(), if bookmarks => {
                    if tx.send(Ok(Bytes::from(bookmark_line(res, last_rv.max(1), false)))).await.is_err() {
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
                        let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
                        line.push(b'\n');
                        let _ = tx.send(Ok(Bytes::from(line))).await;
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
