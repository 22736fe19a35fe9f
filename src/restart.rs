//! Restarting sources and flows with exponential backoff
//! (Akka's `RestartSource` / `RestartFlow`).
//!
//! ```
//! use flowstage::prelude::*;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let attempts = Arc::new(AtomicU32::new(0));
//! let a = attempts.clone();
//! let settings = RestartSettings::new(Duration::from_millis(1), Duration::from_millis(10), 0.0)
//!     .with_max_restarts(5, Duration::from_secs(60));
//! // A source that fails twice before it succeeds.
//! let v = RestartSource::on_failures_with_backoff(settings, move || {
//!     let n = a.fetch_add(1, Ordering::SeqCst);
//!     if n < 2 {
//!         Source::failed(StreamError::msg("flaky")).boxed()
//!     } else {
//!         Source::from_iter([n]).boxed()
//!     }
//! })
//! .run_with(Sink::collect())
//! .await
//! .unwrap();
//! assert_eq!(v, [2]);
//! assert_eq!(attempts.load(Ordering::SeqCst), 3);
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::error::{Item, StreamError};
use crate::flow::Flow;
use crate::mat::NotUsed;
use crate::source::{BoxSource, Source};

/// Backoff and restart limits.
#[derive(Debug, Clone, Copy)]
pub struct RestartSettings {
    /// The first backoff.
    pub min_backoff: Duration,
    /// The backoff cap.
    pub max_backoff: Duration,
    /// A random share (0.0..) added to each backoff to spread restarts.
    pub random_factor: f64,
    /// At most this many restarts within [`max_restarts_within`](RestartSettings::max_restarts_within);
    /// then the last failure (or completion) goes downstream.
    pub max_restarts: u32,
    /// The window for `max_restarts`.
    pub max_restarts_within: Duration,
}

impl RestartSettings {
    /// Unlimited restarts with the given backoff.
    pub fn new(min_backoff: Duration, max_backoff: Duration, random_factor: f64) -> Self {
        RestartSettings {
            min_backoff,
            max_backoff,
            random_factor: random_factor.max(0.0),
            max_restarts: u32::MAX,
            max_restarts_within: min_backoff,
        }
    }

    /// Limits restarts to `count` within `within`.
    pub fn with_max_restarts(mut self, count: u32, within: Duration) -> Self {
        self.max_restarts = count;
        self.max_restarts_within = within;
        self
    }

    fn backoff(&self, restart: u32, seed: &mut u64) -> Duration {
        let exp = self
            .min_backoff
            .saturating_mul(2u32.saturating_pow(restart.min(30)))
            .min(self.max_backoff);
        // xorshift: good enough to spread restarts.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let r = (*seed % 10_000) as f64 / 10_000.0;
        // The fields are public: a factor that is not a finite number from 0 adds nothing, and
        // a backoff too large for a `Duration` (near `Duration::MAX`) saturates instead of
        // panicking.
        let factor = if self.random_factor.is_finite() && self.random_factor >= 0.0 {
            self.random_factor
        } else {
            0.0
        };
        Duration::try_from_secs_f64(exp.as_secs_f64() * (1.0 + r * factor)).unwrap_or(Duration::MAX)
    }
}

/// Restart bookkeeping shared by sources and flows.
struct Restarts {
    settings: RestartSettings,
    window_start: Instant,
    in_window: u32,
    consecutive: u32,
    seed: u64,
}

impl Restarts {
    fn new(settings: RestartSettings) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
        Restarts {
            settings,
            window_start: Instant::now(),
            in_window: 0,
            consecutive: 0,
            seed,
        }
    }

    /// The delay before the next restart, or `None` if the limit is reached.
    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if now.duration_since(self.window_start) > self.settings.max_restarts_within {
            self.window_start = now;
            self.in_window = 0;
        }
        if self.in_window >= self.settings.max_restarts {
            return None;
        }
        self.in_window += 1;
        let d = self.settings.backoff(self.consecutive, &mut self.seed);
        self.consecutive += 1;
        Some(d)
    }

    fn element_passed(&mut self) {
        self.consecutive = 0;
    }
}

/// Sources that restart when they end.
#[derive(Debug, Clone, Copy)]
pub struct RestartSource;

impl RestartSource {
    /// Restarts the source made by `factory` whenever it completes or fails.
    pub fn with_backoff<T, F>(settings: RestartSettings, factory: F) -> BoxSource<T>
    where
        T: Send + 'static,
        F: FnMut() -> BoxSource<T> + Send + 'static,
    {
        Self::make(settings, factory, false)
    }

    /// Restarts the source made by `factory` only when it fails; completion ends it.
    pub fn on_failures_with_backoff<T, F>(settings: RestartSettings, factory: F) -> BoxSource<T>
    where
        T: Send + 'static,
        F: FnMut() -> BoxSource<T> + Send + 'static,
    {
        Self::make(settings, factory, true)
    }

    fn make<T, F>(settings: RestartSettings, mut factory: F, only_failures: bool) -> BoxSource<T>
    where
        T: Send + 'static,
        F: FnMut() -> BoxSource<T> + Send + 'static,
    {
        let stream = async_stream::stream! {
            let mut restarts = Restarts::new(settings);
            loop {
                let mut inner = factory().into_stream();
                let mut failure = None;
                while let Some(item) = inner.next().await {
                    match item {
                        Ok(x) => {
                            restarts.element_passed();
                            yield Ok(x);
                        }
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                drop(inner);
                if only_failures && failure.is_none() {
                    return;
                }
                match restarts.next() {
                    Some(delay) => {
                        match &failure {
                            Some(e) => tracing::warn!(error = %e, ?delay, "RestartSource: restarting after failure"),
                            None => tracing::debug!(?delay, "RestartSource: restarting after completion"),
                        }
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        if let Some(e) = failure {
                            yield Err(e);
                        }
                        return;
                    }
                }
            }
        };
        Source::from_items(stream.boxed())
    }
}

/// Flows that restart when they fail.
#[derive(Debug, Clone, Copy)]
pub struct RestartFlow;

type SharedInput<T> = Arc<Mutex<Option<BoxStream<'static, Item<T>>>>>;

/// A view of the shared upstream given to each incarnation of a restarted flow.
struct Borrowed<T> {
    input: SharedInput<T>,
    upstream_done: Arc<std::sync::atomic::AtomicBool>,
}

impl<T> Stream for Borrowed<T> {
    type Item = Item<T>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Item<T>>> {
        let mut g = self.input.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = g.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let r = s.poll_next_unpin(cx);
        if let std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_))) = &r {
            self.upstream_done
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }
}

impl RestartFlow {
    /// Runs the flow made by `factory`; when it fails (and its upstream has
    /// not ended), a new one is made after a backoff and continues with the
    /// next upstream element. Elements inside the failed flow are lost (and
    /// logged); upstream is not restarted.
    pub fn on_failures_with_backoff<In, Out, F>(
        settings: RestartSettings,
        mut factory: F,
    ) -> Flow<In, Out, NotUsed>
    where
        In: Send + 'static,
        Out: Send + 'static,
        F: FnMut() -> Flow<In, Out, NotUsed> + Send + 'static,
    {
        Flow::from_stream_fn(move |input: BoxStream<'static, Item<In>>| {
            let shared: SharedInput<In> = Arc::new(Mutex::new(Some(input)));
            let upstream_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            async_stream::stream! {
                let mut restarts = Restarts::new(settings);
                loop {
                    let borrowed = Borrowed { input: shared.clone(), upstream_done: upstream_done.clone() };
                    let (mut out, _) = factory().attach(borrowed.boxed());
                    let mut failure: Option<StreamError> = None;
                    while let Some(item) = out.next().await {
                        match item {
                            Ok(x) => {
                                restarts.element_passed();
                                yield Ok(x);
                            }
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                    drop(out);
                    let Some(e) = failure else { return };
                    if upstream_done.load(std::sync::atomic::Ordering::SeqCst) {
                        yield Err(e);
                        return;
                    }
                    match restarts.next() {
                        Some(delay) => {
                            tracing::warn!(error = %e, ?delay, "RestartFlow: restarting after failure");
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            yield Err(e);
                            return;
                        }
                    }
                }
            }
        })
    }
}
