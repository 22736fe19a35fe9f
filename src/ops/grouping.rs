use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::Item;

/// The most elements a group reserves room for when it starts (it grows beyond as needed).
const PREALLOCATED: usize = 4096;

pin_project! {
    /// Stream for [`FlowOps::grouped`](crate::FlowOps::grouped).
    #[must_use = "streams do nothing unless polled"]
    pub struct Grouped<S, T> {
        #[pin]
        stream: S,
        size: usize,
        buf: Vec<T>,
        done: bool,
    }
}

impl<S, T> Grouped<S, T> {
    pub(crate) fn new(stream: S, size: usize) -> Self {
        let size = size.max(1);
        Grouped {
            stream,
            size,
            buf: Vec::new(),
            done: false,
        }
    }
}

impl<S, T> Stream for Grouped<S, T>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<Vec<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => {
                    if this.buf.capacity() == 0 {
                        // Room for a whole group, up to a bound: `grouped(usize::MAX)` (collect
                        // everything) must not ask for that much memory up front.
                        this.buf.reserve_exact((*this.size).min(PREALLOCATED));
                    }
                    this.buf.push(x);
                    if this.buf.len() >= *this.size {
                        return Poll::Ready(Some(Ok(std::mem::take(this.buf))));
                    }
                }
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    *this.done = true;
                    if this.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(std::mem::take(this.buf))));
                }
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::sliding`](crate::FlowOps::sliding).
    #[must_use = "streams do nothing unless polled"]
    pub struct Sliding<S, T> {
        #[pin]
        stream: S,
        size: usize,
        step: usize,
        buf: VecDeque<T>,
        // Elements in `buf` that no emitted window contained yet.
        fresh: usize,
        // Elements still to skip when `step > size`.
        skip: usize,
        done: bool,
    }
}

impl<S, T> Sliding<S, T> {
    pub(crate) fn new(stream: S, size: usize, step: usize) -> Self {
        Sliding {
            stream,
            size: size.max(1),
            step: step.max(1),
            buf: VecDeque::new(),
            fresh: 0,
            skip: 0,
            done: false,
        }
    }
}

impl<S, T> Stream for Sliding<S, T>
where
    S: Stream<Item = Item<T>>,
    T: Clone,
{
    type Item = Item<Vec<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match ready!(this.stream.as_mut().poll_next(cx)) {
                Some(Ok(x)) => {
                    if *this.skip > 0 {
                        *this.skip -= 1;
                        continue;
                    }
                    this.buf.push_back(x);
                    *this.fresh += 1;
                    if this.buf.len() == *this.size {
                        let window: Vec<T> = this.buf.iter().cloned().collect();
                        let drop_n = (*this.step).min(this.buf.len());
                        this.buf.drain(..drop_n);
                        *this.skip = this.step.saturating_sub(*this.size);
                        *this.fresh = 0;
                        return Poll::Ready(Some(Ok(window)));
                    }
                }
                Some(Err(e)) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    *this.done = true;
                    if *this.fresh > 0 {
                        let window: Vec<T> = this.buf.drain(..).collect();
                        return Poll::Ready(Some(Ok(window)));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::grouped_within`](crate::FlowOps::grouped_within).
    #[must_use = "streams do nothing unless polled"]
    pub struct GroupedWithin<S, T> {
        #[pin]
        stream: S,
        size: usize,
        within: Duration,
        buf: Vec<T>,
        timer: Option<Pin<Box<Sleep>>>,
        done: bool,
        pending_error: Option<crate::error::StreamError>,
    }
}

impl<S, T> GroupedWithin<S, T> {
    pub(crate) fn new(stream: S, size: usize, within: Duration) -> Self {
        GroupedWithin {
            stream,
            size: size.max(1),
            within,
            buf: Vec::new(),
            timer: None,
            done: false,
            pending_error: None,
        }
    }
}

impl<S, T> Stream for GroupedWithin<S, T>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<Vec<T>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if let Some(e) = this.pending_error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(x))) => {
                    // An upstream that is always ready never lets the timer be polled: an
                    // element that comes after the window closes the chunk and opens the next.
                    let closed = this
                        .timer
                        .as_ref()
                        .is_some_and(|t| t.deadline() <= tokio::time::Instant::now());
                    if closed {
                        let chunk = std::mem::take(this.buf);
                        this.buf.push(x);
                        *this.timer = Some(Box::pin(tokio::time::sleep(*this.within)));
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    if this.buf.is_empty() {
                        *this.timer = Some(Box::pin(tokio::time::sleep(*this.within)));
                    }
                    this.buf.push(x);
                    if this.buf.len() >= *this.size {
                        *this.timer = None;
                        return Poll::Ready(Some(Ok(std::mem::take(this.buf))));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    *this.timer = None;
                    if this.buf.is_empty() {
                        return Poll::Ready(Some(Err(e)));
                    }
                    *this.pending_error = Some(e);
                    return Poll::Ready(Some(Ok(std::mem::take(this.buf))));
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    *this.timer = None;
                    if this.buf.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(std::mem::take(this.buf))));
                }
                Poll::Pending => {
                    if let Some(timer) = this.timer.as_mut() {
                        if timer.as_mut().poll(cx).is_ready() {
                            *this.timer = None;
                            return Poll::Ready(Some(Ok(std::mem::take(this.buf))));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
