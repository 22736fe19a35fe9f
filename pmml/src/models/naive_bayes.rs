//! NaiveBayesModel (categorical PairCounts, Discretize-d inputs, Gaussian/Poisson
//! TargetValueStats), computed on a logarithmic scale as JPMML does.

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::expr::Expr;
use crate::fields::{Ctx, FieldId};
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::models::regression::normalize;
use crate::value::{parse_as, Value};
use crate::xml::El;
use roxmltree::Node;

#[derive(Debug, Clone, Copy)]
enum Dist {
    Gaussian { mean: f64, variance: f64 },
    Poisson { mean: f64 },
}

#[derive(Debug)]
enum Input {
    /// (input value, per-target-category counts as (category index, count)), and the per-target
    /// count sums of this input.
    Counts {
        field: FieldId,
        discretize: Option<Expr>,
        pairs: Vec<(Value, Vec<(usize, f64)>)>,
        sums: Vec<f64>,
    },
    Stats {
        field: FieldId,
        stats: Vec<(usize, Dist)>,
    },
}

#[derive(Debug)]
pub(crate) struct NaiveBayes {
    labels: Vec<Value>,
    priors: Vec<f64>,
    threshold: f64,
    inputs: Vec<Input>,
}

fn label_index(labels: &mut Vec<Value>, v: Value) -> usize {
    match labels.iter().position(|l| l.equals(&v)) {
        Some(i) => i,
        None => {
            labels.push(v);
            labels.len() - 1
        }
    }
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    if function != "classification" {
        return Err(m.bad_attr("functionName", "NaiveBayesModel is a classification"));
    }
    let threshold = m.req_f64("threshold")?;
    let out = m.req_kid("BayesOutput")?;
    let mut labels = Vec::new();
    let mut priors = Vec::new();
    for tvc in out
        .req_kid("TargetValueCounts")?
        .kids_named("TargetValueCount")
    {
        let i = label_index(&mut labels, c.label(tvc.req_attr("value")?, target));
        if i == priors.len() {
            priors.push(tvc.req_f64("count")?);
        }
    }
    let mut inputs = Vec::new();
    for bi in m.req_kid("BayesInputs")?.kids_named("BayesInput") {
        let field = c.field_ref(bi, "fieldName")?;
        if let Some(tvs) = bi.kid("TargetValueStats") {
            let mut stats = Vec::new();
            for s in tvs.kids_named("TargetValueStat") {
                let i = label_index(&mut labels, c.label(s.req_attr("value")?, target));
                let d = if let Some(g) = s.kid("GaussianDistribution") {
                    Dist::Gaussian {
                        mean: g.req_f64("mean")?,
                        variance: g.req_f64("variance")?,
                    }
                } else if let Some(p) = s.kid("PoissonDistribution") {
                    Dist::Poisson {
                        mean: p.req_f64("mean")?,
                    }
                } else {
                    return Err(s.unsupported("distribution other than Gaussian or Poisson"));
                };
                stats.push((i, d));
            }
            inputs.push(Input::Stats { field, stats });
            continue;
        }
        let discretize = match bi.kid("DerivedField") {
            Some(df) => {
                let e = df
                    .kids()
                    .into_iter()
                    .next()
                    .ok_or_else(|| df.invalid("no expression"))?;
                if e.name() != "Discretize" {
                    return Err(e.invalid("BayesInput DerivedField must be a Discretize"));
                }
                Some(c.anonymous_derived(df)?.0)
            }
            None => None,
        };
        let dt = c.dt(field);
        let mut pairs = Vec::new();
        let mut sums: Vec<f64> = Vec::new();
        for pc in bi.kids_named("PairCounts") {
            let raw = pc.req_attr("value")?;
            let v = if discretize.is_some() {
                Value::String(raw.to_string())
            } else {
                parse_as(raw, dt).unwrap_or_else(|| Value::String(raw.to_string()))
            };
            let mut counts = Vec::new();
            for tvc in pc
                .req_kid("TargetValueCounts")?
                .kids_named("TargetValueCount")
            {
                let i = label_index(&mut labels, c.label(tvc.req_attr("value")?, target));
                let n = tvc.req_f64("count")?;
                if sums.len() <= i {
                    sums.resize(i + 1, 0.0);
                }
                sums[i] += n;
                counts.push((i, n));
            }
            pairs.push((v, counts));
        }
        inputs.push(Input::Counts {
            field,
            discretize,
            pairs,
            sums,
        });
    }
    priors.resize(labels.len(), 0.0);
    Ok(ModelKind::NaiveBayes(NaiveBayes {
        labels,
        priors,
        threshold,
        inputs,
    }))
}

fn density(d: Dist, x: f64) -> f64 {
    match d {
        Dist::Gaussian { mean, variance } => {
            let sd = variance.sqrt();
            let z = (x - mean) / sd;
            (-0.5 * z * z - (sd.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln())).exp()
        }
        Dist::Poisson { mean } => {
            if x < 0.0 || x.fract() != 0.0 {
                return 0.0;
            }
            let mut lf = 0.0;
            let mut k = 2.0;
            while k <= x {
                lf += f64::ln(k);
                k += 1.0;
            }
            (x * mean.ln() - mean - lf).exp()
        }
    }
}

impl NaiveBayes {
    pub fn evaluate(&self, ctx: &mut Ctx, _model: &Model) -> Result<Prediction, EvalError> {
        let mut logp: Vec<f64> = self.priors.iter().map(|p| p.ln()).collect();
        for input in &self.inputs {
            match input {
                Input::Stats { field, stats } => {
                    let Some(x) = ctx.num(*field)? else { continue };
                    for (i, d) in stats {
                        let mut p = density(*d, x);
                        if p < self.threshold {
                            p = self.threshold;
                        }
                        logp[*i] += p.ln();
                    }
                }
                Input::Counts {
                    field,
                    discretize,
                    pairs,
                    sums,
                } => {
                    let v = ctx.get(*field)?;
                    if v.is_missing() {
                        continue;
                    }
                    let v = match discretize {
                        Some(e) => {
                            let d = e.eval(ctx)?;
                            if d.is_missing() {
                                continue;
                            }
                            Value::String(d.to_string())
                        }
                        None => v,
                    };
                    let Some((_, counts)) = pairs
                        .iter()
                        .find(|(k, _)| k.equals(&v) || k.to_string() == v.to_string())
                    else {
                        continue;
                    };
                    for (i, cnt) in counts {
                        let p = if cnt.abs() < 1e-15 {
                            self.threshold
                        } else {
                            cnt / sums.get(*i).copied().unwrap_or(0.0)
                        };
                        logp[*i] += p.ln();
                    }
                }
            }
        }
        normalize(&mut logp, true);
        Ok(Prediction::from_distribution(self.labels.clone(), logp))
    }
}
