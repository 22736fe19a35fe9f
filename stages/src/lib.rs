//! Ready-made stages for flowstage (work in progress).
//!
//! - [`kafka`]: Kafka consumer source with at-least-once batched commits,
//!   per-partition source, producer flow/sink, graceful shutdown and an
//!   embedded (mock) broker.
//! - [`serving`]: the model-serving stage (models and records in, one result
//!   per record out; live model swap, statistics, history).
//! - [`http`]: the serving stage's queryable state over HTTP (axum).
//! - [`store`]: model stores (in memory, local redb file, Kafka changelog)
//!   that keep each dataType's current model, statistics and history across
//!   restarts.

#![warn(missing_docs)]

pub mod http;
pub mod kafka;
pub mod serving;
pub mod store;
pub mod wine;
