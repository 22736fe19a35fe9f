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
use std::sync::{Arc, PoisonError, RwLock};

use flowstage_pmml::{DataType, Evaluator, Pmml, Value as PValue};

use crate::error::ModelError;
use crate::model::{DataKind, FieldDesc, Model, ModelType};
use crate::record::{FieldMapping, Name, Record, Value};
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
    /// Where each input is in records of one shape (see [`Binding`]): the
    /// last shape whose names are all `'static`, such as every record made
    /// from a `WineRecord`.
    binding: RwLock<Option<Binding>>,
    outputs: Vec<FieldDesc>,
}

/// The input positions for records of one shape: these `'static` field
/// names in this order, read through the mapping of this id (0: none). A
/// record of the same shape finds its inputs by position, with no name
/// compared: 11 address compares instead of 11 name lookups for a wine record.
#[derive(Debug)]
struct Binding {
    mapping: u64,
    /// Each field's name as [`Name::static_key`](crate::record::Name) gives it.
    names: Vec<(usize, usize)>,
    /// Each input's field position, `None` for an input the shape lacks.
    positions: Vec<Option<usize>>,
}

impl Binding {
    /// Whether `fields`, read through the mapping `mapping`, have this shape.
    #[inline]
    fn fits(&self, fields: &[(Name, Value)], mapping: u64) -> bool {
        self.mapping == mapping
            && self.names.len() == fields.len()
            && self
                .names
                .iter()
                .zip(fields)
                .all(|(k, (n, _))| n.static_key() == Some(*k))
    }
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
            binding: RwLock::new(None),
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
        // The inputs go into a per-thread scratch vector: no allocation per
        // record. (A model scoring on this thread from inside `evaluate` would
        // find it taken and use a vector of its own.)
        let fill = |args: &mut Vec<PValue>| {
            args.clear();
            let fields = record.fields();
            let mapping_id = mapping.map_or(0, FieldMapping::id);
            let binding = self.binding.read().unwrap_or_else(PoisonError::into_inner);
            let args_at = |args: &mut Vec<PValue>, positions: &[Option<usize>]| {
                let at = |p: Option<usize>| p.and_then(|p| fields.get(p)).map(|(_, v)| v);
                args.extend(positions.iter().map(|&p| to_arg(at(p))));
            };
            if let Some(b) = binding.as_ref().filter(|b| b.fits(fields, mapping_id)) {
                return args_at(args, &b.positions);
            }
            drop(binding);
            let positions: Vec<Option<usize>> = (0..self.inputs.len())
                .map(|i| self.position(i, fields, mapping))
                .collect();
            args_at(args, &positions);
            self.bind(fields, mapping_id, positions);
        };
        // A panic of the evaluator (a bug) fails this record only: left to unwind, it would
        // fail the stream, and a restarted server would meet the same record again.
        let guarded = |args: &[PValue]| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.evaluator.evaluate(args)
            }))
            .unwrap_or_else(|_| {
                Err(flowstage_pmml::EvalError::InvalidResult(
                    "the PMML evaluator panicked on this record (a bug of flowstage's)".into(),
                ))
            })
        };
        let evaluated = ARGS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut args) => {
                fill(&mut args);
                let out = guarded(&args);
                args.clear();
                out
            }
            Err(_) => {
                let mut args = Vec::new();
                fill(&mut args);
                guarded(&args)
            }
        });
        let out = evaluated.map_err(|e| ModelError::Scoring(e.to_string()))?;
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

    /// Keeps `positions`, the input positions in `fields` read through the
    /// mapping `mapping_id`, for records of that shape: when all its names
    /// are `'static`.
    fn bind(&self, fields: &[(Name, Value)], mapping_id: u64, positions: Vec<Option<usize>>) {
        let Some(names) = fields.iter().map(|(n, _)| n.static_key()).collect() else {
            return;
        };
        let binding = Binding {
            mapping: mapping_id,
            names,
            positions,
        };
        *self.binding.write().unwrap_or_else(PoisonError::into_inner) = Some(binding);
    }

    /// Whether records of the shape of `fields`, read through the mapping
    /// `mapping_id`, have their input positions kept.
    fn is_bound(&self, fields: &[(Name, Value)], mapping_id: u64) -> bool {
        let binding = self.binding.read().unwrap_or_else(PoisonError::into_inner);
        binding.as_ref().is_some_and(|b| b.fits(fields, mapping_id))
    }

    /// The position of input `i` in `fields`, whose names are read through
    /// `mapping` when given: the field of the same name, else of the same name
    /// up to case, spaces and underscores. The position found last time is
    /// tried first.
    fn position<'r>(
        &self,
        i: usize,
        fields: &'r [(Name, Value)],
        mapping: Option<&'r FieldMapping>,
    ) -> Option<usize> {
        let name_at = |p: usize| -> &'r str {
            let n = &fields[p].0;
            mapping.map_or(n.as_str(), |m| m.renamed(p, n))
        };
        let name = &self.inputs[i].name;
        let key = &self.keys[i];
        let hint = self.hints[i].load(Ordering::Relaxed);
        if hint < fields.len() {
            let n = name_at(hint);
            // A name equal only up to normalization counts when no field has
            // the exact name.
            if n == name
                || (normalized_eq(n, key) && !(0..fields.len()).any(|p| name_at(p) == name))
            {
                return Some(hint);
            }
        }
        let found = (0..fields.len())
            .find(|&p| name_at(p) == name)
            .or_else(|| (0..fields.len()).find(|&p| normalized_eq(name_at(p), key)))?;
        self.hints[i].store(found, Ordering::Relaxed);
        Some(found)
    }
}

/// An evaluator input from a record value (`None`: the record lacks it).
#[inline]
fn to_arg(v: Option<&Value>) -> PValue {
    match v {
        Some(Value::Number(x)) => PValue::Double(*x),
        Some(Value::Text(s)) => PValue::String(s.clone()),
        Some(Value::Missing) | None => PValue::Missing,
    }
}

thread_local! {
    /// [`PmmlModel::score_through`]'s input vector, reused.
    static ARGS: std::cell::RefCell<Vec<PValue>> = const { std::cell::RefCell::new(Vec::new()) };
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
        // A shape bound with this mapping was read through it in place
        // (which depends only on the names and the mapping): no need to
        // check again.
        if self.is_bound(record.fields(), mapping.id()) || mapping.renames_in_place(record) {
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
    /// changing layouts (its remembered positions must not leak between them),
    /// with `'static` names too (whose shapes the model binds: a binding must
    /// not serve a record of another shape or another mapping).
    #[test]
    fn scoring_through_a_mapping_equals_scoring_the_renamed_record() {
        let model = PmmlModel::from_bytes(SUM.as_bytes().to_vec()).unwrap();
        let reference = PmmlModel::from_bytes(SUM.as_bytes().to_vec()).unwrap();
        let pool = ["a b", "a_b", "A B", "c_d", "cd", "E", "e", "x", "y"];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut in_place, mut copied, mut bound) = (0, 0, 0);
        let mut mapping = FieldMapping::new();
        let mut names: Vec<&'static str> = Vec::new();
        for _ in 0..6000 {
            // Often the mapping or the record's names of last time, so that
            // bound shapes come again.
            if next(3) == 0 {
                mapping = FieldMapping::new();
                for _ in 0..next(5) {
                    mapping = mapping.map(pool[next(pool.len())], pool[next(pool.len())]);
                }
            }
            if next(3) == 0 {
                names = (0..next(6)).map(|_| pool[next(pool.len())]).collect();
            }
            let shared = next(4) == 0;
            let mut record = Record::new();
            for &name in &names {
                let value = match next(8) {
                    0 => Value::Missing,
                    1 => Value::Text("7".into()),
                    v => Value::Number(v as f64),
                };
                if shared {
                    record.insert(name, value);
                } else {
                    record.insert_static(name, value);
                }
            }
            if model.is_bound(record.fields(), mapping.id()) {
                bound += 1;
            }
            if mapping.renames_in_place(&record) {
                in_place += 1;
            } else {
                copied += 1;
            }
            let through = model.score_mapped(&record, &mapping);
            // Another model, so that its bindings do not replace this one's.
            let renamed = reference.score(&mapping.apply(&record));
            assert_eq!(
                format!("{through:?}"),
                format!("{renamed:?}"),
                "record {record:?}, mapping {mapping:?}"
            );
        }
        // Every path was taken, many times.
        assert!(
            in_place > 300 && copied > 300 && bound > 300,
            "{in_place} in place, {copied} copied, {bound} bound"
        );
    }

    /// The position remembered from a record that had only a name equal up
    /// to normalization does not win over an exact name in a later record.
    #[test]
    fn an_exact_name_wins_over_a_remembered_normalized_one() {
        let model = PmmlModel::from_bytes(SUM.as_bytes().to_vec()).unwrap();
        let value = |r: &Record| model.score(r).unwrap().value.as_f64();
        // "A_B" stands for "a b".
        let first = Record::new()
            .with("c_d", 0.0)
            .with("E", 0.0)
            .with("A_B", 2.0);
        assert_eq!(value(&first), Some(2.0));
        let second = Record::new()
            .with("a b", 1.0)
            .with("c_d", 0.0)
            .with("A_B", 2.0)
            .with("E", 0.0);
        assert_eq!(value(&second), Some(1.0));
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
