//! [`Source`]: a stage graph with one output and no input.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use pin_project_lite::pin_project;

use crate::error::{BoxError, Item, StreamError};
use crate::fanout::{BalanceOutlet, BroadcastOutlet, PartitionOutlet, UnzipLeft, UnzipRight};
use crate::flow::Flow;
use crate::killswitch::WatchTermination;
use crate::mat::{Completion, NotUsed};
use crate::queue::{self, OverflowStrategy, QueueStream, SourceQueue};
use crate::runnable::RunnableGraph;
use crate::sink::{Sink, SinkStage};

pin_project! {
    /// A source of elements: a stream plus the value it materializes.
    ///
    /// `S` is the underlying [`Stream`] of [`Item<T>`](crate::Item)s; operators from
    /// [`FlowOps`](crate::FlowOps) wrap it in small state machines that the compiler
    /// fuses into one, so a chain of operators on a source costs what the same
    /// chain written by hand costs. `M` is the materialized value (see
    /// [`mat`](crate::mat)); most sources materialize [`NotUsed`].
    ///
    /// A `Source` is single-use: running it consumes it. To run the same
    /// pipeline twice, write a function that builds it.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let sum = Source::from_iter(1..=100)
    ///     .filter(|x| x % 2 == 0)
    ///     .map(|x| x * 10)
    ///     .run_with(Sink::fold(0, |acc, x| acc + x))
    ///     .await
    ///     .unwrap();
    /// assert_eq!(sum, 25_500);
    /// # }
    /// ```
    #[must_use = "a Source does nothing until it is run"]
    pub struct Source<S, M = NotUsed> {
        #[pin]
        stream: S,
        mat: M,
    }
}

impl<S, M> std::fmt::Debug for Source<S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("stream", &std::any::type_name::<S>())
            .finish()
    }
}

/// A source whose stream type is erased (one allocation, one virtual call per element).
pub type BoxSource<T, M = NotUsed> = Source<BoxStream<'static, Item<T>>, M>;

pin_project! {
    /// The stream of [`Source::from_iter`].
    #[must_use = "streams do nothing unless polled"]
    pub struct IterStream<I> {
        iter: I,
    }
}

impl<I: Iterator> Stream for IterStream<I> {
    type Item = Item<I::Item>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.project().iter.next().map(Ok))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.iter.size_hint()
    }
}

pin_project! {
    /// The stream of [`Source::from_stream`]: wraps each element in `Ok`.
    #[must_use = "streams do nothing unless polled"]
    pub struct OkStream<S> {
        #[pin]
        stream: S,
    }
}

impl<S: Stream> Stream for OkStream<S> {
    type Item = Item<S::Item>;

    #[inline]
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project().stream.poll_next(cx).map(|o| o.map(Ok))
    }
}

pin_project! {
    /// The stream of [`Source::from_try_stream`]: ends after the first error.
    #[must_use = "streams do nothing unless polled"]
    pub struct TryStreamSource<S> {
        #[pin]
        stream: S,
        done: bool,
    }
}

impl<S, T, E> Stream for TryStreamSource<S>
where
    S: Stream<Item = Result<T, E>>,
    E: Into<BoxError>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match futures::ready!(this.stream.poll_next(cx)) {
            Some(Ok(x)) => Poll::Ready(Some(Ok(x))),
            Some(Err(e)) => {
                *this.done = true;
                Poll::Ready(Some(Err(StreamError::user(e))))
            }
            None => {
                *this.done = true;
                Poll::Ready(None)
            }
        }
    }
}

/// A stream that never yields and never ends (the stream of [`Source::never`]).
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Never<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Stream for Never<T> {
    type Item = Item<T>;
    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Pending
    }
}

/// Constructors. (`NotUsed`/`()` in the type only anchors them: write `Source::from_iter(..)`.)
impl Source<(), NotUsed> {
    /// Wraps any stream of `Item<T>` (= `Result<T, StreamError>`) as a source.
    pub fn from_items<S, T>(stream: S) -> Source<S, NotUsed>
    where
        S: Stream<Item = Item<T>>,
    {
        Source {
            stream,
            mat: NotUsed,
        }
    }

    /// The elements of an iterator.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let v = Source::from_iter(vec!["a", "b"]).run_with(Sink::collect()).await.unwrap();
    /// assert_eq!(v, ["a", "b"]);
    /// # }
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn from_iter<I: IntoIterator>(iter: I) -> Source<IterStream<I::IntoIter>, NotUsed> {
        Source::from_items(IterStream {
            iter: iter.into_iter(),
        })
    }

    /// The elements of any `futures::Stream`. This is also how to write a source as
    /// a generator, with the re-exported [`async_stream::stream!`](crate::async_stream) macro:
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let squares = Source::from_stream(flowstage::async_stream::stream! {
    ///     for i in 1..=3u32 {
    ///         tokio::task::yield_now().await;
    ///         yield i * i;
    ///     }
    /// });
    /// assert_eq!(squares.run_with(Sink::collect()).await.unwrap(), [1, 4, 9]);
    /// # }
    /// ```
    pub fn from_stream<S: Stream>(stream: S) -> Source<OkStream<S>, NotUsed> {
        Source::from_items(OkStream { stream })
    }

    /// The elements of a stream of `Result`s: the first `Err` fails the source.
    pub fn from_try_stream<S, T, E>(stream: S) -> Source<TryStreamSource<S>, NotUsed>
    where
        S: Stream<Item = Result<T, E>>,
        E: Into<BoxError>,
    {
        Source::from_items(TryStreamSource {
            stream,
            done: false,
        })
    }

    /// The single value of a future.
    pub fn from_future<F: Future>(fut: F) -> Source<OkStream<futures::stream::Once<F>>, NotUsed> {
        Source::from_stream(futures::stream::once(fut))
    }

    /// One element.
    pub fn single<T>(x: T) -> Source<IterStream<std::option::IntoIter<T>>, NotUsed> {
        Source::from_iter(Some(x))
    }

    /// The same element forever.
    pub fn repeat<T: Clone>(x: T) -> Source<IterStream<std::iter::Repeat<T>>, NotUsed> {
        Source::from_iter(std::iter::repeat(x))
    }

    /// No elements: completes at once.
    pub fn empty<T>() -> Source<IterStream<std::iter::Empty<T>>, NotUsed> {
        Source::from_iter(std::iter::empty())
    }

    /// A source that never emits and never completes (until cancelled).
    pub fn never<T>() -> Source<Never<T>, NotUsed> {
        Source::from_items(Never(std::marker::PhantomData))
    }

    /// Fails at once with `err`.
    pub fn failed<T>(
        err: StreamError,
    ) -> Source<futures::stream::Iter<std::iter::Once<Item<T>>>, NotUsed> {
        Source::from_items(futures::stream::iter(std::iter::once(Err(err))))
    }

    /// `value` after `initial_delay`, then every `interval`. Ticks that come while
    /// downstream is busy are skipped, not queued (as in Akka).
    pub fn tick<T: Clone + Send + 'static>(
        initial_delay: Duration,
        interval: Duration,
        value: T,
    ) -> Source<BoxStream<'static, Item<T>>, NotUsed> {
        let stream = async_stream::stream! {
            let start = tokio::time::Instant::now() + initial_delay;
            let mut ticker = tokio::time::interval_at(start, interval.max(Duration::from_nanos(1)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticker.tick().await;
                yield Ok(value.clone());
            }
        };
        Source::from_items(stream.boxed())
    }

    /// Elements produced from a state: `f(state)` returns the next state and an
    /// element, or `None` to complete.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let fib = Source::unfold((0u64, 1u64), |(a, b)| Some(((b, a + b), a)))
    ///     .take(10)
    ///     .run_with(Sink::collect())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(fib, [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]);
    /// # }
    /// ```
    pub fn unfold<St, T, F>(state: St, f: F) -> Source<IterStream<Unfold<St, F>>, NotUsed>
    where
        F: FnMut(St) -> Option<(St, T)>,
    {
        Source::from_iter(Unfold {
            state: Some(state),
            f,
        })
    }

    /// Like [`unfold`](Source::unfold) with an asynchronous step.
    pub fn unfold_async<St, T, F, Fut>(
        state: St,
        f: F,
    ) -> Source<OkStream<futures::stream::Unfold<St, F, Fut>>, NotUsed>
    where
        F: FnMut(St) -> Fut,
        Fut: Future<Output = Option<(T, St)>>,
    {
        Source::from_stream(futures::stream::unfold(state, f))
    }

    /// A source fed through the materialized [`SourceQueue`]: `offer` elements
    /// from other tasks. Up to `capacity` elements are buffered; when full,
    /// `overflow` decides (with [`OverflowStrategy::Backpressure`], `offer` waits).
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (queue, done) = Source::queue(8, OverflowStrategy::Backpressure)
    ///     .to_mat(Sink::collect(), Keep::both)
    ///     .run();
    /// for i in 0..3 {
    ///     assert!(queue.offer(i).await.is_enqueued());
    /// }
    /// queue.complete();
    /// assert_eq!(done.await.unwrap(), [0, 1, 2]);
    /// # }
    /// ```
    pub fn queue<T>(
        capacity: usize,
        overflow: OverflowStrategy,
    ) -> Source<QueueStream<T>, SourceQueue<T>> {
        let (q, stream) = queue::source_queue(capacity, overflow);
        Source { stream, mat: q }
    }

    /// Merges any number of sources (fairly, completing when all complete).
    pub fn merge_all<S, T>(
        sources: Vec<Source<S, NotUsed>>,
    ) -> Source<BoxStream<'static, Item<T>>, NotUsed>
    where
        S: Stream<Item = Item<T>> + Send + 'static,
        T: Send + 'static,
    {
        let streams: Vec<S> = sources.into_iter().map(|s| s.stream).collect();
        Source::from_items(futures::stream::select_all(streams.into_iter().map(Box::pin)).boxed())
    }
}

/// Iterator behind [`Source::unfold`].
#[derive(Debug)]
pub struct Unfold<St, F> {
    state: Option<St>,
    f: F,
}

impl<St, T, F> Iterator for Unfold<St, F>
where
    F: FnMut(St) -> Option<(St, T)>,
{
    type Item = T;
    fn next(&mut self) -> Option<T> {
        let st = self.state.take()?;
        let (next, x) = (self.f)(st)?;
        self.state = Some(next);
        Some(x)
    }
}

impl<S, M> Source<S, M> {
    /// The underlying stream, dropping the materialized value.
    pub fn into_stream(self) -> S {
        self.stream
    }

    /// The stream and the materialized value.
    pub fn into_parts(self) -> (S, M) {
        (self.stream, self.mat)
    }

    /// A source from a stream and a materialized value.
    pub fn from_parts(stream: S, mat: M) -> Self {
        Source { stream, mat }
    }

    /// Transforms the materialized value.
    pub fn map_materialized_value<M2>(self, f: impl FnOnce(M) -> M2) -> Source<S, M2> {
        Source {
            stream: self.stream,
            mat: f(self.mat),
        }
    }

    /// Takes the materialized value out now (Akka's `preMaterialize`), leaving a
    /// source that materializes `NotUsed`. Useful before fan-out junctions, which
    /// keep no materialized value.
    pub fn pre_materialize(self) -> (M, Source<S, NotUsed>) {
        (
            self.mat,
            Source {
                stream: self.stream,
                mat: NotUsed,
            },
        )
    }
}

impl<S, T, M> Source<S, M>
where
    S: Stream<Item = Item<T>> + Send + 'static,
    T: Send + 'static,
{
    /// Erases the stream type.
    pub fn boxed(self) -> BoxSource<T, M> {
        Source {
            stream: self.stream.boxed(),
            mat: self.mat,
        }
    }

    /// Sends the elements through `flow`, keeping this source's materialized value.
    pub fn via<U: Send + 'static, M2: 'static>(self, flow: Flow<T, U, M2>) -> BoxSource<U, M> {
        self.via_mat(flow, crate::Keep::left)
    }

    /// Sends the elements through `flow`, combining the materialized values.
    pub fn via_mat<U: Send + 'static, M2: 'static, M3>(
        self,
        flow: Flow<T, U, M2>,
        combine: impl FnOnce(M, M2) -> M3,
    ) -> BoxSource<U, M3> {
        let (stream, m2) = flow.attach(self.stream.boxed());
        Source {
            stream,
            mat: combine(self.mat, m2),
        }
    }

    /// Connects a sink; the graph materializes the **sink's** value.
    ///
    /// (Akka's `to` keeps the source's value; here the sink's value — usually the
    /// completion future — is what you want, so `to` keeps it. Use
    /// [`to_mat`](Source::to_mat) to choose.)
    pub fn to<K: SinkStage<T>>(self, sink: Sink<K>) -> RunnableGraph<K::Mat> {
        self.to_mat(sink, crate::Keep::right)
    }

    /// Connects a sink, combining the materialized values.
    pub fn to_mat<K: SinkStage<T>, M3>(
        self,
        sink: Sink<K>,
        combine: impl FnOnce(M, K::Mat) -> M3,
    ) -> RunnableGraph<M3> {
        let (sink_mat, driver) = sink.into_inner().attach(self.stream);
        RunnableGraph::new(driver, combine(self.mat, sink_mat))
    }

    /// Connects `sink`, runs the graph on the current tokio runtime and returns
    /// the sink's materialized value.
    pub fn run_with<K: SinkStage<T>>(self, sink: Sink<K>) -> K::Mat {
        self.to(sink).run()
    }

    /// Also materializes a [`Completion`] that resolves when this part of the
    /// stream completes, fails, or is cancelled (Akka's `watchTermination`).
    pub fn watch_termination(self) -> Source<WatchTermination<S>, (M, Completion<()>)> {
        let (stream, done) = WatchTermination::new(self.stream);
        Source {
            stream,
            mat: (self.mat, done),
        }
    }

    /// Fan-out: every element to each of `n` outputs; as fast as the slowest output.
    /// Outputs that are dropped are left out; the upstream is cancelled when all are.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // A diamond: broadcast into two flows, then zip them back together.
    /// let [left, right] = Source::from_iter(1..=3).broadcast2();
    /// let pairs = left
    ///     .map(|x| x * 10)
    ///     .zip(right.map(|x| format!("#{x}")))
    ///     .run_with(Sink::collect())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(pairs, [(10, "#1".to_string()), (20, "#2".into()), (30, "#3".into())]);
    /// # }
    /// ```
    pub fn broadcast(self, n: usize) -> Vec<Source<BroadcastOutlet<S, T>, NotUsed>>
    where
        T: Clone,
    {
        crate::fanout::broadcast(self.stream, n.max(1))
            .into_iter()
            .map(Source::from_items)
            .collect()
    }

    /// [`broadcast`](Source::broadcast) into exactly two outputs.
    pub fn broadcast2(self) -> [Source<BroadcastOutlet<S, T>, NotUsed>; 2]
    where
        T: Clone,
    {
        let mut v = crate::fanout::broadcast(self.stream, 2)
            .into_iter()
            .map(Source::from_items);
        match (v.next(), v.next()) {
            (Some(a), Some(b)) => [a, b],
            // broadcast(2) always yields two outputs.
            _ => unreachable!("broadcast(2) yields two outputs"),
        }
    }

    /// Fan-out: each element to one of `n` outputs, whichever asks first.
    pub fn balance(self, n: usize) -> Vec<Source<BalanceOutlet<S>, NotUsed>> {
        crate::fanout::balance(self.stream, n.max(1))
            .into_iter()
            .map(Source::from_items)
            .collect()
    }

    /// Fan-out: each element to the output `f` chooses (`0..n`); an index out of
    /// range fails the stream with [`StreamError::PartitionOutOfBounds`].
    pub fn partition<F>(self, n: usize, f: F) -> Vec<Source<PartitionOutlet<S, T, F>, NotUsed>>
    where
        F: FnMut(&T) -> usize,
    {
        crate::fanout::partition(self.stream, n.max(1), f)
            .into_iter()
            .map(Source::from_items)
            .collect()
    }
}

impl<S, A, B, M> Source<S, M>
where
    S: Stream<Item = Item<(A, B)>> + Send + 'static,
{
    /// Fan-out: splits a stream of pairs into a stream of lefts and one of rights.
    pub fn unzip(
        self,
    ) -> (
        Source<UnzipLeft<S, A, B>, NotUsed>,
        Source<UnzipRight<S, A, B>, NotUsed>,
    ) {
        let (l, r) = crate::fanout::unzip(self.stream);
        (Source::from_items(l), Source::from_items(r))
    }
}

impl<S, M> Source<S, M>
where
    S: Stream,
{
    /// Runs the source with a buffer of `capacity` between it and downstream,
    /// as a stream you can poll yourself (see also [`FlowOps::buffer`](crate::FlowOps::buffer)).
    pub fn into_buffered_stream<T>(self, capacity: usize) -> QueueStream<T>
    where
        S: Stream<Item = Item<T>> + Send + 'static,
        T: Send + 'static,
    {
        queue::spawn_buffered(
            self.stream,
            capacity,
            OverflowStrategy::Backpressure,
            queue::Runner::Task("into_buffered_stream"),
        )
    }
}

impl<S: Stream, M> Stream for Source<S, M> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.project().stream.poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.stream.size_hint()
    }
}
