//! MiningModel with Segmentation.

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::expr::Predicate;
use crate::fields::Ctx;
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::value::{java_cmp, Value};
use crate::xml::El;
use roxmltree::Node;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    MajorityVote,
    WeightedMajorityVote,
    Average,
    WeightedAverage,
    Median,
    WeightedMedian,
    Max,
    Sum,
    WeightedSum,
    SelectFirst,
    /// Every firing segment's prediction, as a list (top-level models only).
    SelectAll,
    ModelChain,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MissingPrediction {
    Continue,
    SkipSegment,
    ReturnMissing,
}

#[derive(Debug)]
struct Segment {
    predicate: Predicate,
    /// The predicate is literally `<True/>`.
    always: bool,
    weight: f64,
    id: Option<crate::model::Entity>,
    model: Model,
}

#[derive(Debug)]
pub(crate) struct Mining {
    method: Method,
    missing: MissingPrediction,
    missing_threshold: f64,
    segments: Vec<Segment>,
    categories: Vec<Value>,
    /// Precomputed form of a (weighted) average of classification trees, e.g. a random forest.
    forest: Option<Forest>,
}

/// Most class labels a [`Forest`] handles (its per-record sums live on the stack).
const FOREST_MAX_LABELS: usize = 64;

/// A classification `average` / `weightedAverage` whose segments are all TreeModels without
/// outputs or priors, with string labels: the per-record work is selecting each tree's node and
/// adding its precomputed distribution into per-label sums (indices into `labels`), in the same
/// order — so with the same floating-point results — as the general path.
#[derive(Debug)]
struct Forest {
    /// Every label of every node, in first-appearance order (segment, node, distribution).
    labels: Vec<Value>,
    /// `labels` as a shared slice, for predictions whose labels appear in exactly that order.
    shared: std::sync::Arc<[Value]>,
    /// Per segment, per node: the distribution.
    nodes: Vec<Vec<Distribution>>,
}

/// A node's class distribution as (index into [`Forest::labels`], probability) pairs.
type Distribution = Box<[(u16, f64)]>;

fn forest(method: Method, classification: bool, segments: &[Segment]) -> Option<Forest> {
    if !classification || !matches!(method, Method::Average | Method::WeightedAverage) {
        return None;
    }
    let mut labels: Vec<Value> = Vec::new();
    let mut nodes = Vec::with_capacity(segments.len());
    for s in segments {
        let m = &s.model;
        let ModelKind::Tree(tree) = &m.kind else {
            return None;
        };
        if !m.classification
            || !m.outputs.is_empty()
            || m.target.as_ref().is_some_and(|t| !t.priors.is_empty())
        {
            return None;
        }
        let mut per_node = Vec::new();
        for dist in tree.node_distributions() {
            let mut d = Vec::with_capacity(dist.len());
            for (l, p) in dist {
                let Value::String(name) = l else { return None };
                let i = match labels.iter().position(|x| x.as_str() == Some(name)) {
                    Some(i) => i,
                    None => {
                        labels.push(l.clone());
                        labels.len() - 1
                    }
                };
                if i >= FOREST_MAX_LABELS {
                    return None;
                }
                d.push((i as u16, p));
            }
            per_node.push(d.into_boxed_slice());
        }
        nodes.push(per_node);
    }
    Some(Forest {
        shared: labels.clone().into(),
        labels,
        nodes,
    })
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
    top: bool,
) -> Result<ModelKind, LoadError> {
    let seg = m.req_kid("Segmentation")?;
    let method = match seg.req_attr("multipleModelMethod")? {
        "majorityVote" => Method::MajorityVote,
        "weightedMajorityVote" => Method::WeightedMajorityVote,
        "average" => Method::Average,
        "weightedAverage" => Method::WeightedAverage,
        "median" => Method::Median,
        "weightedMedian" => Method::WeightedMedian,
        "max" => Method::Max,
        "sum" => Method::Sum,
        "weightedSum" => Method::WeightedSum,
        "selectFirst" => Method::SelectFirst,
        "selectAll" => Method::SelectAll,
        "modelChain" => Method::ModelChain,
        _ => return Err(seg.unsupported_attr("multipleModelMethod")),
    };
    let classification = function == "classification";
    let ok = match method {
        Method::MajorityVote | Method::WeightedMajorityVote | Method::Max => classification,
        Method::WeightedMedian | Method::Sum | Method::WeightedSum => !classification,
        _ => true,
    };
    if !ok {
        return Err(seg.bad_attr("multipleModelMethod", "not applicable to this functionName"));
    }
    let missing = match seg.attr("missingPredictionTreatment").unwrap_or("continue") {
        "continue" => MissingPrediction::Continue,
        "skipSegment" => MissingPrediction::SkipSegment,
        "returnMissing" => MissingPrediction::ReturnMissing,
        _ => return Err(seg.bad_attr("missingPredictionTreatment", "unknown treatment")),
    };
    if method == Method::SelectAll {
        // The result is a list of the segments' predictions (see `Prediction::List`): only the
        // top-level model can report one, and no OutputField is computed from it.
        if !top {
            return Err(seg.unsupported(
                "multipleModelMethod=\"selectAll\" in a nested MiningModel (a list-valued segment result)",
            ));
        }
        if m.kid("Output")
            .is_some_and(|o| !o.kids_named("OutputField").is_empty())
        {
            return Err(m.unsupported(
                "OutputFields of a MiningModel with multipleModelMethod=\"selectAll\"",
            ));
        }
    }
    let missing_threshold = seg.f64_attr("missingThreshold")?.unwrap_or(1.0);
    if seg.kid("LocalTransformations").is_some() {
        return Err(seg.unsupported("Segmentation-level LocalTransformations"));
    }
    // Segments see the outputs of earlier segments in a model chain: keep one scope for all.
    c.push_scope();
    let mut segments = Vec::new();
    let result = (|| -> Result<(), LoadError> {
        for s in seg.kids_named("Segment") {
            let predicate = c.predicate_of(s)?;
            let always = matches!(predicate, Predicate::True);
            let model_node = s
                .kids()
                .into_iter()
                .find(|k| crate::compile::MODEL_ELEMENTS.contains(&k.name()))
                .ok_or_else(|| s.invalid("Segment has no model"))?;
            let model = c.model(model_node, target, false)?;
            if method == Method::SelectAll && !model.outputs.is_empty() {
                return Err(model_node.unsupported(
                    "OutputFields in a segment of multipleModelMethod=\"selectAll\"",
                ));
            }
            if method == Method::ModelChain {
                for o in &model.outputs {
                    c.bind(&o.name, o.field);
                }
            }
            segments.push(Segment {
                predicate,
                always,
                weight: s.f64_attr("weight")?.unwrap_or(1.0),
                id: s.attr("id").map(crate::model::Entity::from),
                model,
            });
        }
        Ok(())
    })();
    c.pop_scope();
    result?;
    if method == Method::ModelChain {
        // Chained outputs remain visible to the MiningModel's own Output.
        for s in &segments {
            for o in &s.model.outputs {
                c.bind(&o.name, o.field);
            }
        }
    }
    if segments.is_empty() {
        return Err(seg.invalid("no Segment"));
    }
    Ok(ModelKind::Mining(Box::new(Mining {
        forest: forest(method, classification, &segments),
        method,
        missing,
        missing_threshold,
        segments,
        categories: c.categories(target),
    })))
}

impl Mining {
    /// The segment models whose output fields JPMML exposes in the parent's results: for
    /// selectFirst the segments up to the first always-true one, for modelChain the segments
    /// from the last always-true one to the end.
    pub fn exposed_segments(&self) -> Vec<&Model> {
        let segs = &self.segments;
        match self.method {
            Method::SelectFirst => {
                let end = segs
                    .iter()
                    .position(|s| s.always)
                    .map_or(segs.len(), |i| i + 1);
                segs[..end].iter().map(|s| &s.model).collect()
            }
            Method::ModelChain => {
                let start = segs.iter().rposition(|s| s.always).unwrap_or(0);
                segs[start..].iter().map(|s| &s.model).collect()
            }
            _ => Vec::new(),
        }
    }
}

/// Median as JPMML computes it (commons-math `Percentile(50)`, legacy estimation): for an even
/// count, `lower + 0.5 * (upper - lower)`, which can differ from `(lower + upper) / 2` in the last
/// bit — and JPMML's tie-breaking depends on that bit.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| java_cmp(*a, *b));
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let pos = 0.5 * (n as f64 + 1.0);
    if pos < 1.0 {
        return values[0];
    }
    if pos >= n as f64 {
        return values[n - 1];
    }
    let fpos = pos.floor();
    let lower = values[fpos as usize - 1];
    let upper = values[fpos as usize];
    lower + (pos - fpos) * (upper - lower)
}

fn weighted_median(pairs: &mut [(f64, f64)]) -> f64 {
    pairs.sort_by(|a, b| java_cmp(a.0, b.0));
    let half = 0.5 * pairs.iter().map(|p| p.1).sum::<f64>();
    let mut acc = 0.0;
    for (v, w) in pairs.iter() {
        acc += w;
        if acc >= half {
            return *v;
        }
    }
    pairs.last().map_or(f64::NAN, |p| p.0)
}

/// Category order for a distribution: target categories first, then first appearance.
fn add_label(labels: &mut Vec<Value>, sums: &mut Vec<f64>, l: &Value) -> usize {
    match labels.iter().position(|x| x.equals(l)) {
        Some(i) => i,
        None => {
            labels.push(l.clone());
            sums.push(0.0);
            labels.len() - 1
        }
    }
}

impl Mining {
    /// `selectAll`: the prediction of every segment whose predicate is true, in document order
    /// (a segment without a prediction contributes a missing value); no firing segment is a
    /// missing result, as in JPMML-Evaluator.
    fn evaluate_all(&self, ctx: &mut Ctx) -> Result<Prediction, EvalError> {
        let mut values = Vec::new();
        for s in &self.segments {
            if s.predicate.eval(ctx)? != Some(true) {
                continue;
            }
            values.push(s.model.evaluate(ctx)?.into_value());
        }
        Ok(if values.is_empty() {
            Prediction::Missing
        } else {
            Prediction::List(values)
        })
    }

    /// [`Mining::evaluate`] for a [`Forest`]: same decisions, same sums in the same order.
    fn evaluate_forest(&self, f: &Forest, ctx: &mut Ctx) -> Result<Prediction, EvalError> {
        let mut sums = [0.0f64; FOREST_MAX_LABELS];
        let mut seen = [false; FOREST_MAX_LABELS];
        let mut order = [0u16; FOREST_MAX_LABELS];
        let mut n_order = 0usize;
        let mut total_weight = 0.0;
        let mut missing_weight = 0.0;
        let mut wsum = 0.0;
        let mut results = 0usize;
        let average = self.method == Method::Average;
        for (s, nodes) in self.segments.iter().zip(&f.nodes) {
            if s.predicate.eval(ctx)? != Some(true) {
                continue;
            }
            let ModelKind::Tree(tree) = &s.model.kind else {
                return Err(EvalError::InvalidResult(
                    "forest segment is not a tree".into(),
                ));
            };
            let dist = match tree.select_node(ctx)? {
                Some(i) => &nodes[i][..],
                None => &[][..],
            };
            total_weight += s.weight;
            if dist.is_empty() {
                // A missing prediction (averaging never votes).
                match self.missing {
                    MissingPrediction::SkipSegment => {
                        missing_weight += s.weight;
                        continue;
                    }
                    _ => return Ok(Prediction::Missing),
                }
            }
            results += 1;
            let w = if average { 1.0 } else { s.weight };
            wsum += w;
            for &(i, p) in dist {
                let i = usize::from(i);
                if !seen[i] {
                    seen[i] = true;
                    order[n_order] = i as u16;
                    n_order += 1;
                }
                sums[i] += if average { p } else { p * w };
            }
        }
        if total_weight > 0.0 && missing_weight / total_weight > self.missing_threshold {
            return Ok(Prediction::Missing);
        }
        if results == 0 {
            return Ok(Prediction::Missing);
        }
        let order = &order[..n_order];
        let probs: Vec<f64> = order.iter().map(|i| sums[usize::from(*i)] / wsum).collect();
        let in_table_order = n_order == f.labels.len()
            && order.iter().enumerate().all(|(k, i)| usize::from(*i) == k);
        let labels: std::sync::Arc<[Value]> = if in_table_order {
            f.shared.clone()
        } else {
            order
                .iter()
                .map(|i| f.labels[usize::from(*i)].clone())
                .collect()
        };
        Ok(Prediction::from_distribution(labels, probs))
    }

    pub fn evaluate(&self, ctx: &mut Ctx, model: &Model) -> Result<Prediction, EvalError> {
        if let Some(f) = &self.forest {
            return self.evaluate_forest(f, ctx);
        }
        if self.method == Method::SelectAll {
            return self.evaluate_all(ctx);
        }
        let mut results: Vec<(Prediction, f64, Option<&crate::model::Entity>)> = Vec::new();
        let mut total_weight = 0.0;
        let mut missing_weight = 0.0;
        let mut missing_votes = 0.0;
        for s in &self.segments {
            if s.predicate.eval(ctx)? != Some(true) {
                continue;
            }
            let p = s.model.evaluate(ctx)?;
            match self.method {
                Method::SelectFirst => return Ok(with_entity(p, s.id.as_ref())),
                Method::ModelChain => {
                    if matches!(p, Prediction::Missing)
                        && self.missing == MissingPrediction::ReturnMissing
                    {
                        return Ok(Prediction::Missing);
                    }
                    results.clear();
                    results.push((p, s.weight, s.id.as_ref()));
                    continue;
                }
                _ => {}
            }
            total_weight += s.weight;
            if matches!(p, Prediction::Missing) {
                match self.missing {
                    MissingPrediction::ReturnMissing => return Ok(Prediction::Missing),
                    MissingPrediction::Continue
                        if !matches!(
                            self.method,
                            Method::MajorityVote | Method::WeightedMajorityVote
                        ) =>
                    {
                        return Ok(Prediction::Missing)
                    }
                    _ => {
                        missing_weight += s.weight;
                        missing_votes += if self.method == Method::MajorityVote {
                            1.0
                        } else {
                            s.weight
                        };
                        continue;
                    }
                }
            }
            results.push((p, s.weight, s.id.as_ref()));
        }
        if self.method == Method::ModelChain {
            return Ok(results
                .pop()
                .map_or(Prediction::Missing, |(p, _, id)| with_entity(p, id)));
        }
        if total_weight > 0.0 && missing_weight / total_weight > self.missing_threshold {
            return Ok(Prediction::Missing);
        }
        let voting = matches!(
            self.method,
            Method::MajorityVote | Method::WeightedMajorityVote
        );
        if results.is_empty() && !(voting && missing_votes > 0.0) {
            return Ok(Prediction::Missing);
        }
        if !model.classification {
            let mut vals = Vec::with_capacity(results.len());
            for (p, w, _) in &results {
                let v = p.value();
                let x = match &v {
                    Value::String(s) => crate::value::parse_f64(s),
                    other => other.as_f64(),
                }
                .ok_or_else(|| {
                    EvalError::Type(format!("segment result {} is not a number", v.shown()))
                })?;
                vals.push((x, *w));
            }
            let y = match self.method {
                Method::Average => vals.iter().map(|v| v.0).sum::<f64>() / vals.len() as f64,
                Method::Sum => vals.iter().map(|v| v.0).sum::<f64>(),
                Method::WeightedAverage => {
                    vals.iter().map(|v| v.0 * v.1).sum::<f64>()
                        / vals.iter().map(|v| v.1).sum::<f64>()
                }
                Method::WeightedSum => vals.iter().map(|v| v.0 * v.1).sum::<f64>(),
                Method::Median => median(&mut vals.iter().map(|v| v.0).collect::<Vec<_>>()),
                Method::WeightedMedian => weighted_median(&mut vals),
                _ => {
                    return Err(EvalError::InvalidResult(
                        "unsupported aggregation for regression".into(),
                    ))
                }
            };
            return Ok(Prediction::Value {
                value: Value::Double(y),
                entity: None,
            });
        }
        // Labels in order of first appearance (JPMML's insertion-ordered maps decide ties).
        let mut labels: Vec<Value> = Vec::new();
        let mut sums: Vec<f64> = Vec::new();
        match self.method {
            Method::MajorityVote | Method::WeightedMajorityVote => {
                for (p, w, _) in &results {
                    let l = p.value();
                    let i = add_label(&mut labels, &mut sums, &l);
                    sums[i] += if self.method == Method::MajorityVote {
                        1.0
                    } else {
                        *w
                    };
                }
                // Missing predictions vote for a "missing" pseudo-category, which wins over
                // every real category with more votes (JPMML's continue treatment).
                if sums.is_empty() {
                    return Err(EvalError::InvalidResult("empty classification".into()));
                }
                if missing_votes > sums.iter().copied().fold(f64::NEG_INFINITY, f64::max) {
                    return Ok(Prediction::Missing);
                }
                let total: f64 = sums.iter().sum();
                let probs: Vec<f64> = sums.iter().map(|s| s / total).collect();
                Ok(Prediction::from_distribution(labels, probs))
            }
            Method::Average | Method::WeightedAverage => {
                let mut wsum = 0.0;
                for (p, w, _) in &results {
                    let Prediction::Classes {
                        labels: ls, probs, ..
                    } = p
                    else {
                        return Err(EvalError::InvalidResult(
                            "segment result has no probabilities".into(),
                        ));
                    };
                    let w = if self.method == Method::Average {
                        1.0
                    } else {
                        *w
                    };
                    wsum += w;
                    for (l, pr) in ls.iter().zip(probs.iter()) {
                        let i = add_label(&mut labels, &mut sums, l);
                        sums[i] += if self.method == Method::Average {
                            *pr
                        } else {
                            pr * w
                        };
                    }
                }
                let probs = sums.iter().map(|s| s / wsum).collect();
                Ok(Prediction::from_distribution(labels, probs))
            }
            Method::Max | Method::Median => {
                // Per category, the max (median) probability over segments; the winning
                // category's contributing segments are averaged.
                let dists: Vec<(&[Value], &[f64])> = results
                    .iter()
                    .filter_map(|(p, _, _)| match p {
                        Prediction::Classes { labels, probs, .. } => {
                            Some((&labels[..], &probs[..]))
                        }
                        _ => None,
                    })
                    .collect();
                for c in &self.categories {
                    add_label(&mut labels, &mut sums, c);
                }
                for (ls, _) in &dists {
                    for l in ls.iter() {
                        add_label(&mut labels, &mut sums, l);
                    }
                }
                let prob = |d: &(&[Value], &[f64]), l: &Value| {
                    d.0.iter().position(|x| x.equals(l)).map_or(0.0, |i| d.1[i])
                };
                let mut best: Option<(usize, f64)> = None;
                for (i, l) in labels.iter().enumerate() {
                    let mut ps: Vec<f64> = dists.iter().map(|d| prob(d, l)).collect();
                    let agg = if self.method == Method::Max {
                        ps.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    } else {
                        median(&mut ps)
                    };
                    if best.is_none_or(|b| agg > b.1) {
                        best = Some((i, agg));
                    }
                }
                let Some((win, agg)) = best else {
                    return Ok(Prediction::Missing);
                };
                let ps: Vec<f64> = dists.iter().map(|d| prob(d, &labels[win])).collect();
                let contributors: Vec<usize> = if self.method == Method::Max {
                    (0..dists.len()).filter(|i| ps[*i] == agg).collect()
                } else {
                    let min = ps.iter().map(|p| (agg - p).abs()).fold(f64::MAX, f64::min);
                    (0..dists.len())
                        .filter(|i| (agg - ps[*i]).abs() <= min)
                        .collect()
                };
                let n = contributors.len() as f64;
                let probs: Vec<f64> = labels
                    .iter()
                    .map(|l| {
                        contributors
                            .iter()
                            .map(|i| prob(&dists[*i], l))
                            .sum::<f64>()
                            / n
                    })
                    .collect();
                Ok(Prediction::from_distribution(labels, probs))
            }
            _ => Err(EvalError::InvalidResult(
                "unsupported aggregation for classification".into(),
            )),
        }
    }
}

/// Records the winning segment's id as the entity id (OutputField feature entityId).
fn with_entity(p: Prediction, id: Option<&crate::model::Entity>) -> Prediction {
    match p {
        Prediction::Value { value, .. } => Prediction::Value {
            value,
            entity: id.cloned(),
        },
        Prediction::Classes {
            result,
            labels,
            probs,
            confidences,
            ..
        } => Prediction::Classes {
            result,
            labels,
            probs,
            confidences,
            entity: id.cloned(),
        },
        other => other,
    }
}
