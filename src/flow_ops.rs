//! [`FlowOps`]: the operators shared by [`Source`] and [`Flow`].

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};

use crate::error::{BoxError, Item, StreamError};
use crate::fanin::{Concat, Merge, ZipWith};
use crate::flow::Flow;
use crate::ops::*;
use crate::queue::{self, BatchStream, OverflowStrategy, QueueStream, Runner};
use crate::source::Source;
use crate::supervision::Supervisor;

/// The operators of [`Source`] and [`Flow`] (Akka's `FlowOps`), as an extension
/// trait in the manner of futures-util's `StreamExt`: each method documents one
/// operator and returns the same kind of graph with the operator appended.
///
/// On a [`Source`] the operators are fused at compile time into one state
/// machine; on a [`Flow`] each operator's stream is boxed.
///
/// Every operator respects backpressure: it pulls from upstream only when
/// downstream asks, except the ones whose purpose is to decouple rates
/// ([`buffer`](FlowOps::buffer), [`async_boundary`](FlowOps::async_boundary),
/// [`conflate`](FlowOps::conflate), [`batch`](FlowOps::batch)), which pull
/// ahead up to a stated bound.
pub trait FlowOps: Sized {
    /// The element type emitted so far.
    type Out: Send + 'static;
    /// The stream emitted so far.
    type Upstream: Stream<Item = Item<Self::Out>> + Send + 'static;
    /// The same kind of graph emitting `S` (of elements `U`) instead.
    type Repr<U: Send + 'static, S: Stream<Item = Item<U>> + Send + 'static>;

    /// Appends an arbitrary stream transformation. Every operator is built on this.
    fn via_stream<U, S, F>(self, f: F) -> Self::Repr<U, S>
    where
        U: Send + 'static,
        S: Stream<Item = Item<U>> + Send + 'static,
        F: FnOnce(Self::Upstream) -> S + Send + 'static;

    /// Transforms each element with `f`.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let v = Source::from_iter(1..=3).map(|x| x * x).run_with(Sink::collect()).await.unwrap();
    /// assert_eq!(v, [1, 4, 9]);
    /// # }
    /// ```
    fn map<U, F>(self, f: F) -> Self::Repr<U, Map<Self::Upstream, F>>
    where
        U: Send + 'static,
        F: FnMut(Self::Out) -> U + Send + 'static,
    {
        self.via_stream(move |s| Map::new(s, f))
    }

    /// Keeps the elements for which `f` is true.
    fn filter<F>(self, f: F) -> Self::Repr<Self::Out, Filter<Self::Upstream, F>>
    where
        F: FnMut(&Self::Out) -> bool + Send + 'static,
    {
        self.via_stream(move |s| Filter::new(s, f))
    }

    /// Transforms and filters in one step: `None` drops the element.
    fn filter_map<U, F>(self, f: F) -> Self::Repr<U, FilterMap<Self::Upstream, F>>
    where
        U: Send + 'static,
        F: FnMut(Self::Out) -> Option<U> + Send + 'static,
    {
        self.via_stream(move |s| FilterMap::new(s, f))
    }

    /// Turns each element into zero or more elements.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let v = Source::from_iter([1, 2]).map_concat(|x| vec![x; x]).run_with(Sink::collect()).await.unwrap();
    /// assert_eq!(v, [1, 2, 2]);
    /// # }
    /// ```
    fn map_concat<II, F>(
        self,
        f: F,
    ) -> Self::Repr<II::Item, MapConcat<Self::Upstream, F, II::IntoIter>>
    where
        II: IntoIterator,
        II::Item: Send + 'static,
        II::IntoIter: Send + 'static,
        F: FnMut(Self::Out) -> II + Send + 'static,
    {
        self.via_stream(move |s| MapConcat::new(s, f))
    }

    /// Emits `zero`, then each running accumulation `f(&acc, element)`.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let v = Source::from_iter(1..=4).scan(0, |acc, x| acc + x).run_with(Sink::collect()).await.unwrap();
    /// assert_eq!(v, [0, 1, 3, 6, 10]);
    /// # }
    /// ```
    fn scan<A, F>(self, zero: A, f: F) -> Self::Repr<A, Scan<Self::Upstream, A, F>>
    where
        A: Clone + Send + 'static,
        F: FnMut(&A, Self::Out) -> A + Send + 'static,
    {
        self.via_stream(move |s| Scan::new(s, zero, f))
    }

    /// Folds all elements; emits the result once upstream completes.
    fn fold<A, F>(self, zero: A, f: F) -> Self::Repr<A, Fold<Self::Upstream, A, F>>
    where
        A: Send + 'static,
        F: FnMut(A, Self::Out) -> A + Send + 'static,
    {
        self.via_stream(move |s| Fold::new(s, zero, f))
    }

    /// Like `fold` seeded with the first element; fails with
    /// [`StreamError::Empty`] on an empty stream.
    fn reduce<F>(self, f: F) -> Self::Repr<Self::Out, Reduce<Self::Upstream, Self::Out, F>>
    where
        F: FnMut(Self::Out, Self::Out) -> Self::Out + Send + 'static,
    {
        self.via_stream(move |s| Reduce::new(s, f))
    }

    /// The first `n` elements, then completes.
    fn take(self, n: u64) -> Self::Repr<Self::Out, Take<Self::Upstream>> {
        self.via_stream(move |s| Take::new(s, n))
    }

    /// Elements while `f` is true; completes at the first false.
    fn take_while<F>(self, f: F) -> Self::Repr<Self::Out, TakeWhile<Self::Upstream, F>>
    where
        F: FnMut(&Self::Out) -> bool + Send + 'static,
    {
        self.via_stream(move |s| TakeWhile::new(s, f, false))
    }

    /// Like [`take_while`](FlowOps::take_while), also emitting the first element
    /// for which `f` is false.
    fn take_while_inclusive<F>(self, f: F) -> Self::Repr<Self::Out, TakeWhile<Self::Upstream, F>>
    where
        F: FnMut(&Self::Out) -> bool + Send + 'static,
    {
        self.via_stream(move |s| TakeWhile::new(s, f, true))
    }

    /// Skips the first `n` elements.
    fn drop(self, n: u64) -> Self::Repr<Self::Out, Drop<Self::Upstream>> {
        self.via_stream(move |s| Drop::new(s, n))
    }

    /// Skips elements while `f` is true.
    fn drop_while<F>(self, f: F) -> Self::Repr<Self::Out, DropWhile<Self::Upstream, F>>
    where
        F: FnMut(&Self::Out) -> bool + Send + 'static,
    {
        self.via_stream(move |s| DropWhile::new(s, f))
    }

    /// Chunks of `n` elements (the last may be shorter).
    fn grouped(self, n: usize) -> Self::Repr<Vec<Self::Out>, Grouped<Self::Upstream, Self::Out>> {
        self.via_stream(move |s| Grouped::new(s, n))
    }

    /// Chunks of up to `n` elements, emitted when full or when `within` has
    /// passed since the chunk's first element.
    fn grouped_within(
        self,
        n: usize,
        within: Duration,
    ) -> Self::Repr<Vec<Self::Out>, GroupedWithin<Self::Upstream, Self::Out>> {
        self.via_stream(move |s| GroupedWithin::new(s, n, within))
    }

    /// Windows of `n` elements, advancing by `step`. A shorter final window is
    /// emitted when the stream ends with elements no window has contained.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let v = Source::from_iter(1..=5).sliding(3, 2).run_with(Sink::collect()).await.unwrap();
    /// assert_eq!(v, [vec![1, 2, 3], vec![3, 4, 5]]);
    /// # }
    /// ```
    fn sliding(
        self,
        n: usize,
        step: usize,
    ) -> Self::Repr<Vec<Self::Out>, Sliding<Self::Upstream, Self::Out>>
    where
        Self::Out: Clone,
    {
        self.via_stream(move |s| Sliding::new(s, n, step))
    }

    /// Limits the rate to `elements` per `per`, allowing bursts of up to `burst`
    /// elements (a token bucket). Elements are delayed, never dropped.
    fn throttle(
        self,
        elements: u32,
        per: Duration,
        burst: u32,
    ) -> Self::Repr<Self::Out, Throttle<Self::Upstream, Self::Out>> {
        self.via_stream(move |s| Throttle::new(s, elements, per, burst))
    }

    /// Runs upstream on its own task and buffers up to `capacity` elements;
    /// when full, `overflow` decides. With [`OverflowStrategy::Backpressure`]
    /// no more than `capacity` elements are ever pulled ahead of downstream.
    /// Dropped elements are counted and logged.
    fn buffer(
        self,
        capacity: usize,
        overflow: OverflowStrategy,
    ) -> Self::Repr<Self::Out, QueueStream<Self::Out>> {
        self.via_stream(move |s| {
            queue::spawn_buffered(s, capacity, overflow, Runner::Task("buffer"))
        })
    }

    /// An asynchronous boundary: upstream runs on its own tokio task, handing
    /// elements over in batches through a backpressured buffer of 1,024.
    /// For an upstream busy enough to need a core of its own, see
    /// [`async_boundary_pinned`](FlowOps::async_boundary_pinned).
    fn async_boundary(self) -> Self::Repr<Self::Out, QueueStream<Self::Out>> {
        self.async_boundary_with(1024)
    }

    /// [`async_boundary`](FlowOps::async_boundary) with a buffer of `capacity`.
    fn async_boundary_with(self, capacity: usize) -> Self::Repr<Self::Out, QueueStream<Self::Out>> {
        self.via_stream(move |s| {
            let runner = Runner::Task("async_boundary");
            queue::spawn_buffered(s, capacity, OverflowStrategy::Backpressure, runner)
        })
    }

    /// An asynchronous boundary whose upstream runs on an OS thread of its
    /// own, named `thread_name`, instead of a tokio task: Akka's stage on a
    /// pinned dispatcher. Otherwise as
    /// [`async_boundary_with`](FlowOps::async_boundary_with).
    ///
    /// Use it where upstream is busy enough to need a core of its own. Two
    /// tasks that hand elements to each other tend to share one worker thread
    /// of tokio's multi-threaded runtime, because a task woken by a task runs
    /// next on the waker's worker. So an ordinary boundary between two busy
    /// halves may still leave them taking turns on one thread. A pinned
    /// upstream runs in parallel with downstream on any runtime.
    ///
    /// The thread starts when the stream is first polled. It drives upstream
    /// with that runtime's handle, so timers, I/O and `tokio::spawn` work
    /// there as on a task; outside a runtime it uses a plain executor. It
    /// ends when upstream ends or downstream cancels. If the thread cannot be
    /// started, the stream fails.
    ///
    /// ```
    /// use flowstage::prelude::*;
    ///
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() {
    /// let sum = Source::from_iter(1..=1000u64)
    ///     .map(|x| x * x) // runs on the thread "squares"
    ///     .async_boundary_pinned(256, "squares")
    ///     .run_with(Sink::fold(0u64, |a, x| a + x))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(sum, (1..=1000u64).map(|x| x * x).sum::<u64>());
    /// # }
    /// ```
    fn async_boundary_pinned(
        self,
        capacity: usize,
        thread_name: impl Into<String>,
    ) -> Self::Repr<Self::Out, QueueStream<Self::Out>> {
        let runner = Runner::Thread(thread_name.into());
        self.via_stream(move |s| {
            queue::spawn_buffered(s, capacity, OverflowStrategy::Backpressure, runner)
        })
    }

    /// While downstream is slower, combines elements with `f` instead of
    /// backpressuring (upstream runs on its own task and never waits).
    fn conflate<F>(self, f: F) -> Self::Repr<Self::Out, BatchStream<Self::Out>>
    where
        F: FnMut(Self::Out, Self::Out) -> Self::Out + Send + 'static,
    {
        self.conflate_with_seed(|x| x, f)
    }

    /// [`conflate`](FlowOps::conflate) into another type: `seed` starts an
    /// aggregate, `aggregate` adds to it.
    fn conflate_with_seed<A, Seed, Agg>(
        self,
        seed: Seed,
        aggregate: Agg,
    ) -> Self::Repr<A, BatchStream<A>>
    where
        A: Send + 'static,
        Seed: FnMut(Self::Out) -> A + Send + 'static,
        Agg: FnMut(A, Self::Out) -> A + Send + 'static,
    {
        self.via_stream(move |s| {
            queue::spawn_batch("conflate", s, u64::MAX, |_| 0, seed, aggregate)
        })
    }

    /// Like `conflate_with_seed`, but backpressures once `max` elements are
    /// aggregated and not yet taken downstream.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let batches: Vec<Vec<u32>> = Source::from_iter(0..100)
    ///     .batch(16, |x| vec![x], |mut v, x| { v.push(x); v })
    ///     .run_with(Sink::collect())
    ///     .await
    ///     .unwrap();
    /// assert!(batches.iter().all(|b| b.len() <= 16));
    /// assert_eq!(batches.concat(), (0..100).collect::<Vec<_>>());
    /// # }
    /// ```
    fn batch<A, Seed, Agg>(
        self,
        max: u64,
        seed: Seed,
        aggregate: Agg,
    ) -> Self::Repr<A, BatchStream<A>>
    where
        A: Send + 'static,
        Seed: FnMut(Self::Out) -> A + Send + 'static,
        Agg: FnMut(A, Self::Out) -> A + Send + 'static,
    {
        self.via_stream(move |s| queue::spawn_batch("batch", s, max, |_| 1, seed, aggregate))
    }

    /// While downstream is faster, extrapolates: `f(element)` gives an
    /// iterator whose items are emitted when downstream asks and upstream has
    /// nothing new (for example `std::iter::repeat(x)` repeats the last element).
    fn expand<II, F>(self, f: F) -> Self::Repr<II::Item, Expand<Self::Upstream, F, II::IntoIter>>
    where
        II: IntoIterator,
        II::Item: Send + 'static,
        II::IntoIter: Send + 'static,
        F: FnMut(Self::Out) -> II + Send + 'static,
    {
        self.via_stream(move |s| Expand::new(s, f))
    }

    /// Runs `f` on each element with up to `parallelism` futures in flight;
    /// emits the results in upstream order.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let v = Source::from_iter(1..=5)
    ///     .map_async(4, |x| async move { x * 2 })
    ///     .run_with(Sink::collect())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(v, [2, 4, 6, 8, 10]);
    /// # }
    /// ```
    #[allow(clippy::type_complexity)]
    fn map_async<U, F, Fut>(
        self,
        parallelism: usize,
        mut f: F,
    ) -> Self::Repr<
        U,
        MapAsync<
            Self::Upstream,
            BoxedMapFn<Self::Out, U>,
            futures::future::BoxFuture<'static, Item<U>>,
        >,
    >
    where
        U: Send + 'static,
        F: FnMut(Self::Out) -> Fut + Send + 'static,
        Fut: Future<Output = U> + Send + 'static,
    {
        let g: BoxedMapFn<Self::Out, U> = Box::new(move |x| f(x).map(Ok).boxed());
        self.via_stream(move |s| MapAsync::new(s, parallelism, g))
    }

    /// Like [`map_async`](FlowOps::map_async) with a fallible future: an
    /// `Err` fails the stream.
    #[allow(clippy::type_complexity)]
    fn try_map_async<U, E, F, Fut>(
        self,
        parallelism: usize,
        mut f: F,
    ) -> Self::Repr<
        U,
        MapAsync<
            Self::Upstream,
            BoxedMapFn<Self::Out, U>,
            futures::future::BoxFuture<'static, Item<U>>,
        >,
    >
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: FnMut(Self::Out) -> Fut + Send + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        let g: BoxedMapFn<Self::Out, U> =
            Box::new(move |x| f(x).map(|r| r.map_err(StreamError::user)).boxed());
        self.via_stream(move |s| MapAsync::new(s, parallelism, g))
    }

    /// Runs `f` on each element with up to `parallelism` futures in flight;
    /// emits results as they complete.
    #[allow(clippy::type_complexity)]
    fn map_async_unordered<U, F, Fut>(
        self,
        parallelism: usize,
        mut f: F,
    ) -> Self::Repr<
        U,
        MapAsyncUnordered<
            Self::Upstream,
            BoxedMapFn<Self::Out, U>,
            futures::future::BoxFuture<'static, Item<U>>,
        >,
    >
    where
        U: Send + 'static,
        F: FnMut(Self::Out) -> Fut + Send + 'static,
        Fut: Future<Output = U> + Send + 'static,
    {
        let g: BoxedMapFn<Self::Out, U> = Box::new(move |x| f(x).map(Ok).boxed());
        self.via_stream(move |s| MapAsyncUnordered::new(s, parallelism, g))
    }

    /// Fails with [`StreamError::IdleTimeout`] if no element passes for `timeout`.
    fn idle_timeout(self, timeout: Duration) -> Self::Repr<Self::Out, IdleTimeout<Self::Upstream>> {
        self.via_stream(move |s| IdleTimeout::new(s, timeout))
    }

    /// Fails with [`StreamError::CompletionTimeout`] if the stream has not
    /// completed `timeout` after the first demand.
    fn completion_timeout(
        self,
        timeout: Duration,
    ) -> Self::Repr<Self::Out, CompletionTimeout<Self::Upstream>> {
        self.via_stream(move |s| CompletionTimeout::new(s, timeout))
    }

    /// On failure, emits `f(&error)` as a last element and completes; if `f`
    /// returns `None`, the failure goes on downstream.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let v = Source::from_iter([1, 2])
    ///     .concat(Source::failed(StreamError::msg("boom")))
    ///     .recover(|_| Some(-1))
    ///     .run_with(Sink::collect())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(v, [1, 2, -1]);
    /// # }
    /// ```
    fn recover<F>(self, f: F) -> Self::Repr<Self::Out, Recover<Self::Upstream, F>>
    where
        F: FnMut(&StreamError) -> Option<Self::Out> + Send + 'static,
    {
        self.via_stream(move |s| Recover::new(s, f))
    }

    /// Pairs each element with its index, from 0.
    fn zip_with_index(self) -> Self::Repr<(Self::Out, u64), ZipWithIndex<Self::Upstream>> {
        self.via_stream(ZipWithIndex::new)
    }

    /// Calls `f` on each element as it passes.
    fn inspect<F>(self, f: F) -> Self::Repr<Self::Out, Inspect<Self::Upstream, F>>
    where
        F: FnMut(&Self::Out) + Send + 'static,
    {
        self.via_stream(move |s| Inspect::new(s, f))
    }

    /// Logs elements (`debug`), failure (`warn`) and completion (`debug`) with
    /// `tracing`, under the stage name `name`.
    fn log(self, name: &'static str) -> Self::Repr<Self::Out, Log<Self::Upstream>>
    where
        Self::Out: std::fmt::Debug,
    {
        self.via_stream(move |s| Log::new(s, name))
    }

    /// Transforms each element with a fallible `f`; an `Err` fails the stream.
    fn try_map<U, E, F>(self, f: F) -> Self::Repr<U, TryMap<Self::Upstream, F>>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: FnMut(Self::Out) -> Result<U, E> + Send + 'static,
    {
        self.try_map_supervised(f, Supervisor::stopping())
    }

    /// [`try_map`](FlowOps::try_map) under a [`Supervisor`]: each `Err` is
    /// stopped on, or skipped (resume/restart) and counted.
    fn try_map_supervised<U, E, F>(
        self,
        f: F,
        supervisor: Supervisor,
    ) -> Self::Repr<U, TryMap<Self::Upstream, F>>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: FnMut(Self::Out) -> Result<U, E> + Send + 'static,
    {
        self.via_stream(move |s| TryMap::new(s, f, supervisor))
    }

    /// A fallible filter under a [`Supervisor`].
    fn try_filter_supervised<E, F>(
        self,
        f: F,
        supervisor: Supervisor,
    ) -> Self::Repr<Self::Out, TryFilter<Self::Upstream, F>>
    where
        E: Into<BoxError>,
        F: FnMut(&Self::Out) -> Result<bool, E> + Send + 'static,
    {
        self.via_stream(move |s| TryFilter::new(s, f, supervisor))
    }

    /// A fallible [`scan`](FlowOps::scan) under a [`Supervisor`]: `Restart`
    /// resets the accumulator to `zero`, `Resume` keeps it.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let sums = Source::from_iter([1, 2, -1, 3])
    ///     .try_scan_supervised(0, |acc, x| if x < 0 { Err("negative") } else { Ok(acc + x) },
    ///                          Supervisor::restarting())
    ///     .run_with(Sink::collect())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(sums, [0, 1, 3, 3]);
    /// # }
    /// ```
    fn try_scan_supervised<A, E, F>(
        self,
        zero: A,
        f: F,
        supervisor: Supervisor,
    ) -> Self::Repr<A, TryScan<Self::Upstream, A, F>>
    where
        A: Clone + Send + 'static,
        E: Into<BoxError>,
        F: FnMut(&A, Self::Out) -> Result<A, E> + Send + 'static,
    {
        self.via_stream(move |s| TryScan::new(s, zero, f, supervisor))
    }

    /// Fan-in: elements of this and `other` as they arrive (fairly);
    /// completes when both complete.
    fn merge<S2, M2>(
        self,
        other: Source<S2, M2>,
    ) -> Self::Repr<Self::Out, Merge<Self::Upstream, S2>>
    where
        S2: Stream<Item = Item<Self::Out>> + Send + 'static,
    {
        let b = other.into_stream();
        self.via_stream(move |a| Merge::new(a, b, false))
    }

    /// Fan-in like [`merge`](FlowOps::merge), but this side is always taken
    /// first when both have an element.
    fn merge_preferred<S2, M2>(
        self,
        other: Source<S2, M2>,
    ) -> Self::Repr<Self::Out, Merge<Self::Upstream, S2>>
    where
        S2: Stream<Item = Item<Self::Out>> + Send + 'static,
    {
        let b = other.into_stream();
        self.via_stream(move |a| Merge::new(a, b, true))
    }

    /// All elements of this, then all of `other`.
    fn concat<S2, M2>(
        self,
        other: Source<S2, M2>,
    ) -> Self::Repr<Self::Out, Concat<Self::Upstream, S2>>
    where
        S2: Stream<Item = Item<Self::Out>> + Send + 'static,
    {
        let b = other.into_stream();
        self.via_stream(move |a| Concat::new(a, b))
    }

    /// Fan-in: pairs of one element from each side; completes when either completes.
    #[allow(clippy::type_complexity)]
    fn zip<S2, U, M2>(
        self,
        other: Source<S2, M2>,
    ) -> Self::Repr<
        (Self::Out, U),
        ZipWith<Self::Upstream, S2, Self::Out, U, fn(Self::Out, U) -> (Self::Out, U)>,
    >
    where
        U: Send + 'static,
        S2: Stream<Item = Item<U>> + Send + 'static,
    {
        let b = other.into_stream();
        let pair: fn(Self::Out, U) -> (Self::Out, U) = |a, b| (a, b);
        self.via_stream(move |a| ZipWith::new(a, b, pair))
    }

    /// Fan-in: `f` of one element from each side; completes when either completes.
    fn zip_with<S2, U, V, F, M2>(
        self,
        other: Source<S2, M2>,
        f: F,
    ) -> Self::Repr<V, ZipWith<Self::Upstream, S2, Self::Out, U, F>>
    where
        U: Send + 'static,
        V: Send + 'static,
        S2: Stream<Item = Item<U>> + Send + 'static,
        F: FnMut(Self::Out, U) -> V + Send + 'static,
    {
        let b = other.into_stream();
        self.via_stream(move |a| ZipWith::new(a, b, f))
    }
}

/// The boxed function type used by the async mapping operators.
pub type BoxedMapFn<T, U> =
    Box<dyn FnMut(T) -> futures::future::BoxFuture<'static, Item<U>> + Send>;

impl<S, T, M> FlowOps for Source<S, M>
where
    S: Stream<Item = Item<T>> + Send + 'static,
    T: Send + 'static,
{
    type Out = T;
    type Upstream = S;
    type Repr<U: Send + 'static, S2: Stream<Item = Item<U>> + Send + 'static> = Source<S2, M>;

    #[inline]
    fn via_stream<U, S2, F>(self, f: F) -> Source<S2, M>
    where
        U: Send + 'static,
        S2: Stream<Item = Item<U>> + Send + 'static,
        F: FnOnce(S) -> S2 + Send + 'static,
    {
        let (stream, mat) = self.into_parts();
        Source::from_parts(f(stream), mat)
    }
}

impl<In, Out, M> FlowOps for Flow<In, Out, M>
where
    In: Send + 'static,
    Out: Send + 'static,
    M: 'static,
{
    type Out = Out;
    type Upstream = BoxStream<'static, Item<Out>>;
    type Repr<U: Send + 'static, S2: Stream<Item = Item<U>> + Send + 'static> = Flow<In, U, M>;

    fn via_stream<U, S2, F>(self, f: F) -> Flow<In, U, M>
    where
        U: Send + 'static,
        S2: Stream<Item = Item<U>> + Send + 'static,
        F: FnOnce(BoxStream<'static, Item<Out>>) -> S2 + Send + 'static,
    {
        let make = self.into_make();
        Flow::from_make(Box::new(move |s| {
            let (out, m) = make(s);
            (f(out).boxed(), m)
        }))
    }
}
