//! The container image (scripts/image.sh, docs/image.md), taken apart the way a runtime would
//! and run: its OCI configuration (non-root user, entrypoint), a root filesystem with nothing
//! but the static binary and a few files in /etc, and the binary from that root filesystem
//! draining a node for a lifecycle notice of the AWS test peer on the simulator.
//!
//! The image comes from `TERMGUARD_IMAGE` (an `image.tar` or an OCI layout directory, as
//! scripts/test.sh passes after building it once), or else is built here with
//! `TERMGUARD_IMAGE_PROFILE=dev` (scripts/image.sh). As root, the binary runs the way the pod
//! runs it: chrooted into the unpacked root filesystem, mounted read-only, as user 65532, with
//! no /proc or /tmp, and of /dev only null, random and urandom; otherwise it is run from the
//! root filesystem's path, unconfined.

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/moto.rs"]
mod moto;

use cluster::{Backend, TestCluster};
use moto::Moto;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

type Result<T = ()> = anyhow::Result<T>;

const USER: u32 = 65532;
const ENTRYPOINT: &str = "/usr/local/bin/termguard";

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The OCI layout directory of the image under test, unpacked into `dir` if it is an archive.
fn layout(dir: &Path) -> Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let image = match std::env::var_os("TERMGUARD_IMAGE") {
        Some(p) => PathBuf::from(p),
        None => {
            let out = dir.join("built");
            run(Command::new(repo.join("scripts/image.sh"))
                .arg(&out)
                .env("TERMGUARD_IMAGE_PROFILE", "dev"))?;
            out.join("image.tar")
        }
    };
    if image.is_dir() {
        return Ok(image);
    }
    let oci = dir.join("oci");
    std::fs::create_dir_all(&oci)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(&image)
        .arg("-C")
        .arg(&oci))?;
    Ok(oci)
}

fn blob(oci: &Path, digest: &str) -> Result<Value> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow::anyhow!("digest {digest}"))?;
    Ok(serde_json::from_slice(&std::fs::read(
        oci.join("blobs/sha256").join(hex),
    )?)?)
}

/// Whether an ELF file asks for a program interpreter (ld.so): a dynamic executable.
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF file");
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&elf[0x20..0x28]);
    let (phoff, size, count) = (
        u64::from_le_bytes(phoff) as usize,
        u16_at(0x36),
        u16_at(0x38),
    );
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]) == 3
        // PT_INTERP
    })
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        files.push(path.clone());
        if path.symlink_metadata()?.is_dir() {
            walk(&path, files)?;
        }
    }
    Ok(())
}

/// The binary from the image's root filesystem: chrooted into it, read-only, as the image's
/// user when this process may (root), else straight from its path. The chroot has the
/// /dev/null, /dev/random and /dev/urandom of a container and nothing else: no /proc, no /tmp.
fn in_image(rootfs: &Path, confined: bool) -> tokio::process::Command {
    if confined {
        let mut cmd = tokio::process::Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(concat!(
                r#"r=$1; shift; mount --bind "$r" "$r" && mount -o remount,bind,ro "$r" && "#,
                r#"mount --bind /dev/null "$r/dev/null" && "#,
                r#"mount --bind /dev/random "$r/dev/random" && "#,
                r#"mount --bind /dev/urandom "$r/dev/urandom" && "#,
                r#"exec chroot --userspec=65532:65532 "$r" /usr/local/bin/termguard "$@""#
            ))
            .arg("sh")
            .arg(rootfs);
        cmd
    } else {
        tokio::process::Command::new(rootfs.join(ENTRYPOINT.trim_start_matches('/')))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_queue_mode_non_root_from_a_read_only_static_root_filesystem() -> Result {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let oci = layout(&dir)?;

    // The configuration a runtime reads: index → manifest → config.
    let index: Value = serde_json::from_slice(&std::fs::read(oci.join("index.json"))?)?;
    let desc = &index["manifests"][0];
    let tag = desc["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(tag, env!("CARGO_PKG_VERSION"), "{index}");
    let manifest = blob(&oci, desc["digest"].as_str().unwrap_or_default())?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let config = blob(
        &oci,
        manifest["config"]["digest"].as_str().unwrap_or_default(),
    )?;
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["User"], "65532:65532", "{config}");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!([ENTRYPOINT])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["run"]));
    let labels = &config["config"]["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.title"], "termguard");

    // Unpacked by the OCI tool, as a runtime bundle.
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", oci.display()))
        .arg(&bundle))?;
    let runtime: Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    assert_eq!(runtime["process"]["user"]["uid"], USER, "{runtime}");
    assert_eq!(runtime["process"]["user"]["gid"], USER);
    assert_eq!(
        runtime["process"]["args"],
        serde_json::json!([ENTRYPOINT, "run"])
    );
    let rootfs = bundle.join("rootfs");

    // Nothing but the binary and /etc: no libc to load, nothing the user may write.
    let mut files = Vec::new();
    walk(&rootfs, &mut files)?;
    let mut names: Vec<String> = files
        .iter()
        .filter(|p| !p.is_dir())
        .map(|p| p.strip_prefix(&rootfs).map(|r| r.display().to_string()))
        .collect::<std::result::Result<_, _>>()?;
    names.sort();
    assert_eq!(
        names,
        [
            "etc/group",
            "etc/nsswitch.conf",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/termguard",
        ]
    );
    for f in &files {
        let m = f.symlink_metadata()?;
        assert_eq!(
            (m.uid(), m.gid()),
            (0, 0),
            "{} belongs to root",
            f.display()
        );
        assert_eq!(
            m.mode() & 0o022,
            0,
            "{} is writable by root only",
            f.display()
        );
    }
    let binary = rootfs.join(ENTRYPOINT.trim_start_matches('/'));
    assert!(
        !has_interpreter(&std::fs::read(&binary)?),
        "the binary is static"
    );
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    assert!(passwd.contains(":65532:65532:"), "{passwd}");

    // What the kubelet adds to every container: /etc/hosts (here: so that the AWS endpoint
    // below goes through getaddrinfo and glibc's built-in files module). The image's own
    // files are read-only from here on.
    std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1\tlocalhost\n")?;
    std::fs::create_dir_all(rootfs.join("config"))?;
    // And what every OCI runtime provides: /dev/null, /dev/random and /dev/urandom (mount points
    // here, the host's devices bound onto them). The static binary needs the last two:
    // getrandom (under ahash) finds no libc `getrandom` through dlsym in a static binary, so
    // it polls /dev/random once and reads /dev/urandom instead.
    std::fs::create_dir_all(rootfs.join("dev"))?;
    std::fs::write(rootfs.join("dev/null"), "")?;
    std::fs::write(rootfs.join("dev/random"), "")?;
    std::fs::write(rootfs.join("dev/urandom"), "")?;
    let confined = run(Command::new("id").arg("-u"))?.trim() == "0";
    if !confined {
        eprintln!("not root: the binary runs from the root filesystem's path, not chrooted");
    }

    let version = in_image(&rootfs, confined)
        .arg("--version")
        .output()
        .await?;
    assert!(version.status.success(), "{version:?}");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("termguard {}", env!("CARGO_PKG_VERSION"))
    );
    // No lab, no simulator in the image.
    let help = in_image(&rootfs, confined).arg("--help").output().await?;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("  run "), "{help}");
    assert!(
        !help.contains("  lab ") && !help.contains("  sim "),
        "{help}"
    );

    // A group of three instances with a termination hook, one Node per instance.
    let moto = Moto::start().await;
    let fleet = moto.fleet("image", 3, 30, &[]).await;
    let mut yaml =
        String::from("name: image\ndefaults: {startupMs: 50, shutdownMs: 200}\nnodes:\n");
    let mut nodes = std::collections::BTreeMap::new();
    for (i, inst) in fleet.instances.iter().enumerate() {
        let name = format!("ip-10-0-{i}-10.ec2.internal");
        yaml.push_str(&format!(
            "  - {{name: {name}, zone: {}, instanceId: {}, group: image}}\n",
            inst.zone, inst.id
        ));
        nodes.insert(inst.id.clone(), name);
    }
    yaml.push_str("workloads:\n  - {kind: Deployment, name: web, replicas: 6, shutdownMs: 300}\n");
    let bed = TestCluster::start_settled(Backend::Sim, &yaml).await;
    let kubeconfig = rootfs.join("config/kubeconfig");
    std::fs::copy(bed.kubeconfig(), &kubeconfig)?;
    std::fs::set_permissions(
        &kubeconfig,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let health = format!("127.0.0.1:{port}");
    let moto_port = moto.url.rsplit(':').next().unwrap_or_default().to_string();
    let log = dir.join("termguard.log");
    let mut child = in_image(&rootfs, confined)
        .args([
            "run",
            "--queue-url",
            &fleet.queue_url,
            "--health-listen",
            &health,
        ])
        .args(["--visibility-timeout", "10s", "--kubeconfig"])
        .arg(if confined {
            PathBuf::from("/config/kubeconfig")
        } else {
            kubeconfig.clone()
        })
        // Only what a pod would set: no HOME (the home directory comes from /etc/passwd).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", format!("http://localhost:{moto_port}"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("TERMGUARD_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    moto::wait_ready(&health, &log, &mut child).await?;

    // Scale in by one: the hook holds the instance, the binary drains its node and completes.
    let action = moto.scale_in("image").await?;
    let ended = moto
        .wait_action_ended(
            action["token"].as_str().unwrap_or_default(),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(ended["state"], "completed", "{ended}\n{}", logs());
    assert_eq!(ended["result"], "CONTINUE", "{ended}");
    assert_eq!(ended["ended_by"], "CompleteLifecycleAction", "{ended}");
    let node = &nodes[action["instance_id"].as_str().unwrap_or_default()];
    let drained = bed.node(node).await;
    assert_eq!(drained["spec"]["unschedulable"], true, "{drained}");
    assert_eq!(
        drained["metadata"]["annotations"]["termguard.io/drain-phase"], "drained",
        "{drained}"
    );
    assert!(
        bed.pods_on(node)
            .await
            .iter()
            .all(|p| p["metadata"]["namespace"] != "default"),
        "the node's workload pods are gone"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while moto.queue_depth(&fleet.queue_url).await != (0, 0) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "message not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = moto::http(&health, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("termguard_drains_total{reason=\"drained\"} 1"),
        "{metrics}"
    );

    // SIGTERM (unshare, sh and chroot exec: the child is termguard itself): a clean exit.
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("exited early\n{}", logs()))?;
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?
        .success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert!(status.success(), "exit {status:?}\n{}", logs());
    assert!(logs().contains("shutdown requested"), "{}", logs());
    // Nothing failed for want of a writable file system.
    let log = logs();
    assert!(
        !log.contains("Read-only file system") && !log.contains("os error 30"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
