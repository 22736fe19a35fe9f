//! Models as data for flowstage.
//!
//! * [`pb`]: the wire formats (`ModelDescriptor`, `WineRecord`, `ServingResult`,
//!   `SavedModelArchive`), generated from `proto/` with prost at build time.
//! * [`Model`]: one trait to score records, whatever produced the model; batches come back as
//!   per-record [`Score`]s ([`Model::score_batch`]) or as a columnar [`ScoreBatch`]
//!   ([`Model::score_columnar`], no per-record allocations for tensor models).
//! * [`Record`] / [`FieldMapping`]: records as named values, and the mapping from a record type's
//!   field names to a model's input names.
//! * [`ModelRegistry`] / [`ModelFactory`]: model types mapped to factories that create a model from
//!   a [`pb::ModelDescriptor`] (bytes, or a `location` confined to a [`ModelsDir`]) or restore it
//!   from [`Model::to_bytes`]. Users can register their own factories.
//! * Formats through tract (feature-gated): TensorFlow frozen graphs and SavedModels (feature
//!   `tensorflow`), ONNX including the ONNX-ML operators written by skl2onnx (feature `onnx`);
//!   PMML through flowstage's own evaluator, `flowstage-pmml` (feature `pmml`).
//! * [`CappedAllocator`]: a global allocator for binaries that load models they do not trust,
//!   so that a graph asking for a huge tensor fails to load instead of exhausting memory.

#![warn(missing_docs)]

// The columnar representations are built by the tensor formats only.
pub mod alloc;
#[cfg_attr(not(any(feature = "onnx", feature = "tensorflow")), allow(dead_code))]
mod batch;
#[cfg(any(feature = "tensorflow", feature = "onnx"))]
mod dense;
mod error;
mod location;
mod model;
mod record;
mod registry;
mod score;

#[cfg(any(feature = "tensorflow", feature = "onnx"))]
mod tensor;

#[cfg(feature = "onnx")]
pub mod onnx;
#[cfg(feature = "pmml")]
pub mod pmml;
#[cfg(feature = "tensorflow")]
pub mod savedmodel;
#[cfg(feature = "tensorflow")]
pub mod tf;

/// Generated protobuf types.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/flowstage.rs"));

    /// TensorFlow's schema, the minimal subset flowstage needs for SavedModels.
    pub mod tensorflow {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
    }

    /// The time now in epoch milliseconds to the microsecond, as
    /// [`WineRecord::created_ms`] counts it: a record's age is
    /// `now_ms() - record.created_ms()`.
    ///
    /// ```
    /// use flowstage_model::pb::{now_ms, WineRecord};
    /// let r = WineRecord { ts: 1_000, ts_micros: 250, ..Default::default() };
    /// assert!(now_ms() - r.created_ms() > 1.7e12);
    /// ```
    pub fn now_ms() -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }

    /// Epoch milliseconds, with the microseconds past them as a fraction.
    fn fractional_ms(ms: i64, micros: i32) -> f64 {
        ms as f64 + f64::from(micros) / 1e3
    }

    impl WineRecord {
        /// When the record was created, in epoch milliseconds to the
        /// microsecond (`ts` and `ts_micros`; a producer that does not set
        /// `ts_micros` gives whole milliseconds).
        ///
        /// ```
        /// let r = flowstage_model::pb::WineRecord { ts: 1_000, ts_micros: 250, ..Default::default() };
        /// assert_eq!(r.created_ms(), 1_000.25);
        /// ```
        pub fn created_ms(&self) -> f64 {
            fractional_ms(self.ts, self.ts_micros)
        }
    }

    impl ServingResult {
        /// When the scored record was created, in epoch milliseconds to the
        /// microsecond (`record_ts` and `record_ts_micros`), as
        /// [`WineRecord::created_ms`].
        ///
        /// ```
        /// let r = flowstage_model::pb::ServingResult { record_ts: 7, record_ts_micros: 5, ..Default::default() };
        /// assert_eq!(r.record_created_ms(), 7.005);
        /// ```
        pub fn record_created_ms(&self) -> f64 {
            fractional_ms(self.record_ts, self.record_ts_micros)
        }
    }
}

pub use alloc::CappedAllocator;
pub use batch::{MapRef, OutputRef, ScoreBatch};
pub use error::ModelError;
pub use location::ModelsDir;
pub use model::{DataKind, FieldDesc, MappedModel, Model, ModelType};
pub use record::{FieldMapping, Record, Value, WINE_FIELDS};
pub use registry::{detect_type, LoadOptions, ModelFactory, ModelRegistry, ModelSource};
pub use score::{argmax, OutputValue, Score};
