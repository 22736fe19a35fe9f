//! How records enter and results leave the serving stage: in chunks, whose
//! buffers go round between the two ends instead of being allocated per chunk
//! (a large allocation per chunk also makes glibc's allocator consolidate its
//! free lists each time, which costs more than the stage itself).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use flowstage::stage::StageOutlet;
use flowstage::{Item, StreamError};
use flowstage_model::pb::ServingResult;
use futures::Stream;

/// Empty buffers waiting to be reused (a few at most: one being filled, one
/// being drained).
pub(crate) struct Pool<T> {
    free: Arc<Mutex<Vec<VecDeque<T>>>>,
    capacity: usize,
}

impl<T> Clone for Pool<T> {
    fn clone(&self) -> Self {
        Pool {
            free: self.free.clone(),
            capacity: self.capacity,
        }
    }
}

/// Buffers kept for reuse at most.
const KEPT: usize = 4;

impl<T> Pool<T> {
    /// A pool of buffers for `capacity` elements.
    pub(crate) fn new(capacity: usize) -> Self {
        Pool {
            free: Arc::new(Mutex::new(Vec::new())),
            capacity,
        }
    }

    /// An empty buffer: a reused one if there is one.
    pub(crate) fn take(&self) -> VecDeque<T> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| VecDeque::with_capacity(self.capacity))
    }

    /// Gives `buf` back for reuse (emptied first).
    pub(crate) fn give(&self, mut buf: VecDeque<T>) {
        buf.clear();
        if buf.capacity() == 0 {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEPT {
            free.push(buf);
        }
    }
}

/// The data inlet's stream: what the record stream has ready, up to the
/// pool's capacity, as one chunk (never waiting to fill one up).
pub(crate) struct Chunks<S, R> {
    stream: Pin<Box<S>>,
    pool: Pool<R>,
    /// An error or the end seen after a chunk's records: reported next.
    end: Option<Option<StreamError>>,
}

impl<S, R> Chunks<S, R> {
    pub(crate) fn new(stream: S, pool: Pool<R>) -> Self {
        Chunks {
            stream: Box::pin(stream),
            pool,
            end: None,
        }
    }
}

impl<S, R> Stream for Chunks<S, R>
where
    S: Stream<Item = Item<R>>,
{
    type Item = Item<VecDeque<R>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(end) = this.end.as_mut() {
            return Poll::Ready(end.take().map(Err));
        }
        let mut chunk: Option<VecDeque<R>> = None;
        loop {
            match this.stream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(r))) => {
                    let c = chunk.get_or_insert_with(|| this.pool.take());
                    c.push_back(r);
                    if c.len() >= this.pool.capacity {
                        return Poll::Ready(chunk.map(Ok));
                    }
                }
                Poll::Pending => {
                    return match chunk {
                        Some(c) => Poll::Ready(Some(Ok(c))),
                        None => Poll::Pending,
                    }
                }
                Poll::Ready(end) => {
                    let err = end.and_then(Result::err);
                    return match chunk {
                        Some(c) => {
                            this.end = Some(err);
                            Poll::Ready(Some(Ok(c)))
                        }
                        None => {
                            this.end = Some(None);
                            Poll::Ready(err.map(Err))
                        }
                    };
                }
            }
        }
    }
}

/// The stream of a serving stage's results: one per record, in record order
/// (the stage hands them over in chunks; this yields them one by one).
#[must_use = "streams do nothing unless polled"]
pub struct ResultStream {
    chunks: StageOutlet<VecDeque<ServingResult>>,
    current: VecDeque<ServingResult>,
    pool: Pool<ServingResult>,
}

impl ResultStream {
    pub(crate) fn new(
        chunks: StageOutlet<VecDeque<ServingResult>>,
        pool: Pool<ServingResult>,
    ) -> Self {
        ResultStream {
            chunks,
            current: VecDeque::new(),
            pool,
        }
    }
}

impl fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultStream")
            .field("buffered", &self.current.len())
            .finish_non_exhaustive()
    }
}

impl Stream for ResultStream {
    type Item = Item<ServingResult>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(r) = this.current.pop_front() {
                return Poll::Ready(Some(Ok(r)));
            }
            match Pin::new(&mut this.chunks).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let drained = std::mem::replace(&mut this.current, chunk);
                    this.pool.give(drained);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
