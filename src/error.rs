//! The error that travels through a stream.

use std::sync::Arc;
use std::time::Duration;

/// A boxed error from user code, shared so that a failure can reach several
/// downstream stages and materialized values at once.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a stream failed.
///
/// A stream element is a `Result<T, StreamError>`: an `Err` is a failure signal
/// travelling downstream. After the first `Err` a stream is finished (as in
/// Akka Streams, failure is terminal); sinks stop at the first failure and
/// report it through their materialized value.
///
/// `StreamError` is cheap to clone (errors from user code are behind an
/// [`Arc`]), so fan-out junctions can deliver one failure to every output.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A bounded buffer with [`OverflowStrategy::Fail`](crate::OverflowStrategy::Fail) overflowed.
    #[error("buffer overflow: more than {capacity} elements buffered")]
    BufferOverflow {
        /// The configured capacity.
        capacity: usize,
    },
    /// No element passed for longer than the configured idle timeout.
    #[error("no element for {0:?} (idle timeout)")]
    IdleTimeout(Duration),
    /// The stream did not complete within the configured completion timeout.
    #[error("stream did not complete within {0:?} (completion timeout)")]
    CompletionTimeout(Duration),
    /// An operator that needs at least one element (`reduce`, `Sink::head`, …) saw none.
    #[error("stream completed without any element ({0})")]
    Empty(&'static str),
    /// A custom stage broke the stage protocol (for example pushed to an outlet without demand).
    #[error("stage protocol violation: {0}")]
    Protocol(String),
    /// A partition function returned an output index that does not exist.
    #[error("partition index {index} out of range (outputs: {outputs})")]
    PartitionOutOfBounds {
        /// The index the partitioner returned.
        index: usize,
        /// The number of outputs.
        outputs: usize,
    },
    /// A stage or the task that ran it stopped abnormally (panicked or was dropped before completing).
    #[error("stream terminated abruptly: {0}")]
    Abrupt(&'static str),
    /// An operator that runs part of the stream on a task of its own
    /// ([`buffer`](crate::FlowOps::buffer),
    /// [`async_boundary`](crate::FlowOps::async_boundary),
    /// [`conflate`](crate::FlowOps::conflate), [`batch`](crate::FlowOps::batch),
    /// an active custom stage) was polled outside a tokio runtime, so it
    /// could not start that task. The operator is named.
    #[error(
        "{0} was polled outside a tokio runtime and cannot start its task \
         (run the stream inside a runtime, or use async_boundary_pinned)"
    )]
    NoRuntime(&'static str),
    /// A failure from user code (a fallible operator, a failed source, a stage handler).
    #[error("{0}")]
    User(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// A failure described only by a message.
    #[error("{0}")]
    Message(Arc<str>),
}

impl StreamError {
    /// Wraps any error from user code.
    pub fn user<E>(err: E) -> Self
    where
        E: Into<BoxError>,
    {
        StreamError::User(Arc::from(err.into()))
    }

    /// A failure with only a message.
    pub fn msg(message: impl Into<String>) -> Self {
        StreamError::Message(Arc::from(message.into()))
    }

    /// If this error wraps a user error of type `E`, a reference to it.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            StreamError::User(e) => e.downcast_ref::<E>(),
            _ => None,
        }
    }
}

/// The element type of every stream in this crate: an element or a failure.
pub type Item<T> = Result<T, StreamError>;
