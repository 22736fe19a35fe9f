//! Graceful shutdown: stop consuming, finish in-flight records, commit.

use std::future::Future;

use flowstage::StreamError;

use super::consumer::ConsumerControl;

/// Stops `control`'s source and waits for the pipeline to finish: records
/// already consumed flow to the end, and a committer sink
/// ([`Committer::sink`](super::Committer::sink)) commits them before its
/// completion (`done`) resolves. Returns that completion's result.
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

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
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
        _ = ctrl_c => {}
        _ = term => {}
    }
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
