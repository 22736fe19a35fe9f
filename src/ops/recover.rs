use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;

use crate::error::{Item, StreamError};

pin_project! {
    /// Stream for [`FlowOps::recover`](crate::FlowOps::recover).
    #[must_use = "streams do nothing unless polled"]
    pub struct Recover<S, F> {
        #[pin]
        stream: S,
        f: F,
        done: bool,
    }
}

impl<S, F> Recover<S, F> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        Recover {
            stream,
            f,
            done: false,
        }
    }
}

impl<S, F, T> Stream for Recover<S, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(&StreamError) -> Option<T>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match ready!(this.stream.poll_next(cx)) {
            Some(Ok(x)) => Poll::Ready(Some(Ok(x))),
            Some(Err(e)) => {
                *this.done = true;
                match (this.f)(&e) {
                    Some(x) => Poll::Ready(Some(Ok(x))),
                    None => Poll::Ready(Some(Err(e))),
                }
            }
            None => {
                *this.done = true;
                Poll::Ready(None)
            }
        }
    }
}
