use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::Stream;
use pin_project_lite::pin_project;

use crate::error::{Item, StreamError};

pin_project! {
    /// Stream for [`FlowOps::map_async`](crate::FlowOps::map_async): up to `parallelism`
    /// futures in flight, results emitted in upstream order.
    #[must_use = "streams do nothing unless polled"]
    pub struct MapAsync<S, F, Fut: Future> {
        #[pin]
        stream: S,
        f: F,
        in_flight: FuturesOrdered<Fut>,
        parallelism: usize,
        upstream_done: bool,
        pending_error: Option<StreamError>,
        done: bool,
    }
}

impl<S, F, Fut: Future> MapAsync<S, F, Fut> {
    pub(crate) fn new(stream: S, parallelism: usize, f: F) -> Self {
        MapAsync {
            stream,
            f,
            in_flight: FuturesOrdered::new(),
            parallelism: parallelism.max(1),
            upstream_done: false,
            pending_error: None,
            done: false,
        }
    }
}

impl<S, F, Fut, T, U> Stream for MapAsync<S, F, Fut>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Item<U>>,
{
    type Item = Item<U>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<U>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // Fill the window (only pulls upstream while there is room: backpressure).
        while !*this.upstream_done && this.in_flight.len() < *this.parallelism {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(x))) => this.in_flight.push_back((this.f)(x)),
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

pin_project! {
    /// Stream for [`FlowOps::map_async_unordered`](crate::FlowOps::map_async_unordered):
    /// up to `parallelism` futures in flight, results emitted as they complete.
    #[must_use = "streams do nothing unless polled"]
    pub struct MapAsyncUnordered<S, F, Fut> {
        #[pin]
        stream: S,
        f: F,
        in_flight: FuturesUnordered<Fut>,
        parallelism: usize,
        upstream_done: bool,
        pending_error: Option<StreamError>,
        done: bool,
    }
}

impl<S, F, Fut> MapAsyncUnordered<S, F, Fut> {
    pub(crate) fn new(stream: S, parallelism: usize, f: F) -> Self {
        MapAsyncUnordered {
            stream,
            f,
            in_flight: FuturesUnordered::new(),
            parallelism: parallelism.max(1),
            upstream_done: false,
            pending_error: None,
            done: false,
        }
    }
}

impl<S, F, Fut, T, U> Stream for MapAsyncUnordered<S, F, Fut>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = Item<U>>,
{
    type Item = Item<U>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<U>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        while !*this.upstream_done && this.in_flight.len() < *this.parallelism {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(x))) => this.in_flight.push((this.f)(x)),
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
