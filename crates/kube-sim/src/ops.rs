//! Writes with API-server semantics beyond plain storage: graceful pod deletion and the
//! eviction subresource with PodDisruptionBudget checks (`docs/simulator.md#eviction`,
//! `docs/simulator.md#deletes-and-grace-periods`).

use crate::errors::{success_status, ApiError, StatusDetails};
use crate::resources::{ResourceDef, PDBS, PODS};
use crate::selectors::selector_object_matches;
use crate::store::{name_of, uid_of, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Preconditions of a delete.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    /// Required UID.
    pub uid: Option<String>,
    /// Required resourceVersion.
    pub resource_version: Option<String>,
}

/// `DeleteOptions` as clients send them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    /// Grace period override.
    pub grace_period_seconds: Option<i64>,
    /// Preconditions checked before deleting.
    pub preconditions: Option<Preconditions>,
    /// `["All"]` for a dry run.
    pub dry_run: Option<Vec<String>>,
    /// Ignored: no dependents are modelled.
    pub propagation_policy: Option<String>,
}

impl DeleteOptions {
    fn is_dry_run(&self) -> bool {
        self.dry_run
            .as_ref()
            .is_some_and(|d| d.iter().any(|x| x == "All"))
    }
}

/// The reply to a delete: pods return the object, other kinds a Status.
pub enum Deleted {
    /// The (terminating or removed) pod.
    Object(Arc<Value>),
    /// A Success Status.
    Status(Value),
}

fn check_preconditions(
    res: &ResourceDef,
    obj: &Value,
    p: &Option<Preconditions>,
) -> Result<(), ApiError> {
    let Some(p) = p else { return Ok(()) };
    let name = name_of(obj);
    if let Some(uid) = p.uid.as_deref().filter(|u| !u.is_empty()) {
        if uid != uid_of(obj) {
            return Err(ApiError::precondition_failed(
                res,
                name,
                &format!(
                    "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                    uid_of(obj)
                ),
            ));
        }
    }
    if let Some(rv) = p.resource_version.as_deref().filter(|r| !r.is_empty()) {
        let have = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if rv != have {
            return Err(ApiError::precondition_failed(
                res,
                name,
                &format!("the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record ({have}). The object might have been modified"),
            ));
        }
    }
    Ok(())
}

/// Deletes an object. Pods with a grace period > 0 that are bound to a node become
/// Terminating (the simulated kubelet removes them); everything else is removed at once.
pub fn delete(
    store: &Store,
    res: &'static ResourceDef,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Deleted, ApiError> {
    let obj = store.get_or_404(res, ns, name)?;
    check_preconditions(res, &obj, &opts.preconditions)?;
    if res.storage != "pods" {
        if !opts.is_dry_run() {
            store.remove(res, ns, name, Some(uid_of(&obj)))?;
        }
        return Ok(Deleted::Status(success_status(
            None,
            Some(StatusDetails {
                name: name.to_string(),
                group: res.group.to_string(),
                kind: res.plural.to_string(),
                uid: uid_of(&obj).to_string(),
                ..Default::default()
            }),
        )));
    }
    let grace = opts
        .grace_period_seconds
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0);
    let scheduled = obj["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if opts.is_dry_run() {
        // What the delete would have stamped on the pod, stored nowhere.
        let mut would = (*obj).clone();
        let immediate = grace == 0 || !scheduled || finished;
        if would["metadata"]["deletionTimestamp"].is_null() {
            let secs = if immediate { 0 } else { grace };
            let at = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .unwrap_or_else(|_| jiff::Timestamp::now());
            would["metadata"]["deletionTimestamp"] =
                json!(at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            would["metadata"]["deletionGracePeriodSeconds"] = json!(secs);
        }
        return Ok(Deleted::Object(Arc::new(would)));
    }
    if grace == 0 || !scheduled || finished {
        // Removed at once; the reply still shows the deletion the server stamped on it.
        let mut gone = (*store.remove(&PODS, ns, name, Some(uid_of(&obj)))?).clone();
        gone["metadata"]["deletionTimestamp"] = json!(crate::store::now_rfc3339());
        gone["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        return Ok(Deleted::Object(Arc::new(gone)));
    }
    let deadline = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(grace))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    if let Some(existing) = obj["metadata"]["deletionGracePeriodSeconds"].as_i64() {
        // A second delete may only shorten the grace period.
        if grace >= existing {
            return Ok(Deleted::Object(obj));
        }
    }
    let ts = deadline.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    store
        .mark_deleting(&PODS, ns, name, ts, grace)
        .map(Deleted::Object)
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

/// The eviction subresource: PDB check, then a graceful delete (kube-apiserver's eviction.go;
/// `docs/simulator.md#eviction`).
/// `grace` comes from the Eviction body's `deleteOptions` (policy/v1 or v1beta1 shape).
pub fn evict(store: &Store, ns: &str, name: &str, opts: &DeleteOptions) -> Result<Value, ApiError> {
    let pod = store.get_or_404(&PODS, ns, name)?;
    check_preconditions(&PODS, &pod, &opts.preconditions)?;
    let created = success_status(Some(201), None);
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let terminating = pod["metadata"]["deletionTimestamp"].is_string();
    if matches!(phase, "Succeeded" | "Failed" | "Pending") || terminating {
        delete(store, &PODS, ns, name, opts)?;
        return Ok(created);
    }
    let labels = &pod["metadata"]["labels"];
    let (pdbs, _) = store.list(&PDBS, Some(ns));
    let matching: Vec<&Arc<Value>> = pdbs
        .iter()
        .filter(|p| selector_object_matches(&p["spec"]["selector"], labels, false))
        .collect();
    if matching.len() > 1 {
        return Err(ApiError::multiple_pdbs());
    }
    let Some(pdb) = matching.first() else {
        delete(store, &PODS, ns, name, opts)?;
        return Ok(created);
    };
    let pdb_name = name_of(pdb).to_string();
    let status = &pdb["status"];
    let current = status["currentHealthy"].as_i64().unwrap_or(0);
    let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
    if !is_ready(&pod) && current >= desired && desired > 0 {
        // An unready pod does not count towards the budget: evicting it costs nothing.
        delete(store, &PODS, ns, name, opts)?;
        return Ok(created);
    }
    let dry = opts.is_dry_run();
    let pod_name = name.to_string();
    // Decrement under the store's per-object update so concurrent evictions cannot both
    // spend the last allowed disruption.
    store.update(&PDBS, ns, &pdb_name, |p| {
        let observed = p["status"]["observedGeneration"].as_i64().unwrap_or(0);
        let generation = p["metadata"]["generation"].as_i64().unwrap_or(0);
        if observed < generation {
            return Err(ApiError::eviction_blocked(
                format!("The disruption budget {pdb_name} is still being processed by the server."),
                10,
            ));
        }
        let allowed = p["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(ApiError::pdb_negative(&pdb_name));
        }
        if allowed == 0 {
            let cur = p["status"]["currentHealthy"].as_i64().unwrap_or(0);
            let des = p["status"]["desiredHealthy"].as_i64().unwrap_or(0);
            return Err(ApiError::eviction_blocked(
                format!("The disruption budget {pdb_name} needs {des} healthy pods and has {cur} currently"),
                0,
            ));
        }
        if dry {
            return Ok(());
        }
        p["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if !p["status"]["disruptedPods"].is_object() {
            p["status"]["disruptedPods"] = json!({});
        }
        p["status"]["disruptedPods"][&pod_name] = json!(crate::store::now_rfc3339());
        Ok(())
    })?;
    delete(store, &PODS, ns, name, opts)?;
    Ok(created)
}
