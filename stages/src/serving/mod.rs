//! The model-serving stage: a stream of models and a stream of records in, one
//! [`ServingResult`](flowstage_model::pb::ServingResult) per record out.
//!
//! ```text
//!  models (ModelMessage) ──▶┐
//!                           │ ServingStage ──▶ ServingResult (one per record, in order)
//!  records (R: ServingRecord) ──▶┘         └──▶ ServingState (snapshots: stats, history)
//! ```
//!
//! - The model inlet is always pulled, so models never wait behind data; the
//!   data inlet is pulled only when downstream asks for a result (with
//!   micro-batching also to fill a batch of [`ServingConfig::batch_size`]
//!   records). It takes what the data source has ready, up to
//!   [`ServingConfig::data_buffer`] records, scores them, and hands their
//!   results downstream together: the stage's per-element protocol is paid
//!   once per chunk, not once per record, and a chunk never waits to fill up.
//!   The stage holds at most `batch_size + data_buffer` records and results.
//! - A [`ModelMessage::Descriptor`] is loaded by a [`ModelLoader`] on tokio's
//!   blocking pool; the loaded model comes back through the stage's async
//!   callback and is installed between two records (or two batches). A failed
//!   load keeps the current model serving and is recorded in the state (last
//!   error, time). A [`ModelMessage::Built`] model is installed at once.
//! - One current model per dataType, any number of dataTypes. A record whose
//!   dataType has no model yet gets a result with `processed = false` and the
//!   error `not processed: no model for dataType …` — unless the first model
//!   of its dataType is loading: then the record waits for that load (and no
//!   further record is pulled meanwhile). A record the model fails on gets
//!   `processed = false` and the model's error; the stream goes on.
//! - The stage runs on a tokio task of its own, or fused into the task that
//!   polls its results ([`ServingConfig::own_task`]).
//! - Statistics per dataType and a history of replaced models are published as
//!   [`ServingSnapshot`]s through [`ServingState`] (lock-free reads), which the
//!   [`http`](crate::http) module serves.
//! - Restored state: a [`RestoreSeed`] given to [`ServingState::seed_restored`]
//!   before a model stored by a [model store](crate::store) is offered makes
//!   that model's statistics and history continue from the stored ones.
//!
//! ```
//! use std::sync::Arc;
//! use flowstage::prelude::*;
//! use flowstage_model::pb::WineRecord;
//! use flowstage_model::{Model, ModelError, ModelType, FieldDesc, Record, Score, Value};
//! use flowstage_stages::serving::*;
//!
//! #[derive(Debug)]
//! struct Alcohol; // scores a wine by its alcohol
//! impl Model for Alcohol {
//!     fn model_type(&self) -> ModelType { ModelType::Other(100) }
//!     fn inputs(&self) -> &[FieldDesc] { &[] }
//!     fn outputs(&self) -> &[FieldDesc] { &[] }
//!     fn score(&self, r: &Record) -> Result<Score, ModelError> {
//!         let v = r.get("alcohol").and_then(Value::as_f64)
//!             .ok_or_else(|| ModelError::Input("no alcohol".into()))?;
//!         Ok(Score { value: Value::Number(v), outputs: vec![] })
//!     }
//!     fn to_bytes(&self) -> Result<Vec<u8>, ModelError> { Ok(vec![]) }
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let models = Source::single(ModelMessage::from(BuiltModel::new("alc", "", "wine", Arc::new(Alcohol))));
//! let wine = WineRecord { alcohol: 9.5, data_type: "wine".into(), ..Default::default() };
//! // Records only after the model is in place (see ServingState::wait_for in real code).
//! let data = Source::from_iter(vec![wine]);
//! let (results, state) = ServingStage::new(flowstage_model::ModelRegistry::with_defaults())
//!     .build(models, data)?;
//! let results = results.run_with(Sink::collect()).await?;
//! assert_eq!(results.len(), 1);
//! let _ = state.snapshot();
//! # Ok(()) }
//! ```

mod chunks;
mod stage;
mod stats;

pub(crate) use stats::{now_ms, HISTOGRAM_HIGH_NS, HISTOGRAM_LOW_NS, HISTOGRAM_SIGFIG};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flowstage::prelude::*;
use flowstage::stage::GraphStageBuilder;
use flowstage_model::pb::{ModelDescriptor, WineRecord};
use flowstage_model::{
    FieldMapping, LoadOptions, MappedModel, Model, ModelError, ModelRegistry, Record,
};

pub use chunks::ResultStream;
pub use stats::{
    BufferState, DataTypeState, HistoryEntry, LoadFailure, ModelStats, RestoreSeed, RestoredInfo,
    ServingSnapshot, ServingState, Totals, DURATION_BUCKETS_NS,
};

/// A record type the stage can serve: it names its dataType (which model
/// scores it) and converts to a [`Record`] of named values.
pub trait ServingRecord: Send + 'static {
    /// The dataType: the current model of this dataType scores the record.
    fn data_type(&self) -> &str;

    /// The record as named values, for [`Model::score`].
    fn to_record(&self) -> Record;

    /// The record's timestamp, epoch milliseconds (copied to
    /// `ServingResult.record_ts`); 0 when unknown.
    fn record_ts(&self) -> i64 {
        0
    }

    /// Microseconds past [`record_ts`](Self::record_ts), 0–999 (copied to
    /// `ServingResult.record_ts_micros`); 0 by default.
    fn record_ts_micros(&self) -> i32 {
        0
    }

    /// The record's key (copied to `ServingResult.record_key`); empty by default.
    fn record_key(&self) -> Vec<u8> {
        Vec::new()
    }
}

impl ServingRecord for WineRecord {
    fn data_type(&self) -> &str {
        &self.data_type
    }

    fn to_record(&self) -> Record {
        Record::from(self)
    }

    fn record_ts(&self) -> i64 {
        self.ts
    }

    fn record_ts_micros(&self) -> i32 {
        self.ts_micros
    }
}

/// A model already built, offered to the stage without loading.
#[derive(Clone)]
pub struct BuiltModel {
    /// Name (reported in results and statistics).
    pub name: String,
    /// Description.
    pub description: String,
    /// The dataType it scores.
    pub data_type: String,
    /// The model.
    pub model: Arc<dyn Model>,
}

impl BuiltModel {
    /// A built model for `data_type`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        data_type: impl Into<String>,
        model: Arc<dyn Model>,
    ) -> Self {
        BuiltModel {
            name: name.into(),
            description: description.into(),
            data_type: data_type.into(),
            model,
        }
    }
}

impl fmt::Debug for BuiltModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltModel")
            .field("name", &self.name)
            .field("data_type", &self.data_type)
            .field("model_type", &self.model.model_type())
            .finish()
    }
}

/// What the model inlet carries.
#[derive(Debug, Clone)]
pub enum ModelMessage {
    /// A descriptor (by value or by location), loaded off the scoring path by
    /// the stage's [`ModelLoader`].
    Descriptor(ModelDescriptor),
    /// A model already built.
    Built(BuiltModel),
}

impl From<ModelDescriptor> for ModelMessage {
    fn from(d: ModelDescriptor) -> Self {
        ModelMessage::Descriptor(d)
    }
}

impl From<BuiltModel> for ModelMessage {
    fn from(b: BuiltModel) -> Self {
        ModelMessage::Built(b)
    }
}

/// Turns a [`ModelDescriptor`] into a model. Runs on tokio's blocking pool, so
/// it may take long (parsing PMML, optimizing a tract graph).
pub trait ModelLoader: Send + Sync + 'static {
    /// Loads the model `descriptor` carries.
    fn load(&self, descriptor: &ModelDescriptor) -> Result<Box<dyn Model>, ModelError>;
}

impl ModelLoader for ModelRegistry {
    fn load(&self, descriptor: &ModelDescriptor) -> Result<Box<dyn Model>, ModelError> {
        self.from_descriptor(descriptor, &LoadOptions::default())
    }
}

impl<F> ModelLoader for F
where
    F: Fn(&ModelDescriptor) -> Result<Box<dyn Model>, ModelError> + Send + Sync + 'static,
{
    fn load(&self, descriptor: &ModelDescriptor) -> Result<Box<dyn Model>, ModelError> {
        self(descriptor)
    }
}

/// A [`ModelRegistry`] with load options and a field mapping applied to every
/// model it loads (e.g. [`FieldMapping::wine`] so that PMML models named with
/// the UCI column names read [`WineRecord`]s).
#[derive(Debug, Clone)]
pub struct RegistryLoader {
    registry: ModelRegistry,
    options: LoadOptions,
    mapping: Option<FieldMapping>,
}

impl RegistryLoader {
    /// Loads with `registry` and default options, no mapping.
    pub fn new(registry: ModelRegistry) -> Self {
        RegistryLoader {
            registry,
            options: LoadOptions::default(),
            mapping: None,
        }
    }

    /// Uses `options` for every load.
    pub fn with_options(mut self, options: LoadOptions) -> Self {
        self.options = options;
        self
    }

    /// Wraps every loaded model in a [`MappedModel`] with `mapping`.
    pub fn with_mapping(mut self, mapping: FieldMapping) -> Self {
        self.mapping = Some(mapping);
        self
    }
}

impl ModelLoader for RegistryLoader {
    fn load(&self, descriptor: &ModelDescriptor) -> Result<Box<dyn Model>, ModelError> {
        let model = self.registry.from_descriptor(descriptor, &self.options)?;
        Ok(match &self.mapping {
            Some(m) => Box::new(MappedModel::new(model, m.clone())),
            None => model,
        })
    }
}

/// Settings of the serving stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingConfig {
    /// Records scored together through [`Model::score_batch`]; 1 (the default)
    /// scores each record as it arrives. Also the most records the stage holds.
    pub batch_size: usize,
    /// With `batch_size > 1`: a batch is scored when full or this long after its
    /// first record arrived.
    pub batch_timeout: Duration,
    /// Model loads in flight at most; the model inlet is not pulled while this
    /// many loads run (the model inlet's bound).
    pub max_pending_loads: usize,
    /// Replaced models kept in the history per dataType (oldest dropped first).
    pub history_limit: usize,
    /// How often statistics are published while records flow (they are also
    /// published on every swap, failed load, and when the stage stops).
    pub publish_interval: Duration,
    /// The most records taken from the data inlet at once (at least 1): what
    /// the data source has ready, up to this many, is scored in one go and
    /// its results handed downstream together, which spreads the stage's
    /// per-element cost. A model swap takes effect between two such chunks.
    /// 1 takes one record per result asked for.
    pub data_buffer: usize,
    /// Whether the stage runs on a tokio task of its own (the default) or
    /// in the task that polls its results (fused with its downstream, as
    /// Akka fuses stages without an async boundary).
    ///
    /// - On a task of its own, the stage installs loaded models and
    ///   publishes statistics even while nothing downstream asks for a
    ///   result, and scoring overlaps with its downstream's work.
    /// - Fused, a chunk of records is scored and handed on without waking
    ///   another task. Loads still run on tokio's blocking pool, and what
    ///   they bring back (and the statistics ticks) wakes the task polling
    ///   the results; but while that task waits for something else (a full
    ///   producer, say), nothing is installed or published until it polls
    ///   again. It needs a tokio runtime all the same (for the loads).
    ///
    /// The wine server keeps the stage on a task of its own: fused (with or
    /// without its consume thread, with chunks of 64 records or of 1) its
    /// latency at 50,000 records/s was no better, and its p99 worse in most
    /// alternated runs (`docs/pipeline-benchmark.md`, session 21).
    pub own_task: bool,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            batch_size: 1,
            batch_timeout: Duration::from_micros(500),
            max_pending_loads: 4,
            history_limit: 64,
            publish_interval: Duration::from_millis(100),
            data_buffer: 64,
            own_task: true,
        }
    }
}

/// Errors of the serving stage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServingError {
    /// The stage could not be wired (a stream protocol error).
    #[error("cannot build the serving stage: {0}")]
    Build(#[from] StreamError),
    /// An invalid setting.
    #[error("invalid serving config: {0}")]
    Config(&'static str),
}

/// The stream of results of a built [`ServingStage`].
pub type ServingResults = Source<ResultStream, NotUsed>;

/// Builds the model-serving stage. See the [module docs](self).
pub struct ServingStage {
    loader: Arc<dyn ModelLoader>,
    config: ServingConfig,
    state: Option<ServingState>,
}

impl fmt::Debug for ServingStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingStage")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServingStage {
    /// A stage loading descriptors with `loader`, default settings.
    pub fn new(loader: impl ModelLoader) -> Self {
        Self::with_loader(Arc::new(loader))
    }

    /// A stage loading descriptors with a shared `loader`.
    pub fn with_loader(loader: Arc<dyn ModelLoader>) -> Self {
        ServingStage {
            loader,
            config: ServingConfig::default(),
            state: None,
        }
    }

    /// Uses `config`.
    pub fn config(mut self, config: ServingConfig) -> Self {
        self.config = config;
        self
    }

    /// Publishes into `state` (e.g. one an HTTP server already serves) instead
    /// of a new one.
    pub fn state(mut self, state: ServingState) -> Self {
        self.state = Some(state);
        self
    }

    /// Builds the stage over `models` and `data`. It runs (also loading models)
    /// once the returned results are run; it stops when the data ends (after the
    /// last result) or the results are cancelled. The model stream may end at
    /// any time; the current models keep serving.
    pub fn build<R, SM, MM, SD, MD>(
        self,
        models: Source<SM, MM>,
        data: Source<SD, MD>,
    ) -> Result<(ServingResults, ServingState), ServingError>
    where
        R: ServingRecord,
        SM: futures::Stream<Item = Item<ModelMessage>> + Send + 'static,
        SD: futures::Stream<Item = Item<R>> + Send + 'static,
    {
        if self.config.batch_size == 0 {
            return Err(ServingError::Config("batch_size must be at least 1"));
        }
        if self.config.data_buffer == 0 {
            return Err(ServingError::Config("data_buffer must be at least 1"));
        }
        if self.config.max_pending_loads == 0 {
            return Err(ServingError::Config("max_pending_loads must be at least 1"));
        }
        let state = self.state.unwrap_or_default();
        let own_task = self.config.own_task;
        let mut b = GraphStageBuilder::new();
        let models = b.add_inlet(models);
        let record_pool = chunks::Pool::new(self.config.data_buffer);
        let result_pool = chunks::Pool::new(self.config.data_buffer);
        let data = b.add_inlet(Source::from_items(chunks::Chunks::new(
            data.into_stream(),
            record_pool.clone(),
        )));
        let out = b.add_outlet();
        let logic = stage::ServingLogic::new(
            stage::Ports { models, data, out },
            self.loader,
            self.config,
            state.clone(),
            (record_pool, result_pool.clone()),
        );
        let mut outlets = if own_task {
            b.build_active(logic)
        } else {
            b.build(logic)
        };
        let chunks = outlets.source(out)?.into_stream();
        let results = Source::from_items(chunks::ResultStream::new(chunks, result_pool));
        Ok((results, state))
    }
}
