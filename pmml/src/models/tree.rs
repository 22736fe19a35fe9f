//! TreeModel.

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::expr::{BoolOp, Predicate, SimpleOp};
use crate::fields::Ctx;
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::value::{DataType, Value};
use crate::xml::El;
use roxmltree::Node;

#[derive(Debug, Clone, Copy, PartialEq)]
enum MissingStrategy {
    None,
    LastPrediction,
    NullPrediction,
    DefaultChild,
    /// weightedConfidence / aggregateNodes: like JPMML, records that never meet a missing value
    /// score normally; meeting one is an evaluation error (never a made-up answer).
    NotImplemented(&'static str),
}

#[derive(Debug)]
struct TreeNode {
    predicate: Predicate,
    children: Vec<u32>,
    score: Option<Value>,
    id: Option<crate::model::Entity>,
    labels: std::sync::Arc<[Value]>,
    /// Shared with the predictions (not copied per record).
    probs: std::sync::Arc<[f64]>,
    confidences: Option<Vec<f64>>,
    default_child: Option<u32>,
}

/// A node's predicate in the form the descent tests inline: a numeric split or `<True/>`, else
/// the node's full predicate ([`TreeNode::predicate`]).
#[derive(Debug, Clone, Copy)]
enum Test {
    True,
    /// `x <op> c` for a present `x` and a non-NaN `c`, as a mask of the outcomes that make it
    /// true: [`LT`], [`EQ`], [`GT`].
    Num {
        field: u32,
        mask: u8,
        c: f64,
    },
    General,
}

const LT: u8 = 1;
const EQ: u8 = 2;
const GT: u8 = 4;

/// The outcome mask of a comparison operator (`None` for the missing-value operators).
fn op_mask(op: SimpleOp) -> Option<u8> {
    Some(match op {
        SimpleOp::Equal => EQ,
        SimpleOp::NotEqual => LT | GT,
        SimpleOp::LessThan => LT,
        SimpleOp::LessOrEqual => LT | EQ,
        SimpleOp::GreaterThan => GT,
        SimpleOp::GreaterOrEqual => GT | EQ,
        SimpleOp::IsMissing | SimpleOp::IsNotMissing => return None,
    })
}

/// How `x` compares with `c`: [`LT`], [`EQ`] or [`GT`]; `None` when either is NaN (then the
/// operators do not follow the masks: `NaN != c` holds).
#[inline(always)]
fn outcome(x: f64, c: f64) -> Option<u8> {
    let o = u8::from(x < c) | (u8::from(x == c) << 1) | (u8::from(x > c) << 2);
    (o != 0).then_some(o)
}

#[derive(Debug)]
pub(crate) struct Tree {
    nodes: Vec<TreeNode>,
    /// Per node, its test (parallel to `nodes`; compact, for the descent).
    tests: Vec<Test>,
    /// Per node, its children as a range of `child_list`.
    kids: Vec<(u32, u32)>,
    /// Every node's children, node after node.
    child_list: Vec<u32>,
    /// Per node: `Some((a, b))` when it has exactly two children whose tests compare the same
    /// field with the same constant by complementary operators (a binary split `x <= c` /
    /// `x > c`): when `a` is false for a number `x`, `b` holds, without testing it.
    split: Vec<Option<(u32, u32)>>,
    penalty: f64,
    missing: MissingStrategy,
    last_on_no_true_child: bool,
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    let missing = match m.attr("missingValueStrategy").unwrap_or("none") {
        "none" => MissingStrategy::None,
        "lastPrediction" => MissingStrategy::LastPrediction,
        "nullPrediction" => MissingStrategy::NullPrediction,
        "defaultChild" => MissingStrategy::DefaultChild,
        "weightedConfidence" => MissingStrategy::NotImplemented("weightedConfidence"),
        "aggregateNodes" => MissingStrategy::NotImplemented("aggregateNodes"),
        _ => return Err(m.unsupported_attr("missingValueStrategy")),
    };
    let last_on_no_true_child = match m
        .attr("noTrueChildStrategy")
        .unwrap_or("returnNullPrediction")
    {
        "returnNullPrediction" => false,
        "returnLastPrediction" => true,
        _ => return Err(m.unsupported_attr("noTrueChildStrategy")),
    };
    if m.attr("splitCharacteristic")
        .is_some_and(|s| s != "binarySplit" && s != "multiSplit")
    {
        return Err(m.bad_attr("splitCharacteristic", "unknown split characteristic"));
    }
    let root = m.req_kid("Node")?;
    let classification = function == "classification";
    let score_dt = if classification {
        target.map_or(DataType::String, |t| t.data_type)
    } else {
        DataType::Double
    };
    let mut tree = Tree {
        nodes: Vec::new(),
        tests: Vec::new(),
        kids: Vec::new(),
        child_list: Vec::new(),
        split: Vec::new(),
        penalty: m.f64_attr("missingValuePenalty")?.unwrap_or(1.0),
        missing,
        last_on_no_true_child,
    };
    // Iterative pre-order compilation: (xml node, parent index).
    let mut stack: Vec<(Node, Option<u32>)> = vec![(root, None)];
    let mut default_ids: Vec<(u32, String)> = Vec::new();
    while let Some((n, parent)) = stack.pop() {
        let predicate = c.predicate_of(n)?;
        if n.kid("Partition").is_some()
            || n.kid("EmbeddedModel").is_some()
            || n.kid("Regression").is_some()
            || n.kid("DecisionTree").is_some()
        {
            return Err(n.unsupported("Node with an embedded model"));
        }
        let score = match n.attr("score") {
            Some(s) => Some(
                crate::value::parse_as(s, score_dt)
                    .ok_or_else(|| n.bad_attr("score", "not valid for the target's data type"))?,
            ),
            None => None,
        };
        let mut labels = Vec::new();
        let mut weights = Vec::new();
        let mut confidences = Vec::new();
        let sds = n.kids_named("ScoreDistribution");
        let has_probs = sds.first().is_some_and(|s| s.attr("probability").is_some());
        for sd in &sds {
            let raw = sd.req_attr("value")?;
            labels.push(
                crate::value::parse_as(raw, score_dt)
                    .unwrap_or_else(|| Value::String(raw.to_string())),
            );
            weights.push(if has_probs {
                sd.req_f64("probability")?
            } else {
                sd.req_f64("recordCount")?
            });
            if let Some(cf) = sd.f64_attr("confidence")? {
                confidences.push(cf);
            }
        }
        let sum: f64 = weights.iter().sum();
        if !sds.is_empty() && sum != 1.0 {
            if sum == 0.0 {
                return Err(n.invalid("ScoreDistribution weights sum to zero"));
            }
            for w in weights.iter_mut() {
                *w /= sum;
            }
        }
        let idx = tree.nodes.len() as u32;
        if let Some(d) = n.attr("defaultChild") {
            default_ids.push((idx, d.to_string()));
        }
        tree.nodes.push(TreeNode {
            predicate,
            children: Vec::new(),
            score,
            id: n.attr("id").map(crate::model::Entity::from),
            labels: labels.into(),
            probs: weights.into(),
            confidences: if confidences.len() == sds.len() && !sds.is_empty() {
                Some(confidences)
            } else {
                None
            },
            default_child: None,
        });
        if let Some(p) = parent {
            tree.nodes[p as usize].children.push(idx);
        }
        for child in n.kids_named("Node").into_iter().rev() {
            stack.push((child, Some(idx)));
        }
    }
    for (idx, id) in default_ids {
        let child = tree.nodes[idx as usize]
            .children
            .iter()
            .copied()
            .find(|c| tree.nodes[*c as usize].id.as_deref() == Some(id.as_str()));
        match child {
            Some(ch) => tree.nodes[idx as usize].default_child = Some(ch),
            None => {
                return Err(m.invalid(format!("defaultChild {id:?} is not a child of its node")))
            }
        }
    }
    for n in &tree.nodes {
        tree.tests.push(match &n.predicate {
            Predicate::True => Test::True,
            Predicate::Num { field, op, c } => match (u32::try_from(*field), op_mask(*op)) {
                (Ok(field), Some(mask)) if !c.is_nan() => Test::Num { field, mask, c: *c },
                _ => Test::General,
            },
            _ => Test::General,
        });
        let start = tree.child_list.len() as u32;
        tree.child_list.extend_from_slice(&n.children);
        tree.kids.push((start, n.children.len() as u32));
    }
    for n in &tree.nodes {
        let split = match n.children[..] {
            [a, b] => match (tree.tests[a as usize], tree.tests[b as usize]) {
                (
                    Test::Num {
                        field: fa,
                        mask: ma,
                        c: ca,
                    },
                    Test::Num {
                        field: fb,
                        mask: mb,
                        c: cb,
                    },
                ) if fa == fb && ca == cb && ma ^ mb == LT | EQ | GT => Some((a, b)),
                _ => None,
            },
            _ => None,
        };
        tree.split.push(split);
    }
    Ok(ModelKind::Tree(tree))
}

impl Tree {
    /// Per node, the class distribution that [`Tree::evaluate`] reports for a classification
    /// prediction at that node (labels with probabilities, in order; empty = a missing
    /// prediction).
    pub(crate) fn node_distributions(&self) -> Vec<Vec<(&Value, f64)>> {
        self.nodes
            .iter()
            .map(|n| {
                if n.labels.is_empty() {
                    n.score.iter().map(|s| (s, 1.0)).collect()
                } else {
                    n.labels.iter().zip(n.probs.iter().copied()).collect()
                }
            })
            .collect()
    }

    /// The index of the scoring node, as [`Tree::evaluate`] selects it (`None`: no prediction).
    pub(crate) fn select_node(&self, ctx: &mut Ctx) -> Result<Option<usize>, EvalError> {
        Ok(self.select(ctx)?.map(|(i, _)| i))
    }

    /// Evaluates a node's predicate; the flag tells whether a surrogate alternative decided
    /// (which counts as a "missing level" for the confidence penalty).
    #[inline(always)]
    fn test(&self, idx: usize, ctx: &mut Ctx) -> Result<(Option<bool>, bool), EvalError> {
        match self.tests[idx] {
            // The common split: a numeric field at hand as a double (inputs usually are) —
            // compared inline; anything else takes the general path.
            Test::Num { field, mask, c } => {
                if let Some(x) = ctx.double_at_hand(field as usize) {
                    // A cached NaN (from a derived field) takes the general path.
                    if let Some(o) = outcome(x, c) {
                        return Ok((Some(mask & o != 0), false));
                    }
                }
                Ok((self.nodes[idx].predicate.eval(ctx)?, false))
            }
            Test::True => Ok((Some(true), false)),
            Test::General => self.test_general(&self.nodes[idx].predicate, ctx),
        }
    }

    #[inline(never)]
    fn test_general(
        &self,
        p: &Predicate,
        ctx: &mut Ctx,
    ) -> Result<(Option<bool>, bool), EvalError> {
        match p {
            Predicate::Compound {
                op: BoolOp::Surrogate,
                preds,
            } => {
                for (i, p) in preds.iter().enumerate() {
                    if let Some(b) = p.eval(ctx)? {
                        return Ok((Some(b), i > 0));
                    }
                }
                Ok((None, false))
            }
            p => Ok((p.eval(ctx)?, false)),
        }
    }

    /// Selects the scoring node; also returns the number of "missing levels".
    fn select(&self, ctx: &mut Ctx) -> Result<Option<(usize, i32)>, EvalError> {
        let mut levels = 0;
        let (root, alt) = self.test(0, ctx)?;
        if root != Some(true) {
            return Ok(None);
        }
        levels += i32::from(alt);
        let mut current = 0usize;
        'descend: loop {
            let (start, len) = self.kids[current];
            if len == 0 {
                return Ok(Some((current, levels)));
            }
            if let Some((a, b)) = self.split[current] {
                if let Test::Num { field, mask, c } = self.tests[a as usize] {
                    if let Some(o) = ctx
                        .double_at_hand(field as usize)
                        .and_then(|x| outcome(x, c))
                    {
                        // `a` holds, or else `b` (its complement) does: what testing `a`,
                        // then `b`, gives. A branch (not a select): the next test depends on it.
                        if mask & o != 0 {
                            current = a as usize;
                        } else {
                            current = b as usize;
                            std::hint::black_box(());
                        }
                        continue 'descend;
                    }
                }
            }
            let (start, len) = (start as usize, len as usize);
            for &ch in &self.child_list[start..start + len] {
                let (status, alt) = self.test(ch as usize, ctx)?;
                levels += i32::from(alt);
                match status {
                    Some(true) => {
                        current = ch as usize;
                        continue 'descend;
                    }
                    Some(false) => {}
                    None => match self.missing {
                        MissingStrategy::None => {}
                        MissingStrategy::NullPrediction => return Ok(None),
                        MissingStrategy::NotImplemented(name) => {
                            return Err(EvalError::InvalidResult(format!(
                                "unsupported: missingValueStrategy {name} met a missing value"
                            )))
                        }
                        MissingStrategy::LastPrediction => return Ok(Some((current, levels))),
                        MissingStrategy::DefaultChild => {
                            // The predicate of the default child is not evaluated.
                            let node = &self.nodes[current];
                            match node.default_child {
                                Some(d) => {
                                    levels += 1;
                                    current = d as usize;
                                    continue 'descend;
                                }
                                None => {
                                    return Err(EvalError::InvalidResult(format!(
                                        "node {:?} has no defaultChild",
                                        node.id
                                    )))
                                }
                            }
                        }
                    },
                }
            }
            // No true child.
            if self.last_on_no_true_child && self.nodes[current].score.is_some() {
                return Ok(Some((current, levels)));
            }
            return Ok(None);
        }
    }

    /// `true` when every node's score (if any) is a double, as a regression tree's are.
    pub fn scores_are_doubles(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| matches!(n.score, None | Some(Value::Double(_))))
    }

    /// The score of the selected node of a regression tree whose scores are doubles (`None`: no
    /// prediction) — the value of [`Tree::evaluate`]'s prediction.
    #[inline]
    pub fn number(&self, ctx: &mut Ctx) -> Result<Option<f64>, EvalError> {
        Ok(match self.select(ctx)? {
            Some((i, _)) => match self.nodes[i].score {
                Some(Value::Double(x)) => Some(x),
                _ => None,
            },
            None => None,
        })
    }

    pub fn evaluate(&self, ctx: &mut Ctx, model: &Model) -> Result<Prediction, EvalError> {
        let Some((i, levels)) = self.select(ctx)? else {
            return Ok(Prediction::Missing);
        };
        let node = &self.nodes[i];
        if !model.classification {
            return Ok(match &node.score {
                Some(v) => Prediction::Value {
                    value: v.clone(),
                    entity: node.id.clone(),
                },
                None => Prediction::Missing,
            });
        }
        if node.labels.is_empty() {
            return Ok(match &node.score {
                Some(v) => Prediction::Classes {
                    result: v.clone(),
                    labels: vec![v.clone()].into(),
                    probs: vec![1.0].into(),
                    confidences: None,
                    entity: node.id.clone(),
                },
                None => Prediction::Missing,
            });
        }
        // As `Prediction::from_distribution`, but the node's score (if any) is the result, so
        // the best label is only looked up (and copied) when there is none.
        let result = match (&node.score, Prediction::best(&node.probs)) {
            (_, None) => return Ok(Prediction::Missing),
            (Some(s), Some(_)) => s.clone(),
            (None, Some(b)) => node.labels[b].clone(),
        };
        let mut p = Prediction::Classes {
            result,
            labels: node.labels.clone(),
            probs: crate::model::Probs::Shared(node.probs.clone()),
            confidences: None,
            entity: None,
        };
        if let Prediction::Classes {
            confidences,
            entity,
            ..
        } = &mut p
        {
            confidences.clone_from(&node.confidences);
            if levels > 0 {
                let factor = self.penalty.powi(levels);
                if let Some(c) = confidences.as_mut() {
                    for x in c.iter_mut() {
                        *x *= factor;
                    }
                }
            }
            entity.clone_from(&node.id);
        }
        Ok(p)
    }
}
