//! A tract plan wrapped as a [`Model`]: records become rows of one float input tensor, output
//! tensors are split back into per-record values.

use std::fmt;
use std::sync::Arc;

use tract_hir::internal::*;

use crate::error::ModelError;
use crate::model::{DataKind, FieldDesc, Model, ModelType};
use crate::record::{Record, Value};
use crate::score::{argmax, OutputValue, Score};

/// How one output tensor is presented.
#[derive(Clone, Debug)]
pub(crate) struct OutputSpec {
    /// The name in the [`Score`].
    pub name: String,
    /// When set, the rows are label → probability maps with these labels (ONNX ZipMap).
    pub map_labels: Option<Vec<String>>,
}

/// Formats a tract error with its causes.
pub(crate) fn tract_err(e: impl Into<TractError>) -> String {
    format!("{:#}", e.into())
}

/// Inputs needed to build a [`TensorModel`] from an inference model.
pub(crate) struct TensorModelSpec {
    pub model_type: ModelType,
    pub columns: Option<Vec<String>>,
    pub outputs: Vec<OutputSpec>,
    pub bytes: Vec<u8>,
}

/// A runnable tensor model.
pub(crate) struct TensorModel {
    model_type: ModelType,
    plan: Arc<TypedRunnableModel>,
    single: Option<Arc<TypedRunnableModel>>,
    input_dt: DatumType,
    width: usize,
    columns: Option<Vec<String>>,
    outputs: Vec<OutputSpec>,
    inputs_desc: Vec<FieldDesc>,
    outputs_desc: Vec<FieldDesc>,
    bytes: Vec<u8>,
}

impl fmt::Debug for TensorModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorModel")
            .field("model_type", &self.model_type)
            .field("inputs", &self.inputs_desc)
            .field("outputs", &self.outputs_desc)
            .finish()
    }
}

fn kind_of(dt: DatumType) -> DataKind {
    match dt {
        DatumType::F32 => DataKind::Float32,
        DatumType::F64 => DataKind::Float64,
        DatumType::Bool => DataKind::Bool,
        DatumType::String => DataKind::Text,
        DatumType::TDim => DataKind::Int64,
        dt if dt.is_integer() => DataKind::Int64,
        dt => DataKind::Other(format!("{dt:?}")),
    }
}

impl TensorModel {
    /// Builds the plan: the model's single input gets the shape `[N, width]` (N symbolic), the
    /// model is typed and optimized. `model` must already have its inputs and outputs selected.
    pub fn new(mut model: InferenceModel, spec: TensorModelSpec) -> Result<Self, ModelError> {
        let invalid = |reason: String| ModelError::invalid(spec.model_type, reason);
        let inputs = model
            .input_outlets()
            .map_err(|e| invalid(tract_err(e)))?
            .to_vec();
        if inputs.len() != 1 {
            return Err(invalid(format!(
                "expected exactly one input tensor, found {}",
                inputs.len()
            )));
        }
        let input_name = model.node(inputs[0].node).name.clone();
        let fact = model
            .input_fact(0)
            .map_err(|e| invalid(tract_err(e)))?
            .clone();
        let input_dt = fact.datum_type.concretize().unwrap_or(DatumType::F32);
        if !(input_dt.is_float() || input_dt.is_integer()) {
            return Err(invalid(format!(
                "input {input_name} has type {input_dt:?}; only numeric inputs are supported"
            )));
        }
        let batch = model.symbols.sym("N");
        let mut rank = fact.shape.rank().concretize();
        let mut last = last_dim(&fact);
        if last.is_none() && matches!(rank, None | Some(2)) {
            // The placeholder does not say its width (optimized graphs drop the shape): try the
            // dimensions of the constants its consumers combine it with (e.g. a MatMul's
            // weights), keeping the first that tract's analyser accepts.
            if let Some(w) = infer_width(&model, inputs[0], input_dt, &batch) {
                last = Some(w);
                rank = Some(2);
            }
        }
        let width = match (last, &spec.columns) {
            (Some(w), Some(c)) if w != c.len() => {
                return Err(invalid(format!(
                    "input {input_name} has {w} columns but {} column names were given",
                    c.len()
                )))
            }
            (Some(w), _) => w,
            (None, Some(c)) => c.len(),
            (None, None) => {
                return Err(invalid(format!(
                    "the width of input {input_name} is unknown; give the column names"
                )))
            }
        };
        if matches!(rank, Some(r) if r != 2) {
            return Err(invalid(format!(
                "input {input_name} must be a matrix [batch, {width}], found rank {rank:?}"
            )));
        }
        // A plan specialised for one row (cheaper per call than the symbolic one); when it
        // cannot be built, single records go through the batch plan.
        let single = {
            let mut one = model.clone();
            one.set_input_fact(
                0,
                InferenceFact::dt_shape(input_dt, tvec![1.to_dim(), width.to_dim()]),
            )
            .and_then(|_| one.into_optimized())
            .and_then(|t| t.into_runnable())
            .ok()
        };
        model
            .set_input_fact(
                0,
                InferenceFact::dt_shape(input_dt, tvec![batch.to_dim(), width.to_dim()]),
            )
            .map_err(|e| invalid(tract_err(e)))?;
        let n_outputs = model
            .output_outlets()
            .map_err(|e| invalid(tract_err(e)))?
            .len();
        if n_outputs != spec.outputs.len() {
            return Err(invalid(format!(
                "model has {n_outputs} outputs, {} expected",
                spec.outputs.len()
            )));
        }
        let typed = model.into_optimized().map_err(|e| invalid(tract_err(e)))?;
        let mut outputs_desc = Vec::with_capacity(spec.outputs.len());
        for (ix, out) in spec.outputs.iter().enumerate() {
            let outlet = typed.output_outlets().map_err(|e| invalid(tract_err(e)))?[ix];
            let f = typed
                .outlet_fact(outlet)
                .map_err(|e| invalid(tract_err(e)))?;
            let shape = f
                .shape
                .iter()
                .map(|d| d.to_usize().ok())
                .collect::<Vec<_>>();
            outputs_desc.push(FieldDesc {
                name: out.name.clone(),
                kind: if out.map_labels.is_some() {
                    DataKind::Map
                } else {
                    kind_of(f.datum_type)
                },
                shape: Some(shape),
            });
        }
        let mut inputs_desc = vec![FieldDesc {
            name: input_name,
            kind: kind_of(input_dt),
            shape: Some(vec![None, Some(width)]),
        }];
        if let Some(cols) = &spec.columns {
            inputs_desc.extend(cols.iter().map(|c| FieldDesc {
                name: c.clone(),
                kind: DataKind::Float32,
                shape: None,
            }));
        }
        let plan = typed.into_runnable().map_err(|e| invalid(tract_err(e)))?;
        Ok(TensorModel {
            model_type: spec.model_type,
            plan,
            single,
            input_dt,
            width,
            columns: spec.columns,
            outputs: spec.outputs,
            inputs_desc,
            outputs_desc,
            bytes: spec.bytes,
        })
    }

    /// Writes the record's row into `row`.
    fn fill_row(&self, record: &Record, row: &mut Vec<f32>) -> Result<(), ModelError> {
        let number = |name: &str, v: &Value| -> Result<f32, ModelError> {
            match v {
                Value::Number(x) => Ok(*x as f32),
                Value::Missing => Ok(f32::NAN),
                Value::Text(t) => Err(ModelError::Input(format!(
                    "field {name:?} is not a number: {t:?}"
                ))),
            }
        };
        match &self.columns {
            Some(cols) => {
                for c in cols {
                    let v = record
                        .get(c)
                        .ok_or_else(|| ModelError::Input(format!("record has no field {c:?}")))?;
                    row.push(number(c, v)?);
                }
            }
            None => {
                if record.len() != self.width {
                    return Err(ModelError::Input(format!(
                        "record has {} fields, the model takes {}",
                        record.len(),
                        self.width
                    )));
                }
                for (n, v) in record.iter() {
                    row.push(number(n, v)?);
                }
            }
        }
        Ok(())
    }

    /// Runs the plan on `rows` rows of `data`, returning one score per row.
    fn run(&self, rows: usize, data: &[f32]) -> Result<Vec<Score>, ModelError> {
        let scoring = |e: TractError| ModelError::Scoring(tract_err(e));
        let input = Tensor::from_shape(&[rows, self.width], data).map_err(scoring)?;
        let input = if self.input_dt == DatumType::F32 {
            input
        } else {
            input
                .cast_to_dt(self.input_dt)
                .map_err(scoring)?
                .into_owned()
        };
        // A model that loaded must not take a serving thread down: a panic while running it
        // is a scoring error.
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let plan = match &self.single {
                Some(single) if rows == 1 => single,
                _ => &self.plan,
            };
            plan.run(tvec!(input.into_tvalue()))
        }))
        .map_err(|_| ModelError::Scoring("the model panicked while running".into()))?
        .map_err(scoring)?;
        let mut per_output: Vec<Vec<OutputValue>> = Vec::with_capacity(outputs.len());
        for (spec, t) in self.outputs.iter().zip(outputs.iter()) {
            per_output.push(split_rows(spec, t, rows)?);
        }
        let mut scores: Vec<Score> = (0..rows)
            .map(|_| Score {
                value: Value::Missing,
                outputs: Vec::with_capacity(self.outputs.len()),
            })
            .collect();
        for (spec, values) in self.outputs.iter().zip(per_output) {
            for (score, v) in scores.iter_mut().zip(values) {
                score.outputs.push((spec.name.clone(), v));
            }
        }
        for s in &mut scores {
            s.value = s
                .outputs
                .first()
                .map_or(Value::Missing, |(_, v)| headline(v));
        }
        Ok(scores)
    }
}

/// Guesses the width of a rank-2 input from the constant operands of its consumers.
fn infer_width(
    model: &InferenceModel,
    input: OutletId,
    dt: DatumType,
    batch: &Symbol,
) -> Option<usize> {
    let mut analysed = model.clone();
    let _ = analysed.analyse(false);
    let mut candidates: Vec<usize> = vec![];
    for succ in &analysed
        .node(input.node)
        .outputs
        .get(input.slot)?
        .successors
    {
        for other in &analysed.node(succ.node).inputs {
            let value = analysed.outlet_fact(*other).ok()?.value.concretize();
            if let Some(t) = value {
                for d in t.shape() {
                    if *d > 0 && !candidates.contains(d) {
                        candidates.push(*d);
                    }
                }
            }
        }
    }
    candidates.into_iter().find(|w| {
        let mut probe = model.clone();
        probe
            .set_input_fact(
                0,
                InferenceFact::dt_shape(dt, tvec![batch.to_dim(), w.to_dim()]),
            )
            .is_ok()
            && probe.analyse(false).is_ok()
    })
}

/// The last dimension of a fact, when known.
fn last_dim(fact: &InferenceFact) -> Option<usize> {
    let rank = fact.shape.rank().concretize()?;
    if rank < 1 {
        return None;
    }
    fact.shape
        .dim(rank as usize - 1)?
        .concretize()?
        .to_usize()
        .ok()
}

/// The headline value of an output: a scalar as is, a one-element vector's element, a longer
/// vector's argmax index, a map's most probable label.
fn headline(v: &OutputValue) -> Value {
    match v {
        OutputValue::Number(x) => Value::Number(*x),
        OutputValue::Text(t) => Value::Text(t.clone()),
        OutputValue::Numbers(xs) if xs.len() == 1 => Value::Number(xs[0]),
        OutputValue::Numbers(xs) => argmax(xs).map_or(Value::Missing, |i| Value::Number(i as f64)),
        OutputValue::Texts(ts) if ts.len() == 1 => Value::Text(ts[0].clone()),
        OutputValue::Texts(_) | OutputValue::Missing => Value::Missing,
        OutputValue::Map(m) => {
            let ps: Vec<f64> = m.iter().map(|(_, p)| *p).collect();
            argmax(&ps)
                .and_then(|i| m.get(i))
                .map_or(Value::Missing, |(l, _)| Value::Text(l.clone()))
        }
    }
}

/// Splits an output tensor `[rows, ...]` into one value per row.
fn split_rows(spec: &OutputSpec, t: &Tensor, rows: usize) -> Result<Vec<OutputValue>, ModelError> {
    let bad = |why: String| ModelError::Scoring(format!("output {}: {why}", spec.name));
    let shape = t.shape();
    if shape.is_empty() || shape[0] != rows {
        return Err(bad(format!(
            "shape {shape:?} does not start with the batch size {rows}"
        )));
    }
    let per_row: usize = shape[1..].iter().product();
    let scalar = shape.len() == 1;
    if t.datum_type() == DatumType::String {
        let view = t.try_as_plain_ram().map_err(|e| bad(tract_err(e)))?;
        let strings = view.as_slice::<String>().map_err(|e| bad(tract_err(e)))?;
        return Ok(strings
            .chunks(per_row.max(1))
            .take(rows)
            .map(|c| {
                if scalar {
                    OutputValue::Text(c[0].clone())
                } else {
                    OutputValue::Texts(c.to_vec())
                }
            })
            .collect());
    }
    let as_f64 = t.cast_to::<f64>().map_err(|e| bad(tract_err(e)))?;
    let view = as_f64.try_as_plain_ram().map_err(|e| bad(tract_err(e)))?;
    let values = view.as_slice::<f64>().map_err(|e| bad(tract_err(e)))?;
    if per_row == 0 {
        return Ok(vec![OutputValue::Numbers(vec![]); rows]);
    }
    let mut out = Vec::with_capacity(rows);
    for chunk in values.chunks(per_row) {
        out.push(match &spec.map_labels {
            Some(labels) => {
                if labels.len() != chunk.len() {
                    return Err(bad(format!(
                        "{} labels for {} probabilities",
                        labels.len(),
                        chunk.len()
                    )));
                }
                OutputValue::Map(labels.iter().cloned().zip(chunk.iter().copied()).collect())
            }
            None if scalar => OutputValue::Number(chunk[0]),
            None => OutputValue::Numbers(chunk.to_vec()),
        });
    }
    Ok(out)
}

impl Model for TensorModel {
    fn model_type(&self) -> ModelType {
        self.model_type
    }

    fn inputs(&self) -> &[FieldDesc] {
        &self.inputs_desc
    }

    fn outputs(&self) -> &[FieldDesc] {
        &self.outputs_desc
    }

    fn score(&self, record: &Record) -> Result<Score, ModelError> {
        let mut row = Vec::with_capacity(self.width);
        self.fill_row(record, &mut row)?;
        self.run(1, &row)?
            .pop()
            .ok_or_else(|| ModelError::Scoring("model returned no rows".into()))
    }

    fn score_batch(&self, records: &[Record]) -> Vec<Result<Score, ModelError>> {
        let mut data = Vec::with_capacity(records.len() * self.width);
        let mut results: Vec<Option<Result<Score, ModelError>>> = Vec::with_capacity(records.len());
        let mut good = 0usize;
        for r in records {
            let start = data.len();
            match self.fill_row(r, &mut data) {
                Ok(()) => {
                    good += 1;
                    results.push(None);
                }
                Err(e) => {
                    data.truncate(start);
                    results.push(Some(Err(e)));
                }
            }
        }
        if good > 0 {
            match self.run(good, &data) {
                Ok(scores) => {
                    let mut scores = scores.into_iter();
                    for slot in results.iter_mut().filter(|s| s.is_none()) {
                        *slot = Some(scores.next().ok_or_else(|| {
                            ModelError::Scoring("model returned too few rows".into())
                        }));
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for slot in results.iter_mut().filter(|s| s.is_none()) {
                        *slot = Some(Err(ModelError::Scoring(msg.clone())));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ModelError::Scoring("row not scored".into()))))
            .collect()
    }

    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(self.bytes.clone())
    }
}
