use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;

use crate::error::{BoxError, Item, StreamError};
use crate::supervision::{Directive, Supervisor};

pin_project! {
    /// Stream for [`FlowOps::try_map`](crate::FlowOps::try_map) and
    /// [`FlowOps::try_map_supervised`](crate::FlowOps::try_map_supervised).
    #[must_use = "streams do nothing unless polled"]
    pub struct TryMap<S, F> {
        #[pin]
        stream: S,
        f: F,
        supervisor: Supervisor,
        done: bool,
    }
}

impl<S, F> TryMap<S, F> {
    pub(crate) fn new(stream: S, f: F, supervisor: Supervisor) -> Self {
        TryMap {
            stream,
            f,
            supervisor,
            done: false,
        }
    }
}

impl<S, F, T, U, E> Stream for TryMap<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T) -> Result<U, E>,
    E: Into<BoxError>,
{
    type Item = Item<U>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<U>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => match (this.f)(x) {
                    Ok(y) => return Poll::Ready(Some(Ok(y))),
                    Err(e) => {
                        let err = StreamError::user(e);
                        if this.supervisor.decide("try_map", &err) == Directive::Stop {
                            *this.done = true;
                            return Poll::Ready(Some(Err(err)));
                        }
                    }
                },
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::try_filter_supervised`](crate::FlowOps::try_filter_supervised).
    #[must_use = "streams do nothing unless polled"]
    pub struct TryFilter<S, F> {
        #[pin]
        stream: S,
        f: F,
        supervisor: Supervisor,
        done: bool,
    }
}

impl<S, F> TryFilter<S, F> {
    pub(crate) fn new(stream: S, f: F, supervisor: Supervisor) -> Self {
        TryFilter {
            stream,
            f,
            supervisor,
            done: false,
        }
    }
}

impl<S, F, T, E> Stream for TryFilter<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(&T) -> Result<bool, E>,
    E: Into<BoxError>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => match (this.f)(&x) {
                    Ok(true) => return Poll::Ready(Some(Ok(x))),
                    Ok(false) => {}
                    Err(e) => {
                        let err = StreamError::user(e);
                        if this.supervisor.decide("try_filter", &err) == Directive::Stop {
                            *this.done = true;
                            return Poll::Ready(Some(Err(err)));
                        }
                    }
                },
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::try_scan_supervised`](crate::FlowOps::try_scan_supervised).
    /// On [`Directive::Restart`] the accumulator goes back to its zero.
    #[must_use = "streams do nothing unless polled"]
    pub struct TryScan<S, A, F> {
        #[pin]
        stream: S,
        zero: A,
        acc: A,
        f: F,
        supervisor: Supervisor,
        emitted_zero: bool,
        done: bool,
    }
}

impl<S, A: Clone, F> TryScan<S, A, F> {
    pub(crate) fn new(stream: S, zero: A, f: F, supervisor: Supervisor) -> Self {
        TryScan {
            stream,
            acc: zero.clone(),
            zero,
            f,
            supervisor,
            emitted_zero: false,
            done: false,
        }
    }
}

impl<S, A, F, T, E> Stream for TryScan<S, A, F>
where
    S: Stream<Item = Item<T>>,
    A: Clone,
    F: FnMut(&A, T) -> Result<A, E>,
    E: Into<BoxError>,
{
    type Item = Item<A>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<A>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if !*this.emitted_zero {
            *this.emitted_zero = true;
            return Poll::Ready(Some(Ok(this.acc.clone())));
        }
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => match (this.f)(this.acc, x) {
                    Ok(next) => {
                        *this.acc = next;
                        return Poll::Ready(Some(Ok(this.acc.clone())));
                    }
                    Err(e) => {
                        let err = StreamError::user(e);
                        match this.supervisor.decide("try_scan", &err) {
                            Directive::Stop => {
                                *this.done = true;
                                return Poll::Ready(Some(Err(err)));
                            }
                            Directive::Resume => {}
                            Directive::Restart => *this.acc = this.zero.clone(),
                        }
                    }
                },
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}
