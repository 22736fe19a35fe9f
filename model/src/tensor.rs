//! A tract plan wrapped as a [`Model`]: records become rows of one float input tensor, output
//! tensors become columns of a [`ScoreBatch`] (and per-record [`Score`]s on demand).
//!
//! Speed matters here (one record costs a few microseconds, most of it tract's per-call
//! overhead):
//! * Plans are concretized per batch size: tract picks much better matrix kernels for a known
//!   row count than for a symbolic one (about 4x on the wine MLP). Batches run in chunks of at
//!   most [`MAX_CHUNK`] rows, each through the plan for the next power of two (at least
//!   [`MIN_PLAN_ROWS`]), padded with zero rows whose results are dropped; those plans are
//!   built on first use and kept (at most 10). The plan single records use is built at load
//!   time; the symbolic plan serves when a sized one cannot be built. Rows are therefore
//!   assumed independent, as scoring records one by one does.
//! * Each plan keeps a small pool of tract states, reused from call to call.
//! * Row-wise tails of a graph (softmax, the argmax → class label of a classifier) can be run
//!   natively ([`Tail`]) instead of in tract, which is slow for short rows.
//! * When the whole decluttered graph is a plain dense network (MatMul + bias + Relu/Tanh/
//!   Sigmoid layers with constant weights, see [`crate::dense`]), chunks of at most
//!   [`DENSE_MAX_ROWS`] rows (single records) skip tract and its fixed per-call cost.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use tract_hir::internal::*;

use crate::batch::{Classes, Column, ColumnData, ScoreBatch};
use crate::dense::DenseNet;
use crate::error::ModelError;
use crate::model::{DataKind, FieldDesc, Model, ModelType};
use crate::record::{Record, Value};
use crate::score::Score;

/// Rows per plan run; larger batches run in chunks.
pub(crate) const MAX_CHUNK: usize = 1024;
/// Sized plans: 2^0 ..= 2^10 rows.
const SIZED_PLANS: usize = 11;
/// The smallest sized plan: a single record runs padded to two rows, because tract's
/// one-row plans (matrix-vector products, extra reshapes) cost more per call than its
/// two-row ones (about 20% on the wine MLP).
const MIN_PLAN_ROWS: usize = 2;
/// Chunks of at most this many rows run through the native dense evaluator (when the graph
/// is a plain dense network, see [`crate::dense`]); larger ones through tract.
const DENSE_MAX_ROWS: usize = 8;
/// Tract states kept per plan for reuse.
const POOL_MAX: usize = 16;

/// Row-wise operations applied natively to a fetched `[N, k]` float32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tail {
    /// The tensor as it is.
    None,
    /// Softmax over each row.
    Softmax,
    /// A class label per row: the argmax of the row (after a softmax when set), looked up in
    /// the classes.
    Label(LabelTail),
}

/// See [`Tail::Label`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LabelTail {
    /// Softmax the row before the argmax (ties after rounding are broken as in the graph).
    pub softmax: bool,
    /// Last index among equal maxima (ONNX `select_last_index`), else the first.
    pub last: bool,
    /// The labels indexed by the argmax; `None`: the index itself.
    pub classes: Option<Classes>,
    /// One value per row (rank 1); else a one-element vector per row (rank 2).
    pub scalar: bool,
    /// Integer labels pass through float32.
    pub as_f32: bool,
}

/// How one output is computed and presented.
#[derive(Clone, Debug)]
pub(crate) struct OutputSpec {
    /// The name in the [`Score`].
    pub name: String,
    /// When set, the rows are label → probability maps with these labels (ONNX ZipMap).
    pub map_labels: Option<Vec<String>>,
    /// Index of the tensor among the plan's outputs.
    pub fetch: usize,
    /// What is computed from that tensor.
    pub tail: Tail,
}

impl OutputSpec {
    /// The plan's output `fetch`, as it is.
    pub fn plain(name: String, fetch: usize) -> Self {
        OutputSpec {
            name,
            map_labels: None,
            fetch,
            tail: Tail::None,
        }
    }
}

/// Formats a tract error with its causes.
pub(crate) fn tract_err(e: impl Into<TractError>) -> String {
    format!("{:#}", e.into())
}

/// The most values a row of a model's input may take (64 MiB of float32): records are
/// fields, and a model declaring billions of columns would only make the batch allocation fail.
const MAX_INPUT_WIDTH: usize = 1 << 24;

/// Inputs needed to build a [`TensorModel`] from an inference model.
pub(crate) struct TensorModelSpec {
    pub model_type: ModelType,
    pub columns: Option<Vec<String>>,
    pub outputs: Vec<OutputSpec>,
    pub bytes: Vec<u8>,
}

/// One output as the model presents it (names and labels shared by every batch).
#[derive(Debug)]
struct Out {
    name: Arc<str>,
    map_labels: Option<Arc<[String]>>,
    fetch: usize,
    tail: Tail,
    classes: Option<Arc<Classes>>,
}

/// A runnable plan and a pool of states to run it with.
struct Runner {
    plan: Arc<TypedRunnableModel>,
    states: Mutex<Vec<TypedSimpleState>>,
}

impl Runner {
    fn new(plan: Arc<TypedRunnableModel>) -> Self {
        Runner {
            plan,
            states: Mutex::new(Vec::new()),
        }
    }

    /// Runs the plan on one input. A state that failed (error or panic) is dropped, not
    /// reused.
    fn run(&self, input: TValue) -> Result<TVec<TValue>, ModelError> {
        let pooled = self.states.lock().ok().and_then(|mut p| p.pop());
        let state = match pooled {
            Some(s) => s,
            None => SimpleState::new(&self.plan).map_err(|e| ModelError::Scoring(tract_err(e)))?,
        };
        // A model that loaded must not take a serving thread down: a panic while running it
        // is a scoring error.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut state = state;
            let out = crate::alloc::capped(|| state.run(tvec!(input)));
            (out, state)
        }));
        match ran {
            Ok((Ok(out), state)) => {
                if let Ok(mut pool) = self.states.lock() {
                    if pool.len() < POOL_MAX {
                        pool.push(state);
                    }
                }
                Ok(out)
            }
            Ok((Err(e), _)) => Err(ModelError::Scoring(tract_err(e))),
            Err(_) => Err(ModelError::Scoring(
                "the model panicked while running".into(),
            )),
        }
    }
}

/// The plans of a model: one per power-of-two batch size (built on first use), and the
/// symbolic one.
struct Plans {
    /// Decluttered, batch size symbolic: where sized plans come from.
    typed: TypedModel,
    batch: Symbol,
    sized: [OnceLock<Option<Runner>>; SIZED_PLANS],
    dynamic: Runner,
}

impl Plans {
    fn build(typed: &TypedModel, batch: &Symbol, rows: usize) -> Option<Runner> {
        let subs = HashMap::from([(batch.clone(), TDim::Val(rows as i64))]);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::alloc::capped(|| {
                typed
                    .set_symbols(&subs)
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable())
                    .ok()
            })
        }))
        .ok()
        .flatten()
        .map(Runner::new)
    }

    /// The plan for exactly `rows` rows (a power of two up to [`MAX_CHUNK`]), when it can be
    /// built.
    fn sized(&self, rows: usize) -> Option<&Runner> {
        if !rows.is_power_of_two() {
            return None;
        }
        let slot = self.sized.get(rows.trailing_zeros() as usize)?;
        slot.get_or_init(|| Self::build(&self.typed, &self.batch, rows))
            .as_ref()
    }
}

/// A runnable tensor model.
pub(crate) struct TensorModel {
    model_type: ModelType,
    plans: Plans,
    input_dt: DatumType,
    width: usize,
    columns: Option<Vec<String>>,
    outputs: Vec<Out>,
    inputs_desc: Vec<FieldDesc>,
    outputs_desc: Vec<FieldDesc>,
    bytes: Vec<u8>,
    /// The native evaluator for small batches, when the graph is a plain dense chain.
    dense: Option<DenseNet>,
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
    /// Builds the plans: the model's single input gets the shape `[N, width]` (N symbolic),
    /// the model is typed and decluttered, then optimized for N symbolic and for
    /// [`MIN_PLAN_ROWS`] rows. `model` must already have its inputs and outputs selected.
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
        if let Some(r) = rank.filter(|r| *r != 2) {
            return Err(invalid(format!(
                "input {input_name} must be a matrix [batch, {width}], found rank {r}"
            )));
        }
        if width > MAX_INPUT_WIDTH {
            return Err(invalid(format!(
                "input {input_name} takes {width} values a row, more than flowstage feeds a \
                 model ({MAX_INPUT_WIDTH})"
            )));
        }
        model
            .set_input_fact(
                0,
                InferenceFact::dt_shape(input_dt, tvec![batch.to_dim(), width.to_dim()]),
            )
            .map_err(|e| invalid(tract_err(e)))?;
        let n_fetch = model
            .output_outlets()
            .map_err(|e| invalid(tract_err(e)))?
            .len();
        if spec.outputs.iter().any(|o| o.fetch >= n_fetch) || spec.outputs.is_empty() {
            return Err(invalid(format!(
                "model has {n_fetch} outputs, {} expected",
                spec.outputs.len()
            )));
        }
        let typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| invalid(tract_err(e)))?;
        let dense = if input_dt == DatumType::F32 {
            DenseNet::recognize(&typed)
        } else {
            None
        };
        let optimized = typed
            .clone()
            .into_optimized()
            .map_err(|e| invalid(tract_err(e)))?;
        let fetched = optimized
            .output_outlets()
            .map_err(|e| invalid(tract_err(e)))?
            .to_vec();
        let mut outputs_desc = Vec::with_capacity(spec.outputs.len());
        let mut outputs = Vec::with_capacity(spec.outputs.len());
        for out in spec.outputs {
            let f = optimized
                .outlet_fact(fetched[out.fetch])
                .map_err(|e| invalid(tract_err(e)))?;
            let shape = f
                .shape
                .iter()
                .map(|d| d.to_usize().ok())
                .collect::<Vec<_>>();
            let row_width = shape.get(1).copied().flatten();
            let (kind, shape) = match &out.tail {
                Tail::None => (kind_of(f.datum_type), shape),
                tail => {
                    // Native tails read rows of a float32 matrix of known width.
                    let k = match (f.datum_type, shape.len(), row_width) {
                        (DatumType::F32, 2, Some(k)) if k > 0 => k,
                        _ => {
                            return Err(invalid(format!(
                                "output {}: a {:?} tensor of shape {shape:?} cannot feed a \
                                 native tail",
                                out.name, f.datum_type
                            )))
                        }
                    };
                    match tail {
                        Tail::Label(l) => {
                            if l.classes.as_ref().is_some_and(|c| c.len() < k) {
                                return Err(invalid(format!(
                                    "output {}: {k} scores but fewer class labels",
                                    out.name
                                )));
                            }
                            let kind = match &l.classes {
                                Some(Classes::Strings(_)) => DataKind::Text,
                                _ => DataKind::Int64,
                            };
                            let shape = if l.scalar {
                                vec![None]
                            } else {
                                vec![None, Some(1)]
                            };
                            (kind, shape)
                        }
                        _ => (DataKind::Float32, shape),
                    }
                }
            };
            outputs_desc.push(FieldDesc {
                name: out.name.clone(),
                kind: if out.map_labels.is_some() {
                    DataKind::Map
                } else {
                    kind
                },
                shape: Some(shape),
            });
            let classes = match &out.tail {
                Tail::Label(l) => l.classes.clone().map(Arc::new),
                _ => None,
            };
            outputs.push(Out {
                name: out.name.into(),
                map_labels: out.map_labels.map(Into::into),
                fetch: out.fetch,
                tail: out.tail,
                classes,
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
        let dynamic = Runner::new(
            optimized
                .into_runnable()
                .map_err(|e| invalid(tract_err(e)))?,
        );
        let plans = Plans {
            typed,
            batch,
            sized: Default::default(),
            dynamic,
        };
        // The plan single records use, now, so that the first record does not pay for it.
        let _ = plans.sized(MIN_PLAN_ROWS);
        Ok(TensorModel {
            model_type: spec.model_type,
            plans,
            input_dt,
            width,
            columns: spec.columns,
            outputs,
            inputs_desc,
            outputs_desc,
            bytes: spec.bytes,
            dense,
        })
    }

    /// Writes the record's row into `row` (on error, `row` may hold part of it).
    fn fill_row(&self, record: &Record, row: &mut Vec<f32>) -> Result<(), ModelError> {
        fn not_a_number(name: &str, t: &str) -> ModelError {
            ModelError::Input(format!("field {name:?} is not a number: {t:?}"))
        }
        row.reserve(self.width);
        match &self.columns {
            Some(cols) => {
                for c in cols {
                    let v = record
                        .get(c)
                        .ok_or_else(|| ModelError::Input(format!("record has no field {c:?}")))?;
                    row.push(match v {
                        Value::Number(x) => *x as f32,
                        Value::Missing => f32::NAN,
                        Value::Text(t) => return Err(not_a_number(c, t)),
                    });
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
                    row.push(match v {
                        Value::Number(x) => *x as f32,
                        Value::Missing => f32::NAN,
                        Value::Text(t) => return Err(not_a_number(n, t)),
                    });
                }
            }
        }
        Ok(())
    }

    /// Empty columns for `rows` rows.
    fn new_columns(&self, rows: usize) -> Vec<Column> {
        self.outputs
            .iter()
            .map(|o| Column {
                name: o.name.clone(),
                width: 0,
                scalar: false,
                data: match (&o.map_labels, &o.tail, &o.classes) {
                    (Some(labels), Tail::None | Tail::Softmax, _) => ColumnData::Map {
                        labels: labels.clone(),
                        values: Vec::with_capacity(rows * labels.len()),
                    },
                    (_, Tail::Label(l), Some(classes)) if l.scalar => ColumnData::Labels {
                        classes: classes.clone(),
                        index: Vec::with_capacity(rows),
                        as_f32: l.as_f32,
                    },
                    (_, Tail::Label(_), Some(classes))
                        if matches!(classes.as_ref(), Classes::Strings(_)) =>
                    {
                        ColumnData::Texts(Vec::with_capacity(rows))
                    }
                    _ => ColumnData::Numbers(Vec::new()),
                },
            })
            .collect()
    }

    /// Runs `rows` rows of `data` (row-major, `width` values each), in chunks through the
    /// sized plans; one column per output.
    fn run(&self, rows: usize, data: &[f32]) -> Result<Vec<Column>, ModelError> {
        let scoring = |e: TractError| ModelError::Scoring(tract_err(e));
        let w = self.width;
        let mut columns = self.new_columns(rows);
        let mut start = 0usize;
        while start < rows {
            let n = (rows - start).min(MAX_CHUNK);
            let native_chunk = self
                .dense
                .as_ref()
                .filter(|_| n <= DENSE_MAX_ROWS)
                .zip(data.get(start * w..(start + n) * w))
                // NaN inputs (missing values) go through tract, whose NaN handling
                // the native activations do not reproduce.
                .filter(|(_, chunk)| !chunk.iter().any(|v| v.is_nan()));
            if let Some((dense, chunk)) = native_chunk {
                let mut buf = Vec::with_capacity(n * dense.output_width());
                dense.run(n, chunk, &mut buf);
                let t = Tensor::from_shape(&[n, dense.output_width()], &buf).map_err(scoring)?;
                self.emit(&[t.into_tvalue()], n, n, &mut columns)?;
                start += n;
                continue;
            }
            let size = n.next_power_of_two().max(MIN_PLAN_ROWS);
            let (runner, padded) = match self.plans.sized(size) {
                Some(r) => (r, size),
                None => (&self.plans.dynamic, n),
            };
            let chunk = data
                .get(start * w..(start + n) * w)
                .ok_or_else(|| ModelError::Scoring("input shorter than its rows".into()))?;
            let input = if padded == n {
                Tensor::from_shape(&[n, w], chunk).map_err(scoring)?
            } else {
                let mut buf = chunk.to_vec();
                buf.resize(padded * w, 0.0);
                Tensor::from_shape(&[padded, w], &buf).map_err(scoring)?
            };
            let input = if self.input_dt == DatumType::F32 {
                input
            } else {
                input
                    .cast_to_dt(self.input_dt)
                    .map_err(scoring)?
                    .into_owned()
            };
            let fetched = runner.run(input.into_tvalue())?;
            self.emit(&fetched, n, padded, &mut columns)?;
            start += n;
        }
        Ok(columns)
    }

    /// Appends the first `n` rows of the fetched tensors (`padded` rows each) to `columns`,
    /// through the outputs' native tails.
    fn emit(
        &self,
        fetched: &[TValue],
        n: usize,
        padded: usize,
        columns: &mut [Column],
    ) -> Result<(), ModelError> {
        let scoring = |e: TractError| ModelError::Scoring(tract_err(e));
        // Softmaxed rows of a fetched tensor, computed once for the outputs that need them.
        let mut softmaxed: Option<(usize, Vec<f32>)> = None;
        for (out, column) in self.outputs.iter().zip(columns.iter_mut()) {
            let t = fetched
                .get(out.fetch)
                .ok_or_else(|| ModelError::Scoring(format!("output {}: not computed", out.name)))?;
            if t.shape().first() != Some(&padded) {
                return Err(ModelError::Scoring(format!(
                    "output {}: shape {:?} does not start with the batch size {padded}",
                    out.name,
                    t.shape()
                )));
            }
            let soft = match &out.tail {
                Tail::Softmax | Tail::Label(LabelTail { softmax: true, .. }) => {
                    if softmaxed.as_ref().is_none_or(|(f, _)| *f != out.fetch) {
                        let mut buf = softmaxed.take().map(|(_, b)| b).unwrap_or_default();
                        let width: usize = t.shape().iter().skip(1).product();
                        let view = t.try_as_plain_ram().map_err(scoring)?;
                        let src = view.as_slice::<f32>().map_err(scoring)?;
                        let src = src.get(..n * width).ok_or_else(|| {
                            ModelError::Scoring(format!("output {}: too few rows", out.name))
                        })?;
                        softmax_rows(src, width.max(1), &mut buf);
                        softmaxed = Some((out.fetch, buf));
                    }
                    softmaxed.as_ref().map(|(_, b)| b.as_slice())
                }
                _ => None,
            };
            append_rows(out, t, n, column, soft)?;
        }
        Ok(())
    }

    /// Test support: the largest difference (absolute, relative above 1) between the native
    /// dense evaluator and tract's plan on `rows` rows of `data`, or `None` when the graph is not a dense chain.
    #[cfg(test)]
    pub(crate) fn dense_vs_tract(&self, rows: usize, data: &[f32]) -> Option<f32> {
        let dense = self.dense.as_ref()?;
        let mut native = Vec::new();
        dense.run(rows, data, &mut native);
        let input = Tensor::from_shape(&[rows, self.width], data).ok()?;
        let fetched = self.plans.dynamic.run(input.into_tvalue()).ok()?;
        let t = fetched.first()?;
        let view = t.try_as_plain_ram().ok()?;
        let tract = view.as_slice::<f32>().ok()?;
        assert_eq!(tract.len(), native.len());
        Some(
            native
                .iter()
                .zip(tract)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0.0, f32::max),
        )
    }

    /// Scores records into a columnar batch: rows that cannot be read fail alone, the others
    /// run together.
    fn columnar(&self, records: &[Record]) -> ScoreBatch {
        let mut data = Vec::new();
        let wanted = records.len().saturating_mul(self.width);
        if let Err(e) = data.try_reserve_exact(wanted) {
            let msg = format!(
                "{} rows of {} values do not fit in memory ({e}); score smaller batches",
                records.len(),
                self.width
            );
            return all_failed(records.len(), Vec::new(), &msg);
        }
        let mut failed: Vec<(usize, ModelError)> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let start = data.len();
            if let Err(e) = self.fill_row(r, &mut data) {
                data.truncate(start);
                failed.push((i, e));
            }
        }
        let good = records.len() - failed.len();
        if good == 0 {
            return ScoreBatch::from_columns(records.len(), vec![], failed);
        }
        match self.run(good, &data) {
            Ok(columns) => ScoreBatch::from_columns(records.len(), columns, failed),
            Err(e) => all_failed(records.len(), failed, &e.to_string()),
        }
    }
}

/// A batch of `n` rows where every row failed: those of `failed` (in row order) with their own
/// error, the others with `msg`.
fn all_failed(n: usize, failed: Vec<(usize, ModelError)>, msg: &str) -> ScoreBatch {
    let mut failed = failed.into_iter().peekable();
    let all = (0..n)
        .map(|i| match failed.next_if(|(j, _)| *j == i) {
            Some(f) => f,
            None => (i, ModelError::Scoring(msg.to_string())),
        })
        .collect();
    ScoreBatch::from_columns(n, vec![], all)
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

/// `exp(x)` for `x <= 0` (NaN stays NaN), within 2 ulp of `f32::exp`: Cephes' expf
/// polynomial, branch-free so that loops over it vectorize (libm's `expf` is a call per
/// element and dominated softmax). The fallback when tract has no exp kernel for the host.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let xc = if x < -87.0 { -87.0 } else { x };
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The integer n, read from the low bits of `shifted` (a float → int cast would not
    // vectorize).
    let ni = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // n is in [-126, 0]: 2^n is a normal float.
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

/// Softmax of each `width`-long row of `src` into `dst` (float32, max subtracted first, as
/// onnxruntime and tract compute it).
fn softmax_rows(src: &[f32], width: usize, dst: &mut Vec<f32>) {
    dst.clear();
    dst.reserve(src.len());
    for row in src.chunks_exact(width) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        dst.extend(row.iter().map(|&x| x - max));
    }
    // The whole buffer at once through tract's vectorized exp kernel (the one its softmax
    // uses), else the portable loop.
    type ExpSum = Box<dyn tract_linalg::reduce::MapReduce<f32, f32>>;
    static EXP_SUM: OnceLock<Option<ExpSum>> = OnceLock::new();
    let vectorized = EXP_SUM
        .get_or_init(|| tract_linalg::routines::Func::Softmax2.map_reduce_f32().ok())
        .as_ref()
        .is_some_and(|k| k.run_with_params(dst, 0.0).is_ok());
    if !vectorized {
        for v in dst.iter_mut() {
            *v = exp_nonpositive(*v);
        }
    }
    for row in dst.chunks_exact_mut(width) {
        let sum: f32 = row.iter().sum();
        let inv = 1.0 / sum;
        for v in row {
            *v *= inv;
        }
    }
}

/// The argmax as tract and onnxruntime compute it: NaN never wins, the first (or last)
/// of equal maxima, index 0 when nothing beats `f32::MIN`.
fn argmax_f32(row: &[f32], last: bool) -> usize {
    let mut best = (0usize, f32::MIN);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 || (last && v == best.1) {
            best = (i, v);
        }
    }
    best.0
}

/// Appends the first `rows` rows of the fetched tensor `t` to `column`, computing `out`'s
/// tail.
fn append_rows(
    out: &Out,
    t: &Tensor,
    rows: usize,
    column: &mut Column,
    softmaxed: Option<&[f32]>,
) -> Result<(), ModelError> {
    let bad = |why: String| ModelError::Scoring(format!("output {}: {why}", out.name));
    let shape = t.shape();
    if shape.is_empty() || shape[0] < rows {
        return Err(bad(format!(
            "shape {shape:?} does not start with the batch size {rows}"
        )));
    }
    let per_row: usize = shape[1..].iter().product();
    column.scalar = shape.len() == 1;
    column.width = per_row;
    let view = t.try_as_plain_ram().map_err(|e| bad(tract_err(e)))?;
    if let Tail::Label(l) = &out.tail {
        let values = match softmaxed {
            Some(s) if l.softmax => s,
            _ => view.as_slice::<f32>().map_err(|e| bad(tract_err(e)))?,
        };
        column.scalar = l.scalar;
        column.width = 1;
        for row in values.chunks_exact(per_row.max(1)).take(rows) {
            let i = argmax_f32(row, l.last);
            match &mut column.data {
                ColumnData::Labels { index, .. } => index.push(i as u32),
                ColumnData::Numbers(v) => v.push(match out.classes.as_deref() {
                    Some(Classes::Ints(c)) if l.as_f32 => f64::from(c[i] as f32),
                    Some(Classes::Ints(c)) => c[i] as f64,
                    _ => i as f64,
                }),
                ColumnData::Texts(v) => match out.classes.as_deref() {
                    Some(Classes::Strings(c)) => v.push(c[i].clone()),
                    _ => v.push(i.to_string()),
                },
                ColumnData::Map { .. } => return Err(bad("a label cannot be a map".into())),
            }
        }
        return Ok(());
    }
    if t.datum_type() == DatumType::String {
        let strings = view.as_slice::<String>().map_err(|e| bad(tract_err(e)))?;
        let data = match &mut column.data {
            ColumnData::Texts(v) => v,
            d => {
                *d = ColumnData::Texts(Vec::with_capacity(rows * per_row));
                match d {
                    ColumnData::Texts(v) => v,
                    _ => return Err(bad("internal: not a text column".into())),
                }
            }
        };
        data.extend_from_slice(&strings[..rows * per_row]);
        return Ok(());
    }
    let values: &mut Vec<f64> = match &mut column.data {
        ColumnData::Numbers(v) => v,
        ColumnData::Map { labels, values } => {
            if labels.len() != per_row {
                return Err(bad(format!(
                    "{} labels for {per_row} probabilities",
                    labels.len()
                )));
            }
            values
        }
        _ => return Err(bad("internal: not a numeric column".into())),
    };
    values.reserve(rows * per_row);
    let n = rows * per_row;
    match t.datum_type() {
        DatumType::F32 => {
            let src = view.as_slice::<f32>().map_err(|e| bad(tract_err(e)))?;
            let src = &src[..n];
            if out.tail == Tail::Softmax {
                let soft = softmaxed.ok_or_else(|| bad("internal: no softmax".into()))?;
                values.extend(soft[..n].iter().map(|&x| f64::from(x)));
            } else {
                values.extend(src.iter().map(|&x| f64::from(x)));
            }
        }
        DatumType::F64 => {
            values.extend_from_slice(&view.as_slice::<f64>().map_err(|e| bad(tract_err(e)))?[..n]);
        }
        DatumType::I64 => {
            let src = view.as_slice::<i64>().map_err(|e| bad(tract_err(e)))?;
            values.extend(src[..n].iter().map(|&x| x as f64));
        }
        _ => {
            let as_f64 = t.cast_to::<f64>().map_err(|e| bad(tract_err(e)))?;
            let view = as_f64.try_as_plain_ram().map_err(|e| bad(tract_err(e)))?;
            let src = view.as_slice::<f64>().map_err(|e| bad(tract_err(e)))?;
            values.extend_from_slice(&src[..n]);
        }
    }
    Ok(())
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
        let columns = self.run(1, &row)?;
        ScoreBatch::from_columns(1, columns, vec![])
            .into_scores()
            .pop()
            .unwrap_or_else(|| Err(ModelError::Scoring("model returned no rows".into())))
    }

    fn score_batch(&self, records: &[Record]) -> Vec<Result<Score, ModelError>> {
        self.columnar(records).into_scores()
    }

    fn score_columnar(&self, records: &[Record]) -> ScoreBatch {
        self.columnar(records)
    }

    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(self.bytes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        let mut x = 0f32;
        while x > -90.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            if want > 1e-37 {
                worst = worst.max(((got - want) / want).abs());
            } else {
                assert!(got <= 1e-37, "{x}: {got}");
            }
            x -= 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert!(exp_nonpositive(f32::NAN).is_nan());
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn softmax_and_argmax_rows() {
        let mut out = vec![];
        softmax_rows(&[1.0, 2.0, 3.0, 0.0, 0.0, f32::NAN], 3, &mut out);
        let e: Vec<f32> = [1f32, 2.0, 3.0].iter().map(|x| (x - 3.0).exp()).collect();
        let sum: f32 = e.iter().sum();
        for (g, w) in out[..3].iter().zip(&e) {
            assert!((g - w / sum).abs() < 1e-7, "{out:?}");
        }
        assert!(out[3..].iter().all(|v| v.is_nan()));
        assert_eq!(argmax_f32(&[1.0, 3.0, 3.0], false), 1);
        assert_eq!(argmax_f32(&[1.0, 3.0, 3.0], true), 2);
        assert_eq!(argmax_f32(&[f32::NAN, 1.0], false), 1);
        assert_eq!(argmax_f32(&[f32::NEG_INFINITY; 2], false), 0);
    }
}
