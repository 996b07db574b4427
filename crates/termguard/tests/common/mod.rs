//! Shared setup for the drain engine's integration tests, over a [`TestCluster`] of either
//! backend (tests/common/cluster.rs, which the test binary includes as its `cluster` module):
//! drainers for the code under test, requests, and name helpers for the JSON objects the
//! harness reads back through the API.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use crate::cluster::TestCluster;
use serde_json::Value;
use std::time::Duration;
use termguard::cluster::drain::{Backoff, DrainOptions, DrainRequest, Drainer};

/// Backoff short enough that a blocked eviction is retried within the test's time.
pub fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
        jitter: 0.2,
    }
}

/// A drainer with the given identity and a fast backoff, using the code-under-test client
/// (the `termguard` user on the real backend).
pub fn drainer(c: &TestCluster, identity: &str) -> Drainer {
    Drainer::new(c.client.clone(), identity).with_backoff(fast_backoff())
}

/// A manual drain request for `node`.
pub fn request(node: &str, options: DrainOptions) -> DrainRequest {
    DrainRequest::manual(node, options)
}

/// `metadata.name`.
pub fn name(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or("").to_string()
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// `namespace/name`, as the drain report prints pods.
pub fn ns_name(obj: &Value) -> String {
    format!("{}/{}", namespace(obj), name(obj))
}

pub use crate::cluster::eventually;
