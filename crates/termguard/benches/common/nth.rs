//! aws-node-termination-handler (NTH) v1.25.1 in queue-processor mode, the benchmark's peer:
//! built by `scripts/nth.sh build` and run by `scripts/nth.sh run` against a control plane of
//! `scripts/cluster.sh up` and the AWS test peer (`tests/aws/moto_server.py`). See
//! docs/nth-peer.md for the settings and what NTH does per message.
//!
//! `scripts/nth.sh run` ends by exec'ing NTH (bash → env → unshare → sh → NTH, never a fork), so
//! the PID of the spawned script is NTH's own: `peak_rss_kib` reads the VmHWM of NTH's address
//! space (reset by exec), and `cpu_seconds` subtracts the few ticks the script used before the
//! exec (it writes them to `CLUSTER_DIR/nth/wrapper-cpu-ticks`).
//!
//! NTH ignores SIGTERM (it catches the signal, but the `break` in its main loop leaves only a
//! `select`), as a pod of its chart would until the kubelet's SIGKILL: `stop` sends SIGTERM,
//! waits [`STOP_GRACE`], then kills.

#![allow(dead_code)]

use anyhow::Context;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The queue-processor flags every run gets before the caller's `extra_args` (a later flag
/// wins, so `extra_args` can override any of them). The queue URL, endpoint and region are
/// added by [`Nth::start`].
///
/// * `--use-provider-id=true`: find the Node by `spec.providerID` (`aws:///ZONE/INSTANCE`), not
///   by the instance's PrivateDnsName — moto's DNS names are not the Nodes' names.
/// * `--check-tag-before-draining=false`: the chart's default (true) acts only on instances
///   tagged `aws-node-termination-handler/managed`; NTH's README says to turn it off when the
///   account's only groups are the cluster's, as in the benchmark (whose groups do not carry
///   the tag). The DescribeInstances call is made either way.
/// * `--heartbeat-interval=30 --heartbeat-until=3600`: heartbeats, as termguard sends them; 30 s
///   is NTH's minimum, so the hook's HeartbeatTimeout must be well above it (60 s or more) and
///   moto must run unscaled (`TERMGUARD_MOTO_TIME_SCALE` 1): NTH's intervals are real seconds.
pub const QUEUE_PROCESSOR_ARGS: &[&str] = &[
    "--enable-sqs-termination-draining=true",
    "--use-provider-id=true",
    "--check-tag-before-draining=false",
    "--heartbeat-interval=30",
    "--heartbeat-until=3600",
];

/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long `start` waits for NTH to say it started (the build is cached by then).
const START_LIMIT: Duration = Duration::from_secs(120);

/// A running NTH; killed when dropped.
pub struct Nth {
    child: Child,
    pid: u32,
    bin: PathBuf,
    /// NTH's stdout and stderr (zerolog's console format).
    pub log: PathBuf,
    wrapper_ticks: u64,
    clk_tck: u64,
    stopped: bool,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/nth.sh")
}

impl Nth {
    /// Builds NTH once (cached under ~/.cache/termguard/peers) and returns the binary; `Err`
    /// holds the one-line reason when it cannot be built (the benchmark then runs without it).
    pub fn build() -> Result<PathBuf, String> {
        let out = Command::new("bash")
            .arg(script())
            .arg("build")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/nth.sh build: {e}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let why = stderr.lines().rev().find(|l| !l.trim().is_empty());
            return Err(why
                .unwrap_or("scripts/nth.sh build failed without a reason")
                .to_string());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let bin = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "scripts/nth.sh build printed no binary ({stdout:?})"
            ))
        }
    }

    /// Starts NTH against the cluster in `cluster_dir` and the SQS queue `queue_url`, every
    /// AWS call (SQS, Auto Scaling, EC2) going to `aws_endpoint` in `region`, with
    /// [`QUEUE_PROCESSOR_ARGS`] and then `extra_args`. Returns once NTH is the process and has
    /// logged that it started; its first ReceiveMessage follows about 2 s later (its monitor
    /// loop ticks every 2 s, then long-polls for 20 s).
    pub fn start(
        cluster_dir: &Path,
        aws_endpoint: &str,
        region: &str,
        queue_url: &str,
        extra_args: &[&str],
    ) -> anyhow::Result<Nth> {
        anyhow::ensure!(
            cluster_dir.join("env").is_file(),
            "{} is no cluster of scripts/cluster.sh up (no env file)",
            cluster_dir.display()
        );
        let bin = Self::build().map_err(anyhow::Error::msg)?;
        let bin = bin.canonicalize().unwrap_or(bin);
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let log = cluster_dir.join("logs").join(format!(
            "nth-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        std::fs::create_dir_all(log.parent().expect("a log directory"))?;
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut args: Vec<String> =
            vec!["run".into(), cluster_dir.display().to_string(), "--".into()];
        args.extend(QUEUE_PROCESSOR_ARGS.iter().map(|a| a.to_string()));
        args.push(format!("--queue-url={queue_url}"));
        args.push(format!("--aws-endpoint={aws_endpoint}"));
        args.push(format!("--aws-region={region}"));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let child = Command::new("bash")
            .arg(script())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .context("spawning scripts/nth.sh run")?;
        let pid = child.id();
        let mut nth = Nth {
            child,
            pid,
            bin,
            log,
            wrapper_ticks: 0,
            clk_tck: clk_tck(),
            stopped: false,
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = nth.child.try_wait()? {
                nth.stopped = true;
                anyhow::bail!(
                    "scripts/nth.sh run exited ({status}) before NTH started; {}:\n{}",
                    nth.log.display(),
                    nth.log_tail(25)
                );
            }
            if nth.is_nth(pid) && nth.log_text().contains("has started successfully") {
                break;
            }
            if Instant::now() > deadline {
                let _ = nth.stop();
                anyhow::bail!(
                    "NTH did not start within {START_LIMIT:?}; {}:\n{}",
                    nth.log.display(),
                    nth.log_tail(25)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let ticks = cluster_dir.join("nth/wrapper-cpu-ticks");
        nth.wrapper_ticks = std::fs::read_to_string(&ticks)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(nth)
    }

    /// The PID spawned, which is NTH's own once the script has exec'd it.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The PID of the NTH binary itself: `pid()`, checked through /proc/PID/exe, or else
    /// (should the script ever fork) the descendant of `pid()` running the binary.
    pub fn nth_pid(&self) -> anyhow::Result<u32> {
        if self.is_nth(self.pid) {
            return Ok(self.pid);
        }
        let mut family = vec![self.pid];
        let mut found = None;
        // Parents are older than their children: a few passes over /proc settle the tree.
        for _ in 0..4 {
            for entry in std::fs::read_dir("/proc")? {
                let Some(p) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) else {
                    continue;
                };
                if family.contains(&p) {
                    continue;
                }
                if stat_fields(p).is_some_and(|f| family.contains(&(f[1] as u32))) {
                    family.push(p);
                    if self.is_nth(p) {
                        found = Some(p);
                    }
                }
            }
        }
        found.ok_or_else(|| anyhow::anyhow!("no process runs {}", self.bin.display()))
    }

    /// NTH's peak resident set (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        peak_rss_kib_of(self.nth_pid()?)
    }

    /// CPU time NTH has used (user + system), in seconds, without the launching script's.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.nth_pid()?;
        let f = stat_fields(pid).ok_or_else(|| anyhow::anyhow!("no /proc/{pid}/stat"))?;
        let mut ticks = f[11] + f[12];
        if pid == self.pid {
            ticks = ticks.saturating_sub(self.wrapper_ticks);
        }
        Ok(ticks as f64 / self.clk_tck as f64)
    }

    /// Everything NTH has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, up to [`STOP_GRACE`] for NTH to exit (it does not), then SIGKILL; reaps it.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait()?;
        Ok(())
    }

    fn is_nth(&self, pid: u32) -> bool {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == self.bin)
    }
}

impl Drop for Nth {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))
}

/// CPU time a process has used (user + system), in seconds.
pub fn cpu_seconds_of(pid: u32) -> anyhow::Result<f64> {
    let f = stat_fields(pid).ok_or_else(|| anyhow::anyhow!("no /proc/{pid}/stat"))?;
    Ok((f[11] + f[12]) as f64 / clk_tck() as f64)
}

/// The numeric fields of /proc/PID/stat after the command name: index 0 is the state (as 0),
/// 1 the parent PID, 11 utime, 12 stime (clock ticks).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    (fields.len() > 12).then_some(fields)
}

/// Clock ticks per second (USER_HZ) for /proc/PID/stat.
fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}
