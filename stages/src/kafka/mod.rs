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
//! committer.close().await?; // its last commit (an error if it failed)
//! control.shutdown().await; // the group left, the consumer closed
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
//!   only causes more duplicates. One case is outside this consumer's hands:
//!   a commit that timed out is not withdrawn, so if librdkafka sends it late
//!   (the coordinator was away) it can land after the partition's next owner
//!   committed further, as with any Kafka client; the result is duplicates
//!   after a later restart, never a lost record.
//! - Backpressure reaches the consumer: while downstream is slow the source
//!   is not polled. If it stalls longer than librdkafka's
//!   `max.poll.interval.ms` (5 min), the consumer leaves the group.
//! - Sync commits run on tokio's blocking pool; a revocation callback that
//!   finds a commit in progress waits for it (for a [`transactional_sink`],
//!   the transaction's commit), which holds up the rebalance meanwhile.
//! - Every timeout and interval of these settings may be as large as
//!   `Duration::MAX` (deadlines saturate); an in-flight bound or a
//!   per-partition buffer above 2^61 is a [`KafkaStageError::Config`] error
//!   (the committer's own settings are clamped).
//! - A consumer closes (its processed prefix committed, the group left) when
//!   its last handle is dropped, on tokio's blocking pool, so no async thread
//!   waits for the broker meanwhile. [`ConsumerControl::shutdown`] and
//!   [`ConsumerControl::closed`] wait for it, for example before stopping a
//!   broker.

pub(crate) mod client_log;
mod commit;
mod committer;
mod committing;
pub(crate) mod connection;
mod consumer;
mod embedded;
mod error;
pub(crate) mod keeper;
mod partitioned;
mod producer;
mod rebalance;
mod shutdown;
mod tracker;
pub mod transactional;

pub use client_log::ClientLog;
pub use committer::{CommitStats, Committer, CommitterSettings};
pub use committing::committable_sink;
pub use connection::KafkaConnection;
pub(crate) use consumer::recv;

/// How long a client may have no broker to talk to before it starts again
/// from `bootstrap.servers` (librdkafka's `metadata.recovery.rebootstrap.trigger.ms`,
/// 5 minutes by default).
pub(crate) const REBOOTSTRAP_AFTER_MS: &str = "10000";

/// About 30 years: what a deadline saturates at.
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(86_400 * 365 * 30);

/// `now + after`, saturating at about 30 years from now (`Instant + Duration::MAX`
/// panics, and settings such as timeouts come from users).
pub(crate) fn deadline_after(after: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(after.min(FAR_FUTURE)).unwrap_or(now)
}

/// The most permits a tokio semaphore takes, and so the most of any count
/// bounded by one (in-flight messages, buffered requests).
pub(crate) const MAX_PERMITS: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// Refuses a count above [`MAX_PERMITS`] as a [`KafkaStageError::Config`] of `name`.
pub(crate) fn check_count(name: &'static str, n: usize) -> Result<usize, KafkaStageError> {
    if n > MAX_PERMITS {
        return Err(KafkaStageError::Config {
            name,
            reason: format!("at most {MAX_PERMITS}, not {n}"),
        });
    }
    Ok(n)
}

/// The configuration every Kafka client of this crate starts from:
/// `bootstrap.servers`, and re-bootstrapping after
/// [`REBOOTSTRAP_AFTER_MS`]. A broker that is shutting down (or starting)
/// can answer a metadata request with no broker at all; librdkafka then drops
/// every broker it knew and, until it re-bootstraps, has none to reconnect
/// to when the broker is back — a server sat idle for minutes after a broker
/// restart. Properties set later override these.
pub(crate) fn base_client_config(bootstrap_servers: &str) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers).set(
        "metadata.recovery.rebootstrap.trigger.ms",
        REBOOTSTRAP_AFTER_MS,
    );
    c
}

/// Checks a topic name as Kafka does: 1 to 249 characters of `A-Z a-z 0-9 .
/// _ -`, and not `.` or `..`. The reason, when it is not one.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "{} characters, Kafka allows at most 249",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a topic name Kafka allows"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "{name:?} has {c:?}; Kafka topic names take only A-Z, a-z, 0-9, '.', '_' and '-'"
        )),
        None => Ok(()),
    }
}

/// Checks a `bootstrap.servers` list: at least one entry, each
/// `[protocol://]host[:port]` with a port from 1 to 65535 (librdkafka would
/// connect to port 100041 as 34505). The reason, when it is not.
pub fn check_bootstrap(list: &str) -> Result<(), String> {
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err("no broker address (host:port)".into());
    }
    for entry in entries {
        let address = entry.split_once("://").map_or(entry, |(_, a)| a);
        let (host, port) = match address.strip_prefix('[') {
            // An IPv6 address: [::1]:9092
            Some(rest) => match rest.split_once(']') {
                Some((host, tail)) => (host, tail.strip_prefix(':')),
                None => ("", None),
            },
            None => match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            },
        };
        if host.is_empty() {
            return Err(format!("{entry:?} has no host"));
        }
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return Err(format!(
                "{entry:?}: the port must be a number from 1 to 65535"
            ));
        }
    }
    Ok(())
}

/// The value `key` ends up with when `properties` are set in order on a
/// librdkafka configuration, as the settings of this crate apply them: the
/// last one set wins.
///
/// ```
/// use flowstage_stages::kafka::effective_property;
///
/// let props = [("linger.ms".to_string(), "5".to_string()), ("linger.ms".to_string(), "0.2".to_string())];
/// assert_eq!(effective_property(&props, "linger.ms"), Some("0.2"));
/// assert_eq!(effective_property(&props, "acks"), None);
/// ```
pub fn effective_property<'a>(properties: &'a [(String, String)], key: &str) -> Option<&'a str> {
    properties
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

pub use consumer::{
    committable_source, CommitHook, Committable, CommittableMessage, CommittableOffset,
    CommittableSource, ConsumerControl, ConsumerRecord, ConsumerSettings, SourceConsumer,
    SourceContext,
};
pub(crate) use embedded::{is_mock_cluster, is_mock_cluster_id, mock_auto_create};
pub use embedded::{run_embedded_broker, EmbeddedBroker, EmbeddedBrokerConfig, TopicSpec};
pub use error::KafkaStageError;
pub use partitioned::{partitioned_source, PartitionSource};
pub use producer::{
    kafka_error, DeliveryReport, KafkaProducer, ProducerMessage, ProducerRecord, ProducerResult,
    ProducerSettings, ProducerStats,
};
pub use shutdown::{
    drain_and_shutdown, drain_and_shutdown_within, run_until, run_until_within, shutdown_signal,
    stop_signal, StopSignal,
};
pub use tracker::{OffsetTracker, TopicPartition, TrackerCounts};
pub use transactional::{
    check_transactions_supported, transactional_id, transactional_sink, Processing,
    TransactionStats, TransactionalSettings,
};

#[cfg(test)]
mod tests {
    use super::{check_bootstrap, check_topic_name};

    #[test]
    fn bootstrap_lists_need_a_host_and_a_16_bit_port() {
        for good in [
            "127.0.0.1:9092",
            "a:1, b:65535",
            "kafka",
            "SASL_SSL://k.example:9093",
            "[::1]:9092",
        ] {
            assert_eq!(check_bootstrap(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            " , ",
            "127.0.0.1:100041",
            "h:0",
            "h:x",
            ":9092",
            "[::1]:70000",
        ] {
            assert!(check_bootstrap(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        for good in ["mdata", "a.b_c-D9", &"t".repeat(249)] {
            assert_eq!(check_topic_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a b", "tôpic", &"t".repeat(250)] {
            assert!(check_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
