//! The model server: data topic → [`ServingStage`] ← model topic; results to
//! the results topic, undecodable records to the dead-letter topic.
//!
//! ```no_run
//! use flowstage_stages::wine::server::{Server, ServerConfig};
//! # async fn run() -> Result<(), flowstage_stages::wine::WineError> {
//! let server = Server::start(ServerConfig::new("127.0.0.1:9092")).await?;
//! println!("HTTP state on {:?}", server.http_addr());
//! let summary = server.run(flowstage_stages::kafka::shutdown_signal()).await?;
//! println!("{summary}");
//! # Ok(()) }
//! ```
//!
//! - **Models**: read from the model topic from the beginning by a consumer of
//!   its own (partitions assigned, no group, nothing committed), independent of
//!   the data consumer group, so every instance sees every model. At start-up
//!   the topic is read to its end and those models are loaded before the first
//!   record is taken, so a new or restarted instance starts with the latest
//!   model of each dataType. A record of a dataType that has no model yet first
//!   syncs with the model topic (reads it to its end as of now and waits for
//!   those loads; at most once a second per dataType): a model published before
//!   the record is never missed because the two topics are read by different
//!   consumers.
//! - **Data**: a [`committable_source`] in consumer group
//!   [`ServerConfig::group_id`]; several servers in one group share the data
//!   topic's partitions. Each record's offset is committed after its result (or
//!   its dead-letter copy) is acknowledged: at-least-once.
//! - **Dead letters**: a record whose payload is not a [`WineRecord`] (or has
//!   no dataType) is copied to the dead-letter topic with its key, the reason in
//!   the [`DLQ_REASON_HEADER`] header and its origin (`topic/partition@offset`)
//!   in [`DLQ_SOURCE_HEADER`]; the stream goes on.
//! - **Instances**: each server publishes an
//!   [`InstanceInfo`] and lists the group's live
//!   instances on `GET /state/instances` (see [`super::instances`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flowstage::prelude::*;
use flowstage_model::pb::{ModelDescriptor, ServingResult, WineRecord};
use flowstage_model::{FieldMapping, ModelRegistry, ModelsDir, Record};
use prost::Message as _;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::instances::{InstanceDirectory, InstanceInfo, DEFAULT_INSTANCES_TOPIC};
use super::{ensure_topics, Topics, WineError, DEFAULT_PARTITIONS, DLQ_REASON_HEADER};
use crate::http::{self, HttpServer};
use crate::kafka::{
    committable_sink, committable_source, run_until_within, CommitStats, CommittableMessage,
    CommittableOffset, CommitterSettings, ConsumerSettings, KafkaProducer, KafkaStageError,
    ProducerMessage, ProducerRecord, ProducerSettings,
};
use crate::kafka::{
    transactional_id, transactional_sink, Processing, TransactionStats, TransactionalSettings,
};
use crate::kafka::{ClientLog, KafkaConnection};
use crate::serving::{
    now_ms, ModelMessage, RegistryLoader, ServingConfig, ServingRecord, ServingStage, ServingState,
};
use crate::store::{
    ModelCatalog, ModelPosition, StoreConfig, StoreWriter, StoredEntry, DEFAULT_PERSIST_INTERVAL,
};

/// The header naming where a dead letter came from: `topic/partition@offset`.
pub const DLQ_SOURCE_HEADER: &str = "flowstage-dlq-source";

/// The default consumer group of servers.
pub const DEFAULT_GROUP: &str = "flowstage-serving";

/// The most a count setting of the server may be (`max_in_flight`, the
/// serving stage's `batch_size` and `data_buffer`): each is records held in
/// memory at once.
pub const MAX_COUNT_SETTING: usize = 1_000_000;

/// Settings of a [`Server`]. Its `Debug` hides secret property values
/// (passwords, secrets, PEM keys).
#[derive(Clone)]
pub struct ServerConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The data consumer group (servers in one group share the partitions).
    pub group_id: String,
    /// Topic names.
    pub topics: Topics,
    /// The topic of instance records (compacted).
    pub instances_topic: String,
    /// This instance's id (unique in the group); default `host-pid`.
    pub instance_id: String,
    /// Where to serve the HTTP state; `None`: no HTTP server.
    pub http: Option<SocketAddr>,
    /// The directory model `location`s are resolved in; `None`: descriptors by
    /// location are rejected.
    pub models_dir: Option<PathBuf>,
    /// The serving stage's settings (micro-batching, history, ...).
    pub serving: ServingConfig,
    /// When offsets are committed: every [`DEFAULT_COMMIT_BATCH`] processed
    /// records or at least every second while records flow (the
    /// [`CommitterSettings`] default interval).
    pub commit: CommitterSettings,
    /// Results (and dead letters) unacknowledged at most.
    pub max_in_flight: usize,
    /// At-least-once (default) or exactly-once: results, dead letters and
    /// offsets committed together in Kafka transactions (transactional.id
    /// [`transactional_id`]`(group, instance_id)`: keep instance ids stable),
    /// the data read `read_committed`; transactions follow [`Self::commit`].
    pub processing: Processing,
    /// How often the instance record is refreshed.
    pub heartbeat: Duration,
    /// How long a stop may take (default 30 s), from the stop signal: the
    /// drain of the records in flight, then the last writes (given at least
    /// a second when the drain used it all). A pipeline that cannot finish by then
    /// (the broker is away) stops anyway with
    /// [`KafkaStageError::DrainTimeout`]; its uncommitted records are
    /// consumed again.
    pub shutdown_timeout: Duration,
    /// Create missing topics at start ([`ensure_topics`]) with this many
    /// partitions for data and results; `None`: leave topics to the cluster.
    pub create_topics: Option<i32>,
    /// librdkafka properties of every Kafka client of the server: the data
    /// consumer, the producer (results, dead letters, instance records; the
    /// transactional one too), the model and instances readers, the admin
    /// client that creates topics and the Kafka model store. For what a
    /// secured cluster needs (`security.protocol`, `sasl.*`, `ssl.*`) and
    /// other connection-wide settings. Each client sets them first and its
    /// own settings after: the server's internal clients keep the settings
    /// they need to work (their group, no commits, ...); the data consumer and
    /// the producer get them after the server's defaults and before
    /// [`consumer_properties`](Self::consumer_properties) /
    /// [`producer_properties`](Self::producer_properties), which override
    /// them. `bootstrap.servers`, `group.id` and `transactional.id` are
    /// refused here (they are [`brokers`](Self::brokers),
    /// [`group_id`](Self::group_id) and derived per client).
    pub kafka_properties: Vec<(String, String)>,
    /// Extra librdkafka properties of the data consumer.
    pub consumer_properties: Vec<(String, String)>,
    /// Extra librdkafka properties of the producer.
    pub producer_properties: Vec<(String, String)>,
    /// Where the current models, their statistics and history are kept
    /// across restarts (see [`crate::store`]); in memory by default.
    pub store: StoreConfig,
    /// How often a persistent store gets the statistics while records flow
    /// (models are written at each swap, everything at a clean stop). The
    /// statistics it gets are the serving stage's published snapshots, so
    /// after a crash at most this much of them is lost, or the stage's
    /// `publish_interval` (100 ms) if that is longer.
    pub store_interval: Duration,
}

impl ServerConfig {
    /// Defaults for a cluster at `brokers`: group [`DEFAULT_GROUP`], the
    /// tutorial's topics, HTTP on [`http::DEFAULT_ADDR`].
    pub fn new(brokers: impl Into<String>) -> Self {
        ServerConfig {
            brokers: brokers.into(),
            group_id: DEFAULT_GROUP.into(),
            topics: Topics::default(),
            instances_topic: DEFAULT_INSTANCES_TOPIC.into(),
            instance_id: default_instance_id(),
            http: Some(http::DEFAULT_ADDR),
            models_dir: None,
            serving: ServingConfig::default(),
            commit: CommitterSettings::default().max_batch(DEFAULT_COMMIT_BATCH),
            max_in_flight: 10_000,
            processing: Processing::AtLeastOnce,
            heartbeat: Duration::from_secs(2),
            shutdown_timeout: Duration::from_secs(30),
            create_topics: Some(DEFAULT_PARTITIONS),
            kafka_properties: Vec::new(),
            consumer_properties: Vec::new(),
            producer_properties: Vec::new(),
            store: StoreConfig::default(),
            store_interval: DEFAULT_PERSIST_INTERVAL,
        }
    }

    /// The low-latency settings, for a rate one partition takes (tens of
    /// thousands of records a second per broker), at the cost of a busier
    /// broker per record (`flowstage serve --low-latency`):
    /// - missing data and results topics are created with one partition
    ///   (when [`create_topics`](Self::create_topics) is on): a produce
    ///   request then carries one batch, and a fetch waits for one
    ///   partition's appends;
    /// - the data consumer's fetches are answered at the first record
    ///   (`fetch.min.bytes` 1; idle fetches wait up to 10 ms), not at 64 KiB
    ///   or 2 ms;
    /// - results are batched for 0.2 ms (`linger.ms`), not 5 ms (0 would
    ///   make a produce request per record).
    ///
    /// The properties go in front of
    /// [`consumer_properties`](Self::consumer_properties) and
    /// [`producer_properties`](Self::producer_properties), so the ones
    /// already there, and those added later, override them. Keep the topics
    /// at one partition: with many, `fetch.min.bytes` 1 costs the broker a
    /// core in fetches. The pipeline benchmark (`scripts/bench-pipeline.sh`)
    /// measures these settings: p50 2.1–2.3 ms and p99 4.1–5.9 ms at 50,000
    /// records/s on a 2-core machine shared with the broker, against p50
    /// 11–12 ms and p99 17–19 ms with the defaults (sessions 24 and 25).
    ///
    /// ```
    /// use flowstage_stages::kafka::effective_property;
    /// use flowstage_stages::wine::server::ServerConfig;
    ///
    /// let mut config = ServerConfig::new("127.0.0.1:9092").low_latency();
    /// assert_eq!(config.create_topics, Some(1));
    /// let linger = |c: &ServerConfig| effective_property(&c.producer_properties, "linger.ms").map(str::to_string);
    /// assert_eq!(linger(&config).as_deref(), Some("0.2"));
    /// config.producer_properties.push(("linger.ms".into(), "1".into()));
    /// assert_eq!(linger(&config).as_deref(), Some("1"));
    /// ```
    pub fn low_latency(mut self) -> Self {
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        self.create_topics = self.create_topics.map(|_| 1);
        self.consumer_properties.splice(
            0..0,
            [kv("fetch.min.bytes", "1"), kv("fetch.wait.max.ms", "10")],
        );
        self.producer_properties
            .splice(0..0, [kv("linger.ms", LOW_LATENCY_LINGER_MS)]);
        self
    }

    /// The cluster with the client properties every client of the server
    /// gets ([`kafka_properties`](Self::kafka_properties)).
    pub fn kafka(&self) -> KafkaConnection {
        KafkaConnection::new(&self.brokers).with_properties(self.kafka_properties.iter().cloned())
    }

    /// Checks the settings ([`Server::start`] does): group and instance id
    /// not empty, topic names Kafka allows, the counts from 1 to [`MAX_COUNT_SETTING`], timeouts above
    /// zero, the brokers well formed, the models directory readable, a local
    /// store's file not a directory and in one that exists, every client
    /// property known to librdkafka with a valid value, and none that would
    /// take over what the server sets per client.
    pub fn check(&self) -> Result<(), WineError> {
        self.checked().map(drop)
    }

    /// [`check`](Self::check), handing over the models directory it opened.
    fn checked(&self) -> Result<Option<ModelsDir>, WineError> {
        let bad = |name: &'static str, reason: String| Err(WineError::Config { name, reason });
        for (name, value) in [
            ("group", &self.group_id),
            ("instance_id", &self.instance_id),
        ] {
            if value.trim().is_empty() {
                return bad(name, "must not be empty".into());
            }
        }
        for (name, topic) in [
            ("data_topic", &self.topics.data),
            ("models_topic", &self.topics.models),
            ("results_topic", &self.topics.results),
            ("dlq_topic", &self.topics.dlq),
            ("instances_topic", &self.instances_topic),
        ] {
            if let Err(reason) = crate::kafka::check_topic_name(topic) {
                return bad(name, reason);
            }
        }
        for (name, n) in [
            ("max_in_flight", self.max_in_flight),
            ("batch_size", self.serving.batch_size),
            ("data_buffer", self.serving.data_buffer),
        ] {
            if !(1..=MAX_COUNT_SETTING).contains(&n) {
                return bad(
                    name,
                    format!("must be from 1 to {MAX_COUNT_SETTING}, not {n}"),
                );
            }
        }
        for (name, d) in [
            ("shutdown_timeout", self.shutdown_timeout),
            ("store_interval", self.store_interval),
        ] {
            if d.is_zero() {
                return bad(name, "must be more than 0".into());
            }
        }
        if let Err(reason) = crate::kafka::check_bootstrap(&self.brokers) {
            return bad("brokers", reason);
        }
        // librdkafka checks each name and value as it is set, without a client.
        for (name, properties) in [
            ("kafka_properties", &self.kafka_properties),
            ("consumer_properties", &self.consumer_properties),
            ("producer_properties", &self.producer_properties),
        ] {
            let mut c = rdkafka::ClientConfig::new();
            for (k, v) in properties {
                c.set(k, v);
            }
            if let Err(e) = c.create_native_config() {
                return bad(name, e.to_string());
            }
        }
        let models_dir = match &self.models_dir {
            Some(dir) => match ModelsDir::new(dir) {
                Ok(d) => Some(d),
                Err(e) => return bad("models_dir", super::with_causes(&e)),
            },
            None => None,
        };
        if let StoreConfig::Local { path } = &self.store {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if path.is_dir() {
                return bad("store_path", format!("{} is a directory", path.display()));
            }
            if !parent.is_dir() {
                return bad(
                    "store_path",
                    format!("the directory {} does not exist", parent.display()),
                );
            }
        }
        self.check_kafka_properties()?;
        Ok(models_dir)
    }

    /// Refuses client properties that would take over what the server sets
    /// per client.
    fn check_kafka_properties(&self) -> Result<(), WineError> {
        for (key, _) in &self.kafka_properties {
            let instead = match key.trim() {
                "bootstrap.servers" => "the brokers setting",
                "group.id" => "the group setting (each internal reader has a group of its own)",
                "transactional.id" => "the instance id (it is derived from group and instance id)",
                _ => continue,
            };
            return Err(WineError::Config {
                name: "kafka_properties",
                reason: format!("{key} cannot be a property of every client; use {instead}"),
            });
        }
        Ok(())
    }

    /// Puts [`kafka_properties`](Self::kafka_properties) in front of the data
    /// consumer's and the producer's own properties, which thus override them.
    fn with_client_properties_first(mut self) -> Self {
        let merged = |own: &[(String, String)]| {
            self.kafka_properties
                .iter()
                .chain(own)
                .cloned()
                .collect::<Vec<_>>()
        };
        let consumer = merged(&self.consumer_properties);
        let producer = merged(&self.producer_properties);
        self.consumer_properties = consumer;
        self.producer_properties = producer;
        self
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::kafka::connection::Redacted;
        f.debug_struct("ServerConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("instances_topic", &self.instances_topic)
            .field("instance_id", &self.instance_id)
            .field("http", &self.http)
            .field("models_dir", &self.models_dir)
            .field("serving", &self.serving)
            .field("commit", &self.commit)
            .field("max_in_flight", &self.max_in_flight)
            .field("processing", &self.processing)
            .field("heartbeat", &self.heartbeat)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("create_topics", &self.create_topics)
            .field("kafka_properties", &Redacted(&self.kafka_properties))
            .field("consumer_properties", &Redacted(&self.consumer_properties))
            .field("producer_properties", &Redacted(&self.producer_properties))
            .field("store", &self.store)
            .finish()
    }
}

/// The producers' batching of [`ServerConfig::low_latency`] and
/// [`ProviderConfig::low_latency`](super::provider::ProviderConfig::low_latency), ms.
pub(crate) const LOW_LATENCY_LINGER_MS: &str = "0.2";

/// The producers' batching otherwise, the server's and the provider's
/// (`linger.ms`, ms): librdkafka's default, and Kafka's Java producer's since
/// 4.0. Why not less: [`producer_settings`] here, and the provider's.
pub(crate) const DEFAULT_LINGER_MS: &str = "5";

/// The server's commit batch: offsets are committed after this many
/// processed records (or at least every second while records flow). A commit
/// is a request the broker writes to its offsets topic, so with a batch of
/// 1,000 (the [`CommitterSettings`] default) a server scoring 250,000
/// records/s sent 250 a second: in 6 alternated runs of the pipeline
/// benchmark on Apache Kafka (2-core machine, broker on the same cores) the
/// server scored 222–269 k records/s (median 242 k) with 10,000 against
/// 167–243 k (median 208 k) with 1,000, faster in each pair. After a crash
/// the records processed since the last commit are scored again
/// (at-least-once): at most this many, or a second's worth, and those in
/// flight. With exactly-once processing each commit is a transaction, which
/// costs a commit round (~80 ms measured) while no other is open.
pub const DEFAULT_COMMIT_BATCH: usize = 10_000;

/// The producer settings of results, dead letters and instance records:
/// `linger.ms` 5 (librdkafka's default, and Kafka's Java producer's since
/// 4.0), then the configured properties. Batches of 1 ms cost the broker a
/// produce request per partition every millisecond under load: on the
/// 2-core benchmark machine the server scored 157–219 k records/s on Apache
/// Kafka with 1 ms, 210–290 k with 5 ms (5 runs each, alternated), and its
/// p99 at 50,000 records/s was no worse; at 5,000 records/s p50 grows by
/// ~2 ms. For the lowest latency see the README's low-latency recipe
/// (`linger.ms` 0.2 with one partition).
fn producer_settings(config: &ServerConfig) -> ProducerSettings {
    let mut ps = ProducerSettings::new(&config.brokers)
        .max_in_flight(config.max_in_flight)
        .set("linger.ms", DEFAULT_LINGER_MS);
    for (k, v) in &config.producer_properties {
        ps = ps.set(k, v);
    }
    ps
}

/// The time the last writes of a stop get (the final commit, the instance's
/// last record) when the drain used up the shutdown timeout.
const LAST_WRITES_GRACE: Duration = Duration::from_secs(1);

/// The data consumer's `session.timeout.ms` on librdkafka's mock cluster,
/// where a rebalance takes one second less than it (see [`Server::run`]).
const MOCK_SESSION_TIMEOUT_MS: &str = "6000";

/// The data consumer's `heartbeat.interval.ms` on the mock cluster: six
/// heartbeats a session, so a busy machine that delays a few does not cost
/// the member its session.
const MOCK_HEARTBEAT_INTERVAL_MS: &str = "1000";

/// Whether `producer`'s cluster is librdkafka's mock cluster (the embedded
/// broker, `flowstage broker`): its cluster id starts with `mockCluster`.
/// `false` when the id cannot be read within 5 s.
async fn is_mock_cluster(producer: &KafkaProducer) -> bool {
    use rdkafka::producer::Producer as _;
    let client = producer.client().clone();
    tokio::task::spawn_blocking(move || {
        crate::kafka::is_mock_cluster(client.client(), Duration::from_secs(5))
    })
    .await
    .unwrap_or(false)
}

/// `host-pid` (the host name from `HOSTNAME`, else the kernel's, else
/// `localhost`).
pub fn default_instance_id() -> String {
    let host = host_name().unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// This machine's name: `HOSTNAME`, else (Linux) the kernel's.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The HTTP address other instances are told (`GET /state/instances`): the
/// bound one, with the host name instead of an unspecified IP (0.0.0.0 or ::,
/// which no other machine can reach).
fn advertised_http(bound: SocketAddr) -> String {
    match host_name() {
        Some(host) if bound.ip().is_unspecified() => format!("{host}:{}", bound.port()),
        _ => bound.to_string(),
    }
}

/// What a server did, reported when it stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSummary {
    /// Records consumed from the data topic.
    pub records: u64,
    /// Results produced.
    pub results: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Model messages read (undecodable ones included).
    pub model_messages: u64,
    /// Offset commits (at-least-once).
    pub commits: CommitStats,
    /// Transactions (exactly-once; all zero at-least-once).
    pub transactions: TransactionStats,
}

impl fmt::Display for ServerSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records consumed, {} results produced, {} dead letters, {} model messages, {} offsets committed in {} commits",
            self.records,
            self.results,
            self.dead_letters,
            self.model_messages,
            self.commits.marked,
            self.commits.commits
        )?;
        if self.transactions != TransactionStats::default() {
            write!(
                f,
                "; exactly-once: {} transactions committed ({} aborted in place), {} messages in transactions",
                self.transactions.committed, self.transactions.aborted, self.transactions.messages
            )?;
            if self.transactions.producers_replaced > 0 {
                write!(
                    f,
                    ", {} producers replaced after a fatal error",
                    self.transactions.producers_replaced
                )?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    results: AtomicU64,
    dead_letters: AtomicU64,
    model_messages: AtomicU64,
}

/// Logs (at debug, every 5 s) how far records got: consumed, answered,
/// acknowledged by the broker (marked), committed. When a pipeline stalls,
/// the last lines show at which step.
async fn log_progress(
    counters: Arc<Counters>,
    control: crate::kafka::ConsumerControl,
    committer: Option<crate::kafka::Committer>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        // The counts take the tracker's lock: not at all unless they are logged.
        if !tracing::enabled!(tracing::Level::DEBUG) {
            continue;
        }
        let tracker = control.counts();
        let commits = committer
            .as_ref()
            .map(crate::kafka::Committer::stats)
            .unwrap_or_default();
        tracing::debug!(
            consumed = counters.records.load(Ordering::Relaxed),
            results = counters.results.load(Ordering::Relaxed),
            dead_letters = counters.dead_letters.load(Ordering::Relaxed),
            emitted = tracker.emitted,
            marked = tracker.marked,
            in_flight = control.in_flight(),
            commits = commits.commits,
            retriable_commit_failures = commits.retriable_failures,
            assigned = control.assignment().len(),
            "progress"
        );
    }
}

/// A wine record with its Kafka key, as the serving stage sees it.
#[derive(Debug)]
struct KeyedRecord {
    record: WineRecord,
    key: Vec<u8>,
}

impl ServingRecord for KeyedRecord {
    fn data_type(&self) -> &str {
        &self.record.data_type
    }

    fn to_record(&self) -> Record {
        Record::from(&self.record)
    }

    fn record_ts(&self) -> i64 {
        self.record.ts
    }

    fn record_ts_micros(&self) -> i32 {
        self.record.ts_micros
    }

    fn record_key(&self) -> Vec<u8> {
        self.key.clone()
    }
}

/// The dead-letter copy of `m`: its key and payload, the reason and origin in headers.
fn dead_letter(
    topic: &str,
    m: CommittableMessage,
    reason: String,
) -> ProducerMessage<CommittableOffset> {
    let source = format!(
        "{}/{}@{}",
        m.record.topic, m.record.partition, m.record.offset
    );
    tracing::debug!(source, reason, "dead letter");
    let mut r = ProducerRecord::new(topic, m.record.payload.unwrap_or_default())
        .header(DLQ_REASON_HEADER, reason)
        .header(DLQ_SOURCE_HEADER, source);
    if let Some(k) = m.record.key {
        r = r.key(k);
    }
    ProducerMessage::single(r, m.offset)
}

/// Decodes a data-topic payload; the error is the dead-letter reason.
pub fn decode_record(payload: Option<&[u8]>) -> Result<WineRecord, String> {
    let bytes = payload.ok_or_else(|| "no payload".to_string())?;
    let record =
        WineRecord::decode(bytes).map_err(|e| format!("not a WineRecord protobuf: {e}"))?;
    if record.data_type.is_empty() {
        return Err("WineRecord without dataType".into());
    }
    Ok(record)
}

/// A consumer that reads every partition of `topic` from the beginning, in
/// no group (it never commits), and each partition's end offset when it was
/// assigned. Waits until the topic exists, calling `on_missing` once if it
/// does not at first.
async fn read_from_beginning(
    kafka: &KafkaConnection,
    group: String,
    topic: &str,
    mut on_missing: impl FnMut(),
) -> Result<(Arc<StreamConsumer<ClientLog>>, Vec<(i32, i64)>), KafkaStageError> {
    let consumer: StreamConsumer<ClientLog> = kafka
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.wait.max.ms", "100")
        .set("socket.nagle.disable", "true")
        .create_with_context(ClientLog)?;
    let consumer = Arc::new(consumer);
    crate::kafka::keeper::watch(&consumer, &kafka.brokers);
    let mut warned = false;
    loop {
        let c = consumer.clone();
        let t = topic.to_string();
        // Partitions and their end offsets (blocking client calls).
        let ends = tokio::task::spawn_blocking(move || partition_ends(&*c, &t))
            .await
            .map_err(|e| KafkaStageError::Task(e.to_string()))?;
        match ends {
            Ok(ends) if !ends.is_empty() => {
                let mut tpl = TopicPartitionList::new();
                for &(p, _) in &ends {
                    tpl.add_partition_offset(topic, p, Offset::Beginning)?;
                }
                consumer.assign(&tpl)?;
                return Ok((consumer, ends));
            }
            other => {
                if !warned {
                    tracing::warn!(topic, result = ?other.err(), "waiting for the topic to exist");
                    on_missing();
                    warned = true;
                }
                // Retry back-off while the topic does not exist yet.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The models restored from the model store, offered before the model topic.
#[derive(Debug, Default)]
struct RestoredModels {
    /// The stored current models, offered first.
    descriptors: Vec<ModelDescriptor>,
    /// Per dataType, where its stored model was read: model messages of the
    /// same partition up to there are not newer, and skipped (not installed
    /// again, which would reset the restored statistics).
    positions: HashMap<String, ModelPosition>,
    /// Every descriptor offered, for the store writer.
    catalog: Arc<ModelCatalog>,
}

/// The model topic as a stream of [`ModelMessage`]s (undecodable messages
/// and tombstones are logged and skipped), after the models restored from the
/// store. `caught_up` receives the number of descriptors yielded up to the
/// topic's end as of start-up (the restored ones at once if the topic does not
/// exist yet). `state` tells which stored models installed.
#[allow(clippy::too_many_arguments)]
fn model_source(
    kafka: KafkaConnection,
    group: String,
    topic: String,
    counters: Arc<Counters>,
    caught_up: watch::Sender<Option<u64>>,
    feed: Arc<ModelFeed>,
    restored: RestoredModels,
    state: ServingState,
) -> Source<impl futures::Stream<Item = Item<ModelMessage>> + Send + 'static> {
    let stream = flowstage::async_stream::stream! {
        let RestoredModels { descriptors: stored, mut positions, catalog } = restored;
        let mut descriptors = stored.len() as u64;
        let n_stored = descriptors;
        for d in stored {
            yield Ok(ModelMessage::Descriptor(d));
        }
        if !positions.is_empty() {
            // A stored model that does not load (its file is gone, a format
            // this build lacks) must not hide the model topic's messages it
            // covers: once the stored loads are done, only the dataTypes they
            // installed skip them.
            let settled = state
                .wait_for(|s| {
                    !s.running
                        || (s.totals.models_offered >= n_stored
                            && s.data_types.values().all(|d| d.loading == 0))
                })
                .await;
            positions.retain(|dt, _| {
                let installed = settled
                    .data_types
                    .get(dt)
                    .is_some_and(|d| d.current.is_some());
                if !installed {
                    tracing::warn!(
                        data_type = dt.as_str(),
                        "the stored model did not load: the model topic's models of this dataType are read again"
                    );
                }
                installed
            });
        }
        let (consumer, ends) = match read_from_beginning(&kafka, group, &topic, || {
            caught_up.send_replace(Some(descriptors));
        })
        .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, topic, "cannot read the model topic; serving without new models");
                caught_up.send_replace(Some(descriptors));
                feed.failed();
                return;
            }
        };
        // Read up to the start-up ends (past a transaction marker too), while
        // the records are read below.
        feed.restored(descriptors);
        let ends: BTreeMap<i32, i64> = ends.into_iter().collect();
        let reader = feed.clone();
        let mut catching_up = Some(Box::pin(async move { read_to_ends(&reader, ends).await }));
        loop {
            let received = match catching_up.as_mut() {
                Some(catch_up) => tokio::select! {
                    n = catch_up => Err(n),
                    m = crate::kafka::recv(&consumer) => Ok(m),
                },
                None => Ok(crate::kafka::recv(&consumer).await),
            };
            let received = match received {
                Ok(r) => r,
                Err(n) => {
                    catching_up = None;
                    let n = n.unwrap_or(descriptors);
                    tracing::info!(descriptors = n, "model topic read up to its start-up end");
                    caught_up.send_replace(Some(n));
                    continue;
                }
            };
            match received {
                Ok(m) => {
                    counters.model_messages.fetch_add(1, Ordering::Relaxed);
                    let decoded = match m.payload() {
                        None => {
                            tracing::debug!(offset = m.offset(), "model topic: tombstone skipped");
                            None
                        }
                        Some(payload) => match ModelDescriptor::decode(payload) {
                            Ok(d) if d.data_type.trim().is_empty() => {
                                tracing::warn!(
                                    partition = m.partition(),
                                    offset = m.offset(),
                                    name = d.name,
                                    "model topic: a descriptor without dataType, skipped"
                                );
                                None
                            }
                            Ok(d) => Some(d),
                            Err(e) => {
                                tracing::warn!(
                                    partition = m.partition(),
                                    offset = m.offset(),
                                    error = %e,
                                    "model topic: not a ModelDescriptor, skipped"
                                );
                                None
                            }
                        },
                    };
                    let decoded = decoded.filter(|d| {
                        let stale = positions
                            .get(&d.data_type)
                            .is_some_and(|p| p.covers(&topic, m.partition(), m.offset()));
                        if stale {
                            tracing::debug!(
                                name = d.name, data_type = d.data_type, offset = m.offset(),
                                "model message not newer than the restored model; skipped"
                            );
                        }
                        !stale
                    });
                    if decoded.is_some() {
                        descriptors += 1;
                    }
                    feed.consumed(m.partition(), m.offset(), descriptors);
                    if let Some(d) = decoded {
                        tracing::info!(name = d.name, data_type = d.data_type, "model received");
                        catalog.offered(
                            &d,
                            Some(ModelPosition {
                                topic: topic.clone(),
                                partition: m.partition(),
                                offset: m.offset(),
                            }),
                        );
                        yield Ok(ModelMessage::Descriptor(d));
                    }
                }
                Err(e) => crate::kafka::client_log::at_level!(
                    crate::kafka::client_log::error_level(&e),
                    error = %e,
                    "model consumer error (continuing)"
                ),
            }
        }
    };
    Source::from_parts(stream, NotUsed)
}

/// How far the model consumer has read, for [`sync_models`].
struct ModelFeed {
    kafka: KafkaConnection,
    topic: String,
    /// The group id of its probe (which never joins the group or commits:
    /// librdkafka wants one to assign partitions).
    group: String,
    /// Per partition the next offset to read, and the descriptors read so far;
    /// `None` once the model topic cannot be read at all.
    position: watch::Sender<Option<(BTreeMap<i32, i64>, u64)>>,
    /// The client that asks for the end offsets, made on first use and kept
    /// (a sync is one round trip, not a new connection).
    client: Mutex<Option<Arc<rdkafka::consumer::BaseConsumer<ClientLog>>>>,
}

impl std::fmt::Debug for ModelFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelFeed")
            .field("kafka", &self.kafka)
            .field("topic", &self.topic)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl ModelFeed {
    fn new(kafka: KafkaConnection, topic: &str, group: String) -> Self {
        ModelFeed {
            kafka,
            topic: topic.to_string(),
            group,
            position: watch::Sender::new(Some((BTreeMap::new(), 0))),
            client: Mutex::new(None),
        }
    }

    fn consumed(&self, partition: i32, offset: i64, descriptors: u64) {
        self.position.send_modify(|p| {
            if let Some((parts, n)) = p {
                parts.insert(partition, offset + 1);
                *n = descriptors;
            }
        });
    }

    /// Counts the descriptors restored from the store, before the topic's.
    fn restored(&self, descriptors: u64) {
        self.position.send_modify(|p| {
            if let Some((_, n)) = p {
                *n = descriptors;
            }
        });
    }

    fn failed(&self) {
        self.position.send_replace(None);
    }
}

/// Every partition of `topic` with its end offset (blocking client calls);
/// none if the topic does not exist.
fn partition_ends<C: ConsumerContext>(
    c: &impl Consumer<C>,
    topic: &str,
) -> KafkaResult<Vec<(i32, i64)>> {
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|mt| mt.name() == topic && mt.error().is_none())
        .map(|mt| mt.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    partitions
        .into_iter()
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, high)| (p, high))
        })
        .collect()
}

/// The client that asks the model topic's end offsets and probes it, made on
/// first use and kept.
fn feed_client(
    feed: &ModelFeed,
) -> Result<Arc<rdkafka::consumer::BaseConsumer<ClientLog>>, KafkaStageError> {
    let mut slot = feed.client.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = slot.as_ref() {
        return Ok(c.clone());
    }
    let c: rdkafka::consumer::BaseConsumer<ClientLog> = feed
        .kafka
        .client_config()
        .set("group.id", &feed.group)
        .set("socket.nagle.disable", "true")
        .set("enable.partition.eof", "true")
        // A probe below the log's start (compacted or deleted records) starts
        // at its first record, not at its end.
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create_with_context(ClientLog)
        .map_err(KafkaStageError::Client)?;
    let c = Arc::new(c);
    *slot = Some(c.clone());
    Ok(c)
}

/// The end offset of every partition of the model topic now.
async fn end_offsets(feed: &ModelFeed) -> Result<Vec<(i32, i64)>, KafkaStageError> {
    let client = feed_client(feed)?;
    let t = feed.topic.clone();
    tokio::task::spawn_blocking(move || partition_ends(&*client, &t))
        .await
        .map_err(|e| KafkaStageError::Task(e.to_string()))?
        .map_err(KafkaStageError::Client)
}

/// How long a probe of the model topic may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The offset of the first record a reader of `partition` of the model topic
/// would be given from `from` on, if it is below `end`; `None` if only
/// transaction markers (and aborted or uncommitted records, which a reader is
/// not given) sit in between. The probe starts after `end` was read, so the
/// end of the partition it reaches is at or past `end`.
async fn first_record_below(
    feed: &ModelFeed,
    partition: i32,
    from: i64,
    end: i64,
) -> Result<Option<i64>, KafkaStageError> {
    let client = feed_client(feed)?;
    let topic = feed.topic.clone();
    tokio::task::spawn_blocking(move || {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(from))?;
        client.assign(&tpl)?;
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ));
            }
            match client.poll(left) {
                Some(Ok(m)) if m.partition() == partition => {
                    break Ok((m.offset() < end).then_some(m.offset()))
                }
                Some(Err(KafkaError::PartitionEOF(p))) if p == partition => break Ok(None),
                Some(Ok(_) | Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => crate::kafka::client_log::at_level!(
                    crate::kafka::client_log::error_level(&e),
                    error = %e,
                    "model topic probe error (continuing)"
                ),
            }
        };
        let _ = client.unassign();
        found
    })
    .await
    .map_err(|e| KafkaStageError::Task(e.to_string()))?
    .map_err(KafkaStageError::Client)
}

/// Before a record of a dataType without a model is answered "no model":
/// reads the model topic up to its end as of now and waits until every model
/// read by then was loaded, so a model published before the record (on the
/// other topic, read by another consumer) is not missed.
async fn sync_models(feed: &ModelFeed, state: &ServingState) {
    let ends: BTreeMap<i32, i64> = match end_offsets(feed).await {
        Ok(e) => e.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the model topic's end offsets");
            return;
        }
    };
    if let Some(n) = read_to_ends(feed, ends).await {
        state
            .wait_for(|s| {
                (s.totals.models_offered >= n && s.data_types.values().all(|d| d.loading == 0))
                    || (!s.running && s.published_ms > 0)
            })
            .await;
    }
}

/// Waits until the model reader has read every partition up to its end in
/// `ends`, and returns how many descriptors it had read by then (`None` if it
/// cannot read the topic).
///
/// A partition the reader has not read up to its end is probed: if what is
/// left below the end is only transaction markers (which no reader is given,
/// so the reader's position never gets there) or records not committed yet,
/// it counts as read.
async fn read_to_ends(feed: &ModelFeed, mut ends: BTreeMap<i32, i64>) -> Option<u64> {
    ends.retain(|_, end| *end > 0);
    let mut rx = feed.position.subscribe();
    loop {
        // Partitions not read up to their end, with the next offset to read.
        let (behind, n) = match &*rx.borrow_and_update() {
            None => return None,
            Some((parts, n)) => {
                let behind: Vec<(i32, i64, i64)> = ends
                    .iter()
                    .map(|(&p, &end)| (p, end, parts.get(&p).copied().unwrap_or(0)))
                    .filter(|&(_, end, next)| next < end)
                    .collect();
                (behind, *n)
            }
        };
        if behind.is_empty() {
            return Some(n);
        }
        // Per partition, a record the reader is still to deliver.
        let mut pending: BTreeMap<i32, i64> = BTreeMap::new();
        for (p, end, next) in behind {
            match first_record_below(feed, p, next, end).await {
                Ok(Some(offset)) => {
                    pending.insert(p, offset);
                }
                Ok(None) => {
                    ends.remove(&p);
                }
                Err(e) => {
                    tracing::warn!(
                        partition = p,
                        error = %e,
                        "cannot probe the model topic; not waiting for this partition"
                    );
                    ends.remove(&p);
                }
            }
        }
        if !pending.is_empty() {
            let passed = rx
                .wait_for(|pos| match pos {
                    None => true,
                    Some((parts, _)) => pending
                        .iter()
                        .all(|(p, o)| parts.get(p).is_some_and(|next| next > o)),
                })
                .await;
            if passed.is_err() {
                return None;
            }
        }
    }
}

/// Resolves once the model topic was read up to its start-up end and every
/// descriptor read by then was loaded (installed or failed), so a new or
/// restarted server scores its first record with the latest models.
async fn models_ready(mut caught_up: watch::Receiver<Option<u64>>, state: ServingState) {
    let n = match caught_up.wait_for(Option::is_some).await {
        Ok(v) => v.unwrap_or(0),
        Err(_) => return,
    };
    if n > 0 {
        state
            .wait_for(|s| {
                (s.totals.models_offered >= n && s.data_types.values().all(|d| d.loading == 0))
                    || (!s.running && s.published_ms > 0)
            })
            .await;
    }
    tracing::info!(descriptors = n, "models ready; consuming records");
}

/// Reads the instances topic into `directory` until the task is aborted.
async fn read_instances(
    kafka: KafkaConnection,
    group: String,
    topic: String,
    dir: InstanceDirectory,
) {
    let consumer = match read_from_beginning(&kafka, group, &topic, || {}).await {
        Ok((c, _)) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the instances topic");
            return;
        }
    };
    loop {
        match crate::kafka::recv(&consumer).await {
            Ok(m) => dir.observe(m.key(), m.payload()),
            Err(e) => tracing::debug!(error = %e, "instances consumer error (continuing)"),
        }
    }
}

/// A running model server. [`start`](Server::start) connects and binds;
/// [`run`](Server::run) serves until the shutdown signal.
pub struct Server {
    config: ServerConfig,
    state: ServingState,
    directory: InstanceDirectory,
    http: Option<HttpServer>,
    producer: KafkaProducer,
    counters: Arc<Counters>,
    started_ms: u64,
    /// The models directory, opened by the check.
    models_dir: Option<ModelsDir>,
    /// The models read from the store, and its writer.
    restored: RestoredModels,
    store_writer: Option<StoreWriter>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("instance", &self.config.instance_id)
            .field("http", &self.http_addr())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks the settings, creates the producer, reads the model store (its
    /// statistics are served at once) and binds the HTTP server.
    pub async fn start(config: ServerConfig) -> Result<Server, WineError> {
        let models_dir = config.checked()?;
        let config = config.with_client_properties_first();
        if let Some(partitions) = config.create_topics {
            ensure_topics(
                config.kafka(),
                &config.topics.layout(&config.instances_topic, partitions),
            )
            .await?;
        }
        if config.processing == Processing::ExactlyOnce {
            // Before anything runs: the mock cluster cannot serve it.
            crate::kafka::check_transactions_supported(config.kafka()).await?;
        }
        let producer = KafkaProducer::new(&producer_settings(&config))?;
        let state = ServingState::new();
        // The model store: its models are offered first, with their
        // statistics and history seeded; a writer keeps it up to date. Read
        // before anything consumes, so a store that cannot be read stops the
        // start.
        let (restored, store_writer) = restore_models(&config, &state).await?;
        let directory = InstanceDirectory::new(
            config.group_id.clone(),
            config.instance_id.clone(),
            config.heartbeat * 3,
        );
        let started_ms = now_ms();
        directory.set_own_start(started_ms);
        let http = match config.http {
            Some(addr) => {
                let extra = Router::new()
                    .route("/state/instances", get(instances))
                    .with_state(directory.clone());
                let app = http::router(state.clone()).merge(extra);
                Some(http::serve_router(app, addr).await?)
            }
            None => None,
        };
        Ok(Server {
            config,
            state,
            directory,
            http,
            producer,
            counters: Arc::default(),
            started_ms,
            models_dir,
            restored,
            store_writer,
        })
    }

    /// The serving state (statistics, current models), updated while running.
    pub fn state(&self) -> &ServingState {
        &self.state
    }

    /// The address the HTTP state is served on (the real port when bound to
    /// port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::local_addr)
    }

    /// The instances of the group, as this server sees them.
    pub fn instances(&self) -> &InstanceDirectory {
        &self.directory
    }

    /// Serves until `shutdown` resolves (then stops consuming, finishes the
    /// records in flight, commits) or the pipeline fails.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<ServerSummary, WineError> {
        let Server {
            config,
            state,
            directory,
            http,
            producer,
            counters,
            started_ms,
            models_dir,
            restored,
            store_writer,
        } = self;

        let mut registry = ModelRegistry::with_defaults();
        if let Some(dir) = models_dir {
            registry = registry.with_models_dir(dir);
        }
        let loader = RegistryLoader::new(registry).with_mapping(FieldMapping::wine());

        let mut cs = ConsumerSettings::new(
            &config.brokers,
            &config.group_id,
            [config.topics.data.clone()],
        )
        .set(
            "client.id",
            format!("flowstage-serve-{}", config.instance_id),
        )
        // Low latency at a steady broker load: on Apache Kafka a fetch
        // returns when 64 KiB are there or after 2 ms. With `fetch.min.bytes`
        // 1 (librdkafka's default) Kafka answers each fetch as soon as one
        // record arrives, so at a steady rate the consumer sends a fetch per
        // round trip, thousands a second, and on a small machine the broker
        // spends its CPU on them: at 50,000 records/s on 2 cores with 6
        // partitions the benchmark measured p50 46–130 ms, p99 210–360 ms
        // that way, the broker at a full core; batched, p50 8–14 ms, p99
        // 27–75 ms. (With one partition the broker affords it: the README's
        // low-latency recipe sets it back to 1.) The
        // mock cluster (the embedded broker) does not answer a waiting fetch
        // early, and with a `fetch.min.bytes` above what arrives it stalls
        // (at 5,000 records/s: seconds), so there it stays 1, with 2 ms waits.
        .set("fetch.wait.max.ms", "2")
        // The server reads a record's key and payload, never its headers.
        .read_headers(false);
        if is_mock_cluster(&producer).await {
            // The mock completes a rebalance of a group that has members only
            // when its timer runs out, one second short of the members'
            // session timeout (librdkafka's default 45 s): with that, a
            // second server joining, or one leaving, stopped consumption in
            // the whole group for 44 s. With 6 s it is 5 s. (Apache Kafka
            // completes it once every member has rejoined.)
            cs = cs
                .set("session.timeout.ms", MOCK_SESSION_TIMEOUT_MS)
                .set("heartbeat.interval.ms", MOCK_HEARTBEAT_INTERVAL_MS);
        } else {
            cs = cs.set("fetch.min.bytes", "65536");
        }
        cs = cs
            // Bounded prefetch, so memory does not grow with the lag: librdkafka's
            // defaults keep up to 100,000 records per partition and 64 MiB queued.
            // 5,000 per partition is still a fraction of a second at full speed.
            .set("queued.min.messages", "5000")
            .set("queued.max.messages.kbytes", "8192")
            // With a bound that low, librdkafka's default back-off once a
            // partition's queue is full (`fetch.queue.backoff.ms` 1000) idles the
            // fetcher for up to a second after the queue drained: at full speed
            // the server then reads in bursts and idles most of the time (the
            // benchmark measured 0.05–0.3× of a plain consume→produce loop, and
            // at 50,000 records/s on Apache Kafka a p50 latency above 1 s once
            // the server had fallen behind). With 10 ms the fetcher looks again
            // soon enough: 5,000 records last longer than that at any rate one
            // partition is consumed at, and a full queue costs one cheap check
            // per partition every 10 ms.
            .set("fetch.queue.backoff.ms", "10");
        for (k, v) in &config.consumer_properties {
            cs = cs.set(k, v);
        }
        let exactly_once = config.processing == Processing::ExactlyOnce;
        if exactly_once {
            // Offsets are committed only inside transactions.
            cs = cs
                .set("isolation.level", "read_committed")
                .commit_on_revoke(false);
        }
        let producer_settings = producer_settings(&config);
        let (control, data) = committable_source(cs)?.pre_materialize();
        let committer = (!exactly_once).then(|| control.committer(config.commit.clone()));

        // Instance records: read the group's, publish ours.
        let reader = tokio::spawn(read_instances(
            config.kafka(),
            format!("{}.instances.{}", config.group_id, config.instance_id),
            config.instances_topic.clone(),
            directory.clone(),
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let info = InstanceInfo {
            id: config.instance_id.clone(),
            group: config.group_id.clone(),
            http: http.as_ref().map(|h| advertised_http(h.local_addr())),
            partitions: Vec::new(),
            models: BTreeMap::new(),
            started_ms,
            updated_ms: started_ms,
            records: 0,
            stopped: false,
        };
        let publisher = tokio::spawn(publish_instance(
            producer.clone(),
            config.instances_topic.clone(),
            config.heartbeat,
            info,
            control.assignment_changes(),
            state.clone(),
            counters.clone(),
            stop_rx,
        ));

        // Records that decode go to the serving stage, the others to the
        // dead-letter topic; both end in one committable producer sink.
        let dlq = config.topics.dlq.clone();
        let seen = counters.clone();
        let (caught_up_tx, caught_up_rx) = watch::channel(None);
        let ready = models_ready(caught_up_rx, state.clone());
        let feed = Arc::new(ModelFeed::new(
            config.kafka(),
            &config.topics.models,
            format!("{}.models.{}.probe", config.group_id, config.instance_id),
        ));
        let gate_feed = feed.clone();
        let gate_state = state.clone();
        // Records are taken once the start-up models are loaded; a record of a
        // dataType without a model first syncs with the model topic (at most
        // once a second per dataType, and not when a sync started after the
        // record was published).
        let mut branches = Source::from_parts(
            flowstage::async_stream::stream! {
                ready.await;
                // Looked up for every record: a fast hash, not std's SipHash.
                let mut served: HashSet<String, foldhash::fast::RandomState> =
                    HashSet::default();
                let mut synced: HashMap<String, Instant> = HashMap::new();
                // When the last sync started (epoch ms): a record published
                // before that is covered by it and needs no sync of its own
                // (a burst of unknown dataTypes costs one sync, not one each).
                let mut last_sync_ms = i64::MIN;
                let mut data = std::pin::pin!(data);
                while let Some(item) = futures::StreamExt::next(&mut data).await {
                    let m: CommittableMessage = match item {
                        Ok(m) => m,
                        Err(e) => {
                            yield Err(e);
                            continue;
                        }
                    };
                    seen.records.fetch_add(1, Ordering::Relaxed);
                    let record = match decode_record(m.record.payload.as_deref()) {
                        Ok(r) => r,
                        Err(reason) => {
                            yield Ok(Err(dead_letter(&dlq, m, reason)));
                            continue;
                        }
                    };
                    if !served.contains(record.data_type.as_str()) {
                        let dt = record.data_type.clone();
                        let due = synced
                            .get(&dt)
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                        let covered = m.record.timestamp.is_some_and(|ts| ts < last_sync_ms);
                        if gate_state.snapshot().current_model(&dt).is_none() && due && !covered {
                            last_sync_ms = i64::try_from(now_ms()).unwrap_or(i64::MAX);
                            sync_models(&gate_feed, &gate_state).await;
                            // Entries older than a second mean the same as
                            // none: drop them, so junk dataTypes cannot grow
                            // the map without bound.
                            if synced.len() >= 1024 {
                                synced.retain(|_, t| t.elapsed() < Duration::from_secs(1));
                            }
                            synced.insert(dt.clone(), Instant::now());
                        }
                        if gate_state.snapshot().current_model(&dt).is_some() {
                            served.insert(dt);
                        }
                    }
                    yield Ok(Ok((
                        KeyedRecord {
                            record,
                            key: m.record.key.unwrap_or_default(),
                        },
                        m.offset,
                    )));
                }
            },
            NotUsed,
        )
        // Consuming and decoding run on a thread of their own, handing
        // records over in batches of what is ready (at most 4,096 ahead of
        // the stage); the rest of the graph is fused in the sink's task. A
        // task of their own (an ordinary async boundary) took the server on 2
        // cores from 166–219k to 250–277k records/s on Apache Kafka (the
        // pipeline benchmark), but the two tasks mostly took turns on one
        // worker thread (together under 0.9 of a core at full speed, with
        // a core's worth idle): tokio runs a task woken by another next on
        // the waker's worker. On a thread: median 242k → 267k records/s in 8
        // alternated pairs (faster in 6), latencies unchanged.
        .async_boundary_pinned(4096, "serve-consume")
        .partition(2, |r| usize::from(r.is_err()))
        .into_iter();
        let (Some(good), Some(bad)) = (branches.next(), branches.next()) else {
            return Err(WineError::Config {
                name: "serving",
                reason: "partition(2) gave fewer than two outputs".into(),
            });
        };

        // Offsets of the records inside the serving stage, in order: the stage
        // answers every record exactly once, in record order, so the n-th result
        // belongs to the n-th offset pushed here.
        let in_stage: Arc<Mutex<VecDeque<CommittableOffset>>> = Arc::default();
        let entering = in_stage.clone();
        let good = good.filter_map(move |r| {
            let (record, offset) = r.ok()?;
            entering
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(offset);
            Some(record)
        });
        let dead = counters.clone();
        let bad = bad.filter_map(move |r| {
            let message = r.err()?;
            dead.dead_letters.fetch_add(1, Ordering::Relaxed);
            Some(message)
        });

        let models = model_source(
            config.kafka(),
            format!("{}.models.{}", config.group_id, config.instance_id),
            config.topics.models.clone(),
            counters.clone(),
            caught_up_tx,
            feed,
            restored,
            state.clone(),
        );
        let (results, _) = ServingStage::new(loader)
            .config(config.serving.clone())
            .state(state.clone())
            .build(models, good)
            .map_err(|e| WineError::Config {
                name: "serving",
                reason: e.to_string(),
            })?;
        let results_topic = config.topics.results.clone();
        let produced = counters.clone();
        let messages = results
            .try_map(move |r: ServingResult| {
                let offset = in_stage
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front()
                    .ok_or_else(|| {
                        StreamError::Protocol("a result without a record in the stage".into())
                    })?;
                produced.results.fetch_add(1, Ordering::Relaxed);
                let record =
                    ProducerRecord::new(results_topic.clone(), r.encode_to_vec()).key(r.record_key);
                Ok::<_, StreamError>(ProducerMessage::single(record, offset))
            })
            .merge(bad);
        // At-least-once: the committable sink and the committer; exactly-once:
        // results, dead letters and offsets in Kafka transactions.
        let done: futures::future::BoxFuture<'static, Result<TransactionStats, StreamError>> =
            match &committer {
                Some(committer) => {
                    let sink = committable_sink(&producer_settings, committer.clone())?;
                    let completion = messages.run_with(sink);
                    Box::pin(async move { completion.await.map(|_| TransactionStats::default()) })
                }
                None => {
                    let settings = TransactionalSettings::new(
                        producer_settings.clone(),
                        transactional_id(&config.group_id, &config.instance_id),
                    )
                    .max_batch(config.commit.max_batch)
                    .max_interval(config.commit.max_interval);
                    Box::pin(messages.run_with(transactional_sink(&settings, &control)?))
                }
            };

        let progress = tokio::spawn(log_progress(
            counters.clone(),
            control.clone(),
            committer.clone(),
        ));
        // When the stop was asked for: the whole stop, drain and last writes,
        // is bounded by one shutdown timeout from then.
        let mut stop_asked = None;
        let shutdown = async {
            shutdown.await;
            stop_asked = Some(tokio::time::Instant::now());
        };
        let outcome = run_until_within(&control, done, shutdown, config.shutdown_timeout).await;
        progress.abort();
        // Awaited, so its committer handle is gone before the committer closes.
        let _ = progress.await;
        // The last writes are bounded by what is left of the timeout (at
        // least a short grace, for the final commit after a drain that used
        // it all): when the drain ran out of time the broker is probably
        // away, and these steps talk to it too.
        let now = tokio::time::Instant::now();
        let deadline = match stop_asked {
            Some(asked) => (asked + config.shutdown_timeout).max(now + LAST_WRITES_GRACE),
            None => now + config.shutdown_timeout,
        };
        let late = |what: &str| tracing::warn!("{what} did not finish before the shutdown timeout");
        // The stage stopped (its last snapshot is published): store it.
        if let Some(w) = store_writer {
            if tokio::time::timeout_at(deadline, w.finish()).await.is_err() {
                late("the model store's last write");
            }
        }

        // Say goodbye, stop the helpers, report.
        let _ = stop_tx.send(true);
        let mut publisher = publisher;
        match tokio::time::timeout_at(deadline, &mut publisher).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "instance publisher task failed"),
            Ok(Ok(())) => {}
            Err(_) => {
                publisher.abort();
                late("the instance's last record");
            }
        }
        // Wait for the aborted reader to be dropped, so its consumer is closed
        // when `run` returns (a caller may stop the broker next).
        reader.abort();
        let _ = tokio::time::timeout_at(deadline, reader).await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Err(e) = producer.flush(left.min(Duration::from_secs(10))).await {
            tracing::warn!(error = %e, "producer flush at shutdown failed");
        }
        if let Some(h) = http {
            if let Err(e) = h.shutdown().await {
                tracing::warn!(error = %e, "HTTP server shutdown failed");
            }
        }
        let mut commits = CommitStats::default();
        if let Some(c) = committer {
            // Its last commit, and its hold on the data consumer released.
            commits = c.stats();
            match tokio::time::timeout_at(deadline, c.close()).await {
                Ok(Ok(last)) => commits = last,
                // Logged by the committer: what it did not commit is
                // consumed again.
                Ok(Err(_)) => {}
                Err(_) => late("the committer's last commit"),
            }
        }
        let transactions = match outcome {
            Ok(t) => t,
            Err(e) => {
                // Closing the consumer leaves its group, which waits for the
                // coordinator: with the broker away (the usual reason the
                // drain failed) that can block without end. Close it on a
                // thread of its own, so the stop stays bounded.
                let spawned = std::thread::Builder::new()
                    .name("flowstage-consumer-close".into())
                    .spawn(move || drop(control));
                if let Err(err) = spawned {
                    tracing::warn!(error = %err, "cannot close the consumer on a thread of its own");
                }
                return Err(e.into());
            }
        };
        // The data consumer closes (revocation, group leave) off the async
        // threads once its last handle goes; waited for, so a caller can stop
        // the broker once `run` returns.
        let closed = control.closed();
        drop(control);
        if tokio::time::timeout_at(deadline, closed).await.is_err() {
            late("the data consumer's close");
        }
        Ok(ServerSummary {
            records: counters.records.load(Ordering::Relaxed),
            results: counters.results.load(Ordering::Relaxed),
            dead_letters: counters.dead_letters.load(Ordering::Relaxed),
            model_messages: counters.model_messages.load(Ordering::Relaxed),
            commits,
            transactions,
        })
    }
}

/// Opens the configured model store, reads it, seeds `state` with the stored
/// statistics and history, and starts the store writer (not for the memory
/// store: a new one is empty and dies with the server, so writing to it would
/// only cost). Logs how long the restore took once the stored models are
/// installed.
async fn restore_models(
    config: &ServerConfig,
    state: &ServingState,
) -> Result<(RestoredModels, Option<StoreWriter>), WineError> {
    // A setting the store refuses names the setting; a store that cannot be
    // opened or read (a damaged file, a broker away) is not a setting's fault.
    let store_err = |e: crate::store::StoreError| match e {
        crate::store::StoreError::Config(reason) => WineError::Config {
            name: "store",
            reason,
        },
        other => WineError::Store(other),
    };
    let started = Instant::now();
    let store = config
        .store
        .open(config.kafka(), &config.group_id)
        .await
        .map_err(store_err)?;
    let reader = store.clone();
    let found = tokio::task::spawn_blocking(move || reader.load())
        .await
        .map_err(|e| WineError::Store(crate::store::StoreError::Task(e.to_string())))?
        .map_err(store_err)?;
    let read_ms = started.elapsed().as_secs_f64() * 1e3;
    // Each skipped entry was logged by the store as it was read.
    let kind = store.kind();
    let mut restored = RestoredModels::default();
    for entry in &found.entries {
        state.seed_restored(entry.seed(kind));
        restored
            .catalog
            .offered(&entry.model.descriptor, entry.model.position.clone());
        if let Some(p) = &entry.model.position {
            restored
                .positions
                .insert(entry.model.data_type.clone(), p.clone());
        }
        restored.descriptors.push(entry.model.descriptor.clone());
    }
    let entries: Vec<StoredEntry> = found.entries;
    let n = entries.len() as u64;
    let writer = (config.store != StoreConfig::Memory).then(|| {
        StoreWriter::spawn(
            store,
            state.clone(),
            restored.catalog.clone(),
            config.store_interval,
            &entries,
        )
    });
    let st = state.clone();
    tokio::spawn(async move {
        // Installed (restored) or failed: the stored models are all loaded.
        let s = st
            .wait_for(|s| {
                s.totals.models_restored + s.totals.load_failures >= n
                    && s.totals.models_offered >= n
                    && s.data_types.values().all(|d| d.loading == 0)
                    || (!s.running && s.published_ms > 0)
            })
            .await;
        tracing::info!(
            "restored {} models from the {kind} store in {:.1} ms (store read in {read_ms:.1} ms)",
            s.totals.models_restored,
            started.elapsed().as_secs_f64() * 1e3
        );
    });
    Ok((restored, writer))
}

async fn instances(State(dir): State<InstanceDirectory>) -> Response {
    Json(dir.list()).into_response()
}

/// Publishes this instance's record on start, on assignment and model changes,
/// every `heartbeat`, and a last one (stopped) when `stop` turns true.
#[allow(clippy::too_many_arguments)]
async fn publish_instance(
    producer: KafkaProducer,
    topic: String,
    heartbeat: Duration,
    mut info: InstanceInfo,
    mut assignment: watch::Receiver<Vec<crate::kafka::TopicPartition>>,
    state: ServingState,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            r = assignment.changed() => r.is_err(),
            _ = stop.wait_for(|s| *s) => true,
        };
        let partitions: Vec<String> = assignment
            .borrow()
            .iter()
            .map(|tp| format!("{}-{}", tp.topic, tp.partition))
            .collect();
        if partitions != info.partitions {
            tracing::info!(partitions = ?partitions, "partitions of the data topic assigned to this instance");
        }
        info.partitions = partitions;
        let snap = state.snapshot();
        info.models = snap
            .data_types
            .iter()
            .filter_map(|(dt, s)| s.current.as_ref().map(|c| (dt.clone(), c.name.clone())))
            .collect();
        info.records = counters.records.load(Ordering::Relaxed);
        info.updated_ms = now_ms();
        info.stopped = stopping;
        match serde_json::to_vec(&info) {
            Ok(payload) => {
                let r = ProducerRecord::new(topic.clone(), payload).key(info.id.clone());
                if let Err(e) = producer.send(r).await {
                    tracing::warn!(error = %e, "cannot publish the instance record");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode the instance record"),
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_settings_hides_secret_properties() {
        let secret = |k: &str| (k.to_string(), format!("hunter2-{k}"));
        let mut c = ServerConfig::new("k:9092");
        c.kafka_properties = vec![
            ("sasl.username".into(), "alice".into()),
            secret("sasl.password"),
        ];
        c.consumer_properties = vec![secret("ssl.key.password")];
        c.producer_properties = vec![secret("sasl.oauthbearer.client.secret")];
        let shown = format!("{c:?}");
        assert!(
            shown.contains("alice") && shown.contains("k:9092"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        let mut p = crate::wine::provider::ProviderConfig::new("k:9092");
        p.kafka_properties = vec![secret("sasl.password")];
        p.properties = vec![secret("ssl.keystore.password")];
        let shown = format!("{p:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn an_unspecified_http_address_is_advertised_by_host_name() {
        let any: SocketAddr = ([0, 0, 0, 0], 5500).into();
        let local: SocketAddr = ([127, 0, 0, 1], 5500).into();
        assert_eq!(advertised_http(local), "127.0.0.1:5500");
        match host_name() {
            Some(host) => assert_eq!(advertised_http(any), format!("{host}:5500")),
            None => assert_eq!(advertised_http(any), "0.0.0.0:5500"),
        }
    }

    #[test]
    fn decode_record_rejects_what_is_not_a_wine_record() {
        assert!(decode_record(None).is_err());
        assert!(decode_record(Some(b"")).is_err(), "no dataType");
        assert!(decode_record(Some(&[0xff, 0xff, 0xff])).is_err());
        let ok = WineRecord {
            alcohol: 9.4,
            data_type: "wine".into(),
            ..Default::default()
        };
        assert_eq!(decode_record(Some(&ok.encode_to_vec())), Ok(ok));
    }

    use crate::kafka::effective_property as effective;

    #[test]
    fn client_properties_reach_every_client_and_specific_ones_override_them() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let mut c = ServerConfig::new("k:9092");
        c.kafka_properties = vec![
            pair("security.protocol", "SASL_PLAINTEXT"),
            pair("socket.timeout.ms", "5000"),
            pair("linger.ms", "7"),
        ];
        c.consumer_properties = vec![pair("socket.timeout.ms", "9000")];
        c.producer_properties = vec![pair("linger.ms", "2")];
        let kafka = c.kafka().client_config();
        assert_eq!(kafka.get("bootstrap.servers"), Some("k:9092"));
        assert_eq!(kafka.get("security.protocol"), Some("SASL_PLAINTEXT"));

        let c = c.with_client_properties_first();
        let consumer = &c.consumer_properties;
        assert_eq!(
            effective(consumer, "security.protocol"),
            Some("SASL_PLAINTEXT")
        );
        assert_eq!(effective(consumer, "socket.timeout.ms"), Some("9000"));
        let ps = producer_settings(&c);
        assert_eq!(
            effective(&ps.properties, "security.protocol"),
            Some("SASL_PLAINTEXT")
        );
        assert_eq!(effective(&ps.properties, "socket.timeout.ms"), Some("5000"));
        assert_eq!(effective(&ps.properties, "linger.ms"), Some("2"));
        // The internal clients keep what they need over a client property.
        let mut model_reader = c.kafka().client_config();
        model_reader.set("group.id", "g.models.i");
        assert_eq!(model_reader.get("group.id"), Some("g.models.i"));
    }

    #[test]
    fn client_properties_cannot_take_over_per_client_settings() {
        let mut c = ServerConfig::new("k:9092");
        c.kafka_properties = vec![("sasl.mechanism".into(), "PLAIN".into())];
        assert!(c.check_kafka_properties().is_ok());
        for key in ["group.id", "bootstrap.servers", "transactional.id"] {
            c.kafka_properties = vec![(key.into(), "x".into())];
            let err = c.check_kafka_properties().err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(key)),
                "{key}: {err:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_mock_cluster_is_recognised_and_an_unreachable_one_is_not() {
        let broker =
            crate::kafka::EmbeddedBroker::start(crate::kafka::EmbeddedBrokerConfig::new(1))
                .expect("embedded broker");
        let mock = KafkaProducer::new(&ProducerSettings::new(broker.bootstrap_servers()))
            .expect("producer");
        assert!(is_mock_cluster(&mock).await, "the embedded broker");
        // Nothing listens on port 1: no cluster id, so not the mock.
        let nowhere = KafkaProducer::new(&ProducerSettings::new("127.0.0.1:1")).expect("producer");
        assert!(!is_mock_cluster(&nowhere).await, "an unreachable cluster");
    }
}
