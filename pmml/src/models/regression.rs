//! RegressionModel.

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::fields::{Ctx, FieldId};
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::value::{parse_as, OpType, Value};
use crate::xml::El;
use roxmltree::Node;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Norm {
    None,
    Softmax,
    Logit,
    Simplemax,
    Exp,
    Probit,
    Cloglog,
    Loglog,
    Cauchit,
}

#[derive(Debug)]
pub(crate) struct Table {
    intercept: f64,
    numeric: Vec<(FieldId, f64, i32)>,
    categorical: Vec<(FieldId, Value, f64)>,
    terms: Vec<(Vec<FieldId>, f64)>,
    category: Value,
    /// Only numeric predictors, all with exponent 1 (a plain dot product).
    linear: bool,
}

#[derive(Debug)]
pub(crate) struct Regression {
    tables: Vec<Table>,
    norm: Norm,
    ordinal: bool,
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    let norm = match m.attr("normalizationMethod").unwrap_or("none") {
        "none" => Norm::None,
        "softmax" => Norm::Softmax,
        "logit" => Norm::Logit,
        "simplemax" => Norm::Simplemax,
        "exp" => Norm::Exp,
        "probit" => Norm::Probit,
        "cloglog" => Norm::Cloglog,
        "loglog" => Norm::Loglog,
        "cauchit" => Norm::Cauchit,
        _ => return Err(m.unsupported_attr("normalizationMethod")),
    };
    let mut tables = Vec::new();
    for t in m.kids_named("RegressionTable") {
        let mut table = Table {
            intercept: t.req_f64("intercept")?,
            numeric: Vec::new(),
            categorical: Vec::new(),
            terms: Vec::new(),
            category: t
                .attr("targetCategory")
                .map(|s| c.label(s, target))
                .unwrap_or(Value::Missing),
            linear: false,
        };
        for p in t.kids_named("NumericPredictor") {
            let f = c.field_ref(p, "name")?;
            let exp = p.parse_attr::<i32>("exponent")?.unwrap_or(1);
            table.numeric.push((f, p.req_f64("coefficient")?, exp));
        }
        for p in t.kids_named("CategoricalPredictor") {
            let f = c.field_ref(p, "name")?;
            let raw = p.req_attr("value")?;
            let v = parse_as(raw, c.dt(f)).unwrap_or_else(|| Value::String(raw.to_string()));
            table.categorical.push((f, v, p.req_f64("coefficient")?));
        }
        for p in t.kids_named("PredictorTerm") {
            let mut fs = Vec::new();
            for r in p.kids_named("FieldRef") {
                fs.push(c.field_ref(r, "field")?);
            }
            table.terms.push((fs, p.req_f64("coefficient")?));
        }
        table.linear = table.categorical.is_empty()
            && table.terms.is_empty()
            && table.numeric.iter().all(|(_, _, e)| *e == 1);
        tables.push(table);
    }
    if tables.is_empty() {
        return Err(m.invalid("no RegressionTable"));
    }
    let classification = function == "classification";
    if classification {
        if tables.len() < 2 {
            return Err(m.invalid("classification needs at least two RegressionTables"));
        }
        if tables.iter().any(|t| t.category.is_missing()) {
            return Err(
                m.invalid("every RegressionTable of a classification needs a targetCategory")
            );
        }
        let ordinal = target.is_some_and(|t| t.op_type == OpType::Ordinal);
        let n = tables.len();
        let ok = if ordinal {
            matches!(
                norm,
                Norm::None
                    | Norm::Logit
                    | Norm::Probit
                    | Norm::Cloglog
                    | Norm::Loglog
                    | Norm::Cauchit
            )
        } else if n == 2 {
            norm != Norm::Exp
        } else {
            matches!(
                norm,
                Norm::None | Norm::Simplemax | Norm::Softmax | Norm::Logit
            )
        };
        if !ok {
            return Err(m.bad_attr(
                "normalizationMethod",
                "not applicable to this classification",
            ));
        }
        return Ok(ModelKind::Regression(Regression {
            tables,
            norm,
            ordinal,
        }));
    }
    if norm == Norm::Simplemax {
        return Err(m.bad_attr("normalizationMethod", "not applicable to regression"));
    }
    Ok(ModelKind::Regression(Regression {
        tables,
        norm,
        ordinal: false,
    }))
}

#[inline]
fn eval_table(t: &Table, ctx: &mut Ctx) -> Result<Option<f64>, EvalError> {
    if t.linear {
        // The dot product over values at hand (no call in the loop, so the sum stays in a
        // register); the same sum in the same order as `eval_table_general`, which takes over
        // when a value is not at hand (missing, to be computed or converted).
        let mut r = 0.0;
        for (f, coef, _) in &t.numeric {
            match ctx.double_at_hand(*f) {
                Some(x) => r += coef * x,
                None => return eval_table_general(t, ctx),
            }
        }
        if t.intercept != 0.0 {
            r += t.intercept;
        }
        return Ok(Some(r));
    }
    eval_table_general(t, ctx)
}

#[inline(never)]
fn eval_table_general(t: &Table, ctx: &mut Ctx) -> Result<Option<f64>, EvalError> {
    let mut r = 0.0;
    for (f, coef, exp) in &t.numeric {
        let Some(x) = ctx.num(*f)? else {
            return Ok(None);
        };
        if *exp == 1 {
            r += coef * x;
        } else {
            r += coef * crate::value::powi(x, *exp);
        }
    }
    let mut matched: Option<FieldId> = None;
    for (f, v, coef) in &t.categorical {
        if matched == Some(*f) {
            continue;
        }
        matched = None;
        let x = ctx.get(*f)?;
        if x.is_missing() {
            matched = Some(*f);
            continue;
        }
        if x.equals(v) || (x.as_str().is_none() && v.as_str() == Some(&x.to_string())) {
            matched = Some(*f);
            r += coef;
        }
    }
    for (fs, coef) in &t.terms {
        let mut prod = *coef;
        for f in fs {
            let Some(x) = ctx.num(*f)? else {
                return Ok(None);
            };
            prod *= x;
        }
        r += prod;
    }
    if t.intercept != 0.0 {
        r += t.intercept;
    }
    Ok(Some(r))
}

pub(crate) fn inverse_link(norm: Norm, y: f64) -> f64 {
    match norm {
        Norm::None | Norm::Simplemax => y,
        Norm::Softmax | Norm::Logit => 1.0 / (1.0 + (-y).exp()),
        Norm::Exp => y.exp(),
        Norm::Probit => crate::expr::normal_cdf(y),
        Norm::Cloglog => 1.0 - (-(y.exp())).exp(),
        Norm::Loglog => (-((-y).exp())).exp(),
        Norm::Cauchit => 0.5 + (1.0 / std::f64::consts::PI) * y.atan(),
    }
}

fn binary(norm: Norm, y: f64) -> f64 {
    match norm {
        Norm::None => y.clamp(0.0, 1.0),
        other => inverse_link(other, y),
    }
}

/// Softmax/simplemax normalisation in place (JPMML's ValueUtil semantics).
pub(crate) fn normalize(values: &mut [f64], softmax: bool) {
    if softmax {
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for v in values.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in values.iter_mut() {
            *v /= sum;
        }
    } else {
        let sum: f64 = values.iter().sum();
        for v in values.iter_mut() {
            *v /= sum;
        }
    }
}

impl Regression {
    /// The predicted number of a regression (`None`: no prediction) — the value of
    /// [`Regression::evaluate`]'s prediction, which is a double unless the target is a float.
    #[inline]
    pub fn number(&self, ctx: &mut Ctx) -> Result<Option<f64>, EvalError> {
        Ok(eval_table(&self.tables[0], ctx)?.map(|y| inverse_link(self.norm, y)))
    }

    pub fn evaluate(&self, ctx: &mut Ctx, model: &Model) -> Result<Prediction, EvalError> {
        if !model.classification {
            return Ok(match self.number(ctx)? {
                Some(y) => Prediction::Value {
                    value: match model.target.as_ref().map(|t| t.data_type) {
                        Some(crate::value::DataType::Float) => Value::Float(y as f32),
                        _ => Value::Double(y),
                    },
                    entity: None,
                },
                None => Prediction::Missing,
            });
        }
        let mut ys = Vec::with_capacity(self.tables.len());
        for t in &self.tables {
            match eval_table(t, ctx)? {
                Some(y) => ys.push(y),
                None => return Ok(Prediction::Missing),
            }
        }
        let n = ys.len();
        if self.ordinal {
            let mut sum = 0.0;
            for (i, y) in ys.iter_mut().enumerate().take(n - 1) {
                *y = binary(self.norm, *y);
                if i > 0 {
                    *y -= sum;
                }
                sum += *y;
            }
            ys[n - 1] = 1.0 - sum;
        } else if n == 2
            && self.norm != Norm::Simplemax
            && (self.norm != Norm::Softmax || is_default(&self.tables[1]))
        {
            let norm = if self.norm == Norm::Softmax {
                Norm::Logit
            } else {
                self.norm
            };
            ys[0] = binary(norm, ys[0]);
            ys[1] = 1.0 - ys[0];
        } else {
            match self.norm {
                Norm::None => {
                    let sum: f64 = ys[..n - 1].iter().sum();
                    ys[n - 1] = 1.0 - sum;
                }
                Norm::Logit => {
                    for y in ys.iter_mut() {
                        *y = 1.0 / (1.0 + (-*y).exp());
                    }
                    normalize(&mut ys, false);
                }
                Norm::Simplemax => normalize(&mut ys, false),
                _ => normalize(&mut ys, true),
            }
        }
        let labels: Vec<Value> = self.tables.iter().map(|t| t.category.clone()).collect();
        Ok(Prediction::from_distribution(labels, ys))
    }
}

fn is_default(t: &Table) -> bool {
    t.numeric.is_empty() && t.categorical.is_empty() && t.terms.is_empty() && t.intercept == 0.0
}
