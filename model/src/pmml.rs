//! PMML models through the pure-Rust evaluator of `flowstage-pmml`.
//!
//! Record fields are matched to the PMML's input fields by name: exactly
//! first, then ignoring case, spaces and underscores — so a wine record's
//! `fixed_acidity` feeds the tutorial's `"fixed acidity"` and `p_h` feeds
//! `pH`. A field the record lacks is a missing value, which the model's
//! MiningSchema then treats as it says.
//!
//! Outputs are the target field(s), then every `OutputField`, under the names
//! JPMML-Evaluator uses; the score's headline value is the first target's.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowstage_pmml::{DataType, Evaluator, Pmml, Value as PValue};

use crate::error::ModelError;
use crate::model::{DataKind, FieldDesc, Model, ModelType};
use crate::record::{Record, Value};
use crate::registry::{read_file_limited, LoadOptions, ModelFactory, ModelSource};
use crate::score::{OutputValue, Score};

/// Creates PMML models.
#[derive(Debug, Clone, Copy, Default)]
pub struct PmmlFactory;

impl ModelFactory for PmmlFactory {
    fn create(
        &self,
        source: ModelSource<'_>,
        _options: &LoadOptions,
    ) -> Result<Box<dyn Model>, ModelError> {
        let bytes = match source {
            ModelSource::Bytes(b) => b.to_vec(),
            // The evaluator's document limit, checked before reading.
            ModelSource::Path(p) => {
                read_file_limited(p, flowstage_pmml::LoadOptions::default().max_bytes)?
            }
        };
        Ok(Box::new(PmmlModel::from_bytes(bytes)?))
    }
}

/// A compiled PMML model.
#[derive(Debug)]
pub struct PmmlModel {
    evaluator: Evaluator,
    bytes: Arc<[u8]>,
    inputs: Vec<FieldDesc>,
    /// Normalized input names, in input order.
    keys: Vec<String>,
    /// Where each input was found in the last record (a hint; records of one
    /// type share their field order).
    hints: Vec<AtomicUsize>,
    outputs: Vec<FieldDesc>,
}

fn kind(t: DataType) -> DataKind {
    match t {
        DataType::String => DataKind::Text,
        DataType::Integer => DataKind::Int64,
        DataType::Float => DataKind::Float32,
        DataType::Double => DataKind::Float64,
        DataType::Boolean => DataKind::Bool,
    }
}

fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| *c != ' ' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn invalid(reason: impl Into<String>) -> ModelError {
    ModelError::InvalidModel {
        model_type: ModelType::Pmml,
        reason: reason.into(),
    }
}

impl PmmlModel {
    /// Compiles a PMML document.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ModelError> {
        let evaluator = Pmml::from_bytes(&bytes).map_err(|e| invalid(e.to_string()))?;
        let inputs: Vec<FieldDesc> = evaluator
            .input_fields()
            .iter()
            .map(|f| FieldDesc {
                name: f.name.clone(),
                kind: kind(f.data_type),
                shape: None,
            })
            .collect();
        let keys = inputs.iter().map(|f| normalize(&f.name)).collect();
        let hints = inputs
            .iter()
            .map(|_| AtomicUsize::new(usize::MAX))
            .collect();
        let outputs = evaluator
            .target_fields()
            .iter()
            .chain(evaluator.output_fields())
            .map(|f| FieldDesc {
                name: f.name.clone(),
                kind: kind(f.data_type),
                shape: None,
            })
            .collect();
        Ok(PmmlModel {
            evaluator,
            bytes: bytes.into(),
            inputs,
            keys,
            hints,
            outputs,
        })
    }

    /// The compiled evaluator.
    pub fn evaluator(&self) -> &Evaluator {
        &self.evaluator
    }

    fn lookup<'r>(&self, i: usize, record: &'r Record) -> Option<&'r Value> {
        let name = &self.inputs[i].name;
        let hint = self.hints[i].load(Ordering::Relaxed);
        if let Some((n, v)) = record.iter().nth(hint) {
            if n == name || normalize(n) == self.keys[i] {
                return Some(v);
            }
        }
        let found = record.iter().position(|(n, _)| n == name).or_else(|| {
            record
                .iter()
                .position(|(n, _)| normalize(n) == self.keys[i])
        })?;
        self.hints[i].store(found, Ordering::Relaxed);
        record.iter().nth(found).map(|(_, v)| v)
    }
}

fn to_output(v: &PValue) -> OutputValue {
    match v {
        PValue::Missing => OutputValue::Missing,
        PValue::Double(x) => OutputValue::Number(*x),
        PValue::Float(x) => OutputValue::Number(f64::from(*x)),
        PValue::Integer(i) => OutputValue::Number(*i as f64),
        PValue::String(s) => OutputValue::Text(s.clone()),
        PValue::Boolean(b) => OutputValue::Text(b.to_string()),
    }
}

fn to_value(v: &PValue) -> Value {
    match v {
        PValue::Missing => Value::Missing,
        PValue::Double(x) => Value::Number(*x),
        PValue::Float(x) => Value::Number(f64::from(*x)),
        PValue::Integer(i) => Value::Number(*i as f64),
        PValue::String(s) => Value::Text(s.clone()),
        PValue::Boolean(b) => Value::Text(b.to_string()),
    }
}

impl Model for PmmlModel {
    fn model_type(&self) -> ModelType {
        ModelType::Pmml
    }

    fn inputs(&self) -> &[FieldDesc] {
        &self.inputs
    }

    fn outputs(&self) -> &[FieldDesc] {
        &self.outputs
    }

    fn score(&self, record: &Record) -> Result<Score, ModelError> {
        let args: Vec<PValue> = (0..self.inputs.len())
            .map(|i| match self.lookup(i, record) {
                Some(Value::Number(x)) => PValue::Double(*x),
                Some(Value::Text(s)) => PValue::String(s.clone()),
                Some(Value::Missing) | None => PValue::Missing,
            })
            .collect();
        let out = self
            .evaluator
            .evaluate(&args)
            .map_err(|e| ModelError::Scoring(e.to_string()))?;
        let outputs: Vec<(String, OutputValue)> = out
            .iter()
            .map(|(name, v)| (name.to_string(), to_output(v)))
            .collect();
        let value = out
            .iter()
            .next()
            .map(|(_, v)| to_value(v))
            .unwrap_or(Value::Missing);
        Ok(Score { value, outputs })
    }

    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(self.bytes.to_vec())
    }
}
