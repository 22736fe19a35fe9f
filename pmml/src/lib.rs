//! A pure-Rust PMML evaluator that aims to agree with JPMML-Evaluator.
//!
//! Parse once, evaluate many: [`Pmml::from_str`] (or [`Pmml::from_bytes`], [`Pmml::from_path`])
//! reads and validates a PMML 3.x–4.4 document and compiles it into an [`Evaluator`]. Loading
//! resolves every field reference to an index and builds compact predicate / tree / coefficient
//! structures; [`Evaluator::evaluate`] does no name look-ups.
//!
//! ```
//! use flowstage_pmml::{Pmml, Value};
//!
//! let pmml = r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
//!   <DataDictionary>
//!     <DataField name="x" optype="continuous" dataType="double"/>
//!     <DataField name="y" optype="continuous" dataType="double"/>
//!   </DataDictionary>
//!   <RegressionModel functionName="regression">
//!     <MiningSchema>
//!       <MiningField name="x"/>
//!       <MiningField name="y" usageType="target"/>
//!     </MiningSchema>
//!     <RegressionTable intercept="1.0">
//!       <NumericPredictor name="x" coefficient="2.0"/>
//!     </RegressionTable>
//!   </RegressionModel>
//! </PMML>"#;
//! let model = Pmml::from_str(pmml)?;
//! assert_eq!(model.input_fields()[0].name, "x");
//! let out = model.evaluate(&[Value::Double(3.0)])?;
//! assert_eq!(out.get("y"), Some(&Value::Double(7.0)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Security: documents with a DOCTYPE are refused (so no DTD, no entity expansion, no external
//! entity is ever fetched); size, depth and node count are capped ([`LoadOptions`]).
//!
//! Unsupported PMML features are reported at load time as [`LoadError::Unsupported`] naming the
//! element/attribute and line — never a silently wrong answer.

mod compile;
mod error;
mod expr;
mod fields;
mod model;
mod models;
mod value;
mod verify;
mod xml;

pub use error::{EvalError, LoadError};
pub use value::{DataType, OpType, Value};

use compile::{Compiler, InputDef, MODEL_ELEMENTS};
use fields::{Ctx, FieldDef};
use model::Model;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use xml::El;

/// The result name of the prediction of a model without a target field (e.g. a clustering
/// model's winning cluster id); JPMML-Evaluator reports it under a null key.
pub const DEFAULT_TARGET: &str = "__default_target__";

thread_local! {
    /// Per-thread value cache reused across evaluations (taken out while in use, so a nested or
    /// re-entrant evaluation simply allocates its own).
    static SCRATCH: std::cell::Cell<Vec<Option<Value>>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Limits applied while loading a document.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Maximum document size in bytes (default 256 MiB).
    pub max_bytes: u64,
    /// Maximum element nesting depth (default 1,000).
    pub max_depth: usize,
    /// Maximum number of XML nodes (default 50,000,000).
    pub max_nodes: u32,
    /// Maximum nesting of expressions, predicates and nested models inside one another
    /// (default 128). Bounds the recursion of loading and scoring, so no document can overflow
    /// the stack.
    pub max_nesting: usize,
    /// Check the model's `ModelVerification` records (if any) after loading: every record is
    /// scored and compared with its expected values (within each field's `precision` /
    /// `zeroThreshold`); a mismatch is [`LoadError::Verification`]. Default `false`.
    pub verify: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_bytes: 256 * 1024 * 1024,
            max_depth: 1_000,
            max_nodes: 50_000_000,
            max_nesting: 128,
            verify: false,
        }
    }
}

/// Entry points that load a PMML document into an [`Evaluator`].
#[derive(Debug, Clone, Copy)]
pub struct Pmml;

impl Pmml {
    /// Loads and compiles a PMML document held in a string.
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str) -> Result<Evaluator, LoadError> {
        Evaluator::load(text, &LoadOptions::default())
    }

    /// Loads and compiles a PMML document from UTF-8 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Evaluator, LoadError> {
        Self::from_bytes_with(bytes, &LoadOptions::default())
    }

    /// Loads and compiles a PMML file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Evaluator, LoadError> {
        Self::from_path_with(path, &LoadOptions::default())
    }

    /// [`Pmml::from_bytes`] with explicit limits.
    pub fn from_bytes_with(bytes: &[u8], opts: &LoadOptions) -> Result<Evaluator, LoadError> {
        if bytes.len() as u64 > opts.max_bytes {
            return Err(LoadError::TooLarge {
                size: bytes.len() as u64,
                limit: opts.max_bytes,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let before = &bytes[..e.valid_up_to()];
            let line = before.iter().filter(|b| **b == b'\n').count() as u32 + 1;
            LoadError::Xml {
                line,
                column: 0,
                message: format!("document is not valid UTF-8: {e}"),
            }
        })?;
        Evaluator::load(text, opts)
    }

    /// [`Pmml::from_path`] with explicit limits (the file size is checked before reading).
    pub fn from_path_with(
        path: impl AsRef<Path>,
        opts: &LoadOptions,
    ) -> Result<Evaluator, LoadError> {
        let path = path.as_ref();
        let len = std::fs::metadata(path)?.len();
        if len > opts.max_bytes {
            return Err(LoadError::TooLarge {
                size: len,
                limit: opts.max_bytes,
            });
        }
        let bytes = std::fs::read(path)?;
        Self::from_bytes_with(&bytes, opts)
    }
}

/// A field of the model's interface (input, target or output).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldInfo {
    /// The field name as in the PMML document.
    pub name: String,
    /// Its data type.
    pub data_type: DataType,
    /// Its operational type.
    pub op_type: OpType,
    /// The valid categories (categorical inputs/targets), in document order; empty otherwise.
    pub categories: Vec<Value>,
}

/// The results of one evaluation: the target field(s), then every final OutputField, in
/// [`Evaluator::result_fields`] order. Any of them may be [`Value::Missing`].
#[derive(Clone)]
pub struct Outputs {
    names: Arc<[String]>,
    values: Values,
}

/// How many result values an [`Outputs`] holds without a heap allocation.
const INLINE_VALUES: usize = 2;

/// Result values: inline for the common small results (no allocation per record), else on the
/// heap.
#[derive(Clone)]
enum Values {
    Inline {
        len: usize,
        items: [Value; INLINE_VALUES],
    },
    Heap(Vec<Value>),
}

impl Values {
    fn as_slice(&self) -> &[Value] {
        match self {
            Values::Inline { len, items } => &items[..*len],
            Values::Heap(v) => v,
        }
    }

    fn into_vec(self) -> Vec<Value> {
        match self {
            Values::Inline { len, items } => items.into_iter().take(len).collect(),
            Values::Heap(v) => v,
        }
    }
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs")
            .field("names", &self.names)
            .field("values", &self.values.as_slice())
            .finish()
    }
}

impl PartialEq for Outputs {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names && self.values.as_slice() == other.values.as_slice()
    }
}

impl Outputs {
    /// The value of a result field by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.values.as_slice().get(i))
    }

    /// The values, in [`Evaluator::result_fields`] order.
    pub fn values(&self) -> &[Value] {
        self.values.as_slice()
    }

    /// The result field names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.values.as_slice().iter())
    }

    /// Consumes the outputs into a name → value map.
    pub fn into_map(self) -> HashMap<String, Value> {
        self.names
            .iter()
            .cloned()
            .zip(self.values.into_vec())
            .collect()
    }
}

/// A compiled PMML model, ready to score records. Cheap to share across threads (`Send + Sync`).
#[derive(Debug)]
pub struct Evaluator {
    fields: Vec<FieldDef>,
    inputs: Vec<InputDef>,
    input_info: Vec<FieldInfo>,
    target_info: Vec<FieldInfo>,
    output_info: Vec<FieldInfo>,
    /// Field slots of the final outputs.
    output_slots: Vec<usize>,
    /// The output slots are pairwise distinct (their values can be moved out of the context).
    output_slots_distinct: bool,
    /// The `plain` inputs (prepared up front): (input index, field slot, data type is double).
    eager_inputs: Vec<(usize, usize, bool)>,
    result_names: Arc<[String]>,
    model: Model,
    model_element: String,
    function_name: String,
}

impl Evaluator {
    /// Loads on a dedicated thread with a large stack: the XML parser and the compiler recurse
    /// over the element tree, whose depth is capped by [`LoadOptions::max_depth`]; this keeps
    /// loading safe from any caller's thread (even one with a small stack).
    fn load(text: &str, opts: &LoadOptions) -> Result<Evaluator, LoadError> {
        const LOAD_STACK: usize = 64 << 20;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("pmml-load".into())
                .stack_size(LOAD_STACK)
                .spawn_scoped(scope, || Self::load_here(text, opts))?;
            handle.join().unwrap_or_else(|_| {
                Err(LoadError::InvalidElement {
                    element: "PMML".into(),
                    reason: "internal error while loading (the loader panicked)".into(),
                    line: 0,
                })
            })
        })
    }

    fn load_here(text: &str, opts: &LoadOptions) -> Result<Evaluator, LoadError> {
        let doc = xml::parse_document(text, opts)?;
        let root = doc.root_element();
        if root.tag_name().name() != "PMML" || !xml::is_pmml_namespace(root.tag_name().namespace())
        {
            return Err(LoadError::NotPmml {
                element: root.tag_name().name().to_string(),
                namespace: root.tag_name().namespace().map(str::to_string),
            });
        }
        let mut c = Compiler::new(opts.clone());
        let dd = root.req_kid("DataDictionary")?;
        c.data_dictionary(dd)?;
        if let Some(td) = root.kid("TransformationDictionary") {
            c.transformation_dictionary(td)?;
        }
        let mut model_node = None;
        for k in root.kids() {
            match k.name() {
                "Header" | "MiningBuildTask" | "DataDictionary" | "TransformationDictionary" => {}
                name if MODEL_ELEMENTS.contains(&name) => {
                    if model_node.is_none() && k.attr("isScorable") != Some("false") {
                        model_node = Some(k);
                    }
                }
                name => return Err(k.unsupported(format!("unknown element <{name}> in <PMML>"))),
            }
        }
        let m = model_node.ok_or(LoadError::NoModel)?;
        let model = c.model(m, None, true)?;
        let verification = match (opts.verify, m.kid("ModelVerification")) {
            (true, Some(mv)) => Some(verify::parse(mv)?),
            _ => None,
        };

        let info = |c: &Compiler, id: usize| {
            let f = &c.fields[id];
            FieldInfo {
                name: f.name.clone(),
                data_type: f.data_type,
                op_type: f.op_type,
                categories: c
                    .data
                    .get(&f.name)
                    .filter(|d| d.field == id)
                    .map(|d| d.categories.clone())
                    .unwrap_or_default(),
            }
        };
        let mut input_info: Vec<FieldInfo> = c.inputs.iter().map(|i| info(&c, i.field)).collect();
        for (fi, i) in input_info.iter_mut().zip(&c.inputs) {
            fi.op_type = i.treatment.op_type;
        }
        let target_info: Vec<FieldInfo> = match &model.target {
            Some(t) => vec![FieldInfo {
                name: t.name.clone(),
                data_type: t.data_type,
                op_type: t.op_type,
                categories: t.categories.clone(),
            }],
            None => Vec::new(),
        };
        let finals: Vec<&model::OutputDef> = model.result_outputs();
        let output_info: Vec<FieldInfo> = finals.iter().map(|o| info(&c, o.field)).collect();
        let output_slots: Vec<usize> = finals.iter().map(|o| o.field).collect();
        let eager_inputs = c
            .inputs
            .iter()
            .filter(|i| i.plain)
            .map(|i| (i.input, i.field, i.treatment.data_type == DataType::Double))
            .collect();
        let output_slots_distinct = output_slots
            .iter()
            .enumerate()
            .all(|(i, a)| !output_slots[..i].contains(a));
        let result_names: Arc<[String]> = target_info
            .iter()
            .chain(output_info.iter())
            .map(|f| f.name.clone())
            .collect();
        let evaluator = Evaluator {
            fields: c.fields,
            inputs: c.inputs,
            input_info,
            target_info,
            output_info,
            output_slots,
            output_slots_distinct,
            eager_inputs,
            result_names,
            model,
            model_element: m.name().to_string(),
            function_name: m.attr("functionName").unwrap_or_default().to_string(),
        };
        if let Some(records) = verification {
            verify::check(&evaluator, &records)?;
        }
        Ok(evaluator)
    }

    /// The input (active) fields, in MiningSchema order; [`Evaluator::evaluate`] takes one value
    /// per field in this order.
    pub fn input_fields(&self) -> &[FieldInfo] {
        &self.input_info
    }

    /// The target field (at most one). A model without a target field whose prediction JPMML
    /// still reports (a clustering model's winning cluster id) has one named [`DEFAULT_TARGET`].
    pub fn target_fields(&self) -> &[FieldInfo] {
        &self.target_info
    }

    /// The final OutputFields, in document order.
    pub fn output_fields(&self) -> &[FieldInfo] {
        &self.output_info
    }

    /// Names of the result fields: targets, then outputs.
    pub fn result_fields(&self) -> &[String] {
        &self.result_names
    }

    /// The model element's name, e.g. `"TreeModel"`.
    pub fn model_element(&self) -> &str {
        &self.model_element
    }

    /// The model's functionName, e.g. `"classification"`.
    pub fn function_name(&self) -> &str {
        &self.function_name
    }

    /// Evaluates one record given as one value per input field, in [`Evaluator::input_fields`]
    /// order (the fast path). Values are converted to each field's data type (strings parsed);
    /// [`Value::Missing`] (or a NaN double) is a missing value.
    pub fn evaluate(&self, inputs: &[Value]) -> Result<Outputs, EvalError> {
        if inputs.len() != self.inputs.len() {
            return Err(EvalError::InputCount {
                expected: self.inputs.len(),
                got: inputs.len(),
            });
        }
        // Inputs are prepared (converted, validated, treated) lazily, when first used, so an
        // invalid value in a field the record's path never reads is not an error (as in JPMML).
        // Numbers for inputs whose preparation is a plain conversion that cannot fail
        // (`InputDef::plain`) are prepared up front: same values, no error possible, and cheaper
        // than the lazy path.
        // The scratch cache is handed back all-`None`; only a length change needs a refill.
        SCRATCH.with(|cell| {
            let mut values = cell.take();
            let r = self.evaluate_with(inputs, &mut values);
            cell.set(values);
            r
        })
    }

    fn evaluate_with(
        &self,
        inputs: &[Value],
        scratch: &mut Vec<Option<Value>>,
    ) -> Result<Outputs, EvalError> {
        if scratch.len() != self.fields.len() {
            scratch.clear();
            scratch.resize(self.fields.len(), None);
        }
        for &(i, field, double) in &self.eager_inputs {
            let (Some(raw), Some(slot)) = (inputs.get(i), scratch.get_mut(field)) else {
                continue;
            };
            match raw {
                Value::Double(x) if double => {
                    if !x.is_nan() {
                        *slot = Some(Value::Double(*x));
                    }
                }
                raw => {
                    if let Some(v) = self
                        .inputs
                        .get(i)
                        .and_then(|d| d.treatment.prepare_number(raw))
                    {
                        *slot = Some(v);
                    }
                }
            }
        }
        let values = std::mem::take(scratch);
        let mut ctx = Ctx::with_values(&self.fields, &self.inputs, inputs, values);
        let result = self.model.evaluate(&mut ctx).map(|pred| {
            let target = (!self.target_info.is_empty()).then(|| pred.into_value());
            let outputs = self.output_slots.iter().map(|slot| {
                let v = if self.output_slots_distinct {
                    ctx.values[*slot].take()
                } else {
                    ctx.values[*slot].clone()
                };
                v.unwrap_or(Value::Missing)
            });
            let n = self.result_names.len();
            if n <= INLINE_VALUES {
                let mut items: [Value; INLINE_VALUES] = Default::default();
                for (item, v) in items.iter_mut().zip(target.into_iter().chain(outputs)) {
                    *item = v;
                }
                Values::Inline { len: n, items }
            } else {
                let mut values = Vec::with_capacity(n);
                values.extend(target);
                values.extend(outputs);
                Values::Heap(values)
            }
        });
        // Hand the value cache back (all `None`) for the next record on this thread.
        *scratch = ctx.values;
        for v in scratch.iter_mut().filter(|v| v.is_some()) {
            *v = None;
        }
        Ok(Outputs {
            names: self.result_names.clone(),
            values: result?,
        })
    }

    /// Evaluates one record given by field name. Input fields absent from the map are missing;
    /// names that are not input fields are an error.
    pub fn evaluate_map<K, V>(&self, inputs: &HashMap<K, V>) -> Result<Outputs, EvalError>
    where
        K: AsRef<str> + std::hash::Hash + Eq,
        V: Clone + Into<Value>,
    {
        let mut args = vec![Value::Missing; self.input_info.len()];
        for (k, v) in inputs {
            let name = k.as_ref();
            let i = self
                .input_info
                .iter()
                .position(|f| f.name == name)
                .ok_or_else(|| EvalError::UnknownInput(name.to_string()))?;
            args[i] = v.clone().into();
        }
        self.evaluate(&args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn evaluator_is_send_sync() {
        assert_send_sync::<Evaluator>();
    }
}
