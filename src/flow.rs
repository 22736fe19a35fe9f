//! [`Flow`]: a reusable piece of pipeline with one input and one output.

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::error::Item;
use crate::mat::{Keep, NotUsed};
use crate::sink::{Sink, SinkStage};
use crate::source::{BoxSource, Source};

type Make<In, Out, M> =
    Box<dyn FnOnce(BoxStream<'static, Item<In>>) -> (BoxStream<'static, Item<Out>>, M) + Send>;

/// A piece of pipeline from `In` to `Out` that materializes `M`: build it once
/// with the [`FlowOps`](crate::FlowOps) operators, then put it between a source and a
/// sink with [`Source::via`] or compose it with [`Flow::via`].
///
/// A flow receives its input as a boxed stream, so each flow costs one virtual
/// call per element at its boundary; operators applied directly to a
/// [`Source`] are fused without it. Like a source, a flow is single-use: to
/// use the same flow in several graphs, write a function that returns it.
///
/// ```
/// use flowstage::prelude::*;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// fn parse() -> Flow<&'static str, i64> {
///     Flow::new().filter_map(|s: &str| s.trim().parse().ok())
/// }
/// let doubled = Flow::new().map(|x: i64| x * 2);
/// let out = Source::from_iter(["1", " 2", "x", "3"])
///     .via(parse().via(doubled))
///     .run_with(Sink::collect())
///     .await
///     .unwrap();
/// assert_eq!(out, [2, 4, 6]);
/// # }
/// ```
#[must_use = "a Flow does nothing until it is part of a running graph"]
pub struct Flow<In, Out, M = NotUsed> {
    make: Make<In, Out, M>,
}

impl<In, Out, M> std::fmt::Debug for Flow<In, Out, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Flow<T, T, NotUsed> {
    /// The identity flow, to build on with operators (Akka's `Flow[T]`).
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Flow {
            make: Box::new(|s| (s, NotUsed)),
        }
    }
}

impl<In: Send + 'static, Out: Send + 'static> Flow<In, Out, NotUsed> {
    /// A flow from a function of the input stream.
    pub fn from_stream_fn<S, F>(f: F) -> Self
    where
        F: FnOnce(BoxStream<'static, Item<In>>) -> S + Send + 'static,
        S: Stream<Item = Item<Out>> + Send + 'static,
    {
        Flow {
            make: Box::new(move |s| (f(s).boxed(), NotUsed)),
        }
    }
}

impl<In: Send + 'static, Out: Send + 'static, M: 'static> Flow<In, Out, M> {
    /// A flow from a function that turns the input (as a [`Source`]) into a
    /// source; the flow materializes that source's value.
    ///
    /// ```
    /// use flowstage::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let running_total = Flow::from_source_fn(|src: BoxSource<u32>| src.scan(0, |a, x| a + x).drop(1));
    /// let v = Source::from_iter([1, 2, 3]).via(running_total).run_with(Sink::collect()).await.unwrap();
    /// assert_eq!(v, [1, 3, 6]);
    /// # }
    /// ```
    pub fn from_source_fn<S, F>(f: F) -> Self
    where
        F: FnOnce(BoxSource<In>) -> Source<S, M> + Send + 'static,
        S: Stream<Item = Item<Out>> + Send + 'static,
    {
        Flow {
            make: Box::new(move |s| {
                let (stream, m) = f(Source::from_items(s)).into_parts();
                (stream.boxed(), m)
            }),
        }
    }

    /// Connects the input stream; returns the output stream and the materialized value.
    pub fn attach(self, input: BoxStream<'static, Item<In>>) -> (BoxStream<'static, Item<Out>>, M) {
        (self.make)(input)
    }

    /// Transforms the materialized value.
    pub fn map_materialized_value<M2: 'static>(
        self,
        f: impl FnOnce(M) -> M2 + Send + 'static,
    ) -> Flow<In, Out, M2> {
        let make = self.make;
        Flow {
            make: Box::new(move |s| {
                let (out, m) = make(s);
                (out, f(m))
            }),
        }
    }

    /// Appends `next`, keeping this flow's materialized value.
    pub fn via<U: Send + 'static, M2: 'static>(self, next: Flow<Out, U, M2>) -> Flow<In, U, M> {
        self.via_mat(next, Keep::left)
    }

    /// Appends `next`, combining the materialized values.
    pub fn via_mat<U: Send + 'static, M2: 'static, M3: 'static>(
        self,
        next: Flow<Out, U, M2>,
        combine: impl FnOnce(M, M2) -> M3 + Send + 'static,
    ) -> Flow<In, U, M3> {
        let make = self.make;
        Flow {
            make: Box::new(move |s| {
                let (mid, m1) = make(s);
                let (out, m2) = next.attach(mid);
                (out, combine(m1, m2))
            }),
        }
    }

    /// Connects a sink: the result is a sink of `In` that materializes the sink's value.
    pub fn to<K: SinkStage<Out>>(self, sink: Sink<K>) -> Sink<FlowSink<In, Out, M, K>>
    where
        M: Send,
    {
        Sink::from_stage(FlowSink {
            flow: self,
            sink: sink.into_inner(),
        })
    }
}

/// The sink made by [`Flow::to`].
pub struct FlowSink<In, Out, M, K> {
    flow: Flow<In, Out, M>,
    sink: K,
}

impl<In, Out, M, K> SinkStage<In> for FlowSink<In, Out, M, K>
where
    In: Send + 'static,
    Out: Send + 'static,
    M: Send + 'static,
    K: SinkStage<Out>,
{
    type Mat = K::Mat;

    fn attach<S>(self, upstream: S) -> (K::Mat, futures::future::BoxFuture<'static, ()>)
    where
        S: Stream<Item = Item<In>> + Send + 'static,
    {
        let (out, _m) = self.flow.attach(upstream.boxed());
        self.sink.attach(out)
    }
}

impl<In, Out, M> Flow<In, Out, M> {
    pub(crate) fn from_make(make: Make<In, Out, M>) -> Self {
        Flow { make }
    }

    pub(crate) fn into_make(self) -> Make<In, Out, M> {
        self.make
    }
}
