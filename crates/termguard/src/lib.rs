//! termguard: no Kubernetes node on AWS dies undrained.
//!
//! The modules follow the data flow: sources → notice → handler → cluster/aws → report.

pub mod audit;
pub mod aws;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod handler;
#[cfg(feature = "lab")]
pub mod kwok;
#[cfg(feature = "lab")]
pub mod lab;
pub mod notice;
pub mod report;
pub mod sources;
