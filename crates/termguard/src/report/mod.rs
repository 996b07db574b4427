//! Reporting: Prometheus metrics and the health/metrics HTTP server.

pub mod health;
pub mod metrics;
pub mod notify;
