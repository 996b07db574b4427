//! Metrics as a small typed struct (prometheus-client), not globals.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels: the notice kind and, when the notice says, its cause.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `lifecycle-terminate`, `spot-interruption`, …
    pub kind: String,
    /// The notice's own cause (`warm-pool-return`, `spot-interruption`, …), or `unknown`:
    /// a scaling activity's cause is looked up later, and recorded on the Node.
    pub cause: String,
}

/// Labels: an error or disposition class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A parse error label, disposition, or outcome.
    pub reason: String,
}

/// Every metric termguard exports.
pub struct Metrics {
    registry: Registry,
    /// Messages received from the queue.
    pub messages_received: Counter,
    /// Messages that could not be parsed, by error.
    pub messages_invalid: Family<ReasonLabels, Counter>,
    /// Messages deleted / released / kept.
    pub messages_disposed: Family<ReasonLabels, Counter>,
    /// Notices handled, by kind.
    pub notices: Family<KindLabels, Counter>,
    /// Drains finished, by outcome.
    pub drains: Family<ReasonLabels, Counter>,
    /// Drain wall time in seconds.
    pub drain_seconds: Histogram,
    /// Messages being worked on.
    pub in_flight: Gauge,
    /// Foreign messages dropped after their deadline.
    pub foreign_expired: Counter,
    /// Lifecycle heartbeats, by result (`sent`, `failed`).
    pub heartbeats: Family<ReasonLabels, Counter>,
    /// Nodes whose marks termguard undid because their instance came back.
    pub nodes_returned: Counter,
    /// Pods leaving drained nodes, by how (`evicted`, `deleted-clipped`, …), and evictions
    /// refused (`blocked`, retried) or failed (`failed`).
    pub evictions: Family<ReasonLabels, Counter>,
    /// CompleteLifecycleAction, by result (`continue`, `abandon`, `already-over`, `failed`).
    pub completions: Family<ReasonLabels, Counter>,
    /// Webhook notifications, by result (`sent`, `failed`, `dropped`).
    pub webhooks: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("termguard");
        let m = Metrics {
            messages_received: Counter::default(),
            messages_invalid: Family::default(),
            messages_disposed: Family::default(),
            notices: Family::default(),
            drains: Family::default(),
            drain_seconds: Histogram::new(exponential_buckets(0.5, 2.0, 14)),
            in_flight: Gauge::default(),
            foreign_expired: Counter::default(),
            heartbeats: Family::default(),
            nodes_returned: Counter::default(),
            evictions: Family::default(),
            completions: Family::default(),
            webhooks: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "messages_received",
            "Messages received from the queue",
            m.messages_received.clone(),
        );
        registry.register(
            "messages_invalid",
            "Messages that could not be parsed, by error",
            m.messages_invalid.clone(),
        );
        registry.register(
            "messages_disposed",
            "Messages deleted, released or kept, by disposition",
            m.messages_disposed.clone(),
        );
        registry.register(
            "notices",
            "Notices handled, by kind and cause",
            m.notices.clone(),
        );
        registry.register("drains", "Drains finished, by outcome", m.drains.clone());
        registry.register("drain_seconds", "Drain wall time", m.drain_seconds.clone());
        registry.register("in_flight", "Messages being worked on", m.in_flight.clone());
        registry.register(
            "foreign_expired",
            "Messages for other clusters dropped after their deadline",
            m.foreign_expired.clone(),
        );
        registry.register(
            "heartbeats",
            "RecordLifecycleActionHeartbeat calls, by result",
            m.heartbeats.clone(),
        );
        registry.register(
            "nodes_returned",
            "Nodes uncordoned because their instance came back after a drain",
            m.nodes_returned.clone(),
        );
        registry.register(
            "evictions",
            "Pods leaving drained nodes, by how, and evictions refused or failed",
            m.evictions.clone(),
        );
        registry.register(
            "completions",
            "CompleteLifecycleAction calls, by result",
            m.completions.clone(),
        );
        registry.register(
            "webhooks",
            "Webhook notifications, by result",
            m.webhooks.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts one labelled event.
    pub fn count(family: &Family<ReasonLabels, Counter>, reason: &str) {
        family
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_events_appear_in_the_exposition() {
        let m = Metrics::default();
        m.messages_received.inc();
        Metrics::count(&m.messages_invalid, "not-json");
        let text = m.encode();
        assert!(
            text.contains("termguard_messages_received_total 1"),
            "{text}"
        );
        assert!(
            text.contains("termguard_messages_invalid_total{reason=\"not-json\"} 1"),
            "{text}"
        );
    }
}
