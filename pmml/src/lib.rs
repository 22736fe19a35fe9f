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
pub use value::{DataType, OpType, Shown, Value};

use compile::{Compiler, InputDef, MODEL_ELEMENTS};
use fields::{Ctx, FieldDef, Slot, NOT_DIRECT};
use model::Model;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use xml::El;

/// The result name of the prediction of a model without a target field (e.g. a clustering
/// model's winning cluster id); JPMML-Evaluator reports it under a null key.
pub const DEFAULT_TARGET: &str = "__default_target__";

thread_local! {
    /// Per-thread working memory reused across evaluations (borrowed while in use; a re-entrant
    /// evaluation, which cannot happen today, would simply use a fresh one).
    static SCRATCH: std::cell::RefCell<Scratch> = const { std::cell::RefCell::new(Scratch::new()) };
}

/// Per-record working memory: the value cache of the fields. A record starts by bumping the
/// generation, which invalidates every cached value at once (no clearing, no allocation once the
/// cache is large enough); values of earlier records are dropped when overwritten.
#[derive(Debug)]
struct Scratch {
    slots: Vec<Slot>,
    gen: u32,
}

impl Scratch {
    const fn new() -> Scratch {
        Scratch {
            slots: Vec::new(),
            gen: 0,
        }
    }

    /// Starts a record over `n` fields: returns the cache and the record's generation, for
    /// which no slot is current.
    #[inline]
    fn begin(&mut self, n: usize) -> (&mut [Slot], u32) {
        if self.slots.len() < n {
            self.slots.resize_with(n, Slot::default);
        }
        self.gen = self.gen.wrapping_add(1);
        if self.gen == 0 {
            for s in &mut self.slots {
                s.gen = 0;
            }
            self.gen = 1;
        }
        (&mut self.slots[..n], self.gen)
    }
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
        // The size above is 0 for a device or a pipe: read at most one byte past the limit.
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(opts.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)?;
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
///
/// A list-valued result (the target of a MiningModel with `multipleModelMethod="selectAll"`:
/// one value per segment whose predicate is true, as JPMML-Evaluator returns it) reads as
/// [`Value::Missing`] in [`Outputs::values`] / [`Outputs::get`]; [`Outputs::get_list`] gives
/// its values.
pub struct Outputs {
    /// Always `Some` (`None` only while being dropped or consumed). Boxed and recycled through
    /// a small per-thread pool ([`SPARE`]): an `Outputs` is one pointer, so returning it costs
    /// no copy of the values just written (which would stall on store forwarding), and a record
    /// allocates nothing.
    body: Option<Box<Body>>,
}

/// The contents of an [`Outputs`].
#[derive(Clone)]
struct Body {
    names: Names,
    values: Values,
    /// List-valued results: (index into `names`, values). Empty for almost every model.
    lists: Vec<(usize, Vec<Value>)>,
}

impl Body {
    const EMPTY: Body = Body {
        names: Names::Static(&[]),
        values: Values::Inline {
            len: 0,
            items: [Value::Missing, Value::Missing],
        },
        lists: Vec::new(),
    };
}

/// The body of an `Outputs` whose body is gone (never observed: only during drop).
static EMPTY_BODY: Body = Body::EMPTY;

/// Most spare [`Body`]s kept per thread.
const MAX_SPARE: usize = 8;

thread_local! {
    /// Bodies of dropped [`Outputs`], reused by the next evaluations on this thread (boxed: they
    /// move between the pool and `Outputs` as they are).
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<Body>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A body from this thread's pool (stale contents, overwritten by the evaluation), else a new one.
#[inline]
fn spare_body() -> Box<Body> {
    SPARE
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
        .unwrap_or_else(|| Box::new(Body::EMPTY))
}

impl Drop for Outputs {
    fn drop(&mut self) {
        if let Some(body) = self.body.take() {
            // Into the pool, if there is room (else, or while the thread exits, freed here).
            let _ = SPARE.try_with(move |s| {
                if let Ok(mut s) = s.try_borrow_mut() {
                    if s.len() < MAX_SPARE {
                        s.push(body);
                    }
                }
            });
        }
    }
}

impl Clone for Outputs {
    fn clone(&self) -> Self {
        Outputs {
            body: Some(Box::new(self.body().clone())),
        }
    }
}

/// The result field names of an evaluator, shared by its [`Outputs`] without a reference count:
/// interned for the life of the process (deduplicated by content, so loading the same model
/// again, or another one with the same result fields, adds nothing). Past [`MAX_INTERNED`]
/// distinct lists, names are reference-counted instead.
#[derive(Clone)]
enum Names {
    Static(&'static [String]),
    Shared(Arc<[String]>),
}

/// Most distinct result-name lists interned (see [`Names`]).
const MAX_INTERNED: usize = 4096;

/// The interned result-name lists.
static INTERNED: std::sync::Mutex<Vec<&'static [String]>> = std::sync::Mutex::new(Vec::new());

impl Names {
    fn intern(names: Vec<String>) -> Names {
        let mut interned = INTERNED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = interned.iter().find(|s| ***s == names[..]) {
            return Names::Static(s);
        }
        if interned.len() >= MAX_INTERNED {
            return Names::Shared(names.into());
        }
        let s: &'static [String] = Box::leak(names.into_boxed_slice());
        interned.push(s);
        Names::Static(s)
    }

    #[inline]
    fn as_slice(&self) -> &[String] {
        match self {
            Names::Static(s) => s,
            Names::Shared(s) => s,
        }
    }

    /// The same list (not merely equal names).
    #[inline]
    fn same(&self, other: &Names) -> bool {
        match (self, other) {
            (Names::Static(a), Names::Static(b)) => std::ptr::eq(*a, *b),
            (Names::Shared(a), Names::Shared(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::ops::Deref for Names {
    type Target = [String];

    fn deref(&self) -> &[String] {
        self.as_slice()
    }
}

impl PartialEq for Names {
    fn eq(&self, other: &Names) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
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
    /// Replaces the contents with the `n` values of `items` (reusing the heap buffer, if any).
    #[inline]
    fn assign(&mut self, n: usize, items: impl Iterator<Item = Value>) {
        if n <= INLINE_VALUES {
            match self {
                Values::Inline { len, items: slots } => {
                    *len = n;
                    for (slot, v) in slots.iter_mut().zip(items) {
                        *slot = v;
                    }
                }
                Values::Heap(_) => {
                    let mut slots: [Value; INLINE_VALUES] = Default::default();
                    for (slot, v) in slots.iter_mut().zip(items) {
                        *slot = v;
                    }
                    *self = Values::Inline {
                        len: n,
                        items: slots,
                    };
                }
            }
        } else {
            match self {
                Values::Heap(v) => {
                    v.clear();
                    v.extend(items);
                }
                Values::Inline { .. } => {
                    let mut v = Vec::with_capacity(n);
                    v.extend(items);
                    *self = Values::Heap(v);
                }
            }
        }
    }

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
        let b = self.body();
        let mut d = f.debug_struct("Outputs");
        d.field("names", &b.names)
            .field("values", &b.values.as_slice());
        if !b.lists.is_empty() {
            d.field("lists", &b.lists);
        }
        d.finish()
    }
}

impl PartialEq for Outputs {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.body(), other.body());
        a.names == b.names && a.values.as_slice() == b.values.as_slice() && a.lists == b.lists
    }
}

impl Default for Outputs {
    /// Empty outputs (no fields), e.g. a buffer for [`Evaluator::evaluate_into`].
    fn default() -> Self {
        Outputs {
            body: Some(Box::new(Body::EMPTY)),
        }
    }
}

impl Outputs {
    #[inline]
    fn body(&self) -> &Body {
        self.body.as_deref().unwrap_or(&EMPTY_BODY)
    }

    /// The value of a result field by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let b = self.body();
        b.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| b.values.as_slice().get(i))
    }

    /// The values, in [`Evaluator::result_fields`] order.
    #[inline]
    pub fn values(&self) -> &[Value] {
        self.body().values.as_slice()
    }

    /// The values of a list-valued result field by name (the target of a MiningModel with
    /// `multipleModelMethod="selectAll"`: one value per segment whose predicate is true, in
    /// document order, [`Value::Missing`] for a segment without a prediction); `None` for a
    /// single-valued field or an unknown name.
    pub fn get_list(&self, name: &str) -> Option<&[Value]> {
        let i = self.body().names.iter().position(|n| n == name)?;
        self.list_at(i)
    }

    /// The values of the list-valued result at `index` (in [`Evaluator::result_fields`] order);
    /// `None` when that result is single-valued (see [`Outputs::get_list`]).
    pub fn list_at(&self, index: usize) -> Option<&[Value]> {
        self.body()
            .lists
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, v)| v.as_slice())
    }

    /// The result field names.
    pub fn names(&self) -> &[String] {
        &self.body().names
    }

    /// `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        let b = self.body();
        b.names
            .iter()
            .map(String::as_str)
            .zip(b.values.as_slice().iter())
    }

    /// Consumes the outputs into a name → value map.
    pub fn into_map(mut self) -> HashMap<String, Value> {
        let Some(b) = self.body.take() else {
            return HashMap::new();
        };
        let Body { names, values, .. } = *b;
        names.iter().cloned().zip(values.into_vec()).collect()
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
    /// The result is the target value alone, a double computed by `Model::evaluate_number`.
    number_path: bool,
    /// Per field: the input index of a plain double input (read straight from the arguments),
    /// else [`NOT_DIRECT`] (see `Ctx::double_at_hand`).
    direct: Vec<u32>,
    result_names: Names,
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
        let mut direct = vec![NOT_DIRECT; c.fields.len()];
        for i in &c.inputs {
            if i.plain && i.treatment.data_type == DataType::Double {
                if let (Some(d), Ok(input)) = (direct.get_mut(i.field), u32::try_from(i.input)) {
                    *d = input;
                }
            }
        }
        let output_slots_distinct = output_slots
            .iter()
            .enumerate()
            .all(|(i, a)| !output_slots[..i].contains(a));
        let result_names = Names::intern(
            target_info
                .iter()
                .chain(output_info.iter())
                .map(|f| f.name.clone())
                .collect(),
        );
        let evaluator = Evaluator {
            fields: c.fields,
            inputs: c.inputs,
            input_info,
            target_info,
            output_info,
            output_slots,
            output_slots_distinct,
            direct,
            number_path: model.has_number_path(),
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
    /// [`Value::Missing`] (or a NaN number) is a missing value.
    #[inline]
    pub fn evaluate(&self, inputs: &[Value]) -> Result<Outputs, EvalError> {
        let mut out = Outputs {
            body: Some(spare_body()),
        };
        self.evaluate_into(inputs, &mut out)?;
        Ok(out)
    }

    /// [`Evaluator::evaluate`] into a caller's [`Outputs`], reusing it: when `out` came from
    /// this evaluator (or from an earlier `evaluate_into` of it), scoring a record allocates
    /// nothing and touches no reference count. Start with `Outputs::default()`. On an error,
    /// `out` keeps its previous contents.
    #[inline]
    pub fn evaluate_into(&self, inputs: &[Value], out: &mut Outputs) -> Result<(), EvalError> {
        if inputs.len() != self.inputs.len() {
            return Err(EvalError::InputCount {
                expected: self.inputs.len(),
                got: inputs.len(),
            });
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.evaluate_in(&mut scratch, inputs, out),
            Err(_) => self.evaluate_in(&mut Scratch::new(), inputs, out),
        })
    }

    fn evaluate_in(
        &self,
        scratch: &mut Scratch,
        inputs: &[Value],
        out: &mut Outputs,
    ) -> Result<(), EvalError> {
        // Inputs are prepared (converted, validated, treated) lazily, when first used, so an
        // invalid value in a field the record's path never reads is not an error (as in JPMML);
        // a present double for a plain double input is read straight from `inputs`.
        let (slots, gen) = scratch.begin(self.fields.len());
        let mut ctx = Ctx::new(&self.fields, &self.inputs, inputs, &self.direct, slots, gen);
        let mut list = None;
        let target = if self.number_path {
            Some(
                self.model
                    .evaluate_number(&mut ctx)?
                    .map_or(Value::Missing, Value::Double),
            )
        } else {
            let mut pred = model::Prediction::Missing;
            self.model.evaluate_to(&mut ctx, &mut pred)?;
            match pred {
                _ if self.target_info.is_empty() => None,
                model::Prediction::List(values) => {
                    list = Some(values);
                    Some(Value::Missing)
                }
                pred => Some(pred.into_value()),
            }
        };
        let out = out.body.get_or_insert_with(spare_body);
        if !out.names.same(&self.result_names) {
            out.names = self.result_names.clone();
        }
        out.lists.clear();
        if let Some(values) = list {
            out.lists.push((0, values));
        }
        let distinct = self.output_slots_distinct;
        let outputs = self.output_slots.iter().map(|slot| {
            let v = if distinct {
                ctx.take(*slot)
            } else {
                ctx.cached(*slot).cloned()
            };
            v.unwrap_or(Value::Missing)
        });
        out.values
            .assign(self.result_names.len(), target.into_iter().chain(outputs));
        Ok(())
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
        assert_send_sync::<Outputs>();
    }

    #[test]
    fn result_names_are_interned_once() {
        let a = Names::intern(vec!["y".into(), "p".into()]);
        let b = Names::intern(vec!["y".into(), "p".into()]);
        assert!(a.same(&b));
        assert!(!a.same(&Names::intern(vec!["y".into()])));
        assert_eq!(&a[..], &["y".to_string(), "p".to_string()][..]);
    }

    #[test]
    fn scratch_generations_invalidate_every_slot() {
        let mut s = Scratch::new();
        let (slots, g1) = s.begin(3);
        slots[1] = Slot {
            gen: g1,
            value: Value::Double(1.0),
        };
        let (slots, g2) = s.begin(3);
        assert_ne!(g1, g2);
        assert!(slots.iter().all(|slot| slot.gen != g2));
        // Wrap-around: every slot is reset, none is current.
        s.gen = u32::MAX;
        let (slots, g3) = s.begin(3);
        assert_eq!(g3, 1);
        assert!(slots.iter().all(|slot| slot.gen == 0));
    }
}
