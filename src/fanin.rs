//! Fan-in junctions: merge, merge_preferred, concat, zip, zip_with.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;

use crate::error::{Item, StreamError};

pin_project! {
    /// Stream for [`FlowOps::merge`](crate::FlowOps::merge): elements from both inputs
    /// as they come, alternating fairly; completes when both complete.
    #[must_use = "streams do nothing unless polled"]
    pub struct Merge<A, B> {
        #[pin]
        a: A,
        #[pin]
        b: B,
        a_done: bool,
        b_done: bool,
        prefer_b: bool,
        // Whether the first input always goes first (merge_preferred).
        preferred: bool,
        failed: bool,
    }
}

impl<A, B> Merge<A, B> {
    pub(crate) fn new(a: A, b: B, preferred: bool) -> Self {
        Merge {
            a,
            b,
            a_done: false,
            b_done: false,
            prefer_b: false,
            preferred,
            failed: false,
        }
    }
}

impl<A, B, T> Stream for Merge<A, B>
where
    A: Stream<Item = Item<T>>,
    B: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let b_first = *this.prefer_b && !*this.preferred;
        for turn in 0..2 {
            let poll_b = (turn == 0) == b_first;
            let next = if poll_b {
                if *this.b_done {
                    continue;
                }
                this.b.as_mut().poll_next(cx)
            } else {
                if *this.a_done {
                    continue;
                }
                this.a.as_mut().poll_next(cx)
            };
            match next {
                Poll::Ready(Some(Ok(x))) => {
                    if !*this.preferred {
                        *this.prefer_b = !poll_b;
                    }
                    return Poll::Ready(Some(Ok(x)));
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.failed = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    if poll_b {
                        *this.b_done = true;
                    } else {
                        *this.a_done = true;
                    }
                }
                Poll::Pending => {}
            }
        }
        if *this.a_done && *this.b_done {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::concat`](crate::FlowOps::concat): all of the first input, then
    /// all of the second. The second is not polled before the first completes.
    #[must_use = "streams do nothing unless polled"]
    pub struct Concat<A, B> {
        #[pin]
        a: A,
        #[pin]
        b: B,
        a_done: bool,
        // Set after an error: the stream is finished.
        failed: bool,
    }
}

impl<A, B> Concat<A, B> {
    pub(crate) fn new(a: A, b: B) -> Self {
        Concat {
            a,
            b,
            a_done: false,
            failed: false,
        }
    }
}

impl<A, B, T> Stream for Concat<A, B>
where
    A: Stream<Item = Item<T>>,
    B: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let next = if *this.a_done {
            this.b.poll_next(cx)
        } else {
            match this.a.poll_next(cx) {
                Poll::Ready(None) => {
                    *this.a_done = true;
                    this.b.poll_next(cx)
                }
                other => other,
            }
        };
        if let Poll::Ready(Some(Err(_))) = &next {
            *this.failed = true;
        }
        next
    }
}

pin_project! {
    /// Stream for [`FlowOps::zip_with`](crate::FlowOps::zip_with) (and `zip`): pairs one
    /// element of each input; completes when either input completes.
    #[must_use = "streams do nothing unless polled"]
    pub struct ZipWith<A, B, TA, TB, F> {
        #[pin]
        a: A,
        #[pin]
        b: B,
        left: Option<TA>,
        right: Option<TB>,
        f: F,
        done: bool,
    }
}

impl<A, B, TA, TB, F> ZipWith<A, B, TA, TB, F> {
    pub(crate) fn new(a: A, b: B, f: F) -> Self {
        ZipWith {
            a,
            b,
            left: None,
            right: None,
            f,
            done: false,
        }
    }
}

impl<A, B, TA, TB, F, U> Stream for ZipWith<A, B, TA, TB, F>
where
    A: Stream<Item = Item<TA>>,
    B: Stream<Item = Item<TB>>,
    F: FnMut(TA, TB) -> U,
{
    type Item = Item<U>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<U>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let finish = |e: Option<StreamError>, done: &mut bool| {
            *done = true;
            Poll::Ready(e.map(Err))
        };
        if this.left.is_none() {
            match this.a.poll_next(cx) {
                Poll::Ready(Some(Ok(x))) => *this.left = Some(x),
                Poll::Ready(Some(Err(e))) => return finish(Some(e), this.done),
                Poll::Ready(None) => return finish(None, this.done),
                Poll::Pending => {}
            }
        }
        if this.right.is_none() {
            match this.b.poll_next(cx) {
                Poll::Ready(Some(Ok(x))) => *this.right = Some(x),
                Poll::Ready(Some(Err(e))) => return finish(Some(e), this.done),
                Poll::Ready(None) => return finish(None, this.done),
                Poll::Pending => {}
            }
        }
        if this.left.is_some() && this.right.is_some() {
            if let (Some(l), Some(r)) = (this.left.take(), this.right.take()) {
                return Poll::Ready(Some(Ok((this.f)(l, r))));
            }
        }
        Poll::Pending
    }
}
