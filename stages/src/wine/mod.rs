//! The wine-scoring pipeline on Kafka: a data provider publishes wine records
//! and models, a server scores each record with the current model of its
//! dataType and publishes the result.
//!
//! ```text
//!  provider ──WineRecord──▶ mdata ──▶┐
//!           ──ModelDescriptor──▶ models ──▶ server (ServingStage) ──ServingResult──▶ results
//!                                    └── undecodable records ──▶ mdata-dlq (reason in a header)
//! ```
//!
//! - Records travel as [`WineRecord`] protobufs keyed by their sequence number
//!   (decimal text, see [`record_key`]); results as [`ServingResult`]s keyed
//!   like their record, so a result names the record it answers.
//! - Models travel as [`ModelDescriptor`]s keyed by dataType on a compacted
//!   topic, which every server reads from the beginning independently of the
//!   data consumer group: a new or restarted instance starts with the latest
//!   model of every dataType.
//! - Delivery is at-least-once: a record's offset is committed after its
//!   result (or its dead-letter copy) is acknowledged by the broker.
//!
//! [`WineRecord`]: flowstage_model::pb::WineRecord
//! [`ServingResult`]: flowstage_model::pb::ServingResult
//! [`ModelDescriptor`]: flowstage_model::pb::ModelDescriptor

pub mod files;
pub mod instances;
pub mod provider;
pub mod server;

use crate::kafka::{KafkaConnection, KafkaStageError};

/// The header carrying why a record went to the dead-letter topic.
pub const DLQ_REASON_HEADER: &str = "flowstage-dlq-reason";

/// The dataType of the tutorial's wine records and models.
pub const WINE: &str = "wine";

/// Topic names of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Wine records (the tutorial's `mdata`).
    pub data: String,
    /// Model descriptors, keyed by dataType, compacted (the tutorial's `models`).
    pub models: String,
    /// Serving results.
    pub results: String,
    /// Records that could not be decoded, with the reason in [`DLQ_REASON_HEADER`].
    pub dlq: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            data: "mdata".into(),
            models: "models".into(),
            results: "results".into(),
            dlq: "mdata-dlq".into(),
        }
    }
}

/// Partitions of the data and results topics created by [`ensure_topics`]
/// (and by `flowstage broker`).
pub const DEFAULT_PARTITIONS: i32 = 6;

impl Topics {
    /// Every topic of the pipeline with its partitions and whether it is
    /// compacted: data and results `partitions`, the others one partition;
    /// models and `instances` compacted (the latest record per key is kept).
    pub fn layout<'a>(&'a self, instances: &'a str, partitions: i32) -> [(&'a str, i32, bool); 5] {
        [
            (self.data.as_str(), partitions, false),
            (self.models.as_str(), 1, true),
            (self.results.as_str(), partitions, false),
            (self.dlq.as_str(), 1, false),
            (instances, 1, true),
        ]
    }
}

/// The last error (and warning) librdkafka reported to a client, kept so
/// that an error can say why the cluster did not answer.
#[derive(Default)]
struct ClientReasons {
    error: std::sync::Mutex<Option<String>>,
    warning: std::sync::Mutex<Option<String>>,
}

impl ClientReasons {
    /// ` (librdkafka: …)` with the last error, else the last warning, or empty.
    fn summary(&self) -> String {
        let last = |m: &std::sync::Mutex<Option<String>>| {
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        last(&self.error)
            .or_else(|| last(&self.warning))
            .map(|r| format!(" (librdkafka: {r})"))
            .unwrap_or_default()
    }
}

impl rdkafka::ClientContext for ClientReasons {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(
            level,
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
        ) {
            *self
                .warning
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(format!("{fac}: {message}"));
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        *self
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for ClientReasons {}

/// Creates the topics of `layout` that do not exist yet (a real cluster with
/// the admin API; the broker's default replication factor; compacted topics
/// get `cleanup.policy=compact`). Existing
/// topics are left as they are. librdkafka's mock cluster (the embedded
/// broker, `flowstage broker`) has no admin API: there a missing topic is
/// created by the broker's auto-creation, which a producer's metadata request
/// triggers, with the broker's default partition count (logged), not
/// `layout`'s. Another cluster without the admin API is not an error either:
/// that is logged (after the request's 10 s timeout) and the topics are left
/// to the broker.
///
/// `kafka` is the cluster's bootstrap servers, or a [`KafkaConnection`] with
/// the client properties a secured cluster needs. A cluster that does not
/// answer a metadata request within 10 s is an error ([`WineError::Connect`]).
pub async fn ensure_topics(
    kafka: impl Into<KafkaConnection>,
    layout: &[(&str, i32, bool)],
) -> Result<(), WineError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::Consumer;
    use rdkafka::error::RDKafkaErrorCode;

    let kafka: KafkaConnection = kafka.into();
    let admin: AdminClient<crate::kafka::ClientLog> = kafka
        .client_config()
        .create_with_context(crate::kafka::ClientLog)
        .map_err(KafkaStageError::Client)?;
    // Only the missing ones: listing is cheap everywhere, creating is not
    // supported by every broker.
    let (existing, mock): (std::collections::HashSet<String>, bool) = {
        let config = kafka.client_config();
        tokio::task::spawn_blocking(move || {
            let client: rdkafka::consumer::BaseConsumer<ClientReasons> = config
                .create_with_context(ClientReasons::default())
                .map_err(|e| (e, String::new()))?;
            let names = client
                .fetch_metadata(None, std::time::Duration::from_secs(10))
                .map(|md| md.topics().iter().map(|t| t.name().to_string()).collect())
                .map_err(|source| {
                    // librdkafka says why on the client's queue (a refused TLS
                    // handshake, a failed SASL authentication): serve it.
                    let _ = client.poll(std::time::Duration::from_millis(100));
                    (source, client.context().summary())
                })?;
            // The metadata just answered carries the cluster id: no wait.
            let mock =
                crate::kafka::is_mock_cluster(client.client(), std::time::Duration::from_secs(1));
            Ok((names, mock))
        })
        .await
        .map_err(|e| KafkaStageError::Task(e.to_string()))?
        .map_err(|(source, reasons)| WineError::Connect {
            brokers: kafka.brokers.clone(),
            reasons,
            source: Box::new(source),
        })?
    };
    let topics: Vec<NewTopic<'_>> = layout
        .iter()
        .filter(|(name, _, _)| !existing.contains(*name))
        .map(|&(name, partitions, compacted)| {
            // The broker's default replication factor (brokers from 2.4 on).
            let t = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
            if compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    if topics.is_empty() {
        return Ok(());
    }
    if mock {
        let config = kafka.client_config();
        let names: Vec<String> = topics.iter().map(|t| t.name.to_string()).collect();
        return tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let counts = crate::kafka::mock_auto_create(&config, &refs).map_err(|e| {
                WineError::Config {
                    name: "topics",
                    reason: format!("cannot create topics {}: {e}", names.join(", ")),
                }
            })?;
            for (topic, partitions) in names.iter().zip(counts) {
                tracing::info!(
                    topic,
                    partitions,
                    "topic created (by the embedded broker's auto-creation, with its partition count)"
                );
            }
            Ok(())
        })
        .await
        .map_err(|e| KafkaStageError::Task(e.to_string()))?;
    }
    let opts = AdminOptions::new()
        .operation_timeout(Some(std::time::Duration::from_secs(10)))
        .request_timeout(Some(std::time::Duration::from_secs(10)));
    match admin.create_topics(&topics, &opts).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(name) => tracing::info!(topic = name, "topic created"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, e)) => {
                        return Err(WineError::Config {
                            name: "topics",
                            reason: format!("cannot create topic {name}: {e}"),
                        })
                    }
                }
            }
            Ok(())
        }
        Err(e) => {
            tracing::info!(error = %e, "topics not created (no admin API on this cluster?); relying on the broker");
            Ok(())
        }
    }
}

/// `n` and `thing`, with an `s` unless `n` is 1 (the commands' summaries).
///
/// ```
/// use flowstage_stages::wine::plural;
///
/// assert_eq!(plural(1, "record"), "1 record");
/// assert_eq!(plural(0, "model"), "0 models");
/// ```
pub fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// `e` and its causes, `: `-separated, each once: a cause whose text is shown already (an
/// error whose message includes its `#[source]`) is left out.
///
/// ```
/// use flowstage_stages::wine::with_causes;
///
/// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
/// assert_eq!(with_causes(&io), "no such file");
/// ```
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

/// The key of the `seq`-th record a provider publishes: its decimal text.
pub fn record_key(seq: u64) -> Vec<u8> {
    seq.to_string().into_bytes()
}

/// Parses a key written by [`record_key`].
pub fn parse_record_key(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key).ok()?.parse().ok()
}

/// Errors of the wine pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WineError {
    /// A Kafka client or stage failed.
    #[error(transparent)]
    Kafka(#[from] KafkaStageError),
    /// The cluster did not answer a metadata request: unreachable, or it
    /// needs client properties it was not given (a secured listener:
    /// `security.protocol`, `sasl.*`, `ssl.*`).
    #[error(
        "no answer from the Kafka cluster at {brokers}{reasons}: is it reachable, and does it \
         need security settings (security.protocol, sasl.*, ssl.*) in the client properties?"
    )]
    Connect {
        /// The bootstrap servers.
        brokers: String,
        /// What librdkafka reported meanwhile (` (librdkafka: …)`), or empty.
        reasons: String,
        /// The client's error.
        #[source]
        source: Box<rdkafka::error::KafkaError>,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A data file could not be parsed.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// An invalid setting.
    #[error("invalid setting `{name}`: {reason}")]
    Config {
        /// The setting.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The model store cannot be opened or read (a damaged file, a broker
    /// that does not answer); a setting it refuses is [`WineError::Config`].
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The stream failed.
    #[error("stream failed: {0}")]
    Stream(#[from] flowstage::StreamError),
    /// The HTTP state server could not start (its address is taken, say).
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::{EmbeddedBroker, EmbeddedBrokerConfig};
    use rdkafka::consumer::{BaseConsumer, Consumer as _};

    /// The partition count of each topic the cluster at `bootstrap` knows,
    /// from a consumer's metadata request (which creates nothing).
    fn partitions(bootstrap: &str) -> std::collections::HashMap<String, usize> {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("consumer");
        let md = c
            .fetch_metadata(None, std::time::Duration::from_secs(10))
            .expect("metadata");
        md.topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_topics_are_created_on_the_embedded_broker_and_existing_ones_left() {
        let broker = EmbeddedBroker::start(EmbeddedBrokerConfig::new(1).topic("there", 2))
            .expect("embedded broker");
        let b = broker.bootstrap_servers().to_string();
        let before = partitions(&b);
        assert!(!before.contains_key("new-data"), "{before:?}");
        let layout = [
            ("there", 6, false),
            ("new-data", 6, false),
            ("new-models", 1, true),
        ];
        ensure_topics(b.as_str(), &layout).await.expect("topics");
        let after = partitions(&b);
        assert_eq!(after.get("there"), Some(&2), "left as it was: {after:?}");
        for t in ["new-data", "new-models"] {
            assert!(after.get(t).is_some_and(|&n| n > 0), "{t}: {after:?}");
        }
        // A second call finds them all and creates nothing.
        ensure_topics(b.as_str(), &layout)
            .await
            .expect("topics again");
        assert_eq!(partitions(&b), after);
    }
}
