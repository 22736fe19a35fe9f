//! SupportVectorMachineModel (linear, polynomial, RBF and sigmoid kernels; one-against-all and
//! one-against-one classification; regression).

use crate::compile::{parse_array, Compiler};
use crate::error::{EvalError, LoadError};
use crate::fields::{Ctx, FieldId};
use crate::model::{Model, ModelKind, Prediction, TargetInfo};
use crate::value::{parse_as, parse_f64, Value};
use crate::xml::El;
use roxmltree::Node;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
enum Kernel {
    Linear,
    Polynomial { gamma: f64, coef0: f64, degree: f64 },
    Rbf { gamma: f64 },
    Sigmoid { gamma: f64, coef0: f64 },
}

#[derive(Debug)]
enum VectorField {
    Num(FieldId),
    Indicator(FieldId, Value),
}

#[derive(Debug)]
struct Machine {
    target: Value,
    alternate: Value,
    threshold: f64,
    /// (vector index, coefficient)
    terms: Vec<(usize, f64)>,
    intercept: f64,
}

#[derive(Debug)]
pub(crate) struct Svm {
    kernel: Kernel,
    fields: Vec<VectorField>,
    vectors: Vec<Vec<f64>>,
    machines: Vec<Machine>,
    one_against_one: bool,
    alternate_binary: Option<Value>,
}

pub(crate) fn compile(
    c: &mut Compiler,
    m: Node,
    function: &str,
    target: Option<&TargetInfo>,
) -> Result<ModelKind, LoadError> {
    if m.attr("mathContext").is_some_and(|v| v != "double") {
        return Err(m.unsupported_attr("mathContext"));
    }
    let kernel_node = m
        .kids()
        .into_iter()
        .find(|k| k.name().ends_with("KernelType"))
        .ok_or_else(|| m.invalid("no kernel"))?;
    let kernel = match kernel_node.name() {
        "LinearKernelType" => Kernel::Linear,
        "PolynomialKernelType" => Kernel::Polynomial {
            gamma: kernel_node.f64_attr("gamma")?.unwrap_or(1.0),
            coef0: kernel_node.f64_attr("coef0")?.unwrap_or(1.0),
            degree: kernel_node.f64_attr("degree")?.unwrap_or(1.0),
        },
        "RadialBasisKernelType" => Kernel::Rbf {
            gamma: kernel_node.f64_attr("gamma")?.unwrap_or(1.0),
        },
        "SigmoidKernelType" => Kernel::Sigmoid {
            gamma: kernel_node.f64_attr("gamma")?.unwrap_or(1.0),
            coef0: kernel_node.f64_attr("coef0")?.unwrap_or(1.0),
        },
        _ => return Err(kernel_node.unsupported("kernel")),
    };
    let vd = m.req_kid("VectorDictionary")?;
    let vf = vd.req_kid("VectorFields")?;
    let mut fields = Vec::new();
    for f in vf.kids() {
        match f.name() {
            "FieldRef" => fields.push(VectorField::Num(c.field_ref(f, "field")?)),
            "CategoricalPredictor" => {
                let id = c.field_ref(f, "name")?;
                let raw = f.req_attr("value")?;
                if f.f64_attr("coefficient")?.is_some_and(|x| x != 1.0) {
                    return Err(f.bad_attr("coefficient", "must be 1"));
                }
                fields.push(VectorField::Indicator(
                    id,
                    parse_as(raw, c.dt(id)).unwrap_or_else(|| Value::String(raw.to_string())),
                ));
            }
            _ => return Err(f.unsupported("vector field")),
        }
    }
    let n = fields.len();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut vectors = Vec::new();
    for vi in vd.kids_named("VectorInstance") {
        let values = if let Some(arr) = vi.kid("Array") {
            parse_array(arr)?
                .iter()
                .map(|s| parse_f64(s).ok_or_else(|| arr.invalid(format!("{s:?} is not a number"))))
                .collect::<Result<Vec<_>, _>>()?
        } else if let Some(sp) = vi.kid("REAL-SparseArray") {
            let len = sp.parse_attr::<usize>("n")?.unwrap_or(n);
            // Checked before allocating: `n` comes from the document.
            if len != n {
                return Err(vi.invalid("vector length differs from the number of VectorFields"));
            }
            let default = sp.f64_attr("defaultValue")?.unwrap_or(0.0);
            let mut v = vec![default; len];
            let idx: Vec<usize> = match sp.kid("Indices") {
                Some(i) => parse_array(i)?
                    .iter()
                    .map(|s| s.parse::<usize>().map_err(|_| i.invalid("bad index")))
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            let ent: Vec<f64> = match sp.kid("REAL-Entries") {
                Some(e) => parse_array(e)?
                    .iter()
                    .map(|s| parse_f64(s).ok_or_else(|| e.invalid("bad entry")))
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            if idx.len() != ent.len() {
                return Err(sp.invalid("Indices and REAL-Entries differ in length"));
            }
            for (i, x) in idx.iter().zip(ent) {
                if *i == 0 || *i > len {
                    return Err(sp.invalid("index out of range"));
                }
                v[i - 1] = x;
            }
            v
        } else {
            return Err(vi.invalid("VectorInstance without an array"));
        };
        if values.len() != n {
            return Err(vi.invalid("vector length differs from the number of VectorFields"));
        }
        ids.insert(vi.req_attr("id")?.to_string(), vectors.len());
        vectors.push(values);
    }
    let model_threshold = m.f64_attr("threshold")?.unwrap_or(0.0);
    let mut machines = Vec::new();
    for s in m.kids_named("SupportVectorMachine") {
        let label = |a: &str| {
            s.attr(a)
                .map(|v| c.label(v, target))
                .unwrap_or(Value::Missing)
        };
        let mut terms = Vec::new();
        let svs = s
            .kid("SupportVectors")
            .map(|x| x.kids_named("SupportVector"))
            .unwrap_or_default();
        let coefs = s.req_kid("Coefficients")?;
        let cs = coefs.kids_named("Coefficient");
        if svs.len() != cs.len() {
            return Err(s.invalid("numbers of SupportVectors and Coefficients differ"));
        }
        for (sv, cf) in svs.iter().zip(&cs) {
            let id = sv.req_attr("vectorId")?;
            let idx = *ids
                .get(id)
                .ok_or_else(|| sv.bad_attr("vectorId", "unknown vector"))?;
            terms.push((idx, cf.f64_attr("value")?.unwrap_or(0.0)));
        }
        machines.push(Machine {
            target: label("targetCategory"),
            alternate: label("alternateTargetCategory"),
            threshold: s.f64_attr("threshold")?.unwrap_or(model_threshold),
            terms,
            intercept: coefs.f64_attr("absoluteValue")?.unwrap_or(0.0),
        });
    }
    if machines.is_empty() {
        return Err(m.invalid("no SupportVectorMachine"));
    }
    let one_against_one = match m.attr("classificationMethod").unwrap_or("OneAgainstAll") {
        "OneAgainstAll" => false,
        "OneAgainstOne" => true,
        _ => return Err(m.unsupported_attr("classificationMethod")),
    };
    if function == "regression" && machines.len() != 1 {
        return Err(m.invalid("regression needs exactly one SupportVectorMachine"));
    }
    let alternate_binary = m
        .attr("alternateBinaryTargetCategory")
        .map(|v| c.label(v, target));
    Ok(ModelKind::Svm(Svm {
        kernel,
        fields,
        vectors,
        machines,
        one_against_one,
        alternate_binary,
    }))
}

impl Svm {
    fn kernel(&self, x: &[f64], v: &[f64]) -> f64 {
        let dot = || x.iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
        match self.kernel {
            Kernel::Linear => dot(),
            Kernel::Polynomial {
                gamma,
                coef0,
                degree,
            } => (gamma * dot() + coef0).powf(degree),
            Kernel::Rbf { gamma } => {
                let mut d = 0.0;
                for (a, b) in x.iter().zip(v) {
                    let t = a - b;
                    d += t * t;
                }
                (-d * gamma).exp()
            }
            Kernel::Sigmoid { gamma, coef0 } => (gamma * dot() + coef0).tanh(),
        }
    }

    fn machine(&self, mach: &Machine, x: &[f64]) -> f64 {
        let mut r = 0.0;
        for (i, c) in &mach.terms {
            r += c * self.kernel(x, &self.vectors[*i]);
        }
        r + mach.intercept
    }

    pub fn evaluate(&self, ctx: &mut Ctx, model: &Model) -> Result<Prediction, EvalError> {
        let mut x = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            match f {
                VectorField::Num(id) => match ctx.num(*id)? {
                    Some(v) => x.push(v),
                    None => return Err(EvalError::MissingValue(ctx.fields[*id].name.clone())),
                },
                VectorField::Indicator(id, level) => {
                    let v = ctx.get(*id)?;
                    if v.is_missing() {
                        return Err(EvalError::MissingValue(ctx.fields[*id].name.clone()));
                    }
                    x.push(if v.equals(level) { 1.0 } else { 0.0 });
                }
            }
        }
        if !model.classification {
            let y = self.machine(&self.machines[0], &x);
            return Ok(Prediction::Value {
                value: Value::Double(y),
                entity: None,
            });
        }
        let mut labels: Vec<Value> = Vec::new();
        let mut values: Vec<f64> = Vec::new();
        for mach in &self.machines {
            let y = self.machine(mach, &x);
            if self.one_against_one {
                let winner = match &self.alternate_binary {
                    Some(alt) => match y.round() {
                        0.0 => alt.clone(),
                        1.0 => mach.target.clone(),
                        _ => {
                            return Err(EvalError::InvalidResult(format!(
                                "expected 0 or 1, got {y}"
                            )))
                        }
                    },
                    None if y < mach.threshold => mach.target.clone(),
                    None => mach.alternate.clone(),
                };
                match labels.iter().position(|l| l.equals(&winner)) {
                    Some(i) => values[i] += 1.0,
                    None => {
                        labels.push(winner);
                        values.push(1.0);
                    }
                }
            } else {
                labels.push(mach.target.clone());
                values.push(y);
            }
        }
        if self.one_against_one {
            let total: f64 = values.iter().sum();
            let probs = values.iter().map(|v| v / total).collect();
            return Ok(Prediction::from_distribution(labels, probs));
        }
        // One-against-all: the category with the smallest decision value (a distance).
        let mut best = 0;
        for (i, v) in values.iter().enumerate() {
            if *v < values[best] {
                best = i;
            }
        }
        Ok(Prediction::Classes {
            result: labels[best].clone(),
            labels: Vec::new().into(),
            probs: Vec::new().into(),
            confidences: None,
            entity: None,
        })
    }
}
