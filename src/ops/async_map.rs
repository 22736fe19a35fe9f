use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::Stream;
use pin_project_lite::pin_project;

use crate::error::{Item, StreamError};

/// The set of futures in flight: ordered (results in upstream order) or
/// unordered (results as they complete).
pub trait InFlight<Fut: Future>: Stream<Item = Fut::Output> + Unpin + Default {
    /// Adds a future.
    fn add(&mut self, fut: Fut);
    /// How many futures are in flight.
    fn count(&self) -> usize;
}

impl<Fut: Future> InFlight<Fut> for FuturesOrdered<Fut> {
    fn add(&mut self, fut: Fut) {
        self.push_back(fut);
    }
    fn count(&self) -> usize {
        self.len()
    }
}

impl<Fut: Future> InFlight<Fut> for FuturesUnordered<Fut> {
    fn add(&mut self, fut: Fut) {
        self.push(fut);
    }
    fn count(&self) -> usize {
        self.len()
    }
}

pin_project! {
    /// Stream for the async mapping operators: up to `parallelism` futures of
    /// `f` in flight in `W` (see [`MapAsync`] and [`MapAsyncUnordered`]).
    #[must_use = "streams do nothing unless polled"]
    pub struct MapAsyncWith<S, F, W> {
        #[pin]
        stream: S,
        f: F,
        in_flight: W,
        parallelism: usize,
        upstream_done: bool,
        pending_error: Option<StreamError>,
        done: bool,
    }
}

/// Stream for [`FlowOps::map_async`](crate::FlowOps::map_async): up to `parallelism`
/// futures in flight, results emitted in upstream order.
pub type MapAsync<S, F, Fut> = MapAsyncWith<S, F, FuturesOrdered<Fut>>;

/// Stream for [`FlowOps::map_async_unordered`](crate::FlowOps::map_async_unordered):
/// up to `parallelism` futures in flight, results emitted as they complete.
pub type MapAsyncUnordered<S, F, Fut> = MapAsyncWith<S, F, FuturesUnordered<Fut>>;

impl<S, F, W: Default> MapAsyncWith<S, F, W> {
    pub(crate) fn new(stream: S, parallelism: usize, f: F) -> Self {
        MapAsyncWith {
            stream,
            f,
            in_flight: W::default(),
            parallelism: parallelism.max(1),
            upstream_done: false,
            pending_error: None,
            done: false,
        }
    }
}

impl<S, F, Fut, W, T, U> Stream for MapAsyncWith<S, F, W>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Item<U>>,
    W: InFlight<Fut>,
{
    type Item = Item<U>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<U>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // Fill the window (only pulls upstream while there is room: backpressure).
        while !*this.upstream_done && this.in_flight.count() < *this.parallelism {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(x))) => this.in_flight.add((this.f)(x)),
                Poll::Ready(Some(Err(e))) => {
                    *this.upstream_done = true;
                    *this.pending_error = Some(e);
                }
                Poll::Ready(None) => *this.upstream_done = true,
                Poll::Pending => break,
            }
        }
        match Pin::new(&mut *this.in_flight).poll_next(cx) {
            Poll::Ready(Some(Ok(y))) => Poll::Ready(Some(Ok(y))),
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if *this.upstream_done {
                    *this.done = true;
                    match this.pending_error.take() {
                        Some(e) => Poll::Ready(Some(Err(e))),
                        None => Poll::Ready(None),
                    }
                } else {
                    Poll::Pending
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
