//! The Kubernetes side: node state, drain, events.

pub mod drain;
