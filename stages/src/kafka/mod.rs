//! Kafka stages on librdkafka (rdkafka): at-least-once consumption with
//! batched, ordered commits; a producer flow/sink with delivery reports and
//! bounded in-flight records; graceful shutdown; an embedded mock broker.
//!
//! An at-least-once pipeline — consume, process, produce the result, commit
//! the input's offset only after the result is acknowledged:
//!
//! ```no_run
//! use flowstage::prelude::*;
//! use flowstage_stages::kafka::*;
//! # async fn run(bootstrap: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let producer = KafkaProducer::new(&ProducerSettings::new(bootstrap))?;
//! let (control, source) = committable_source(ConsumerSettings::new(bootstrap, "scorers", ["in"]))?
//!     .pre_materialize();
//! let committer = control.committer(CommitterSettings::default());
//! let done = source
//!     .map(|m| {
//!         let result = m.record.payload.clone().unwrap_or_default(); // process
//!         ProducerMessage::single(ProducerRecord::new("out", result), m.offset)
//!     })
//!     .via(producer.flow())
//!     .run_with(committer.sink());
//! // Ctrl-C / SIGTERM: stop consuming, finish in-flight records, commit.
//! run_until(&control, done, shutdown_signal()).await?;
//! # Ok(()) }
//! ```
//!
//! Delivery is at-least-once: after a crash, records processed since the
//! last commit are processed again (duplicates), none is lost. For
//! exactly-once, replace the committer by a [`transactional_sink`] (results
//! and offsets committed together in Kafka transactions; see its docs).
//!
//! ## Notes and limits
//! - Every offset a source emits must reach the committer (use
//!   [`ProducerMessage::passthrough`] for records without a result), or that
//!   partition's commits stop at it.
//! - A partition's committed offset never moves backwards: commits are
//!   serialised (committer and revocation) and only positions above the last
//!   committed one are sent. On revocation the processed prefix is committed
//!   and the rest is left to the next owner. A broker that rejects commits
//!   during a rebalance (librdkafka's mock does, with `REBALANCE_IN_PROGRESS`)
//!   only causes more duplicates.
//! - Backpressure reaches the consumer: while downstream is slow the source
//!   is not polled. If it stalls longer than librdkafka's
//!   `max.poll.interval.ms` (5 min), the consumer leaves the group.
//! - Sync commits run on tokio's blocking pool; a revocation callback that
//!   finds a commit in progress waits for it.

mod committer;
mod committing;
mod connection;
mod consumer;
mod embedded;
mod error;
mod partitioned;
mod producer;
mod shutdown;
mod tracker;
pub mod transactional;

pub use committer::{CommitStats, Committer, CommitterSettings};
pub use committing::committable_sink;
pub use connection::KafkaConnection;
pub use consumer::{
    committable_source, CommitHook, Committable, CommittableMessage, CommittableOffset,
    CommittableSource, ConsumerControl, ConsumerRecord, ConsumerSettings, SourceConsumer,
    SourceContext,
};
pub use embedded::{run_embedded_broker, EmbeddedBroker, EmbeddedBrokerConfig, TopicSpec};
pub use error::KafkaStageError;
pub use partitioned::{partitioned_source, PartitionSource};
pub use producer::{
    kafka_error, DeliveryReport, KafkaProducer, ProducerMessage, ProducerRecord, ProducerResult,
    ProducerSettings, ProducerStats,
};
pub use shutdown::{drain_and_shutdown, run_until, shutdown_signal};
pub use tracker::{OffsetTracker, TopicPartition, TrackerCounts};
pub use transactional::{
    check_transactions_supported, transactional_id, transactional_sink, Processing,
    TransactionStats, TransactionalSettings,
};
