//! The load-time compiler: resolves names to field ids, compiles expressions, predicates,
//! mining schemas, targets and outputs. Model-specific parts live in `crate::models`.

use crate::error::LoadError;
use crate::expr::{
    ApplyInvalid, BoolOp, Expr, Func, NormOutliers, Predicate, SimpleOp, UserFunction,
};
use crate::fields::{
    FieldDef, FieldId, FieldKind, Interval, InvalidTreatment, Outliers, Treatment,
};
use crate::model::{Feature, Model, OutputDef, Rescale, TargetInfo};
use crate::value::{parse_as, DataType, OpType, Value};
use crate::xml::El;
use crate::LoadOptions;
use roxmltree::Node;
use std::collections::HashMap;
use std::sync::Arc;

/// What the DataDictionary says about a field.
#[derive(Debug, Clone)]
pub(crate) struct DataFieldInfo {
    pub field: FieldId,
    pub treatment: Treatment,
    pub categories: Vec<Value>,
    pub display: Vec<(Value, String)>,
}

/// A prepared input of the top-level model.
#[derive(Debug)]
pub(crate) struct InputDef {
    pub field: FieldId,
    pub treatment: Treatment,
    /// `treatment.passes_numbers()`: a present number is prepared by a plain conversion.
    pub plain: bool,
    /// Its position among the inputs.
    pub input: usize,
}

pub(crate) struct Compiler {
    pub fields: Vec<FieldDef>,
    scopes: Vec<HashMap<String, FieldId>>,
    pub data: HashMap<String, DataFieldInfo>,
    functions: HashMap<String, Arc<UserFunction>>,
    /// Parameters of the DefineFunction being compiled.
    params: Option<Vec<(String, DataType)>>,
    pub inputs: Vec<InputDef>,
    pub opts: LoadOptions,
    /// Current recursion depth of expression/predicate/model compilation.
    nesting: usize,
    /// The deepest chain of user functions called by the expression being compiled.
    call_depth: usize,
}

/// Known PMML model elements.
pub(crate) const MODEL_ELEMENTS: &[&str] = &[
    "AnomalyDetectionModel",
    "AssociationModel",
    "BayesianNetworkModel",
    "BaselineModel",
    "ClusteringModel",
    "GaussianProcessModel",
    "GeneralRegressionModel",
    "MiningModel",
    "NaiveBayesModel",
    "NearestNeighborModel",
    "NeuralNetwork",
    "RegressionModel",
    "RuleSetModel",
    "SequenceModel",
    "Scorecard",
    "SupportVectorMachineModel",
    "TextModel",
    "TimeSeriesModel",
    "TreeModel",
];

impl Compiler {
    pub fn new(opts: LoadOptions) -> Self {
        Compiler {
            fields: Vec::new(),
            scopes: vec![HashMap::new()],
            data: HashMap::new(),
            functions: HashMap::new(),
            params: None,
            inputs: Vec::new(),
            opts,
            nesting: 0,
            call_depth: 0,
        }
    }

    /// Bounds the recursion of compilation (and so of evaluation) whatever the document.
    fn enter(&mut self, node: Node) -> Result<(), LoadError> {
        self.nesting += 1;
        if self.nesting > self.opts.max_nesting {
            self.nesting -= 1;
            return Err(LoadError::TooDeep {
                element: node.name().to_string(),
                line: node.line(),
                depth: self.nesting + 1,
                limit: self.opts.max_nesting,
            });
        }
        Ok(())
    }

    pub fn add_field(
        &mut self,
        name: &str,
        data_type: DataType,
        op_type: OpType,
        kind: FieldKind,
    ) -> FieldId {
        let id = self.fields.len();
        self.fields.push(FieldDef {
            name: name.to_string(),
            data_type,
            op_type,
            kind,
        });
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string(), id);
        }
        id
    }

    pub fn push_scope(&mut self) {
        self.scopes.push(HashMap::new());
    }

    pub fn pop_scope(&mut self) {
        self.scopes.pop();
    }

    /// Makes `name` refer to `id` in the current scope.
    pub fn bind(&mut self, name: &str, id: FieldId) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_string(), id);
        }
    }

    pub fn lookup(&self, name: &str) -> Option<FieldId> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    /// Resolves the field named by attribute `attr` of `node`.
    pub fn field_ref(&self, node: Node, attr: &str) -> Result<FieldId, LoadError> {
        let name = node.req_attr(attr)?;
        self.lookup(name).ok_or_else(|| LoadError::UnknownField {
            element: node.name().to_string(),
            field: name.to_string(),
            line: node.line(),
        })
    }

    pub fn dt(&self, id: FieldId) -> DataType {
        self.fields[id].data_type
    }

    // ----- DataDictionary -------------------------------------------------------------------

    pub fn data_dictionary(&mut self, dd: Node) -> Result<(), LoadError> {
        for df in dd.kids_named("DataField") {
            let name = df.req_attr("name")?;
            let dt = match df.attr("dataType") {
                Some(s) => DataType::parse(s).ok_or_else(|| df.unsupported_attr("dataType"))?,
                None => return Err(df.bad_attr("dataType", "required")),
            };
            let op = match df.attr("optype") {
                Some(s) => {
                    OpType::parse(s).ok_or_else(|| df.bad_attr("optype", "unknown optype"))?
                }
                None => OpType::default_for(dt),
            };
            let mut t = Treatment::plain(dt, op);
            let mut categories = Vec::new();
            let mut display = Vec::new();
            for v in df.kids_named("Value") {
                let raw = v.req_attr("value")?;
                let parsed = parse_as(raw, dt).unwrap_or_else(|| Value::String(raw.to_string()));
                match v.attr("property").unwrap_or("valid") {
                    "valid" => {
                        categories.push(parsed.clone());
                        if let Some(d) = v.attr("displayValue") {
                            display.push((parsed.clone(), d.to_string()));
                        }
                        t.valid_values.push(parsed);
                    }
                    "invalid" => t.invalid_values.push(parsed),
                    "missing" => t.missing_values.push(Value::String(raw.to_string())),
                    _ => return Err(v.bad_attr("property", "unknown property")),
                }
            }
            for i in df.kids_named("Interval") {
                t.intervals.push(interval(i)?);
            }
            if op == OpType::Continuous {
                // Values of a continuous field only declare special values; validity comes from
                // the intervals.
                t.valid_values.clear();
                if t.intervals.is_empty() {
                    categories.clear();
                }
            }
            let id = self.add_field(name, dt, op, FieldKind::Input(None));
            self.data.insert(
                name.to_string(),
                DataFieldInfo {
                    field: id,
                    treatment: t,
                    categories,
                    display,
                },
            );
        }
        Ok(())
    }

    // ----- Transformations ------------------------------------------------------------------

    pub fn transformation_dictionary(&mut self, td: Node) -> Result<(), LoadError> {
        for f in td.kids_named("DefineFunction") {
            self.define_function(f)?;
        }
        for d in td.kids_named("DerivedField") {
            self.derived_field(d)?;
        }
        Ok(())
    }

    pub fn local_transformations(&mut self, lt: Node) -> Result<(), LoadError> {
        for d in lt.kids_named("DerivedField") {
            self.derived_field(d)?;
        }
        Ok(())
    }

    fn define_function(&mut self, f: Node) -> Result<(), LoadError> {
        let name = f.req_attr("name")?;
        let dt = f
            .attr("dataType")
            .map(|s| DataType::parse(s).ok_or_else(|| f.unsupported_attr("dataType")))
            .transpose()?;
        let mut params = Vec::new();
        for p in f.kids_named("ParameterField") {
            let pdt = p
                .attr("dataType")
                .map(|s| DataType::parse(s).ok_or_else(|| p.unsupported_attr("dataType")))
                .transpose()?
                .unwrap_or(DataType::Double);
            params.push((p.req_attr("name")?.to_string(), pdt));
        }
        let body_node = f
            .kids()
            .into_iter()
            .find(|k| k.name() != "ParameterField")
            .ok_or_else(|| f.invalid("DefineFunction has no expression"))?;
        let saved = self.params.replace(params.clone());
        let outer_calls = std::mem::take(&mut self.call_depth);
        let body = self.expression(body_node);
        self.params = saved;
        let depth = std::mem::replace(&mut self.call_depth, outer_calls) + 1;
        let body = body?;
        // Each call is a level of evaluation: a chain deeper than scoring allows could never
        // be scored, and dropping a very long one would recurse as deep.
        if depth > crate::fields::MAX_EVAL_DEPTH {
            return Err(f.invalid(format!(
                "function {name:?} starts a chain of {depth} functions calling each other, more \
                 than the {} levels scoring allows",
                crate::fields::MAX_EVAL_DEPTH
            )));
        }
        let uf = UserFunction {
            params: params.iter().map(|p| p.1).collect(),
            data_type: dt.unwrap_or(DataType::Double),
            body,
            depth,
        };
        self.functions.insert(name.to_string(), Arc::new(uf));
        Ok(())
    }

    pub fn derived_field(&mut self, d: Node) -> Result<FieldId, LoadError> {
        let name = d.req_attr("name")?;
        let (dt, op) = self.type_attrs(d)?;
        let expr_node = d
            .kids()
            .into_iter()
            .next()
            .ok_or_else(|| d.invalid("DerivedField has no expression"))?;
        let expr = self.expression(expr_node)?;
        let dt = dt.unwrap_or(DataType::Double);
        let op = op.unwrap_or(OpType::default_for(dt));
        Ok(self.add_field(name, dt, op, FieldKind::Derived(expr)))
    }

    /// Compiles an anonymous DerivedField (NeuralInput/NeuralOutput): returns the expression and
    /// its declared data type.
    pub fn anonymous_derived(&mut self, d: Node) -> Result<(Expr, DataType), LoadError> {
        let (dt, _) = self.type_attrs(d)?;
        let expr_node = d
            .kids()
            .into_iter()
            .next()
            .ok_or_else(|| d.invalid("DerivedField has no expression"))?;
        Ok((self.expression(expr_node)?, dt.unwrap_or(DataType::Double)))
    }

    fn type_attrs(&self, d: Node) -> Result<(Option<DataType>, Option<OpType>), LoadError> {
        let dt = d
            .attr("dataType")
            .map(|s| DataType::parse(s).ok_or_else(|| d.unsupported_attr("dataType")))
            .transpose()?;
        let op = d
            .attr("optype")
            .map(|s| OpType::parse(s).ok_or_else(|| d.bad_attr("optype", "unknown optype")))
            .transpose()?;
        Ok((dt, op))
    }

    fn typed_const(
        &self,
        node: Node,
        attr: &str,
        dt: DataType,
    ) -> Result<Option<Value>, LoadError> {
        match node.attr(attr) {
            None => Ok(None),
            Some(s) => Ok(Some(
                parse_as(s, dt).unwrap_or_else(|| Value::String(s.to_string())),
            )),
        }
    }

    /// Compiles an EXPRESSION element.
    pub fn expression(&mut self, e: Node) -> Result<Expr, LoadError> {
        self.enter(e)?;
        let r = self.expression_inner(e);
        self.nesting -= 1;
        r
    }

    fn expression_inner(&mut self, e: Node) -> Result<Expr, LoadError> {
        match e.name() {
            "Constant" => {
                let text = e.text().unwrap_or("").trim().to_string();
                if e.attr("missing") == Some("true") {
                    return Ok(Expr::Const(Value::Missing));
                }
                let dt = match e.attr("dataType") {
                    Some(s) => DataType::parse(s).ok_or_else(|| e.unsupported_attr("dataType"))?,
                    None => {
                        if crate::value::parse_f64(&text).is_some() && !text.is_empty() {
                            if text.parse::<i64>().is_ok() {
                                DataType::Integer
                            } else {
                                DataType::Double
                            }
                        } else {
                            DataType::String
                        }
                    }
                };
                let v = parse_as(&text, dt)
                    .ok_or_else(|| e.invalid(format!("constant {text:?} is not a valid {dt}")))?;
                Ok(Expr::Const(v))
            }
            "FieldRef" => {
                let name = e.req_attr("field")?;
                if let Some(params) = &self.params {
                    if let Some(i) = params.iter().position(|p| p.0 == name) {
                        return Ok(Expr::Param(i));
                    }
                }
                let field = self.field_ref(e, "field")?;
                let map_missing_to = self.typed_const(e, "mapMissingTo", self.dt(field))?;
                Ok(Expr::Field {
                    field,
                    map_missing_to,
                })
            }
            "NormContinuous" => {
                let field = self.field_ref(e, "field")?;
                let outliers = match e.attr("outliers").unwrap_or("asIs") {
                    "asIs" => NormOutliers::AsIs,
                    "asMissingValues" => NormOutliers::AsMissing,
                    "asExtremeValues" => NormOutliers::AsExtreme,
                    _ => return Err(e.unsupported_attr("outliers")),
                };
                let (mut xs, mut ys) = (Vec::new(), Vec::new());
                for ln in e.kids_named("LinearNorm") {
                    xs.push(ln.req_f64("orig")?);
                    ys.push(ln.req_f64("norm")?);
                }
                if xs.len() < 2 {
                    return Err(e.invalid("NormContinuous needs at least two LinearNorm elements"));
                }
                if xs.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(e.invalid("LinearNorm orig values must be strictly increasing"));
                }
                Ok(Expr::NormContinuous {
                    field,
                    xs,
                    ys,
                    outliers,
                    map_missing_to: e.f64_attr("mapMissingTo")?,
                })
            }
            "NormDiscrete" => {
                let field = self.field_ref(e, "field")?;
                let value = self
                    .typed_const(e, "value", self.dt(field))?
                    .ok_or_else(|| e.bad_attr("value", "required"))?;
                if e.attr("method").is_some_and(|m| m != "indicator") {
                    return Err(e.unsupported_attr("method"));
                }
                Ok(Expr::NormDiscrete {
                    field,
                    value,
                    map_missing_to: e.f64_attr("mapMissingTo")?,
                })
            }
            "Discretize" => {
                let field = self.field_ref(e, "field")?;
                let dt = e
                    .attr("dataType")
                    .and_then(DataType::parse)
                    .unwrap_or(DataType::String);
                let mut bins = Vec::new();
                for b in e.kids_named("DiscretizeBin") {
                    let v = self
                        .typed_const(b, "binValue", dt)?
                        .ok_or_else(|| b.bad_attr("binValue", "required"))?;
                    bins.push((interval(b.req_kid("Interval")?)?, v));
                }
                Ok(Expr::Discretize {
                    field,
                    bins,
                    map_missing_to: self
                        .typed_const(e, "mapMissingTo", dt)?
                        .unwrap_or(Value::Missing),
                    default: self
                        .typed_const(e, "defaultValue", dt)?
                        .unwrap_or(Value::Missing),
                })
            }
            "MapValues" => {
                let dt = e
                    .attr("dataType")
                    .and_then(DataType::parse)
                    .unwrap_or(DataType::String);
                let out_col = e.req_attr("outputColumn")?;
                let mut cols = Vec::new();
                let mut inputs = Vec::new();
                for p in e.kids_named("FieldColumnPair") {
                    inputs.push(self.field_ref(p, "field")?);
                    cols.push(p.req_attr("column")?);
                }
                let table = e.kid("InlineTable").ok_or_else(|| {
                    e.unsupported("MapValues without an InlineTable (TableLocator)")
                })?;
                let mut rows = Vec::new();
                for row in table.kids_named("row") {
                    let cell = |name: &str| -> Option<String> {
                        row.children()
                            .find(|c| c.is_element() && c.tag_name().name() == name)
                            .map(|c| c.text().unwrap_or("").to_string())
                    };
                    let Some(out) = cell(out_col) else { continue };
                    let mut key = Vec::new();
                    let mut ok = true;
                    for (c, f) in cols.iter().zip(&inputs) {
                        match cell(c) {
                            Some(t) => {
                                key.push(parse_as(&t, self.dt(*f)).unwrap_or(Value::String(t)))
                            }
                            None => ok = false,
                        }
                    }
                    if ok {
                        rows.push((key, parse_as(&out, dt).unwrap_or(Value::String(out))));
                    }
                }
                Ok(Expr::MapValues {
                    inputs,
                    rows,
                    map_missing_to: self
                        .typed_const(e, "mapMissingTo", dt)?
                        .unwrap_or(Value::Missing),
                    default: self
                        .typed_const(e, "defaultValue", dt)?
                        .unwrap_or(Value::Missing),
                })
            }
            "Apply" => {
                let fname = e.req_attr("function")?;
                let mut args = Vec::new();
                for a in e.kids() {
                    args.push(self.expression(a)?);
                }
                let invalid = match e.attr("invalidValueTreatment").unwrap_or("returnInvalid") {
                    "returnInvalid" => ApplyInvalid::ReturnInvalid,
                    "asMissing" => ApplyInvalid::AsMissing,
                    "asIs" => ApplyInvalid::AsIs,
                    _ => return Err(e.unsupported_attr("invalidValueTreatment")),
                };
                let map_missing_to = e.attr("mapMissingTo").map(const_value);
                let default = e.attr("defaultValue").map(const_value);
                if let Some(func) = Func::by_name(fname) {
                    return Ok(Expr::Apply {
                        func,
                        args,
                        map_missing_to,
                        default,
                        invalid,
                    });
                }
                if let Some(body) = self.functions.get(fname) {
                    if body.params.len() != args.len() {
                        return Err(e.invalid(format!(
                            "function {fname:?} takes {} arguments",
                            body.params.len()
                        )));
                    }
                    self.call_depth = self.call_depth.max(body.depth);
                    return Ok(Expr::Call {
                        body: body.clone(),
                        args,
                        map_missing_to,
                        default,
                    });
                }
                Err(LoadError::Unsupported {
                    element: "Apply".into(),
                    attribute: Some("function".into()),
                    what: format!("function {fname:?}"),
                    line: e.line(),
                })
            }
            "Aggregate" | "Lag" | "TextIndex" => Err(e.unsupported("expression")),
            other => Err(e.invalid(format!("<{other}> is not an expression"))),
        }
    }

    // ----- Predicates -----------------------------------------------------------------------

    /// Finds and compiles the predicate child of `parent`.
    pub fn predicate_of(&mut self, parent: Node) -> Result<Predicate, LoadError> {
        let p = parent
            .kids()
            .into_iter()
            .find(|k| {
                matches!(
                    k.name(),
                    "SimplePredicate"
                        | "CompoundPredicate"
                        | "SimpleSetPredicate"
                        | "True"
                        | "False"
                )
            })
            .ok_or_else(|| parent.invalid("no predicate"))?;
        self.predicate(p)
    }

    pub fn predicate(&mut self, p: Node) -> Result<Predicate, LoadError> {
        self.enter(p)?;
        let r = self.predicate_inner(p);
        self.nesting -= 1;
        r
    }

    fn predicate_inner(&mut self, p: Node) -> Result<Predicate, LoadError> {
        Ok(match p.name() {
            "True" => Predicate::True,
            "False" => Predicate::False,
            "SimplePredicate" => {
                let field = self.field_ref(p, "field")?;
                let op = match p.req_attr("operator")? {
                    "equal" => SimpleOp::Equal,
                    "notEqual" => SimpleOp::NotEqual,
                    "lessThan" => SimpleOp::LessThan,
                    "lessOrEqual" => SimpleOp::LessOrEqual,
                    "greaterThan" => SimpleOp::GreaterThan,
                    "greaterOrEqual" => SimpleOp::GreaterOrEqual,
                    "isMissing" => SimpleOp::IsMissing,
                    "isNotMissing" => SimpleOp::IsNotMissing,
                    _ => return Err(p.bad_attr("operator", "unknown operator")),
                };
                let value = match op {
                    SimpleOp::IsMissing | SimpleOp::IsNotMissing => Value::Missing,
                    _ => {
                        let raw = p.req_attr("value")?;
                        let dt = self.dt(field);
                        match parse_as(raw, dt) {
                            Some(v) => v,
                            None if dt.is_numeric() => {
                                return Err(p.bad_attr("value", "not a number for a numeric field"))
                            }
                            None => Value::String(raw.to_string()),
                        }
                    }
                };
                match value.as_f64() {
                    // A numeric field against a numeric constant: compared as f64 (exact
                    // widenings of the field's type), resolved here rather than per record.
                    Some(c)
                        if self.dt(field).is_numeric()
                            && !matches!(op, SimpleOp::IsMissing | SimpleOp::IsNotMissing) =>
                    {
                        Predicate::Num { field, op, c }
                    }
                    _ => Predicate::Simple { field, op, value },
                }
            }
            "SimpleSetPredicate" => {
                let field = self.field_ref(p, "field")?;
                let is_in = match p.req_attr("booleanOperator")? {
                    "isIn" => true,
                    "isNotIn" => false,
                    _ => return Err(p.bad_attr("booleanOperator", "must be isIn or isNotIn")),
                };
                let arr = p.req_kid("Array")?;
                let dt = self.dt(field);
                let values = parse_array(arr)?
                    .into_iter()
                    .map(|s| parse_as(&s, dt).unwrap_or(Value::String(s)))
                    .collect();
                Predicate::Set {
                    field,
                    is_in,
                    values,
                }
            }
            "CompoundPredicate" => {
                let op = match p.req_attr("booleanOperator")? {
                    "and" => BoolOp::And,
                    "or" => BoolOp::Or,
                    "xor" => BoolOp::Xor,
                    "surrogate" => BoolOp::Surrogate,
                    _ => return Err(p.bad_attr("booleanOperator", "unknown operator")),
                };
                let mut preds = Vec::new();
                for k in p.kids() {
                    preds.push(self.predicate(k)?);
                }
                if preds.len() < 2 {
                    return Err(p.invalid("CompoundPredicate needs at least two predicates"));
                }
                Predicate::Compound { op, preds }
            }
            other => return Err(p.invalid(format!("<{other}> is not a predicate"))),
        })
    }

    // ----- Models ---------------------------------------------------------------------------

    /// Compiles a model element. `parent_target` is the enclosing MiningModel's target (used
    /// when a segment model declares none). `top` is true for the document's model.
    pub fn model(
        &mut self,
        m: Node,
        parent_target: Option<&TargetInfo>,
        top: bool,
    ) -> Result<Model, LoadError> {
        if m.attr("isScorable") == Some("false") {
            return Err(m.unsupported("model with isScorable=\"false\""));
        }
        let function = m.req_attr("functionName")?;
        self.enter(m)?;
        self.push_scope();
        let result = self.model_in_scope(m, function, parent_target, top);
        self.pop_scope();
        self.nesting -= 1;
        result
    }

    fn model_in_scope(
        &mut self,
        m: Node,
        function: &str,
        parent_target: Option<&TargetInfo>,
        top: bool,
    ) -> Result<Model, LoadError> {
        let schema = m.req_kid("MiningSchema")?;
        let mut target_name: Option<String> = None;
        for mf in schema.kids_named("MiningField") {
            let name = mf.req_attr("name")?;
            let usage = mf.attr("usageType").unwrap_or("active");
            let source = self.lookup(name).ok_or_else(|| LoadError::UnknownField {
                element: "MiningField".into(),
                field: name.to_string(),
                line: mf.line(),
            })?;
            match usage {
                "target" | "predicted" => {
                    if target_name.is_none() {
                        target_name = Some(name.to_string());
                    } else {
                        return Err(mf.unsupported("more than one target field"));
                    }
                    continue;
                }
                "active" => {}
                "supplementary" | "group" | "order" | "frequencyWeight" | "analysisWeight" => {
                    continue
                }
                _ => return Err(mf.bad_attr("usageType", "unknown usage type")),
            }
            let (dt, op) = (self.fields[source].data_type, self.fields[source].op_type);
            let op = match mf.attr("optype") {
                Some(s) => {
                    OpType::parse(s).ok_or_else(|| mf.bad_attr("optype", "unknown optype"))?
                }
                None => op,
            };
            let mut t = if top {
                self.data
                    .get(name)
                    .map(|d| d.treatment.clone())
                    .unwrap_or_else(|| Treatment::plain(dt, op))
            } else {
                Treatment::plain(dt, op)
            };
            t.op_type = op;
            mining_treatment(mf, &mut t)?;
            if top {
                if !matches!(self.fields[source].kind, FieldKind::Input(_)) {
                    return Err(
                        mf.invalid("an active field of the top-level model must be a DataField")
                    );
                }
                if self.inputs.iter().all(|i| i.field != source) {
                    self.fields[source].kind = FieldKind::Input(Some(self.inputs.len()));
                    self.inputs.push(InputDef {
                        input: self.inputs.len(),
                        field: source,
                        plain: t.passes_numbers(),
                        treatment: t,
                    });
                }
            } else if !t.is_noop() {
                self.add_field(
                    name,
                    dt,
                    op,
                    FieldKind::Treated {
                        source,
                        treatment: Box::new(t),
                    },
                );
            }
        }

        let target = match &target_name {
            Some(name) => Some(self.target_info(m, name)?),
            None if m.name() == "ClusteringModel" => {
                Some(crate::models::clustering::default_target(m))
            }
            // A segment without its own target predicts the parent's target field, but the
            // parent's Targets post-processing is applied once, by the parent; the segment's own
            // Targets (if any) apply to it.
            None => match parent_target {
                Some(t) => {
                    let base = TargetInfo {
                        rescale: None,
                        default: None,
                        priors: Vec::new(),
                        ..t.clone()
                    };
                    Some(self.apply_targets(m, base)?)
                }
                None if m.kid("Targets").is_some() => {
                    let base = TargetInfo {
                        name: String::new(),
                        data_type: DataType::Double,
                        op_type: OpType::Continuous,
                        categories: Vec::new(),
                        display: Vec::new(),
                        rescale: None,
                        default: None,
                        priors: Vec::new(),
                    };
                    Some(self.apply_targets(m, base)?)
                }
                None => None,
            },
        };

        if let Some(lt) = m.kid("LocalTransformations") {
            self.local_transformations(lt)?;
        }

        let kind = match m.name() {
            "RegressionModel" => {
                crate::models::regression::compile(self, m, function, target.as_ref())?
            }
            "GeneralRegressionModel" => {
                crate::models::general_regression::compile(self, m, function, target.as_ref())?
            }
            "TreeModel" => crate::models::tree::compile(self, m, function, target.as_ref())?,
            "NeuralNetwork" => crate::models::neural::compile(self, m, function, target.as_ref())?,
            "MiningModel" => {
                crate::models::mining::compile(self, m, function, target.as_ref(), top)?
            }
            "ClusteringModel" => {
                crate::models::clustering::compile(self, m, function, target.as_ref())?
            }
            "Scorecard" => crate::models::scorecard::compile(self, m, function, target.as_ref())?,
            "RuleSetModel" => crate::models::ruleset::compile(self, m, function, target.as_ref())?,
            "NearestNeighborModel" => {
                crate::models::knn::compile(self, m, function, target.as_ref())?
            }
            "NaiveBayesModel" => {
                crate::models::naive_bayes::compile(self, m, function, target.as_ref())?
            }
            "SupportVectorMachineModel" => {
                crate::models::svm::compile(self, m, function, target.as_ref())?
            }
            other => return Err(m.unsupported(format!("model type {other}"))),
        };
        let classification = matches!(function, "classification");
        if !matches!(function, "classification" | "regression" | "clustering") {
            return Err(m.unsupported_attr("functionName"));
        }

        let mut outputs = Vec::new();
        if let Some(out) = m.kid("Output") {
            for of in out.kids_named("OutputField") {
                outputs.push(self.output_field(of, target.as_ref())?);
            }
        }
        // A residual reads the actual target value, which JPMML then lists as an input field
        // (after the active fields).
        if top {
            for o in &outputs {
                if let Feature::Residual(field) = o.feature {
                    if self.inputs.iter().all(|i| i.field != field) {
                        let name = self.fields[field].name.clone();
                        let (dt, op) = (self.fields[field].data_type, self.fields[field].op_type);
                        let treatment = self
                            .data
                            .get(&name)
                            .map(|d| d.treatment.clone())
                            .unwrap_or_else(|| Treatment::plain(dt, op));
                        self.fields[field].kind = FieldKind::Input(Some(self.inputs.len()));
                        self.inputs.push(InputDef {
                            input: self.inputs.len(),
                            field,
                            plain: treatment.passes_numbers(),
                            treatment,
                        });
                    }
                }
            }
        }
        Ok(Model {
            classification,
            target,
            kind,
            outputs,
        })
    }

    fn target_info(&mut self, m: Node, name: &str) -> Result<TargetInfo, LoadError> {
        let field = self
            .lookup(name)
            .ok_or_else(|| m.invalid(format!("unknown target field {name:?}")))?;
        let dt = self.fields[field].data_type;
        let op = self.fields[field].op_type;
        let (categories, display) = match self.data.get(name) {
            Some(d) => (d.categories.clone(), d.display.clone()),
            None => (Vec::new(), Vec::new()),
        };
        let info = TargetInfo {
            name: name.to_string(),
            data_type: dt,
            op_type: op,
            categories,
            display,
            rescale: None,
            default: None,
            priors: Vec::new(),
        };
        self.apply_targets(m, info)
    }

    /// Applies the model's `Targets` element (for this target) to `info`.
    fn apply_targets(&mut self, m: Node, mut info: TargetInfo) -> Result<TargetInfo, LoadError> {
        let dt = info.data_type;
        let name = info.name.clone();
        let mut display = std::mem::take(&mut info.display);
        if let Some(targets) = m.kid("Targets") {
            for t in targets.kids_named("Target") {
                if t.attr("field")
                    .is_some_and(|f| f != name && !name.is_empty())
                {
                    continue;
                }
                let cast = match t.attr("castInteger") {
                    None => None,
                    Some(s @ ("round" | "ceiling" | "floor")) => Some(s.to_string()),
                    Some(_) => {
                        return Err(t.bad_attr("castInteger", "must be round, ceiling or floor"))
                    }
                };
                let r = Rescale {
                    factor: t.f64_attr("rescaleFactor")?.unwrap_or(1.0),
                    constant: t.f64_attr("rescaleConstant")?.unwrap_or(0.0),
                    min: t.f64_attr("min")?,
                    max: t.f64_attr("max")?,
                    cast,
                };
                info.rescale = Some(r);
                for tv in t.kids_named("TargetValue") {
                    if tv.kid("Partition").is_some() {
                        return Err(tv.unsupported("TargetValue with Partition"));
                    }
                    let value = self.typed_const(tv, "value", dt)?;
                    if let Some(d) = tv.f64_attr("defaultValue")? {
                        info.default = Some(d);
                    }
                    if let (Some(v), Some(p)) = (&value, tv.f64_attr("priorProbability")?) {
                        info.priors.push((v.clone(), p));
                    }
                    if let (Some(v), Some(d)) = (&value, tv.attr("displayValue")) {
                        display.insert(0, (v.clone(), d.to_string()));
                    }
                }
            }
        }
        info.display = display;
        Ok(info)
    }

    fn output_field(
        &mut self,
        of: Node,
        target: Option<&TargetInfo>,
    ) -> Result<OutputDef, LoadError> {
        let name = of.req_attr("name")?;
        let dt = of
            .attr("dataType")
            .map(|s| DataType::parse(s).ok_or_else(|| of.unsupported_attr("dataType")))
            .transpose()?;
        let feature_name = of.attr("feature").unwrap_or("predictedValue");
        if of.attr("segmentId").is_some() {
            return Err(of.unsupported_attr("segmentId"));
        }
        let rank = of.parse_attr::<usize>("rank")?.unwrap_or(1);
        if rank == 0 {
            return Err(of.bad_attr("rank", "must be at least 1"));
        }
        if rank != 1 && !matches!(feature_name, "reasonCode" | "entityId") {
            return Err(of.unsupported_attr("rank"));
        }
        if let (Some(tf), Some(t)) = (of.attr("targetField"), target) {
            if tf != t.name {
                return Err(of.unsupported_attr("targetField"));
            }
        }
        let target_dt = target.map_or(DataType::String, |t| t.data_type);
        let feature = match feature_name {
            "predictedValue" => Feature::PredictedValue,
            "predictedDisplayValue" => Feature::PredictedDisplayValue,
            "probability" => Feature::Probability(self.typed_const(of, "value", target_dt)?),
            "affinity" | "clusterAffinity" | "entityAffinity" => {
                Feature::Affinity(of.attr("value").map(|v| Value::String(v.to_string())))
            }
            "confidence" => Feature::Confidence(self.typed_const(of, "value", target_dt)?),
            "entityId" => Feature::EntityId(rank),
            "residual" => {
                let t = target.filter(|t| !t.name.is_empty() && t.name != crate::DEFAULT_TARGET);
                let t = t.ok_or_else(|| of.invalid("a residual needs a target field"))?;
                if t.op_type != OpType::Continuous {
                    return Err(of.unsupported("residual of a categorical target"));
                }
                let field = self
                    .lookup(&t.name)
                    .ok_or_else(|| of.invalid("unknown target field"))?;
                Feature::Residual(field)
            }
            "reasonCode" => Feature::ReasonCode(rank),
            "transformedValue" | "decision" => {
                let e = of
                    .kids()
                    .into_iter()
                    .find(|k| !matches!(k.name(), "Decisions" | "Value"))
                    .ok_or_else(|| {
                        of.invalid("transformedValue output field without an expression")
                    })?;
                Feature::Transformed(self.expression(e)?)
            }
            _ => return Err(of.unsupported_attr("feature")),
        };
        let final_result = of.attr("isFinalResult") != Some("false");
        let out_dt = dt.unwrap_or(match &feature {
            Feature::Probability(_)
            | Feature::Confidence(_)
            | Feature::Affinity(_)
            | Feature::Residual(_) => DataType::Double,
            Feature::PredictedDisplayValue | Feature::EntityId(_) | Feature::ReasonCode(_) => {
                DataType::String
            }
            _ => target_dt,
        });
        let op = OpType::default_for(out_dt);
        let field = self.add_field(name, out_dt, op, FieldKind::External);
        Ok(OutputDef {
            name: name.to_string(),
            field,
            feature,
            data_type: dt,
            final_result,
        })
    }

    /// The categories of a classification target (DataField values), for models that need them.
    pub fn categories(&self, target: Option<&TargetInfo>) -> Vec<Value> {
        target.map(|t| t.categories.clone()).unwrap_or_default()
    }

    /// Parses a label (score, targetCategory) as the target's data type.
    pub fn label(&self, raw: &str, target: Option<&TargetInfo>) -> Value {
        let dt = target.map_or(DataType::String, |t| t.data_type);
        parse_as(raw, dt).unwrap_or_else(|| Value::String(raw.to_string()))
    }
}

/// Wraps a ModelKind into a dummy; used by model modules for nested compilation.
pub(crate) fn const_value(s: &str) -> Value {
    if let Ok(i) = s.trim().parse::<i64>() {
        return Value::Integer(i);
    }
    match crate::value::parse_f64(s) {
        Some(f) => Value::Double(f),
        None => Value::String(s.to_string()),
    }
}

fn mining_treatment(mf: Node, t: &mut Treatment) -> Result<(), LoadError> {
    if let Some(r) = mf.attr("missingValueReplacement") {
        t.missing_replacement = Some(parse_as(r, t.data_type).ok_or_else(|| {
            mf.bad_attr(
                "missingValueReplacement",
                "not valid for the field's data type",
            )
        })?);
    }
    match mf.attr("missingValueTreatment").unwrap_or("asIs") {
        "asIs" | "asMean" | "asMode" | "asMedian" | "asValue" => {}
        "returnInvalid" => t.missing_is_invalid = true,
        _ => return Err(mf.bad_attr("missingValueTreatment", "unknown treatment")),
    }
    t.invalid = match mf.attr("invalidValueTreatment").unwrap_or("returnInvalid") {
        "returnInvalid" => InvalidTreatment::ReturnInvalid,
        "asIs" => InvalidTreatment::AsIs,
        "asMissing" => InvalidTreatment::AsMissing,
        "asValue" => {
            let r = mf.req_attr("invalidValueReplacement")?;
            InvalidTreatment::AsValue(parse_as(r, t.data_type).ok_or_else(|| {
                mf.bad_attr(
                    "invalidValueReplacement",
                    "not valid for the field's data type",
                )
            })?)
        }
        _ => return Err(mf.bad_attr("invalidValueTreatment", "unknown treatment")),
    };
    let low = mf.f64_attr("lowValue")?;
    let high = mf.f64_attr("highValue")?;
    t.outliers = match mf.attr("outliers").unwrap_or("asIs") {
        "asIs" => Outliers::AsIs,
        "asMissingValues" => Outliers::AsMissing {
            low: low.unwrap_or(f64::NEG_INFINITY),
            high: high.unwrap_or(f64::INFINITY),
        },
        "asExtremeValues" => Outliers::AsExtreme {
            low: low.unwrap_or(f64::NEG_INFINITY),
            high: high.unwrap_or(f64::INFINITY),
        },
        _ => return Err(mf.bad_attr("outliers", "unknown outlier treatment")),
    };
    Ok(())
}

pub(crate) fn interval(i: Node) -> Result<Interval, LoadError> {
    let closure = i.req_attr("closure")?;
    let (left_closed, right_closed) = match closure {
        "openClosed" => (false, true),
        "openOpen" => (false, false),
        "closedOpen" => (true, false),
        "closedClosed" => (true, true),
        _ => return Err(i.bad_attr("closure", "unknown closure")),
    };
    Ok(Interval {
        left: i.f64_attr("leftMargin")?,
        right: i.f64_attr("rightMargin")?,
        left_closed,
        right_closed,
    })
}

/// Splits a PMML Array's text into its entries (whitespace separated, `"..."` quoting with `\"`).
pub(crate) fn parse_array(arr: Node) -> Result<Vec<String>, LoadError> {
    let text = arr.text().unwrap_or("");
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(arr.invalid("unterminated quoted entry")),
                    Some('\\') => match chars.next() {
                        Some(n) => s.push(n),
                        None => return Err(arr.invalid("dangling escape")),
                    },
                    Some('"') => break,
                    Some(o) => s.push(o),
                }
            }
            out.push(s);
        } else {
            let mut s = String::new();
            while let Some(&n) = chars.peek() {
                if n.is_whitespace() {
                    break;
                }
                s.push(n);
                chars.next();
            }
            out.push(s);
        }
    }
    if let Some(n) = arr.parse_attr::<usize>("n")? {
        if n != out.len() {
            return Err(arr.bad_attr("n", "does not match the number of entries"));
        }
    }
    Ok(out)
}
