//! Compiled models, their predictions, targets and output fields.

use crate::error::EvalError;
use crate::expr::Expr;
use crate::fields::{Ctx, FieldId};
use crate::models::{
    general_regression::GeneralRegression, mining::Mining, neural::Neural, regression::Regression,
    tree::Tree,
};
use crate::value::{DataType, OpType, Value};

/// Target post-processing (PMML `Target`).
#[derive(Debug, Clone)]
pub(crate) struct Rescale {
    pub factor: f64,
    pub constant: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub cast: Option<String>,
}

/// What a model knows about its target field.
#[derive(Debug, Clone)]
pub(crate) struct TargetInfo {
    pub name: String,
    pub data_type: DataType,
    pub op_type: OpType,
    pub categories: Vec<Value>,
    pub display: Vec<(Value, String)>,
    pub rescale: Option<Rescale>,
    pub default: Option<f64>,
    pub priors: Vec<(Value, f64)>,
}

/// An entity id (tree node, segment, cluster, rule, neighbour): shared, so reporting one per
/// record does not copy the string.
pub(crate) type Entity = std::sync::Arc<str>;

/// A model's raw result.
#[derive(Debug, Clone)]
pub(crate) enum Prediction {
    Missing,
    Value {
        value: Value,
        entity: Option<Entity>,
    },
    Classes {
        result: Value,
        /// Shared so that a tree node's categories are not copied per record.
        labels: std::sync::Arc<[Value]>,
        probs: Vec<f64>,
        confidences: Option<Vec<f64>>,
        entity: Option<Entity>,
    },
}

impl Prediction {
    /// A classification from a distribution: the result is the first label with the highest
    /// probability.
    pub fn from_distribution(
        labels: impl Into<std::sync::Arc<[Value]>>,
        probs: Vec<f64>,
    ) -> Prediction {
        let labels: std::sync::Arc<[Value]> = labels.into();
        match Self::best(&probs) {
            Some(b) => Prediction::Classes {
                result: labels[b].clone(),
                labels,
                probs,
                confidences: None,
                entity: None,
            },
            None => Prediction::Missing,
        }
    }

    /// The index of the first highest probability (`None` for no probabilities).
    pub fn best(probs: &[f64]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, p) in probs.iter().enumerate() {
            if best.is_none_or(|b| *p > probs[b]) {
                best = Some(i);
            }
        }
        best
    }

    /// The predicted value, consuming the prediction (no copy of a string label).
    pub fn into_value(self) -> Value {
        match self {
            Prediction::Missing => Value::Missing,
            Prediction::Value { value, .. } => value,
            Prediction::Classes { result, .. } => result,
        }
    }

    pub fn value(&self) -> Value {
        match self {
            Prediction::Missing => Value::Missing,
            Prediction::Value { value, .. } => value.clone(),
            Prediction::Classes { result, .. } => result.clone(),
        }
    }

    pub fn probability(&self, label: &Value) -> Option<f64> {
        match self {
            Prediction::Classes { labels, probs, .. } => {
                let i = match label {
                    // `equals` with a string: true exactly for an equal string.
                    Value::String(s) => labels
                        .iter()
                        .position(|l| matches!(l, Value::String(t) if crate::value::str_eq(t, s))),
                    _ => labels.iter().position(|l| l.equals(label)),
                };
                Some(i.map_or(0.0, |i| probs[i]))
            }
            _ => None,
        }
    }
}

/// OutputField features.
#[derive(Debug)]
pub(crate) enum Feature {
    PredictedValue,
    PredictedDisplayValue,
    Probability(Option<Value>),
    /// Distance to a cluster (clustering models) or to the predicted one.
    Affinity(Option<Value>),
    Confidence(Option<Value>),
    /// The id of the winning entity, or (rank > 1, nearest-neighbour models) of the n-th one.
    EntityId(usize),
    /// Actual (the target field's input value) minus predicted, for a continuous target.
    Residual(FieldId),
    /// The n-th (1-based) reason code of a scorecard.
    ReasonCode(usize),
    Transformed(Expr),
}

#[derive(Debug)]
pub(crate) struct OutputDef {
    pub name: String,
    pub field: FieldId,
    pub feature: Feature,
    pub data_type: Option<DataType>,
    pub final_result: bool,
}

#[derive(Debug)]
pub(crate) enum ModelKind {
    Regression(Regression),
    GeneralRegression(GeneralRegression),
    Tree(Tree),
    Neural(Neural),
    Mining(Box<Mining>),
    Svm(crate::models::svm::Svm),
    NaiveBayes(crate::models::naive_bayes::NaiveBayes),
    Clustering(crate::models::clustering::Clustering),
    Scorecard(crate::models::scorecard::Scorecard),
    RuleSet(crate::models::ruleset::RuleSet),
    Knn(crate::models::knn::Knn),
}

/// A compiled model.
#[derive(Debug)]
pub(crate) struct Model {
    pub classification: bool,
    pub target: Option<TargetInfo>,
    pub kind: ModelKind,
    pub outputs: Vec<OutputDef>,
}

impl Model {
    /// The final output fields of this model as JPMML reports them: those of exposed nested
    /// segments first (depth-first), then the model's own.
    pub fn result_outputs(&self) -> Vec<&OutputDef> {
        let mut out = Vec::new();
        if let ModelKind::Mining(m) = &self.kind {
            for seg in m.exposed_segments() {
                out.extend(seg.result_outputs());
            }
        }
        out.extend(self.outputs.iter().filter(|o| o.final_result));
        out
    }

    /// Evaluates the model and its output fields (which are stored in their slots).
    pub fn evaluate(&self, ctx: &mut Ctx) -> Result<Prediction, EvalError> {
        let pred = match &self.kind {
            ModelKind::Regression(m) => m.evaluate(ctx, self)?,
            ModelKind::GeneralRegression(m) => m.evaluate(ctx, self)?,
            ModelKind::Tree(m) => m.evaluate(ctx, self)?,
            ModelKind::Neural(m) => m.evaluate(ctx, self)?,
            ModelKind::Mining(m) => m.evaluate(ctx, self)?,
            ModelKind::Svm(m) => m.evaluate(ctx, self)?,
            ModelKind::NaiveBayes(m) => m.evaluate(ctx, self)?,
            ModelKind::Clustering(m) => m.evaluate(ctx, self)?,
            ModelKind::Scorecard(m) => m.evaluate(ctx, self)?,
            ModelKind::RuleSet(m) => m.evaluate(ctx, self)?,
            ModelKind::Knn(m) => m.evaluate(ctx, self)?,
        };
        let pred = self.apply_target(pred);
        self.compute_outputs(ctx, &pred)?;
        Ok(pred)
    }

    /// Applies Targets (rescaling, clamping, casting, default value) to a regression result.
    fn apply_target(&self, pred: Prediction) -> Prediction {
        let Some(t) = &self.target else { return pred };
        if self.classification {
            if let Prediction::Missing = pred {
                if !t.priors.is_empty() {
                    let (labels, probs): (Vec<Value>, Vec<f64>) = t.priors.iter().cloned().unzip();
                    return Prediction::from_distribution(labels, probs);
                }
            }
            return pred;
        }
        match pred {
            // The default value goes through the same rescaling as a prediction.
            Prediction::Missing => match t.default {
                Some(d) => self.apply_target(Prediction::Value {
                    value: Value::Double(d),
                    entity: None,
                }),
                None => Prediction::Missing,
            },
            Prediction::Value { value, entity } => {
                let Some(r) = &t.rescale else {
                    return Prediction::Value { value, entity };
                };
                let Some(mut x) = value.as_f64() else {
                    return Prediction::Value { value, entity };
                };
                if let Some(min) = r.min {
                    x = x.max(min);
                }
                if let Some(max) = r.max {
                    x = x.min(max);
                }
                x = x * r.factor + r.constant;
                let value = match r.cast.as_deref() {
                    Some("round") => Value::Integer((x + 0.5).floor() as i64),
                    Some("ceiling") => Value::Integer(x.ceil() as i64),
                    Some("floor") => Value::Integer(x.floor() as i64),
                    _ => match value {
                        Value::Float(_) => Value::Float(x as f32),
                        _ => Value::Double(x),
                    },
                };
                Prediction::Value { value, entity }
            }
            other => other,
        }
    }

    fn compute_outputs(&self, ctx: &mut Ctx, pred: &Prediction) -> Result<(), EvalError> {
        for o in &self.outputs {
            // "If the target value is missing, then the result delivered by this OutputField is
            // missing": JPMML leaves such fields undeclared (referring to them is an error).
            if matches!(pred, Prediction::Missing) && !matches!(o.feature, Feature::Transformed(_))
            {
                continue;
            }
            let v = match &o.feature {
                Feature::PredictedValue => pred.value(),
                Feature::PredictedDisplayValue => {
                    let v = pred.value();
                    if v.is_missing() {
                        v
                    } else {
                        let shown = self.target.as_ref().and_then(|t| {
                            t.display
                                .iter()
                                .find(|(k, _)| k.equals(&v))
                                .map(|(_, d)| d.clone())
                        });
                        Value::String(shown.unwrap_or_else(|| v.to_string()))
                    }
                }
                Feature::Probability(_)
                    if self.classification && matches!(pred, Prediction::Value { .. }) =>
                {
                    return Err(EvalError::Type(
                        "this model's result has no probability distribution".into(),
                    ))
                }
                Feature::Probability(label) => match (label, pred) {
                    (_, Prediction::Missing) => Value::Missing,
                    (Some(l), p) => p.probability(l).map_or(Value::Missing, Value::Double),
                    (None, p) => p
                        .probability(&p.value())
                        .map_or(Value::Missing, Value::Double),
                },
                Feature::Confidence(label) => match pred {
                    Prediction::Classes {
                        labels,
                        confidences: Some(c),
                        result,
                        ..
                    } => {
                        let l = label.as_ref().unwrap_or(result);
                        Value::Double(
                            labels
                                .iter()
                                .position(|x| x.equals(l))
                                .map_or(0.0, |i| c[i]),
                        )
                    }
                    p => match label {
                        Some(l) => p.probability(l).map_or(Value::Missing, Value::Double),
                        None => p
                            .probability(&p.value())
                            .map_or(Value::Missing, Value::Double),
                    },
                },
                Feature::Affinity(label) => match pred {
                    Prediction::Classes {
                        labels,
                        probs,
                        result,
                        ..
                    } => {
                        let l = label.as_ref().unwrap_or(result);
                        labels
                            .iter()
                            .position(|x| x.equals(l))
                            .map_or(Value::Missing, |i| Value::Double(probs[i]))
                    }
                    _ => Value::Missing,
                },
                Feature::ReasonCode(rank) => ctx
                    .reason_codes
                    .get(rank - 1)
                    .map_or(Value::Missing, |r| Value::String(r.clone())),
                Feature::EntityId(rank) if *rank > 1 => ctx
                    .ranked_entities
                    .get(rank - 1)
                    .map_or(Value::Missing, |r| Value::String(r.clone())),
                Feature::EntityId(_) => match pred {
                    Prediction::Value {
                        entity: Some(e), ..
                    }
                    | Prediction::Classes {
                        entity: Some(e), ..
                    } => Value::String(e.to_string()),
                    _ => Value::Missing,
                },
                Feature::Residual(field) => match (ctx.num(*field)?, pred.value().as_f64()) {
                    (Some(actual), Some(predicted)) => Value::Double(actual - predicted),
                    // JPMML: the actual target value is required.
                    (None, _) => {
                        return Err(EvalError::MissingValue(ctx.fields[*field].name.clone()))
                    }
                    _ => Value::Missing,
                },
                Feature::Transformed(e) => e.eval(ctx)?,
            };
            let v = match o.data_type {
                // Casting a value to its own type gives the same value.
                Some(dt) if !v.is_missing() && v.data_type() != Some(dt) => v.cast(dt).unwrap_or(v),
                _ => v,
            };
            ctx.set(o.field, v);
        }
        Ok(())
    }
}
