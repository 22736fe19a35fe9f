//! A native evaluator for plain dense networks, used by [`crate::tensor::TensorModel`] for
//! single records and small batches instead of a tract plan (whose fixed per-call cost is
//! most of a small MLP's scoring time).
//!
//! [`DenseNet::recognize`] accepts a decluttered tract graph only if the whole graph is one
//! chain: the single `[N, k]` float32 input, then layers of `MatMul` (an `EinSum` `ik,kj->ij`
//! with constant weights), an optional constant bias `Add` (`[j]` or `[1, j]`) and an optional
//! activation (`Max` with constant 0, i.e. Relu; `Tanh`; `Sigmoid`), ending at the graph's only
//! output. Anything else (another op, a non-constant operand, several outputs) is rejected and
//! the model keeps using tract.

use tract_hir::internal::*;
use tract_hir::tract_core::ops::binary::TypedBinOp;
use tract_hir::tract_core::ops::einsum::EinSum;
use tract_hir::tract_core::ops::element_wise::ElementWiseOp;

/// A layer's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Identity,
    Relu,
    Tanh,
    Sigmoid,
}

/// One dense layer: `act(x · w + b)`.
#[derive(Debug, Clone)]
struct Layer {
    /// Inputs of the layer.
    k: usize,
    /// Outputs of the layer.
    n: usize,
    /// Row-major `[k, n]`.
    w: Vec<f32>,
    /// `n` values (zeros without a bias).
    b: Vec<f32>,
    act: Activation,
}

/// A chain of dense layers recognised in a tract graph.
#[derive(Debug, Clone)]
pub(crate) struct DenseNet {
    layers: Vec<Layer>,
}

/// The constant float32 value of an outlet, if it has one.
fn konst(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    let fact = model.outlet_fact(outlet).ok()?;
    let k = fact.konst.clone()?;
    (k.datum_type() == DatumType::F32).then_some(k)
}

/// Whether an einsum's axes are a plain matrix product `ik,kj->ij` (any letters).
fn is_matmul(axes: &str) -> bool {
    let Some((ins, out)) = axes.split_once("->") else {
        return false;
    };
    let Some((a, b)) = ins.split_once(',') else {
        return false;
    };
    let (a, b, out): (Vec<char>, Vec<char>, Vec<char>) = (
        a.chars().collect(),
        b.chars().collect(),
        out.chars().collect(),
    );
    if a.len() != 2 || b.len() != 2 || out.len() != 2 {
        return false;
    }
    let (i, k, j) = (a[0], a[1], b[1]);
    i != k && k != j && i != j && b[0] == k && out[0] == i && out[1] == j
}

impl DenseNet {
    /// Recognises a dense chain in a decluttered model, or `None` (see the module docs).
    pub(crate) fn recognize(model: &TypedModel) -> Option<DenseNet> {
        let inputs = model.input_outlets().ok()?;
        let outputs = model.output_outlets().ok()?;
        if inputs.len() != 1 || outputs.len() != 1 {
            return None;
        }
        let input = inputs[0];
        let output = outputs[0];
        let in_fact = model.outlet_fact(input).ok()?;
        if in_fact.datum_type != DatumType::F32 || in_fact.rank() != 2 {
            return None;
        }
        let mut width = in_fact.shape[1].to_usize().ok()?;
        // Every node must be consumed exactly along the chain: count the ones we use.
        let mut used = 1usize; // the source
        let mut consts = std::collections::HashSet::new();
        let mut cur = input;
        let mut layers: Vec<Layer> = Vec::new();
        let single_successor = |o: OutletId| -> Option<usize> {
            let node = model.node(o.node);
            if node.outputs.len() != 1 {
                return None;
            }
            let succ = &node.outputs[o.slot].successors;
            if succ.len() != 1 || o == output {
                return None;
            }
            Some(succ[0].node)
        };
        while cur != output {
            let next = single_successor(cur)?;
            let node = model.node(next);
            if node.outputs.len() != 1 {
                return None;
            }
            // The other operand, constant, and the chain value as the first input.
            let other = |node: &TypedNode| -> Option<(usize, Arc<Tensor>)> {
                if node.inputs.len() != 2 || node.inputs[0] != cur {
                    return None;
                }
                Some((node.inputs[1].node, konst(model, node.inputs[1])?))
            };
            if let Some(es) = node.op_as::<EinSum>() {
                if es.q_params.is_some()
                    || es.operating_dt != DatumType::F32
                    || !is_matmul(&es.axes.to_string())
                {
                    return None;
                }
                let (c, w) = other(node)?;
                let shape = w.shape();
                if shape.len() != 2 || shape[0] != width {
                    return None;
                }
                let n = shape[1];
                let view = w.try_as_plain_ram().ok()?;
                let w = view.as_slice::<f32>().ok()?.to_vec();
                layers.push(Layer {
                    k: width,
                    n,
                    w,
                    b: vec![0.0; n],
                    act: Activation::Identity,
                });
                consts.insert(c);
                width = n;
            } else if let Some(bin) = node.op_as::<TypedBinOp>() {
                let layer = layers.last_mut()?;
                if bin.1.is_some() {
                    return None;
                }
                let (c, t) = other(node)?;
                let view = t.try_as_plain_ram().ok()?;
                let vals = view.as_slice::<f32>().ok()?;
                match bin.0.name() {
                    "Add"
                        if layer.act == Activation::Identity
                            && layer.b.iter().all(|b| *b == 0.0) =>
                    {
                        let shape = t.shape();
                        let ok = matches!(shape, [j] if *j == width)
                            || matches!(shape, [1, j] if *j == width);
                        if !ok {
                            return None;
                        }
                        layer.b.copy_from_slice(vals);
                    }
                    "Max" if layer.act == Activation::Identity => {
                        if t.len() != 1 || vals.first() != Some(&0.0) || t.rank() > 2 {
                            return None;
                        }
                        layer.act = Activation::Relu;
                    }
                    _ => return None,
                }
                consts.insert(c);
            } else if let Some(ew) = node.op_as::<ElementWiseOp>() {
                let layer = layers.last_mut()?;
                if ew.1.is_some() || node.inputs.len() != 1 || layer.act != Activation::Identity {
                    return None;
                }
                layer.act = match ew.0.name().as_str() {
                    "Tanh" => Activation::Tanh,
                    "Sigmoid" => Activation::Sigmoid,
                    _ => return None,
                };
            } else {
                return None;
            }
            used += 1;
            cur = OutletId::new(next, 0);
        }
        // Nothing but the chain and its constants.
        if layers.is_empty() || model.nodes().len() != used + consts.len() {
            return None;
        }
        Some(DenseNet { layers })
    }

    /// Columns of the output.
    pub(crate) fn output_width(&self) -> usize {
        self.layers.last().map_or(0, |l| l.n)
    }

    /// Scores `rows` rows of `data` (row-major, `rows × input width`) into `out`
    /// (`rows × output width`); stops early (fewer rows out) if `data` is too short.
    pub(crate) fn run(&self, rows: usize, data: &[f32], out: &mut Vec<f32>) {
        out.clear();
        let mut a: Vec<f32> = Vec::new();
        let mut b: Vec<f32> = Vec::new();
        for r in 0..rows {
            let Some(first) = self.layers.first() else {
                return;
            };
            let Some(row) = data.get(r * first.k..(r + 1) * first.k) else {
                return;
            };
            a.clear();
            a.extend_from_slice(row);
            for layer in &self.layers {
                b.clear();
                b.resize(layer.n, 0.0);
                for (x, wrow) in a.iter().zip(layer.w.chunks_exact(layer.n)) {
                    for (acc, w) in b.iter_mut().zip(wrow) {
                        *acc += x * w;
                    }
                }
                for (v, bias) in b.iter_mut().zip(&layer.b) {
                    let y = *v + bias;
                    *v = match layer.act {
                        Activation::Identity => y,
                        Activation::Relu => y.max(0.0),
                        Activation::Tanh => y.tanh(),
                        Activation::Sigmoid => 1.0 / (1.0 + (-y).exp()),
                    };
                }
                std::mem::swap(&mut a, &mut b);
            }
            out.extend_from_slice(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_axes() {
        assert!(is_matmul("ik,kj->ij"));
        assert!(is_matmul("mk,kn->mn"));
        assert!(!is_matmul("ik,jk->ij"));
        assert!(!is_matmul("ik,kj->ji"));
        assert!(!is_matmul("bik,kj->bij"));
    }
}
