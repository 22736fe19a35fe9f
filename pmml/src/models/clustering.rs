//! ClusteringModel (center-based; euclidean, squaredEuclidean, cityBlock, chebychev and
//! minkowski distances; absDiff, gaussSim, delta and equal compare functions).

use crate::compile::{parse_array, Compiler};
use crate::error::{EvalError, LoadError};
use crate::fields::{Ctx, FieldId};
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::value::{parse_as, DataType, OpType, Value};
use crate::xml::El;
use roxmltree::Node;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Measure {
    /// Binary similarity: (c11, c10, c01, c00) numerator and (d11, d10, d01, d00) denominator
    /// weights (simpleMatching, jaccard and tanimoto are special cases).
    Similarity([f64; 4], [f64; 4]),
    Euclidean,
    SquaredEuclidean,
    CityBlock,
    Chebychev,
    Minkowski(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Compare {
    AbsDiff,
    GaussSim(f64),
    Delta,
    Equal,
}

#[derive(Debug)]
struct ClusterField {
    field: FieldId,
    weight: f64,
    compare: Compare,
}

#[derive(Debug)]
pub(crate) struct Clustering {
    measure: Measure,
    fields: Vec<ClusterField>,
    /// (id, centre)
    clusters: Vec<(Value, Vec<Value>)>,
    missing_weights: Option<Vec<f64>>,
}

/// Builds the synthetic target of a clustering model (JPMML's unnamed default target).
pub(crate) fn default_target(m: Node) -> TargetInfo {
    let mut display = Vec::new();
    for (i, c) in m.kids_named("Cluster").iter().enumerate() {
        let id = c
            .attr("id")
            .map_or_else(|| (i + 1).to_string(), str::to_string);
        if let Some(n) = c.attr("name") {
            display.push((Value::String(id), n.to_string()));
        }
    }
    TargetInfo {
        name: crate::DEFAULT_TARGET.to_string(),
        data_type: DataType::String,
        op_type: OpType::Categorical,
        categories: Vec::new(),
        display,
        rescale: None,
        default: None,
        priors: Vec::new(),
    }
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    _function: &str,
    _target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    if m.attr("modelClass").unwrap_or("centerBased") != "centerBased" {
        return Err(m.unsupported_attr("modelClass"));
    }
    let (measure, default_compare) = comparison_measure(m.req_kid("ComparisonMeasure")?)?;
    let mut fields = Vec::new();
    let mut dts = Vec::new();
    for f in m.kids_named("ClusteringField") {
        if f.attr("isCenterField") == Some("false") {
            continue;
        }
        let field = c.field_ref(f, "field")?;
        let compare = compare_function(f, default_compare)?;
        dts.push(c.dt(field));
        fields.push(ClusterField {
            field,
            weight: f.f64_attr("fieldWeight")?.unwrap_or(1.0),
            compare,
        });
    }
    let mut clusters = Vec::new();
    for (i, cl) in m.kids_named("Cluster").iter().enumerate() {
        if cl.kid("KohonenMap").is_some() || cl.kid("Partition").is_some() {
            return Err(cl.unsupported("Cluster content"));
        }
        let arr = cl.req_kid("Array")?;
        let vals = parse_array(arr)?;
        if vals.len() != fields.len() {
            return Err(arr.invalid("centre length differs from the number of clustering fields"));
        }
        let centre = vals
            .iter()
            .zip(&dts)
            .map(|(s, dt)| parse_as(s, *dt).unwrap_or_else(|| Value::String(s.clone())))
            .collect();
        let id = cl
            .attr("id")
            .map_or_else(|| (i + 1).to_string(), str::to_string);
        clusters.push((Value::String(id), centre));
    }
    if clusters.is_empty() {
        return Err(m.invalid("no Cluster"));
    }
    let missing_weights = match m.kid("MissingValueWeights") {
        Some(mw) => {
            let a = parse_array(mw.req_kid("Array")?)?;
            let w = a
                .iter()
                .map(|s| crate::value::parse_f64(s).ok_or_else(|| mw.invalid("not a number")))
                .collect::<Result<Vec<_>, _>>()?;
            if w.len() != fields.len() {
                return Err(mw.invalid("length differs from the number of clustering fields"));
            }
            Some(w)
        }
        None => None,
    };
    Ok(ModelKind::Clustering(Clustering {
        measure,
        fields,
        clusters,
        missing_weights,
    }))
}

impl Clustering {
    pub fn evaluate(&self, ctx: &mut Ctx, _model: &Model) -> Result<Prediction, EvalError> {
        let mut values = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            values.push(ctx.get(f.field)?);
        }
        let similarity = matches!(self.measure, Measure::Similarity(..));
        let adjustment = if similarity {
            1.0
        } else {
            adjustment(&values, self.missing_weights.as_deref())?
        };
        let fields: Vec<(f64, Compare)> =
            self.fields.iter().map(|f| (f.weight, f.compare)).collect();
        let mut labels = Vec::with_capacity(self.clusters.len());
        let mut dists = Vec::with_capacity(self.clusters.len());
        for (id, centre) in &self.clusters {
            dists.push(distance(
                self.measure,
                &fields,
                &values,
                centre,
                adjustment,
            )?);
            labels.push(id.clone());
        }
        // The nearest cluster (distance) or the most similar one (similarity); first on ties.
        let mut best = 0;
        for (i, d) in dists.iter().enumerate() {
            if (!similarity && *d < dists[best]) || (similarity && *d > dists[best]) {
                best = i;
            }
        }
        let result = labels[best].clone();
        let entity = result.as_str().map(crate::model::Entity::from);
        Ok(Prediction::Classes {
            result,
            labels: labels.into(),
            probs: dists.into(),
            confidences: None,
            entity,
        })
    }
}

/// Parses a ComparisonMeasure (distance measures only).
pub(crate) fn comparison_measure(cm: Node) -> Result<(Measure, Compare), LoadError> {
    let kind = cm.attr("kind").unwrap_or("distance");
    let mn = cm
        .kids()
        .into_iter()
        .next()
        .ok_or_else(|| cm.invalid("no measure"))?;
    let measure = match mn.name() {
        "euclidean" => Measure::Euclidean,
        "squaredEuclidean" => Measure::SquaredEuclidean,
        "cityBlock" => Measure::CityBlock,
        "chebychev" => Measure::Chebychev,
        "minkowski" => Measure::Minkowski(mn.req_f64("p-parameter")?),
        "simpleMatching" => Measure::Similarity([1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]),
        "jaccard" => Measure::Similarity([1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]),
        "tanimoto" => Measure::Similarity([1.0, 0.0, 0.0, 1.0], [1.0, 2.0, 2.0, 1.0]),
        "binarySimilarity" => Measure::Similarity(
            [
                mn.req_f64("c11-parameter")?,
                mn.req_f64("c10-parameter")?,
                mn.req_f64("c01-parameter")?,
                mn.req_f64("c00-parameter")?,
            ],
            [
                mn.req_f64("d11-parameter")?,
                mn.req_f64("d10-parameter")?,
                mn.req_f64("d01-parameter")?,
                mn.req_f64("d00-parameter")?,
            ],
        ),
        _ => return Err(mn.unsupported("comparison measure")),
    };
    let is_similarity = matches!(measure, Measure::Similarity(..));
    match (kind, is_similarity) {
        ("distance", false) | ("similarity", true) => {}
        _ => return Err(cm.bad_attr("kind", "does not match the measure")),
    }
    let compare = match cm.attr("compareFunction").unwrap_or("absDiff") {
        "absDiff" => Compare::AbsDiff,
        "delta" => Compare::Delta,
        "equal" => Compare::Equal,
        _ => return Err(cm.unsupported_attr("compareFunction")),
    };
    Ok((measure, compare))
}

/// Parses a field-level compareFunction (ClusteringField, KNNInput).
pub(crate) fn compare_function(f: Node, default: Compare) -> Result<Compare, LoadError> {
    Ok(match f.attr("compareFunction") {
        None => default,
        Some("absDiff") => Compare::AbsDiff,
        Some("delta") => Compare::Delta,
        Some("equal") => Compare::Equal,
        Some("gaussSim") => Compare::GaussSim(
            f.f64_attr("similarityScale")?
                .ok_or_else(|| f.bad_attr("similarityScale", "required by gaussSim"))?,
        ),
        Some(_) => return Err(f.unsupported_attr("compareFunction")),
    })
}

/// The missing-value adjustment factor (sum of weights / sum of non-missing weights).
pub(crate) fn adjustment(values: &[Value], weights: Option<&[f64]>) -> Result<f64, EvalError> {
    let (mut sum, mut present) = (0.0, 0.0);
    for (i, v) in values.iter().enumerate() {
        let w = weights.map_or(1.0, |m| m[i]);
        sum += w;
        if !v.is_missing() {
            present += w;
        }
    }
    if present == 0.0 {
        return Err(EvalError::InvalidResult(
            "all comparison fields are missing".into(),
        ));
    }
    Ok(sum / present)
}

fn flag(v: &Value) -> Result<bool, EvalError> {
    match v {
        Value::Boolean(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        other => match other
            .as_f64()
            .or_else(|| other.as_str().and_then(crate::value::parse_f64))
        {
            Some(1.0) => Ok(true),
            Some(0.0) => Ok(false),
            _ => Err(EvalError::InvalidResult(format!(
                "expected a binary value, got {}",
                other.shown()
            ))),
        },
    }
}

/// Binary similarity between `values` and `centre` (JPMML's MeasureUtil semantics).
pub(crate) fn similarity(
    c: &[f64; 4],
    d: &[f64; 4],
    values: &[Value],
    centre: &[Value],
) -> Result<f64, EvalError> {
    let mut a = [0.0f64; 4]; // a11, a10, a01, a00
    for (v, r) in values.iter().zip(centre) {
        let i = match (flag(v)?, flag(r)?) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        a[i] += 1.0;
    }
    let num = c[0] * a[0] + c[1] * a[1] + c[2] * a[2] + c[3] * a[3];
    let den = d[0] * a[0] + d[1] * a[1] + d[2] * a[2] + d[3] * a[3];
    if den == 0.0 {
        return Err(EvalError::InvalidResult(
            "similarity is undefined (zero denominator)".into(),
        ));
    }
    Ok(num / den)
}

/// Distance between `values` and `centre` (JPMML's MeasureUtil semantics).
pub(crate) fn distance(
    measure: Measure,
    fields: &[(f64, Compare)],
    values: &[Value],
    centre: &[Value],
    adjustment: f64,
) -> Result<f64, EvalError> {
    let (inner, outer) = match measure {
        Measure::Similarity(c, d) => return similarity(&c, &d, values, centre),
        Measure::Euclidean => (2.0, 2.0),
        Measure::SquaredEuclidean => (2.0, 1.0),
        Measure::CityBlock | Measure::Chebychev => (1.0, 1.0),
        Measure::Minkowski(p) => (p, p),
    };
    let num = |x: &Value| {
        x.as_f64()
            .or_else(|| x.as_str().and_then(crate::value::parse_f64))
    };
    let mut parts = Vec::with_capacity(values.len());
    for (((weight, compare), v), c) in fields.iter().zip(values).zip(centre) {
        if v.is_missing() {
            continue;
        }
        let d = match compare {
            Compare::AbsDiff | Compare::GaussSim(_) => {
                let (Some(a), Some(b)) = (num(v), num(c)) else {
                    return Err(EvalError::Type(format!(
                        "comparison field value {} is not a number",
                        v.shown()
                    )));
                };
                match compare {
                    Compare::GaussSim(s) => {
                        (-std::f64::consts::LN_2 * (a - b) * (a - b) / (s * s)).exp()
                    }
                    _ => (a - b).abs(),
                }
            }
            Compare::Delta => f64::from(!v.equals(c)),
            Compare::Equal => f64::from(v.equals(c)),
        };
        parts.push(d.powf(inner) * weight);
    }
    Ok(match measure {
        Measure::Chebychev => parts.iter().copied().fold(f64::NEG_INFINITY, f64::max) * adjustment,
        _ => {
            let s: f64 = parts.iter().sum::<f64>() * adjustment;
            if outer == 1.0 {
                s
            } else {
                s.powf(1.0 / outer)
            }
        }
    })
}
