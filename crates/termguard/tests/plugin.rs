//! The binary as a kubectl plugin: installed as `kubectl-termguard` on the PATH, the real
//! kubectl 1.32 runs it for `kubectl termguard …`
//! ([kubectl plugins](https://kubernetes.io/docs/tasks/extend-kubectl/kubectl-plugins/)), and
//! it drains a node of a cluster on both backends.

#[path = "common/cluster.rs"]
#[macro_use]
mod cluster;

use cluster::TestCluster;
use std::path::{Path, PathBuf};

type Result = anyhow::Result<()>;

/// A directory holding the built binary as `kubectl-termguard`, krew-style.
fn plugin_dir() -> anyhow::Result<(tempfile_dir::Dir, PathBuf)> {
    let dir = tempfile_dir::Dir::new("termguard-plugin")?;
    let plugin = dir.path().join("kubectl-termguard");
    std::fs::copy(env!("CARGO_BIN_EXE_termguard"), &plugin)?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![dir.path().to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(dirs)?;
    Ok((dir, PathBuf::from(joined)))
}

/// A temporary directory removed when dropped (the standard library has none).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Dir> {
            let p = std::env::temp_dir().join(format!(
                "{prefix}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&p)?;
            Ok(Dir(p))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `kubectl ARGS` with the plugin on the PATH.
fn kubectl(path: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new("/usr/bin/kubectl")
        .args(args)
        .env("PATH", path)
        .env_remove("KUBECONFIG")
        .env("TERMGUARD_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()?)
}

#[test]
fn kubectl_finds_the_plugin_and_its_help_says_kubectl_termguard() -> Result {
    let (_dir, path) = plugin_dir()?;
    let list = kubectl(&path, &["plugin", "list"])?;
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.contains("kubectl-termguard"), "{listed}");
    let version = kubectl(&path, &["termguard", "--version"])?;
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("termguard {}", env!("CARGO_PKG_VERSION"))
    );
    let help = kubectl(&path, &["termguard", "drain", "--help"])?;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Usage: kubectl termguard drain"), "{help}");
    Ok(())
}

both_backends! {
    async fn kubectl_termguard_drains_and_uncordons_a_node(backend) -> Result {
        let c = TestCluster::start_settled(
            backend,
            "defaults: {startupMs: 100, shutdownMs: 100}\nnodes:\n- {name: node-0, zone: us-east-1a}\n- {name: node-1, zone: us-east-1b}\nworkloads:\n- {kind: Deployment, name: web, replicas: 2}\n",
        )
        .await;
        let (_dir, path) = plugin_dir()?;
        let kubeconfig = c.kubeconfig().to_string_lossy().into_owned();
        let on_node = c.pods_on("node-0").await.len();
        let drain = kubectl(&path, &["termguard", "drain", "node-0", "--kubeconfig", &kubeconfig])?;
        assert!(drain.status.success(), "{drain:?}");
        let node = c.node("node-0").await;
        assert_eq!(node["spec"]["unschedulable"], true, "{node}");
        let left = c.pods_on("node-0").await;
        assert!(left.iter().all(cluster::terminating) || left.is_empty(), "{left:?} (had {on_node})");
        let uncordon = kubectl(&path, &["termguard", "uncordon", "node-0", "--kubeconfig", &kubeconfig])?;
        assert!(uncordon.status.success(), "{uncordon:?}");
        assert_ne!(c.node("node-0").await["spec"]["unschedulable"], true);
        Ok(())
    }
}
