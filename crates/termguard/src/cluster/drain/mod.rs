//! Drain: plan, filters, waves, evict, wait.
