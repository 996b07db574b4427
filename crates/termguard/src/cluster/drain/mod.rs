//! Drain: plan, filters, waves, evict, wait (`docs/drain-semantics.md`).
//!
//! The pure part lives here: which pods leave and in which wave ([`mod@plan`]), the kubectl rules that
//! decide it ([`filters`], [`selector`]), and the time and error arithmetic of evicting ([`budget`]).

pub mod budget;
pub mod deadline;
pub mod engine;
mod evict;
pub mod filters;
pub mod plan;
mod pod;
pub mod report;
mod room;
pub mod selector;
pub mod tracker;

#[cfg(test)]
mod testutil;

pub use budget::{
    classify_eviction_error, clip_grace_period, effective_grace_period, reclip_terminating,
    retry_message, Backoff, EvictionErrorClass, GraceDecision,
};
pub use engine::{client, DrainError, DrainRequest, DrainSlots, Drainer};
pub use filters::{
    daemonsets_to_look_up, select, DaemonSetLookup, PlanContext, Selection, Verdict,
};
pub use plan::{
    plan, DrainLastRules, DrainOptions, DrainPlan, NamespacedName, PlanError, PlannedPod,
    RefusedPod, SkippedPod, Wave, WaveKind,
};
pub use report::{DrainReport, Outcome, PodAction, PodResult, Progress, Role};
pub use selector::{PodSelector, SelectorError};
