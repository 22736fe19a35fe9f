use std::fmt::Debug;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;

use crate::error::Item;

pin_project! {
    /// Stream for [`FlowOps::map`](crate::FlowOps::map).
    #[must_use = "streams do nothing unless polled"]
    pub struct Map<S, F> {
        #[pin]
        stream: S,
        f: F,
    }
}

impl<S, F> Map<S, F> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        Map { stream, f }
    }
}

impl<S, F, T, U> Stream for Map<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T) -> U,
{
    type Item = Item<U>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<U>>> {
        let this = self.project();
        match ready!(this.stream.poll_next(cx)) {
            Some(Ok(x)) => Poll::Ready(Some(Ok((this.f)(x)))),
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}

pin_project! {
    /// Stream for [`FlowOps::filter`](crate::FlowOps::filter).
    #[must_use = "streams do nothing unless polled"]
    pub struct Filter<S, F> {
        #[pin]
        stream: S,
        f: F,
    }
}

impl<S, F> Filter<S, F> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        Filter { stream, f }
    }
}

impl<S, F, T> Stream for Filter<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(&T) -> bool,
{
    type Item = Item<T>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => {
                    if (this.f)(&x) {
                        return Poll::Ready(Some(Ok(x)));
                    }
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::filter_map`](crate::FlowOps::filter_map).
    #[must_use = "streams do nothing unless polled"]
    pub struct FilterMap<S, F> {
        #[pin]
        stream: S,
        f: F,
    }
}

impl<S, F> FilterMap<S, F> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        FilterMap { stream, f }
    }
}

impl<S, F, T, U> Stream for FilterMap<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T) -> Option<U>,
{
    type Item = Item<U>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<U>>> {
        let mut this = self.project();
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => {
                    if let Some(y) = (this.f)(x) {
                        return Poll::Ready(Some(Ok(y)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::inspect`](crate::FlowOps::inspect).
    #[must_use = "streams do nothing unless polled"]
    pub struct Inspect<S, F> {
        #[pin]
        stream: S,
        f: F,
    }
}

impl<S, F> Inspect<S, F> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        Inspect { stream, f }
    }
}

impl<S, F, T> Stream for Inspect<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(&T),
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = self.project();
        let next = ready!(this.stream.poll_next(cx));
        if let Some(Ok(x)) = &next {
            (this.f)(x);
        }
        Poll::Ready(next)
    }
}

pin_project! {
    /// Stream for [`FlowOps::log`](crate::FlowOps::log).
    #[must_use = "streams do nothing unless polled"]
    pub struct Log<S> {
        #[pin]
        stream: S,
        name: &'static str,
        done: bool,
    }
}

impl<S> Log<S> {
    pub(crate) fn new(stream: S, name: &'static str) -> Self {
        Log {
            stream,
            name,
            done: false,
        }
    }
}

impl<S, T> Stream for Log<S>
where
    S: Stream<Item = Item<T>>,
    T: Debug,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = self.project();
        let next = ready!(this.stream.poll_next(cx));
        let name = *this.name;
        match &next {
            Some(Ok(x)) => tracing::debug!(stage = name, element = ?x, "element"),
            Some(Err(e)) => tracing::warn!(stage = name, error = %e, "upstream failed"),
            None => {
                if !*this.done {
                    tracing::debug!(stage = name, "upstream completed");
                }
                *this.done = true;
            }
        }
        Poll::Ready(next)
    }
}

pin_project! {
    /// Stream for [`FlowOps::zip_with_index`](crate::FlowOps::zip_with_index).
    #[must_use = "streams do nothing unless polled"]
    pub struct ZipWithIndex<S> {
        #[pin]
        stream: S,
        index: u64,
    }
}

impl<S> ZipWithIndex<S> {
    pub(crate) fn new(stream: S) -> Self {
        ZipWithIndex { stream, index: 0 }
    }
}

impl<S, T> Stream for ZipWithIndex<S>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<(T, u64)>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        match ready!(this.stream.poll_next(cx)) {
            Some(Ok(x)) => {
                let i = *this.index;
                *this.index += 1;
                Poll::Ready(Some(Ok((x, i))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }
}
