use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use pin_project_lite::pin_project;

use crate::error::Item;

pin_project! {
    /// Stream for [`FlowOps::expand`](crate::FlowOps::expand): when downstream asks and
    /// upstream has nothing new, the iterator made from the last element supplies more.
    #[must_use = "streams do nothing unless polled"]
    pub struct Expand<S, F, I> {
        #[pin]
        stream: S,
        f: F,
        current: Option<I>,
        done: bool,
    }
}

impl<S, F, I> Expand<S, F, I> {
    pub(crate) fn new(stream: S, f: F) -> Self {
        Expand {
            stream,
            f,
            current: None,
            done: false,
        }
    }
}

impl<S, F, T, II> Stream for Expand<S, F, II::IntoIter>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(T) -> II,
    II: IntoIterator,
{
    type Item = Item<II::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(x))) => {
                    let mut it = (this.f)(x).into_iter();
                    match it.next() {
                        Some(first) => {
                            *this.current = Some(it);
                            return Poll::Ready(Some(Ok(first)));
                        }
                        // An empty expansion: nothing to extrapolate from, ask again.
                        None => *this.current = None,
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    *this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if let Some(it) = this.current.as_mut() {
                        if let Some(x) = it.next() {
                            return Poll::Ready(Some(Ok(x)));
                        }
                        *this.current = None;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
