//! Fault injection for reliability tests: per-verb error rates and latencies, and watch
//! streams cut after a number of events. Also counts requests per verb for benchmarks.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Faults for one verb.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct VerbFault {
    /// Probability in [0, 1] that a request fails.
    pub error_rate: f64,
    /// HTTP code of injected failures (default 500).
    pub error_code: Option<u16>,
    /// Extra latency added to every request of this verb, in milliseconds.
    pub latency_ms: u64,
}

/// The whole fault configuration. Verbs: get, list, watch, create, update, patch, delete,
/// deletecollection, evict; a key `"<verb> <resource>"` (`"get daemonsets"`) narrows one to a
/// resource and takes precedence over the bare verb.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultConfig {
    /// Per-verb faults.
    pub verbs: BTreeMap<String, VerbFault>,
    /// Close every watch stream after this many events.
    pub watch_cut_after: Option<u64>,
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Sleep this long first.
    pub delay: Duration,
    /// Then fail with this code, if set.
    pub fail_with: Option<u16>,
}

/// Live fault settings plus request counters.
#[derive(Default)]
pub struct Faults {
    config: RwLock<FaultConfig>,
    rng: Mutex<Option<fastrand::Rng>>,
    counters: Mutex<BTreeMap<String, u64>>,
    paths: Mutex<BTreeMap<String, u64>>,
    total: AtomicU64,
    injected: AtomicU64,
}

impl Faults {
    /// Replaces the configuration.
    pub fn set(&self, config: FaultConfig) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// The current configuration.
    pub fn get(&self) -> FaultConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Seeds the random source so error injection is repeatable.
    pub fn seed(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = Some(fastrand::Rng::with_seed(seed));
    }

    /// Counts a request and decides whether to delay or fail it: by the faults configured
    /// for `"<verb> <resource>"` (`"get daemonsets"`) when there are any, else for the verb.
    pub fn decide_for(&self, verb: &str, resource: &str) -> Decision {
        let key = format!("{verb} {resource}");
        let specific = self
            .config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .verbs
            .contains_key(&key);
        self.decide_as(verb, if specific { &key } else { verb })
    }

    /// Counts a request and decides whether to delay or fail it.
    pub fn decide(&self, verb: &str) -> Decision {
        self.decide_as(verb, verb)
    }

    fn decide_as(&self, verb: &str, key: &str) -> Decision {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(verb.to_string())
            .or_default() += 1;
        let cfg = self.config.read().unwrap_or_else(|e| e.into_inner());
        let Some(f) = cfg.verbs.get(key) else {
            return Decision {
                delay: Duration::ZERO,
                fail_with: None,
            };
        };
        let roll = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            match rng.as_mut() {
                Some(r) => r.f64(),
                None => fastrand::f64(),
            }
        };
        let fail_with = (roll < f.error_rate).then(|| f.error_code.unwrap_or(500));
        if fail_with.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        Decision {
            delay: Duration::from_millis(f.latency_ms),
            fail_with,
        }
    }

    /// Requests failed on purpose since start (or the last reset).
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Counts a request by verb and path (`evict /api/v1/namespaces/ns/pods/p/eviction`), so
    /// tests can tell how often one object was asked for.
    pub fn count_path(&self, verb: &str, path: &str) {
        *self
            .paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{verb} {path}"))
            .or_default() += 1;
    }

    /// Requests served per `"<verb> <path>"` since start (or the last reset).
    pub fn path_counts(&self) -> BTreeMap<String, u64> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Watch streams are cut after this many events, if set.
    pub fn watch_cut_after(&self) -> Option<u64> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .watch_cut_after
    }

    /// Requests served per verb since start (or the last reset).
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Total requests since start (or the last reset).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Resets the request counters.
    pub fn reset_counts(&self) {
        self.counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.paths.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.total.store(0, Ordering::Relaxed);
        self.injected.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_error_rate_fails_every_request_of_that_verb_only() {
        let f = Faults::default();
        let mut cfg = FaultConfig::default();
        cfg.verbs.insert(
            "evict".into(),
            VerbFault {
                error_rate: 1.0,
                error_code: Some(503),
                latency_ms: 7,
            },
        );
        f.set(cfg);
        assert_eq!(
            f.decide("evict"),
            Decision {
                delay: Duration::from_millis(7),
                fail_with: Some(503)
            }
        );
        assert_eq!(f.decide("get").fail_with, None);
        assert_eq!(f.counts().get("evict"), Some(&1));
        assert_eq!(f.total(), 2);
    }

    #[test]
    fn a_resource_narrowed_fault_takes_precedence_over_its_verb() {
        let f = Faults::default();
        let mut cfg = FaultConfig::default();
        cfg.verbs.insert(
            "get daemonsets".into(),
            VerbFault {
                error_rate: 1.0,
                error_code: Some(429),
                latency_ms: 0,
            },
        );
        f.set(cfg);
        assert_eq!(f.decide_for("get", "daemonsets").fail_with, Some(429));
        assert_eq!(f.decide_for("get", "nodes").fail_with, None);
        assert_eq!(f.decide_for("list", "daemonsets").fail_with, None);
        assert_eq!(f.counts().get("get"), Some(&2), "counted under the verb");
    }

    #[test]
    fn requests_are_counted_per_path_until_reset() {
        let f = Faults::default();
        f.count_path("evict", "/api/v1/namespaces/a/pods/p/eviction");
        f.count_path("evict", "/api/v1/namespaces/a/pods/p/eviction");
        f.count_path("delete", "/api/v1/namespaces/a/pods/p");
        let counts = f.path_counts();
        assert_eq!(
            counts.get("evict /api/v1/namespaces/a/pods/p/eviction"),
            Some(&2)
        );
        assert_eq!(counts.get("delete /api/v1/namespaces/a/pods/p"), Some(&1));
        f.reset_counts();
        assert!(f.path_counts().is_empty());
    }

    #[test]
    fn seeded_error_injection_is_repeatable() {
        let run = || {
            let f = Faults::default();
            f.seed(42);
            let mut cfg = FaultConfig::default();
            cfg.verbs.insert(
                "get".into(),
                VerbFault {
                    error_rate: 0.5,
                    ..Default::default()
                },
            );
            f.set(cfg);
            (0..32)
                .map(|_| f.decide("get").fail_with.is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
