//! `termguard run`: queue mode wired together — the node cache, the drain engine (with
//! Events), the Auto Scaling clients, the handler, the SQS source, and the health/metrics
//! server — until SIGTERM/SIGINT.

use super::{identity, kube_client, shutdown_signal};
use crate::aws::activity::SdkActivities;
use crate::aws::groups::{ClusterTags, SdkGroups};
use crate::aws::lifecycle::SdkLifecycle;
use crate::cli::RunArgs;
use crate::cluster::drain::{Backoff, DrainSlots, Drainer, PodAction, Progress};
use crate::cluster::events::{Events, Reason};
use crate::cluster::index::NodeIndex;
use crate::handler::{Handler, HandlerConfig};
use crate::report::health::{self, Readiness};
use crate::report::metrics::Metrics;
use crate::report::notify::{Notification, Notifier, NotifyEvent, WebhookConfig, DEFAULT_TEMPLATE};
use crate::sources::sqs::{QueueConfig, QueueHealth, QueueSource};
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long startup waits for the first full list of Nodes before giving up.
const NODE_SYNC_TIMEOUT: Duration = Duration::from_secs(120);

/// What queue mode is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The handler's knobs.
    pub handler: HandlerConfig,
    /// How the queue is consumed.
    pub queue: QueueConfig,
    /// The tags that mark a group as this cluster's.
    pub cluster: ClusterTags,
    /// This replica's identity (the drain owner recorded on Nodes).
    pub identity: String,
    /// Publish Kubernetes Events.
    pub events: bool,
    /// Backoff of PDB-blocked evictions; the engine's default when `None`.
    pub eviction_backoff: Option<Backoff>,
    /// Drains evicting at once (`--max-concurrent-drains`); urgent ones never wait.
    pub max_concurrent_drains: usize,
    /// How long a drain may wait for a slot before readiness reports saturation.
    pub saturated_after: Duration,
    /// How often nodes are checked for instances that came back after their drain.
    pub returns_every: Duration,
    /// Webhook notifications (`--webhook-url`), if any.
    pub webhook: Option<WebhookConfig>,
}

impl Settings {
    /// Defaults for a queue.
    pub fn new(queue_url: impl Into<String>, identity: impl Into<String>) -> Self {
        Settings {
            handler: HandlerConfig::default(),
            queue: QueueConfig::new(queue_url),
            cluster: ClusterTags::default(),
            identity: identity.into(),
            events: true,
            eviction_backoff: None,
            max_concurrent_drains: 50,
            saturated_after: Duration::from_secs(60),
            returns_every: Duration::from_secs(10),
            webhook: None,
        }
    }
}

/// Queue mode, assembled: used by `termguard run` and by the tests, which run it in-process.
pub struct QueueMode {
    /// The handler.
    pub handler: Arc<Handler>,
    /// The node cache.
    pub nodes: NodeIndex,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The drain slots.
    pub slots: DrainSlots,
    saturated_after: Duration,
    returns_every: Duration,
    source: QueueSource,
}

impl QueueMode {
    /// Builds everything over a Kubernetes client and an AWS SDK configuration.
    pub fn new(client: kube::Client, aws: &aws_config::SdkConfig, settings: Settings) -> Self {
        let nodes = NodeIndex::start(client.clone());
        let metrics = Arc::new(Metrics::default());
        let notifier = Notifier::start(settings.webhook.clone(), metrics.clone());
        let counted = metrics.clone();
        let observed = notifier.clone();
        let mut drainer = Drainer::new(client.clone(), &settings.identity)
            .with_progress(move |p| {
                log_progress(p);
                count_eviction(&counted, p);
            })
            .with_observer(move |node, reason, note| {
                let event = match reason {
                    Reason::DrainStarted => NotifyEvent::DrainStarted,
                    Reason::DrainCompleted => NotifyEvent::DrainFinished,
                    Reason::DrainTimedOut => NotifyEvent::DrainTimedOut,
                    _ => NotifyEvent::DrainFailed,
                };
                observed.notify(Notification {
                    event,
                    node: node.to_string(),
                    detail: note.to_string(),
                });
            });
        if settings.events {
            drainer = drainer.with_events(Events::new(client.clone(), &settings.identity));
        }
        if let Some(b) = settings.eviction_backoff {
            drainer = drainer.with_backoff(b);
        }
        let slots = DrainSlots::new(settings.max_concurrent_drains);
        drainer = drainer
            .with_slots(slots.clone())
            .with_node_index(nodes.clone());
        let asg = aws_sdk_autoscaling::Client::new(aws);
        let handler = Handler::new(
            drainer,
            nodes.clone(),
            client,
            Arc::new(SdkLifecycle::new(asg.clone())),
            Arc::new(SdkActivities::new(asg.clone())),
            Arc::new(SdkGroups::new(asg, settings.cluster)),
            settings.handler,
        );
        handler.set_metrics(metrics.clone());
        handler.set_notifier(notifier);
        let source = QueueSource::new(
            aws_sdk_sqs::Client::new(aws),
            handler.clone(),
            metrics.clone(),
            settings.queue,
        );
        QueueMode {
            handler,
            nodes,
            metrics,
            slots,
            saturated_after: settings.saturated_after,
            returns_every: settings.returns_every,
            source,
        }
    }

    /// What `/readyz` reports: the node cache is synced, the queue answers, and termguard is
    /// not saturated (every message slot held, or drains waiting long for a drain slot).
    pub fn readiness(&self) -> Arc<dyn Readiness> {
        Arc::new(QueueReadiness {
            nodes: self.nodes.clone(),
            queue: self.source.health(),
            slots: self.slots.clone(),
            saturated_after: self.saturated_after,
        })
    }

    /// Waits for the node cache, then consumes the queue until `shutdown` turns true. No
    /// message is received before the cache is synced: every instance would look foreign.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        tokio::select! {
            r = tokio::time::timeout(NODE_SYNC_TIMEOUT, self.nodes.ready()) => {
                r.context("the node cache did not sync (is the cluster reachable, may we list/watch nodes?)")?;
            }
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
        tracing::info!("node cache synced");
        let returns = tokio::spawn(
            self.handler
                .clone()
                .undo_returned(self.returns_every, shutdown.clone()),
        );
        self.source.run(shutdown).await;
        returns.abort();
        Ok(())
    }
}

/// The time a successful receive stays good for readiness: two long polls and a timeout.
const RECEIVE_FRESH: Duration = Duration::from_secs(2 * 20 + 30);

struct QueueReadiness {
    nodes: NodeIndex,
    queue: Arc<QueueHealth>,
    slots: DrainSlots,
    saturated_after: Duration,
}

impl Readiness for QueueReadiness {
    fn ready(&self) -> Result<(), String> {
        if !self.nodes.is_ready() {
            return Err("the node cache has not synced yet".into());
        }
        if let Some(waited) = self
            .slots
            .longest_wait()
            .filter(|w| *w >= self.saturated_after)
        {
            return Err(format!(
                "saturated: {} drains wait for one of {} drain slots, the longest for {}s (--max-concurrent-drains)",
                self.slots.waiting(),
                self.slots.size(),
                waited.as_secs()
            ));
        }
        self.queue
            .check(RECEIVE_FRESH)
            .map_err(|e| format!("queue: {e}"))
    }
}

/// Counts how pods leave drained nodes, and refused or failed evictions.
fn count_eviction(m: &Metrics, p: &Progress) {
    let label = match p {
        Progress::Gone { action, .. } => match action {
            PodAction::Evicted => "evicted",
            PodAction::Deleted => "deleted",
            PodAction::DeletedClipped => "deleted-clipped",
            PodAction::AlreadyTerminating => "already-terminating",
            PodAction::AlreadyGone => "already-gone",
            PodAction::Remained => "remained",
        },
        Progress::Blocked { .. } => "blocked",
        Progress::PodFailed { .. } => "failed",
        _ => return,
    };
    Metrics::count(&m.evictions, label);
}

fn log_progress(p: &Progress) {
    match p {
        Progress::Evicting(pod) => tracing::debug!(%pod, "evicting"),
        Progress::Gone { pod, action } => tracing::debug!(%pod, ?action, "pod gone"),
        Progress::Blocked { message, .. } => tracing::info!("{message}"),
        Progress::PodFailed { pod, error } => tracing::warn!(%pod, %error, "eviction failed"),
        Progress::Warning(w) => tracing::warn!("{w}"),
        Progress::Resuming => tracing::info!("resuming an unfinished drain"),
        Progress::Following { owner } => {
            tracing::info!(%owner, "another replica is draining this node; following it")
        }
        Progress::Cordoned { .. } | Progress::WaveStarted { .. } => {}
    }
}

/// Runs `termguard run`; returns the exit code.
pub async fn run(args: &RunArgs) -> anyhow::Result<i32> {
    let cluster = ClusterTags::new(
        args.cluster_name.as_deref(),
        args.managed_asg_tag.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    if cluster.is_configured() {
        tracing::info!(tags = %cluster, "this cluster's Auto Scaling groups are the ones tagged");
    } else {
        tracing::warn!("no --cluster-name: lifecycle actions of instances that are not nodes here are left for their owner, never completed");
    }
    let client = kube_client(&args.kube).await?;
    let aws = crate::aws::sdk::config_loader().load().await;
    let mut settings = Settings::new(&args.queue_url, identity());
    settings.handler.drain.own_pod = super::own_pod(|k| std::env::var(k).ok());
    if let Some(me) = &settings.handler.drain.own_pod {
        tracing::info!(pod = %me, "running in a pod: its own drain never evicts it");
    }
    settings.handler.drain_on_rebalance = args.drain_on_rebalance;
    settings.handler.complete_launch = args.complete_launch;
    settings.handler.launch_timeout = args.launch_timeout;
    settings.handler.margin = args.deadline_margin;
    settings.queue.max_in_flight = args.max_in_flight.max(1);
    settings.queue.receivers = args.receivers.clamp(1, 64);
    settings.max_concurrent_drains = args.max_concurrent_drains.max(1);
    settings.queue.visibility = args.visibility_timeout.max(Duration::from_secs(10));
    settings.queue.extend_every = settings.queue.visibility / 3;
    settings.cluster = cluster;
    settings.events = !args.no_events;
    if let Some(url) = &args.webhook_url {
        let template = match &args.webhook_template {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the webhook template {}", path.display()))?,
            None => DEFAULT_TEMPLATE.to_string(),
        };
        settings.webhook = Some(WebhookConfig {
            url: url.clone(),
            template,
            events: if args.webhook_events.is_empty() {
                NotifyEvent::ALL.to_vec()
            } else {
                args.webhook_events.clone()
            },
            cluster: args.cluster_name.clone().unwrap_or_default(),
            identity: settings.identity.clone(),
        });
        tracing::info!(url = %url, "webhook notifications on");
    }
    let mode = QueueMode::new(client, &aws, settings);

    let listener = tokio::net::TcpListener::bind(args.health_listen)
        .await
        .with_context(|| format!("listening on {}", args.health_listen))?;
    tracing::info!(addr = %args.health_listen, "serving /healthz, /readyz and /metrics");
    let server = tokio::spawn(health::serve(
        listener,
        mode.metrics.clone(),
        mode.readiness(),
    ));

    let (stop, shutdown) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop.send(true);
    });
    let result = mode.run(shutdown).await;
    signal.abort();
    server.abort();
    result.map(|()| 0)
}
