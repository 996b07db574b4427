//! `termguard sim serve`: run the Kubernetes API simulator on its own.

use crate::cli::{SimApplyArgs, SimServeArgs};
use anyhow::Context;
use kube_sim::scenario::Scenario;
use kube_sim::Sim;

use super::shutdown_signal;

/// Serves the scenario until SIGINT/SIGTERM.
pub async fn serve(args: &SimServeArgs) -> anyhow::Result<()> {
    let scenario = Scenario::from_file(&args.scenario)?;
    let sim = Sim::start(&scenario, args.listen).await?;
    if let Some(f) = &args.faults {
        let cfg = serde_json::from_str(f).context("parsing --faults")?;
        sim.faults.set(cfg);
    }
    sim.write_kubeconfig(&args.kubeconfig)?;
    println!(
        "kube-sim serving scenario {:?} at {}",
        scenario.name,
        sim.url()
    );
    println!("kubeconfig written to {}", args.kubeconfig.display());
    println!(
        "try: KUBECONFIG={} kubectl get nodes",
        args.kubeconfig.display()
    );
    tracing::info!(addr = %sim.addr(), scenario = %scenario.name, "kube-sim started");
    shutdown_signal().await;
    tracing::info!("kube-sim stopping");
    Ok(())
}

/// Loads (or with --delete removes) a scenario on a real cluster of KWOK nodes.
pub async fn apply(args: &SimApplyArgs) -> anyhow::Result<()> {
    let scenario = Scenario::from_file(&args.scenario)?;
    let client = super::kube_client(&args.kube).await?;
    if args.delete {
        let applied = crate::kwok::Applied::of(&scenario);
        crate::kwok::remove(
            &client,
            &applied,
            args.wait.max(std::time::Duration::from_secs(1)),
        )
        .await?;
        println!("scenario {:?} removed", scenario.name);
        return Ok(());
    }
    let applied = crate::kwok::apply(&client, &scenario).await?;
    println!(
        "scenario {:?}: {} nodes, {} objects created",
        scenario.name,
        applied.nodes.len(),
        applied.objects.len()
    );
    if !args.wait.is_zero() {
        crate::kwok::wait_settled(&client, &applied, args.wait).await?;
        println!("every node and pod is Ready");
    }
    Ok(())
}
