//! Ready-made stages for flowstage (work in progress).
//!
//! - [`kafka`]: Kafka consumer source with at-least-once batched commits,
//!   per-partition source, producer flow/sink, graceful shutdown and an
//!   embedded (mock) broker.

#![warn(missing_docs)]

pub mod kafka;
