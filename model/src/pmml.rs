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
use crate::record::{FieldMapping, Record, Value};
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

/// A compiled PMML model. Through a [`FieldMapping`] ([`Model::score_mapped`],
/// as a [`crate::MappedModel`] scores) it reads each input under its mapped name
/// without building a renamed record:
///
/// ```
/// use flowstage_model::pmml::PmmlModel;
/// use flowstage_model::{FieldMapping, Model, Record};
///
/// let pmml = r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
///   <DataDictionary>
///     <DataField name="fixed acidity" optype="continuous" dataType="double"/>
///     <DataField name="quality" optype="continuous" dataType="double"/>
///   </DataDictionary>
///   <RegressionModel functionName="regression">
///     <MiningSchema>
///       <MiningField name="fixed acidity"/>
///       <MiningField name="quality" usageType="target"/>
///     </MiningSchema>
///     <RegressionTable intercept="1">
///       <NumericPredictor name="fixed acidity" coefficient="2"/>
///     </RegressionTable>
///   </RegressionModel>
/// </PMML>"#;
/// let model = PmmlModel::from_bytes(pmml.as_bytes().to_vec())?;
/// let record = Record::new().with("acid", 3.0);
/// let mapping = FieldMapping::new().map("acid", "fixed acidity");
/// let score = model.score_mapped(&record, &mapping)?;
/// assert_eq!(score, model.score(&mapping.apply(&record))?);
/// assert_eq!(score.value.as_f64(), Some(7.0));
/// # Ok::<(), flowstage_model::ModelError>(())
/// ```
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

/// Whether `name` [`normalize`]s to `key`, without building the normalized name.
fn normalized_eq(name: &str, key: &str) -> bool {
    name.chars()
        .filter(|c| *c != ' ' && *c != '_')
        .flat_map(char::to_lowercase)
        .eq(key.chars())
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

    /// Scores `record`, its field names read through `mapping` (which
    /// [`FieldMapping::renames_in_place`] the record) when given.
    fn score_through(
        &self,
        record: &Record,
        mapping: Option<&FieldMapping>,
    ) -> Result<Score, ModelError> {
        let args: Vec<PValue> = (0..self.inputs.len())
            .map(|i| match self.lookup(i, record, mapping) {
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

    /// The value of input `i` in `record`, whose field names are read through
    /// `mapping` when given: the field of the same name, else of the same name
    /// up to case, spaces and underscores. The position found last time is
    /// tried first.
    fn lookup<'r>(
        &self,
        i: usize,
        record: &'r Record,
        mapping: Option<&'r FieldMapping>,
    ) -> Option<&'r Value> {
        let fields = record.fields();
        let name_at = |p: usize| -> &'r str {
            let n = &fields[p].0;
            mapping.map_or(n.as_str(), |m| m.renamed(p, n))
        };
        let name = &self.inputs[i].name;
        let key = &self.keys[i];
        let hint = self.hints[i].load(Ordering::Relaxed);
        if hint < fields.len() {
            let n = name_at(hint);
            if n == name || normalized_eq(n, key) {
                return Some(&fields[hint].1);
            }
        }
        let found = (0..fields.len())
            .find(|&p| name_at(p) == name)
            .or_else(|| (0..fields.len()).find(|&p| normalized_eq(name_at(p), key)))?;
        self.hints[i].store(found, Ordering::Relaxed);
        Some(&fields[found].1)
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
        self.score_through(record, None)
    }

    fn score_mapped(&self, record: &Record, mapping: &FieldMapping) -> Result<Score, ModelError> {
        // Inputs are read by name: through the mapping when it renames the
        // record field by field (no renamed copy per record), else from the
        // renamed copy.
        if mapping.renames_in_place(record) {
            self.score_through(record, Some(mapping))
        } else {
            self.score_through(&mapping.apply(record), None)
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(self.bytes.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// quality = 1·"a b" + 10·"c_d" + 100·"E" (missing inputs replaced by 0.5).
    const SUM: &str = r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <DataDictionary>
    <DataField name="a b" optype="continuous" dataType="double"/>
    <DataField name="c_d" optype="continuous" dataType="double"/>
    <DataField name="E" optype="continuous" dataType="double"/>
    <DataField name="quality" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema>
      <MiningField name="a b" missingValueReplacement="0.5"/>
      <MiningField name="c_d" missingValueReplacement="0.5"/>
      <MiningField name="E" missingValueReplacement="0.5"/>
      <MiningField name="quality" usageType="target"/>
    </MiningSchema>
    <RegressionTable intercept="0">
      <NumericPredictor name="a b" coefficient="1"/>
      <NumericPredictor name="c_d" coefficient="10"/>
      <NumericPredictor name="E" coefficient="100"/>
    </RegressionTable>
  </RegressionModel>
</PMML>"#;

    /// Scoring through a mapping gives what scoring the renamed record gives,
    /// for mappings that rename in place and for those that do not (merged
    /// names, unmapped fields taking a mapped name), with exact and
    /// normalized names, in any field order, one model scoring records of
    /// changing layouts (its remembered positions must not leak between them).
    #[test]
    fn scoring_through_a_mapping_equals_scoring_the_renamed_record() {
        let model = PmmlModel::from_bytes(SUM.as_bytes().to_vec()).unwrap();
        let pool = ["a b", "a_b", "A B", "c_d", "cd", "E", "e", "x", "y"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut in_place, mut copied) = (0, 0);
        for _ in 0..3000 {
            let mut mapping = FieldMapping::new();
            for _ in 0..next(5) {
                mapping = mapping.map(pool[next(pool.len())], pool[next(pool.len())]);
            }
            let mut record = Record::new();
            for _ in 0..next(6) {
                let value = match next(8) {
                    0 => Value::Missing,
                    1 => Value::Text("7".into()),
                    v => Value::Number(v as f64),
                };
                record.insert(pool[next(pool.len())], value);
            }
            if mapping.renames_in_place(&record) {
                in_place += 1;
            } else {
                copied += 1;
            }
            let through = model.score_mapped(&record, &mapping);
            let renamed = model.score(&mapping.apply(&record));
            assert_eq!(
                format!("{through:?}"),
                format!("{renamed:?}"),
                "record {record:?}, mapping {mapping:?}"
            );
        }
        // Both paths were taken, many times.
        assert!(
            in_place > 300 && copied > 300,
            "{in_place} in place, {copied} copied"
        );
    }

    #[test]
    fn normalized_eq_is_normalize_then_compare() {
        for (name, key) in [
            ("fixed_acidity", "fixedacidity"),
            ("Fixed Acidity", "fixedacidity"),
            ("pH", "ph"),
            ("p_h", "ph"),
            ("fixed", "fixedacidity"),
            ("fixedacidityx", "fixedacidity"),
            ("", ""),
            ("_ _", ""),
            ("İ", "i̇"),
        ] {
            assert_eq!(
                normalized_eq(name, key),
                normalize(name) == key,
                "{name} / {key}"
            );
        }
    }
}
