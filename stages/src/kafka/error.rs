//! Typed errors of the Kafka stages.

use rdkafka::error::KafkaError as ClientError;

/// What went wrong in a Kafka stage.
///
/// Stages report it to the stream wrapped in
/// [`StreamError::User`](flowstage::StreamError::User); recover it with
/// [`StreamError::downcast_ref::<KafkaStageError>()`](flowstage::StreamError::downcast_ref).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaStageError {
    /// The librdkafka client failed (creation, subscription, consumption, metadata).
    #[error("kafka client error: {0}")]
    Client(#[from] ClientError),
    /// A record could not be delivered (after librdkafka's own retries).
    #[error("delivery to topic {topic} failed: {source}")]
    Delivery {
        /// The destination topic.
        topic: String,
        /// The client's reason.
        #[source]
        source: ClientError,
    },
    /// Committing offsets failed with a non-retriable error.
    #[error("offset commit failed: {0}")]
    Commit(#[source] ClientError),
    /// A setting is invalid.
    #[error("invalid setting `{name}`: {reason}")]
    Config {
        /// The setting.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The committer's task is gone (its handles were used after shutdown).
    #[error("the offset committer has shut down")]
    CommitterClosed,
    /// The pipeline did not finish within the drain timeout after a stop.
    #[error(
        "the pipeline did not drain within {after:?} of the stop; {in_flight} records in flight \
         were not committed (they will be consumed again)"
    )]
    DrainTimeout {
        /// The drain timeout.
        after: std::time::Duration,
        /// Records emitted by the consumer and not yet processed.
        in_flight: usize,
    },
    /// The embedded (mock) broker could not be started or driven.
    #[error("embedded broker: {0}")]
    Embedded(String),
    /// A blocking client call's worker task failed (panicked or was cancelled).
    #[error("background task failed: {0}")]
    Task(String),
    /// A Kafka transaction failed and was aborted (exactly-once processing):
    /// its records are invisible to read_committed consumers and its input
    /// offsets were not committed.
    #[error("transaction aborted: {0}")]
    TransactionAborted(String),
    /// The broker cannot serve exactly-once processing.
    #[error("exactly-once processing is not supported: {0}")]
    Unsupported(String),
}

impl KafkaStageError {
    /// Whether the error is a fatal client error (the client must be recreated).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            KafkaStageError::Client(ClientError::MessageConsumptionFatal(_))
        )
    }
}
