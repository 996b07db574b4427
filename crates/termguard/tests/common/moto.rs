//! The AWS test peer for queue-mode tests and benchmarks: `tests/aws/moto_server.py` (moto with
//! lifecycle hooks, heartbeats, completion and scaling-activity causes; see tests/aws/README.md)
//! started as a child process on a free loopback port, the SDK pointed at it, and helpers to
//! build an Auto Scaling group across three zones with a termination hook on an SQS queue.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use aws_sdk_autoscaling::types::Tag;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// The three zones every test group spans.
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// The hook name tests use.
pub const HOOK: &str = "termguard-terminate";

/// A running moto server; killed when dropped.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// SDK configuration pointing at it (region us-east-1, dummy credentials).
    pub aws: aws_config::SdkConfig,
    /// Auto Scaling client.
    pub asg: aws_sdk_autoscaling::Client,
    /// SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// Where the server's stderr goes.
    pub log: PathBuf,
    _child: Child,
}

/// One instance of a group, as moto placed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// EC2 instance id.
    pub id: String,
    /// Availability zone.
    pub zone: String,
}

/// A group with a termination hook whose notifications go to a queue.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// Group name.
    pub group: String,
    /// Queue URL.
    pub queue_url: String,
    /// Queue ARN.
    pub queue_arn: String,
    /// The group's instances, in moto's order.
    pub instances: Vec<Instance>,
}

fn launcher() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/aws/moto_server.py")
}

impl Moto {
    /// Starts the server (real time unless `time_scale` says otherwise) and waits for READY.
    pub async fn start() -> Moto {
        Self::start_with(&[]).await
    }

    /// Starts the server with extra environment (`TERMGUARD_MOTO_*` knobs).
    pub async fn start_with(env: &[(&str, &str)]) -> Moto {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "moto-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let log_file = std::fs::File::create(&log).expect("moto log file");
        let mut cmd = Command::new("python3");
        cmd.arg(launcher())
            .args(["--port", "0", "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .expect("python3 tests/aws/moto_server.py starts");
        let stdout = child.stdout.take().expect("moto stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("moto did not print READY in 90 s; see {}", log.display()))
            .expect("reading moto stdout")
            .unwrap_or_else(|| {
                panic!(
                    "moto exited before READY: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let url = line
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("unexpected first line from moto: {line:?}"))
            .trim()
            .to_string();
        // Keep the pipe drained (moto prints nothing else there, but never block it).
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let aws = sdk_config(&url).await;
        Moto {
            asg: aws_sdk_autoscaling::Client::new(&aws),
            sqs: aws_sdk_sqs::Client::new(&aws),
            aws,
            url,
            log,
            _child: child,
        }
    }

    /// An unsigned HTTP request to the server; returns status and body.
    pub async fn http(&self, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
        http(self.url.trim_start_matches("http://"), method, path, form).await
    }

    /// Replaces the peer's AWS API faults (`PUT /_termguard/faults`, tests/aws/README.md).
    pub async fn set_faults(&self, config: &Value) {
        let (status, body) = self
            .http("PUT", "/_termguard/faults", Some(&config.to_string()))
            .await;
        assert_eq!(status, 200, "PUT /_termguard/faults: {body}");
    }

    /// Every lifecycle action the server knows, filtered by `query` (e.g. `instance_id=i-…`).
    pub async fn lifecycle_actions(&self, query: &str) -> Vec<Value> {
        let (status, body) = self
            .http(
                "GET",
                &format!("/_termguard/lifecycle-actions?{query}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("lifecycle actions JSON");
        v["lifecycle_actions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The (single) termination lifecycle action of an instance, once there is one.
    pub async fn action_of(&self, instance: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let actions = self
                .lifecycle_actions(&format!("instance_id={instance}"))
                .await;
            if let Some(a) = actions.into_iter().last() {
                return a;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no lifecycle action for {instance}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the action with `token` leaves `waiting`; returns it.
    pub async fn wait_action_ended(&self, token: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let actions = self.lifecycle_actions(&format!("token={token}")).await;
            let a = actions.into_iter().next().expect("action exists");
            if a["state"] != "waiting" {
                return a;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "lifecycle action {token} still waiting after {limit:?}: {a}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates a group of `size` instances over [`ZONES`] with a termination hook (heartbeat
    /// timeout `heartbeat_timeout` seconds, default result ABANDON) sending to a new queue.
    /// The group carries `tags`.
    pub async fn fleet(
        &self,
        name: &str,
        size: i32,
        heartbeat_timeout: i32,
        tags: &[(&str, &str)],
    ) -> Fleet {
        self.fleet_on(name, size, heartbeat_timeout, tags, None)
            .await
    }

    /// A fleet whose hook sends to `queue_url` (another fleet's queue: two clusters sharing a
    /// queue) or, when `None`, to a new queue of its own.
    pub async fn fleet_on(
        &self,
        name: &str,
        size: i32,
        heartbeat_timeout: i32,
        tags: &[(&str, &str)],
        queue_url: Option<&str>,
    ) -> Fleet {
        let (queue_url, queue_arn) = match queue_url {
            Some(q) => (q.to_string(), self.queue_arn(q).await),
            None => self.queue(&format!("{name}-events")).await,
        };
        self.group(name, size, tags).await;
        self.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(name)
            .lifecycle_hook_name(HOOK)
            .lifecycle_transition("autoscaling:EC2_INSTANCE_TERMINATING")
            .heartbeat_timeout(heartbeat_timeout)
            .default_result("ABANDON")
            .notification_target_arn(&queue_arn)
            .role_arn("arn:aws:iam::123456789012:role/asg-to-sqs")
            .send()
            .await
            .expect("PutLifecycleHook");
        let instances = self.instances(name).await;
        assert_eq!(instances.len(), size as usize, "{instances:?}");
        Fleet {
            group: name.to_string(),
            queue_url,
            queue_arn,
            instances,
        }
    }

    /// Creates a queue; returns its URL and ARN.
    pub async fn queue(&self, name: &str) -> (String, String) {
        let url = self
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .expect("CreateQueue")
            .queue_url()
            .expect("queue URL")
            .to_string();
        let arn = self.queue_arn(&url).await;
        (url, arn)
    }

    /// The queue's ARN.
    pub async fn queue_arn(&self, url: &str) -> String {
        self.sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("queue ARN")
    }

    /// The built `termguard` binary, its AWS SDK pointed at this peer (region us-east-1, test
    /// credentials, no instance metadata), with no kubeconfig, profile, queue or cluster name
    /// from the test's own environment, and standard input closed.
    pub fn termguard(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_termguard"));
        cmd.env_remove("KUBECONFIG")
            .env_remove("AWS_PROFILE")
            .env_remove("TERMGUARD_QUEUE_URL")
            .env_remove("TERMGUARD_CLUSTER_NAME")
            .env_remove("TERMGUARD_CONFIG")
            .env("AWS_ENDPOINT_URL", &self.url)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null());
        cmd
    }

    /// Scales `group` in by one and returns the lifecycle action the peer then started for it.
    pub async fn scale_in(&self, group: &str) -> anyhow::Result<Value> {
        let query = format!("group={group}");
        let before = self.lifecycle_actions(&query).await.len();
        let desired = self.instances(group).await.len() as i32 - 1;
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(desired)
            .honor_cooldown(false)
            .send()
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let actions = self.lifecycle_actions(&query).await;
            if let Some(a) = actions.get(before) {
                return Ok(a.clone());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no lifecycle action for {group}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Creates a group of `size` instances over [`ZONES`] carrying `tags`, with no hook.
    pub async fn group(&self, name: &str, size: i32, tags: &[(&str, &str)]) {
        let lc = format!("{name}-lc");
        self.asg
            .create_launch_configuration()
            .launch_configuration_name(&lc)
            .image_id("ami-12c6146b")
            .instance_type("m5.large")
            .send()
            .await
            .expect("CreateLaunchConfiguration");
        let mut create = self
            .asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name(&lc)
            .min_size(0)
            .max_size(size.max(1) * 2 + 10)
            .desired_capacity(size)
            .set_availability_zones(Some(ZONES.iter().map(|z| z.to_string()).collect()));
        for (key, value) in tags {
            create = create.tags(
                Tag::builder()
                    .key(*key)
                    .value(*value)
                    .resource_id(name)
                    .resource_type("auto-scaling-group")
                    .propagate_at_launch(false)
                    .build(),
            );
        }
        create.send().await.expect("CreateAutoScalingGroup");
    }

    /// The group's instances.
    pub async fn instances(&self, group: &str) -> Vec<Instance> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .expect("DescribeAutoScalingGroups");
        out.auto_scaling_groups()
            .iter()
            .flat_map(|g| g.instances())
            .map(|i| Instance {
                id: i.instance_id().unwrap_or_default().to_string(),
                zone: i.availability_zone().unwrap_or_default().to_string(),
            })
            .collect()
    }

    /// `SimulateAZRebalance` (test-only action, sent unsigned); returns the terminating instance.
    pub async fn simulate_az_rebalance(&self, group: &str, instance: Option<&str>) -> String {
        let mut form =
            format!("Action=SimulateAZRebalance&Version=2011-01-01&AutoScalingGroupName={group}");
        if let Some(i) = instance {
            form.push_str(&format!("&InstanceId={i}"));
        }
        let (status, body) = self.http("POST", "/", Some(&form)).await;
        assert_eq!(status, 200, "{body}");
        let start = body
            .find("<TerminatingInstanceId>")
            .expect("TerminatingInstanceId")
            + "<TerminatingInstanceId>".len();
        let end = body[start..].find('<').expect("end tag") + start;
        body[start..end].to_string()
    }

    /// Visible + in-flight messages on the queue (SQS's approximate counts; exact in moto).
    pub async fn queue_depth(&self, queue_url: &str) -> (u64, u64) {
        let first = self.queue_depth_once(queue_url).await;
        if first != (0, 0) {
            return first;
        }
        // moto evaluates each count at its own millisecond: a message turning visible between
        // the two is counted in neither. A second reading confirms an empty queue.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.queue_depth_once(queue_url).await
    }

    async fn queue_depth_once(&self, queue_url: &str) -> (u64, u64) {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("GetQueueAttributes");
        let get = |k: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Sends `body` to the queue; returns the message's id.
    pub async fn send(&self, queue_url: &str, body: &str) -> String {
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send()
            .await
            .expect("SendMessage")
            .message_id
            .unwrap_or_default()
    }
}

/// Waits until a termguard process serving health on `health` answers /readyz with 200, for
/// a minute at most; fails with its log (`log`) when it does not, or when it exits.
pub async fn wait_ready(
    health: &str,
    log: &std::path::Path,
    child: &mut Child,
) -> anyhow::Result<()> {
    let logs = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http(health, "GET", "/readyz", None).await;
        if status == 200 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline && child.try_wait()?.is_none(),
            "/readyz: {status} {body}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A plain HTTP/1.0 request to `addr` (host:port); returns status and body.
pub async fn http(addr: &str, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let body = form.unwrap_or("");
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if form.is_some() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    if stream.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// The SDK configuration termguard uses, pointed at `url` with dummy credentials.
pub async fn sdk_config(url: &str) -> aws_config::SdkConfig {
    termguard::aws::sdk::config_loader()
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}
