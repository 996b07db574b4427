//! Webhook notifications (`--webhook-url`): a JSON POST when a drain starts, finishes or times
//! out, and when a lifecycle action is completed at its deadline rather than because its pods
//! were gone. Slack-compatible by default (`{"text": …}`, [incoming webhooks](https://api.slack.com/messaging/webhooks));
//! `--webhook-template` gives the body.
//!
//! Sending never holds up a drain: notifications go through a bounded queue to one task that
//! posts them, each with a few tries. A notification that cannot be delivered is logged and
//! counted (`termguard_webhooks_total{reason="failed"|"dropped"}`), and the drain goes on.

use super::metrics::Metrics;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Notifications waiting to be sent at most; more are dropped (and counted).
const QUEUE: usize = 1024;

/// Tries per notification.
const TRIES: u32 = 3;

/// Bound of one POST.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The Slack-compatible default body.
pub const DEFAULT_TEMPLATE: &str = r#"{"text": "{{text}}"}"#;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum NotifyEvent {
    /// A drain started (this replica leads it).
    DrainStarted,
    /// A drain ended with its pods gone.
    DrainFinished,
    /// A drain reached its deadline: the pods left were deleted with a clipped grace period.
    DrainTimedOut,
    /// A drain failed or was refused.
    DrainFailed,
    /// A lifecycle action was completed at its deadline, not because the node was drained.
    CompletedAtDeadline,
}

impl NotifyEvent {
    /// The kebab-case name, as `{{event}}` and `--webhook-events` give it.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::DrainStarted => "drain-started",
            NotifyEvent::DrainFinished => "drain-finished",
            NotifyEvent::DrainTimedOut => "drain-timed-out",
            NotifyEvent::DrainFailed => "drain-failed",
            NotifyEvent::CompletedAtDeadline => "completed-at-deadline",
        }
    }

    /// Every event.
    pub const ALL: [NotifyEvent; 5] = [
        NotifyEvent::DrainStarted,
        NotifyEvent::DrainFinished,
        NotifyEvent::DrainTimedOut,
        NotifyEvent::DrainFailed,
        NotifyEvent::CompletedAtDeadline,
    ];
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// What happened.
    pub event: NotifyEvent,
    /// The node.
    pub node: String,
    /// What termguard says of it, in one line (the Kubernetes Event's note).
    pub detail: String,
}

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The URL POSTed to.
    pub url: http::Uri,
    /// The body, with `{{event}}`, `{{node}}`, `{{detail}}`, `{{cluster}}`, `{{identity}}`
    /// and `{{text}}` (a sentence made of them) replaced by their JSON-escaped values.
    pub template: String,
    /// The events sent.
    pub events: Vec<NotifyEvent>,
    /// The cluster's name, for `{{cluster}}`.
    pub cluster: String,
    /// This replica, for `{{identity}}`.
    pub identity: String,
}

impl WebhookConfig {
    /// The body of `n`.
    pub fn render(&self, n: &Notification) -> String {
        let text = format!(
            "termguard{}: {} on node {}: {}",
            if self.cluster.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.cluster)
            },
            n.event.as_str(),
            n.node,
            n.detail
        );
        let esc = |s: &str| {
            let quoted = serde_json::Value::String(s.to_string()).to_string();
            quoted[1..quoted.len() - 1].to_string()
        };
        self.template
            .replace("{{event}}", n.event.as_str())
            .replace("{{node}}", &esc(&n.node))
            .replace("{{detail}}", &esc(&n.detail))
            .replace("{{cluster}}", &esc(&self.cluster))
            .replace("{{identity}}", &esc(&self.identity))
            .replace("{{text}}", &esc(&text))
    }
}

/// Sends notifications; cheap to clone. Without a webhook, it does nothing.
#[derive(Clone, Default)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Notification>>,
    events: Vec<NotifyEvent>,
    metrics: Option<Arc<Metrics>>,
}

impl Notifier {
    /// A notifier posting to `config`'s URL from a task of its own; `None` sends nothing.
    pub fn start(config: Option<WebhookConfig>, metrics: Arc<Metrics>) -> Notifier {
        let Some(config) = config else {
            return Notifier::default();
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let events = config.events.clone();
        tokio::spawn(post_all(config, rx, metrics.clone()));
        Notifier {
            tx: Some(tx),
            events,
            metrics: Some(metrics),
        }
    }

    /// Queues `n` when its event is one to send; never waits.
    pub fn notify(&self, n: Notification) {
        let Some(tx) = &self.tx else {
            return;
        };
        if !self.events.contains(&n.event) {
            return;
        }
        if let Err(e) = tx.try_send(n) {
            tracing::warn!(error = %e, "webhook queue full: notification dropped");
            if let Some(m) = &self.metrics {
                Metrics::count(&m.webhooks, "dropped");
            }
        }
    }
}

async fn post_all(config: WebhookConfig, mut rx: mpsc::Receiver<Notification>, m: Arc<Metrics>) {
    let https = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b.https_or_http().enable_http1().build(),
        Err(e) => {
            tracing::error!(error = %e, "no TLS roots for webhooks; notifications are not sent");
            while rx.recv().await.is_some() {
                Metrics::count(&m.webhooks, "failed");
            }
            return;
        }
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    while let Some(n) = rx.recv().await {
        let body = config.render(&n);
        let mut delay = Duration::from_secs(1);
        let mut tries = 0;
        loop {
            tries += 1;
            match post(&client, &config.url, &body).await {
                Ok(()) => {
                    Metrics::count(&m.webhooks, "sent");
                    tracing::debug!(event = n.event.as_str(), node = %n.node, "webhook sent");
                    break;
                }
                Err(e) if tries < TRIES => {
                    tracing::warn!(event = n.event.as_str(), node = %n.node, error = %e, retry_in = ?delay, "webhook failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::warn!(event = n.event.as_str(), node = %n.node, error = %e, tries, "webhook failed; notification not sent");
                    Metrics::count(&m.webhooks, "failed");
                    break;
                }
            }
        }
    }
}

async fn post<C>(client: &Client<C, Full<Bytes>>, url: &http::Uri, body: &str) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let req = http::Request::post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("termguard/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(POST_TIMEOUT, client.request(req))
        .await
        .map_err(|_| format!("no answer within {POST_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read the answer to the end so the connection can be reused.
    let _ = tokio::time::timeout(POST_TIMEOUT, resp.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(template: &str) -> WebhookConfig {
        WebhookConfig {
            url: http::Uri::from_static("http://127.0.0.1:9/hook"),
            template: template.into(),
            events: NotifyEvent::ALL.to_vec(),
            cluster: "prod".into(),
            identity: "termguard-0".into(),
        }
    }

    #[test]
    fn the_default_body_is_slack_text_and_values_are_json_escaped() {
        let n = Notification {
            event: NotifyEvent::DrainStarted,
            node: "ip-10-0-1-10".into(),
            detail: "draining 3 pods; cause \"AZRebalance\"".into(),
        };
        let body: serde_json::Value =
            serde_json::from_str(&config(DEFAULT_TEMPLATE).render(&n)).unwrap_or_default();
        assert_eq!(
            body["text"],
            "termguard (prod): drain-started on node ip-10-0-1-10: draining 3 pods; cause \"AZRebalance\""
        );
        let custom = config(
            r#"{"event": "{{event}}", "node": "{{node}}", "who": "{{identity}}", "why": "{{detail}}"}"#,
        );
        let body: serde_json::Value = serde_json::from_str(&custom.render(&n)).unwrap_or_default();
        assert_eq!(body["event"], "drain-started");
        assert_eq!(body["who"], "termguard-0");
        assert_eq!(body["why"], "draining 3 pods; cause \"AZRebalance\"");
    }
}
