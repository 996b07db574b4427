//! Queue mode end to end, over real sockets: the AWS test peer (tests/aws/moto_server.py, a
//! child process) with an Auto Scaling group over three zones, its termination hook and the SQS
//! queue; the Kubernetes simulator with one Node per instance; termguard's queue mode
//! (`commands::run::QueueMode`, the SDK clients, handler, drain engine and SQS source) running
//! in-process against both.
//!
//! Every test runs twice (`name::sim`, `name::real`): on the simulator and on the real control
//! plane of `scripts/cluster.sh` (tests/common/cluster.rs), where queue mode talks to the API
//! server as the `termguard` user under the ClusterRole shipped in deploy/manifests/.

#[path = "common/cluster.rs"]
#[macro_use]
mod cluster;
#[path = "common/moto.rs"]
mod moto;

use cluster::{Backend, TestCluster};
use moto::{Fleet, Moto};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use termguard::aws::groups::ClusterTags;
use termguard::cluster::drain::Backoff;
use termguard::commands::run::{QueueMode, Settings};
use termguard::report::metrics::Metrics;
use termguard::report::notify::{NotifyEvent, WebhookConfig, DEFAULT_TEMPLATE};
use tokio::sync::watch;
use tokio::task::JoinHandle;

type Result<T = ()> = anyhow::Result<T>;

/// The name termguard runs with (`--cluster-name`) in these tests.
const CLUSTER: &str = "test-cluster";
/// The tag that makes a group this cluster's.
const OURS: &[(&str, &str)] = &[("termguard.io/cluster", CLUSTER)];

/// A moto group, its queue, and a cluster whose Nodes are the group's instances.
struct Bed {
    moto: Moto,
    fleet: Fleet,
    cluster: TestCluster,
    /// instance id → node name, for instances that are Nodes.
    nodes: BTreeMap<String, String>,
}

/// How a bed is made.
struct BedSpec<'a> {
    backend: Backend,
    name: &'a str,
    size: i32,
    heartbeat_timeout: i32,
    /// The group's tags.
    tags: &'a [(&'a str, &'a str)],
    /// Indexes of instances that get no Node.
    without_node: &'a [usize],
    /// Workloads YAML (list items, indented by two spaces).
    workloads: &'a str,
}

// CPU requests make kube-scheduler spread the replicas evenly (its least-allocated scoring),
// as the simulator's scheduler does anyway: every node the tests terminate runs pods.
const WEB: &str = "
  - {kind: Deployment, name: web, replicas: 12, shutdownMs: 800, requests: {cpu: 250m}}
  - {kind: DaemonSet, name: agent, namespace: kube-system, tolerations: [{operator: Exists}]}
";

impl<'a> BedSpec<'a> {
    fn new(backend: Backend, name: &'a str) -> Self {
        BedSpec {
            backend,
            name,
            size: 6,
            heartbeat_timeout: 30,
            tags: &[],
            without_node: &[],
            workloads: WEB,
        }
    }
}

async fn bed(spec: BedSpec<'_>) -> Result<Bed> {
    let moto = Moto::start().await;
    let fleet = moto
        .fleet(spec.name, spec.size, spec.heartbeat_timeout, spec.tags)
        .await;
    let mut nodes = BTreeMap::new();
    let mut yaml =
        String::from("name: queue-mode\ndefaults: {startupMs: 50, shutdownMs: 200}\nnodes:\n");
    for (i, inst) in fleet.instances.iter().enumerate() {
        if spec.without_node.contains(&i) {
            continue;
        }
        let zone_no = inst
            .zone
            .bytes()
            .last()
            .map_or(1, |b| b.saturating_sub(b'a') + 1);
        let name = format!("ip-10-0-{zone_no}-{}.ec2.internal", 10 + i);
        yaml.push_str(&format!(
            "  - {{name: {name}, zone: {}, instanceId: {}, group: {}}}\n",
            inst.zone, inst.id, spec.name
        ));
        nodes.insert(inst.id.clone(), name);
    }
    yaml.push_str("workloads:");
    yaml.push_str(spec.workloads);
    let cluster = TestCluster::start_settled(spec.backend, &yaml).await;
    Ok(Bed {
        moto,
        fleet,
        cluster,
        nodes,
    })
}

/// termguard's queue mode running in-process.
struct Termguard {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
    metrics: Arc<Metrics>,
    readiness: Arc<dyn termguard::report::health::Readiness>,
}

impl Termguard {
    /// Starts queue mode with test timings (short visibility, quick backoff) and waits until
    /// it is ready (node cache synced, a receive succeeded).
    async fn start(bed: &Bed, identity: &str) -> Result<Self> {
        Self::start_with(bed, identity, |_| {}).await
    }

    async fn start_with(
        bed: &Bed,
        identity: &str,
        tweak: impl FnOnce(&mut Settings),
    ) -> Result<Self> {
        // TERMGUARD_TEST_LOG=termguard=debug shows termguard's logs with the test's output.
        if let Ok(filter) = std::env::var("TERMGUARD_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let mut settings = Settings::new(&bed.fleet.queue_url, identity);
        settings.cluster = ClusterTags::new(Some(CLUSTER), None).map_err(anyhow::Error::msg)?;
        settings.queue.wait_time = Duration::from_secs(2);
        settings.queue.visibility = Duration::from_secs(6);
        settings.queue.extend_every = Duration::from_secs(2);
        settings.queue.shutdown_grace = Duration::from_secs(5);
        settings.eviction_backoff = Some(Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
            jitter: 0.2,
        });
        tweak(&mut settings);
        let mode = QueueMode::new(bed.cluster.client.clone(), &bed.moto.aws, settings);
        let metrics = mode.metrics.clone();
        let readiness = mode.readiness();
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move { mode.run(shutdown).await });
        let ready = eventually(Duration::from_secs(60), || readiness.ready().is_ok()).await;
        anyhow::ensure!(ready, "queue mode not ready: {:?}", readiness.ready());
        Ok(Termguard {
            stop,
            task,
            metrics,
            readiness,
        })
    }

    /// Graceful shutdown.
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(20), self.task).await???;
        Ok(())
    }

    /// A crash: the task is aborted wherever it is; nothing is handed back.
    async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    fn metric(&self, line_prefix: &str) -> f64 {
        metric(&self.metrics, line_prefix)
    }
}

/// The value of the first exposition line starting with `line_prefix` (0 when absent).
fn metric(metrics: &Metrics, line_prefix: &str) -> f64 {
    metrics
        .encode()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn cordoned(bed: &Bed, name: &str) -> bool {
    bed.cluster.node(name).await["spec"]["unschedulable"] == true
}

async fn annotation(bed: &Bed, node: &str, key: &str) -> Option<String> {
    bed.cluster.node(node).await["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

/// Pods on the node that a drain moves (not DaemonSet pods).
async fn workload_pods_on(bed: &Bed, node: &str) -> Vec<Value> {
    bed.cluster
        .pods_on(node)
        .await
        .into_iter()
        .filter(|p| {
            !p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["kind"] == "DaemonSet"))
        })
        .collect()
}

/// Eviction requests termguard made for the pod.
fn evictions_of(bed: &Bed, pod: &Value) -> u64 {
    bed.cluster.evictions_of(pod)
}

/// Eviction and DELETE requests for the pod: how many times it was asked to go (a drain
/// against a close deadline deletes with a clipped grace period instead of evicting).
fn removals_of(bed: &Bed, pod: &Value) -> u64 {
    bed.cluster.evictions_of(pod) + bed.cluster.deletes_of(pod)
}

/// Events with `reason` regarding the node, counting a series as its count.
async fn events_about(bed: &Bed, node: &str, reason: &str) -> Result<i64> {
    let api: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::all(bed.cluster.admin.clone());
    let list = api.list(&Default::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(node))
        .map(|e| e.series.as_ref().map_or(1, |s| i64::from(s.count)))
        .sum())
}

/// Scales the group in by one and returns the waiting lifecycle action moto created.
async fn scale_in(bed: &Bed) -> Result<Value> {
    bed.moto.scale_in(&bed.fleet.group).await
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Watches that the queue still holds a message while the action is waiting: sampling the
/// queue first and the action second, an empty queue followed by a waiting action means the
/// message was deleted before the action was completed.
async fn assert_deleted_only_after_completion(bed: &Bed, token: &str) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (visible, inflight) = bed.moto.queue_depth(&bed.fleet.queue_url).await;
        let action = bed
            .moto
            .lifecycle_actions(&format!("token={token}"))
            .await
            .into_iter()
            .next()
            .expect("action");
        if action["state"] != "waiting" {
            return Ok(action);
        }
        anyhow::ensure!(
            visible + inflight > 0,
            "the message was deleted while the lifecycle action was still waiting"
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "action still waiting: {action}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_queue_empty(bed: &Bed, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if bed.moto.queue_depth(&bed.fleet.queue_url).await == (0, 0) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_completed_with_continue(action: &Value) {
    assert_eq!(action["state"], "completed", "{action}");
    assert_eq!(action["result"], "CONTINUE", "{action}");
    assert_eq!(action["ended_by"], "CompleteLifecycleAction", "{action}");
}

both_backends! {
    async fn scale_in_drains_the_node_completes_the_action_and_only_then_deletes_the_message(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "scale-in")).await?;
        let hook = WebhookReceiver::start().await?;
        let tg = Termguard::start_with(&bed, "replica-a", |s| s.webhook = Some(hook.config(DEFAULT_TEMPLATE))).await?;
        let action = scale_in(&bed).await?;
        let instance = s(&action["instance_id"]);
        let node = bed.nodes[&instance].clone();
        let pods = workload_pods_on(&bed, &node).await;
        assert!(!pods.is_empty(), "the chosen node runs workload pods");

        let ended = assert_deleted_only_after_completion(&bed, &s(&action["token"])).await?;
        assert_completed_with_continue(&ended);
        // Completed only once every evicted pod was gone.
        assert!(cordoned(&bed, &node).await);
        assert!(workload_pods_on(&bed, &node).await.is_empty());
        assert_eq!(
            annotation(&bed, &node, "termguard.io/drain-phase").await.as_deref(),
            Some("drained")
        );
        for p in &pods {
            assert_eq!(evictions_of(&bed, p), 1, "{}", p["metadata"]["name"]);
        }
        assert!(
            wait_queue_empty(&bed, Duration::from_secs(10)).await,
            "message deleted"
        );
        // Why: SetDesiredCapacity's scaling activity.
        let recorded = cluster::eventually(Duration::from_secs(10), || async {
            annotation(&bed, &node, "termguard.io/drain-cause")
                .await
                .as_deref()
                == Some("scale-in-capacity-change")
        })
        .await;
        assert!(
            recorded,
            "{:?} for {}",
            annotation(&bed, &node, "termguard.io/drain-cause").await,
            ended["cause"]
        );
        assert_eq!(
            tg.metric("termguard_messages_disposed_total{reason=\"deleted\"}"),
            1.0
        );
        assert_eq!(
            tg.metric("termguard_notices_total{kind=\"lifecycle-terminate\","),
            1.0
        );
        assert_eq!(tg.metric("termguard_drains_total{reason=\"drained\"}"), 1.0);
        assert_eq!(tg.metric("termguard_drain_seconds_count"), 1.0);
        assert_eq!(
            tg.metric("termguard_evictions_total{reason=\"evicted\"}"),
            pods.len() as f64
        );
        assert_eq!(tg.metric("termguard_completions_total{reason=\"continue\"}"), 1.0);
        // The webhook heard the drain start and finish, Slack-style, and nothing else.
        let heard = eventually(Duration::from_secs(10), || hook.bodies().len() >= 2).await;
        let bodies = hook.bodies();
        assert!(heard, "{bodies:?}");
        let texts: Vec<String> = bodies.iter().map(|b| b["text"].as_str().unwrap_or_default().to_string()).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].starts_with(&format!("termguard ({CLUSTER}): drain-started on node {node}: draining")), "{texts:?}");
        assert!(texts[1].starts_with(&format!("termguard ({CLUSTER}): drain-finished on node {node}")), "{texts:?}");
        assert_eq!(tg.metric("termguard_webhooks_total{reason=\"sent\"}"), 2.0);
        tg.stop().await
    }
}

/// A webhook endpoint on a free loopback port: keeps every JSON body POSTed to it.
struct WebhookReceiver {
    url: String,
    bodies: Arc<std::sync::Mutex<Vec<Value>>>,
    _server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    async fn start() -> Result<Self> {
        let bodies: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let kept = kept.clone();
                async move {
                    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    kept.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(WebhookReceiver {
            url,
            bodies,
            _server: server,
        })
    }

    /// Notifications of every event to this endpoint, with `template` as the body.
    fn config(&self, template: &str) -> WebhookConfig {
        WebhookConfig {
            url: self.url.parse().unwrap_or_default(),
            template: template.into(),
            events: NotifyEvent::ALL.to_vec(),
            cluster: CLUSTER.into(),
            identity: "replica-a".into(),
        }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What a drain that cannot run to the end must not do: complete the lifecycle action while
/// the pods are still there. With `fault` on (the API server refusing one kind of request),
/// the request is retried — by the drain itself when the error is transient, by a new drain
/// when it failed for good (`attempts` counts the refused requests) — while the action waits
/// and the message is kept; once the fault is gone the node drains, and only then is the
/// action completed. Simulator only: the real API server cannot be told to refuse one request.
async fn a_failing_drain_is_retried_and_completes_only_once_drained(
    name: &str,
    fault: Value,
    attempts: impl Fn(&Bed, &[Value]) -> u64,
) -> Result {
    let bed = bed(BedSpec::new(Backend::Sim, name)).await?;
    let sim = bed.cluster.sim().expect("the simulator backend");
    sim.faults.set(serde_json::from_value(
        serde_json::json!({ "verbs": fault }),
    )?);
    let tg = Termguard::start(&bed, "replica-a").await?;
    let action = scale_in(&bed).await?;
    let token = s(&action["token"]);
    let node = bed.nodes[&s(&action["instance_id"])].clone();
    let pods = workload_pods_on(&bed, &node).await;
    assert!(!pods.is_empty(), "the chosen node runs workload pods");

    // Refused at least twice (a first try and a retry) while the action waits.
    let retried = eventually(Duration::from_secs(20), || attempts(&bed, &pods) >= 2).await;
    assert!(retried, "the failing drain was retried");
    let now = bed.moto.lifecycle_actions(&format!("token={token}")).await;
    assert_eq!(now[0]["state"], "waiting", "not completed: {}", now[0]);
    assert_eq!(
        workload_pods_on(&bed, &node).await.len(),
        pods.len(),
        "no pod left"
    );
    let (visible, inflight) = bed.moto.queue_depth(&bed.fleet.queue_url).await;
    assert_eq!(visible + inflight, 1, "the message is kept");

    // The API server recovers: the next attempt drains the node, then completes the action.
    sim.faults.set(Default::default());
    let ended = assert_deleted_only_after_completion(&bed, &token).await?;
    assert_completed_with_continue(&ended);
    assert!(workload_pods_on(&bed, &node).await.is_empty());
    assert_eq!(
        annotation(&bed, &node, "termguard.io/drain-phase")
            .await
            .as_deref(),
        Some("drained")
    );
    tg.stop().await
}

/// kubectl's DaemonSet rule needs a GET that the API server keeps refusing, as API Priority
/// and Fairness does with 429s: the drain cannot even be planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_that_cannot_be_planned_is_retried_and_never_completes_the_action_early() -> Result
{
    let ds_get = "/apis/apps/v1/namespaces/kube-system/daemonsets/agent";
    a_failing_drain_is_retried_and_completes_only_once_drained(
        "unplannable",
        serde_json::json!({"get daemonsets": {"errorRate": 1.0, "errorCode": 429}}),
        |bed, _| bed.cluster.requests("get", ds_get),
    )
    .await
}

/// Every eviction answers 403 (a webhook or an RBAC change refusing it): fatal for the pod, so
/// the drain fails, with the instance's hours still ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_whose_evictions_are_refused_is_retried_and_never_completes_the_action_early(
) -> Result {
    a_failing_drain_is_retried_and_completes_only_once_drained(
        "evictions-refused",
        serde_json::json!({"evict": {"errorRate": 1.0, "errorCode": 403}}),
        |bed, pods| pods.iter().map(|p| evictions_of(bed, p)).max().unwrap_or(0),
    )
    .await
}

both_backends! {
    async fn heartbeats_are_sent_while_a_slow_drain_runs(backend) -> Result {
        // HeartbeatTimeout 30 s (AWS's minimum): termguard heartbeats every 15 s; the pods take 20 s
        // to shut down, so the action would expire without heartbeats.
        let mut spec = BedSpec::new(backend, "slow-drain");
        spec.workloads = "
      - {kind: Deployment, name: slow, replicas: 6, shutdownMs: 20000, requests: {cpu: 250m}, terminationGracePeriodSeconds: 60}
    ";
        let bed = bed(spec).await?;
        let tg = Termguard::start(&bed, "replica-a").await?;
        let action = scale_in(&bed).await?;
        let token = s(&action["token"]);
        let ended = bed
            .moto
            .wait_action_ended(&token, Duration::from_secs(60))
            .await;
        assert_completed_with_continue(&ended);
        assert!(ended["heartbeat_count"].as_u64() >= Some(1), "{ended}");
        // Every heartbeat came before the completion.
        let ended_ms = ended["ended_at_ms"].as_u64().unwrap_or(0);
        let beats = ended["heartbeats_ms"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(beats.iter().all(|b| b.as_u64() < Some(ended_ms)), "{ended}");
        let node = &bed.nodes[&s(&action["instance_id"])];
        assert!(workload_pods_on(&bed, node).await.is_empty());
        assert!(wait_queue_empty(&bed, Duration::from_secs(10)).await);
        // Its 6 s visibility was extended for the whole 20 s drain: it never reappeared.
        assert_eq!(tg.metric("termguard_messages_received_total"), 1.0);
        tg.stop().await
    }
}

/// A fixture with its instance id and times replaced.
fn event_fixture(name: &str, instance: &str) -> Result<String> {
    let path = format!("{}/tests/data/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let now = jiff::Timestamp::now();
    v["time"] = Value::String(now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    v["id"] = Value::String(format!("test-{name}-{instance}"));
    let text = serde_json::to_string(&v)?;
    Ok(text.replace("i-0123456789abcdef0", instance))
}

both_backends! {
    async fn each_ec2_message_kind_is_handled_by_its_rule(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "kinds")).await?;
        let tg = Termguard::start(&bed, "replica-a").await?;
        let ids: Vec<String> = bed.nodes.keys().cloned().collect();
        let node = |i: usize| bed.nodes[&ids[i]].clone();
        let mut pods: Vec<Vec<Value>> = Vec::new();
        for i in 0..4 {
            pods.push(workload_pods_on(&bed, &node(i)).await);
        }

        // Spot interruption: drained within the two-minute warning.
        bed.moto
            .send(
                &bed.fleet.queue_url,
                &event_fixture("eventbridge-spot-interruption-warning.json", &ids[0])?,
            )
            .await;
        // Rebalance recommendation: cordoned only.
        bed.moto
            .send(
                &bed.fleet.queue_url,
                &event_fixture("eventbridge-rebalance-recommendation.json", &ids[1])?,
            )
            .await;
        // State change to shutting-down: drained at once, best effort.
        bed.moto
            .send(
                &bed.fleet.queue_url,
                &event_fixture("eventbridge-state-change-shutting-down.json", &ids[2])?,
            )
            .await;
        // AWS Health scheduled change: drained before the window starts.
        let mut health: Value = serde_json::from_str(&event_fixture(
            "eventbridge-health-scheduled-change-ec2.json",
            &ids[3],
        )?)?;
        let start = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
        let rfc1123 = |t: jiff::Timestamp| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string();
        health["detail"]["startTime"] = Value::String(rfc1123(start));
        health["detail"]["endTime"] =
            Value::String(rfc1123(start + jiff::SignedDuration::from_hours(2)));
        bed.moto
            .send(&bed.fleet.queue_url, &serde_json::to_string(&health)?)
            .await;

        assert!(
            wait_queue_empty(&bed, Duration::from_secs(30)).await,
            "every message deleted"
        );
        for i in [0, 2, 3] {
            let n = node(i);
            assert!(cordoned(&bed, &n).await, "{n}");
            assert!(workload_pods_on(&bed, &n).await.is_empty(), "{n} drained");
            assert_eq!(
                annotation(&bed, &n, "termguard.io/drain-phase").await.as_deref(),
                Some("drained"),
                "{n}"
            );
            for p in &pods[i] {
                assert_eq!(
                    removals_of(&bed, p),
                    1,
                    "{n}: {}",
                    p["metadata"]["name"]
                );
            }
        }
        let rebalanced = node(1);
        assert!(cordoned(&bed, &rebalanced).await);
        // Cordon only: every pod that was there is still there, untouched (replacements of the
        // other nodes' pods may have landed on it before the cordon, so the count may grow).
        let still: Vec<String> = workload_pods_on(&bed, &rebalanced).await
            .iter()
            .map(|p| p["metadata"]["uid"].to_string())
            .collect();
        for p in &pods[1] {
            assert!(
                still.contains(&p["metadata"]["uid"].to_string()),
                "cordon only: {} was removed",
                p["metadata"]["name"]
            );
            assert_eq!(
                evictions_of(&bed, p),
                0,
                "cordon only: {} was evicted",
                p["metadata"]["name"]
            );
        }
        assert_eq!(
            annotation(&bed, &rebalanced, "termguard.io/drain-phase").await,
            None
        );
        for kind in [
            "spot-interruption",
            "rebalance-recommendation",
            "state-change",
            "scheduled-maintenance",
        ] {
            assert_eq!(
                tg.metric(&format!("termguard_notices_total{{kind=\"{kind}\",")),
                1.0,
                "{kind}"
            );
        }
        assert_eq!(
            tg.metric("termguard_messages_disposed_total{reason=\"deleted\"}"),
            4.0
        );
        // Nothing about these went to Auto Scaling.
        assert!(bed.moto.lifecycle_actions("").await.is_empty());
        tg.stop().await
    }
}

both_backends! {
    async fn a_message_for_an_instance_outside_the_cluster_is_released_until_its_deadline_then_dropped(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "foreign")).await?;
        let tg = Termguard::start(&bed, "replica-a").await?;
        // A Spot interruption for another cluster's instance whose two-minute deadline is 8 s away.
        let mut v: Value = serde_json::from_str(&event_fixture(
            "eventbridge-spot-interruption-warning.json",
            "i-0f0f0f0f0f0f0f0f0",
        )?)?;
        let time = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(112);
        v["time"] = Value::String(time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        bed.moto
            .send(&bed.fleet.queue_url, &serde_json::to_string(&v)?)
            .await;

        let released = eventually(Duration::from_secs(10), || {
            tg.metric("termguard_messages_disposed_total{reason=\"released\"}") >= 2.0
        })
        .await;
        assert!(
            released,
            "released (and received again) before its deadline"
        );
        let (visible, inflight) = bed.moto.queue_depth(&bed.fleet.queue_url).await;
        assert_eq!(
            visible + inflight,
            1,
            "still on the queue before its deadline"
        );
        assert_eq!(tg.metric("termguard_foreign_expired_total"), 0.0);

        assert!(
            wait_queue_empty(&bed, Duration::from_secs(45)).await,
            "dropped after its deadline"
        );
        assert_eq!(tg.metric("termguard_foreign_expired_total"), 1.0);
        // No node of this cluster was touched.
        for node in bed.nodes.values() {
            assert!(!cordoned(&bed, node).await, "{node}");
        }
        tg.stop().await
    }
}

both_backends! {
    async fn a_managed_group_instance_that_is_not_a_node_is_completed_at_once(backend) -> Result {
        let mut spec = BedSpec::new(backend, "managed");
        spec.tags = OURS;
        spec.without_node = &[5];
        let bed = bed(spec).await?;
        let tg = Termguard::start(&bed, "replica-a").await?;
        let action = terminate(&bed, 5).await?;
        let ended = bed
            .moto
            .wait_action_ended(&s(&action["token"]), Duration::from_secs(20))
            .await;
        assert_completed_with_continue(&ended);
        assert_eq!(ended["heartbeat_count"], 0, "completed at once: {ended}");
        assert!(wait_queue_empty(&bed, Duration::from_secs(10)).await);
        for node in bed.nodes.values() {
            assert!(!cordoned(&bed, node).await, "{node}");
        }
        tg.stop().await
    }
}

both_backends! {
    /// Two clusters share the queue (the EventBridge rules of both send every group's events to
    /// it). The other cluster's groups carry its own name, or only the bare legacy key every
    /// group may carry: their actions are never ours to complete, whoever receives them.
    async fn another_clusters_lifecycle_actions_on_a_shared_queue_are_left_waiting(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "shared-a")).await?;
        let theirs = bed
            .moto
            .fleet_on("shared-b", 2, 30, &[("termguard.io/cluster", "other-cluster")], Some(&bed.fleet.queue_url))
            .await;
        let legacy = bed
            .moto
            .fleet_on("shared-c", 2, 30, &[("termguard.io/managed", "true")], Some(&bed.fleet.queue_url))
            .await;
        let tg = Termguard::start(&bed, "replica-a").await?;
        let mut tokens = Vec::new();
        for fleet in [&theirs, &legacy] {
            tokens.push(s(&terminate_instance(&bed, &fleet.instances[0].id).await?["token"]));
        }
        // Both messages are received and released again and again while their owner works.
        let released = eventually(Duration::from_secs(20), || {
            tg.metric("termguard_messages_disposed_total{reason=\"released\"}") >= 4.0
        })
        .await;
        assert!(released, "released to their owner, repeatedly");
        for token in &tokens {
            let now = bed.moto.lifecycle_actions(&format!("token={token}")).await;
            assert_eq!(now[0]["state"], "waiting", "not completed by us: {}", now[0]);
            assert_eq!(now[0]["heartbeat_count"], 0, "not heartbeaten by us: {}", now[0]);
        }
        let (visible, inflight) = bed.moto.queue_depth(&bed.fleet.queue_url).await;
        assert_eq!(visible + inflight, 2, "both messages stay on the queue");
        assert_eq!(tg.metric("termguard_messages_disposed_total{reason=\"deleted\"}"), 0.0);
        for node in bed.nodes.values() {
            assert!(!cordoned(&bed, node).await, "{node}");
        }
        tg.stop().await
    }
}

both_backends! {
    async fn the_same_message_delivered_twice_drains_the_node_once(backend) -> Result {
        let mut spec = BedSpec::new(backend, "twice");
        spec.workloads = "
      - {kind: Deployment, name: web, replicas: 12, shutdownMs: 2000, requests: {cpu: 250m}}
    ";
        let bed = bed(spec).await?;
        // The lifecycle message is on the queue before termguard starts; a copy joins it.
        let action = scale_in(&bed).await?;
        let body = serde_json::to_string(&action["notification"]["body"])?;
        assert!(
            body.contains("EC2 Instance-terminate Lifecycle Action"),
            "{body}"
        );
        bed.moto.send(&bed.fleet.queue_url, &body).await;
        let instance = s(&action["instance_id"]);
        let node = bed.nodes[&instance].clone();
        let pods = workload_pods_on(&bed, &node).await;

        let tg = Termguard::start(&bed, "replica-a").await?;
        let ended = bed
            .moto
            .wait_action_ended(&s(&action["token"]), Duration::from_secs(30))
            .await;
        assert_completed_with_continue(&ended);
        assert!(
            wait_queue_empty(&bed, Duration::from_secs(10)).await,
            "both copies deleted"
        );
        // A third copy after the drain finished: acknowledged without draining again.
        bed.moto.send(&bed.fleet.queue_url, &body).await;
        assert!(
            wait_queue_empty(&bed, Duration::from_secs(15)).await,
            "late copy deleted"
        );

        assert_eq!(events_about(&bed, &node, "DrainStarted").await?, 1);
        for p in &pods {
            assert_eq!(evictions_of(&bed, p), 1, "{}", p["metadata"]["name"]);
        }
        assert_eq!(
            tg.metric("termguard_messages_disposed_total{reason=\"deleted\"}"),
            3.0
        );
        tg.stop().await
    }
}

both_backends! {
    async fn a_restart_mid_drain_resumes_heartbeats_and_completes_once(backend) -> Result {
        let mut spec = BedSpec::new(backend, "restart");
        spec.workloads = "
      - {kind: Deployment, name: slow, replicas: 6, shutdownMs: 12000, requests: {cpu: 250m}, terminationGracePeriodSeconds: 60}
    ";
        let bed = bed(spec).await?;
        let first = Termguard::start(&bed, "replica-a").await?;
        let action = scale_in(&bed).await?;
        let token = s(&action["token"]);
        let node = bed.nodes[&s(&action["instance_id"])].clone();
        let pods = workload_pods_on(&bed, &node).await;
        let evicting = eventually(Duration::from_secs(20), || {
            pods.iter().any(|p| evictions_of(&bed, p) > 0)
        })
        .await;
        assert!(evicting, "the drain started");
        first.crash().await;
        let crashed_at = jiff::Timestamp::now().as_millisecond();
        assert_eq!(
            annotation(&bed, &node, "termguard.io/drain-owner").await.as_deref(),
            Some("replica-a")
        );

        // The message reappears after its visibility timeout; another replica takes over the drain
        // once the first owner's lease lapses, heartbeating from the start.
        let second = Termguard::start(&bed, "replica-b").await?;
        let ended = bed
            .moto
            .wait_action_ended(&token, Duration::from_secs(90))
            .await;
        assert_completed_with_continue(&ended);
        let beats: Vec<u64> = ended["heartbeats_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        assert!(
            beats.iter().any(|b| *b as i64 > crashed_at),
            "heartbeats after the restart: {ended}"
        );
        assert_eq!(
            annotation(&bed, &node, "termguard.io/drain-owner").await.as_deref(),
            Some("replica-b")
        );
        assert_eq!(
            annotation(&bed, &node, "termguard.io/drain-phase").await.as_deref(),
            Some("drained")
        );
        assert!(workload_pods_on(&bed, &node).await.is_empty());
        for p in &pods {
            assert!(
                evictions_of(&bed, p) <= 1,
                "{} evicted once",
                p["metadata"]["name"]
            );
        }
        assert!(wait_queue_empty(&bed, Duration::from_secs(15)).await);
        // Completed exactly once: a second completion would have been refused, and moto keeps one action.
        assert_eq!(
            bed.moto
                .lifecycle_actions(&format!("token={token}"))
                .await
                .len(),
            1
        );
        second.stop().await
    }
}

both_backends! {
    async fn malformed_message_is_left_on_the_queue_and_counted(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "poison")).await?;
        let tg = Termguard::start(&bed, "replica-a").await?;
        bed.moto
            .send(&bed.fleet.queue_url, "this is not JSON")
            .await;
        let counted = eventually(Duration::from_secs(30), || {
            tg.metric("termguard_messages_invalid_total{reason=\"not-json\"}") >= 2.0
        })
        .await;
        assert!(
            counted,
            "received again after its visibility timeout, and counted each time"
        );
        tg.stop().await?;
        // Still there, with a growing receive count for the redrive policy to act on.
        let out = bed
            .moto
            .sqs
            .receive_message()
            .queue_url(&bed.fleet.queue_url)
            .wait_time_seconds(10)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await?;
        let msg = out
            .messages()
            .first()
            .expect("the poison message is still on the queue");
        assert_eq!(msg.body(), Some("this is not JSON"));
        let count: u32 = msg
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            })
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        assert!(count >= 3, "receive count {count}");
        Ok(())
    }
}

both_backends! {
    async fn az_rebalance_is_recorded_as_the_drain_cause(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "rebalance")).await?;
        let tg = Termguard::start(&bed, "replica-a").await?;
        let victim = bed.fleet.instances[0].id.clone();
        let terminating = bed
            .moto
            .simulate_az_rebalance(&bed.fleet.group, Some(&victim))
            .await;
        assert_eq!(terminating, victim);
        let action = bed.moto.action_of(&victim).await;
        assert!(
            s(&action["cause"]).contains("balance instances in zones"),
            "{action}"
        );
        let ended = bed
            .moto
            .wait_action_ended(&s(&action["token"]), Duration::from_secs(30))
            .await;
        assert_completed_with_continue(&ended);
        let node = bed.nodes[&victim].clone();
        let recorded = cluster::eventually(Duration::from_secs(15), || async {
            annotation(&bed, &node, "termguard.io/drain-cause")
                .await
                .as_deref()
                == Some("az-rebalance")
        })
        .await;
        assert!(
            recorded,
            "{:?}",
            annotation(&bed, &node, "termguard.io/drain-cause").await
        );
        tg.stop().await
    }
}

both_backends! {
    async fn shutdown_hands_in_flight_messages_back_undeleted(backend) -> Result {
        let mut spec = BedSpec::new(backend, "shutdown");
        spec.workloads = "
      - {kind: Deployment, name: slow, replicas: 6, shutdownMs: 15000, requests: {cpu: 250m}, terminationGracePeriodSeconds: 60}
    ";
        let bed = bed(spec).await?;
        let tg = Termguard::start_with(&bed, "replica-a", |s| {
            s.queue.visibility = Duration::from_secs(60)
        })
        .await?;
        let action = scale_in(&bed).await?;
        let node = bed.nodes[&s(&action["instance_id"])].clone();
        assert!(
            !workload_pods_on(&bed, &node).await.is_empty(),
            "the chosen node runs a slow pod"
        );
        let draining = cluster::eventually(Duration::from_secs(20), || async {
            annotation(&bed, &node, "termguard.io/drain-phase")
                .await
                .is_some()
        })
        .await;
        assert!(draining);
        tg.stop().await?;
        // Visible again at once (not after the 60 s visibility timeout), and not deleted.
        let (visible, _) = bed.moto.queue_depth(&bed.fleet.queue_url).await;
        assert_eq!(visible, 1);
        let a = bed
            .moto
            .lifecycle_actions(&format!("token={}", s(&action["token"])))
            .await;
        assert_eq!(
            a[0]["state"], "waiting",
            "not completed by a half-handled message"
        );
        Ok(())
    }
}

both_backends! {
    async fn termguard_run_reads_the_standard_aws_configuration_serves_health_and_stops_on_sigterm(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "binary")).await?;
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("queue-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let kubeconfig = bed.cluster.kubeconfig().to_path_buf();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let health = format!("127.0.0.1:{port}");
        let log = dir.join("termguard.log");
        let mut child = bed.moto.termguard()
            .args([
                "run",
                "--queue-url",
                &bed.fleet.queue_url,
                "--health-listen",
                &health,
            ])
            .args(["--visibility-timeout", "10s", "--kubeconfig"])
            .arg(&kubeconfig)            .env("TERMGUARD_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        let logs = || std::fs::read_to_string(&log).unwrap_or_default();
        moto::wait_ready(&health, &log, &mut child).await?;
        assert_eq!(moto::http(&health, "GET", "/healthz", None).await.0, 200);

        let action = scale_in(&bed).await?;
        let ended = bed
            .moto
            .wait_action_ended(&s(&action["token"]), Duration::from_secs(30))
            .await;
        assert_completed_with_continue(&ended);
        assert!(wait_queue_empty(&bed, Duration::from_secs(10)).await);
        let (status, metrics) = moto::http(&health, "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        assert!(
            metrics.contains("termguard_messages_received_total 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("termguard_messages_disposed_total{reason=\"deleted\"} 1"),
            "{metrics}"
        );

        let pid = child.id().expect("running").to_string();
        let killed = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await?;
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
        assert!(status.success(), "exit {status:?}\n{}", logs());
        assert!(logs().contains("shutdown requested"), "{}", logs());
        Ok(())
    }
}

const LAUNCH_HOOK: &str = "termguard-launch";

/// Adds a launch hook (long heartbeat timeout, default ABANDON) sending to the bed's queue.
async fn add_launch_hook(bed: &Bed) -> Result {
    bed.moto
        .asg
        .put_lifecycle_hook()
        .auto_scaling_group_name(&bed.fleet.group)
        .lifecycle_hook_name(LAUNCH_HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(600)
        .default_result("ABANDON")
        .notification_target_arn(&bed.fleet.queue_arn)
        .role_arn("arn:aws:iam::123456789012:role/asg-to-sqs")
        .send()
        .await?;
    Ok(())
}

/// Scales the group out by one and returns the launch lifecycle action moto created.
async fn scale_out(bed: &Bed) -> Result<Value> {
    let desired = bed.moto.instances(&bed.fleet.group).await.len() as i32 + 1;
    bed.moto
        .asg
        .set_desired_capacity()
        .auto_scaling_group_name(&bed.fleet.group)
        .desired_capacity(desired)
        .honor_cooldown(false)
        .send()
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let launch = bed
            .moto
            .lifecycle_actions("")
            .await
            .into_iter()
            .find(|a| a["transition"] == "autoscaling:EC2_INSTANCE_LAUNCHING");
        if let Some(a) = launch {
            return Ok(a);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no launch lifecycle action"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new instance's Node registers: in the simulator, or as a KWOK node on the real cluster
/// (KWOK makes it Ready within moments, as a kubelet would).
async fn register_node(bed: &Bed, spec: &kube_sim::scenario::NodeSpec) -> Result {
    match bed.cluster.sim() {
        Some(sim) => {
            sim.add_node(spec)?;
        }
        None => {
            termguard::kwok::create_node(&bed.cluster.admin, spec, "us-east-1", "queue-mode")
                .await?;
        }
    }
    Ok(())
}

/// The instance's LifecycleState in DescribeAutoScalingInstances.
async fn lifecycle_state(bed: &Bed, instance: &str) -> Result<String> {
    let out = bed
        .moto
        .asg
        .describe_auto_scaling_instances()
        .instance_ids(instance)
        .send()
        .await?;
    Ok(out
        .auto_scaling_instances()
        .first()
        .and_then(|i| i.lifecycle_state())
        .unwrap_or_default()
        .to_string())
}

both_backends! {
    async fn launch_action_is_completed_once_the_new_node_is_ready(backend) -> Result {
        let mut spec = BedSpec::new(backend, "launch");
        spec.size = 3;
        spec.tags = OURS;
        let bed = bed(spec).await?;
        add_launch_hook(&bed).await?;
        let tg = Termguard::start_with(&bed, "replica-a", |s| {
            s.handler.complete_launch = true;
        })
        .await?;
        let action = scale_out(&bed).await?;
        let token = s(&action["token"]);
        let instance = s(&action["instance_id"]);
        assert_eq!(action["state"], "waiting", "{action}");
        assert_eq!(lifecycle_state(&bed, &instance).await?, "Pending:Wait");

        // No Node for the instance yet: termguard holds the message (received once, kept
        // invisible) and leaves the action waiting.
        let until = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < until {
            let (visible, inflight) = bed.moto.queue_depth(&bed.fleet.queue_url).await;
            assert_eq!(
                visible + inflight,
                1,
                "the launch message stays on the queue"
            );
            let now = bed.moto.lifecycle_actions(&format!("token={token}")).await;
            assert_eq!(now[0]["state"], "waiting", "{}", now[0]);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(tg.metric("termguard_messages_received_total"), 1.0, "held, not redelivered");
        assert_eq!(lifecycle_state(&bed, &instance).await?, "Pending:Wait");

        // The Node registers (Ready at once): the action is completed with CONTINUE.
        let zone = bed
            .moto
            .instances(&bed.fleet.group)
            .await
            .into_iter()
            .find(|i| i.id == instance)
            .map(|i| i.zone)
            .expect("the new instance is a member");
        register_node(
            &bed,
            &kube_sim::scenario::NodeSpec {
                name: "ip-10-0-9-99.ec2.internal".into(),
                zone,
                instance_id: instance.clone(),
                instance_type: "m5.large".into(),
                group: bed.fleet.group.clone(),
                capacity: Default::default(),
                labels: BTreeMap::new(),
                taints: Vec::new(),
            },
        )
        .await?;
        let ended = assert_deleted_only_after_completion(&bed, &token).await?;
        assert_completed_with_continue(&ended);
        assert!(wait_queue_empty(&bed, Duration::from_secs(10)).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lifecycle_state(&bed, &instance).await? != "InService" {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{instance} not InService after CONTINUE"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tg.stop().await
    }
}

both_backends! {
    /// Without --complete-launch, launch messages are someone else's (a shared queue): released
    /// for their owner, again and again, never deleted, never acted on.
    async fn launch_action_is_left_for_its_owner_without_complete_launch(backend) -> Result {
        let mut spec = BedSpec::new(backend, "launch-off");
        spec.size = 3;
        spec.tags = OURS;
        let bed = bed(spec).await?;
        add_launch_hook(&bed).await?;
        let tg = Termguard::start(&bed, "replica-a").await?;
        let action = scale_out(&bed).await?;
        let token = s(&action["token"]);
        let instance = s(&action["instance_id"]);
        let released = eventually(Duration::from_secs(20), || {
            tg.metric("termguard_messages_disposed_total{reason=\"released\"}") >= 2.0
        })
        .await;
        assert!(released, "released for its owner");
        let (visible, inflight) = bed.moto.queue_depth(&bed.fleet.queue_url).await;
        assert_eq!(visible + inflight, 1, "the launch message stays on the queue");
        let now = bed.moto.lifecycle_actions(&format!("token={token}")).await;
        assert_eq!(now[0]["state"], "waiting", "not completed: {}", now[0]);
        assert_eq!(now[0]["heartbeat_count"], 0, "{}", now[0]);
        assert_eq!(lifecycle_state(&bed, &instance).await?, "Pending:Wait");
        tg.stop().await
    }
}

both_backends! {
    /// With --complete-launch, an instance that never becomes a node is heartbeaten while it
    /// may still join, then abandoned at the launch timeout (its group replaces it) — not
    /// retried for ever; and another cluster's launch (its group not tagged for us) is left
    /// for its owner.
    async fn a_launch_that_never_joins_is_abandoned_and_another_clusters_is_left_alone(backend) -> Result {
        let mut spec = BedSpec::new(backend, "launch-never");
        spec.size = 2;
        spec.tags = OURS;
        let bed = bed(spec).await?;
        // The hook's heartbeat timeout is 30 s: without heartbeats it would expire first.
        bed.moto
            .asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(&bed.fleet.group)
            .lifecycle_hook_name(LAUNCH_HOOK)
            .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
            .heartbeat_timeout(30)
            .default_result("CONTINUE")
            .notification_target_arn(&bed.fleet.queue_arn)
            .role_arn("arn:aws:iam::123456789012:role/asg-to-sqs")
            .send()
            .await?;
        let theirs = bed
            .moto
            .fleet_on("launch-theirs", 1, 30, &[("termguard.io/cluster", "other-cluster")], Some(&bed.fleet.queue_url))
            .await;
        bed.moto
            .asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(&theirs.group)
            .lifecycle_hook_name(LAUNCH_HOOK)
            .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
            .heartbeat_timeout(600)
            .default_result("ABANDON")
            .notification_target_arn(&bed.fleet.queue_arn)
            .role_arn("arn:aws:iam::123456789012:role/asg-to-sqs")
            .send()
            .await?;
        let tg = Termguard::start_with(&bed, "replica-a", |s| {
            s.handler.complete_launch = true;
            s.handler.launch_timeout = Duration::from_secs(40);
        })
        .await?;
        let action = scale_out(&bed).await?;
        let token = s(&action["token"]);
        bed.moto
            .asg
            .set_desired_capacity()
            .auto_scaling_group_name(&theirs.group)
            .desired_capacity(2)
            .honor_cooldown(false)
            .send()
            .await?;
        let ended = bed.moto.wait_action_ended(&token, Duration::from_secs(70)).await;
        assert_eq!(ended["state"], "completed", "{ended}");
        assert_eq!(ended["result"], "ABANDON", "{ended}");
        assert_eq!(ended["ended_by"], "CompleteLifecycleAction", "{ended}");
        assert!(ended["heartbeat_count"].as_u64() >= Some(1), "kept alive meanwhile: {ended}");
        let foreign: Vec<Value> = bed
            .moto
            .lifecycle_actions("")
            .await
            .into_iter()
            .filter(|a| a["group"] == theirs.group.as_str() && a["transition"] == "autoscaling:EC2_INSTANCE_LAUNCHING")
            .collect();
        assert!(!foreign.is_empty());
        for a in &foreign {
            assert_eq!(a["state"], "waiting", "another cluster's launch is not ours: {a}");
            assert_eq!(a["heartbeat_count"], 0, "{a}");
        }
        tg.stop().await
    }
}

/// Terminates the fleet's `i`-th instance (decrementing the capacity) and returns the waiting
/// lifecycle action.
async fn terminate(bed: &Bed, i: usize) -> Result<Value> {
    terminate_instance(bed, &bed.fleet.instances[i].id).await
}

/// Terminates `instance` (decrementing its group's capacity) and returns its waiting lifecycle
/// action.
async fn terminate_instance(bed: &Bed, instance: &str) -> Result<Value> {
    bed.moto
        .asg
        .terminate_instance_in_auto_scaling_group()
        .instance_id(instance)
        .should_decrement_desired_capacity(true)
        .send()
        .await?;
    Ok(bed.moto.action_of(instance).await)
}

/// Whether every workload pod has left `node` before `deadline`.
async fn gone_before(bed: &Bed, node: &str, deadline: tokio::time::Instant) -> bool {
    while tokio::time::Instant::now() < deadline {
        if workload_pods_on(bed, node).await.is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Writes the progress annotations of a drain that a dead replica left behind.
async fn abandoned_drain(bed: &Bed, node: &str, notice: &str, deadline: jiff::Timestamp) -> Result {
    let api: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(bed.cluster.admin.clone());
    let stale = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
    let patch = serde_json::json!({"metadata": {"annotations": {
        "termguard.io/drain-owner": "ghost-replica",
        "termguard.io/drain-renewed": stale.to_string(),
        "termguard.io/drain-notice": notice,
        "termguard.io/drain-cause": "scale-in",
        "termguard.io/drain-phase": "wave-1",
        "termguard.io/drain-started": stale.to_string(),
        "termguard.io/drain-deadline": deadline.to_string(),
    }}});
    api.patch(
        node,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

both_backends! {
    /// The drain's deadline is the hook's own global timeout (here 100 × 600 s), not the 3000 s
    /// assumed before the hook is read — and not a deadline an abandoned drain recorded: one of
    /// this same notice (a guess of an earlier run) or of an unrelated older notice, both past.
    /// Followed, either would have deleted the pods with one second of grace.
    async fn a_drain_runs_against_the_hooks_own_deadline_not_an_assumed_or_recorded_one(backend) -> Result {
        let mut spec = BedSpec::new(backend, "hook-deadline");
        spec.heartbeat_timeout = 600;
        let bed = bed(spec).await?;
        let first = terminate(&bed, 0).await?;
        let second = terminate(&bed, 1).await?;
        let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(30);
        let node_of = |a: &Value| bed.nodes[&s(&a["instance_id"])].clone();
        abandoned_drain(&bed, &node_of(&first), &s(&first["token"]), past).await?;
        abandoned_drain(&bed, &node_of(&second), "an-older-notice", past).await?;
        let pods: Vec<Value> = [
            workload_pods_on(&bed, &node_of(&first)).await,
            workload_pods_on(&bed, &node_of(&second)).await,
        ]
        .concat();
        assert!(!pods.is_empty());

        let tg = Termguard::start(&bed, "replica-a").await?;
        for action in [&first, &second] {
            let ended = bed
                .moto
                .wait_action_ended(&s(&action["token"]), Duration::from_secs(60))
                .await;
            assert_completed_with_continue(&ended);
            let deadline: jiff::Timestamp = annotation(&bed, &node_of(action), "termguard.io/drain-deadline")
                .await
                .unwrap_or_default()
                .parse()?;
            let hook_end = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60_000);
            assert!(
                deadline.duration_since(hook_end).abs() < jiff::SignedDuration::from_secs(120),
                "deadline {deadline}: the hook's global timeout ends about {hook_end}"
            );
        }
        for p in &pods {
            assert_eq!(evictions_of(&bed, p), 1, "{} evicted, budgets respected", p["metadata"]["name"]);
            assert_eq!(bed.cluster.deletes_of(p), 0, "{} not deleted with a clipped grace", p["metadata"]["name"]);
        }
        tg.stop().await
    }
}

/// Six pods that no budget lets go (minAvailable: all of them).
const HELD: &str = "
  - {kind: Deployment, name: held, replicas: 6, shutdownMs: 200, requests: {cpu: 250m}, pdb: {minAvailable: 6}}
";

/// A Spot warning for `instance` whose two minutes end `left` from now.
fn spot_warning(instance: &str, left: Duration) -> Result<String> {
    let mut v: Value = serde_json::from_str(&event_fixture(
        "eventbridge-spot-interruption-warning.json",
        instance,
    )?)?;
    let time = jiff::Timestamp::now() + jiff::SignedDuration::try_from(left)?
        - jiff::SignedDuration::from_secs(120);
    v["time"] = Value::String(time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    Ok(serde_json::to_string(&v)?)
}

/// A lifecycle drain held by a budget (its hook leaves most of an hour) meets a Spot warning
/// for the same instance: the warning's earlier deadline reaches the running drain, which
/// clips the pods' grace and deletes them past the budget before the two minutes end — on the
/// replica that owns the drain, whichever replica received the warning.
async fn a_spot_warning_during_a_lifecycle_drain_clips_it(
    backend: Backend,
    name: &str,
    other_replica: bool,
) -> Result {
    let mut spec = BedSpec::new(backend, name);
    spec.workloads = HELD;
    let bed = bed(spec).await?;
    let hook = WebhookReceiver::start().await?;
    let a = Termguard::start_with(&bed, "replica-a", |s| {
        s.webhook = Some(hook.config("{\"event\": \"{{event}}\", \"node\": \"{{node}}\"}"))
    })
    .await?;
    let action = scale_in(&bed).await?;
    let instance = s(&action["instance_id"]);
    let node = bed.nodes[&instance].clone();
    let pods = workload_pods_on(&bed, &node).await;
    assert!(!pods.is_empty());
    let blocked = eventually(Duration::from_secs(20), || {
        pods.iter().all(|p| evictions_of(&bed, p) >= 2)
    })
    .await;
    assert!(blocked, "the budget refuses the evictions");

    // The second replica reads its own queue here, so that it, not the owner, gets the warning.
    let (b, spot_queue) = if other_replica {
        let url = bed
            .moto
            .sqs
            .create_queue()
            .queue_name(format!("{name}-spot"))
            .send()
            .await?
            .queue_url()
            .unwrap_or_default()
            .to_string();
        let b =
            Termguard::start_with(&bed, "replica-b", |s| s.queue.queue_url = url.clone()).await?;
        (Some(b), url)
    } else {
        (None, bed.fleet.queue_url.clone())
    };
    let left = Duration::from_secs(if other_replica { 35 } else { 25 });
    let spot_deadline = tokio::time::Instant::now() + left;
    bed.moto
        .send(&spot_queue, &spot_warning(&instance, left)?)
        .await;
    let gone = gone_before(&bed, &node, spot_deadline).await;
    assert!(
        gone,
        "every pod left before the Spot deadline: {:?}",
        workload_pods_on(&bed, &node).await.len()
    );
    for p in &pods {
        assert_eq!(
            bed.cluster.deletes_of(p),
            1,
            "{} deleted past its budget, with a clipped grace",
            p["metadata"]["name"]
        );
    }
    assert_eq!(
        annotation(&bed, &node, "termguard.io/drain-owner")
            .await
            .as_deref(),
        Some("replica-a"),
        "the owner clipped its own drain"
    );
    let ended = bed
        .moto
        .wait_action_ended(&s(&action["token"]), Duration::from_secs(30))
        .await;
    assert_completed_with_continue(&ended);
    // The owner's webhook: the drain started, finished by deleting past the budget at the
    // Spot deadline, and the action was completed at that deadline, not because the pods
    // left gracefully.
    let events = || -> Vec<String> {
        hook.bodies()
            .iter()
            .filter(|b| b["node"] == node.as_str())
            .map(|b| b["event"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let heard = eventually(Duration::from_secs(10), || events().len() >= 3).await;
    assert!(heard, "{:?}", hook.bodies());
    assert_eq!(
        events(),
        ["drain-started", "drain-finished", "completed-at-deadline"]
    );
    if let Some(b) = b {
        b.stop().await?;
    }
    a.stop().await
}

both_backends! {
    async fn a_spot_warning_during_a_lifecycle_drain_clips_it_by_the_spot_deadline(backend) -> Result {
        a_spot_warning_during_a_lifecycle_drain_clips_it(backend, "spot-joins", false).await
    }
}

both_backends! {
    async fn a_spot_warning_on_another_replica_reaches_the_drains_owner(backend) -> Result {
        a_spot_warning_during_a_lifecycle_drain_clips_it(backend, "spot-elsewhere", true).await
    }
}

both_backends! {
    /// Receiving is not chained to draining. With one drain slot, held by a lifecycle drain a
    /// budget blocks: the next lifecycle notice is still received at once — its node cordoned,
    /// its action heartbeating while it waits for the slot — a Spot warning is drained before
    /// its two minutes end without waiting at all, and readiness says termguard is saturated.
    async fn receiving_heartbeats_and_urgent_drains_never_wait_for_a_drain_slot(backend) -> Result {
        let mut spec = BedSpec::new(backend, "slots");
        spec.workloads = HELD;
        let bed = bed(spec).await?;
        let tg = Termguard::start_with(&bed, "replica-a", |s| {
            s.max_concurrent_drains = 1;
            s.saturated_after = Duration::from_secs(2);
        })
        .await?;
        let first = terminate(&bed, 0).await?;
        let node_a = bed.nodes[&s(&first["instance_id"])].clone();
        let held = workload_pods_on(&bed, &node_a).await;
        let blocked = eventually(Duration::from_secs(20), || {
            held.iter().all(|p| evictions_of(&bed, p) >= 1)
        })
        .await;
        assert!(blocked, "the first drain holds the slot, blocked by the budget");

        let second = terminate(&bed, 1).await?;
        let node_b = bed.nodes[&s(&second["instance_id"])].clone();
        let waiting = workload_pods_on(&bed, &node_b).await;
        let cordoned_b = cluster::eventually(Duration::from_secs(10), || cordoned(&bed, &node_b)).await;
        assert!(cordoned_b, "the second notice was received and its node cordoned at once");
        let saturated = eventually(Duration::from_secs(10), || {
            tg.readiness.ready().is_err_and(|e| e.contains("saturated"))
        })
        .await;
        assert!(saturated, "readiness reports saturation: {:?}", tg.readiness.ready());
        for p in &waiting {
            assert_eq!(evictions_of(&bed, p), 0, "the second drain waits for the slot");
        }

        let spot_instance = bed.fleet.instances[2].id.clone();
        let node_c = bed.nodes[&spot_instance].clone();
        let left = Duration::from_secs(25);
        let spot_deadline = tokio::time::Instant::now() + left;
        bed.moto
            .send(&bed.fleet.queue_url, &spot_warning(&spot_instance, left)?)
            .await;
        let gone = gone_before(&bed, &node_c, spot_deadline).await;
        assert!(gone, "the Spot node was drained before its deadline, past the busy slot");

        // The waiting drain's action is kept alive (heartbeat timeout 30 s, one every 15 s).
        let token = s(&second["token"]);
        let beating = cluster::eventually(Duration::from_secs(25), || async {
            bed.moto.lifecycle_actions(&format!("token={token}")).await[0]["heartbeat_count"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        })
        .await;
        assert!(beating, "heartbeats while waiting for a slot");
        let now = bed.moto.lifecycle_actions(&format!("token={token}")).await;
        assert_eq!(now[0]["state"], "waiting", "{}", now[0]);
        tg.stop().await
    }
}

both_backends! {
    /// Auto Scaling throttles heartbeats for a while (six refusals: two of termguard's tries,
    /// each retried by the SDK). The failed heartbeat is tried again within seconds, not a
    /// whole interval later, when the 30 s heartbeat timeout would already have expired the
    /// action into its default result while the pods were still shutting down.
    async fn a_refused_heartbeat_is_retried_within_seconds_and_the_action_never_expires(backend) -> Result {
        let mut spec = BedSpec::new(backend, "hb-retry");
        spec.workloads = "
      - {kind: Deployment, name: slow, replicas: 6, shutdownMs: 34000, requests: {cpu: 250m}, terminationGracePeriodSeconds: 60}
    ";
        let bed = bed(spec).await?;
        bed.moto
            .set_faults(&serde_json::json!({"rules": [{
                "action": "RecordLifecycleActionHeartbeat", "fail_next": 6, "error": "throttling",
            }]}))
            .await;
        let tg = Termguard::start(&bed, "replica-a").await?;
        let action = scale_in(&bed).await?;
        let token = s(&action["token"]);
        let ended = bed.moto.wait_action_ended(&token, Duration::from_secs(90)).await;
        assert_completed_with_continue(&ended);
        assert!(ended["heartbeats_refused"].as_u64() >= Some(6), "{ended}");
        assert!(ended["heartbeat_count"].as_u64() >= Some(1), "{ended}");
        assert!(tg.metric("termguard_heartbeats_total{reason=\"failed\"}") >= 2.0);
        let node = &bed.nodes[&s(&action["instance_id"])];
        assert!(workload_pods_on(&bed, node).await.is_empty());
        tg.stop().await
    }
}

/// Sets the node's boot id, as a kubelet reports it after (re)starting.
async fn set_boot_id(bed: &Bed, node: &str, boot_id: &str) -> Result {
    let api: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(bed.cluster.admin.clone());
    let patch = serde_json::json!({"status": {"nodeInfo": {"bootID": boot_id}}});
    api.patch_status(
        node,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await?;
    Ok(())
}

/// Whether termguard's marks are all gone from the node.
async fn unmarked(bed: &Bed, node: &str) -> bool {
    let n = bed.cluster.node(node).await;
    let tainted = n["spec"]["taints"]
        .as_array()
        .is_some_and(|ts| ts.iter().any(|t| t["key"] == "termguard.io/terminating"));
    let labelled = !n["metadata"]["labels"]
        ["node.kubernetes.io/exclude-from-external-load-balancers"]
        .is_null();
    let annotated = n["metadata"]["annotations"]
        .as_object()
        .is_some_and(|a| a.keys().any(|k| k.starts_with("termguard.io/drain-")));
    n["spec"]["unschedulable"] != true && !tainted && !labelled && !annotated
}

both_backends! {
    /// A Spot instance stopped (not terminated) and started again, a warm-pool return, a new
    /// root volume, a reboot: the instance comes back with a new boot, and termguard undoes
    /// what its drain did — cordon, taint, load-balancer label, progress annotations — instead
    /// of leaving the node out of service for good.
    async fn an_instance_that_comes_back_after_its_drain_is_put_back_in_service(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "comes-back")).await?;
        let instance = bed.fleet.instances[0].id.clone();
        let node = bed.nodes[&instance].clone();
        set_boot_id(&bed, &node, "boot-1").await?;
        let tg = Termguard::start_with(&bed, "replica-a", |s| s.returns_every = Duration::from_millis(500)).await?;
        let mut v: Value = serde_json::from_str(&spot_warning(&instance, Duration::from_secs(120))?)?;
        v["detail"]["instance-action"] = Value::String("stop".into());
        bed.moto.send(&bed.fleet.queue_url, &serde_json::to_string(&v)?).await;
        let drained = cluster::eventually(Duration::from_secs(30), || async {
            annotation(&bed, &node, "termguard.io/drain-phase").await.as_deref() == Some("drained")
        })
        .await;
        assert!(drained, "drained for the stop");
        assert!(cordoned(&bed, &node).await);
        // Still the same boot: nothing is undone.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(cordoned(&bed, &node).await, "not undone while the instance has not come back");

        set_boot_id(&bed, &node, "boot-2").await?;
        let undone = cluster::eventually(Duration::from_secs(15), || unmarked(&bed, &node)).await;
        assert!(undone, "put back in service: {}", bed.cluster.node(&node).await);
        assert_eq!(tg.metric("termguard_nodes_returned_total"), 1.0);

        // A late copy of the same warning (SQS delivers at least once; a backlog or a redrive
        // brings it after the instance is back): acknowledged, and the node is not drained again.
        assert!(wait_queue_empty(&bed, Duration::from_secs(10)).await);
        bed.cluster.reset_counts();
        bed.moto.send(&bed.fleet.queue_url, &serde_json::to_string(&v)?).await;
        assert!(wait_queue_empty(&bed, Duration::from_secs(15)).await, "the late copy is deleted");
        assert!(!cordoned(&bed, &node).await, "not drained again: {}", bed.cluster.node(&node).await);
        assert!(unmarked(&bed, &node).await);
        assert_eq!(bed.cluster.verb_count("evict"), 0, "no pod evicted again");
        assert_eq!(events_about(&bed, &node, "DrainStarted").await?, 1, "one drain");
        tg.stop().await
    }
}

both_backends! {
    /// A rebalance recommendation only cordons, and from the watched Node: one PATCH, no read.
    /// Where the watch shows the node cordoned already, termguard reads it before deciding (an
    /// uncordon may not have reached the watch yet) and writes nothing.
    async fn a_rebalance_recommendation_cordons_from_the_watch_with_one_patch(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "rebalance-cordon")).await?;
        let (open, closed) = (bed.fleet.instances[0].id.clone(), bed.fleet.instances[1].id.clone());
        let (open_node, closed_node) = (bed.nodes[&open].clone(), bed.nodes[&closed].clone());
        let admin: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(bed.cluster.admin.clone());
        admin
            .patch(&closed_node, &kube::api::PatchParams::default(),
                &kube::api::Patch::Strategic(serde_json::json!({"spec": {"unschedulable": true}})))
            .await?;
        // Started after that cordon: its watch's first list has the node cordoned.
        let tg = Termguard::start(&bed, "replica-a").await?;

        bed.cluster.reset_counts();
        for instance in [&open, &closed] {
            bed.moto
                .send(&bed.fleet.queue_url, &event_fixture("eventbridge-rebalance-recommendation.json", instance)?)
                .await;
        }
        assert!(wait_queue_empty(&bed, Duration::from_secs(30)).await, "both messages deleted");
        // Counted before the test's own reads (the simulator counts every client's).
        let counts = bed.cluster.request_counts();
        let count = |verb: &str, node: &str| counts.get(&format!("{verb} /api/v1/nodes/{node}")).copied().unwrap_or(0);
        assert_eq!(count("patch", &open_node), 1, "{counts:?}");
        assert_eq!(count("get", &open_node), 0, "{counts:?}");
        assert_eq!(count("get", &closed_node), 1, "{counts:?}");
        assert_eq!(count("patch", &closed_node), 0, "{counts:?}");
        assert!(cordoned(&bed, &open_node).await);
        assert!(cordoned(&bed, &closed_node).await);
        tg.stop().await
    }
}

both_backends! {
    /// A `stopping` event processed late (a backlog, a dead-letter redrive), for an instance
    /// that has started again since — its kubelet Ready after the event's time — drains
    /// nothing; and an AWS Health update that says a scheduled change is closed undoes the
    /// drain done for it instead of draining again.
    async fn stale_state_changes_and_closed_maintenance_never_drain_a_live_node(backend) -> Result {
        let bed = bed(BedSpec::new(backend, "stale")).await?;
        let tg = Termguard::start(&bed, "replica-a").await?;
        let ids: Vec<String> = bed.nodes.keys().cloned().collect();
        let (late, maint) = (ids[0].clone(), ids[1].clone());
        let mut v: Value = serde_json::from_str(&event_fixture("eventbridge-state-change-stopping.json", &late)?)?;
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
        v["time"] = Value::String(old.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
        bed.moto.send(&bed.fleet.queue_url, &serde_json::to_string(&v)?).await;

        let mut h: Value = serde_json::from_str(&event_fixture("eventbridge-health-scheduled-change-ec2.json", &maint)?)?;
        let start = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(30);
        h["detail"]["startTime"] = Value::String(start.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string());
        bed.moto.send(&bed.fleet.queue_url, &serde_json::to_string(&h)?).await;
        let maint_node = bed.nodes[&maint].clone();
        let drained = cluster::eventually(Duration::from_secs(30), || async {
            annotation(&bed, &maint_node, "termguard.io/drain-phase").await.as_deref() == Some("drained")
        })
        .await;
        assert!(drained, "drained for the upcoming maintenance");
        assert!(wait_queue_empty(&bed, Duration::from_secs(10)).await, "both handled and deleted");
        let late_node = bed.nodes[&late].clone();
        assert!(!cordoned(&bed, &late_node).await, "the stale stopping event drained nothing");
        assert!(
            workload_pods_on(&bed, &late_node).await.iter().all(|p| evictions_of(&bed, p) == 0),
            "no pod of the live node was evicted"
        );

        h["detail"]["statusCode"] = Value::String("closed".into());
        h["id"] = Value::String(format!("closed-{maint}"));
        bed.moto.send(&bed.fleet.queue_url, &serde_json::to_string(&h)?).await;
        let undone = cluster::eventually(Duration::from_secs(15), || unmarked(&bed, &maint_node)).await;
        assert!(undone, "the closed change undid the drain: {}", bed.cluster.node(&maint_node).await);
        assert_eq!(events_about(&bed, &maint_node, "DrainStarted").await?, 1, "not drained again");
        tg.stop().await
    }
}
