//! Glue from the command line to the library: one function per verb.

pub mod drain;
pub mod explain;
pub mod lab;
pub mod run;
pub mod sim;

use crate::cli::KubeArgs;
use anyhow::Context;

/// A kube-rs client from the kubeconfig the way kubectl finds it, without kube's own 429
/// retries (see [`crate::cluster::drain::client`]).
pub async fn kube_client(args: &KubeArgs) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await?
        }
        None => match kube::Config::from_kubeconfig(&options).await {
            Ok(c) => c,
            Err(_) => kube::Config::infer().await?,
        },
    };
    Ok(crate::cluster::drain::client(config)?)
}

/// This process's identity as a drain owner: host name and process id.
pub fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()))
        .unwrap_or_else(|_| "termguard".into());
    format!("{host}/{}", std::process::id())
}
