//! NeuralNetwork.

use crate::compile::Compiler;
use crate::error::{EvalError, LoadError};
use crate::expr::{denorm_continuous, Expr};
use crate::fields::Ctx;
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::models::regression::normalize;
use crate::value::Value;
use crate::xml::El;
use roxmltree::Node;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    Threshold(f64),
    Logistic,
    Tanh,
    Identity,
    Exponential,
    Reciprocal,
    Square,
    Gauss,
    Sine,
    Cosine,
    Elliott,
    Arctan,
    Rectifier(Option<f64>),
    RadialBasis { altitude: f64 },
}

#[derive(Debug)]
struct Neuron {
    bias: f64,
    width: f64,
    inputs: Vec<(u32, f64)>,
}

#[derive(Debug)]
struct Layer {
    activation: Activation,
    /// 0 none, 1 simplemax, 2 softmax
    norm: u8,
    neurons: Vec<Neuron>,
    /// Set when every neuron reads the same consecutive activations `from..from + len`, in
    /// order (a fully connected layer): the weights as a row-major neurons × `len` matrix.
    dense: Option<Dense>,
}

#[derive(Debug)]
struct Dense {
    from: usize,
    len: usize,
    weights: Vec<f64>,
}

impl Layer {
    fn dense_of(neurons: &[Neuron]) -> Option<Dense> {
        let first = neurons.first()?;
        let from = first.inputs.first()?.0 as usize;
        let len = first.inputs.len();
        let mut weights = Vec::with_capacity(len * neurons.len());
        for n in neurons {
            if n.inputs.len() != len {
                return None;
            }
            for (k, (i, w)) in n.inputs.iter().enumerate() {
                if *i as usize != from + k {
                    return None;
                }
                weights.push(*w);
            }
        }
        Some(Dense { from, len, weights })
    }
}

/// The weighted sums of a dense layer: four neurons at a time over the same inputs (four
/// independent chains, so the additions overlap); each neuron's sum is still added up term by
/// term in input order, then the bias — exactly as the one-neuron loop does.
fn dense_sums(d: &Dense, neurons: &[Neuron], src: &[f64], out: &mut Vec<f64>) {
    let len = d.len;
    let mut rows = d.weights.chunks_exact(len).zip(neurons);
    while let (Some((w0, n0)), Some((w1, n1)), Some((w2, n2)), Some((w3, n3))) =
        (rows.next(), rows.next(), rows.next(), rows.next())
    {
        let (mut z0, mut z1, mut z2, mut z3) = (0.0, 0.0, 0.0, 0.0);
        for k in 0..len {
            let x = src[k];
            z0 += w0[k] * x;
            z1 += w1[k] * x;
            z2 += w2[k] * x;
            z3 += w3[k] * x;
        }
        out.extend_from_slice(&[z0 + n0.bias, z1 + n1.bias, z2 + n2.bias, z3 + n3.bias]);
    }
    // The rest (fewer than four neurons).
    let done = out.len();
    let tail = d.weights.chunks_exact(len).zip(neurons).skip(done);
    for (w, n) in tail {
        let mut z = 0.0;
        for (w, x) in w.iter().zip(src) {
            z += w * x;
        }
        out.push(z + n.bias);
    }
}

#[derive(Debug)]
enum OutputMap {
    /// Regression: the neuron value is the target (FieldRef).
    Identity,
    /// Regression: NormContinuous on the target, inverted.
    Denorm(Vec<f64>, Vec<f64>),
    /// Classification: probability of a category (NormDiscrete).
    Category(Value),
}

#[derive(Debug)]
pub(crate) struct Neural {
    inputs: Vec<Expr>,
    layers: Vec<Layer>,
    outputs: Vec<(u32, OutputMap)>,
    size: usize,
    /// Classification: the categories of the outputs, in order (shared by every prediction).
    labels: std::sync::Arc<[Value]>,
}

thread_local! {
    /// Per-thread neuron activations buffer, reused across records.
    static ACTIVATIONS: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
    /// Per-thread buffer of a dense layer's weighted sums, reused across records.
    static SUMS: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

fn activation(name: &str, node: Node, net: Node) -> Result<Activation, LoadError> {
    let attr = |a: &str| -> Result<Option<f64>, LoadError> {
        match node.f64_attr(a)? {
            Some(v) => Ok(Some(v)),
            None => net.f64_attr(a),
        }
    };
    Ok(match name {
        "threshold" => Activation::Threshold(attr("threshold")?.unwrap_or(0.0)),
        "logistic" => Activation::Logistic,
        "tanh" => Activation::Tanh,
        "identity" => Activation::Identity,
        "exponential" => Activation::Exponential,
        "reciprocal" => Activation::Reciprocal,
        "square" => Activation::Square,
        "Gauss" => Activation::Gauss,
        "sine" => Activation::Sine,
        "cosine" => Activation::Cosine,
        "Elliott" => Activation::Elliott,
        "arctan" => Activation::Arctan,
        "rectifier" => Activation::Rectifier(attr("leakage")?),
        "radialBasis" => Activation::RadialBasis {
            altitude: attr("altitude")?.unwrap_or(1.0),
        },
        _ => return Err(node.unsupported_attr("activationFunction")),
    })
}

impl Activation {
    /// The activation of a weighted sum.
    #[inline]
    fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Threshold(t) => {
                if z > t {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Logistic => 1.0 / (1.0 + (-z).exp()),
            Activation::Tanh => z.tanh(),
            Activation::Identity => z,
            Activation::Exponential => z.exp(),
            Activation::Reciprocal => 1.0 / z,
            Activation::Square => z * z,
            Activation::Gauss => (-(z * z)).exp(),
            Activation::Sine => z.sin(),
            Activation::Cosine => z.cos(),
            Activation::Elliott => z / (1.0 + z.abs()),
            Activation::Arctan => 2.0 * z.atan() / std::f64::consts::PI,
            Activation::Rectifier(Some(leak)) => {
                if z > 0.0 {
                    z
                } else {
                    z * leak
                }
            }
            Activation::Rectifier(None) => z.max(0.0),
            Activation::RadialBasis { .. } => z,
        }
    }
}

fn norm_method(s: &str, node: Node) -> Result<u8, LoadError> {
    Ok(match s {
        "none" => 0,
        "simplemax" => 1,
        "softmax" => 2,
        _ => return Err(node.unsupported_attr("normalizationMethod")),
    })
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut inputs = Vec::new();
    let ni = m.req_kid("NeuralInputs")?;
    for input in ni.kids_named("NeuralInput") {
        let id = input.req_attr("id")?;
        let (expr, _) = c.anonymous_derived(input.req_kid("DerivedField")?)?;
        if ids.insert(id.to_string(), ids.len() as u32).is_some() {
            return Err(input.bad_attr("id", "duplicate neuron id"));
        }
        inputs.push(expr);
    }
    let net_act = m.attr("activationFunction").unwrap_or("logistic");
    let net_norm = m.attr("normalizationMethod").unwrap_or("none");
    let net_width = m.f64_attr("width")?;
    let mut layers = Vec::new();
    for l in m.kids_named("NeuralLayer") {
        let act = match l.attr("activationFunction") {
            Some(a) => activation(a, l, m)?,
            None => activation(net_act, m, m)?,
        };
        let norm = match l.attr("normalizationMethod") {
            Some(n) => norm_method(n, l)?,
            None => norm_method(net_norm, m)?,
        };
        let layer_width = l.f64_attr("width")?.or(net_width);
        let mut neurons = Vec::new();
        let mut new_ids = Vec::new();
        for n in l.kids_named("Neuron") {
            let mut cons = Vec::new();
            for con in n.kids_named("Con") {
                let from = con.req_attr("from")?;
                let idx = *ids
                    .get(from)
                    .ok_or_else(|| con.bad_attr("from", "unknown neuron"))?;
                cons.push((idx, con.req_f64("weight")?));
            }
            let width = match n.f64_attr("width")?.or(layer_width) {
                Some(w) => w,
                None if matches!(act, Activation::RadialBasis { .. }) => {
                    return Err(n.bad_attr("width", "required for radialBasis"))
                }
                None => 1.0,
            };
            neurons.push(Neuron {
                bias: n.f64_attr("bias")?.unwrap_or(0.0),
                width,
                inputs: cons,
            });
            new_ids.push(n.req_attr("id")?.to_string());
        }
        // Neurons of a layer only see earlier layers.
        for id in new_ids {
            let next = ids.len() as u32;
            if ids.insert(id, next).is_some() {
                return Err(l.invalid("duplicate neuron id"));
            }
        }
        let dense = if matches!(act, Activation::RadialBasis { .. }) {
            None
        } else {
            Layer::dense_of(&neurons)
        };
        layers.push(Layer {
            activation: act,
            norm,
            neurons,
            dense,
        });
    }
    let mut outputs = Vec::new();
    let no = m.req_kid("NeuralOutputs")?;
    for o in no.kids_named("NeuralOutput") {
        let from = o.req_attr("outputNeuron")?;
        let idx = *ids
            .get(from)
            .ok_or_else(|| o.bad_attr("outputNeuron", "unknown neuron"))?;
        let df = o.req_kid("DerivedField")?;
        let e = df
            .kids()
            .into_iter()
            .next()
            .ok_or_else(|| df.invalid("no expression"))?;
        let map = match e.name() {
            "FieldRef" => OutputMap::Identity,
            "NormContinuous" => {
                let (mut xs, mut ys) = (Vec::new(), Vec::new());
                for ln in e.kids_named("LinearNorm") {
                    xs.push(ln.req_f64("orig")?);
                    ys.push(ln.req_f64("norm")?);
                }
                OutputMap::Denorm(xs, ys)
            }
            "NormDiscrete" => OutputMap::Category(c.label(e.req_attr("value")?, target)),
            _ => return Err(e.unsupported("NeuralOutput expression")),
        };
        if matches!(map, OutputMap::Category(_)) != (function == "classification") {
            return Err(o.invalid("NeuralOutput does not match the model's functionName"));
        }
        outputs.push((idx, map));
    }
    if outputs.is_empty() {
        return Err(no.invalid("no NeuralOutput"));
    }
    let labels = outputs
        .iter()
        .filter_map(|(_, map)| match map {
            OutputMap::Category(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    Ok(ModelKind::Neural(Neural {
        inputs,
        layers,
        outputs,
        size: ids.len(),
        labels,
    }))
}

impl Neural {
    pub fn evaluate(&self, ctx: &mut Ctx, model: &Model) -> Result<Prediction, EvalError> {
        let mut act = ACTIVATIONS.with(std::cell::Cell::take);
        let mut sums = SUMS.with(std::cell::Cell::take);
        act.clear();
        act.reserve(self.size);
        let r = self.evaluate_into(ctx, model, &mut act, &mut sums);
        ACTIVATIONS.with(|a| a.set(act));
        SUMS.with(|a| a.set(sums));
        r
    }

    fn evaluate_into(
        &self,
        ctx: &mut Ctx,
        model: &Model,
        act: &mut Vec<f64>,
        sums: &mut Vec<f64>,
    ) -> Result<Prediction, EvalError> {
        for e in &self.inputs {
            // A present double input, as it is (what evaluating the reference gives).
            if let Expr::Field { field, .. } = e {
                if let Some(x) = ctx.double_at_hand(*field) {
                    act.push(x);
                    continue;
                }
            }
            let v = e.eval(ctx)?;
            match v {
                Value::Missing => return Ok(Prediction::Missing),
                Value::String(s) => match crate::value::parse_f64(&s) {
                    Some(x) => act.push(x),
                    None => {
                        return Err(EvalError::Type(format!(
                            "neural input {s:?} is not a number"
                        )))
                    }
                },
                other => act.push(other.as_f64().unwrap_or(f64::NAN)),
            }
        }
        for layer in &self.layers {
            let start = act.len();
            if let Some(d) = &layer.dense {
                sums.clear();
                let src = act.get(d.from..d.from + d.len).ok_or_else(|| {
                    EvalError::InvalidResult("neuron reads a later neuron".into())
                })?;
                dense_sums(d, &layer.neurons, src, sums);
                for z in sums.iter() {
                    act.push(layer.activation.apply(*z));
                }
                match layer.norm {
                    1 => normalize(&mut act[start..], false),
                    2 => normalize(&mut act[start..], true),
                    _ => {}
                }
                continue;
            }
            for n in &layer.neurons {
                let mut z = 0.0;
                if let Activation::RadialBasis { altitude } = layer.activation {
                    for (i, w) in &n.inputs {
                        let d = act[*i as usize] - w;
                        z += d * d;
                    }
                    z /= n.width * n.width * -2.0;
                    if altitude != 1.0 {
                        z += altitude.ln() * n.inputs.len() as f64;
                    }
                    act.push(z.exp());
                    continue;
                }
                for (i, w) in &n.inputs {
                    z += w * act[*i as usize];
                }
                z += n.bias;
                act.push(layer.activation.apply(z));
            }
            match layer.norm {
                1 => normalize(&mut act[start..], false),
                2 => normalize(&mut act[start..], true),
                _ => {}
            }
        }
        self.finish(model, act)
    }

    fn finish(&self, model: &Model, act: &[f64]) -> Result<Prediction, EvalError> {
        if !model.classification {
            let (idx, map) = &self.outputs[0];
            let y = act[*idx as usize];
            let v = match map {
                OutputMap::Denorm(xs, ys) => denorm_continuous(y, xs, ys),
                _ => Some(y),
            };
            return Ok(v.map_or(Prediction::Missing, |v| Prediction::Value {
                value: Value::Double(v),
                entity: None,
            }));
        }
        let mut probs = Vec::with_capacity(self.labels.len());
        for (idx, map) in &self.outputs {
            if let OutputMap::Category(_) = map {
                probs.push(act[*idx as usize]);
            }
        }
        Ok(Prediction::from_distribution(self.labels.clone(), probs))
    }
}
