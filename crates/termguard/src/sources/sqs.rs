//! Queue mode: long-poll the SQS queue EventBridge (or a lifecycle hook) feeds, hand each
//! message's notices to the [`Handler`], and settle the message by what the handler says.
//!
//! SQS rules this follows (`docs/aws-semantics.md#sqs`): delivery is at-least-once and unordered,
//! so the handler is idempotent; `WaitTimeSeconds` ≤ 20 and `MaxNumberOfMessages` ≤ 10 per call; a
//! message is kept invisible while its work runs with `ChangeMessageVisibility` (each call sets
//! the timeout from now, and the total stays under 12 hours from the receive); a message is
//! deleted only when all its work is done. Messages that cannot be parsed are left alone for
//! the queue's redrive policy (events README: never silently deleted), except well-formed
//! messages of kinds termguard does not act on, which are acknowledged.

use crate::handler::{Disposition, Handler};
use crate::notice::Notice;
use crate::report::metrics::{KindLabels, Metrics};
use crate::sources::parse::{self, ParseError};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

/// SQS's cap on `MaxNumberOfMessages`.
pub const MAX_BATCH: usize = 10;
/// SQS's cap on `WaitTimeSeconds`.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Long polls kept open at once by default: enough that one is always waiting on the queue
/// while the others read their answers, few enough to cost nothing while the queue is empty.
pub const DEFAULT_RECEIVERS: usize = 4;
/// SQS's cap on how long a message can stay invisible after one receive.
pub const MAX_INVISIBLE: Duration = Duration::from_secs(12 * 3600);

/// How the queue is consumed.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The queue.
    pub queue_url: String,
    /// Messages held at once (`--max-in-flight`): received and not yet settled.
    pub max_in_flight: usize,
    /// Long-poll wait per receive (≤ 20 s).
    pub wait_time: Duration,
    /// Visibility timeout set on receive and by every extension.
    pub visibility: Duration,
    /// How often a message being worked on is extended; well under `visibility`.
    pub extend_every: Duration,
    /// On shutdown, make in-flight messages visible at once for another replica.
    pub release_on_shutdown: bool,
    /// How long shutdown waits for in-flight messages to be handed back.
    pub shutdown_grace: Duration,
    /// Long polls kept open at once (`--receivers`).
    pub receivers: usize,
}

impl QueueConfig {
    /// Defaults for a queue: 1000 messages held, 4 receivers with 20 s long polls, 90 s
    /// visibility extended every 30 s.
    pub fn new(queue_url: impl Into<String>) -> Self {
        QueueConfig {
            queue_url: queue_url.into(),
            max_in_flight: 1000,
            wait_time: MAX_WAIT,
            visibility: Duration::from_secs(90),
            extend_every: Duration::from_secs(30),
            release_on_shutdown: true,
            shutdown_grace: Duration::from_secs(10),
            receivers: DEFAULT_RECEIVERS,
        }
    }
}

/// What to do with a message once its notices are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Delete it; `dropped` of its notices were foreign and past their deadline.
    Delete {
        /// Notices dropped as foreign and expired.
        dropped: usize,
    },
    /// Make it visible again for its owner.
    Release,
    /// Leave it to reappear after its visibility timeout (and eventually the redrive policy).
    Keep,
}

impl Settle {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Settle::Delete { .. } => "deleted",
            Settle::Release => "released",
            Settle::Keep => "kept",
        }
    }
}

/// One message's fate from its notices' dispositions: deleted only when every notice is done;
/// any notice that failed keeps it; otherwise a notice that is not ours releases it.
pub fn settle(dispositions: &[Disposition]) -> Settle {
    if dispositions
        .iter()
        .any(|d| matches!(d, Disposition::Keep(_)))
    {
        Settle::Keep
    } else if dispositions
        .iter()
        .any(|d| matches!(d, Disposition::Release(_)))
    {
        Settle::Release
    } else {
        let dropped = dispositions
            .iter()
            .filter(|d| matches!(d, Disposition::Dropped(_)))
            .count();
        Settle::Delete { dropped }
    }
}

/// Visibility timeout when releasing a foreign message: at once the first time; after that a
/// growing delay (1, 2, 4 … 30 s), so that a queue shared with other clusters does not turn into
/// a receive–release loop between their consumers and ours.
pub fn release_delay(receive_count: u32) -> Duration {
    match receive_count {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1u64 << (n - 2).min(5)).min(Duration::from_secs(30)),
    }
}

/// The next visibility timeout for a message received `held` ago, or `None` once SQS's 12-hour
/// limit leaves no room: after that the message reappears and its redelivery resumes the work
/// from the state recorded on the Node.
pub fn next_visibility(held: Duration, wanted: Duration) -> Option<Duration> {
    // A minute of slack: our clock started after SQS's.
    let left = MAX_INVISIBLE.checked_sub(held + Duration::from_secs(60))?;
    let next = wanted.min(left);
    (next >= Duration::from_secs(1)).then_some(next)
}

/// Receive health, for `/readyz`.
#[derive(Debug, Default)]
pub struct QueueHealth {
    last_ok: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    saturated: std::sync::atomic::AtomicBool,
}

impl QueueHealth {
    fn ok(&self) {
        *lock(&self.last_ok) = Some(Instant::now());
        *lock(&self.last_error) = None;
    }

    fn failed(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    /// Ready when a receive succeeded within `within` and a message slot is free: with every
    /// one held, nothing more is received — a Spot warning would wait on the queue.
    pub fn check(&self, within: Duration) -> Result<(), String> {
        if self.saturated.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(
                "saturated: every message slot is held (--max-in-flight); nothing more is received"
                    .into(),
            );
        }
        match *lock(&self.last_ok) {
            Some(at) if at.elapsed() <= within => Ok(()),
            Some(at) => Err(format!(
                "no successful ReceiveMessage for {}s{}",
                at.elapsed().as_secs(),
                lock(&self.last_error)
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )),
            None => Err(lock(&self.last_error)
                .clone()
                .unwrap_or_else(|| "no ReceiveMessage has succeeded yet".into())),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The queue source.
pub struct QueueSource {
    inner: Arc<Inner>,
}

struct Inner {
    sqs: aws_sdk_sqs::Client,
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    config: QueueConfig,
    health: Arc<QueueHealth>,
}

/// One received message, as far as settling it is concerned.
struct Received {
    id: String,
    receipt: String,
    body: String,
    receive_count: u32,
    at: Instant,
}

impl QueueSource {
    /// A source reading `config.queue_url` through `sqs` and handing notices to `handler`.
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        handler: Arc<Handler>,
        metrics: Arc<Metrics>,
        config: QueueConfig,
    ) -> Self {
        QueueSource {
            inner: Arc::new(Inner {
                sqs,
                handler,
                metrics,
                config,
                health: Arc::default(),
            }),
        }
    }

    /// Receive health, for readiness.
    pub fn health(&self) -> Arc<QueueHealth> {
        self.inner.health.clone()
    }

    /// Consumes the queue until `shutdown` turns true; then stops receiving, abandons in-flight
    /// work without deleting anything (handing the messages back if so configured) and returns.
    ///
    /// `config.receivers` long polls run at once, each asking for as many messages (up to 10)
    /// as there are free slots: while one is busy with its answer, the others are already
    /// waiting on the queue, so a message is received as soon as SQS has it. Each message is
    /// handled on a task of its own; a receiver never waits for that work.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) {
        let inner = &self.inner;
        let slots = Arc::new(Semaphore::new(inner.config.max_in_flight.max(1)));
        let receivers = inner.config.receivers.max(1);
        tracing::info!(queue = %inner.config.queue_url, max_in_flight = inner.config.max_in_flight,
            receivers, "consuming the queue");
        let mut sets = futures::future::join_all(
            (0..receivers).map(|n| self.receive_loop(n, slots.clone(), shutdown.clone())),
        )
        .await;
        tracing::info!(
            in_flight = sets.iter().map(JoinSet::len).sum::<usize>(),
            "stopping: no more receives; in-flight messages are handed back undeleted"
        );
        // Every task sees the shutdown too and hands its message back; wait for that, bounded.
        // Dropping the sets aborts whatever is left.
        let handed_back = futures::future::join_all(
            sets.iter_mut()
                .map(|set| async move { while set.join_next().await.is_some() {} }),
        );
        let _ = tokio::time::timeout(inner.config.shutdown_grace, handed_back).await;
    }

    /// One receiver: receives until shutdown, spawning each message's work into the set it
    /// returns (still running).
    async fn receive_loop(
        &self,
        n: usize,
        slots: Arc<Semaphore>,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinSet<()> {
        let inner = &self.inner;
        let mut tasks = JoinSet::new();
        let mut backoff = Duration::from_secs(1);
        let mut first = true;
        loop {
            while tasks.try_join_next().is_some() {}
            inner.health.saturated.store(
                slots.available_permits() == 0,
                std::sync::atomic::Ordering::Relaxed,
            );
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = stopped(&mut shutdown) => break,
            };
            inner
                .health
                .saturated
                .store(false, std::sync::atomic::Ordering::Relaxed);
            let mut permits = vec![permit];
            while permits.len() < MAX_BATCH {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // The first call does not wait, so readiness is known at once.
            let wait = if first {
                Duration::ZERO
            } else {
                inner.config.wait_time.min(MAX_WAIT)
            };
            first = false;
            tracing::debug!(receiver = n, max = permits.len(), ?wait, "ReceiveMessage");
            let received = tokio::select! {
                r = inner.receive(permits.len(), wait) => r,
                _ = stopped(&mut shutdown) => break,
            };
            match received {
                Ok(messages) => {
                    tracing::debug!(receiver = n, count = messages.len(), "received");
                    inner.health.ok();
                    backoff = Duration::from_secs(1);
                    for (message, permit) in messages.into_iter().zip(permits) {
                        let inner = self.inner.clone();
                        let shutdown = shutdown.clone();
                        let span = tracing::info_span!("message", id = %message.id, receives = message.receive_count);
                        tasks.spawn(inner.process(message, permit, shutdown).instrument(span));
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %inner.config.queue_url, receiver = n, error = %e, retry_in = ?backoff, "ReceiveMessage failed");
                    inner.health.failed(e);
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut shutdown) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        tasks
    }
}

impl Inner {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.config.queue_url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs() as i32)
            .visibility_timeout(secs(self.config.visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| crate::aws::sdk::classify_sdk(&e).to_string())?;
        let at = Instant::now();
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receipt = m.receipt_handle()?.to_string();
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    id: m.message_id().unwrap_or("-").to_string(),
                    receipt,
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                    at,
                })
            })
            .collect())
    }

    async fn process(
        self: Arc<Self>,
        msg: Received,
        _permit: OwnedSemaphorePermit,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.metrics.messages_received.inc();
        self.metrics.in_flight.inc();
        let _in_flight = InFlight(&self.metrics);
        tracing::debug!("message received");
        let notices = match parse::parse_all(msg.body.as_bytes()) {
            Ok(n) => n,
            Err(e) => return self.unparseable(&msg, &e).await,
        };
        for n in &notices {
            self.metrics
                .notices
                .get_or_create(&KindLabels {
                    kind: n.kind.label().to_string(),
                    cause: n
                        .cause
                        .as_ref()
                        .map_or("unknown", |c| c.label())
                        .to_string(),
                })
                .inc();
        }
        let work = futures::future::join_all(notices.iter().map(|n| self.handle(n)));
        let (done_tx, done_rx) = watch::channel(false);
        let keeper = self.keep_invisible(&msg, &mut shutdown, done_rx);
        tokio::pin!(keeper);
        let dispositions = tokio::select! {
            d = work => d,
            () = &mut keeper => {
                Metrics::count(&self.metrics.messages_disposed, "abandoned-on-shutdown");
                return;
            }
        };
        // The work is done: stop extending, but let an extension already on the wire finish
        // first — a release (visibility 0) overtaken by it would hide the message again.
        let _ = done_tx.send(true);
        keeper.await;
        let fate = settle(&dispositions);
        tracing::info!(fate = fate.label(), ?dispositions, "message handled");
        Metrics::count(&self.metrics.messages_disposed, fate.label());
        match fate {
            Settle::Delete { dropped } => {
                for _ in 0..dropped {
                    self.metrics.foreign_expired.inc();
                }
                self.delete(&msg).await;
            }
            Settle::Release => {
                self.change_visibility(&msg, release_delay(msg.receive_count))
                    .await
            }
            Settle::Keep => {}
        }
    }

    async fn handle(&self, notice: &Notice) -> Disposition {
        self.handler.handle(notice).await
    }

    async fn unparseable(&self, msg: &Received, e: &ParseError) {
        if e.is_not_actionable() {
            tracing::info!(error = e.label(), detail = %e, "message of a kind termguard does not act on: acknowledged");
            Metrics::count(&self.metrics.messages_disposed, "not-actionable");
            self.delete(msg).await;
        } else {
            // Never deleted, never a crash: the queue's redrive policy moves it aside.
            tracing::warn!(error = e.label(), detail = %e, "malformed message left on the queue");
            Metrics::count(&self.metrics.messages_invalid, e.label());
        }
    }

    /// Extends the message's invisibility for as long as the work runs. Returns on `done`
    /// (between requests, never cutting one off) or on shutdown, once the message has been
    /// handed back (when configured to). Extending and handing back are one sequence of
    /// requests: a hand-back raced by an extension still on the wire could reach SQS first and
    /// leave the message hidden for a whole visibility timeout.
    async fn keep_invisible(
        &self,
        msg: &Received,
        shutdown: &mut watch::Receiver<bool>,
        mut done: watch::Receiver<bool>,
    ) {
        let mut limit_reached = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.extend_every), if !limit_reached => {}
                _ = done.wait_for(|d| *d) => return,
                _ = stopped(shutdown) => break,
            }
            match next_visibility(msg.at.elapsed(), self.config.visibility) {
                Some(next) => self.change_visibility(msg, next).await,
                None => {
                    tracing::warn!("the message reached SQS's 12-hour visibility limit; it will reappear and its work resume from the Node's state");
                    limit_reached = true;
                }
            }
        }
        if self.config.release_on_shutdown {
            self.change_visibility(msg, Duration::ZERO).await;
        }
    }

    async fn change_visibility(&self, msg: &Received, to: Duration) {
        let r = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.config.queue_url)
            .receipt_handle(&msg.receipt)
            .visibility_timeout(secs(to))
            .send()
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %crate::aws::sdk::classify_sdk(&e), visibility = ?to, "ChangeMessageVisibility failed");
        }
    }

    async fn delete(&self, msg: &Received) {
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=3 {
            let r = self
                .sqs
                .delete_message()
                .queue_url(&self.config.queue_url)
                .receipt_handle(&msg.receipt)
                .send()
                .await;
            match r {
                Ok(_) => return,
                Err(e) => {
                    let e = crate::aws::sdk::classify_sdk(&e);
                    tracing::warn!(error = %e, attempt, "DeleteMessage failed");
                    if !matches!(e, crate::aws::LifecycleError::Retryable(_)) {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        // The message reappears; its work is idempotent and is found done.
        Metrics::count(&self.metrics.messages_disposed, "delete-failed");
    }
}

struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> Disposition {
        Disposition::Done("done".into())
    }

    #[test]
    fn a_message_is_deleted_only_when_every_notice_is_done() {
        assert_eq!(settle(&[done(), done()]), Settle::Delete { dropped: 0 });
        assert_eq!(
            settle(&[done(), Disposition::Keep("api".into())]),
            Settle::Keep
        );
        assert_eq!(
            settle(&[done(), Disposition::Release("foreign".into())]),
            Settle::Release
        );
        assert_eq!(
            settle(&[
                Disposition::Release("foreign".into()),
                Disposition::Keep("api".into())
            ]),
            Settle::Keep
        );
        assert_eq!(
            settle(&[done(), Disposition::Dropped("expired".into())]),
            Settle::Delete { dropped: 1 }
        );
    }

    #[test]
    fn released_messages_come_back_later_each_time() {
        assert_eq!(release_delay(1), Duration::ZERO);
        assert_eq!(release_delay(2), Duration::from_secs(1));
        assert_eq!(release_delay(3), Duration::from_secs(2));
        assert_eq!(release_delay(7), Duration::from_secs(30));
        assert_eq!(release_delay(1000), Duration::from_secs(30));
    }

    #[test]
    fn visibility_extensions_stay_within_twelve_hours_of_the_receive() {
        let ninety = Duration::from_secs(90);
        assert_eq!(
            next_visibility(Duration::from_secs(30), ninety),
            Some(ninety)
        );
        let late = MAX_INVISIBLE - Duration::from_secs(100);
        assert_eq!(next_visibility(late, ninety), Some(Duration::from_secs(40)));
        assert_eq!(
            next_visibility(MAX_INVISIBLE - Duration::from_secs(60), ninety),
            None
        );
        assert_eq!(next_visibility(MAX_INVISIBLE * 2, ninety), None);
    }

    #[test]
    fn readiness_needs_a_recent_receive_and_a_free_message_slot() {
        let h = QueueHealth::default();
        assert!(h.check(Duration::from_secs(60)).is_err());
        h.failed("AccessDenied".into());
        assert_eq!(h.check(Duration::from_secs(60)), Err("AccessDenied".into()));
        h.ok();
        assert!(h.check(Duration::from_secs(60)).is_ok());
        assert!(h.check(Duration::ZERO).is_err());
        h.saturated
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(h.check(Duration::from_secs(60)).is_err());
    }
}
