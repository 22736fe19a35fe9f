//! # flowstage
//!
//! Backpressured stream processing in the vocabulary of Akka Streams —
//! [`Source`], [`Flow`], [`Sink`], junctions, materialized values,
//! supervision and custom stages — built on `futures::Stream` and tokio.
//!
//! ## A tour
//!
//! **Sources, operators, sinks.** A [`Source`] emits elements; the operators
//! of [`FlowOps`] transform them; a [`Sink`] consumes them. Connecting a
//! source to a sink gives a [`RunnableGraph`]; running it returns the
//! *materialized value* — for most sinks a [`Completion`] future:
//!
//! ```
//! use flowstage::prelude::*;
//! use num_bigint::BigUint;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // The quickstart: factorials of 0..=10.
//! let done = Source::from_iter(1..=10u32)
//!     .scan(BigUint::from(1u32), |acc, n| acc * n)
//!     .run_with(Sink::foreach(|f| println!("{f}")));
//! done.await.unwrap();
//! # }
//! ```
//!
//! **Backpressure.** Streams are pulled: an operator asks its upstream for an
//! element only when its downstream asked it for one, so a slow consumer slows
//! the whole pipeline instead of filling memory. Operators that decouple rates
//! ([`buffer`](FlowOps::buffer), [`async_boundary`](FlowOps::async_boundary),
//! [`conflate`](FlowOps::conflate), [`batch`](FlowOps::batch),
//! [`Source::queue`]) hold a bounded number of elements and apply an
//! [`OverflowStrategy`] beyond it.
//!
//! **Failure.** Elements are [`Item<T>`] = `Result<T, StreamError>`; an `Err`
//! is a failure travelling downstream and ends the stream. Sinks report it
//! through their [`Completion`]. Dropping a stream cancels its upstream.
//! Fallible operators take a [`Supervisor`] to stop, resume or restart
//! ([`supervision`]); [`RestartSource`] and [`RestartFlow`] re-create failed
//! parts with backoff ([`restart`]); kill switches stop streams from outside
//! ([`killswitch`]).
//!
//! **Graphs.** Fan-in operators ([`merge`](FlowOps::merge),
//! [`zip`](FlowOps::zip), [`concat`](FlowOps::concat), …) join sources;
//! fan-out junctions ([`Source::broadcast`], [`Source::balance`],
//! [`Source::partition`], [`Source::unzip`]) split one. A diamond reads as
//! what it is:
//!
//! ```
//! use flowstage::prelude::*;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let [a, b] = Source::from_iter(1..=3).broadcast2();
//! let sums = a.map(|x| x + 1).zip_with(b.map(|x| x * 10), |p, q| p + q);
//! assert_eq!(sums.run_with(Sink::collect()).await.unwrap(), [12, 23, 34]);
//! # }
//! ```
//!
//! **Reusable pieces.** A [`Flow`] is a pipeline segment with an open input,
//! composed with [`Flow::via`] and attached with [`Source::via`].
//!
//! **Custom stages.** For operators with several inputs and outputs and
//! rules of their own, implement [`GraphStageLogic`](stage::GraphStageLogic):
//! explicit pull/push handlers, timers and async callbacks ([`stage`]).
//!
//! **Runtime.** Running a graph ([`RunnableGraph::run`], `run_with`) spawns
//! it on the current tokio runtime. A stream can also be polled by hand, on
//! any executor, except for the parts that run on a task of their own:
//! [`buffer`](FlowOps::buffer), [`async_boundary`](FlowOps::async_boundary),
//! [`conflate`](FlowOps::conflate), [`batch`](FlowOps::batch) and active
//! custom stages. Outside a runtime they fail the stream with
//! [`StreamError::NoRuntime`] instead of panicking;
//! [`async_boundary_pinned`](FlowOps::async_boundary_pinned) runs anywhere.
//! Time-based operators (`throttle`, timeouts, ticks, stage timers) use
//! tokio's timer and need a runtime.
//!
//! **Testing.** [`testkit`] has probes to drive and observe a stream step by step.

#![warn(missing_docs)]
// Operator return types name their fused state machines; that is the point.
#![allow(clippy::type_complexity)]

pub mod error;
pub mod fanin;
pub mod fanout;
mod flow;
mod flow_ops;
pub mod killswitch;
pub mod mat;
pub mod ops;
pub mod queue;
pub mod restart;
mod runnable;
pub mod sink;
mod source;
pub mod stage;
pub mod supervision;
pub mod testkit;

pub use async_stream;
pub use error::{BoxError, Item, StreamError};
pub use flow::{Flow, FlowSink};
pub use flow_ops::{BoxedMapFn, FlowOps};
pub use killswitch::{KillSwitches, SharedKillSwitch, UniqueKillSwitch};
pub use mat::{Completion, Keep, NotUsed};
pub use queue::{OverflowStrategy, QueueOfferResult, SourceQueue};
pub use restart::{RestartFlow, RestartSettings, RestartSource};
pub use runnable::RunnableGraph;
pub use sink::{Sink, SinkStage};
pub use source::{BoxSource, IterStream, Never, OkStream, Source, TryStreamSource, Unfold};
pub use supervision::{Directive, Supervisor};

/// Everything needed to build and run pipelines: `use flowstage::prelude::*;`.
pub mod prelude {
    pub use crate::error::{Item, StreamError};
    pub use crate::flow::Flow;
    pub use crate::flow_ops::FlowOps;
    pub use crate::killswitch::{KillSwitches, SharedKillSwitch, UniqueKillSwitch};
    pub use crate::mat::{Completion, Keep, NotUsed};
    pub use crate::queue::{OverflowStrategy, QueueOfferResult, SourceQueue};
    pub use crate::restart::{RestartFlow, RestartSettings, RestartSource};
    pub use crate::runnable::RunnableGraph;
    pub use crate::sink::Sink;
    pub use crate::source::{BoxSource, Source};
    pub use crate::supervision::{Directive, Supervisor};
}
