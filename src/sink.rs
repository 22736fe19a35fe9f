//! [`Sink`]: a stage graph with one input and no output.

use std::future::Future;
use std::task::Poll;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};

use crate::error::{Item, StreamError};
use crate::mat::{completion, Completion, NotUsed};

/// How a sink consumes a stream: the trait behind every [`Sink`].
///
/// `attach` receives the upstream and returns the materialized value and the
/// future that drives the stream (spawned by [`RunnableGraph::run`](crate::RunnableGraph::run)).
/// It is generic over the stream type, so a sink's per-element path is fused
/// with the operators before it.
pub trait SinkStage<T>: Send + 'static {
    /// The materialized value.
    type Mat;

    /// Connects the upstream.
    fn attach<S>(self, upstream: S) -> (Self::Mat, BoxFuture<'static, ()>)
    where
        S: Stream<Item = Item<T>> + Send + 'static;
}

/// A consumer of elements. Build one with the constructors below and connect
/// it with [`Source::to`](crate::Source::to) or [`Source::run_with`](crate::Source::run_with).
#[must_use = "a Sink does nothing until a source is connected and run"]
#[derive(Debug)]
pub struct Sink<K> {
    stage: K,
}

impl<K> Sink<K> {
    /// A sink from any [`SinkStage`].
    pub fn from_stage(stage: K) -> Self {
        Sink { stage }
    }

    /// The stage inside.
    pub fn into_inner(self) -> K {
        self.stage
    }
}

/// How many elements a sink handles before yielding to the runtime, so a
/// stream of always-ready elements does not starve other tasks.
const YIELD_EVERY: u32 = 4096;

/// A sink made from an async function over the whole stream.
pub struct FnSink<F> {
    f: F,
}

impl<T, R, F, Fut> SinkStage<T> for FnSink<F>
where
    F: FnOnce(BoxStream<'static, Item<T>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, StreamError>> + Send + 'static,
    R: Send + 'static,
    T: Send + 'static,
{
    type Mat = Completion<R>;

    fn attach<S>(self, upstream: S) -> (Completion<R>, BoxFuture<'static, ()>)
    where
        S: Stream<Item = Item<T>> + Send + 'static,
    {
        let (mut c, done) = completion();
        let fut = (self.f)(upstream.boxed());
        (done, async move { c.complete(fut.await) }.boxed())
    }
}

/// The sink behind [`Sink::fold`] and the sinks built on it.
pub struct FoldSink<A, F, R> {
    zero: A,
    f: F,
    finish: R,
}

impl<T, A, F, R, O> SinkStage<T> for FoldSink<A, F, R>
where
    T: Send + 'static,
    A: Send + 'static,
    O: Send + 'static,
    F: FnMut(A, T) -> std::ops::ControlFlow<A, A> + Send + 'static,
    R: FnOnce(A) -> Result<O, StreamError> + Send + 'static,
{
    type Mat = Completion<O>;

    fn attach<S>(self, upstream: S) -> (Completion<O>, BoxFuture<'static, ()>)
    where
        S: Stream<Item = Item<T>> + Send + 'static,
    {
        let (mut c, done) = completion();
        let FoldSink {
            zero,
            mut f,
            finish,
        } = self;
        let driver = async move {
            // Boxed (not pinned on the stack) so it can be dropped — cancelling
            // upstream — before the completion is reported.
            let mut upstream = Box::pin(upstream);
            let mut acc = Some(zero);
            // Drain up to YIELD_EVERY ready elements per poll in a plain loop:
            // the accumulator lives in a local (a register), not in this
            // future's frame, and there is no per-element await point.
            let outcome = loop {
                let step = std::future::poll_fn(|cx| {
                    let Some(a) = acc.take() else {
                        return Poll::Ready(Step::Done);
                    };
                    let (p, a) = burst(upstream.as_mut(), cx, a, &mut f);
                    acc = a;
                    p
                })
                .await;
                match step {
                    Step::Done => break Ok(()),
                    Step::Failed(e) => break Err(e),
                    // Be a good citizen on a busy runtime.
                    Step::Budget => tokio::task::yield_now().await,
                }
            };
            // Cancel upstream before reporting completion.
            drop(upstream);
            match (outcome, acc) {
                (Ok(()), Some(a)) => c.complete(finish(a)),
                (Err(e), _) => c.complete(Err(e)),
                (Ok(()), None) => c.complete(Err(StreamError::Abrupt("fold accumulator lost"))),
            }
        };
        (done, driver.boxed())
    }
}

/// What one burst of [`FoldSink`]'s drain loop ended with.
enum Step {
    Done,
    Failed(StreamError),
    Budget,
}

/// Up to YIELD_EVERY ready elements into `a`. A separate, non-inlined function:
/// `s` is then a `noalias` argument and LLVM may keep the stream's state in
/// registers for the whole burst.
#[inline(never)]
fn burst<S, T, A, F>(
    mut s: std::pin::Pin<&mut S>,
    cx: &mut std::task::Context<'_>,
    mut a: A,
    f: &mut F,
) -> (Poll<Step>, Option<A>)
where
    S: Stream<Item = Item<T>>,
    F: FnMut(A, T) -> std::ops::ControlFlow<A, A>,
{
    for _ in 0..YIELD_EVERY {
        match s.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(x))) => match f(a, x) {
                std::ops::ControlFlow::Continue(next) => a = next,
                std::ops::ControlFlow::Break(last) => return (Poll::Ready(Step::Done), Some(last)),
            },
            Poll::Ready(Some(Err(e))) => return (Poll::Ready(Step::Failed(e)), None),
            Poll::Ready(None) => return (Poll::Ready(Step::Done), Some(a)),
            Poll::Pending => return (Poll::Pending, Some(a)),
        }
    }
    (Poll::Ready(Step::Budget), Some(a))
}

/// Shorthand for the type of a fold-based sink.
type Folding<A, F, R> = Sink<FoldSink<A, F, R>>;

fn folding<T, A, F, R, O>(zero: A, f: F, finish: R) -> Folding<A, F, R>
where
    F: FnMut(A, T) -> std::ops::ControlFlow<A, A>,
    R: FnOnce(A) -> Result<O, StreamError>,
{
    Sink::from_stage(FoldSink { zero, f, finish })
}

/// Constructors. (`()` only anchors them: write `Sink::foreach(..)`.)
impl Sink<()> {
    /// Calls `f` for each element; materializes the completion.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// Source::from_iter(1..=3).run_with(Sink::foreach(|x| println!("{x}"))).await.unwrap();
    /// # }
    /// ```
    pub fn foreach<T, F>(
        mut f: F,
    ) -> Sink<
        FoldSink<
            (),
            impl FnMut((), T) -> std::ops::ControlFlow<(), ()>,
            impl FnOnce(()) -> Result<(), StreamError>,
        >,
    >
    where
        F: FnMut(T) + Send + 'static,
        T: Send + 'static,
    {
        folding(
            (),
            move |(), x| {
                f(x);
                std::ops::ControlFlow::Continue(())
            },
            Ok,
        )
    }

    /// Folds the elements; materializes the final value.
    pub fn fold<T, A, F>(
        zero: A,
        mut f: F,
    ) -> Sink<
        FoldSink<
            A,
            impl FnMut(A, T) -> std::ops::ControlFlow<A, A>,
            impl FnOnce(A) -> Result<A, StreamError>,
        >,
    >
    where
        F: FnMut(A, T) -> A + Send + 'static,
        A: Send + 'static,
        T: Send + 'static,
    {
        folding(
            zero,
            move |a, x| std::ops::ControlFlow::Continue(f(a, x)),
            Ok,
        )
    }

    /// Collects every element into a `Vec` (Akka's `Sink.seq`).
    pub fn collect<T: Send + 'static>() -> Sink<
        FoldSink<
            Vec<T>,
            impl FnMut(Vec<T>, T) -> std::ops::ControlFlow<Vec<T>, Vec<T>>,
            impl FnOnce(Vec<T>) -> Result<Vec<T>, StreamError>,
        >,
    > {
        folding(
            Vec::new(),
            |mut v, x| {
                v.push(x);
                std::ops::ControlFlow::Continue(v)
            },
            Ok,
        )
    }

    /// The first element (then cancels upstream); fails with
    /// [`StreamError::Empty`] if there is none.
    pub fn head<T: Send + 'static>() -> Sink<
        FoldSink<
            Option<T>,
            impl FnMut(Option<T>, T) -> std::ops::ControlFlow<Option<T>, Option<T>>,
            impl FnOnce(Option<T>) -> Result<T, StreamError>,
        >,
    > {
        folding(
            None,
            |_, x| std::ops::ControlFlow::Break(Some(x)),
            |o: Option<T>| o.ok_or(StreamError::Empty("Sink::head")),
        )
    }

    /// The first element, if any (then cancels upstream).
    pub fn head_option<T: Send + 'static>() -> Sink<
        FoldSink<
            Option<T>,
            impl FnMut(Option<T>, T) -> std::ops::ControlFlow<Option<T>, Option<T>>,
            impl FnOnce(Option<T>) -> Result<Option<T>, StreamError>,
        >,
    > {
        folding(None, |_, x| std::ops::ControlFlow::Break(Some(x)), Ok)
    }

    /// The last element; fails with [`StreamError::Empty`] if there is none.
    pub fn last<T: Send + 'static>() -> Sink<
        FoldSink<
            Option<T>,
            impl FnMut(Option<T>, T) -> std::ops::ControlFlow<Option<T>, Option<T>>,
            impl FnOnce(Option<T>) -> Result<T, StreamError>,
        >,
    > {
        folding(
            None,
            |_, x| std::ops::ControlFlow::Continue(Some(x)),
            |o: Option<T>| o.ok_or(StreamError::Empty("Sink::last")),
        )
    }

    /// The last element, if any.
    pub fn last_option<T: Send + 'static>() -> Sink<
        FoldSink<
            Option<T>,
            impl FnMut(Option<T>, T) -> std::ops::ControlFlow<Option<T>, Option<T>>,
            impl FnOnce(Option<T>) -> Result<Option<T>, StreamError>,
        >,
    > {
        folding(None, |_, x| std::ops::ControlFlow::Continue(Some(x)), Ok)
    }

    /// Consumes and discards every element; materializes the completion.
    pub fn ignore<T: Send + 'static>() -> Sink<
        FoldSink<
            (),
            impl FnMut((), T) -> std::ops::ControlFlow<(), ()>,
            impl FnOnce(()) -> Result<(), StreamError>,
        >,
    > {
        folding((), |(), _| std::ops::ControlFlow::Continue(()), Ok)
    }

    /// Cancels the upstream at once, consuming nothing.
    pub fn cancelled() -> Sink<Cancelled> {
        Sink::from_stage(Cancelled)
    }

    /// A sink from an async function that consumes the whole (boxed) stream;
    /// materializes a [`Completion`] of its result.
    pub fn from_fn<T, R, F, Fut>(f: F) -> Sink<FnSink<F>>
    where
        F: FnOnce(BoxStream<'static, Item<T>>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<R, StreamError>> + Send + 'static,
    {
        Sink::from_stage(FnSink { f })
    }

    /// Calls the async `f` for each element with up to `parallelism` calls in
    /// flight (unordered); materializes the completion.
    pub fn foreach_async<T, F, Fut>(parallelism: usize, f: F) -> Sink<ForeachAsync<F>>
    where
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
        T: Send + 'static,
    {
        Sink::from_stage(ForeachAsync {
            parallelism: parallelism.max(1),
            f,
        })
    }

    /// Sends every element into a tokio channel, waiting when it is full
    /// (backpressure). If the receiver is dropped, the upstream is cancelled
    /// and the completion resolves `Ok`.
    pub fn to_channel<T: Send + 'static>(tx: tokio::sync::mpsc::Sender<T>) -> Sink<ToChannel<T>> {
        Sink::from_stage(ToChannel { tx })
    }
}

/// The sink behind [`Sink::cancelled`].
#[derive(Debug, Clone, Copy)]
pub struct Cancelled;

impl<T> SinkStage<T> for Cancelled {
    type Mat = NotUsed;

    fn attach<S>(self, upstream: S) -> (NotUsed, BoxFuture<'static, ()>)
    where
        S: Stream<Item = Item<T>> + Send + 'static,
    {
        drop(upstream);
        (NotUsed, futures::future::ready(()).boxed())
    }
}

/// The sink behind [`Sink::foreach_async`].
pub struct ForeachAsync<F> {
    parallelism: usize,
    f: F,
}

impl<T, F, Fut> SinkStage<T> for ForeachAsync<F>
where
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    T: Send + 'static,
{
    type Mat = Completion<()>;

    fn attach<S>(self, upstream: S) -> (Completion<()>, BoxFuture<'static, ()>)
    where
        S: Stream<Item = Item<T>> + Send + 'static,
    {
        let (mut c, done) = completion();
        let mut f = self.f;
        let stream = crate::ops::MapAsyncUnordered::new(upstream, self.parallelism, move |x| {
            f(x).map(Ok::<(), StreamError>)
        });
        let driver = async move {
            let mut s = std::pin::pin!(stream);
            while let Some(r) = s.next().await {
                if let Err(e) = r {
                    c.complete(Err(e));
                    return;
                }
            }
            c.complete(Ok(()));
        };
        (done, driver.boxed())
    }
}

/// The sink behind [`Sink::to_channel`].
#[derive(Debug)]
pub struct ToChannel<T> {
    tx: tokio::sync::mpsc::Sender<T>,
}

impl<T: Send + 'static> SinkStage<T> for ToChannel<T> {
    type Mat = Completion<()>;

    fn attach<S>(self, upstream: S) -> (Completion<()>, BoxFuture<'static, ()>)
    where
        S: Stream<Item = Item<T>> + Send + 'static,
    {
        let (mut c, done) = completion();
        let tx = self.tx;
        let driver = async move {
            let mut s = std::pin::pin!(upstream);
            loop {
                // Also watch the receiver while upstream is idle, so that dropping
                // it cancels upstream at once, not at the next element.
                let next = tokio::select! {
                    biased;
                    next = s.next() => next,
                    () = tx.closed() => {
                        tracing::debug!("Sink::to_channel: receiver dropped, cancelling upstream");
                        break;
                    }
                };
                let Some(r) = next else { break };
                match r {
                    Ok(x) => {
                        if tx.send(x).await.is_err() {
                            tracing::debug!(
                                "Sink::to_channel: receiver dropped, cancelling upstream"
                            );
                            break;
                        }
                    }
                    Err(e) => {
                        c.complete(Err(e));
                        return;
                    }
                }
            }
            c.complete(Ok(()));
        };
        (done, driver.boxed())
    }
}
