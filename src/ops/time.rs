use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::{Item, StreamError};

pin_project! {
    /// Stream for [`FlowOps::throttle`](crate::FlowOps::throttle): a token bucket that
    /// delays elements (shaping), never drops them.
    #[must_use = "streams do nothing unless polled"]
    pub struct Throttle<S, T> {
        #[pin]
        stream: S,
        // Nanoseconds of "credit" one element costs.
        cost: u128,
        // Maximum credit (burst) in nanoseconds.
        capacity: u128,
        credit: u128,
        last: Option<Instant>,
        held: Option<T>,
        delay: Option<Pin<Box<Sleep>>>,
    }
}

impl<S, T> Throttle<S, T> {
    pub(crate) fn new(stream: S, elements: u32, per: Duration, burst: u32) -> Self {
        let elements = u128::from(elements.max(1));
        let cost = (per.as_nanos() / elements).max(1);
        let capacity = cost * u128::from(burst.max(1));
        Throttle {
            stream,
            cost,
            capacity,
            credit: capacity,
            last: None,
            held: None,
            delay: None,
        }
    }
}

impl<S, T> Stream for Throttle<S, T>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut this = self.project();
        loop {
            if this.held.is_none() {
                match this.stream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(x))) => *this.held = Some(x),
                    other => return other,
                }
            }
            if let Some(delay) = this.delay.as_mut() {
                if delay.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *this.delay = None;
            }
            let now = Instant::now();
            if let Some(last) = *this.last {
                let earned = now.saturating_duration_since(last).as_nanos();
                *this.credit = (*this.credit + earned).min(*this.capacity);
            }
            *this.last = Some(now);
            if *this.credit >= *this.cost {
                *this.credit -= *this.cost;
                if let Some(x) = this.held.take() {
                    return Poll::Ready(Some(Ok(x)));
                }
            } else {
                let missing = *this.cost - *this.credit;
                let wait = Duration::from_nanos(u64::try_from(missing).unwrap_or(u64::MAX));
                *this.delay = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::idle_timeout`](crate::FlowOps::idle_timeout).
    #[must_use = "streams do nothing unless polled"]
    pub struct IdleTimeout<S> {
        #[pin]
        stream: S,
        timeout: Duration,
        // Created at the first poll: the idle clock starts when the stream runs
        // (and building the graph needs no runtime).
        timer: Option<Pin<Box<Sleep>>>,
        done: bool,
    }
}

impl<S> IdleTimeout<S> {
    pub(crate) fn new(stream: S, timeout: Duration) -> Self {
        IdleTimeout {
            stream,
            timeout,
            timer: None,
            done: false,
        }
    }
}

impl<S, T> Stream for IdleTimeout<S>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let timeout = *this.timeout;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match this.stream.poll_next(cx) {
            Poll::Ready(next) => {
                timer.as_mut().reset(Instant::now() + timeout);
                if !matches!(next, Some(Ok(_))) {
                    *this.done = true;
                }
                Poll::Ready(next)
            }
            Poll::Pending => {
                if timer.as_mut().poll(cx).is_ready() {
                    *this.done = true;
                    return Poll::Ready(Some(Err(StreamError::IdleTimeout(timeout))));
                }
                Poll::Pending
            }
        }
    }
}

pin_project! {
    /// Stream for [`FlowOps::completion_timeout`](crate::FlowOps::completion_timeout).
    #[must_use = "streams do nothing unless polled"]
    pub struct CompletionTimeout<S> {
        #[pin]
        stream: S,
        timeout: Duration,
        deadline: Option<Pin<Box<Sleep>>>,
        done: bool,
    }
}

impl<S> CompletionTimeout<S> {
    pub(crate) fn new(stream: S, timeout: Duration) -> Self {
        CompletionTimeout {
            stream,
            timeout,
            deadline: None,
            done: false,
        }
    }
}

impl<S, T> Stream for CompletionTimeout<S>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        // The clock starts at the first demand (materialization in Akka terms).
        let timeout = *this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            *this.done = true;
            return Poll::Ready(Some(Err(StreamError::CompletionTimeout(timeout))));
        }
        match this.stream.poll_next(cx) {
            Poll::Ready(next) => {
                if !matches!(next, Some(Ok(_))) {
                    *this.done = true;
                }
                Poll::Ready(next)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
