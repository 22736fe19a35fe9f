//! Fan-out junctions: broadcast, balance, partition, unzip.
//!
//! Each junction shares its upstream between several output streams. The
//! outputs can be consumed by one task (a diamond re-joined with `zip` or
//! `merge`) or by different tasks; whoever needs the next element polls the
//! upstream, and the junction wakes the other outputs when their element or
//! their turn arrives. The upstream's wake-up reaches every output that
//! waits, so an output whose task is busy elsewhere never holds up the
//! others. Nothing is buffered beyond one element per output.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures::Stream;

use crate::error::{Item, StreamError};

enum End {
    Completed,
    Failed(StreamError),
}

/// The outputs that wait for the upstream, and the waker the upstream is
/// polled with: when the upstream has an element, it wakes every one of
/// them, not only the output that polled it last. (An upstream keeps one
/// waker, the last poller's; if that output's task were busy elsewhere, or
/// consuming another branch, the others would wait for it to come back.)
struct UpstreamWaiters {
    wakers: Mutex<Vec<Option<Waker>>>,
    /// How many of `wakers` are set, so that the junction's own wake-ups
    /// skip the lock when none is. It changes only under the junction's
    /// lock (when an output waits or stops waiting) and when the upstream
    /// wakes them.
    waiting: AtomicUsize,
}

impl UpstreamWaiters {
    fn new(n: usize) -> Self {
        UpstreamWaiters {
            wakers: Mutex::new(vec![None; n]),
            waiting: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<Waker>>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Output `i` waits, to be woken with `waker`.
    fn wait(&self, i: usize, waker: &Waker) {
        let mut wakers = self.lock();
        let Some(slot) = wakers.get_mut(i) else {
            return;
        };
        match slot {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            None => {
                *slot = Some(waker.clone());
                self.waiting.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Output `i` waits no more.
    fn stop_waiting(&self, i: usize) {
        if self.lock().get_mut(i).and_then(Option::take).is_some() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Wakes every waiting output, each waker taken out of the lock first
    /// (a waker may run code that waits again).
    fn wake_all(&self) {
        let n = self.lock().len();
        for i in 0..n {
            let w = self.lock().get_mut(i).and_then(Option::take);
            if let Some(w) = w {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                w.wake();
            }
        }
    }
}

impl std::task::Wake for UpstreamWaiters {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

struct Core<S, Slot> {
    upstream: Pin<Box<S>>,
    slots: Vec<Option<Slot>>,
    alive: Vec<bool>,
    told_failure: Vec<bool>,
    /// Outputs waiting on the junction itself (a slot to empty, an element
    /// for another output to be taken).
    wakers: Vec<Option<Waker>>,
    /// Outputs waiting on the upstream.
    waiters: Arc<UpstreamWaiters>,
    /// [`waiters`](Self::waiters) as a waker, for polling the upstream.
    upstream_waker: Waker,
    end: Option<End>,
}

impl<S, Slot> Core<S, Slot> {
    fn new(upstream: S, n: usize) -> Self {
        let waiters = Arc::new(UpstreamWaiters::new(n));
        Core {
            upstream: Box::pin(upstream),
            slots: (0..n).map(|_| None).collect(),
            alive: vec![true; n],
            told_failure: vec![false; n],
            wakers: vec![None; n],
            upstream_waker: Waker::from(waiters.clone()),
            waiters,
            end: None,
        }
    }

    fn wake_all(&mut self) {
        for w in self.wakers.iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
        if self.waiters.waiting.load(Ordering::SeqCst) > 0 {
            self.waiters.wake_all();
        }
    }

    fn register(&mut self, i: usize, cx: &Context<'_>) {
        match &self.wakers[i] {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.wakers[i] = Some(cx.waker().clone()),
        }
    }

    /// The terminal signal for output `i`, if the junction has ended.
    fn ended<T>(&mut self, i: usize) -> Option<Poll<Option<Item<T>>>> {
        match &self.end {
            None => None,
            Some(End::Completed) => Some(Poll::Ready(None)),
            Some(End::Failed(e)) => {
                if self.told_failure[i] {
                    Some(Poll::Ready(None))
                } else {
                    self.told_failure[i] = true;
                    Some(Poll::Ready(Some(Err(e.clone()))))
                }
            }
        }
    }

    fn end_with(&mut self, end: End) {
        self.end = Some(end);
        self.wake_all();
    }

    /// Polls the upstream on behalf of output `i`: an element, or what output
    /// `i` answers instead — the failure or completion (recorded for every
    /// output), or `Pending` with `i` waiting for the upstream.
    fn pull<T>(&mut self, i: usize, cx: &mut Context<'_>) -> Result<T, Halt>
    where
        S: Stream<Item = Item<T>>,
    {
        let mut upstream_cx = Context::from_waker(&self.upstream_waker);
        let mut polled = self.upstream.as_mut().poll_next(&mut upstream_cx);
        if polled.is_pending() {
            // Wait, then look once more: the upstream may have woken its
            // waiters between the first look and the wait.
            self.waiters.wait(i, cx.waker());
            polled = self.upstream.as_mut().poll_next(&mut upstream_cx);
            if polled.is_ready() {
                self.waiters.stop_waiting(i);
            }
        }
        match polled {
            Poll::Ready(Some(Ok(x))) => Ok(x),
            Poll::Ready(Some(Err(e))) => {
                self.told_failure[i] = true;
                self.end_with(End::Failed(e.clone()));
                Err(Halt::Failed(e))
            }
            Poll::Ready(None) => {
                self.end_with(End::Completed);
                Err(Halt::Completed)
            }
            Poll::Pending => Err(Halt::Pending),
        }
    }

    fn cancel(&mut self, i: usize) {
        self.alive[i] = false;
        self.slots[i] = None;
        self.wakers[i] = None;
        self.waiters.stop_waiting(i);
        self.wake_all();
    }
}

/// Why [`Core::pull`] gave no element.
enum Halt {
    Failed(StreamError),
    Completed,
    Pending,
}

impl Halt {
    /// What the output answers its consumer.
    fn answer<U>(self) -> Poll<Option<Item<U>>> {
        match self {
            Halt::Failed(e) => Poll::Ready(Some(Err(e))),
            Halt::Completed => Poll::Ready(None),
            Halt::Pending => Poll::Pending,
        }
    }
}

type Shared<S, Slot> = Arc<Mutex<Core<S, Slot>>>;

fn lock<S, Slot>(core: &Shared<S, Slot>) -> MutexGuard<'_, Core<S, Slot>> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// One output of [`Source::broadcast`](crate::Source::broadcast).
#[must_use = "streams do nothing unless polled"]
pub struct BroadcastOutlet<S, T> {
    core: Shared<S, T>,
    index: usize,
}

pub(crate) fn broadcast<S, T>(upstream: S, n: usize) -> Vec<BroadcastOutlet<S, T>> {
    let core = Arc::new(Mutex::new(Core::new(upstream, n)));
    (0..n)
        .map(|index| BroadcastOutlet {
            core: core.clone(),
            index,
        })
        .collect()
}

impl<S, T> Unpin for BroadcastOutlet<S, T> {}

impl<S, T> Stream for BroadcastOutlet<S, T>
where
    S: Stream<Item = Item<T>>,
    T: Clone,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let i = self.index;
        let mut core = lock(&self.core);
        if let Some(x) = core.slots[i].take() {
            if core.slots.iter().all(Option::is_none) {
                core.wake_all();
            }
            return Poll::Ready(Some(Ok(x)));
        }
        if let Some(p) = core.ended(i) {
            return p;
        }
        // Wait for the slowest output: pull only when every slot is empty.
        if core.slots.iter().any(Option::is_some) {
            core.register(i, cx);
            return Poll::Pending;
        }
        let x = match core.pull(i, cx) {
            Ok(x) => x,
            Err(halt) => return halt.answer(),
        };
        let n = core.slots.len();
        for j in 0..n {
            if j != i && core.alive[j] {
                core.slots[j] = Some(x.clone());
            }
        }
        core.wake_all();
        Poll::Ready(Some(Ok(x)))
    }
}

impl<S, T> Drop for BroadcastOutlet<S, T> {
    fn drop(&mut self) {
        lock(&self.core).cancel(self.index);
    }
}

/// One output of [`Source::balance`](crate::Source::balance).
#[must_use = "streams do nothing unless polled"]
pub struct BalanceOutlet<S> {
    core: Shared<S, ()>,
    index: usize,
}

pub(crate) fn balance<S>(upstream: S, n: usize) -> Vec<BalanceOutlet<S>> {
    let core = Arc::new(Mutex::new(Core::new(upstream, n)));
    (0..n)
        .map(|index| BalanceOutlet {
            core: core.clone(),
            index,
        })
        .collect()
}

impl<S> Unpin for BalanceOutlet<S> {}

impl<S, T> Stream for BalanceOutlet<S>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let i = self.index;
        let mut core = lock(&self.core);
        if let Some(p) = core.ended(i) {
            return p;
        }
        match core.pull(i, cx) {
            Ok(x) => {
                // Others waiting must now poll the upstream themselves.
                core.wake_all();
                Poll::Ready(Some(Ok(x)))
            }
            Err(halt) => halt.answer(),
        }
    }
}

impl<S> Drop for BalanceOutlet<S> {
    fn drop(&mut self) {
        lock(&self.core).cancel(self.index);
    }
}

struct PartitionState<S, T, F> {
    core: Core<S, ()>,
    pending: Option<(usize, T)>,
    f: F,
}

/// One output of [`Source::partition`](crate::Source::partition).
#[must_use = "streams do nothing unless polled"]
pub struct PartitionOutlet<S, T, F> {
    state: Arc<Mutex<PartitionState<S, T, F>>>,
    index: usize,
}

pub(crate) fn partition<S, T, F>(upstream: S, n: usize, f: F) -> Vec<PartitionOutlet<S, T, F>> {
    let state = Arc::new(Mutex::new(PartitionState {
        core: Core::new(upstream, n),
        pending: None,
        f,
    }));
    (0..n)
        .map(|index| PartitionOutlet {
            state: state.clone(),
            index,
        })
        .collect()
}

impl<S, T, F> Unpin for PartitionOutlet<S, T, F> {}

impl<S, T, F> Stream for PartitionOutlet<S, T, F>
where
    S: Stream<Item = Item<T>>,
    F: FnMut(&T) -> usize,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let i = self.index;
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        loop {
            match &st.pending {
                Some((j, _)) if *j == i => {
                    let taken = st.pending.take();
                    st.core.wake_all();
                    if let Some((_, x)) = taken {
                        return Poll::Ready(Some(Ok(x)));
                    }
                }
                Some(_) => {
                    st.core.register(i, cx);
                    return Poll::Pending;
                }
                None => {}
            }
            if let Some(p) = st.core.ended(i) {
                return p;
            }
            match st.core.pull(i, cx) {
                Ok(x) => {
                    let n = st.core.slots.len();
                    let j = (st.f)(&x);
                    if j >= n {
                        let e = StreamError::PartitionOutOfBounds {
                            index: j,
                            outputs: n,
                        };
                        st.core.told_failure[i] = true;
                        st.core.end_with(End::Failed(e.clone()));
                        return Poll::Ready(Some(Err(e)));
                    }
                    if j == i {
                        return Poll::Ready(Some(Ok(x)));
                    }
                    if !st.core.alive[j] {
                        tracing::debug!(
                            output = j,
                            "partition: element for a cancelled output discarded"
                        );
                        continue;
                    }
                    st.pending = Some((j, x));
                    st.core.wake_all();
                    st.core.register(i, cx);
                    return Poll::Pending;
                }
                Err(halt) => return halt.answer(),
            }
        }
    }
}

impl<S, T, F> Drop for PartitionOutlet<S, T, F> {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(st.pending, Some((j, _)) if j == self.index) {
            st.pending = None;
        }
        st.core.cancel(self.index);
    }
}

struct UnzipState<S, A, B> {
    core: Core<S, ()>,
    left: Option<A>,
    right: Option<B>,
}

/// The left output of [`Source::unzip`](crate::Source::unzip).
#[must_use = "streams do nothing unless polled"]
pub struct UnzipLeft<S, A, B> {
    state: Arc<Mutex<UnzipState<S, A, B>>>,
}

/// The right output of [`Source::unzip`](crate::Source::unzip).
#[must_use = "streams do nothing unless polled"]
pub struct UnzipRight<S, A, B> {
    state: Arc<Mutex<UnzipState<S, A, B>>>,
}

pub(crate) fn unzip<S, A, B>(upstream: S) -> (UnzipLeft<S, A, B>, UnzipRight<S, A, B>) {
    let state = Arc::new(Mutex::new(UnzipState {
        core: Core::new(upstream, 2),
        left: None,
        right: None,
    }));
    (
        UnzipLeft {
            state: state.clone(),
        },
        UnzipRight { state },
    )
}

impl<S, A, B> Unpin for UnzipLeft<S, A, B> {}
impl<S, A, B> Unpin for UnzipRight<S, A, B> {}

/// Shared poll logic of the two unzip outputs; `LEFT` selects the side.
fn poll_unzip<S, A, B, const LEFT: bool, T>(
    state: &Mutex<UnzipState<S, A, B>>,
    cx: &mut Context<'_>,
    pick: impl Fn(&mut UnzipState<S, A, B>) -> Option<T>,
    stash: impl Fn(&mut UnzipState<S, A, B>, A, B) -> T,
) -> Poll<Option<Item<T>>>
where
    S: Stream<Item = Item<(A, B)>>,
{
    let i = if LEFT { 0 } else { 1 };
    let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
    let st = &mut *guard;
    if let Some(x) = pick(st) {
        if st.left.is_none() && st.right.is_none() {
            st.core.wake_all();
        }
        return Poll::Ready(Some(Ok(x)));
    }
    if let Some(p) = st.core.ended(i) {
        return p;
    }
    let other_full = if LEFT {
        st.right.is_some()
    } else {
        st.left.is_some()
    };
    if other_full {
        st.core.register(i, cx);
        return Poll::Pending;
    }
    match st.core.pull(i, cx) {
        Ok((a, b)) => {
            let x = stash(st, a, b);
            st.core.wake_all();
            Poll::Ready(Some(Ok(x)))
        }
        Err(halt) => halt.answer(),
    }
}

impl<S, A, B> Stream for UnzipLeft<S, A, B>
where
    S: Stream<Item = Item<(A, B)>>,
{
    type Item = Item<A>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<A>>> {
        poll_unzip::<S, A, B, true, A>(
            &self.state,
            cx,
            |st| st.left.take(),
            |st, a, b| {
                if st.core.alive[1] {
                    st.right = Some(b);
                }
                a
            },
        )
    }
}

impl<S, A, B> Stream for UnzipRight<S, A, B>
where
    S: Stream<Item = Item<(A, B)>>,
{
    type Item = Item<B>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<B>>> {
        poll_unzip::<S, A, B, false, B>(
            &self.state,
            cx,
            |st| st.right.take(),
            |st, a, b| {
                if st.core.alive[0] {
                    st.left = Some(a);
                }
                b
            },
        )
    }
}

impl<S, A, B> Drop for UnzipLeft<S, A, B> {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.left = None;
        st.core.cancel(0);
    }
}

impl<S, A, B> Drop for UnzipRight<S, A, B> {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.right = None;
        st.core.cancel(1);
    }
}
