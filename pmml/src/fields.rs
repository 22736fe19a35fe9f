//! Compiled fields ("slots") and the per-record evaluation context.
//!
//! Every field a model can refer to — data fields, derived fields, nested models' treated mining
//! fields, output fields — is resolved at load time to a [`FieldId`], an index into
//! `Evaluator::fields`. At evaluation time a [`Ctx`] holds one lazily-filled value cache per slot,
//! so scoring does no name look-ups.

use crate::error::EvalError;
use crate::expr::Expr;
use crate::value::{DataType, OpType, Value};

/// Index of a compiled field.
pub(crate) type FieldId = usize;

/// A compiled field.
#[derive(Debug)]
pub(crate) struct FieldDef {
    pub name: String,
    pub data_type: DataType,
    pub op_type: OpType,
    pub kind: FieldKind,
}

#[derive(Debug)]
pub(crate) enum FieldKind {
    /// A DataField; `Some(i)` for the i-th input of the top-level model, prepared lazily (on
    /// first use, as JPMML does) by its [`Treatment`]; `None` for a field that is no input.
    Input(Option<usize>),
    /// A DerivedField: computed lazily from its expression, then cast to its data type.
    Derived(Expr),
    /// A nested model's view of an outer field through its own MiningField treatment.
    Treated {
        source: FieldId,
        treatment: Box<Treatment>,
    },
    /// Set during evaluation (output fields, segment results); missing until set.
    External,
}

/// An interval of a DataField or Discretize bin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval {
    pub left: Option<f64>,
    pub right: Option<f64>,
    pub left_closed: bool,
    pub right_closed: bool,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        let l = match self.left {
            None => true,
            Some(l) => {
                if self.left_closed {
                    x >= l
                } else {
                    x > l
                }
            }
        };
        let r = match self.right {
            None => true,
            Some(r) => {
                if self.right_closed {
                    x <= r
                } else {
                    x < r
                }
            }
        };
        l && r
    }
}

/// How an input value is validated and treated (DataField validity + MiningField treatments).
#[derive(Debug, Clone)]
pub(crate) struct Treatment {
    pub data_type: DataType,
    pub op_type: OpType,
    /// Valid values (categorical/ordinal); empty = any value is valid.
    pub valid_values: Vec<Value>,
    pub invalid_values: Vec<Value>,
    pub missing_values: Vec<Value>,
    /// Valid intervals (continuous); empty = any value is valid.
    pub intervals: Vec<Interval>,
    pub missing_replacement: Option<Value>,
    pub missing_is_invalid: bool,
    pub invalid: InvalidTreatment,
    pub outliers: Outliers,
}

#[derive(Debug, Clone)]
pub(crate) enum InvalidTreatment {
    ReturnInvalid,
    AsIs,
    AsMissing,
    AsValue(Value),
}

#[derive(Debug, Clone, Copy)]
#[allow(clippy::enum_variant_names)]
pub(crate) enum Outliers {
    AsIs,
    AsMissing { low: f64, high: f64 },
    AsExtreme { low: f64, high: f64 },
}

impl Treatment {
    pub fn plain(data_type: DataType, op_type: OpType) -> Self {
        Treatment {
            data_type,
            op_type,
            valid_values: Vec::new(),
            invalid_values: Vec::new(),
            missing_values: Vec::new(),
            intervals: Vec::new(),
            missing_replacement: None,
            missing_is_invalid: false,
            invalid: InvalidTreatment::ReturnInvalid,
            outliers: Outliers::AsIs,
        }
    }

    /// `true` when applying this treatment to an already-prepared value changes nothing.
    pub fn is_noop(&self) -> bool {
        self.missing_replacement.is_none()
            && !self.missing_is_invalid
            && matches!(self.outliers, Outliers::AsIs)
            && self.valid_values.is_empty()
            && self.invalid_values.is_empty()
            && self.missing_values.is_empty()
            && self.intervals.is_empty()
    }

    /// `true` when a present (non-missing) number needs nothing but the conversion to the data
    /// type: no valid/invalid/missing value lists, no valid intervals, no outlier treatment.
    /// Such an input can be prepared eagerly — [`Treatment::prepare_number`] — without changing
    /// any result (its preparation cannot fail).
    pub fn passes_numbers(&self) -> bool {
        self.data_type.is_numeric()
            && matches!(self.outliers, Outliers::AsIs)
            && self.valid_values.is_empty()
            && self.invalid_values.is_empty()
            && self.missing_values.is_empty()
            && self.intervals.is_empty()
    }

    /// The prepared value of a raw number for a treatment that [`Treatment::passes_numbers`]:
    /// `None` when the raw value is not a present number of a kind that converts exactly as
    /// [`Treatment::prepare`] would convert it (then the caller prepares it lazily).
    #[inline]
    pub fn prepare_number(&self, raw: &Value) -> Option<Value> {
        match (raw, self.data_type) {
            (Value::Double(x), DataType::Double) if !x.is_nan() => Some(Value::Double(*x)),
            (Value::Double(x), DataType::Float) if !x.is_nan() => Some(Value::Float(*x as f32)),
            (Value::Float(x), DataType::Float) if !x.is_nan() => Some(Value::Float(*x)),
            (Value::Float(x), DataType::Double) if !x.is_nan() => {
                Some(Value::Double(f64::from(*x)))
            }
            (Value::Integer(i), DataType::Integer) => Some(Value::Integer(*i)),
            (Value::Integer(i), DataType::Double) => Some(Value::Double(*i as f64)),
            _ => None,
        }
    }

    fn missing(&self, name: &str) -> Result<Value, EvalError> {
        match &self.missing_replacement {
            Some(v) => Ok(v.clone()),
            None if self.missing_is_invalid => Err(EvalError::MissingValue(name.to_string())),
            None => Ok(Value::Missing),
        }
    }

    /// Prepares a raw value: conversion to the data type, validity, invalid/missing/outlier
    /// treatments, as JPMML's input preparation does.
    pub fn prepare(&self, name: &str, raw: &Value) -> Result<Value, EvalError> {
        if raw.is_missing() {
            return self.missing(name);
        }
        // A NaN number given as a value is a missing value (the API's convention).
        match raw {
            Value::Double(f) if f.is_nan() => return self.missing(name),
            Value::Float(f) if f.is_nan() => return self.missing(name),
            _ => {}
        }
        if self
            .missing_values
            .iter()
            .any(|m| m.equals(raw) || m.to_string() == raw.to_string())
        {
            return self.missing(name);
        }
        let value = match raw.cast(self.data_type) {
            // A numeric "NaN" text is an invalid value (JPMML: "cannot accept invalid value NaN").
            Some(Value::Double(f)) if f.is_nan() => return self.invalid_value(name, raw),
            Some(Value::Float(f)) if f.is_nan() => return self.invalid_value(name, raw),
            Some(v) => v,
            None => return self.invalid_value(name, raw),
        };
        if self.invalid_values.iter().any(|m| m.equals(&value)) {
            return self.invalid_value(name, raw);
        }
        let valid = match self.op_type {
            OpType::Continuous => {
                self.intervals.is_empty()
                    || value
                        .as_f64()
                        .is_some_and(|x| self.intervals.iter().any(|i| i.contains(x)))
                    || self.valid_values.iter().any(|v| v.equals(&value))
            }
            _ => self.valid_values.is_empty() || self.valid_values.iter().any(|v| v.equals(&value)),
        };
        if !valid {
            return self.invalid_value(name, raw);
        }
        if self.op_type == OpType::Continuous {
            if let Some(x) = value.as_f64() {
                match self.outliers {
                    Outliers::AsIs => {}
                    Outliers::AsMissing { low, high } => {
                        if x < low || x > high {
                            return self.missing(name);
                        }
                    }
                    Outliers::AsExtreme { low, high } => {
                        if x < low {
                            return Ok(Value::Double(low)
                                .cast(self.data_type)
                                .unwrap_or(Value::Double(low)));
                        }
                        if x > high {
                            return Ok(Value::Double(high)
                                .cast(self.data_type)
                                .unwrap_or(Value::Double(high)));
                        }
                    }
                }
            }
        }
        Ok(value)
    }

    fn invalid_value(&self, name: &str, raw: &Value) -> Result<Value, EvalError> {
        match &self.invalid {
            InvalidTreatment::ReturnInvalid => Err(EvalError::InvalidValue {
                field: name.to_string(),
                value: raw.to_string(),
            }),
            InvalidTreatment::AsIs => Ok(raw.cast(self.data_type).unwrap_or_else(|| raw.clone())),
            InvalidTreatment::AsMissing => self.missing(name),
            InvalidTreatment::AsValue(v) => Ok(v.clone()),
        }
    }
}

/// One entry of the per-record value cache: the value is current only while `gen` equals the
/// evaluation's generation, so starting a record is one increment instead of clearing the cache.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slot {
    pub gen: u32,
    pub value: Value,
}

/// "Not a directly readable input" in [`Ctx::direct`].
pub(crate) const NOT_DIRECT: u32 = u32::MAX;

/// Per-record evaluation state: a lazily-filled value cache over the compiled fields.
pub(crate) struct Ctx<'e> {
    pub fields: &'e [FieldDef],
    /// The top-level inputs' treatments and raw values.
    pub inputs: &'e [crate::compile::InputDef],
    pub raw: &'e [Value],
    /// Per field: the index of a top-level input of data type double whose preparation is a
    /// plain conversion ([`crate::compile::InputDef::plain`]), read straight from `raw` when it
    /// holds a present double; [`NOT_DIRECT`] otherwise.
    direct: &'e [u32],
    /// The value cache (at least `fields.len()` slots), current where `slot.gen == gen`.
    slots: &'e mut [Slot],
    gen: u32,
    /// Parameter values of the user-defined function being evaluated (a stack of frames).
    pub params: Vec<Value>,
    pub frame: usize,
    /// Reason codes of the last scorecard evaluated, best first.
    pub reason_codes: Vec<String>,
    /// Entity ids of the last nearest-neighbour model evaluated, nearest first.
    pub ranked_entities: Vec<String>,
    /// Current recursion depth of scoring (fields and function applications).
    pub depth: usize,
    /// Current depth of derived fields computed from derived fields.
    pub field_depth: usize,
    /// Function applications evaluated for this record so far (see [`MAX_APPLICATIONS`]).
    pub applications: u32,
}

/// Maximum chain of derived fields computed from one another.
pub(crate) const MAX_FIELD_DEPTH: usize = 64;

/// Maximum total recursion of scoring (derived fields plus nested function applications).
pub(crate) const MAX_EVAL_DEPTH: usize = 256;

/// Maximum function applications (built-in or user-defined) evaluated for one record. Depth is
/// bounded, but functions that call others more than once multiply: 25 levels of `f(x) + f(x)`
/// are 33 million calls, seconds a record. A million is far beyond any real transformation
/// and a fraction of a second.
pub(crate) const MAX_APPLICATIONS: u32 = 1_000_000;

impl<'e> Ctx<'e> {
    /// A context for one record over a value cache of at least `fields.len()` slots, none of
    /// which is current for generation `gen` (see [`crate::Scratch`]).
    pub fn new(
        fields: &'e [FieldDef],
        inputs: &'e [crate::compile::InputDef],
        raw: &'e [Value],
        direct: &'e [u32],
        slots: &'e mut [Slot],
        gen: u32,
    ) -> Self {
        debug_assert!(slots.len() >= fields.len());
        debug_assert_eq!(direct.len(), fields.len());
        Ctx {
            fields,
            inputs,
            raw,
            direct,
            slots,
            gen,
            params: Vec::new(),
            frame: 0,
            reason_codes: Vec::new(),
            ranked_entities: Vec::new(),
            depth: 0,
            field_depth: 0,
            applications: 0,
        }
    }

    /// Sets a field's value for this record.
    #[inline]
    pub fn set(&mut self, id: FieldId, v: Value) {
        self.slots[id] = Slot {
            gen: self.gen,
            value: v,
        };
    }

    /// The cached value of a field, if it was computed (or set) for this record.
    #[inline(always)]
    pub fn cached(&self, id: FieldId) -> Option<&Value> {
        let s = &self.slots[id];
        (s.gen == self.gen).then_some(&s.value)
    }

    /// Moves a field's value for this record out of the cache (`None` if it was never
    /// computed); a later read computes it again.
    pub fn take(&mut self, id: FieldId) -> Option<Value> {
        let gen = self.gen;
        let s = &mut self.slots[id];
        if s.gen != gen {
            return None;
        }
        s.gen = gen.wrapping_sub(1);
        Some(std::mem::take(&mut s.value))
    }

    /// The value of a field (computing and caching derived fields).
    #[inline]
    pub fn get(&mut self, id: FieldId) -> Result<Value, EvalError> {
        if let Some(v) = self.cached(id) {
            return Ok(v.clone());
        }
        if let Some(x) = self.direct_double(id) {
            return Ok(Value::Double(x));
        }
        self.get_slow(id)
    }

    /// A direct input's present double argument (what preparing it gives).
    #[inline(always)]
    fn direct_double(&self, id: FieldId) -> Option<f64> {
        let d = self.direct[id];
        if d != NOT_DIRECT {
            if let Some(Value::Double(x)) = self.raw.get(d as usize) {
                if !x.is_nan() {
                    return Some(*x);
                }
            }
        }
        None
    }

    #[inline(never)]
    fn get_slow(&mut self, id: FieldId) -> Result<Value, EvalError> {
        // Derived fields computed from derived fields recurse; bound it so that no document can
        // overflow the stack at scoring time.
        if self.field_depth >= MAX_FIELD_DEPTH || self.depth >= MAX_EVAL_DEPTH {
            return Err(EvalError::InvalidResult(format!(
                "field {:?}: derived fields depend on each other more than {MAX_FIELD_DEPTH} levels deep (or expressions nest too deeply)",
                self.fields[id].name
            )));
        }
        self.field_depth += 1;
        self.depth += 1;
        let r = self.compute(id);
        self.depth -= 1;
        self.field_depth -= 1;
        r
    }

    /// A field's value as a double when it is at hand without computing anything: a cached
    /// double, or a direct input holding a present double. `None` means "take the general path"
    /// (not "missing").
    #[inline(always)]
    pub fn double_at_hand(&self, id: FieldId) -> Option<f64> {
        // A direct input's cached value (if any) is the same double: read the argument first.
        if let Some(x) = self.direct_double(id) {
            return Some(x);
        }
        let s = &self.slots[id];
        if s.gen == self.gen {
            if let Value::Double(x) = s.value {
                return Some(x);
            }
        }
        None
    }

    fn compute(&mut self, id: FieldId) -> Result<Value, EvalError> {
        let fields = self.fields;
        let def = &fields[id];
        let v = match &def.kind {
            FieldKind::Input(None) => Value::Missing,
            FieldKind::Input(Some(i)) => {
                let raw = self.raw.get(*i).unwrap_or(&Value::Missing);
                match self.inputs.get(*i) {
                    Some(def) => match def.plain.then(|| def.treatment.prepare_number(raw)) {
                        Some(Some(v)) => v,
                        _ => def.treatment.prepare(&fields[def.field].name, raw)?,
                    },
                    None => Value::Missing,
                }
            }
            // An output field that was never computed (e.g. its segment did not fire): JPMML
            // reports the field as undefined.
            FieldKind::External => {
                return Err(EvalError::InvalidResult(format!(
                    "field {:?} is not defined",
                    def.name
                )))
            }
            FieldKind::Derived(expr) => {
                // A derived field's own parameters frame is the caller's: derived fields never
                // see function parameters, so evaluate with an empty frame.
                let saved = self.frame;
                self.frame = self.params.len();
                let r = expr.eval(self);
                self.frame = saved;
                let v = r?;
                v.cast(def.data_type).ok_or_else(|| {
                    EvalError::Type(format!(
                        "derived field {:?}: cannot convert {} to {}",
                        def.name,
                        v.shown(),
                        def.data_type
                    ))
                })?
            }
            FieldKind::Treated { source, treatment } => {
                let raw = self.get(*source)?;
                treatment.prepare(&def.name, &raw)?
            }
        };
        self.set(id, v.clone());
        Ok(v)
    }

    /// The value of a field as a number (`None` when missing).
    #[inline(always)]
    pub fn num(&mut self, id: FieldId) -> Result<Option<f64>, EvalError> {
        match self.double_at_hand(id) {
            Some(x) => Ok(Some(x)),
            None => self.num_slow(id),
        }
    }

    #[inline(never)]
    fn num_slow(&mut self, id: FieldId) -> Result<Option<f64>, EvalError> {
        if let Some(v) = self.cached(id) {
            return num_of(v, &self.fields[id].name);
        }
        let v = self.get(id)?;
        num_of(&v, &self.fields[id].name)
    }
}

#[inline]
fn num_of(v: &Value, name: &str) -> Result<Option<f64>, EvalError> {
    match v {
        Value::Missing => Ok(None),
        Value::String(s) => crate::value::parse_f64(s)
            .map(Some)
            .ok_or_else(|| EvalError::Type(format!("field {name:?}: {s:?} is not a number"))),
        v => Ok(v.as_f64()),
    }
}
