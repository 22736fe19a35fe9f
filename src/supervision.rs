//! Supervision: what a fallible operator does when its function fails.
//!
//! A [`Supervisor`] holds a *decider* that maps each failure to a
//! [`Directive`]: [`Stop`](Directive::Stop) fails the stream (the default),
//! [`Resume`](Directive::Resume) drops the failing element and goes on, and
//! [`Restart`](Directive::Restart) drops it *and* resets the operator's state
//! (for `try_scan`, the accumulator goes back to its zero).
//!
//! Nothing is lost silently: every resumed or restarted element is counted
//! (see [`Supervisor::resumed`] and [`Supervisor::restarted`]) and logged with
//! `tracing` at `warn` level.
//!
//! ```
//! use flowstage::prelude::*;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let supervisor = Supervisor::resuming();
//! let parsed = Source::from_iter(["1", "x", "3"])
//!     .try_map_supervised(|s| s.parse::<i32>(), supervisor.clone())
//!     .run_with(Sink::collect())
//!     .await
//!     .unwrap();
//! assert_eq!(parsed, vec![1, 3]);
//! assert_eq!(supervisor.resumed(), 1);
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::StreamError;

/// What to do with a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Fail the stream with the error.
    Stop,
    /// Drop the element that failed and continue.
    Resume,
    /// Drop the element, reset the operator's state, and continue.
    Restart,
}

type Decider = dyn Fn(&StreamError) -> Directive + Send + Sync;

/// A decider plus counters of what it decided. Clones share the counters.
#[derive(Clone)]
pub struct Supervisor {
    decider: Arc<Decider>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    resumed: AtomicU64,
    restarted: AtomicU64,
    stopped: AtomicU64,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("resumed", &self.resumed())
            .field("restarted", &self.restarted())
            .field("stopped", &self.stopped())
            .finish()
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::stopping()
    }
}

impl Supervisor {
    /// A supervisor with a custom decider.
    pub fn new(decider: impl Fn(&StreamError) -> Directive + Send + Sync + 'static) -> Self {
        Supervisor {
            decider: Arc::new(decider),
            stats: Arc::default(),
        }
    }

    /// Always [`Directive::Stop`] (the default).
    pub fn stopping() -> Self {
        Self::new(|_| Directive::Stop)
    }

    /// Always [`Directive::Resume`].
    pub fn resuming() -> Self {
        Self::new(|_| Directive::Resume)
    }

    /// Always [`Directive::Restart`].
    pub fn restarting() -> Self {
        Self::new(|_| Directive::Restart)
    }

    /// Decides on `err`, counts and logs the decision.
    pub fn decide(&self, operator: &'static str, err: &StreamError) -> Directive {
        let d = (self.decider)(err);
        match d {
            Directive::Stop => {
                self.stats.stopped.fetch_add(1, Ordering::Relaxed);
            }
            Directive::Resume => {
                self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(operator, error = %err, "element dropped (supervision: resume)");
            }
            Directive::Restart => {
                self.stats.restarted.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(operator, error = %err, "element dropped, state reset (supervision: restart)");
            }
        }
        d
    }

    /// Elements dropped with [`Directive::Resume`].
    pub fn resumed(&self) -> u64 {
        self.stats.resumed.load(Ordering::Relaxed)
    }

    /// Elements dropped with [`Directive::Restart`].
    pub fn restarted(&self) -> u64 {
        self.stats.restarted.load(Ordering::Relaxed)
    }

    /// Failures that stopped a stream.
    pub fn stopped(&self) -> u64 {
        self.stats.stopped.load(Ordering::Relaxed)
    }

    /// All elements dropped (resumed + restarted).
    pub fn dropped(&self) -> u64 {
        self.resumed() + self.restarted()
    }
}
