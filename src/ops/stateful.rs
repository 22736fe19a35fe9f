use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;

use crate::error::{Item, StreamError};

pin_project! {
    /// Stream for [`FlowOps::scan`](crate::FlowOps::scan).
    #[must_use = "streams do nothing unless polled"]
    pub struct Scan<S, A, F> {
        #[pin]
        stream: S,
        acc: A,
        f: F,
        emitted_zero: bool,
        done: bool,
    }
}

impl<S, A, F> Scan<S, A, F> {
    pub(crate) fn new(stream: S, zero: A, f: F) -> Self {
        Scan {
            stream,
            acc: zero,
            f,
            emitted_zero: false,
            done: false,
        }
    }
}

impl<S, A, F, T> Stream for Scan<S, A, F>
where
    S: Stream<Item = Item<T>>,
    A: Clone,
    F: FnMut(&A, T) -> A,
{
    type Item = Item<A>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<A>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if !*this.emitted_zero {
            *this.emitted_zero = true;
            return Poll::Ready(Some(Ok(this.acc.clone())));
        }
        match ready!(this.stream.poll_next(cx)) {
            Some(Ok(x)) => {
                let next = (this.f)(this.acc, x);
                *this.acc = next;
                Poll::Ready(Some(Ok(this.acc.clone())))
            }
            Some(Err(e)) => {
                *this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                *this.done = true;
                Poll::Ready(None)
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::fold`](crate::FlowOps::fold): emits one element when upstream completes.
    #[must_use = "streams do nothing unless polled"]
    pub struct Fold<S, A, F> {
        #[pin]
        stream: S,
        acc: Option<A>,
        f: F,
    }
}

impl<S, A, F> Fold<S, A, F> {
    pub(crate) fn new(stream: S, zero: A, f: F) -> Self {
        Fold {
            stream,
            acc: Some(zero),
            f,
        }
    }
}

impl<S, A, F, T> Stream for Fold<S, A, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(A, T) -> A,
{
    type Item = Item<A>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<A>>> {
        let mut this = self.project();
        loop {
            let Some(acc) = this.acc.take() else {
                return Poll::Ready(None);
            };
            match this.stream.as_mut().poll_next(cx) {
                Poll::Pending => {
                    *this.acc = Some(acc);
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(x))) => *this.acc = Some((this.f)(acc, x)),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(Some(Ok(acc))),
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::reduce`](crate::FlowOps::reduce).
    #[must_use = "streams do nothing unless polled"]
    pub struct Reduce<S, T, F> {
        #[pin]
        stream: S,
        acc: Option<T>,
        f: F,
        done: bool,
    }
}

impl<S, T, F> Reduce<S, T, F> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        Reduce {
            stream,
            acc: None,
            f,
            done: false,
        }
    }
}

impl<S, T, F> Stream for Reduce<S, T, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T, T) -> T,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => {
                    let next = match this.acc.take() {
                        Some(acc) => (this.f)(acc, x),
                        None => x,
                    };
                    *this.acc = Some(next);
                }
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    *this.done = true;
                    return Poll::Ready(Some(this.acc.take().ok_or(StreamError::Empty("reduce"))));
                }
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::take`](crate::FlowOps::take).
    #[must_use = "streams do nothing unless polled"]
    pub struct Take<S> {
        // `None` once done: the upstream is dropped (cancelled) at once.
        #[pin]
        stream: Option<S>,
        remaining: u64,
    }
}

impl<S> Take<S> {
    pub(crate) fn new(stream: S, n: u64) -> Self {
        Take {
            stream: if n == 0 { None } else { Some(stream) },
            remaining: n,
        }
    }
}

impl<S, T> Stream for Take<S>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        let Some(stream) = this.stream.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        let next = ready!(stream.poll_next(cx));
        match &next {
            Some(Ok(_)) => *this.remaining -= 1,
            _ => *this.remaining = 0,
        }
        if *this.remaining == 0 {
            this.stream.set(None);
        }
        Poll::Ready(next)
    }
}

pin_project! {
    /// Stream for [`FlowOps::take_while`](crate::FlowOps::take_while).
    #[must_use = "streams do nothing unless polled"]
    pub struct TakeWhile<S, F> {
        // `None` once done: the upstream is dropped (cancelled) at once.
        #[pin]
        stream: Option<S>,
        f: F,
        inclusive: bool,
    }
}

impl<S, F> TakeWhile<S, F> {
    pub(crate) fn new(stream: S, f: F, inclusive: bool) -> Self {
        TakeWhile {
            stream: Some(stream),
            f,
            inclusive,
        }
    }
}

impl<S, F, T> Stream for TakeWhile<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(&T) -> bool,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        let Some(stream) = this.stream.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        let next = ready!(stream.poll_next(cx));
        let out = match next {
            Some(Ok(x)) => {
                if (this.f)(&x) {
                    return Poll::Ready(Some(Ok(x)));
                }
                if *this.inclusive {
                    Some(Ok(x))
                } else {
                    None
                }
            }
            other => other,
        };
        this.stream.set(None);
        Poll::Ready(out)
    }
}

pin_project! {
    /// Stream for [`FlowOps::drop`](crate::FlowOps::drop).
    #[must_use = "streams do nothing unless polled"]
    pub struct Drop<S> {
        #[pin]
        stream: S,
        remaining: u64,
    }
}

impl<S> Drop<S> {
    pub(crate) fn new(stream: S, n: u64) -> Self {
        Drop {
            stream,
            remaining: n,
        }
    }
}

impl<S, T> Stream for Drop<S>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        loop {
            let next = ready!(this.stream.as_mut().poll_next(cx));
            match next {
                Some(Ok(_)) if *this.remaining > 0 => *this.remaining -= 1,
                other => return Poll::Ready(other),
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::drop_while`](crate::FlowOps::drop_while).
    #[must_use = "streams do nothing unless polled"]
    pub struct DropWhile<S, F> {
        #[pin]
        stream: S,
        f: F,
        dropping: bool,
    }
}

impl<S, F> DropWhile<S, F> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        DropWhile {
            stream,
            f,
            dropping: true,
        }
    }
}

impl<S, F, T> Stream for DropWhile<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(&T) -> bool,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => {
                    if *this.dropping && (this.f)(&x) {
                        continue;
                    }
                    *this.dropping = false;
                    return Poll::Ready(Some(Ok(x)));
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::map_concat`](crate::FlowOps::map_concat).
    #[must_use = "streams do nothing unless polled"]
    pub struct MapConcat<S, F, I> {
        #[pin]
        stream: S,
        f: F,
        current: Option<I>,
    }
}

impl<S, F, I> MapConcat<S, F, I> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        MapConcat {
            stream,
            f,
            current: None,
        }
    }
}

impl<S, F, T, II> Stream for MapConcat<S, F, II::IntoIter>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T) -> II,
    II: IntoIterator,
{
    type Item = Item<II::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        loop {
            if let Some(it) = this.current.as_mut() {
                if let Some(x) = it.next() {
                    return Poll::Ready(Some(Ok(x)));
                }
                *this.current = None;
            }
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => *this.current = Some((this.f)(x).into_iter()),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            }
        }
    }
}
