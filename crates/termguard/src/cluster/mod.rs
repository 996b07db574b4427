//! The Kubernetes side: node state, drain, events.

pub mod drain;
pub mod events;
pub mod http;
pub mod index;
pub mod nodes;
pub mod retry;
