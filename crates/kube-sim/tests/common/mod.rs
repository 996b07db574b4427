//! Shared setup for kube-sim's integration tests: a simulator started in-process from inline
//! scenario YAML on a free loopback port, and a kube-rs client pointed at it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use kube_sim::scenario::Scenario;
use kube_sim::Sim;

/// Starts a simulator for the scenario on `127.0.0.1:0`.
pub async fn start(scenario_yaml: &str) -> Sim {
    let scenario = Scenario::from_yaml(scenario_yaml).expect("valid scenario YAML");
    let listen = "127.0.0.1:0".parse().expect("loopback address");
    Sim::start(&scenario, listen)
        .await
        .expect("kube-sim starts")
}

/// A kube-rs client talking to the simulator over HTTP.
pub fn client(sim: &Sim) -> kube::Client {
    let config = kube::Config::new(sim.url().parse().expect("simulator URL"));
    kube::Client::try_from(config).expect("kube client")
}
