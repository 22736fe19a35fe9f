//! GeneralRegressionModel (regression, generalLinear, generalizedLinear, multinomialLogistic,
//! ordinalMultinomial).

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::expr::normal_cdf;
use crate::fields::{Ctx, FieldId};
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::models::regression::normalize;
use crate::value::{parse_as, Value};
use crate::xml::El;
use roxmltree::Node;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    Identity,
    Log,
    Logit,
    Probit,
    Cloglog,
    Loglog,
    Cauchit,
    Power(f64),
    OddsPower(f64),
    NegBin(f64),
    Logc,
}

impl Link {
    fn inverse(self, eta: f64) -> f64 {
        match self {
            Link::Identity => eta,
            Link::Log => eta.exp(),
            Link::Logit => 1.0 / (1.0 + (-eta).exp()),
            Link::Probit => normal_cdf(eta),
            Link::Cloglog => 1.0 - (-(eta.exp())).exp(),
            Link::Loglog => (-((-eta).exp())).exp(),
            Link::Cauchit => 0.5 + (1.0 / std::f64::consts::PI) * eta.atan(),
            Link::Power(a) => {
                if a == 0.0 {
                    eta.exp()
                } else {
                    eta.powf(1.0 / a)
                }
            }
            Link::OddsPower(a) => {
                if a == 0.0 {
                    1.0 / (1.0 + (-eta).exp())
                } else {
                    1.0 / (1.0 + (1.0 + a * eta).powf(-1.0 / a))
                }
            }
            Link::NegBin(a) => 1.0 / (a * ((-eta).exp() - 1.0)),
            Link::Logc => 1.0 - eta.exp(),
        }
    }
}

#[derive(Debug)]
enum Term {
    Covariate(FieldId, f64),
    Factor(FieldId, Value),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Linear,
    Generalized(Link),
    Multinomial,
    Ordinal(Link),
}

#[derive(Debug)]
pub(crate) struct GeneralRegression {
    kind: Kind,
    /// Per parameter: its PPMatrix terms (a product; empty = 1).
    params: Vec<Vec<Term>>,
    /// When every parameter is the constant 1 or one covariate with exponent 1 (the usual
    /// linear model): per parameter, `None` = 1, `Some(field)` = that field's value.
    simple_params: Option<Vec<Option<FieldId>>>,
    /// Per target category (or one row for regression): (param index, beta).
    betas: Vec<Vec<(usize, f64)>>,
    /// Categories in target order (classification).
    categories: Vec<Value>,
    /// Index of the reference category (multinomial).
    reference: Option<usize>,
    offset_value: f64,
    offset_field: Option<FieldId>,
    trials_value: Option<f64>,
    trials_field: Option<FieldId>,
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    let model_type = m.req_attr("modelType")?;
    let link_param = m.f64_attr("linkParameter")?;
    let link = |attr: &str| -> Result<Link, LoadError> {
        Ok(match m.attr(attr).unwrap_or("") {
            "identity" => Link::Identity,
            "log" => Link::Log,
            "logit" => Link::Logit,
            "probit" => Link::Probit,
            "cloglog" => Link::Cloglog,
            "loglog" => Link::Loglog,
            "cauchit" => Link::Cauchit,
            "logc" => Link::Logc,
            "power" => Link::Power(
                link_param
                    .ok_or_else(|| m.bad_attr("linkParameter", "required by the power link"))?,
            ),
            "oddspower" => Link::OddsPower(
                link_param
                    .ok_or_else(|| m.bad_attr("linkParameter", "required by the oddspower link"))?,
            ),
            "negbin" => Link::NegBin(
                m.f64_attr("distParameter")?
                    .ok_or_else(|| m.bad_attr("distParameter", "required by the negbin link"))?,
            ),
            "" => return Err(m.bad_attr(attr, "required for this modelType")),
            _ => return Err(m.unsupported_attr(attr)),
        })
    };
    let kind = match model_type {
        "regression" | "generalLinear" => Kind::Linear,
        "generalizedLinear" => Kind::Generalized(link("linkFunction")?),
        "multinomialLogistic" => Kind::Multinomial,
        "ordinalMultinomial" => Kind::Ordinal(link("cumulativeLink")?),
        _ => return Err(m.unsupported_attr("modelType")),
    };
    let classification = function == "classification";
    if classification != matches!(kind, Kind::Multinomial | Kind::Ordinal(_)) {
        return Err(m.bad_attr("modelType", "does not match functionName"));
    }
    let mut param_index: HashMap<String, usize> = HashMap::new();
    let plist = m.req_kid("ParameterList")?;
    for p in plist.kids_named("Parameter") {
        let n = param_index.len();
        if param_index
            .insert(p.req_attr("name")?.to_string(), n)
            .is_some()
        {
            return Err(p.bad_attr("name", "a second Parameter of this name"));
        }
    }
    let mut params: Vec<Vec<Term>> = (0..param_index.len()).map(|_| Vec::new()).collect();
    let mut factors = Vec::new();
    if let Some(fl) = m.kid("FactorList") {
        for p in fl.kids_named("Predictor") {
            if p.kid("Categories").is_some() || p.kid("Matrix").is_some() {
                return Err(p.unsupported("factor with a contrast matrix"));
            }
            factors.push(p.req_attr("name")?);
        }
    }
    if let Some(pp) = m.kid("PPMatrix") {
        for cell in pp.kids_named("PPCell") {
            if cell.attr("targetCategory").is_some() {
                return Err(cell.unsupported_attr("targetCategory"));
            }
            let pi = *param_index
                .get(cell.req_attr("parameterName")?)
                .ok_or_else(|| cell.bad_attr("parameterName", "unknown parameter"))?;
            let field = c.field_ref(cell, "predictorName")?;
            let value = cell.req_attr("value")?;
            let is_factor = factors.contains(&cell.req_attr("predictorName")?);
            let term = if is_factor {
                Term::Factor(
                    field,
                    parse_as(value, c.dt(field))
                        .unwrap_or_else(|| Value::String(value.to_string())),
                )
            } else {
                Term::Covariate(
                    field,
                    crate::value::parse_f64(value)
                        .ok_or_else(|| cell.bad_attr("value", "not a number"))?,
                )
            };
            params[pi].push(term);
        }
    }
    let categories: Vec<Value> = if classification {
        c.categories(target)
    } else {
        Vec::new()
    };
    if classification && categories.is_empty() {
        return Err(m.invalid("classification target without categories"));
    }
    let rows = if classification { categories.len() } else { 1 };
    let mut betas: Vec<Vec<(usize, f64)>> = vec![Vec::new(); rows];
    let mut has_cells = vec![false; rows];
    let pm = m.req_kid("ParamMatrix")?;
    let mut common = Vec::new();
    for cell in pm.kids_named("PCell") {
        let pi = *param_index
            .get(cell.req_attr("parameterName")?)
            .ok_or_else(|| cell.bad_attr("parameterName", "unknown parameter"))?;
        let beta = cell.req_f64("beta")?;
        match (classification, cell.attr("targetCategory")) {
            (true, Some(tc)) => {
                let label = c.label(tc, target);
                let row = categories
                    .iter()
                    .position(|x| x.equals(&label))
                    .ok_or_else(|| {
                        cell.bad_attr("targetCategory", "not a category of the target")
                    })?;
                betas[row].push((pi, beta));
                has_cells[row] = true;
            }
            (true, None) => common.push((pi, beta)),
            (false, _) => betas[0].push((pi, beta)),
        }
    }
    let mut reference = None;
    if kind == Kind::Multinomial {
        if !common.is_empty() {
            return Err(pm.invalid("multinomialLogistic PCell without targetCategory"));
        }
        reference = match m.attr("targetReferenceCategory") {
            Some(r) => {
                let label = c.label(r, target);
                categories.iter().position(|x| x.equals(&label))
            }
            None => has_cells.iter().position(|h| !h),
        };
        if reference.is_none() {
            return Err(m.invalid("cannot determine the reference category"));
        }
    }
    if let Kind::Ordinal(_) = kind {
        // Intercepts per category (targetCategory cells), common slopes.
        for row in betas.iter_mut() {
            row.extend(common.iter().copied());
        }
    }
    let simple_params = params
        .iter()
        .map(|terms| match terms.as_slice() {
            [] => Some(None),
            [Term::Covariate(f, e)] if *e == 1.0 => Some(Some(*f)),
            _ => None,
        })
        .collect();
    Ok(ModelKind::GeneralRegression(GeneralRegression {
        kind,
        simple_params,
        params,
        betas,
        categories,
        reference,
        offset_value: m.f64_attr("offsetValue")?.unwrap_or(0.0),
        offset_field: m
            .attr("offsetVariable")
            .map(|_| c.field_ref(m, "offsetVariable"))
            .transpose()?,
        trials_value: m.f64_attr("trialsValue")?,
        trials_field: m
            .attr("trialsVariable")
            .map(|_| c.field_ref(m, "trialsVariable"))
            .transpose()?,
    }))
}

thread_local! {
    /// Per-thread buffer for the parameters' term values, reused across records.
    static TERMS: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

impl GeneralRegression {
    /// Values of the parameters' terms into `xs`; `false` when an input is missing.
    fn terms(&self, ctx: &mut Ctx, xs: &mut Vec<f64>) -> Result<bool, EvalError> {
        xs.clear();
        xs.reserve(self.params.len());
        if let Some(simple) = &self.simple_params {
            // Same values as the general loop below: 1.0, or 1.0 * v == v.
            for p in simple {
                xs.push(match p {
                    None => 1.0,
                    Some(f) => match ctx.num(*f)? {
                        Some(v) => v,
                        None => return Ok(false),
                    },
                });
            }
            return Ok(true);
        }
        for terms in &self.params {
            let mut x = 1.0;
            for t in terms {
                match t {
                    Term::Covariate(f, e) => {
                        let Some(v) = ctx.num(*f)? else {
                            return Ok(false);
                        };
                        x *= if *e == 1.0 {
                            v
                        } else {
                            crate::value::powf(v, *e)
                        };
                    }
                    Term::Factor(f, level) => {
                        let v = ctx.get(*f)?;
                        if v.is_missing() {
                            return Ok(false);
                        }
                        if !(v.equals(level) || v.to_string() == level.to_string()) {
                            x = 0.0;
                        }
                    }
                }
            }
            xs.push(x);
        }
        Ok(true)
    }

    /// `true` for a regression (general linear or generalized linear model), whose prediction
    /// is a double: what [`GeneralRegression::number`] computes.
    pub fn is_regression(&self) -> bool {
        matches!(self.kind, Kind::Linear | Kind::Generalized(_))
    }

    /// The predicted number of a regression ([`GeneralRegression::is_regression`]; `None`: no
    /// prediction) — the value of [`GeneralRegression::evaluate`]'s prediction, without
    /// building a [`Prediction`].
    pub fn number(&self, ctx: &mut Ctx) -> Result<Option<f64>, EvalError> {
        let mut xs = TERMS.with(std::cell::Cell::take);
        let r = self.number_with(ctx, &mut xs);
        TERMS.with(|t| t.set(xs));
        r
    }

    fn number_with(&self, ctx: &mut Ctx, xs: &mut Vec<f64>) -> Result<Option<f64>, EvalError> {
        if !self.terms(ctx, xs)? {
            return Ok(None);
        }
        let xs = &xs[..];
        let dot = |row: &[(usize, f64)]| row.iter().map(|(p, b)| b * xs[*p]).sum::<f64>();
        let mut eta = dot(&self.betas[0]);
        let offset = match self.offset_field {
            Some(f) => match ctx.num(f)? {
                Some(v) => v,
                None => return Ok(None),
            },
            None => self.offset_value,
        };
        // JPMML applies the offset to generalizedLinear models only.
        if let Kind::Generalized(_) = self.kind {
            eta += offset;
        }
        let mut y = match self.kind {
            Kind::Generalized(link) => link.inverse(eta),
            _ => eta,
        };
        if let Kind::Generalized(_) = self.kind {
            let trials = match self.trials_field {
                Some(f) => ctx.num(f)?,
                None => self.trials_value,
            };
            if let Some(t) = trials {
                y *= t;
            }
        }
        Ok(Some(y))
    }

    pub fn evaluate(&self, ctx: &mut Ctx, model: &Model) -> Result<Prediction, EvalError> {
        if self.is_regression() {
            return Ok(match self.number(ctx)? {
                Some(y) => Prediction::Value {
                    value: Value::Double(y),
                    entity: None,
                },
                None => Prediction::Missing,
            });
        }
        let mut xs = TERMS.with(std::cell::Cell::take);
        let r = self.evaluate_with(ctx, model, &mut xs);
        TERMS.with(|t| t.set(xs));
        r
    }

    fn evaluate_with(
        &self,
        ctx: &mut Ctx,
        _model: &Model,
        xs: &mut Vec<f64>,
    ) -> Result<Prediction, EvalError> {
        if !self.terms(ctx, xs)? {
            return Ok(Prediction::Missing);
        }
        let xs = &xs[..];
        let dot = |row: &[(usize, f64)]| row.iter().map(|(p, b)| b * xs[*p]).sum::<f64>();
        match self.kind {
            // Handled by `number` (see `evaluate`).
            Kind::Linear | Kind::Generalized(_) => Err(EvalError::InvalidResult(
                "internal: a regression GeneralRegressionModel takes the numeric path".into(),
            )),
            Kind::Multinomial => {
                let reference = self.reference.unwrap_or(0);
                let mut etas: Vec<f64> = self
                    .betas
                    .iter()
                    .enumerate()
                    .map(|(i, row)| if i == reference { 0.0 } else { dot(row) })
                    .collect();
                normalize(&mut etas, true);
                Ok(Prediction::from_distribution(self.categories.clone(), etas))
            }
            Kind::Ordinal(link) => {
                let n = self.categories.len();
                let mut probs = vec![0.0; n];
                let mut prev = 0.0;
                for (i, p) in probs.iter_mut().enumerate() {
                    let cum = if i + 1 == n {
                        1.0
                    } else {
                        link.inverse(dot(&self.betas[i]))
                    };
                    *p = cum - prev;
                    prev = cum;
                }
                Ok(Prediction::from_distribution(
                    self.categories.clone(),
                    probs,
                ))
            }
        }
    }
}
