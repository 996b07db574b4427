//! Glue from the command line to the library: one function per verb.

pub mod audit;
pub mod drain;
pub mod explain;
#[cfg(feature = "lab")]
pub mod lab;
pub mod run;
#[cfg(feature = "lab")]
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

/// The pod this process runs in, from the downward API (`POD_NAMESPACE`, and `POD_NAME` or
/// the pod's `HOSTNAME`), so that its own drain never evicts it.
pub fn own_pod(
    env: impl Fn(&str) -> Option<String>,
) -> Option<crate::cluster::drain::NamespacedName> {
    let namespace = env("POD_NAMESPACE").filter(|n| !n.is_empty())?;
    let name = env("POD_NAME")
        .or_else(|| env("HOSTNAME"))
        .filter(|n| !n.is_empty())?;
    Some(crate::cluster::drain::NamespacedName::new(
        &namespace, &name,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_pod_comes_from_the_downward_api() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let pod = own_pod(env(&[
            ("POD_NAMESPACE", "kube-system"),
            ("HOSTNAME", "termguard-7d9f-abc"),
        ]));
        assert_eq!(
            pod.map(|p| p.to_string()).as_deref(),
            Some("kube-system/termguard-7d9f-abc")
        );
        let named = own_pod(env(&[
            ("POD_NAMESPACE", "tg"),
            ("POD_NAME", "a"),
            ("HOSTNAME", "h"),
        ]));
        assert_eq!(named.map(|p| p.name).as_deref(), Some("a"));
        // Outside a pod (no namespace): nothing to protect.
        assert_eq!(own_pod(env(&[("HOSTNAME", "laptop")])), None);
    }
}
