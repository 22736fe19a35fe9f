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

impl Rescale {
    /// Clamps and rescales a number (no cast).
    #[inline]
    fn rescale(&self, mut x: f64) -> f64 {
        if let Some(min) = self.min {
            x = x.max(min);
        }
        if let Some(max) = self.max {
            x = x.min(max);
        }
        x * self.factor + self.constant
    }

    /// Clamps, rescales and casts a numeric prediction in place (a non-number is left alone).
    fn apply(&self, value: &mut Value) {
        let Some(x) = value.as_f64() else { return };
        let x = self.rescale(x);
        *value = match self.cast.as_deref() {
            Some("round") => Value::Integer((x + 0.5).floor() as i64),
            Some("ceiling") => Value::Integer(x.ceil() as i64),
            Some("floor") => Value::Integer(x.floor() as i64),
            _ => match value {
                Value::Float(_) => Value::Float(x as f32),
                _ => Value::Double(x),
            },
        };
    }
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
        probs: Probs,
        confidences: Option<Vec<f64>>,
        entity: Option<Entity>,
    },
    /// One value per firing segment of a top-level `multipleModelMethod="selectAll"` (never
    /// aggregated, never post-processed by Targets, no OutputFields).
    List(Vec<Value>),
}

/// The class probabilities of a prediction: computed for the record, or shared with the model
/// (a tree node's distribution, reported without copying it).
#[derive(Debug, Clone)]
pub(crate) enum Probs {
    Owned(Vec<f64>),
    Shared(std::sync::Arc<[f64]>),
}

impl std::ops::Deref for Probs {
    type Target = [f64];

    #[inline]
    fn deref(&self) -> &[f64] {
        match self {
            Probs::Owned(v) => v,
            Probs::Shared(s) => s,
        }
    }
}

impl From<Vec<f64>> for Probs {
    fn from(v: Vec<f64>) -> Self {
        Probs::Owned(v)
    }
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
                probs: probs.into(),
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
            Prediction::Missing | Prediction::List(_) => Value::Missing,
            Prediction::Value { value, .. } => value,
            Prediction::Classes { result, .. } => result,
        }
    }

    pub fn value(&self) -> Value {
        match self {
            Prediction::Missing | Prediction::List(_) => Value::Missing,
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
        let mut pred = Prediction::Missing;
        self.evaluate_to(ctx, &mut pred)?;
        Ok(pred)
    }

    /// [`Model::evaluate`] into `pred` (post-processed in place: a prediction is large, and
    /// moving it through every step costs more than the arithmetic of a small model).
    pub fn evaluate_to(&self, ctx: &mut Ctx, pred: &mut Prediction) -> Result<(), EvalError> {
        *pred = match &self.kind {
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
        if self.target.is_some() {
            self.apply_target(pred);
        }
        if self.outputs.is_empty() {
            return Ok(());
        }
        self.compute_outputs(ctx, pred)
    }

    /// `true` when [`Model::evaluate_number`] applies: a regression model, regression tree or
    /// general regression model without OutputFields whose result is just a double — a double
    /// (not float) regression target without a rescaling cast, only double tree scores.
    pub fn has_number_path(&self) -> bool {
        let Some(t) = &self.target else { return false };
        !self.classification
            && self.outputs.is_empty()
            && t.rescale.as_ref().is_none_or(|r| r.cast.is_none())
            && match &self.kind {
                ModelKind::Regression(_) => t.data_type != DataType::Float,
                ModelKind::Tree(tree) => tree.scores_are_doubles(),
                ModelKind::GeneralRegression(glm) => glm.is_regression(),
                _ => false,
            }
    }

    /// For a model that [`Model::has_number_path`]: the value of [`Model::evaluate`]'s
    /// prediction as a number (`None`: missing), post-processed by Targets the same way —
    /// without building a [`Prediction`] (and so without moving one, or a [`Value`], around).
    pub fn evaluate_number(&self, ctx: &mut Ctx) -> Result<Option<f64>, EvalError> {
        let y = match &self.kind {
            ModelKind::Regression(m) => m.number(ctx)?,
            ModelKind::Tree(m) => m.number(ctx)?,
            ModelKind::GeneralRegression(m) => m.number(ctx)?,
            _ => {
                return Err(EvalError::InvalidResult(
                    "internal: no numeric result path for this model".into(),
                ))
            }
        };
        let Some(t) = &self.target else { return Ok(y) };
        // The default value goes through the same rescaling as a prediction.
        let Some(mut x) = y.or(t.default) else {
            return Ok(None);
        };
        if let Some(r) = &t.rescale {
            x = r.rescale(x);
        }
        Ok(Some(x))
    }

    /// Applies Targets (rescaling, clamping, casting, default value) to a regression result, and
    /// priors to a missing classification.
    fn apply_target(&self, pred: &mut Prediction) {
        let Some(t) = &self.target else { return };
        if self.classification {
            if let Prediction::Missing = pred {
                if !t.priors.is_empty() {
                    let (labels, probs): (Vec<Value>, Vec<f64>) = t.priors.iter().cloned().unzip();
                    *pred = Prediction::from_distribution(labels, probs);
                }
            }
            return;
        }
        if let Prediction::Missing = pred {
            // The default value goes through the same rescaling as a prediction.
            match t.default {
                Some(d) => {
                    *pred = Prediction::Value {
                        value: Value::Double(d),
                        entity: None,
                    }
                }
                None => return,
            }
        }
        if let (Prediction::Value { value, .. }, Some(r)) = (pred, &t.rescale) {
            r.apply(value);
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
