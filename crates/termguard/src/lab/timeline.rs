//! The lab's timeline: what happened when, printed as it goes.

use std::sync::Mutex;
use tokio::time::Instant;

/// Timestamped lines since the start of a run.
pub struct Timeline {
    start: Instant,
    lines: Mutex<Vec<(f64, String)>>,
    echo: bool,
}

impl Timeline {
    /// A timeline starting now; `echo` prints each line as it is logged.
    pub fn new(echo: bool) -> Self {
        Timeline {
            start: Instant::now(),
            lines: Mutex::default(),
            echo,
        }
    }

    /// Seconds since the start.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Records (and maybe prints) one line.
    pub fn log(&self, msg: impl Into<String>) {
        let t = self.now();
        let msg = msg.into();
        if self.echo {
            println!("  [{t:>5.1}s] {msg}");
        }
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((t, msg));
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<(f64, String)> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
