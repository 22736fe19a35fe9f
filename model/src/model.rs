//! The [`Model`] trait and its descriptions.

use std::fmt;
use std::sync::Arc;

use crate::batch::ScoreBatch;
use crate::error::ModelError;
use crate::pb::model_descriptor::ModelType as PbModelType;
use crate::record::{FieldMapping, Record};
use crate::score::Score;

/// The kind of a model. The first four are the wire format's `ModelDescriptor.ModelType`;
/// [`ModelType::Other`] carries any other wire value, so users can register factories for
/// formats of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModelType {
    /// TensorFlow frozen GraphDef (wire value 0).
    TensorFlow,
    /// TensorFlow SavedModel (wire value 1).
    TensorFlowSaved,
    /// PMML (wire value 2).
    Pmml,
    /// ONNX (wire value 3).
    Onnx,
    /// Any other wire value.
    Other(i32),
}

impl ModelType {
    /// The type for a wire value.
    pub fn from_wire(value: i32) -> Self {
        match PbModelType::try_from(value) {
            Ok(PbModelType::Tensorflow) => ModelType::TensorFlow,
            Ok(PbModelType::Tensorflowsaved) => ModelType::TensorFlowSaved,
            Ok(PbModelType::Pmml) => ModelType::Pmml,
            Ok(PbModelType::Onnx) => ModelType::Onnx,
            Err(_) => ModelType::Other(value),
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> i32 {
        match self {
            ModelType::TensorFlow => PbModelType::Tensorflow as i32,
            ModelType::TensorFlowSaved => PbModelType::Tensorflowsaved as i32,
            ModelType::Pmml => PbModelType::Pmml as i32,
            ModelType::Onnx => PbModelType::Onnx as i32,
            ModelType::Other(v) => v,
        }
    }

    /// Parses the names used on the command line: `tensorflow`, `tensorflow-saved`, `pmml`,
    /// `onnx` (case-insensitive; `tf`, `saved`, `savedmodel` and `tensorflowsaved` also work).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "tensorflow" | "tf" | "frozen" => Some(ModelType::TensorFlow),
            "tensorflow-saved" | "tensorflowsaved" | "saved" | "savedmodel" | "tf-saved" => {
                Some(ModelType::TensorFlowSaved)
            }
            "pmml" => Some(ModelType::Pmml),
            "onnx" => Some(ModelType::Onnx),
            _ => None,
        }
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelType::TensorFlow => f.write_str("tensorflow"),
            ModelType::TensorFlowSaved => f.write_str("tensorflow-saved"),
            ModelType::Pmml => f.write_str("pmml"),
            ModelType::Onnx => f.write_str("onnx"),
            ModelType::Other(v) => write!(f, "model type {v}"),
        }
    }
}

/// The kind of values an input or output carries.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataKind {
    /// 32-bit floats.
    Float32,
    /// 64-bit floats (PMML doubles).
    Float64,
    /// Integers.
    Int64,
    /// Booleans.
    Bool,
    /// Strings (labels, categorical values).
    Text,
    /// A map from label to probability (ONNX ZipMap).
    Map,
    /// Anything else, by name.
    Other(String),
}

/// Describes one input or output of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldDesc {
    /// Name: a PMML field, a tensor/graph node, an ONNX value name, a column.
    pub name: String,
    /// Value kind.
    pub kind: DataKind,
    /// Tensor shape, `None` in a dimension when it is not fixed (e.g. the batch); `None` overall
    /// for scalar fields (PMML) or unknown shapes.
    pub shape: Option<Vec<Option<usize>>>,
}

/// A loaded model, ready to score records. Implementations release their resources on drop and
/// are shared between threads.
///
/// A score is a [`Score`]: a headline value (the number or label a serving result reports) and
/// every named output (tensor slices, PMML target and output fields, label maps). Tensor models
/// read a record's numeric values in order (or by the column names given when loading); PMML
/// models read them by field name, after a [`FieldMapping`].
pub trait Model: Send + Sync + fmt::Debug {
    /// The model's type.
    fn model_type(&self) -> ModelType;

    /// The model's inputs. Tensor models describe their input tensor, then (when known) one
    /// entry per column.
    fn inputs(&self) -> &[FieldDesc];

    /// The model's outputs, in the order they appear in a [`Score`].
    fn outputs(&self) -> &[FieldDesc];

    /// Scores one record.
    fn score(&self, record: &Record) -> Result<Score, ModelError>;

    /// Scores `record` with its fields renamed by `mapping`: the same result as
    /// `self.score(&mapping.apply(record))`, which is the default. Models that read their
    /// inputs by name override it to look the names up through the mapping rather than build
    /// a renamed record for every call (PMML models do); [`MappedModel`] scores through it.
    fn score_mapped(&self, record: &Record, mapping: &FieldMapping) -> Result<Score, ModelError> {
        self.score(&mapping.apply(record))
    }

    /// Scores many records; one result per record, in order. A record that cannot be scored
    /// gives an error in its own slot without failing the others. The default scores them one
    /// by one; tensor models run them as one batch.
    fn score_batch(&self, records: &[Record]) -> Vec<Result<Score, ModelError>> {
        records.iter().map(|r| self.score(r)).collect()
    }

    /// Scores many records like [`Model::score_batch`] (same results, same order), kept as a
    /// [`ScoreBatch`]: tensor models keep one buffer per output and build a record's values
    /// only when asked, which saves the per-record allocations of a [`Score`]. The default
    /// wraps [`Model::score_batch`].
    fn score_columnar(&self, records: &[Record]) -> ScoreBatch {
        ScoreBatch::from_scores(self.score_batch(records))
    }

    /// Serializes the model so that the factory for [`Model::model_type`] restores it
    /// ([`crate::ModelFactory::restore`]); also usable as `ModelDescriptor.data`.
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError>;
}

impl<M: Model + ?Sized> Model for Box<M> {
    fn model_type(&self) -> ModelType {
        (**self).model_type()
    }
    fn inputs(&self) -> &[FieldDesc] {
        (**self).inputs()
    }
    fn outputs(&self) -> &[FieldDesc] {
        (**self).outputs()
    }
    fn score(&self, record: &Record) -> Result<Score, ModelError> {
        (**self).score(record)
    }
    fn score_mapped(&self, record: &Record, mapping: &FieldMapping) -> Result<Score, ModelError> {
        (**self).score_mapped(record, mapping)
    }
    fn score_batch(&self, records: &[Record]) -> Vec<Result<Score, ModelError>> {
        (**self).score_batch(records)
    }
    fn score_columnar(&self, records: &[Record]) -> ScoreBatch {
        (**self).score_columnar(records)
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        (**self).to_bytes()
    }
}

impl<M: Model + ?Sized> Model for Arc<M> {
    fn model_type(&self) -> ModelType {
        (**self).model_type()
    }
    fn inputs(&self) -> &[FieldDesc] {
        (**self).inputs()
    }
    fn outputs(&self) -> &[FieldDesc] {
        (**self).outputs()
    }
    fn score(&self, record: &Record) -> Result<Score, ModelError> {
        (**self).score(record)
    }
    fn score_mapped(&self, record: &Record, mapping: &FieldMapping) -> Result<Score, ModelError> {
        (**self).score_mapped(record, mapping)
    }
    fn score_batch(&self, records: &[Record]) -> Vec<Result<Score, ModelError>> {
        (**self).score_batch(records)
    }
    fn score_columnar(&self, records: &[Record]) -> ScoreBatch {
        (**self).score_columnar(records)
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        (**self).to_bytes()
    }
}

/// A model whose records are renamed by a [`FieldMapping`] before scoring (e.g. `fixed_acidity`
/// to `"fixed acidity"` for the tutorial's PMML files).
#[derive(Debug)]
pub struct MappedModel<M> {
    inner: M,
    mapping: FieldMapping,
}

impl<M: Model> MappedModel<M> {
    /// Wraps `inner`, renaming record fields with `mapping`.
    pub fn new(inner: M, mapping: FieldMapping) -> Self {
        MappedModel { inner, mapping }
    }

    /// The wrapped model.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The mapping.
    pub fn mapping(&self) -> &FieldMapping {
        &self.mapping
    }
}

impl<M: Model> Model for MappedModel<M> {
    fn model_type(&self) -> ModelType {
        self.inner.model_type()
    }
    fn inputs(&self) -> &[FieldDesc] {
        self.inner.inputs()
    }
    fn outputs(&self) -> &[FieldDesc] {
        self.inner.outputs()
    }
    fn score(&self, record: &Record) -> Result<Score, ModelError> {
        self.inner.score_mapped(record, &self.mapping)
    }
    fn score_batch(&self, records: &[Record]) -> Vec<Result<Score, ModelError>> {
        let mapped: Vec<Record> = records.iter().map(|r| self.mapping.apply(r)).collect();
        self.inner.score_batch(&mapped)
    }
    fn score_columnar(&self, records: &[Record]) -> ScoreBatch {
        let mapped: Vec<Record> = records.iter().map(|r| self.mapping.apply(r)).collect();
        self.inner.score_columnar(&mapped)
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        self.inner.to_bytes()
    }
}
