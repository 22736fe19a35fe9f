//! Test models and records for the serving tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flowstage_model::pb::ModelDescriptor;
use flowstage_model::{FieldDesc, Model, ModelError, ModelType, Record, Score, Value};
use flowstage_stages::serving::{BuiltModel, ModelMessage, ServingRecord};

/// A record: a sequence number (reported back as `record_ts`), a dataType, and
/// a flag that makes the model fail on it.
#[derive(Debug, Clone)]
pub struct TRec {
    pub seq: u64,
    pub dt: &'static str,
    pub bad: bool,
}

impl TRec {
    pub fn new(seq: u64, dt: &'static str) -> Self {
        TRec {
            seq,
            dt,
            bad: false,
        }
    }
}

impl ServingRecord for TRec {
    fn data_type(&self) -> &str {
        self.dt
    }
    fn to_record(&self) -> Record {
        let r = Record::with_capacity(2).with("x", self.seq as f64);
        if self.bad {
            r.with("bad", "yes")
        } else {
            r
        }
    }
    fn record_ts(&self) -> i64 {
        self.seq as i64
    }
}

/// Scores `x * factor`; fails on records with a `bad` field. Counts batch calls.
#[derive(Debug, Default)]
pub struct Trivial {
    pub factor: f64,
    pub batches: AtomicUsize,
}

impl Trivial {
    pub fn new(factor: f64) -> Self {
        Trivial {
            factor,
            batches: AtomicUsize::new(0),
        }
    }
}

impl Model for Trivial {
    fn model_type(&self) -> ModelType {
        ModelType::Other(100)
    }
    fn inputs(&self) -> &[FieldDesc] {
        &[]
    }
    fn outputs(&self) -> &[FieldDesc] {
        &[]
    }
    fn score(&self, record: &Record) -> Result<Score, ModelError> {
        if record.get("bad").is_some() {
            return Err(ModelError::Input("bad record".into()));
        }
        let x = record
            .get("x")
            .and_then(Value::as_f64)
            .ok_or_else(|| ModelError::Input("no x".into()))?;
        Ok(Score {
            value: Value::Number(x * self.factor),
            outputs: vec![],
        })
    }
    fn score_batch(&self, records: &[Record]) -> Vec<Result<Score, ModelError>> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        records.iter().map(|r| self.score(r)).collect()
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(self.factor.to_le_bytes().to_vec())
    }
}

pub fn built(name: &str, dt: &str, factor: f64) -> ModelMessage {
    ModelMessage::Built(BuiltModel::new(
        name,
        format!("test model {name}"),
        dt,
        Arc::new(Trivial::new(factor)),
    ))
}

/// A descriptor whose `data` is the factor (8 bytes, little endian).
pub fn descriptor(name: &str, dt: &str, factor: f64) -> ModelMessage {
    ModelMessage::Descriptor(ModelDescriptor {
        name: name.into(),
        description: format!("test descriptor {name}"),
        data_type: dt.into(),
        modeltype: 100,
        message_content: Some(flowstage_model::pb::model_descriptor::MessageContent::Data(
            factor.to_le_bytes().to_vec(),
        )),
    })
}

/// Loads [`descriptor`]s; fails for names starting with `broken`.
pub fn test_loader(d: &ModelDescriptor) -> Result<Box<dyn Model>, ModelError> {
    if d.name.starts_with("broken") {
        return Err(ModelError::InvalidModel {
            model_type: ModelType::Other(d.modeltype),
            reason: "deliberately broken".into(),
        });
    }
    let bytes = match &d.message_content {
        Some(flowstage_model::pb::model_descriptor::MessageContent::Data(b)) => b.clone(),
        _ => return Err(ModelError::EmptyDescriptor(d.name.clone())),
    };
    let arr: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ModelError::Input("factor must be 8 bytes".into()))?;
    Ok(Box::new(Trivial::new(f64::from_le_bytes(arr))))
}

/// The headline number of a result.
pub fn value(r: &flowstage_model::pb::ServingResult) -> Option<f64> {
    match r.score {
        Some(flowstage_model::pb::serving_result::Score::Value(v)) => Some(v),
        _ => None,
    }
}
