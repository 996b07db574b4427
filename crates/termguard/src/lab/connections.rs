//! The connection model of the incident: async worker threads each hold a connection to
//! PostgreSQL through a pgbouncer pod and take jobs from a queue.
//!
//! * A pooler stopped gracefully (SIGTERM) lets in-flight queries finish and closes its
//!   client connections; clients reconnect to another replica after a short delay.
//! * A pooler whose node vanished leaves its connections hanging: with no TCP keepalive and
//!   no statement timeout, a thread that sends a query on one blocks forever — the symptom of
//!   the incident. `client_timeout` models what an application-level timeout would do: the
//!   query fails after the timeout and the thread reconnects.
//! * A worker pod stopped gracefully finishes its jobs; one killed with its node loses them.

use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// Model parameters.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Threads per worker pod.
    pub threads_per_worker: usize,
    /// Time one job spends in the database.
    pub job: Duration,
    /// Mean time between job arrivals.
    pub arrival_every: Duration,
    /// Delay before a client reconnects after its connection was closed.
    pub reconnect: Duration,
    /// Application-level query timeout; `None` = block forever on a dead connection.
    pub client_timeout: Option<Duration>,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            threads_per_worker: 4,
            job: Duration::from_millis(100),
            arrival_every: Duration::from_millis(6),
            reconnect: Duration::from_millis(200),
            client_timeout: None,
        }
    }
}

/// What the model sees of the cluster at one instant.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Ready, not terminating pooler pods (uid).
    pub poolers_ready: Vec<String>,
    /// Pooler pods whose node vanished under them (uid): their connections hang.
    pub poolers_dead: HashSet<String>,
    /// Pooler pods present in the API (uid), in whatever state.
    pub poolers_present: HashSet<String>,
    /// Ready, not terminating worker pods (uid).
    pub workers_ready: Vec<String>,
    /// Worker pods told to stop gracefully (uid).
    pub workers_terminating: HashSet<String>,
    /// Worker pods that died with their node (uid).
    pub workers_dead: HashSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum ThreadState {
    Idle,
    Busy { until: Instant },
    Stuck { since: Instant },
    Reconnecting { until: Instant },
}

#[derive(Debug, Clone)]
struct Thread {
    worker: String,
    pooler: Option<String>,
    state: ThreadState,
}

/// Counters of the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnStats {
    /// Threads blocked on a dead connection right now.
    pub stalled_threads: usize,
    /// Jobs waiting in the queue.
    pub jobs_waiting: u64,
    /// Jobs that failed (connection reset, timeout, worker killed).
    pub failed_jobs: u64,
    /// Jobs completed.
    pub completed_jobs: u64,
    /// Live threads.
    pub threads: usize,
}

/// The model's state.
pub struct ConnModel {
    cfg: ConnConfig,
    rng: fastrand::Rng,
    threads: Vec<Thread>,
    known_workers: HashSet<String>,
    queue: u64,
    failed: u64,
    completed: u64,
    next_arrival: Instant,
}

impl ConnModel {
    /// A model seeded for repeatability.
    pub fn new(cfg: ConnConfig, seed: u64) -> Self {
        ConnModel {
            cfg,
            rng: fastrand::Rng::with_seed(seed),
            threads: Vec::new(),
            known_workers: HashSet::new(),
            queue: 0,
            failed: 0,
            completed: 0,
            next_arrival: Instant::now(),
        }
    }

    fn pick_pooler(&mut self, snap: &Snapshot) -> Option<String> {
        if snap.poolers_ready.is_empty() {
            return None;
        }
        let i = self.rng.usize(..snap.poolers_ready.len());
        Some(snap.poolers_ready[i].clone())
    }

    /// Advances the model to `now` against the cluster snapshot.
    pub fn tick(&mut self, now: Instant, snap: &Snapshot) {
        // Job arrivals (exponential inter-arrival times).
        while self.next_arrival <= now {
            self.queue += 1;
            let mean = self.cfg.arrival_every.as_secs_f64();
            let gap = -mean * (1.0 - self.rng.f64()).ln();
            self.next_arrival += Duration::from_secs_f64(gap.max(1e-6));
        }
        // New worker pods start their threads, which connect first.
        for w in &snap.workers_ready {
            if self.known_workers.insert(w.clone()) {
                for _ in 0..self.cfg.threads_per_worker {
                    self.threads.push(Thread {
                        worker: w.clone(),
                        pooler: None,
                        state: ThreadState::Reconnecting { until: now },
                    });
                }
            }
        }
        let mut threads = std::mem::take(&mut self.threads);
        let ready_workers: HashSet<&String> = snap.workers_ready.iter().collect();
        threads.retain_mut(|t| {
            let busy = matches!(
                t.state,
                ThreadState::Busy { .. } | ThreadState::Stuck { .. }
            );
            if snap.workers_dead.contains(&t.worker) {
                // Killed with its node: whatever it was doing is lost.
                if busy {
                    self.failed += 1;
                }
                return false;
            }
            let terminating = snap.workers_terminating.contains(&t.worker);
            let gone = !terminating && !ready_workers.contains(&t.worker);
            if gone {
                // The pod is gone (SIGKILL after its grace period if a thread was stuck).
                if busy {
                    self.failed += 1;
                }
                return false;
            }
            true
        });
        for t in threads.iter_mut() {
            let terminating = snap.workers_terminating.contains(&t.worker);
            let pooler_dead = t
                .pooler
                .as_ref()
                .is_some_and(|p| snap.poolers_dead.contains(p));
            let pooler_closed = t.pooler.as_ref().is_some_and(|p| {
                !snap.poolers_present.contains(p) && !snap.poolers_dead.contains(p)
            }) || t.pooler.as_ref().is_some_and(|p| {
                snap.poolers_present.contains(p)
                    && !snap.poolers_ready.contains(p)
                    && !snap.poolers_dead.contains(p)
            });
            match t.state.clone() {
                ThreadState::Busy { until } => {
                    if pooler_dead {
                        t.state = ThreadState::Stuck { since: now };
                    } else if until <= now {
                        self.completed += 1;
                        t.state = ThreadState::Idle;
                    }
                }
                ThreadState::Stuck { since } => {
                    if let Some(limit) = self.cfg.client_timeout {
                        if now.duration_since(since) >= limit {
                            self.failed += 1;
                            t.pooler = None;
                            t.state = ThreadState::Reconnecting {
                                until: now + self.cfg.reconnect,
                            };
                        }
                    }
                }
                ThreadState::Reconnecting { until } => {
                    if until <= now && !terminating {
                        if let Some(p) = self.pick_pooler(snap) {
                            t.pooler = Some(p);
                            t.state = ThreadState::Idle;
                        }
                    }
                }
                ThreadState::Idle => {}
            }
            if t.state == ThreadState::Idle {
                if pooler_closed {
                    // The pooler closed the connection on its graceful stop: reconnect.
                    t.pooler = None;
                    t.state = ThreadState::Reconnecting {
                        until: now + self.cfg.reconnect,
                    };
                } else if !terminating && self.queue > 0 {
                    self.queue -= 1;
                    t.state = if pooler_dead {
                        // The query goes out on a connection nobody answers.
                        ThreadState::Stuck { since: now }
                    } else {
                        ThreadState::Busy {
                            until: now + self.cfg.job,
                        }
                    };
                }
            }
        }
        // Threads of a gracefully stopping worker leave once idle.
        threads.retain(|t| {
            !(snap.workers_terminating.contains(&t.worker)
                && matches!(
                    t.state,
                    ThreadState::Idle | ThreadState::Reconnecting { .. }
                ))
        });
        self.threads = threads;
    }

    /// Current counters.
    pub fn stats(&self) -> ConnStats {
        ConnStats {
            stalled_threads: self
                .threads
                .iter()
                .filter(|t| matches!(t.state, ThreadState::Stuck { .. }))
                .count(),
            jobs_waiting: self.queue,
            failed_jobs: self.failed,
            completed_jobs: self.completed,
            threads: self.threads.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(poolers: &[&str], workers: &[&str]) -> Snapshot {
        Snapshot {
            poolers_ready: poolers.iter().map(|s| s.to_string()).collect(),
            poolers_present: poolers.iter().map(|s| s.to_string()).collect(),
            workers_ready: workers.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn run(model: &mut ConnModel, s: &Snapshot, from: Instant, steps: u32) -> Instant {
        let mut t = from;
        for _ in 0..steps {
            t += Duration::from_millis(20);
            model.tick(t, s);
        }
        t
    }

    #[test]
    fn a_vanished_pooler_leaves_threads_stuck_forever_without_a_client_timeout() {
        let mut m = ConnModel::new(ConnConfig::default(), 1);
        let start = Instant::now();
        let s = snap(&["p1", "p2"], &["w1", "w2"]);
        let t = run(&mut m, &s, start, 50);
        assert_eq!(m.stats().stalled_threads, 0);
        let mut lost = snap(&["p2"], &["w1", "w2"]);
        lost.poolers_dead.insert("p1".into());
        lost.poolers_present.insert("p1".into());
        run(&mut m, &lost, t, 500);
        assert!(m.stats().stalled_threads > 0, "{:?}", m.stats());
    }

    #[test]
    fn a_client_timeout_turns_stuck_threads_into_failed_jobs() {
        let cfg = ConnConfig {
            client_timeout: Some(Duration::from_millis(500)),
            ..ConnConfig::default()
        };
        let mut m = ConnModel::new(cfg, 1);
        let start = Instant::now();
        let t = run(&mut m, &snap(&["p1", "p2"], &["w1", "w2"]), start, 50);
        let mut lost = snap(&["p2"], &["w1", "w2"]);
        lost.poolers_dead.insert("p1".into());
        lost.poolers_present.insert("p1".into());
        run(&mut m, &lost, t, 500);
        assert_eq!(m.stats().stalled_threads, 0);
        assert!(m.stats().failed_jobs > 0);
    }

    #[test]
    fn a_graceful_pooler_stop_costs_no_job() {
        let mut m = ConnModel::new(ConnConfig::default(), 7);
        let start = Instant::now();
        let t = run(&mut m, &snap(&["p1", "p2"], &["w1", "w2"]), start, 50);
        // p1 stops gracefully and goes away; p3 replaces it.
        run(&mut m, &snap(&["p2", "p3"], &["w1", "w2"]), t, 300);
        let st = m.stats();
        assert_eq!(st.stalled_threads, 0);
        assert_eq!(st.failed_jobs, 0);
        assert!(st.completed_jobs > 0);
    }
}
