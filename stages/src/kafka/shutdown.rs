//! Graceful shutdown: stop consuming, finish in-flight records, commit.

use std::future::Future;
use std::time::Duration;

use flowstage::StreamError;

use super::consumer::ConsumerControl;
use super::error::KafkaStageError;

/// Stops `control`'s source and waits for the pipeline to finish: records
/// already consumed flow to the end, and a committer sink
/// ([`Committer::sink`](super::Committer::sink)) commits them before its
/// completion (`done`) resolves. Returns that completion's result.
///
/// The consumer itself closes when its last handle goes: close the committer
/// ([`Committer::close`](super::Committer::close)), then
/// [`ConsumerControl::shutdown`] waits until the group is left.
pub async fn drain_and_shutdown<T>(
    control: &ConsumerControl,
    done: impl Future<Output = Result<T, StreamError>>,
) -> Result<T, StreamError> {
    control.stop();
    let r = done.await;
    tracing::info!(
        in_flight = control.in_flight(),
        "kafka: consumer drained and shut down"
    );
    r
}

/// [`drain_and_shutdown`], giving up after `timeout`: a pipeline that cannot
/// finish (the broker is away and the producer cannot deliver) then fails
/// with [`KafkaStageError::DrainTimeout`] instead of holding the process. Its
/// unprocessed records were not committed, so they are consumed again
/// (at-least-once); an open transaction is aborted by the broker.
pub async fn drain_and_shutdown_within<T>(
    control: &ConsumerControl,
    done: impl Future<Output = Result<T, StreamError>>,
    timeout: Duration,
) -> Result<T, StreamError> {
    match tokio::time::timeout(timeout, drain_and_shutdown(control, done)).await {
        Ok(r) => r,
        Err(_) => {
            let in_flight = control.in_flight();
            tracing::warn!(
                in_flight,
                "kafka: the pipeline did not drain within {timeout:?}; stopping anyway"
            );
            Err(StreamError::user(KafkaStageError::DrainTimeout {
                after: timeout,
                in_flight,
            }))
        }
    }
}

/// The signal that asked a process to stop: see [`stop_signal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM (Unix).
    Terminate,
}

impl StopSignal {
    /// The exit status of a process that stops at once on this signal, as
    /// shells report a process the signal killed: 128 + the signal number
    /// (130 for SIGINT, 143 for SIGTERM).
    ///
    /// ```
    /// use flowstage_stages::kafka::StopSignal;
    /// assert_eq!(StopSignal::Interrupt.exit_code(), 130);
    /// assert_eq!(StopSignal::Terminate.exit_code(), 143);
    /// ```
    pub fn exit_code(self) -> i32 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM, with the one that came.
/// A signal that cannot be listened for is logged and never resolves.
pub async fn stop_signal() -> StopSignal {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            futures::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                futures::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => StopSignal::Interrupt,
        _ = term => StopSignal::Terminate,
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM ([`stop_signal`],
/// whichever came).
pub async fn shutdown_signal() {
    stop_signal().await;
}

/// Runs until the pipeline completes by itself or `signal` resolves (for
/// example [`shutdown_signal`]); on the signal, drains and shuts down.
pub async fn run_until<T>(
    control: &ConsumerControl,
    done: impl Future<Output = Result<T, StreamError>>,
    signal: impl Future<Output = ()>,
) -> Result<T, StreamError> {
    let mut done = std::pin::pin!(done);
    tokio::select! {
        r = &mut done => r,
        _ = signal => drain_and_shutdown(control, done).await,
    }
}

/// [`run_until`] with a bound on the drain (see
/// [`drain_and_shutdown_within`]).
pub async fn run_until_within<T>(
    control: &ConsumerControl,
    done: impl Future<Output = Result<T, StreamError>>,
    signal: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> Result<T, StreamError> {
    let mut done = std::pin::pin!(done);
    tokio::select! {
        r = &mut done => r,
        _ = signal => drain_and_shutdown_within(control, done, drain_timeout).await,
    }
}
