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
use flowstage_model::{ModelError, Score};
use futures::Stream;

/// A buffer that goes round: emptied and reused.
pub(crate) trait Buffer {
    fn with_capacity(capacity: usize) -> Self;
    fn clear(&mut self);
    fn capacity(&self) -> usize;
}

impl<T> Buffer for VecDeque<T> {
    fn with_capacity(capacity: usize) -> Self {
        VecDeque::with_capacity(capacity)
    }
    fn clear(&mut self) {
        VecDeque::clear(self)
    }
    fn capacity(&self) -> usize {
        VecDeque::capacity(self)
    }
}

/// Empty buffers waiting to be reused (a few at most: one being filled, one
/// being drained).
pub(crate) struct Pool<B> {
    free: Arc<Mutex<Vec<B>>>,
    capacity: usize,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool {
            free: self.free.clone(),
            capacity: self.capacity,
        }
    }
}

/// Buffers kept for reuse at most.
const KEPT: usize = 4;

impl<B: Buffer> Pool<B> {
    /// A pool of buffers for `capacity` elements.
    pub(crate) fn new(capacity: usize) -> Self {
        Pool {
            free: Arc::new(Mutex::new(Vec::new())),
            capacity,
        }
    }

    /// An empty buffer: a reused one if there is one.
    pub(crate) fn take(&self) -> B {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| B::with_capacity(self.capacity))
    }

    /// Gives `buf` back for reuse (emptied first).
    pub(crate) fn give(&self, mut buf: B) {
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
    pool: Pool<VecDeque<R>>,
    /// An error or the end seen after a chunk's records: reported next.
    end: Option<Option<StreamError>>,
}

impl<S, R> Chunks<S, R> {
    pub(crate) fn new(stream: S, pool: Pool<VecDeque<R>>) -> Self {
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

/// The model name and dataType of results, shared by the results of a chunk.
#[derive(Clone)]
pub(crate) struct Label {
    pub(crate) model: Arc<str>,
    pub(crate) data_type: Arc<str>,
}

/// How a record fared.
pub(crate) enum Outcome {
    Scored(Score),
    Failed(ModelError),
    NoModel,
}

/// A record's result as the stage leaves it. Its [`ServingResult`] (and the
/// strings in it) is built when downstream takes it, so that each result's
/// allocations are made just before downstream uses and frees them, as a
/// plain `map` would make them; a whole chunk of results allocated ahead and
/// freed later defeats the allocator's per-thread caches.
pub(crate) struct Pending {
    pub(crate) label: u32,
    pub(crate) ns: u64,
    pub(crate) record_ts: i64,
    pub(crate) record_ts_micros: i32,
    pub(crate) record_key: Vec<u8>,
    pub(crate) outcome: Outcome,
}

impl Pending {
    /// `rec`'s pending result: `scored` by the model of `label`, in `ns`.
    #[inline]
    pub(crate) fn scored<R: super::ServingRecord>(
        rec: &R,
        label: u32,
        ns: u64,
        scored: Result<Score, ModelError>,
    ) -> Self {
        Pending {
            label,
            ns,
            record_ts: rec.record_ts(),
            record_ts_micros: rec.record_ts_micros(),
            record_key: rec.record_key(),
            outcome: match scored {
                Ok(s) => Outcome::Scored(s),
                Err(e) => Outcome::Failed(e),
            },
        }
    }

    /// The result (taking the record key; the rest is dropped with the chunk).
    fn take_result(&mut self, labels: &[Label]) -> ServingResult {
        let (model, data_type) = labels
            .get(self.label as usize)
            .map_or(("", ""), |l| (&*l.model, &*l.data_type));
        let record_key = std::mem::take(&mut self.record_key);
        let mut result = match &self.outcome {
            Outcome::Scored(score) => score.to_serving_result_for(
                model,
                data_type,
                std::time::Duration::from_nanos(self.ns),
                self.record_ts,
                record_key,
            ),
            Outcome::Failed(e) => ServingResult {
                processed: false,
                model_name: model.to_string(),
                data_type: data_type.to_string(),
                duration_ns: i64::try_from(self.ns).unwrap_or(i64::MAX),
                error: e.to_string(),
                record_ts: self.record_ts,
                record_key,
                ..Default::default()
            },
            Outcome::NoModel => ServingResult {
                processed: false,
                data_type: data_type.to_string(),
                error: format!("not processed: no model for dataType {data_type}"),
                record_ts: self.record_ts,
                record_key,
                ..Default::default()
            },
        };
        result.record_ts_micros = self.record_ts_micros;
        result
    }
}

/// The results of a chunk of records, in record order.
pub(crate) struct ResultChunk {
    pub(crate) labels: Vec<Label>,
    pub(crate) items: Vec<Pending>,
}

impl ResultChunk {
    /// The index of the label (`model`, `data_type`) in this chunk (compared
    /// by pointer: a model's label is one `Arc` for its lifetime).
    #[inline]
    pub(crate) fn label(&mut self, model: &Arc<str>, data_type: &Arc<str>) -> u32 {
        if let Some(last) = self.labels.last() {
            if Arc::ptr_eq(&last.model, model) && Arc::ptr_eq(&last.data_type, data_type) {
                return (self.labels.len() - 1) as u32;
            }
        }
        self.labels.push(Label {
            model: model.clone(),
            data_type: data_type.clone(),
        });
        (self.labels.len() - 1) as u32
    }

    /// The index of the label of a record of `data_type` without a model.
    pub(crate) fn no_model_label(&mut self, data_type: &str) -> u32 {
        if let Some(last) = self.labels.last() {
            if last.model.is_empty() && &*last.data_type == data_type {
                return (self.labels.len() - 1) as u32;
            }
        }
        self.labels.push(Label {
            model: Arc::from(""),
            data_type: Arc::from(data_type),
        });
        (self.labels.len() - 1) as u32
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

impl Buffer for ResultChunk {
    fn with_capacity(capacity: usize) -> Self {
        ResultChunk {
            labels: Vec::new(),
            items: Vec::with_capacity(capacity),
        }
    }
    fn clear(&mut self) {
        self.labels.clear();
        self.items.clear();
    }
    fn capacity(&self) -> usize {
        self.items.capacity()
    }
}

/// The stream of a serving stage's results: one per record, in record order
/// (the stage hands them over in chunks; this yields them one by one).
#[must_use = "streams do nothing unless polled"]
pub struct ResultStream {
    chunks: StageOutlet<ResultChunk>,
    current: ResultChunk,
    /// The next result of `current` to hand out.
    next: usize,
    pool: Pool<ResultChunk>,
}

impl ResultStream {
    pub(crate) fn new(chunks: StageOutlet<ResultChunk>, pool: Pool<ResultChunk>) -> Self {
        ResultStream {
            chunks,
            current: ResultChunk::with_capacity(0),
            next: 0,
            pool,
        }
    }
}

impl fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultStream")
            .field("buffered", &self.current.len().saturating_sub(self.next))
            .finish_non_exhaustive()
    }
}

impl Stream for ResultStream {
    type Item = Item<ServingResult>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let ResultChunk { labels, items } = &mut this.current;
            // Read in place: each one is dropped with its chunk, not moved out first.
            if let Some(p) = items.get_mut(this.next) {
                this.next += 1;
                return Poll::Ready(Some(Ok(p.take_result(labels))));
            }
            match Pin::new(&mut this.chunks).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let drained = std::mem::replace(&mut this.current, chunk);
                    this.next = 0;
                    this.pool.give(drained);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
