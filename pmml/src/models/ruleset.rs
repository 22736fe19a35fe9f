//! RuleSetModel (SimpleRule / CompoundRule; firstHit, weightedSum, weightedMax).

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::expr::Predicate;
use crate::fields::Ctx;
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::value::Value;
use crate::xml::El;
use roxmltree::Node;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Criterion {
    FirstHit,
    WeightedSum,
    WeightedMax,
}

#[derive(Debug)]
enum Rule {
    Simple {
        predicate: Predicate,
        score: Value,
        confidence: f64,
        weight: f64,
        id: Option<String>,
    },
    Compound {
        predicate: Predicate,
        rules: Vec<Rule>,
    },
}

#[derive(Debug)]
pub(crate) struct RuleSet {
    criterion: Criterion,
    rules: Vec<Rule>,
    default_score: Option<Value>,
    default_confidence: f64,
}

fn compile_rules(
    c: &mut Compiler,
    parent: Node,
    target: Option<&TargetInfo>,
) -> Result<Vec<Rule>, LoadError> {
    let mut rules = Vec::new();
    for r in parent.kids() {
        match r.name() {
            "SimpleRule" => rules.push(Rule::Simple {
                predicate: c.predicate_of(r)?,
                score: c.label(r.req_attr("score")?, target),
                confidence: r.f64_attr("confidence")?.unwrap_or(1.0),
                weight: r.f64_attr("weight")?.unwrap_or(1.0),
                id: r.attr("id").map(str::to_string),
            }),
            "CompoundRule" => {
                let predicate = c.predicate_of(r)?;
                let rules_in = compile_rules(c, r, target)?;
                rules.push(Rule::Compound {
                    predicate,
                    rules: rules_in,
                });
            }
            _ => {}
        }
    }
    Ok(rules)
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    if function != "classification" {
        return Err(m.bad_attr("functionName", "RuleSetModel is a classification"));
    }
    let rs = m.req_kid("RuleSet")?;
    let method = rs.req_kid("RuleSelectionMethod")?;
    let criterion = match method.req_attr("criterion")? {
        "firstHit" => Criterion::FirstHit,
        "weightedSum" => Criterion::WeightedSum,
        "weightedMax" => Criterion::WeightedMax,
        _ => return Err(method.unsupported_attr("criterion")),
    };
    let rules = compile_rules(c, rs, target)?;
    Ok(ModelKind::RuleSet(RuleSet {
        criterion,
        rules,
        default_score: rs.attr("defaultScore").map(|s| c.label(s, target)),
        default_confidence: rs.f64_attr("defaultConfidence")?.unwrap_or(0.0),
    }))
}

/// A fired simple rule: (score, confidence, weight, id).
type Fired<'a> = (&'a Value, f64, f64, Option<&'a str>);

fn fire<'a>(rules: &'a [Rule], ctx: &mut Ctx, out: &mut Vec<Fired<'a>>) -> Result<(), EvalError> {
    for r in rules {
        match r {
            Rule::Simple {
                predicate,
                score,
                confidence,
                weight,
                id,
            } => {
                if predicate.eval(ctx)? == Some(true) {
                    out.push((score, *confidence, *weight, id.as_deref()));
                }
            }
            Rule::Compound { predicate, rules } => {
                if predicate.eval(ctx)? == Some(true) {
                    fire(rules, ctx, out)?;
                }
            }
        }
    }
    Ok(())
}

impl RuleSet {
    pub fn evaluate(&self, ctx: &mut Ctx, _model: &Model) -> Result<Prediction, EvalError> {
        let mut fired = Vec::new();
        fire(&self.rules, ctx, &mut fired)?;
        if fired.is_empty() {
            let Some(d) = &self.default_score else {
                return Err(EvalError::InvalidResult(
                    "no rule fired and no defaultScore".into(),
                ));
            };
            return Ok(Prediction::Classes {
                result: d.clone(),
                labels: vec![d.clone()].into(),
                probs: vec![self.default_confidence].into(),
                confidences: Some(vec![self.default_confidence]),
                entity: None,
            });
        }
        // Group by score, keys in order of first firing.
        let mut keys: Vec<&Value> = Vec::new();
        for f in &fired {
            if !keys.iter().any(|k| k.equals(f.0)) {
                keys.push(f.0);
            }
        }
        let total = fired.len() as f64;
        let mut labels = Vec::new();
        let mut values = Vec::new();
        let mut winner: Option<(Value, f64, Option<&str>)> = None;
        for k in keys {
            let group: Vec<&Fired> = fired.iter().filter(|f| f.0.equals(k)).collect();
            let (value, entity) = match self.criterion {
                Criterion::FirstHit => {
                    if winner.is_none() {
                        winner = Some((k.clone(), f64::INFINITY, group[0].3));
                    }
                    (group[0].1, group[0].3)
                }
                Criterion::WeightedSum => {
                    let mut best = group[0];
                    let mut sum = 0.0;
                    for g in &group {
                        if best.2 < g.2 {
                            best = g;
                        }
                        sum += g.2;
                    }
                    (sum / total, best.3)
                }
                Criterion::WeightedMax => {
                    let mut best = group[0];
                    for g in &group {
                        if best.2 < g.2 {
                            best = g;
                        }
                    }
                    (best.1, best.3)
                }
            };
            if self.criterion != Criterion::FirstHit && winner.as_ref().is_none_or(|w| value > w.1)
            {
                winner = Some((k.clone(), value, entity));
            }
            labels.push(k.clone());
            values.push(value);
        }
        let Some((result, _, entity)) = winner else {
            return Ok(Prediction::Missing);
        };
        Ok(Prediction::Classes {
            result,
            labels: labels.into(),
            probs: values.clone().into(),
            confidences: Some(values),
            entity: entity.map(crate::model::Entity::from),
        })
    }
}
