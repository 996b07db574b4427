//! `termguard sim serve`: run the Kubernetes API simulator on its own.

use crate::cli::SimServeArgs;
use anyhow::Context;
use kube_sim::scenario::Scenario;
use kube_sim::Sim;

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

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
