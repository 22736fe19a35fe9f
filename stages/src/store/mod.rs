//! Model stores: what the serving stage serves, kept across restarts.
//!
//! A [`ModelStore`] holds, per dataType, the current model (its
//! [`ModelDescriptor`], and where it was read on the model topic) and the
//! model's statistics (usage, errors, total, min/max, the HDR histogram in
//! hdrhistogram's V2 format) and history. Three implementations, chosen by
//! [`StoreConfig`]:
//!
//! | kind | where | survives |
//! |---|---|---|
//! | [`MemoryStore`] (default) | a map in the process | nothing: lost on restart |
//! | [`LocalStore`] | a redb database file | a restart on the same machine |
//! | [`KafkaStore`] | a compacted changelog topic keyed by dataType (`<group>-model-store-changelog`) | a restart on any machine (Kafka Streams' approach) |
//!
//! Entries are two per dataType: `model/{dataType}` (written at each model
//! swap) and `stats/{dataType}` (written when the statistics changed, at most
//! once per [`StoreWriter`] interval, and at clean shutdown). A
//! [`StoreWriter`] task does the writing off the scoring path, from the
//! published [`ServingState`] snapshots; after `kill -9`, only the statistics
//! since its last write are lost.
//!
//! Store calls block (file or network I/O): call them on a blocking thread
//! (`tokio::task::spawn_blocking`), as the [`StoreWriter`] does.

mod kafka;
mod local;
mod memory;

pub use kafka::{KafkaStore, DEFAULT_MAX_MESSAGE_BYTES};
pub use local::LocalStore;
pub use memory::MemoryStore;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flowstage_model::pb::ModelDescriptor;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use prost::Message as _;
use tokio::sync::watch;

use crate::kafka::KafkaConnection;
use crate::serving::{
    now_ms, HistoryEntry, ModelStats, RestoreSeed, ServingSnapshot, ServingState,
    HISTOGRAM_HIGH_NS, HISTOGRAM_LOW_NS, HISTOGRAM_SIGFIG,
};

/// The prefix of the key of a dataType's model entry.
pub const MODEL_KEY_PREFIX: &str = "model/";
/// The prefix of the key of a dataType's statistics entry.
pub const STATS_KEY_PREFIX: &str = "stats/";
/// The version of the entries' encoding.
const FORMAT_VERSION: u32 = 1;

/// Errors of model stores.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The local database failed.
    #[error("local store {path}: {source}")]
    Local {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// The local database file is damaged: the database engine failed on it
    /// (it panicked) rather than report an error.
    #[error(
        "local store {path} is damaged ({what}); move the file aside to start without the stored models"
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What failed.
        what: String,
    },
    /// A Kafka client call failed.
    #[error("kafka store: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Reading the changelog topic to its end took too long.
    #[error("kafka store: topic {topic} not read to its end within {timeout:?}")]
    Timeout {
        /// The changelog topic.
        topic: String,
        /// The limit.
        timeout: Duration,
    },
    /// A stored entry cannot be decoded.
    #[error("corrupted store entry {key:?}: {reason}")]
    Corrupt {
        /// The entry's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An entry is larger than the store accepts.
    #[error("store entry {key:?} has {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The entry's key.
        key: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An invalid setting.
    #[error("invalid store setting: {0}")]
    Config(String),
    /// A blocking task failed.
    #[error("store task failed: {0}")]
    Task(String),
}

/// Which model store a server uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreConfig {
    /// In memory: nothing survives a restart (the default).
    #[default]
    Memory,
    /// A local redb database file (created when missing).
    Local {
        /// The database file.
        path: PathBuf,
    },
    /// A compacted Kafka changelog topic.
    Kafka {
        /// The topic; `None`: `<group>-model-store-changelog`.
        topic: Option<String>,
    },
}

impl StoreConfig {
    /// The store's kind: `memory`, `local` or `kafka`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::Memory => "memory",
            StoreConfig::Local { .. } => "local",
            StoreConfig::Kafka { .. } => "kafka",
        }
    }

    /// Opens the configured store; a Kafka store uses the cluster at `kafka`
    /// (its bootstrap servers, or a [`KafkaConnection`] with the client
    /// properties of a secured cluster) and, by default, a topic named after
    /// consumer group `group` (created compacted when missing).
    pub async fn open(
        &self,
        kafka: impl Into<KafkaConnection>,
        group: &str,
    ) -> Result<Arc<dyn ModelStore>, StoreError> {
        Ok(match self {
            StoreConfig::Memory => Arc::new(MemoryStore::new()),
            StoreConfig::Local { path } => {
                let path = path.clone();
                Arc::new(
                    tokio::task::spawn_blocking(move || LocalStore::open(path))
                        .await
                        .map_err(|e| StoreError::Task(e.to_string()))??,
                )
            }
            StoreConfig::Kafka { topic } => {
                let topic = topic
                    .clone()
                    .unwrap_or_else(|| KafkaStore::default_topic(group));
                Arc::new(KafkaStore::open(kafka, &topic, DEFAULT_MAX_MESSAGE_BYTES).await?)
            }
        })
    }
}

/// Where a model message was read on the model topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPosition {
    /// The model topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// The message's offset.
    pub offset: i64,
}

impl ModelPosition {
    /// Whether a message at `partition`/`offset` of `topic` is not newer than
    /// this one (the same topic and partition, at or before this offset).
    pub fn covers(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.topic == topic && self.partition == partition && offset <= self.offset
    }
}

/// The current model of a dataType, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    /// The dataType.
    pub data_type: String,
    /// The model's descriptor (by value or by location), as received.
    pub descriptor: ModelDescriptor,
    /// Where it was read on the model topic, if it came from there.
    pub position: Option<ModelPosition>,
    /// When it was stored, epoch milliseconds.
    pub stored_ms: u64,
}

/// The statistics of a dataType's current model and its history, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStats {
    /// The dataType.
    pub data_type: String,
    /// The current model's statistics (with its histogram when it had one).
    pub current: ModelStats,
    /// Earlier models, oldest first.
    pub history: Vec<HistoryEntry>,
    /// When it was stored, epoch milliseconds.
    pub stored_ms: u64,
}

/// All a store holds of one dataType.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEntry {
    /// The current model.
    pub model: StoredModel,
    /// Its statistics, if stored (and of the same model).
    pub stats: Option<StoredStats>,
}

impl StoredEntry {
    /// What the serving stage needs to continue this entry's statistics
    /// ([`ServingState::seed_restored`]); `store` is the store's kind.
    pub fn seed(&self, store: &str) -> RestoreSeed {
        RestoreSeed {
            data_type: self.model.data_type.clone(),
            model_name: self.model.descriptor.name.clone(),
            stats: self.stats.as_ref().map(|s| s.current.clone()),
            history: self
                .stats
                .as_ref()
                .map(|s| s.history.clone())
                .unwrap_or_default(),
            store: store.to_string(),
            stored_ms: self.stats.as_ref().map_or(self.model.stored_ms, |s| {
                s.stored_ms.max(self.model.stored_ms)
            }),
        }
    }
}

/// What [`ModelStore::load`] found.
#[derive(Debug, Default)]
pub struct Restored {
    /// One entry per dataType with a stored model, sorted by dataType.
    pub entries: Vec<StoredEntry>,
    /// Entries that could not be decoded (skipped, each with its reason).
    pub skipped: Vec<StoreError>,
}

/// A store of each dataType's current model, statistics and history.
///
/// Implementations store opaque entries by key (`put_raw` / `load_raw`); the
/// provided methods encode and decode them. Calls block: use a blocking
/// thread.
pub trait ModelStore: Send + Sync + fmt::Debug {
    /// The kind: `memory`, `local` or `kafka`.
    fn kind(&self) -> &'static str;

    /// Stores `entries` (key, encoded value), each replacing what the key held.
    fn put_raw(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError>;

    /// Every stored key with its latest value.
    fn load_raw(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Stores `model` as its dataType's current model.
    fn put_model(&self, model: &StoredModel) -> Result<(), StoreError> {
        self.put_raw(&[(model_key(&model.data_type), encode_model(model))])
    }

    /// Stores statistics (each replacing its dataType's).
    fn put_stats(&self, stats: &[StoredStats]) -> Result<(), StoreError> {
        let entries = stats
            .iter()
            .map(|s| Ok((stats_key(&s.data_type), encode_stats(s)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.put_raw(&entries)
    }

    /// Everything stored, decoded; entries that cannot be decoded are skipped
    /// (listed in [`Restored::skipped`] and logged), never a panic. Statistics
    /// of another model than the stored current one are ignored.
    fn load(&self) -> Result<Restored, StoreError> {
        Ok(decode_all(self.load_raw()?))
    }
}

/// The key of `data_type`'s model entry.
pub fn model_key(data_type: &str) -> String {
    format!("{MODEL_KEY_PREFIX}{data_type}")
}

/// The key of `data_type`'s statistics entry.
pub fn stats_key(data_type: &str) -> String {
    format!("{STATS_KEY_PREFIX}{data_type}")
}

fn decode_all(raw: Vec<(String, Vec<u8>)>) -> Restored {
    let mut models: BTreeMap<String, StoredModel> = BTreeMap::new();
    let mut stats: HashMap<String, StoredStats> = HashMap::new();
    let mut skipped = Vec::new();
    for (key, value) in raw {
        let decoded = if let Some(dt) = key.strip_prefix(MODEL_KEY_PREFIX) {
            decode_model(&key, dt, &value).map(|m| {
                models.insert(dt.to_string(), m);
            })
        } else if let Some(dt) = key.strip_prefix(STATS_KEY_PREFIX) {
            decode_stats(&key, dt, &value).map(|s| {
                stats.insert(dt.to_string(), s);
            })
        } else {
            Err(StoreError::Corrupt {
                key: key.clone(),
                reason: "unknown key".into(),
            })
        };
        if let Err(e) = decoded {
            tracing::warn!(error = %e, "model store: entry skipped");
            skipped.push(e);
        }
    }
    let entries = models
        .into_values()
        .map(|model| {
            let stats = stats
                .remove(&model.data_type)
                .filter(|s| s.current.name == model.descriptor.name);
            StoredEntry { model, stats }
        })
        .collect();
    Restored { entries, skipped }
}

// ---- encoding -----------------------------------------------------------------

mod wire {
    //! The stored entries' protobuf encoding (versioned).

    /// A model entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(uint32, tag = "1")]
        pub version: u32,
        #[prost(string, tag = "2")]
        pub data_type: String,
        #[prost(bytes = "vec", tag = "3")]
        pub descriptor: Vec<u8>,
        #[prost(message, optional, tag = "4")]
        pub position: Option<Position>,
        #[prost(uint64, tag = "5")]
        pub stored_ms: u64,
    }

    /// A model-topic position.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Position {
        #[prost(string, tag = "1")]
        pub topic: String,
        #[prost(int32, tag = "2")]
        pub partition: i32,
        #[prost(int64, tag = "3")]
        pub offset: i64,
    }

    /// A statistics entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatsEntry {
        #[prost(uint32, tag = "1")]
        pub version: u32,
        #[prost(string, tag = "2")]
        pub data_type: String,
        #[prost(message, optional, tag = "3")]
        pub current: Option<Stats>,
        #[prost(message, repeated, tag = "4")]
        pub history: Vec<History>,
        #[prost(uint64, tag = "5")]
        pub stored_ms: u64,
    }

    /// One model's statistics.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stats {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub description: String,
        #[prost(string, tag = "3")]
        pub model_type: String,
        #[prost(uint64, tag = "4")]
        pub since_ms: u64,
        #[prost(uint64, tag = "5")]
        pub usage: u64,
        #[prost(uint64, tag = "6")]
        pub errors: u64,
        #[prost(uint64, tag = "7")]
        pub total_ns: u64,
        #[prost(uint64, optional, tag = "8")]
        pub min_ns: Option<u64>,
        #[prost(uint64, optional, tag = "9")]
        pub max_ns: Option<u64>,
        #[prost(double, optional, tag = "10")]
        pub mean_ns: Option<f64>,
        #[prost(uint64, optional, tag = "11")]
        pub p50_ns: Option<u64>,
        #[prost(uint64, optional, tag = "12")]
        pub p90_ns: Option<u64>,
        #[prost(uint64, optional, tag = "13")]
        pub p99_ns: Option<u64>,
        #[prost(uint64, optional, tag = "14")]
        pub p999_ns: Option<u64>,
        #[prost(uint64, tag = "15")]
        pub load_ns: u64,
        #[prost(uint64, optional, tag = "16")]
        pub swap_latency_ns: Option<u64>,
        /// hdrhistogram V2 serialization; empty: none.
        #[prost(bytes = "vec", tag = "17")]
        pub histogram: Vec<u8>,
    }

    /// A history entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct History {
        #[prost(message, optional, tag = "1")]
        pub stats: Option<Stats>,
        #[prost(uint64, tag = "2")]
        pub replaced_ms: u64,
        #[prost(string, tag = "3")]
        pub replaced_by: String,
    }
}

/// Encodes a model entry.
fn encode_model(m: &StoredModel) -> Vec<u8> {
    wire::Model {
        version: FORMAT_VERSION,
        data_type: m.data_type.clone(),
        descriptor: m.descriptor.encode_to_vec(),
        position: m.position.as_ref().map(|p| wire::Position {
            topic: p.topic.clone(),
            partition: p.partition,
            offset: p.offset,
        }),
        stored_ms: m.stored_ms,
    }
    .encode_to_vec()
}

fn corrupt(key: &str, reason: impl fmt::Display) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn check_header(key: &str, version: u32, data_type: &str, key_dt: &str) -> Result<(), StoreError> {
    if version != FORMAT_VERSION {
        return Err(corrupt(key, format!("unknown format version {version}")));
    }
    if data_type != key_dt {
        return Err(corrupt(
            key,
            format!("holds dataType {data_type:?}, not {key_dt:?}"),
        ));
    }
    Ok(())
}

fn decode_model(key: &str, key_dt: &str, bytes: &[u8]) -> Result<StoredModel, StoreError> {
    let w = wire::Model::decode(bytes).map_err(|e| corrupt(key, e))?;
    check_header(key, w.version, &w.data_type, key_dt)?;
    let descriptor = ModelDescriptor::decode(w.descriptor.as_slice())
        .map_err(|e| corrupt(key, format!("descriptor: {e}")))?;
    if descriptor.data_type != w.data_type {
        return Err(corrupt(key, "the descriptor is of another dataType"));
    }
    Ok(StoredModel {
        data_type: w.data_type,
        descriptor,
        position: w.position.map(|p| ModelPosition {
            topic: p.topic,
            partition: p.partition,
            offset: p.offset,
        }),
        stored_ms: w.stored_ms,
    })
}

fn encode_one(s: &ModelStats) -> Result<wire::Stats, StoreError> {
    let mut histogram = Vec::new();
    if let Some(h) = s.histogram.as_deref() {
        V2Serializer::new()
            .serialize(h, &mut histogram)
            .map_err(|e| StoreError::Config(format!("cannot serialize a histogram: {e:?}")))?;
    }
    Ok(wire::Stats {
        name: s.name.clone(),
        description: s.description.clone(),
        model_type: s.model_type.clone(),
        since_ms: s.since_ms,
        usage: s.usage,
        errors: s.errors,
        total_ns: s.total_ns,
        min_ns: s.min_ns,
        max_ns: s.max_ns,
        mean_ns: s.mean_ns,
        p50_ns: s.p50_ns,
        p90_ns: s.p90_ns,
        p99_ns: s.p99_ns,
        p999_ns: s.p999_ns,
        load_ns: s.load_ns,
        swap_latency_ns: s.swap_latency_ns,
        histogram,
    })
}

/// The largest stored histogram read (the writer's are a few KiB).
const MAX_HISTOGRAM_BYTES: usize = 1 << 20;

/// A stored histogram, as the writer makes them: an uncompressed V2 encoding
/// of a histogram with the serving stage's bounds (1 ns to an hour, 3
/// significant digits) and no more values than the model's usage. Stored
/// bytes come from outside (a file, a topic): their header is checked before
/// the decoder allocates what it declares, and a panic of the decoder is a
/// corrupt entry.
fn decode_histogram(bytes: &[u8], usage: u64) -> Result<Histogram<u64>, String> {
    const V2_COOKIE: u32 = 0x1c84_9313;
    const HEADER: usize = 40;
    if bytes.len() > MAX_HISTOGRAM_BYTES {
        return Err(format!("longer than {MAX_HISTOGRAM_BYTES} bytes"));
    }
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
    };
    match (word(0), word(4)) {
        (Some(V2_COOKIE), Some(payload))
            if payload as usize <= bytes.len().saturating_sub(HEADER) => {}
        (Some(V2_COOKIE), Some(payload)) => {
            return Err(format!(
                "declares {payload} bytes of counts and holds {}",
                bytes.len().saturating_sub(HEADER)
            ))
        }
        _ => return Err("not an uncompressed V2 histogram".into()),
    }
    std::panic::catch_unwind(|| {
        let decoded = Deserializer::new()
            .deserialize::<u64, _>(&mut std::io::Cursor::new(bytes))
            .map_err(|e| format!("{e:?}"))?;
        let bounds = (HISTOGRAM_LOW_NS, HISTOGRAM_HIGH_NS, HISTOGRAM_SIGFIG);
        if (decoded.low(), decoded.high(), decoded.sigfig()) != bounds {
            return Err("bounds other than the serving stage's".to_string());
        }
        let mut total: u64 = 0;
        for v in decoded.iter_recorded() {
            total = total
                .checked_add(v.count_at_value())
                .ok_or("counts that overflow")?;
        }
        if total > usage {
            return Err(format!("{total} values for a usage of {usage}"));
        }
        Ok(decoded)
    })
    .map_err(|_| "the decoder failed on it".to_string())?
}

fn decode_one(key: &str, w: wire::Stats) -> Result<ModelStats, StoreError> {
    let histogram = if w.histogram.is_empty() {
        None
    } else {
        let h = decode_histogram(&w.histogram, w.usage)
            .map_err(|reason| corrupt(key, format!("histogram: {reason}")))?;
        Some(Arc::new(h))
    };
    Ok(ModelStats {
        name: w.name,
        description: w.description,
        model_type: w.model_type,
        since_ms: w.since_ms,
        usage: w.usage,
        errors: w.errors,
        total_ns: w.total_ns,
        min_ns: w.min_ns,
        max_ns: w.max_ns,
        mean_ns: w.mean_ns,
        p50_ns: w.p50_ns,
        p90_ns: w.p90_ns,
        p99_ns: w.p99_ns,
        p999_ns: w.p999_ns,
        load_ns: w.load_ns,
        swap_latency_ns: w.swap_latency_ns,
        histogram,
    })
}

/// Encodes a statistics entry (history entries without histograms).
fn encode_stats(s: &StoredStats) -> Result<Vec<u8>, StoreError> {
    let history = s
        .history
        .iter()
        .map(|h| {
            let mut stats = h.stats.clone();
            stats.histogram = None;
            Ok(wire::History {
                stats: Some(encode_one(&stats)?),
                replaced_ms: h.replaced_ms,
                replaced_by: h.replaced_by.clone(),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(wire::StatsEntry {
        version: FORMAT_VERSION,
        data_type: s.data_type.clone(),
        current: Some(encode_one(&s.current)?),
        history,
        stored_ms: s.stored_ms,
    }
    .encode_to_vec())
}

fn decode_stats(key: &str, key_dt: &str, bytes: &[u8]) -> Result<StoredStats, StoreError> {
    let w = wire::StatsEntry::decode(bytes).map_err(|e| corrupt(key, e))?;
    check_header(key, w.version, &w.data_type, key_dt)?;
    let current = decode_one(
        key,
        w.current
            .ok_or_else(|| corrupt(key, "no current statistics"))?,
    )?;
    let history = w
        .history
        .into_iter()
        .map(|h| {
            Ok(HistoryEntry {
                stats: decode_one(
                    key,
                    h.stats
                        .ok_or_else(|| corrupt(key, "history entry without statistics"))?,
                )?,
                replaced_ms: h.replaced_ms,
                replaced_by: h.replaced_by,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(StoredStats {
        data_type: w.data_type,
        current,
        history,
        stored_ms: w.stored_ms,
    })
}

// ---- writing ------------------------------------------------------------------

/// The descriptors offered to the serving stage, so that the [`StoreWriter`]
/// can store the current model's: per dataType, the latest descriptor offered
/// under each model name (at most 16 names per dataType).
#[derive(Debug, Default)]
pub struct ModelCatalog {
    inner: Mutex<HashMap<String, VecDeque<Offered>>>,
}

/// A descriptor offered, and where it was read.
type Offered = (ModelDescriptor, Option<ModelPosition>);

const CATALOG_NAMES: usize = 16;

impl ModelCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `descriptor` (read at `position`) was offered.
    pub fn offered(&self, descriptor: &ModelDescriptor, position: Option<ModelPosition>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let list = inner.entry(descriptor.data_type.clone()).or_default();
        list.retain(|(d, _)| d.name != descriptor.name);
        list.push_back((descriptor.clone(), position));
        while list.len() > CATALOG_NAMES {
            list.pop_front();
        }
    }

    /// The latest descriptor offered for `data_type` named `name`.
    pub fn get(&self, data_type: &str, name: &str) -> Option<Offered> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .get(data_type)?
            .iter()
            .rev()
            .find(|(d, _)| d.name == name)
            .cloned()
    }
}

/// The default interval of the [`StoreWriter`]'s statistics writes.
pub const DEFAULT_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// A task persisting the serving state to a [`ModelStore`]: a dataType's
/// model at each swap (at once), the statistics when they changed (at most
/// once per interval), everything at [`finish`](StoreWriter::finish).
#[derive(Debug)]
pub struct StoreWriter {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// What was last written of one dataType.
#[derive(Debug, Clone, PartialEq)]
struct Written {
    name: String,
    since_ms: u64,
    usage: u64,
    history: usize,
}

impl StoreWriter {
    /// Starts the writer (on the current tokio runtime). Turns on the
    /// histogram export of `state` ([`ServingState::set_export_histograms`]).
    /// `restored`: the entries already in the store (not written again until
    /// they change).
    pub fn spawn(
        store: Arc<dyn ModelStore>,
        state: ServingState,
        catalog: Arc<ModelCatalog>,
        interval: Duration,
        restored: &[StoredEntry],
    ) -> StoreWriter {
        state.set_export_histograms(true);
        let mut models: HashMap<String, (String, u64)> = HashMap::new();
        let mut stats: HashMap<String, Written> = HashMap::new();
        for e in restored {
            if let Some(s) = &e.stats {
                models.insert(
                    e.model.data_type.clone(),
                    (s.current.name.clone(), s.current.since_ms),
                );
                stats.insert(
                    e.model.data_type.clone(),
                    Written {
                        name: s.current.name.clone(),
                        since_ms: s.current.since_ms,
                        usage: s.current.usage,
                        history: s.history.len(),
                    },
                );
            }
        }
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(write_loop(
            store, state, catalog, interval, models, stats, stop_rx,
        ));
        StoreWriter { stop, task }
    }

    /// Writes what changed since the last write, then stops.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "model store writer failed");
        }
    }
}

async fn write_loop(
    store: Arc<dyn ModelStore>,
    state: ServingState,
    catalog: Arc<ModelCatalog>,
    interval: Duration,
    mut models: HashMap<String, (String, u64)>,
    mut stats: HashMap<String, Written>,
    mut stop: watch::Receiver<bool>,
) {
    let mut versions = state.subscribe();
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stats_due, stopping) = tokio::select! {
            _ = tick.tick() => (true, false),
            r = versions.changed() => (false, r.is_err()),
            _ = stop.wait_for(|s| *s) => (true, true),
        };
        let snap = state.snapshot();
        let swapped = swapped_models(&snap, &models);
        if !swapped.is_empty() || stats_due || stopping {
            persist(&store, &catalog, &snap, &swapped, &mut models, &mut stats).await;
        }
        if stopping {
            return;
        }
    }
}

/// The dataTypes whose current model differs from the one written.
fn swapped_models(snap: &ServingSnapshot, written: &HashMap<String, (String, u64)>) -> Vec<String> {
    snap.data_types
        .iter()
        .filter_map(|(dt, s)| {
            let c = s.current.as_ref()?;
            let same = written
                .get(dt)
                .is_some_and(|(n, since)| *n == c.name && *since == c.since_ms);
            (!same).then(|| dt.clone())
        })
        .collect()
}

async fn persist(
    store: &Arc<dyn ModelStore>,
    catalog: &ModelCatalog,
    snap: &ServingSnapshot,
    swapped: &[String],
    models: &mut HashMap<String, (String, u64)>,
    stats: &mut HashMap<String, Written>,
) {
    let now = now_ms();
    let mut new_models = Vec::new();
    for dt in swapped {
        let Some(current) = snap.data_types.get(dt).and_then(|s| s.current.as_ref()) else {
            continue;
        };
        match catalog.get(dt, &current.name) {
            Some((descriptor, position)) => new_models.push((
                StoredModel {
                    data_type: dt.clone(),
                    descriptor,
                    position,
                    stored_ms: now,
                },
                (current.name.clone(), current.since_ms),
            )),
            None => tracing::debug!(
                data_type = dt,
                model = current.name,
                "no descriptor for the current model (offered already built?); not stored"
            ),
        }
    }
    let mut new_stats = Vec::new();
    for (dt, s) in &snap.data_types {
        let Some(current) = &s.current else { continue };
        let w = Written {
            name: current.name.clone(),
            since_ms: current.since_ms,
            usage: current.usage,
            history: s.history.len(),
        };
        let known_model = models
            .get(dt)
            .is_some_and(|(n, since)| *n == w.name && *since == w.since_ms)
            || new_models.iter().any(|(m, _)| &m.data_type == dt);
        if known_model && stats.get(dt) != Some(&w) {
            new_stats.push((
                StoredStats {
                    data_type: dt.clone(),
                    current: current.clone(),
                    history: s.history.clone(),
                    stored_ms: now,
                },
                w,
            ));
        }
    }
    if new_models.is_empty() && new_stats.is_empty() {
        return;
    }
    for (s, w) in &new_stats {
        // Before the write: a process killed during it restores this or the previous write.
        tracing::debug!(
            data_type = s.data_type,
            model = w.name,
            usage = w.usage,
            "writing statistics"
        );
    }
    let st = store.clone();
    let to_write: (Vec<StoredModel>, Vec<StoredStats>) = (
        new_models.iter().map(|(m, _)| m.clone()).collect(),
        new_stats.iter().map(|(s, _)| s.clone()).collect(),
    );
    let written = tokio::task::spawn_blocking(move || {
        for m in &to_write.0 {
            st.put_model(m)?;
        }
        if !to_write.1.is_empty() {
            st.put_stats(&to_write.1)?;
        }
        Ok::<_, StoreError>(())
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))
    .and_then(|r| r);
    match written {
        Ok(()) => {
            for (m, w) in new_models {
                tracing::debug!(data_type = m.data_type, model = w.0, "model stored");
                models.insert(m.data_type, w);
            }
            for (s, w) in new_stats {
                stats.insert(s.data_type, w);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, store = store.kind(), "cannot write to the model store (retrying later)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_histograms_are_checked_before_they_are_decoded() {
        let encode = |h: &Histogram<u64>| {
            let mut bytes = Vec::new();
            V2Serializer::new()
                .serialize(h, &mut bytes)
                .expect("encode");
            bytes
        };
        let mut h = Histogram::<u64>::new_with_bounds(
            HISTOGRAM_LOW_NS,
            HISTOGRAM_HIGH_NS,
            HISTOGRAM_SIGFIG,
        )
        .expect("bounds");
        for v in [500, 700, 90_000] {
            h.record(v).expect("record");
        }
        let good = encode(&h);
        assert_eq!(decode_histogram(&good, 3).map(|d| d.len()), Ok(3));
        // More values than the model's usage.
        assert!(decode_histogram(&good, 2).is_err());
        // A header declaring 4 GiB of counts (the decoder allocated them first).
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = decode_histogram(&huge, 3).unwrap_err();
        assert!(err.contains("declares"), "{err}");
        // Not a histogram, too short, too long, other bounds.
        assert!(decode_histogram(b"garbage", 3).is_err());
        assert!(decode_histogram(&good[..20], 3).is_err());
        assert!(decode_histogram(&vec![0; MAX_HISTOGRAM_BYTES + 1], 3).is_err());
        let other = Histogram::<u64>::new_with_bounds(1, 1000, 2).expect("bounds");
        assert!(decode_histogram(&encode(&other), 3).is_err());
        // Counts that overflow when summed.
        let mut big = Histogram::<u64>::new_with_bounds(
            HISTOGRAM_LOW_NS,
            HISTOGRAM_HIGH_NS,
            HISTOGRAM_SIGFIG,
        )
        .expect("bounds");
        big.record_n(5, u64::MAX / 2).expect("record");
        big.record_n(9, u64::MAX / 2).expect("record");
        big.record_n(70, u64::MAX / 2).expect("record");
        assert!(decode_histogram(&encode(&big), u64::MAX).is_err());
    }

    #[test]
    fn positions_cover_older_messages_of_the_same_partition_only() {
        let p = ModelPosition {
            topic: "models".into(),
            partition: 0,
            offset: 7,
        };
        assert!(p.covers("models", 0, 7));
        assert!(p.covers("models", 0, 3));
        assert!(!p.covers("models", 0, 8));
        assert!(!p.covers("models", 1, 3));
        assert!(!p.covers("other", 0, 3));
    }

    #[test]
    fn unknown_keys_and_garbage_are_skipped() {
        let r = decode_all(vec![
            ("what/x".into(), vec![1, 2, 3]),
            (model_key("wine"), vec![0xff, 0xff, 0xff, 0xff]),
        ]);
        assert!(r.entries.is_empty());
        assert_eq!(r.skipped.len(), 2);
    }
}
