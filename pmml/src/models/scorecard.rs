//! Scorecard (partial scores, ComplexPartialScore, reason codes pointsAbove/pointsBelow).

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::expr::{Expr, Predicate};
use crate::fields::Ctx;
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::value::Value;
use crate::xml::El;
use roxmltree::Node;

#[derive(Debug)]
enum Points {
    Fixed(f64),
    Complex(Expr),
}

#[derive(Debug)]
struct Attribute {
    predicate: Predicate,
    points: Points,
    reason: Option<String>,
}

#[derive(Debug)]
struct Characteristic {
    attributes: Vec<Attribute>,
    baseline: Option<f64>,
}

#[derive(Debug)]
pub(crate) struct Scorecard {
    initial: f64,
    use_reason_codes: bool,
    points_above: bool,
    characteristics: Vec<Characteristic>,
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    _target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    if function != "regression" {
        return Err(m.bad_attr("functionName", "a Scorecard is a regression"));
    }
    let use_reason_codes = m.attr("useReasonCodes") != Some("false");
    let points_above = match m.attr("reasonCodeAlgorithm").unwrap_or("pointsBelow") {
        "pointsAbove" => true,
        "pointsBelow" => false,
        _ => return Err(m.unsupported_attr("reasonCodeAlgorithm")),
    };
    let model_baseline = m.f64_attr("baselineScore")?;
    let mut characteristics = Vec::new();
    for ch in m.req_kid("Characteristics")?.kids_named("Characteristic") {
        let ch_reason = ch.attr("reasonCode");
        let baseline = ch.f64_attr("baselineScore")?.or(model_baseline);
        if use_reason_codes && baseline.is_none() {
            return Err(ch.bad_attr("baselineScore", "required when reason codes are used"));
        }
        let mut attributes = Vec::new();
        for a in ch.kids_named("Attribute") {
            let predicate = c.predicate_of(a)?;
            let points = match a.kid("ComplexPartialScore") {
                Some(cps) => {
                    let e = cps
                        .kids()
                        .into_iter()
                        .next()
                        .ok_or_else(|| cps.invalid("no expression"))?;
                    Points::Complex(c.expression(e)?)
                }
                None => Points::Fixed(a.req_f64("partialScore")?),
            };
            let reason = a.attr("reasonCode").or(ch_reason).map(str::to_string);
            if use_reason_codes && reason.is_none() {
                return Err(a.bad_attr("reasonCode", "required when reason codes are used"));
            }
            attributes.push(Attribute {
                predicate,
                points,
                reason,
            });
        }
        characteristics.push(Characteristic {
            attributes,
            baseline,
        });
    }
    Ok(ModelKind::Scorecard(Scorecard {
        initial: m.f64_attr("initialScore")?.unwrap_or(0.0),
        use_reason_codes,
        points_above,
        characteristics,
    }))
}

impl Scorecard {
    pub fn evaluate(&self, ctx: &mut Ctx, _model: &Model) -> Result<Prediction, EvalError> {
        let mut score = self.initial;
        let mut reasons: Vec<(String, f64)> = Vec::new();
        for ch in &self.characteristics {
            let mut hit = None;
            for a in &ch.attributes {
                if a.predicate.eval(ctx)? == Some(true) {
                    hit = Some(a);
                    break;
                }
            }
            let Some(a) = hit else {
                return Err(EvalError::InvalidResult(
                    "no Attribute of a Characteristic matched".into(),
                ));
            };
            let points = match &a.points {
                Points::Fixed(p) => *p,
                Points::Complex(e) => match e.eval(ctx)? {
                    Value::Missing => {
                        return Err(EvalError::InvalidResult(
                            "ComplexPartialScore is missing".into(),
                        ))
                    }
                    Value::String(s) => crate::value::parse_f64(&s)
                        .ok_or_else(|| EvalError::Type(format!("partial score {s:?}")))?,
                    v => v.as_f64().unwrap_or(f64::NAN),
                },
            };
            score += points;
            if self.use_reason_codes {
                let base = ch.baseline.unwrap_or(0.0);
                let diff = if self.points_above {
                    points - base
                } else {
                    base - points
                };
                let code = a.reason.clone().unwrap_or_default();
                match reasons.iter_mut().find(|r| r.0 == code) {
                    Some(r) => r.1 += diff,
                    None => reasons.push((code, diff)),
                }
            }
        }
        reasons.retain(|r| r.1 >= 0.0);
        // Stable sort, descending by points.
        reasons.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
        ctx.reason_codes = reasons.into_iter().map(|r| r.0).collect();
        Ok(Prediction::Value {
            value: Value::Double(score),
            entity: None,
        })
    }
}
