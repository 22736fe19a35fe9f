//! NearestNeighborModel (InlineTable training instances; distance measures; average,
//! weightedAverage and median regression; majorityVote and weightedMajorityVote classification).

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::fields::{Ctx, FieldId};
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::models::clustering::{
    adjustment, compare_function, comparison_measure, distance, Compare, Measure,
};
use crate::value::{java_cmp, parse_as, Value};
use crate::xml::El;
use roxmltree::Node;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scoring {
    Average,
    WeightedAverage,
    Median,
    MajorityVote,
    WeightedMajorityVote,
}

#[derive(Debug)]
pub(crate) struct Knn {
    k: usize,
    threshold: f64,
    scoring: Scoring,
    measure: Measure,
    inputs: Vec<FieldId>,
    compare: Vec<(f64, Compare)>,
    /// Per training row: the KNN input values.
    rows: Vec<Vec<Value>>,
    /// Per training row: the target value.
    targets: Vec<Value>,
    /// Per training row: its entity id.
    ids: Vec<String>,
}

/// `data:x1` and `x1` both match an element whose local name is `x1`.
fn local(column: &str) -> &str {
    column.rsplit(':').next().unwrap_or(column)
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    let k = m
        .req_attr("numberOfNeighbors")?
        .trim()
        .parse::<usize>()
        .map_err(|_| m.bad_attr("numberOfNeighbors", "not a count"))?;
    let threshold = m.f64_attr("threshold")?.unwrap_or(0.001);
    let classification = function == "classification";
    let scoring = if classification {
        match m.attr("categoricalScoringMethod").unwrap_or("majorityVote") {
            "majorityVote" => Scoring::MajorityVote,
            "weightedMajorityVote" => Scoring::WeightedMajorityVote,
            _ => return Err(m.unsupported_attr("categoricalScoringMethod")),
        }
    } else {
        match m.attr("continuousScoringMethod").unwrap_or("average") {
            "average" => Scoring::Average,
            "weightedAverage" => Scoring::WeightedAverage,
            "median" => Scoring::Median,
            _ => return Err(m.unsupported_attr("continuousScoringMethod")),
        }
    };
    let target = target.ok_or_else(|| m.invalid("NearestNeighborModel needs a target field"))?;
    let (measure, default_compare) = comparison_measure(m.req_kid("ComparisonMeasure")?)?;
    let mut inputs = Vec::new();
    let mut input_names = Vec::new();
    let mut compare = Vec::new();
    for ki in m.req_kid("KNNInputs")?.kids_named("KNNInput") {
        inputs.push(c.field_ref(ki, "field")?);
        input_names.push(ki.req_attr("field")?);
        compare.push((
            ki.f64_attr("fieldWeight")?.unwrap_or(1.0),
            compare_function(ki, default_compare)?,
        ));
    }
    let ti = m.req_kid("TrainingInstances")?;
    let mut columns: Vec<(&str, &str)> = Vec::new();
    for f in ti.req_kid("InstanceFields")?.kids_named("InstanceField") {
        columns.push((
            f.req_attr("field")?,
            local(
                f.req_attr("column")
                    .unwrap_or_else(|_| f.attr("field").unwrap_or_default()),
            ),
        ));
    }
    let column_of = |field: &str| columns.iter().find(|c| c.0 == field).map(|c| c.1);
    let input_cols: Vec<&str> = input_names
        .iter()
        .map(|n| {
            column_of(n).ok_or_else(|| {
                ti.unsupported(format!("KNNInput {n:?} is not a training instance field"))
            })
        })
        .collect::<Result<_, _>>()?;
    let target_col = column_of(&target.name)
        .ok_or_else(|| ti.invalid("the target is not a training instance field"))?;
    let id_col = match m.attr("instanceIdVariable") {
        Some(v) => Some(
            column_of(v)
                .ok_or_else(|| m.bad_attr("instanceIdVariable", "not a training instance field"))?,
        ),
        None => None,
    };
    let table = ti
        .kid("InlineTable")
        .ok_or_else(|| ti.unsupported("TrainingInstances without an InlineTable"))?;
    let (mut rows, mut targets, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for (i, row) in table.kids_named("row").iter().enumerate() {
        let cell = |name: &str| -> Option<String> {
            row.children()
                .find(|x| x.is_element() && x.tag_name().name() == name)
                .map(|x| x.text().unwrap_or("").to_string())
        };
        let mut vals = Vec::with_capacity(inputs.len());
        for (col, f) in input_cols.iter().zip(&inputs) {
            vals.push(match cell(col) {
                Some(t) => parse_as(&t, c.dt(*f)).unwrap_or(Value::String(t)),
                None => Value::Missing,
            });
        }
        rows.push(vals);
        targets.push(match cell(target_col) {
            Some(t) => parse_as(&t, target.data_type).unwrap_or(Value::String(t)),
            None => Value::Missing,
        });
        ids.push(match id_col {
            Some(col) => cell(col).unwrap_or_default(),
            None => (i + 1).to_string(),
        });
    }
    if k == 0 || k > rows.len() {
        return Err(m.bad_attr(
            "numberOfNeighbors",
            "must be between 1 and the number of training instances",
        ));
    }
    Ok(ModelKind::Knn(Knn {
        k,
        threshold,
        scoring,
        measure,
        inputs,
        compare,
        rows,
        targets,
        ids,
    }))
}

impl Knn {
    pub fn evaluate(&self, ctx: &mut Ctx, model: &Model) -> Result<Prediction, EvalError> {
        let mut values = Vec::with_capacity(self.inputs.len());
        for f in &self.inputs {
            values.push(ctx.get(*f)?);
        }
        let adj = if matches!(self.measure, Measure::Similarity(..)) {
            1.0
        } else {
            adjustment(&values, None)?
        };
        let mut dists = Vec::with_capacity(self.rows.len());
        for (i, r) in self.rows.iter().enumerate() {
            dists.push((i, distance(self.measure, &self.compare, &values, r, adj)?));
        }
        // Stable: ties keep training order. A NaN (from a NaN in the training data or a
        // negative field weight) counts as the farthest.
        let similar = matches!(self.measure, Measure::Similarity(..));
        if similar {
            let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
            dists.sort_by(|a, b| java_cmp(key(b.1), key(a.1)));
        } else {
            dists.sort_by(|a, b| java_cmp(a.1, b.1));
        }
        if similar
            && matches!(
                self.scoring,
                Scoring::WeightedAverage | Scoring::WeightedMajorityVote
            )
        {
            return Err(EvalError::Type(
                "distance weighting needs a distance measure".into(),
            ));
        }
        let nearest = &dists[..self.k];
        ctx.ranked_entities = dists.iter().map(|(i, _)| self.ids[*i].clone()).collect();
        let weight = |d: f64| 1.0 / (d + self.threshold);
        let value = match self.scoring {
            Scoring::Average | Scoring::WeightedAverage | Scoring::Median => {
                let mut ys = Vec::with_capacity(self.k);
                for (i, d) in nearest {
                    let y = self.targets[*i].as_f64().ok_or_else(|| {
                        EvalError::InvalidResult("training target is missing".into())
                    })?;
                    ys.push((y, weight(*d)));
                }
                let y = match self.scoring {
                    Scoring::Average => ys.iter().map(|p| p.0).sum::<f64>() / ys.len() as f64,
                    Scoring::WeightedAverage => {
                        ys.iter().map(|p| p.0 * p.1).sum::<f64>()
                            / ys.iter().map(|p| p.1).sum::<f64>()
                    }
                    _ => {
                        let mut v: Vec<f64> = ys.iter().map(|p| p.0).collect();
                        crate::models::mining::median(&mut v)
                    }
                };
                Value::Double(y)
            }
            Scoring::MajorityVote | Scoring::WeightedMajorityVote => {
                let mut votes: Vec<(Value, f64)> = Vec::new();
                for (i, d) in nearest {
                    let t = &self.targets[*i];
                    if t.is_missing() {
                        return Err(EvalError::InvalidResult(
                            "training target is missing".into(),
                        ));
                    }
                    let w = if self.scoring == Scoring::MajorityVote {
                        1.0
                    } else {
                        weight(*d)
                    };
                    match votes.iter_mut().find(|v| v.0.equals(t)) {
                        Some(v) => v.1 += w,
                        None => votes.push((t.clone(), w)),
                    }
                }
                let max = votes.iter().map(|v| v.1).fold(f64::NEG_INFINITY, f64::max);
                let winners: Vec<&Value> =
                    votes.iter().filter(|v| v.1 == max).map(|v| &v.0).collect();
                if winners.len() == 1 {
                    winners[0].clone()
                } else {
                    // Tie: most frequent in the training data, then the smallest value.
                    let count = |w: &Value| self.targets.iter().filter(|t| t.equals(w)).count();
                    let best = winners.iter().map(|w| count(w)).max().unwrap_or(0);
                    let mut tied: Vec<&Value> =
                        winners.into_iter().filter(|w| count(w) == best).collect();
                    tied.sort_by(|a, b| a.compare(b).unwrap_or(std::cmp::Ordering::Equal));
                    tied[0].clone()
                }
            }
        };
        let _ = model;
        Ok(Prediction::Value {
            value,
            entity: ctx
                .ranked_entities
                .first()
                .map(|e| crate::model::Entity::from(e.as_str())),
        })
    }
}
