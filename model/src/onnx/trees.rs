//! ONNX-ML tree ensembles evaluated by flowstage: `TreeEnsembleRegressor` (which tract does not
//! implement) as a tract op, registered in tract's ONNX op registry.
//!
//! Semantics follow the ONNX-ML operator specification (and onnxruntime's behaviour for the
//! details the specification leaves open): each tree is walked from its root with the node's
//! comparison (`BRANCH_LEQ`, `BRANCH_LT`, `BRANCH_GTE`, `BRANCH_GT`, `BRANCH_EQ`, `BRANCH_NEQ`);
//! a NaN feature follows the true branch when `nodes_missing_value_tracks_true` says so, the
//! false branch otherwise. Leaf weights are summed per target in float32, tree by tree; then
//! `aggregate_function` (SUM, AVERAGE, MIN, MAX), `base_values` and `post_transform` (NONE,
//! LOGISTIC, SOFTMAX, SOFTMAX_ZERO) apply.

use std::collections::HashMap;

use tract_hir::internal::*;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{AttributeProto, NodeProto};

/// A node comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
}

/// One node of the flattened ensemble.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Node {
    Branch {
        feature: u32,
        threshold: u32, // f32 bits
        mode: Mode,
        nan_true: bool,
        when_true: u32,
        when_false: u32,
    },
    /// Range into `leaf_weights`.
    Leaf { start: u32, end: u32 },
}

/// How tree outputs combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// Transform applied to the aggregated scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Post {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
}

/// A parsed tree ensemble.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Ensemble {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// (target, weight bits)
    leaf_weights: Vec<(u32, u32)>,
    n_targets: usize,
    n_features: usize,
    aggregate: Aggregate,
    base: Vec<u32>,
    post: Post,
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &NodeProto, name: &str) -> TractResult<Vec<i64>> {
    attr(node, name)
        .map(|a| a.ints.clone())
        .ok_or_else(|| format_err!("{}: missing attribute {name}", node.op_type))
}

fn floats_or_tensor(node: &NodeProto, name: &str) -> TractResult<Option<Vec<f32>>> {
    if let Some(a) = attr(node, name) {
        return Ok(Some(a.floats.clone()));
    }
    let tensor_name = format!("{name}_as_tensor");
    match attr(node, &tensor_name).and_then(|a| a.t.as_ref()) {
        Some(t) => {
            // Values as a tensor: float (1) or double (11), inline or raw little-endian.
            let values: Vec<f32> = match t.data_type {
                1 if !t.raw_data.is_empty() => t
                    .raw_data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                1 => t.float_data.clone(),
                11 if !t.raw_data.is_empty() => t
                    .raw_data
                    .chunks_exact(8)
                    .map(|c| {
                        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                    })
                    .collect(),
                11 => t.double_data.iter().map(|d| *d as f32).collect(),
                other => bail!("{tensor_name}: unsupported tensor type {other}"),
            };
            Ok(Some(values))
        }
        None => Ok(None),
    }
}

fn string(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

fn index(v: i64, what: &str) -> TractResult<u32> {
    u32::try_from(v).map_err(|_| format_err!("negative or too large {what}: {v}"))
}

impl Ensemble {
    /// Parses a `TreeEnsembleRegressor` (`prefix` "target") or `TreeEnsembleClassifier`
    /// (`prefix` "class") node.
    pub(crate) fn parse(node: &NodeProto, prefix: &str, n_targets: usize) -> TractResult<Self> {
        let tree_ids = ints(node, "nodes_treeids")?;
        let node_ids = ints(node, "nodes_nodeids")?;
        let features = ints(node, "nodes_featureids")?;
        let trues = ints(node, "nodes_truenodeids")?;
        let falses = ints(node, "nodes_falsenodeids")?;
        let values = floats_or_tensor(node, "nodes_values")?
            .ok_or_else(|| format_err!("missing attribute nodes_values"))?;
        let modes: Vec<String> = attr(node, "nodes_modes")
            .map(|a| {
                a.strings
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .ok_or_else(|| format_err!("missing attribute nodes_modes"))?;
        let missing = attr(node, "nodes_missing_value_tracks_true")
            .map(|a| a.ints.clone())
            .unwrap_or_default();
        let n = tree_ids.len();
        ensure!(n > 0, "tree ensemble without nodes");
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_truenodeids", trues.len()),
            ("nodes_falsenodeids", falses.len()),
            ("nodes_values", values.len()),
            ("nodes_modes", modes.len()),
        ] {
            ensure!(len == n, "{name} has {len} entries, nodes_treeids {n}");
        }
        ensure!(
            missing.is_empty() || missing.len() == n,
            "nodes_missing_value_tracks_true has {} entries, expected {n}",
            missing.len()
        );
        // (tree, node id) -> flat index
        let mut flat: HashMap<(i64, i64), u32> = HashMap::with_capacity(n);
        let mut roots: Vec<u32> = vec![];
        let mut tree_of_root: Vec<i64> = vec![];
        for i in 0..n {
            let key = (tree_ids[i], node_ids[i]);
            ensure!(
                flat.insert(key, i as u32).is_none(),
                "duplicate node {} in tree {}",
                key.1,
                key.0
            );
            if !tree_of_root.contains(&tree_ids[i]) {
                tree_of_root.push(tree_ids[i]);
            }
        }
        for t in &tree_of_root {
            // The root is node 0 when present, else the smallest id of the tree.
            let root = (0..n)
                .filter(|&i| tree_ids[i] == *t)
                .min_by_key(|&i| node_ids[i])
                .ok_or_else(|| format_err!("empty tree"))?;
            roots.push(root as u32);
        }
        // Leaves.
        let l_tree = ints(node, &format!("{prefix}_treeids"))?;
        let l_node = ints(node, &format!("{prefix}_nodeids"))?;
        let l_ids = ints(node, &format!("{prefix}_ids"))?;
        let l_w = floats_or_tensor(node, &format!("{prefix}_weights"))?
            .ok_or_else(|| format_err!("missing attribute {prefix}_weights"))?;
        let nl = l_tree.len();
        ensure!(
            l_node.len() == nl && l_ids.len() == nl && l_w.len() == nl,
            "{prefix}_* attributes have different lengths"
        );
        let mut per_leaf: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
        for j in 0..nl {
            let at = *flat
                .get(&(l_tree[j], l_node[j]))
                .ok_or_else(|| format_err!("leaf weight for unknown node {}", l_node[j]))?;
            let target = index(l_ids[j], "target id")?;
            ensure!(
                (target as usize) < n_targets,
                "target/class id {target} out of range ({n_targets})"
            );
            per_leaf
                .entry(at)
                .or_default()
                .push((target, l_w[j].to_bits()));
        }
        let mut nodes = Vec::with_capacity(n);
        let mut leaf_weights = vec![];
        let mut max_feature = 0usize;
        for i in 0..n {
            let mode = match modes[i].as_str() {
                "LEAF" => None,
                "BRANCH_LEQ" => Some(Mode::Leq),
                "BRANCH_LT" => Some(Mode::Lt),
                "BRANCH_GTE" => Some(Mode::Gte),
                "BRANCH_GT" => Some(Mode::Gt),
                "BRANCH_EQ" => Some(Mode::Eq),
                "BRANCH_NEQ" => Some(Mode::Neq),
                other => bail!("unsupported node mode {other:?}"),
            };
            nodes.push(match mode {
                None => {
                    let start = leaf_weights.len() as u32;
                    if let Some(ws) = per_leaf.remove(&(i as u32)) {
                        leaf_weights.extend(ws);
                    }
                    Node::Leaf {
                        start,
                        end: leaf_weights.len() as u32,
                    }
                }
                Some(mode) => {
                    let child = |id: i64| {
                        flat.get(&(tree_ids[i], id)).copied().ok_or_else(|| {
                            format_err!(
                                "node {} of tree {} points to missing node {id}",
                                node_ids[i],
                                tree_ids[i]
                            )
                        })
                    };
                    let feature = index(features[i], "feature id")?;
                    max_feature = max_feature.max(feature as usize + 1);
                    Node::Branch {
                        feature,
                        threshold: values[i].to_bits(),
                        mode,
                        nan_true: missing.get(i).is_some_and(|m| *m != 0),
                        when_true: child(trues[i])?,
                        when_false: child(falses[i])?,
                    }
                }
            });
        }
        ensure!(per_leaf.is_empty(), "leaf weights attached to branch nodes");
        let aggregate = match string(node, "aggregate_function").as_deref() {
            None | Some("SUM") => Aggregate::Sum,
            Some("AVERAGE") => Aggregate::Average,
            Some("MIN") => Aggregate::Min,
            Some("MAX") => Aggregate::Max,
            Some(other) => bail!("unsupported aggregate_function {other:?}"),
        };
        let post = match string(node, "post_transform").as_deref() {
            None | Some("NONE") => Post::None,
            Some("LOGISTIC") => Post::Logistic,
            Some("SOFTMAX") => Post::Softmax,
            Some("SOFTMAX_ZERO") => Post::SoftmaxZero,
            Some(other) => bail!("unsupported post_transform {other:?}"),
        };
        let base = floats_or_tensor(node, "base_values")?.unwrap_or_default();
        ensure!(
            base.is_empty() || base.len() == n_targets || (prefix == "class" && base.len() == 1),
            "base_values has {} entries for {n_targets} targets",
            base.len()
        );
        Ok(Ensemble {
            nodes,
            roots,
            leaf_weights,
            n_targets,
            n_features: max_feature,
            aggregate,
            base: base.iter().map(|b| b.to_bits()).collect(),
            post,
        })
    }

    /// Walks every tree for one row, combining leaf weights per target into `out` (with
    /// `seen` telling which targets got a weight).
    fn accumulate(&self, x: &[f32], out: &mut [f32], seen: &mut [bool]) -> TractResult<()> {
        out.iter_mut().for_each(|o| *o = 0.0);
        seen.iter_mut().for_each(|s| *s = false);
        for root in &self.roots {
            let mut at = *root as usize;
            let mut steps = 0usize;
            loop {
                steps += 1;
                ensure!(steps <= self.nodes.len(), "tree ensemble has a cycle");
                match &self.nodes[at] {
                    Node::Branch {
                        feature,
                        threshold,
                        mode,
                        nan_true,
                        when_true,
                        when_false,
                    } => {
                        let v = x[*feature as usize];
                        let th = f32::from_bits(*threshold);
                        let go_true = if v.is_nan() {
                            *nan_true
                        } else {
                            match mode {
                                Mode::Leq => v <= th,
                                Mode::Lt => v < th,
                                Mode::Gte => v >= th,
                                Mode::Gt => v > th,
                                Mode::Eq => v == th,
                                Mode::Neq => v != th,
                            }
                        };
                        at = if go_true { *when_true } else { *when_false } as usize;
                    }
                    Node::Leaf { start, end } => {
                        for (t, w) in &self.leaf_weights[*start as usize..*end as usize] {
                            let t = *t as usize;
                            let w = f32::from_bits(*w);
                            out[t] = match (self.aggregate, seen[t]) {
                                (Aggregate::Sum | Aggregate::Average, _) => out[t] + w,
                                (Aggregate::Min, true) => out[t].min(w),
                                (Aggregate::Max, true) => out[t].max(w),
                                (Aggregate::Min | Aggregate::Max, false) => w,
                            };
                            seen[t] = true;
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Scores one row into `out` (length `n_targets`): regressor semantics.
    fn eval_row(&self, x: &[f32], out: &mut [f32], seen: &mut [bool]) -> TractResult<()> {
        self.accumulate(x, out, seen)?;
        let n_trees = self.roots.len() as f32;
        for (t, o) in out.iter_mut().enumerate() {
            if self.aggregate == Aggregate::Average {
                *o /= n_trees;
            }
            if let Some(b) = self.base.get(t) {
                *o += f32::from_bits(*b);
            }
        }
        apply_post(self.post, out);
        Ok(())
    }

    /// Scores a `[N, F]` (or `[F]`) input into `[N, n_targets]`.
    fn eval(&self, input: &Tensor) -> TractResult<Tensor> {
        let input = input.cast_to::<f32>()?;
        let shape = input.shape().to_vec();
        let (rows, width) = match shape.as_slice() {
            [f] => (1, *f),
            [n, f] => (*n, *f),
            _ => bail!("tree ensemble input must be rank 1 or 2, got {shape:?}"),
        };
        ensure!(
            width >= self.n_features,
            "tree ensemble reads feature {} of rows with {width} features",
            self.n_features.saturating_sub(1)
        );
        let view = input.try_as_plain_ram()?;
        let data = view.as_slice::<f32>()?;
        let mut out = vec![0f32; rows * self.n_targets];
        let mut seen = vec![false; self.n_targets];
        if width > 0 && self.n_targets > 0 {
            for (x, o) in data.chunks(width).zip(out.chunks_mut(self.n_targets)) {
                self.eval_row(x, o, &mut seen)?;
            }
        }
        Tensor::from_shape(&[rows, self.n_targets], &out)
    }
}

/// Applies a post transform to a row of scores.
fn apply_post(post: Post, out: &mut [f32]) {
    match post {
        Post::None => {}
        Post::Logistic => out.iter_mut().for_each(|o| *o = logistic(*o)),
        Post::Softmax | Post::SoftmaxZero => {
            let zero = post == Post::SoftmaxZero;
            let max = out
                .iter()
                .filter(|v| !zero || **v != 0.0)
                .fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            let mut sum = 0f32;
            for o in out.iter_mut() {
                if !(zero && *o == 0.0) {
                    *o = (*o - max).exp();
                    sum += *o;
                }
            }
            if sum > 0.0 {
                out.iter_mut().for_each(|o| *o /= sum);
            }
        }
    }
}

fn logistic(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// The typed op.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TreeRegressorOp {
    ensemble: Ensemble,
}

impl Op for TreeRegressorOp {
    fn name(&self) -> StaticName {
        "FlowstageTreeEnsembleRegressor".into()
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for TreeRegressorOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "TreeEnsembleRegressor takes one input");
        let out = self.ensemble.eval(&inputs[0])?;
        Ok(tvec!(out.into_tvalue()))
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(EvalOp::eval(
            self,
            &EvalContext::out_of_plan(),
            inputs,
        )?))
    }
}

impl TypedOp for TreeRegressorOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "TreeEnsembleRegressor takes one input");
        let rows = if inputs[0].rank() == 2 {
            inputs[0].shape[0].clone()
        } else {
            1.to_dim()
        };
        Ok(tvec!(f32::fact(&[rows, self.ensemble.n_targets.to_dim()])))
    }

    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }
}

/// The inference-time wrapper tract's ONNX loader builds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TreeRegressor {
    ensemble: Ensemble,
}

impl Expansion for TreeRegressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.ensemble.n_targets.to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(
            prefix,
            TreeRegressorOp {
                ensemble: self.ensemble.clone(),
            },
            inputs,
        )
    }
}

/// The ONNX op builder for `TreeEnsembleRegressor`.
pub(crate) fn tree_regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets = attr(node, "n_targets").map_or(1, |a| a.i);
    let n_targets = usize::try_from(n_targets)
        .ok()
        .filter(|n| (1..=1 << 20).contains(n))
        .ok_or_else(|| format_err!("bad n_targets {n_targets}"))?;
    let ensemble = Ensemble::parse(node, "target", n_targets)?;
    Ok((expand(TreeRegressor { ensemble }), vec![]))
}

/// Class labels of a classifier.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }
}

/// `TreeEnsembleClassifier`: flowstage's own, replacing tract's (which rejects string labels
/// and single base values for binary models). Binary models follow onnxruntime: when the
/// trees only vote for one class, that class's score `s` yields the probabilities
/// `[1 - s, s]` (non-negative weights) or `[-s, s]` / `[σ(-s), σ(s)]` (LOGISTIC).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Classifier {
    ensemble: Ensemble,
    labels: Labels,
    binary_case: bool,
    all_positive: bool,
}

impl Classifier {
    /// Scores one row: probabilities into `probs`, returns the label index.
    fn classify(
        &self,
        x: &[f32],
        scores: &mut [f32],
        has: &mut [bool],
        probs: &mut [f32],
    ) -> TractResult<usize> {
        let e = &self.ensemble;
        e.accumulate(x, scores, has)?;
        let base: Vec<f32> = e.base.iter().map(|b| f32::from_bits(*b)).collect();
        let n = scores.len();
        if n != 2 {
            for (k, b) in base.iter().enumerate() {
                scores[k] += b;
                has[k] = true;
            }
            let mut best: Option<usize> = None;
            for k in 0..n {
                if has[k] && best.is_none_or(|b| scores[k] > scores[b]) {
                    best = Some(k);
                }
            }
            probs.copy_from_slice(scores);
            apply_post(e.post, probs);
            return Ok(best.unwrap_or(0));
        }
        let mut single = false;
        let mut add = -1;
        match base.len() {
            2 if has[1] => {
                scores[1] = base[1] + scores[0];
                scores[0] = -scores[1];
            }
            2 => {
                scores[0] += base[0];
                scores[1] += base[1];
            }
            1 => {
                scores[0] += base[0];
                single = !has[1];
            }
            _ => {
                add = 3;
                single = !has[1];
            }
        }
        let pos = if has[1] {
            scores[1]
        } else if has[0] {
            scores[0]
        } else {
            0.0
        };
        let label = if self.binary_case {
            if self.all_positive {
                add = if pos > 0.5 { 0 } else { 1 };
                usize::from(pos > 0.5)
            } else {
                add = if pos > 0.0 { 2 } else { 3 };
                usize::from(pos > 0.0)
            }
        } else {
            usize::from(pos > 0.0)
        };
        if single {
            let s = scores[0];
            let pair = match add {
                0 | 1 => [1.0 - s, s],
                _ if e.post == Post::Logistic => [logistic(-s), logistic(s)],
                _ => [-s, s],
            };
            probs.copy_from_slice(&pair);
        } else {
            probs.copy_from_slice(scores);
            apply_post(e.post, probs);
        }
        Ok(label)
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<TValue>> {
        let input = input.cast_to::<f32>()?;
        let shape = input.shape().to_vec();
        let (rows, width) = match shape.as_slice() {
            [f] => (1, *f),
            [n, f] => (*n, *f),
            _ => bail!("tree ensemble input must be rank 1 or 2, got {shape:?}"),
        };
        ensure!(
            width >= self.ensemble.n_features,
            "tree ensemble reads feature {} of rows with {width} features",
            self.ensemble.n_features.saturating_sub(1)
        );
        let c = self.labels.len();
        let view = input.try_as_plain_ram()?;
        let data = view.as_slice::<f32>()?;
        let mut probs = vec![0f32; rows * c];
        let mut winners = Vec::with_capacity(rows);
        let mut scores = vec![0f32; c];
        let mut has = vec![false; c];
        if width > 0 {
            for (x, p) in data.chunks(width).zip(probs.chunks_mut(c)) {
                winners.push(self.classify(x, &mut scores, &mut has, p)?);
            }
        }
        let labels = match &self.labels {
            Labels::Ints(l) => tensor1(&winners.iter().map(|w| l[*w]).collect::<Vec<_>>()),
            Labels::Strings(l) => {
                tensor1(&winners.iter().map(|w| l[*w].clone()).collect::<Vec<_>>())
            }
        };
        let probs = Tensor::from_shape(&[rows, c], &probs)?;
        Ok(tvec!(labels.into_tvalue(), probs.into_tvalue()))
    }

    fn label_type(&self) -> DatumType {
        match self.labels {
            Labels::Ints(_) => DatumType::I64,
            Labels::Strings(_) => DatumType::String,
        }
    }
}

/// The typed classifier op.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TreeClassifierOp(Classifier);

impl Op for TreeClassifierOp {
    fn name(&self) -> StaticName {
        "FlowstageTreeEnsembleClassifier".into()
    }

    fn as_typed(&self) -> Option<&dyn TypedOp> {
        Some(self)
    }
}

impl EvalOp for TreeClassifierOp {
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(inputs.len() == 1, "TreeEnsembleClassifier takes one input");
        self.0.eval(&inputs[0])
    }

    fn eval_out_of_plan(&self, inputs: TVec<TValue>) -> TractResult<Option<TVec<TValue>>> {
        Ok(Some(EvalOp::eval(
            self,
            &EvalContext::out_of_plan(),
            inputs,
        )?))
    }
}

impl TypedOp for TreeClassifierOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1, "TreeEnsembleClassifier takes one input");
        let rows = if inputs[0].rank() == 2 {
            inputs[0].shape[0].clone()
        } else {
            1.to_dim()
        };
        Ok(tvec!(
            self.0.label_type().fact(std::slice::from_ref(&rows)),
            f32::fact(&[rows, self.0.labels.len().to_dim()])
        ))
    }

    fn as_op(&self) -> &dyn Op {
        self
    }

    fn as_op_mut(&mut self) -> &mut dyn Op {
        self
    }
}

impl Expansion for Classifier {
    fn name(&self) -> StaticName {
        "TreeEnsembleClassifier".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&outputs[0].datum_type, self.label_type())?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[1], self.labels.len().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, TreeClassifierOp(self.clone()), inputs)
    }
}

/// The ONNX op builder for `TreeEnsembleClassifier`.
pub(crate) fn tree_classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let ints = attr(node, "classlabels_int64s").map(|a| a.ints.clone());
    let strings = attr(node, "classlabels_strings").map(|a| {
        a.strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
    });
    let labels = match (ints, strings) {
        (Some(i), None) if !i.is_empty() => Labels::Ints(i),
        (None, Some(s)) if !s.is_empty() => Labels::Strings(s),
        _ => bail!("exactly one of classlabels_int64s and classlabels_strings must be set"),
    };
    let mut ensemble = Ensemble::parse(node, "class", labels.len())?;
    ensemble.aggregate = Aggregate::Sum;
    let class_ids: std::collections::HashSet<u32> =
        ensemble.leaf_weights.iter().map(|(t, _)| *t).collect();
    let binary_case = labels.len() == 2 && class_ids.len() == 1;
    let all_positive = ensemble
        .leaf_weights
        .iter()
        .all(|(_, w)| f32::from_bits(*w) >= 0.0);
    ensure!(
        ensemble.base.is_empty() || ensemble.base.len() <= labels.len(),
        "too many base_values"
    );
    Ok((
        expand(Classifier {
            ensemble,
            labels,
            binary_case,
            all_positive,
        }),
        vec![],
    ))
}
