//! The object store: every object as JSON, one global resourceVersion counter, a bounded
//! history of changes for watch replay, and a broadcast of live changes.
//!
//! Semantics follow `docs/simulator.md#resourceversion-and-lists` (resourceVersion is one
//! strictly increasing counter, every write bumps it) and `docs/simulator.md#watch` (watch
//! replay from a history buffer; a version older than the retained history is answered with
//! 410 Expired).

use crate::errors::ApiError;
use crate::resources::{self, ResourceDef};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    /// Kind of change.
    pub ty: EventType,
    /// Storage key of the resource (`pods`, `events`).
    pub storage: &'static str,
    /// resourceVersion of this change.
    pub rv: u64,
    /// The object after the change (for deletes: its last state with the deletion's RV).
    pub object: Arc<Value>,
    /// The object before the change, for updates and deletes.
    pub old: Option<Arc<Value>>,
}

/// (namespace, name); namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

struct State {
    rv: u64,
    tables: HashMap<&'static str, BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<Arc<Change>>,
    history_cap: usize,
    /// The revision history was compacted to (etcd's compaction; see [`Store::compact`]).
    compacted: u64,
    /// Names for `generateName`; seedable so a simulation can be replayed.
    rng: fastrand::Rng,
}

/// The shared object store.
pub struct Store {
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Change>>,
}

/// A subscription to changes made after a given resourceVersion.
pub struct Subscription {
    /// Changes already committed after the requested version, oldest first.
    pub backlog: Vec<Arc<Change>>,
    /// Live changes after the backlog.
    pub live: broadcast::Receiver<Arc<Change>>,
}

/// The current time as the API server formats `metav1.Time` (RFC 3339, seconds, `Z`).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The current time as `metav1.MicroTime`.
pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Namespace of an object (empty when cluster-scoped).
pub fn namespace_of(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

/// Name of an object.
pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// UID of an object.
pub fn uid_of(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

/// resourceVersion of an object as a number (0 when absent or malformed).
pub fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn random_suffix(rng: &mut fastrand::Rng) -> String {
    // Same alphabet as apiserver's generateName (no vowels, no confusable digits).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rng.usize(..ALPHABET.len())] as char)
        .collect()
}

impl Default for Store {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl Store {
    /// An empty store keeping `history_cap` changes for watch replay.
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Store {
            state: Mutex::new(State {
                rv: 1,
                tables: HashMap::new(),
                history: VecDeque::new(),
                history_cap,
                compacted: 0,
                rng: fastrand::Rng::new(),
            }),
            tx,
        }
    }

    /// Seeds the generated names (`generateName`), so the same scenario yields the same pod
    /// names — and the same scheduling order — run after run.
    pub fn seed(&self, seed: u64) {
        self.lock().rng = fastrand::Rng::with_seed(seed);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-written object (writes are
        // single map operations), so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    fn commit(&self, st: &mut State, change: Change) -> Arc<Change> {
        let change = Arc::new(change);
        st.history.push_back(change.clone());
        while st.history.len() > st.history_cap {
            st.history.pop_front();
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(change.clone());
        change
    }

    /// Stores `new` in place of `old` under a fresh resourceVersion and announces MODIFIED.
    fn replace(
        &self,
        st: &mut State,
        res: &'static ResourceDef,
        key: Key,
        old: Arc<Value>,
        mut new: Value,
    ) -> Arc<Value> {
        st.rv += 1;
        let rv = st.rv;
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let new = Arc::new(new);
        if let Some(t) = st.tables.get_mut(res.storage) {
            t.insert(key, new.clone());
        }
        self.commit(
            st,
            Change {
                ty: EventType::Modified,
                storage: res.storage,
                rv,
                object: new.clone(),
                old: Some(old),
            },
        );
        new
    }

    /// Gets one object.
    pub fn get(&self, res: &ResourceDef, ns: &str, name: &str) -> Option<Arc<Value>> {
        let st = self.lock();
        st.tables
            .get(res.storage)
            .and_then(|t| t.get(&(ns.to_string(), name.to_string())))
            .cloned()
    }

    /// Gets one object or the NotFound error.
    pub fn get_or_404(
        &self,
        res: &ResourceDef,
        ns: &str,
        name: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.get(res, ns, name)
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Lists objects of a resource (optionally in one namespace) with the list's resourceVersion.
    pub fn list(&self, res: &ResourceDef, ns: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let st = self.lock();
        let items = match st.tables.get(res.storage) {
            None => Vec::new(),
            Some(t) => match ns {
                Some(ns) => t
                    .range((ns.to_string(), String::new())..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect(),
                None => t.values().cloned().collect(),
            },
        };
        (items, st.rv)
    }

    /// Lists the objects after `after` (exclusive), for paging.
    pub fn list_after(
        &self,
        res: &ResourceDef,
        ns: Option<&str>,
        after: Option<&Key>,
    ) -> Vec<Arc<Value>> {
        let st = self.lock();
        let Some(t) = st.tables.get(res.storage) else {
            return Vec::new();
        };
        let iter: Box<dyn Iterator<Item = (&Key, &Arc<Value>)>> = match after {
            Some(k) => Box::new(t.range((
                std::ops::Bound::Excluded(k.clone()),
                std::ops::Bound::Unbounded,
            ))),
            None => Box::new(t.iter()),
        };
        iter.filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Creates an object: fills uid, creationTimestamp, resourceVersion, generation and
    /// namespace; resolves `generateName`; applies the API server's defaults.
    pub fn create(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        self.create_or_try(res, ns, obj, false).map(|(obj, _)| obj)
    }

    /// What [`Store::create`] would store, without storing it (`?dryRun=All`): the same
    /// checks, defaults, name, uid and creationTimestamp, but no resourceVersion.
    pub fn dry_run_create(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        obj: Value,
    ) -> Result<Value, ApiError> {
        self.create_or_try(res, ns, obj, true)
            .map(|(obj, _)| (*obj).clone())
    }

    fn create_or_try(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        mut obj: Value,
        dry: bool,
    ) -> Result<(Arc<Value>, u64), ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let body_ns = namespace_of(&obj).to_string();
        if res.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            obj["metadata"]["namespace"] = json!(ns);
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let mut st = self.lock();
        let State { tables, rng, .. } = &mut *st;
        let table = tables.entry(res.storage).or_default();
        let mut name = name_of(&obj).to_string();
        if name.is_empty() {
            let Some(prefix) = obj["metadata"]["generateName"].as_str().map(str::to_string) else {
                return Err(ApiError::invalid(
                    res,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            };
            loop {
                let candidate = format!("{prefix}{}", random_suffix(rng));
                if !table.contains_key(&(ns.to_string(), candidate.clone())) {
                    name = candidate;
                    break;
                }
            }
            obj["metadata"]["name"] = json!(name);
        }
        let key = (
            if res.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            name.clone(),
        );
        if table.contains_key(&key) {
            return Err(ApiError::already_exists(res, &name));
        }
        let suffix = random_suffix(rng);
        crate::defaults::on_create(res, &mut obj, &suffix);
        let meta = &mut obj["metadata"];
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        if meta["creationTimestamp"].as_str().is_none_or(str::is_empty) {
            meta["creationTimestamp"] = json!(now_rfc3339());
        }
        if let Some(m) = meta.as_object_mut() {
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("resourceVersion");
        }
        obj["kind"] = json!(res.kind);
        obj["apiVersion"] = json!(res.api_version());
        if dry {
            return Ok((Arc::new(obj), st.rv));
        }
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = Arc::new(obj);
        if let Some(t) = st.tables.get_mut(res.storage) {
            t.insert(key, obj.clone());
        }
        self.commit(
            &mut st,
            Change {
                ty: EventType::Added,
                storage: res.storage,
                rv,
                object: obj.clone(),
                old: None,
            },
        );
        Ok((obj, rv))
    }

    /// Updates an object in place through `f`. A change that leaves the object as it was
    /// commits nothing (as the real server: no new resourceVersion for a no-op update).
    /// `f` may refuse the update by returning an error.
    pub fn update<F>(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        f: F,
    ) -> Result<Arc<Value>, ApiError>
    where
        F: FnOnce(&mut Value) -> Result<(), ApiError>,
    {
        let mut st = self.lock();
        let key = key_of(res, ns, name);
        let old = current(&st, res, &key)?;
        let mut new = (*old).clone();
        f(&mut new)?;
        // Identity and bookkeeping fields are the server's, whatever the writer sent.
        for field in [
            "uid",
            "name",
            "namespace",
            "creationTimestamp",
            "resourceVersion",
        ] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        if old
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some()
        {
            new["metadata"]["deletionTimestamp"] = old["metadata"]["deletionTimestamp"].clone();
        }
        new["kind"] = json!(res.kind);
        new["apiVersion"] = json!(res.api_version());
        crate::defaults::on_write(res, &mut new);
        if new == *old {
            return Ok(old);
        }
        if crate::defaults::has_generation(res)
            && new.get("spec") != old.get("spec")
            && old["metadata"].get("generation").is_some()
        {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        Ok(self.replace(&mut st, res, key, old, new))
    }

    /// Like [`Store::update`] but bypasses the server-owned field protection for
    /// `deletionTimestamp` (graceful deletion sets it).
    pub fn mark_deleting(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        deletion_timestamp: String,
        grace: i64,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.lock();
        let key = key_of(res, ns, name);
        let old = current(&st, res, &key)?;
        let mut new = (*old).clone();
        new["metadata"]["deletionTimestamp"] = json!(deletion_timestamp);
        new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        Ok(self.replace(&mut st, res, key, old, new))
    }

    /// Removes an object; `expect_uid` guards against removing a same-named successor.
    pub fn remove(
        &self,
        res: &'static ResourceDef,
        ns: &str,
        name: &str,
        expect_uid: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        let mut st = self.lock();
        let key = key_of(res, ns, name);
        let old = current(&st, res, &key)?;
        if let Some(uid) = expect_uid {
            if uid_of(&old) != uid {
                return Err(ApiError::precondition_failed(
                    res,
                    name,
                    &format!(
                        "the UID in the precondition ({uid}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                        uid_of(&old)
                    ),
                ));
            }
        }
        if let Some(t) = st.tables.get_mut(res.storage) {
            t.remove(&key);
        }
        st.rv += 1;
        let rv = st.rv;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = json!(rv.to_string());
        let last = Arc::new(last);
        self.commit(
            &mut st,
            Change {
                ty: EventType::Deleted,
                storage: res.storage,
                rv,
                object: last.clone(),
                old: Some(old),
            },
        );
        Ok(last)
    }

    /// Subscribes to changes committed after `since`. Returns the 410 error when `since`
    /// is older than the retained history.
    pub fn subscribe_since(&self, since: u64) -> Result<Subscription, ApiError> {
        let st = self.lock();
        let live = self.tx.subscribe();
        let oldest_available = st.history.front().map(|c| c.rv).unwrap_or(st.rv + 1);
        // Changes (since, oldest_available) were dropped from history: too old.
        if since + 1 < oldest_available && since < st.rv {
            return Err(ApiError::expired(since, oldest_available.saturating_sub(1)));
        }
        let start = st.history.partition_point(|c| c.rv <= since);
        let backlog = st.history.range(start..).cloned().collect();
        Ok(Subscription { backlog, live })
    }

    /// Compacts the history at the current resourceVersion, as kube-apiserver's compactor
    /// compacts etcd every five minutes. Watches served from the watch cache do not notice
    /// (the history buffer stands for that cache); watches of resources the API server does
    /// not cache (events) read etcd, and a version older than this is gone for them.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.compacted = st.rv;
    }

    /// The resourceVersion of the last [`Store::compact`] (0 if never compacted).
    pub fn compacted_rv(&self) -> u64 {
        self.lock().compacted
    }

    /// Subscribes to live changes only, with a snapshot of the given resource taken atomically.
    pub fn snapshot_and_subscribe(
        &self,
        res: &ResourceDef,
    ) -> (Vec<Arc<Value>>, u64, broadcast::Receiver<Arc<Change>>) {
        let st = self.lock();
        let live = self.tx.subscribe();
        let items = st
            .tables
            .get(res.storage)
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        (items, st.rv, live)
    }

    /// Live changes, for in-process controllers.
    pub fn changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Number of objects of a resource.
    pub fn count(&self, res: &ResourceDef) -> usize {
        self.lock().tables.get(res.storage).map_or(0, BTreeMap::len)
    }
}

/// The storage key of an object: cluster-scoped objects have no namespace.
fn key_of(res: &ResourceDef, ns: &str, name: &str) -> Key {
    let ns = if res.namespaced { ns } else { "" };
    (ns.to_string(), name.to_string())
}

/// The stored object at `key`, or NotFound.
fn current(st: &State, res: &ResourceDef, key: &Key) -> Result<Arc<Value>, ApiError> {
    st.tables
        .get(res.storage)
        .and_then(|t| t.get(key))
        .cloned()
        .ok_or_else(|| ApiError::not_found(res, &key.1))
}

/// The canonical ResourceDef for a change's storage key.
pub fn def_of(change: &Change) -> Option<&'static ResourceDef> {
    resources::by_storage(change.storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{NODES, PODS};

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"containers": []}})
    }

    #[test]
    fn every_write_bumps_the_resource_version() {
        let s = Store::default();
        let a = s.create(&PODS, "default", pod("a")).unwrap_or_default();
        let b = s
            .update(&PODS, "default", "a", |p| {
                p["spec"]["nodeName"] = json!("n1");
                Ok(())
            })
            .unwrap_or_default();
        assert!(rv_of(&b) > rv_of(&a));
        let d = s.remove(&PODS, "default", "a", None).unwrap_or_default();
        assert!(rv_of(&d) > rv_of(&b));
        assert_eq!(s.current_rv(), rv_of(&d));
    }

    #[test]
    fn no_op_update_commits_nothing() {
        let s = Store::default();
        s.create(&NODES, "", json!({"metadata": {"name": "n"}}))
            .ok();
        let before = s.current_rv();
        s.update(&NODES, "", "n", |_| Ok(())).ok();
        assert_eq!(s.current_rv(), before);
    }

    #[test]
    fn duplicate_create_is_already_exists() {
        let s = Store::default();
        s.create(&PODS, "default", pod("a")).ok();
        let err = s.create(&PODS, "default", pod("a")).err().map(|e| e.code);
        assert_eq!(err, Some(409));
    }

    #[test]
    fn subscribe_replays_changes_after_the_given_version() {
        let s = Store::default();
        let a = s.create(&PODS, "default", pod("a")).unwrap_or_default();
        s.create(&PODS, "default", pod("b")).ok();
        let sub = s.subscribe_since(rv_of(&a)).ok();
        let names: Vec<String> = sub
            .map(|sub| {
                sub.backlog
                    .iter()
                    .map(|c| name_of(&c.object).to_string())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(names, vec!["b".to_string()]);
    }

    #[test]
    fn subscribe_before_retained_history_is_expired() {
        let s = Store::new(2);
        for i in 0..5 {
            s.create(&PODS, "default", pod(&format!("p{i}"))).ok();
        }
        let err = s.subscribe_since(1).err();
        assert_eq!(err.map(|e| e.code), Some(410));
    }

    #[test]
    fn remove_with_wrong_uid_is_a_precondition_conflict() {
        let s = Store::default();
        s.create(&PODS, "default", pod("a")).ok();
        let err = s.remove(&PODS, "default", "a", Some("nope")).err();
        assert!(err.is_some_and(|e| e.code == 409
            && e.message
                .contains("the UID in the precondition (nope) does not match")));
    }

    #[test]
    fn generate_name_gets_a_random_suffix() {
        let s = Store::default();
        let p = s
            .create(
                &PODS,
                "default",
                json!({"metadata": {"generateName": "web-"}}),
            )
            .unwrap_or_default();
        assert!(name_of(&p).starts_with("web-") && name_of(&p).len() == 9);
    }
}
