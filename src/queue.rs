//! Bounded buffers: overflow strategies, [`Source::queue`](crate::Source::queue),
//! `buffer`, async boundaries, `conflate` and `batch`.
//!
//! All of them run the producing side independently of the consuming side —
//! on its own tokio task for upstream streams, or in the callers of
//! [`SourceQueue::offer`] — and meet in one bounded, lock-protected buffer.
//! Elements cross the boundary in batches, so the lock is taken once per
//! batch rather than once per element.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use tokio::sync::Notify;

use crate::error::{Item, StreamError};

/// What a bounded buffer does when an element arrives and it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowStrategy {
    /// Stop pulling from upstream (or make `offer` wait) until there is room. Nothing is lost.
    #[default]
    Backpressure,
    /// Drop the oldest buffered element to make room for the new one.
    DropHead,
    /// Drop the youngest buffered element to make room for the new one.
    DropTail,
    /// Drop every buffered element, then buffer the new one.
    DropBuffer,
    /// Drop the new element.
    DropNew,
    /// Fail the stream with [`StreamError::BufferOverflow`].
    Fail,
}

/// The outcome of [`SourceQueue::offer`].
#[derive(Debug, Clone)]
pub enum QueueOfferResult {
    /// The element was buffered.
    Enqueued,
    /// The element was dropped by the overflow strategy.
    Dropped,
    /// The queue is completed, failed, or its stream was cancelled.
    QueueClosed,
    /// The element overflowed a queue with [`OverflowStrategy::Fail`]; the stream failed.
    Failure(StreamError),
}

impl QueueOfferResult {
    /// Whether the element was buffered.
    pub fn is_enqueued(&self) -> bool {
        matches!(self, QueueOfferResult::Enqueued)
    }
}

/// How a producer ended.
#[derive(Debug, Clone)]
enum End {
    Completed,
    Failed(StreamError),
}

struct State<T> {
    queue: VecDeque<T>,
    /// Elements the consumer took into its local batch and has not emitted yet.
    outstanding: usize,
    end: Option<End>,
    consumer_gone: bool,
    consumer_waker: Option<Waker>,
    /// The pump task, while it waits on upstream (woken when the consumer goes away).
    producer_waker: Option<Waker>,
}

pub(crate) struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    strategy: OverflowStrategy,
    room: Notify,
    dropped: AtomicU64,
}

impl<T> Shared<T> {
    fn new(capacity: usize, strategy: OverflowStrategy) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                outstanding: 0,
                end: None,
                consumer_gone: false,
                consumer_waker: None,
                producer_waker: None,
            }),
            capacity: capacity.max(1),
            strategy,
            room: Notify::new(),
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The critical sections below never panic; recover the data if a
        // panic elsewhere poisoned the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn free(&self, st: &State<T>) -> usize {
        self.capacity
            .saturating_sub(st.queue.len() + st.outstanding)
    }

    /// Inserts one element under the overflow strategy. Returns how it went.
    fn insert(&self, st: &mut State<T>, x: T) -> QueueOfferResult {
        if st.end.is_some() || st.consumer_gone {
            return QueueOfferResult::QueueClosed;
        }
        if self.free(st) > 0 {
            st.queue.push_back(x);
            return QueueOfferResult::Enqueued;
        }
        let dropped = |s: &Self| {
            let n = s.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(strategy = ?s.strategy, capacity = s.capacity, dropped_total = n, "buffer full: element dropped");
        };
        match self.strategy {
            OverflowStrategy::Backpressure => unreachable_backpressure(st, x),
            OverflowStrategy::DropHead => {
                if st.queue.pop_front().is_some() {
                    dropped(self);
                    st.queue.push_back(x);
                    QueueOfferResult::Enqueued
                } else {
                    dropped(self);
                    QueueOfferResult::Dropped
                }
            }
            OverflowStrategy::DropTail => {
                if st.queue.pop_back().is_some() {
                    dropped(self);
                    st.queue.push_back(x);
                    QueueOfferResult::Enqueued
                } else {
                    dropped(self);
                    QueueOfferResult::Dropped
                }
            }
            OverflowStrategy::DropBuffer => {
                let n = st.queue.len() as u64;
                st.queue.clear();
                if n > 0 {
                    let total = self.dropped.fetch_add(n, Ordering::Relaxed) + n;
                    tracing::warn!(
                        dropped = n,
                        dropped_total = total,
                        "buffer full: buffer dropped"
                    );
                    st.queue.push_back(x);
                    QueueOfferResult::Enqueued
                } else {
                    dropped(self);
                    QueueOfferResult::Dropped
                }
            }
            OverflowStrategy::DropNew => {
                dropped(self);
                QueueOfferResult::Dropped
            }
            OverflowStrategy::Fail => {
                let err = StreamError::BufferOverflow {
                    capacity: self.capacity,
                };
                st.end = Some(End::Failed(err.clone()));
                QueueOfferResult::Failure(err)
            }
        }
    }

    fn wake_consumer(st: &mut State<T>) {
        if let Some(w) = st.consumer_waker.take() {
            w.wake();
        }
    }

    fn finish(&self, end: End) {
        let mut st = self.lock();
        if st.end.is_none() {
            st.end = Some(end);
        }
        Self::wake_consumer(&mut st);
        drop(st);
        self.room.notify_waiters();
    }
}

// Backpressured producers only insert when there is room; keep the element
// rather than lose it if that invariant were ever broken.
fn unreachable_backpressure<T>(st: &mut State<T>, x: T) -> QueueOfferResult {
    st.queue.push_back(x);
    QueueOfferResult::Enqueued
}

/// The consuming side of a bounded buffer: a stream of what the producer put in.
#[must_use = "streams do nothing unless polled"]
pub struct QueueStream<T> {
    shared: Arc<Shared<T>>,
    local: VecDeque<T>,
    /// Elements of `local` still counted as `outstanding` in the shared state.
    taken: usize,
    /// Elements emitted from `local` since capacity was last released.
    consumed: usize,
    /// Release capacity (and let the producer refill) after this many
    /// emitted elements: half the buffer, as Akka requests more when half
    /// its input buffer is consumed. Producer and consumer then overlap
    /// instead of taking turns.
    release_every: usize,
    finished: bool,
    /// Take whole batches (backpressure) or one element at a time (drop strategies,
    /// so that dropping works on everything not yet emitted).
    batch: bool,
    /// Started lazily on first poll (the async boundary's pump task).
    starter: Option<Box<dyn FnOnce() + Send>>,
}

impl<T> QueueStream<T> {
    fn new(shared: Arc<Shared<T>>) -> Self {
        let batch = shared.strategy == OverflowStrategy::Backpressure;
        let release_every = (shared.capacity / 2).max(1);
        QueueStream {
            shared,
            local: VecDeque::new(),
            taken: 0,
            consumed: 0,
            release_every,
            finished: false,
            batch,
            starter: None,
        }
    }

    /// Elements dropped so far by the overflow strategy.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl<T> Unpin for QueueStream<T> {}

impl<T> Stream for QueueStream<T> {
    type Item = Item<T>;

    #[inline]
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = &mut *self;
        if let Some(x) = this.local.pop_front() {
            if this.batch {
                this.consumed += 1;
                if this.consumed >= this.release_every {
                    // Give back what was emitted and take what the producer
                    // added meanwhile; wake it to refill the freed room.
                    let mut st = this.shared.lock();
                    st.outstanding -= this.consumed;
                    this.taken -= this.consumed;
                    this.consumed = 0;
                    let more = st.queue.len();
                    if more > 0 {
                        this.local.extend(st.queue.drain(..));
                        this.taken += more;
                        st.outstanding += more;
                    }
                    drop(st);
                    this.shared.room.notify_waiters();
                }
            }
            return Poll::Ready(Some(Ok(x)));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(start) = this.starter.take() {
            start();
        }
        let mut st = this.shared.lock();
        let released = this.taken > 0;
        st.outstanding -= this.taken;
        this.taken = 0;
        this.consumed = 0;
        if !st.queue.is_empty() {
            if this.batch {
                std::mem::swap(&mut this.local, &mut st.queue);
            } else if let Some(x) = st.queue.pop_front() {
                this.local.push_back(x);
            }
            // A batch taken into `local` still counts against the capacity until
            // it is emitted; a single element is handed downstream right away and
            // must not (or the drop strategies would keep one element too few).
            this.taken = if this.batch { this.local.len() } else { 0 };
            st.outstanding += this.taken;
            drop(st);
            this.shared.room.notify_waiters();
            return match this.local.pop_front() {
                Some(x) => Poll::Ready(Some(Ok(x))),
                None => Poll::Ready(None), // unreachable: the queue was not empty
            };
        }
        let result = match st.end.clone() {
            Some(End::Completed) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Some(End::Failed(e)) => {
                this.finished = true;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                st.consumer_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        };
        drop(st);
        if released {
            this.shared.room.notify_waiters();
        }
        result
    }
}

impl<T> std::ops::Drop for QueueStream<T> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.consumer_gone = true;
        st.queue.clear();
        let producer = st.producer_waker.take();
        drop(st);
        self.shared.room.notify_waiters();
        // The pump may be waiting on an idle upstream: wake it so it cancels it.
        if let Some(w) = producer {
            w.wake();
        }
    }
}

/// Drives `upstream` into the buffer until it ends or the consumer goes away.
async fn pump<S, T>(upstream: S, shared: Arc<Shared<T>>)
where
    S: Stream<Item = Item<T>>,
{
    const MAX_BATCH: usize = 4096;
    // Declared before `upstream`, so dropped after it (a panic unwinds here too).
    let _end = EndOnDrop(|| shared.finish(End::Failed(StreamError::Abrupt(PUMP_STOPPED))));
    let mut upstream = std::pin::pin!(upstream);
    let backpressure = shared.strategy == OverflowStrategy::Backpressure;
    let mut batch: Vec<T> = Vec::new();
    loop {
        // Wait for room (backpressure only). A drop strategy pulls what fits, and when the
        // buffer is still full after the consumer had its turn (each round ends with a yield),
        // pulls a buffer's worth for the strategy to drop from: it drops only what a slower
        // consumer could not take, never because the upstream had many elements ready at once.
        let room = loop {
            let notified = shared.room.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let st = shared.lock();
                if st.consumer_gone || st.end.is_some() {
                    return;
                }
                let free = shared.free(&st);
                if free > 0 {
                    break free.min(MAX_BATCH);
                }
                if !backpressure {
                    // `Fail` needs one element to overflow.
                    break match shared.strategy {
                        OverflowStrategy::Fail => 1,
                        _ => shared.capacity.min(MAX_BATCH),
                    };
                }
            }
            notified.await;
        };
        // Pull what is ready, up to `room` elements.
        let end = futures::future::poll_fn(|cx| {
            {
                let mut st = shared.lock();
                if st.consumer_gone {
                    // Cancelled downstream: stop, dropping (cancelling) upstream.
                    return Poll::Ready(Err(()));
                }
                match &st.producer_waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => st.producer_waker = Some(cx.waker().clone()),
                }
            }
            let mut end = None;
            while batch.len() < room {
                match upstream.as_mut().poll_next(cx) {
                    Poll::Ready(Some(Ok(x))) => batch.push(x),
                    Poll::Ready(Some(Err(e))) => {
                        end = Some(End::Failed(e));
                        break;
                    }
                    Poll::Ready(None) => {
                        end = Some(End::Completed);
                        break;
                    }
                    Poll::Pending => {
                        if batch.is_empty() {
                            return Poll::Pending;
                        }
                        break;
                    }
                }
            }
            Poll::Ready(Ok(end))
        })
        .await;
        let Ok(end) = end else { return };
        {
            let mut st = shared.lock();
            if backpressure && st.end.is_none() && !st.consumer_gone {
                // `room` was free when the batch was pulled and only the
                // consumer runs meanwhile, which frees more: no overflow
                // possible, so move the batch in one go.
                st.queue.extend(batch.drain(..));
            }
            for x in batch.drain(..) {
                if let QueueOfferResult::Failure(_) | QueueOfferResult::QueueClosed =
                    shared.insert(&mut st, x)
                {
                    break;
                }
            }
            Shared::wake_consumer(&mut st);
        }
        batch.clear();
        if let Some(end) = end {
            shared.finish(end);
            return;
        }
        // Be a good citizen on a busy runtime.
        tokio::task::yield_now().await;
    }
}

/// Where the producing side of a buffer runs.
pub(crate) enum Runner {
    /// A tokio task of its own; the operator's name, for the error outside
    /// a runtime.
    Task(&'static str),
    /// An OS thread of its own with this name, driving upstream with the
    /// handle of the runtime that first polled the buffer (or, outside a
    /// runtime, with a plain executor).
    Thread(String),
}

impl Runner {
    /// Starts `pump`; `fail` ends the stream when it cannot be started.
    fn start<F>(self, pump: F, fail: impl FnOnce(StreamError))
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self {
            Runner::Task(what) => {
                if let Err(e) = spawn(what, pump) {
                    fail(e);
                }
            }
            Runner::Thread(name) => {
                let handle = tokio::runtime::Handle::try_current().ok();
                let spawned = std::thread::Builder::new()
                    .name(name.clone())
                    .spawn(move || match handle {
                        Some(h) => h.block_on(pump),
                        None => futures::executor::block_on(pump),
                    });
                if let Err(e) = spawned {
                    fail(StreamError::msg(format!(
                        "cannot start the thread {name:?} of an async boundary: {e}"
                    )));
                }
            }
        }
    }
}

/// Spawns `task` on the current tokio runtime, or fails with
/// [`StreamError::NoRuntime`] naming `what` where `tokio::spawn` would panic:
/// polled outside a runtime.
pub(crate) fn spawn<F>(what: &'static str, task: F) -> Result<(), StreamError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::runtime::Handle::try_current().map_err(|_| StreamError::NoRuntime(what))?;
    handle.spawn(task);
    Ok(())
}

/// Ends the stream as [`StreamError::Abrupt`] when a pump stops without
/// having ended it: upstream panicked, or the runtime dropped the task.
struct EndOnDrop<F: FnMut()>(F);

impl<F: FnMut()> std::ops::Drop for EndOnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

const PUMP_STOPPED: &str =
    "the upstream of a buffer or async boundary stopped (it panicked, or its runtime shut down)";

/// Runs `upstream` behind a buffer of `capacity` elements with the given
/// overflow strategy, on its own tokio task or thread (`runner`), started on
/// first poll.
pub(crate) fn spawn_buffered<S, T>(
    upstream: S,
    capacity: usize,
    strategy: OverflowStrategy,
    runner: Runner,
) -> QueueStream<T>
where
    S: Stream<Item = Item<T>> + Send + 'static,
    T: Send + 'static,
{
    let shared = Shared::new(capacity, strategy);
    let mut stream = QueueStream::new(shared.clone());
    stream.starter = Some(Box::new(move || {
        let failed = shared.clone();
        runner.start(pump(upstream, shared), move |e| {
            failed.finish(End::Failed(e))
        });
    }));
    stream
}

/// The materialized value of [`Source::queue`](crate::Source::queue): offer
/// elements into the stream from anywhere. Clones feed the same stream; when
/// the last clone is dropped the stream completes.
pub struct SourceQueue<T> {
    shared: Arc<Shared<T>>,
    _guard: Arc<QueueGuard<T>>,
}

impl<T> Clone for SourceQueue<T> {
    fn clone(&self) -> Self {
        SourceQueue {
            shared: self.shared.clone(),
            _guard: self._guard.clone(),
        }
    }
}

impl<T> std::fmt::Debug for SourceQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceQueue")
            .field("capacity", &self.shared.capacity)
            .field("strategy", &self.shared.strategy)
            .finish()
    }
}

struct QueueGuard<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::ops::Drop for QueueGuard<T> {
    fn drop(&mut self) {
        self.shared.finish(End::Completed);
    }
}

pub(crate) fn source_queue<T>(
    capacity: usize,
    strategy: OverflowStrategy,
) -> (SourceQueue<T>, QueueStream<T>) {
    let shared = Shared::new(capacity, strategy);
    let stream = QueueStream::new(shared.clone());
    let guard = Arc::new(QueueGuard {
        shared: shared.clone(),
    });
    (
        SourceQueue {
            shared,
            _guard: guard,
        },
        stream,
    )
}

impl<T> SourceQueue<T> {
    /// Offers an element. With [`OverflowStrategy::Backpressure`] this waits
    /// until there is room; with the other strategies it returns at once.
    pub async fn offer(&self, x: T) -> QueueOfferResult {
        let mut x = Some(x);
        loop {
            let notified = self.shared.room.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if st.end.is_some() || st.consumer_gone {
                    return QueueOfferResult::QueueClosed;
                }
                let must_wait = self.shared.strategy == OverflowStrategy::Backpressure
                    && self.shared.free(&st) == 0;
                if !must_wait {
                    let Some(v) = x.take() else {
                        return QueueOfferResult::QueueClosed;
                    };
                    let r = self.shared.insert(&mut st, v);
                    Shared::wake_consumer(&mut st);
                    return r;
                }
            }
            notified.await;
        }
    }

    /// Offers an element without waiting: a full backpressured queue answers
    /// [`QueueOfferResult::Dropped`] and the element is given back to nobody.
    pub fn try_offer(&self, x: T) -> QueueOfferResult {
        let mut st = self.shared.lock();
        if self.shared.strategy == OverflowStrategy::Backpressure
            && self.shared.free(&st) == 0
            && st.end.is_none()
            && !st.consumer_gone
        {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return QueueOfferResult::Dropped;
        }
        let r = self.shared.insert(&mut st, x);
        Shared::wake_consumer(&mut st);
        r
    }

    /// Completes the stream after the buffered elements.
    pub fn complete(&self) {
        self.shared.finish(End::Completed);
    }

    /// Fails the stream after the buffered elements.
    pub fn fail(&self, err: StreamError) {
        self.shared.finish(End::Failed(err));
    }

    /// Elements dropped so far by the overflow strategy (or by `try_offer`).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Elements waiting in the queue. The consumer takes them in batches:
    /// those it took and has not emitted yet are not counted, though they
    /// still count against the capacity (so `try_offer` may answer
    /// `Dropped` while `len()` is below it).
    pub fn len(&self) -> usize {
        self.shared.lock().queue.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------
// conflate / batch

struct BatchState<A> {
    slot: Option<A>,
    count: u64,
    end: Option<End>,
    consumer_gone: bool,
    consumer_waker: Option<Waker>,
    /// The pump task, while it waits on upstream (woken when the consumer goes away).
    producer_waker: Option<Waker>,
}

struct BatchShared<A> {
    state: Mutex<BatchState<A>>,
    room: Notify,
    max: u64,
}

impl<A> BatchShared<A> {
    fn lock(&self) -> MutexGuard<'_, BatchState<A>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The consuming side of `conflate` / `batch`.
#[must_use = "streams do nothing unless polled"]
pub struct BatchStream<A> {
    shared: Arc<BatchShared<A>>,
    starter: Option<Box<dyn FnOnce() + Send>>,
    finished: bool,
}

impl<A> Unpin for BatchStream<A> {}

impl<A> Stream for BatchStream<A> {
    type Item = Item<A>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<A>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(start) = self.starter.take() {
            start();
        }
        let mut st = self.shared.lock();
        if let Some(a) = st.slot.take() {
            st.count = 0;
            drop(st);
            self.shared.room.notify_waiters();
            return Poll::Ready(Some(Ok(a)));
        }
        match st.end.clone() {
            Some(End::Completed) => {
                drop(st);
                self.finished = true;
                Poll::Ready(None)
            }
            Some(End::Failed(e)) => {
                drop(st);
                self.finished = true;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                st.consumer_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<A> std::ops::Drop for BatchStream<A> {
    fn drop(&mut self) {
        let producer = {
            let mut st = self.shared.lock();
            st.consumer_gone = true;
            st.producer_waker.take()
        };
        self.shared.room.notify_waiters();
        // The pump may be waiting on an idle upstream: wake it so it cancels it.
        if let Some(w) = producer {
            w.wake();
        }
    }
}

pub(crate) fn spawn_batch<S, T, A, Cost, Seed, Agg>(
    what: &'static str,
    upstream: S,
    max: u64,
    mut cost: Cost,
    mut seed: Seed,
    mut aggregate: Agg,
) -> BatchStream<A>
where
    S: Stream<Item = Item<T>> + Send + 'static,
    T: Send + 'static,
    A: Send + 'static,
    Cost: FnMut(&T) -> u64 + Send + 'static,
    Seed: FnMut(T) -> A + Send + 'static,
    Agg: FnMut(A, T) -> A + Send + 'static,
{
    let shared = Arc::new(BatchShared {
        state: Mutex::new(BatchState {
            slot: None,
            count: 0,
            end: None,
            consumer_gone: false,
            consumer_waker: None,
            producer_waker: None,
        }),
        room: Notify::new(),
        max: max.max(1),
    });
    let pump_shared = shared.clone();
    let failed = shared.clone();
    let task = async move {
        let shared = pump_shared;
        // Declared before `upstream`, so dropped after it (a panic unwinds here too).
        let _end = EndOnDrop(|| {
            let mut st = shared.lock();
            if st.end.is_none() {
                st.end = Some(End::Failed(StreamError::Abrupt(PUMP_STOPPED)));
            }
            if let Some(w) = st.consumer_waker.take() {
                w.wake();
            }
        });
        let mut upstream = std::pin::pin!(upstream);
        let mut since_yield = 0u32;
        loop {
            // An always-ready upstream never makes this task wait: yield now and
            // then so that the consumer (maybe on the same thread) gets to run.
            since_yield += 1;
            if since_yield == 64 {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
            // Wait while the aggregate is full.
            loop {
                let notified = shared.room.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                {
                    let st = shared.lock();
                    if st.consumer_gone {
                        return;
                    }
                    if st.count < shared.max {
                        break;
                    }
                }
                notified.await;
            }
            let next = futures::future::poll_fn(|cx| {
                {
                    let mut st = shared.lock();
                    if st.consumer_gone {
                        // Cancelled downstream: stop, dropping (cancelling) upstream.
                        return Poll::Ready(Err(()));
                    }
                    match &st.producer_waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => st.producer_waker = Some(cx.waker().clone()),
                    }
                }
                upstream.as_mut().poll_next(cx).map(Ok)
            })
            .await;
            let Ok(next) = next else { return };
            let mut st = shared.lock();
            match next {
                Some(Ok(x)) => {
                    st.count = st.count.saturating_add(cost(&x));
                    st.slot = Some(match st.slot.take() {
                        Some(a) => aggregate(a, x),
                        None => seed(x),
                    });
                }
                Some(Err(e)) => st.end = Some(End::Failed(e)),
                None => st.end = Some(End::Completed),
            }
            let ended = st.end.is_some();
            if let Some(w) = st.consumer_waker.take() {
                w.wake();
            }
            drop(st);
            if ended {
                return;
            }
        }
    };
    BatchStream {
        shared,
        starter: Some(Box::new(move || {
            if let Err(e) = spawn(what, task) {
                failed.lock().end = Some(End::Failed(e));
            }
        })),
        finished: false,
    }
}
