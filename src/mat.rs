//! Materialized values: what running a graph gives back.
//!
//! Every [`Source`](crate::Source), [`Flow`](crate::Flow) and [`Sink`](crate::Sink)
//! carries a *materialized value*: the kill switch of a kill-switch flow, the
//! queue handle of [`Source::queue`](crate::Source::queue), the completion
//! future of [`Sink::fold`](crate::Sink::fold). When two parts are joined, a
//! combiner from [`Keep`] says which value to keep.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::oneshot;

use crate::error::StreamError;

/// The materialized value of parts that have nothing to give back (Akka's `NotUsed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotUsed;

/// Combiners for materialized values, as in Akka's `Keep`.
///
/// ```
/// use flowstage::prelude::*;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (switch, done) = Source::from_iter(1..=3)
///     .via_mat(KillSwitches::single(), Keep::right)
///     .to_mat(Sink::collect(), Keep::both)
///     .run();
/// assert_eq!(done.await.unwrap(), vec![1, 2, 3]);
/// switch.shutdown(); // no effect any more: the stream is complete
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Keep;

impl Keep {
    /// Keep the left (upstream) value.
    pub fn left<L, R>(l: L, _r: R) -> L {
        l
    }
    /// Keep the right (downstream) value.
    pub fn right<L, R>(_l: L, r: R) -> R {
        r
    }
    /// Keep both, as a pair.
    pub fn both<L, R>(l: L, r: R) -> (L, R) {
        (l, r)
    }
    /// Keep neither.
    pub fn none<L, R>(_l: L, _r: R) -> NotUsed {
        NotUsed
    }
}

/// A future that resolves when a stream (or one of its stages) finishes: the
/// materialized value of most sinks.
///
/// It resolves to `Ok(value)` on completion and `Err(StreamError)` on failure.
/// If the task that runs the stream is dropped before completing (its runtime
/// shut down, for instance), it resolves to [`StreamError::Abrupt`].
#[must_use = "a Completion does nothing unless awaited; dropping it does not stop the stream"]
#[derive(Debug)]
pub struct Completion<T> {
    rx: oneshot::Receiver<Result<T, StreamError>>,
}

/// The sending half of a [`Completion`].
#[derive(Debug)]
pub(crate) struct Completer<T> {
    tx: Option<oneshot::Sender<Result<T, StreamError>>>,
}

/// A connected completer/completion pair.
pub(crate) fn completion<T>() -> (Completer<T>, Completion<T>) {
    let (tx, rx) = oneshot::channel();
    (Completer { tx: Some(tx) }, Completion { rx })
}

impl<T> Completer<T> {
    /// Resolves the completion (only the first call has an effect).
    pub(crate) fn complete(&mut self, result: Result<T, StreamError>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(result);
        }
    }
}

impl<T> Future for Completion<T> {
    type Output = Result<T, StreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(StreamError::Abrupt(
                "the stream was dropped before it completed",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}
