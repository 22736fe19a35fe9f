//! ONNX models through tract-onnx, including what skl2onnx writes for scikit-learn models.
//!
//! * ONNX-ML operators tract lacks are implemented here and registered in tract's ONNX op
//!   registry ([`framework`]): `TreeEnsembleRegressor`, and `TreeEnsembleClassifier` (tract
//!   0.23 has one, but it rejects string class labels and the single base value skl2onnx
//!   writes for binary gradient boosting; ours follows onnxruntime). tract itself provides
//!   `LinearClassifier`, `LinearRegressor`, `Normalizer`, `CategoryMapper` and
//!   `ArrayFeatureExtractor`.
//! * `ZipMap` (a sequence of maps, a type tract's tensors cannot hold) is taken out of the graph
//!   when it produces a graph output: the probability tensor it consumes becomes the output, and
//!   each row is presented as a label → probability map ([`crate::OutputValue::Map`]) under the
//!   ZipMap output's name.
//! * The model must have one input tensor `[N, columns]`; records are its rows.

mod trees;

use std::collections::HashMap;

use prost::Message;
use tract_hir::internal::*;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto, ValueInfoProto};

use crate::batch::Classes;
use crate::error::ModelError;
use crate::model::{Model, ModelType};
use crate::registry::{read_file, LoadOptions, ModelFactory, ModelSource};
use crate::tensor::{tract_err, LabelTail, OutputSpec, Tail, TensorModel, TensorModelSpec};

const T: ModelType = ModelType::Onnx;

/// Creates ONNX models ([`ModelType::Onnx`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct OnnxFactory;

impl ModelFactory for OnnxFactory {
    fn create(
        &self,
        source: ModelSource<'_>,
        options: &LoadOptions,
    ) -> Result<Box<dyn Model>, ModelError> {
        let bytes = match source {
            ModelSource::Bytes(b) => b.to_vec(),
            ModelSource::Path(p) => read_file(p)?,
        };
        Ok(Box::new(load(bytes, options)?))
    }
}

/// tract's ONNX framework with flowstage's ONNX-ML operators registered.
pub fn framework() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register
        .insert("TreeEnsembleRegressor", trees::tree_regressor);
    onnx.op_register
        .insert("TreeEnsembleClassifier", trees::tree_classifier);
    onnx
}

/// Takes ZipMap nodes producing graph outputs out of the graph; returns, for each affected
/// output, its new tensor name → (original output name, labels).
fn strip_zipmaps(proto: &mut ModelProto) -> HashMap<String, (String, Vec<String>)> {
    let mut maps = HashMap::new();
    let Some(graph) = proto.graph.as_mut() else {
        return maps;
    };
    let mut keep = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let is_output = node.op_type == "ZipMap"
            && node.input.len() == 1
            && node.output.len() == 1
            && graph.output.iter().any(|o| o.name == node.output[0]);
        if !is_output {
            keep.push(node);
            continue;
        }
        let labels: Vec<String> = node
            .attribute
            .iter()
            .find_map(|a| match a.name.as_str() {
                "classlabels_int64s" => Some(a.ints.iter().map(|i| i.to_string()).collect()),
                "classlabels_strings" => Some(
                    a.strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                ),
                _ => None,
            })
            .unwrap_or_default();
        let (input, output) = (node.input[0].clone(), node.output[0].clone());
        for o in graph.output.iter_mut().filter(|o| o.name == output) {
            *o = ValueInfoProto {
                name: input.clone(),
                ..Default::default()
            };
        }
        maps.insert(input, (output, labels));
    }
    graph.node = keep;
    maps
}

fn load(bytes: Vec<u8>, options: &LoadOptions) -> Result<TensorModel, ModelError> {
    let invalid = |reason: String| ModelError::invalid(T, reason);
    let mut proto = ModelProto::decode(bytes.as_slice()).map_err(|source| ModelError::Decode {
        what: "ONNX ModelProto",
        source,
    })?;
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| invalid("the model has no graph".into()))?;
    if graph.output.is_empty() {
        return Err(invalid("the graph has no outputs".into()));
    }
    let maps = strip_zipmaps(&mut proto);
    let graph_outputs: Vec<String> = proto
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    // Output tensors to fetch, with the name they get in a score.
    let mut outputs: Vec<(String, String, Option<Vec<String>>)> = graph_outputs
        .iter()
        .map(|tensor| match maps.get(tensor) {
            Some((name, labels)) => (tensor.clone(), name.clone(), Some(labels.clone())),
            None => (tensor.clone(), tensor.clone(), None),
        })
        .collect();
    if let Some(wanted) = &options.outputs {
        outputs.retain(|(_, name, _)| wanted.contains(name));
        if outputs.len() != wanted.len() {
            return Err(invalid(format!(
                "the model lacks some of the outputs {wanted:?} (it has {graph_outputs:?})"
            )));
        }
    }
    // First with the row-wise tails (softmax, argmax → label) taken out of the graph and
    // run natively; when that cannot be built, the whole graph through tract.
    if let Some((stripped, fetch, tails)) = native_tails(&proto, &outputs) {
        let specs = outputs
            .iter()
            .zip(tails)
            .map(|((_, name, map_labels), (fetch, tail))| OutputSpec {
                name: name.clone(),
                map_labels: map_labels.clone(),
                fetch,
                tail,
            })
            .collect();
        if let Ok(model) = build(&stripped, options, &fetch, specs, bytes.clone()) {
            return Ok(model);
        }
    }
    let fetch: Vec<String> = outputs.iter().map(|(t, _, _)| t.clone()).collect();
    let specs = outputs
        .into_iter()
        .enumerate()
        .map(|(fetch, (_, name, map_labels))| OutputSpec {
            map_labels,
            ..OutputSpec::plain(name, fetch)
        })
        .collect();
    build(&proto, options, &fetch, specs, bytes)
}

/// Parses `proto` with tract, fetching the tensors `fetch`, and builds the model.
fn build(
    proto: &ModelProto,
    options: &LoadOptions,
    fetch: &[String],
    outputs: Vec<OutputSpec>,
    bytes: Vec<u8>,
) -> Result<TensorModel, ModelError> {
    let invalid = |reason: String| ModelError::invalid(T, reason);
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _capped = crate::alloc::Capped::new();
        let mut model = framework()
            .model_for_proto_model(proto)
            .map_err(|e| invalid(tract_err(e)))?;
        if let Some(input) = &options.input {
            model
                .select_inputs_by_name([input.as_str()])
                .map_err(|e| invalid(tract_err(e)))?;
        }
        model
            .select_outputs_by_name(fetch)
            .map_err(|e| invalid(tract_err(e)))?;
        Ok::<_, ModelError>(model)
    }))
    .map_err(|p| invalid(crate::alloc::panicked("reading the model", &*p)))??;
    let spec = TensorModelSpec {
        model_type: T,
        columns: options.columns.clone(),
        outputs,
        bytes,
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::alloc::capped(|| TensorModel::new(parsed, spec))
    }))
    .map_err(|p| invalid(crate::alloc::panicked("optimizing the model", &*p)))?
}

fn int_attr(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// A constant integer or string vector (an initializer).
enum ConstVec {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

fn const_vec(t: &TensorProto) -> Option<ConstVec> {
    if t.dims.len() > 1 {
        return None;
    }
    let raw = &t.raw_data;
    match t.data_type {
        // int32
        6 if !raw.is_empty() => Some(ConstVec::Ints(
            raw.chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        )),
        6 => Some(ConstVec::Ints(
            t.int32_data.iter().map(|&i| i64::from(i)).collect(),
        )),
        // int64
        7 if !raw.is_empty() => Some(ConstVec::Ints(
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        )),
        7 => Some(ConstVec::Ints(t.int64_data.clone())),
        // string
        8 => Some(ConstVec::Strings(
            t.string_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )),
        _ => None,
    }
}

/// Whether a node is one of the row-wise operators a native tail can run, and its data input.
fn row_wise_input<'a>(node: &'a NodeProto, inits: &HashMap<&str, &TensorProto>) -> Option<&'a str> {
    let standard = node.domain.is_empty() || node.domain == "ai.onnx";
    match node.op_type.as_str() {
        "Identity" | "Softmax" | "ArgMax" | "Cast" if standard && node.input.len() == 1 => {
            Some(node.input[0].as_str())
        }
        "Reshape"
            if standard && node.input.len() == 2 && inits.contains_key(node.input[1].as_str()) =>
        {
            Some(node.input[0].as_str())
        }
        "ArrayFeatureExtractor"
            if node.domain == "ai.onnx.ml"
                && node.input.len() == 2
                && inits.contains_key(node.input[0].as_str()) =>
        {
            Some(node.input[1].as_str())
        }
        _ => None,
    }
}

/// Compiles row-wise operators (in the order they apply) into a native [`Tail`], when they
/// form one: `[Softmax] [ArgMax [ArrayFeatureExtractor(classes)] Reshape([-1])]`, with
/// `Identity` and value-preserving `Cast`s anywhere.
fn compile_tail(ops: &[&NodeProto], inits: &HashMap<&str, &TensorProto>) -> Option<Tail> {
    let mut softmax = false;
    let mut label: Option<LabelTail> = None;
    let mut need_reshape = false;
    for node in ops {
        let op = node.op_type.as_str();
        match (op, label.as_mut()) {
            ("Identity", _) => {}
            ("Softmax", None) if !softmax => {
                if !matches!(int_attr(node, "axis"), None | Some(1) | Some(-1)) {
                    return None;
                }
                softmax = true;
            }
            // float → float
            ("Cast", None) if int_attr(node, "to") == Some(1) => {}
            ("ArgMax", None) => {
                if !matches!(int_attr(node, "axis"), Some(1) | Some(-1)) {
                    return None;
                }
                label = Some(LabelTail {
                    softmax,
                    last: int_attr(node, "select_last_index").unwrap_or(0) != 0,
                    classes: None,
                    scalar: int_attr(node, "keepdims").unwrap_or(1) == 0,
                    as_f32: false,
                });
            }
            ("Cast", Some(l)) => {
                let strings = matches!(l.classes, Some(Classes::Strings(_)));
                match (int_attr(node, "to")?, strings) {
                    // int32, int64, double: the integer as it is
                    (6 | 7 | 11, false) => {}
                    // float
                    (1, false) => l.as_f32 = true,
                    // string → string
                    (8, true) => {}
                    _ => return None,
                }
            }
            ("Reshape", Some(l)) => {
                let shape = inits.get(node.input.get(1)?.as_str())?;
                match const_vec(shape)? {
                    ConstVec::Ints(dims) if dims == [-1] => l.scalar = true,
                    ConstVec::Ints(dims) if dims == [-1, 1] => l.scalar = false,
                    _ => return None,
                }
                need_reshape = false;
            }
            ("ArrayFeatureExtractor", Some(l)) if l.classes.is_none() && !l.as_f32 => {
                let classes = inits.get(node.input.first()?.as_str())?;
                l.classes = Some(match const_vec(classes)? {
                    ConstVec::Ints(c) => Classes::Ints(c),
                    ConstVec::Strings(c) => Classes::Strings(c),
                });
                // onnxruntime shapes the result [1, N] for a vector of classes: only a
                // reshape to one value per row makes it per-record.
                need_reshape = true;
            }
            _ => return None,
        }
    }
    if need_reshape {
        return None;
    }
    Some(match label {
        Some(l) => Tail::Label(l),
        None if softmax => Tail::Softmax,
        None => Tail::None,
    })
}

/// For the output tensors in `outputs` (tensor, ...), finds the longest row-wise tail of
/// operators a [`Tail`] runs natively. Returns the graph without those operators, the
/// tensors to fetch instead, and for each output (fetch index, tail); `None` when there is
/// nothing to take out or it cannot be taken out cleanly.
#[allow(clippy::type_complexity)]
fn native_tails<X, Y>(
    proto: &ModelProto,
    outputs: &[(String, X, Y)],
) -> Option<(ModelProto, Vec<String>, Vec<(usize, Tail)>)> {
    let graph = proto.graph.as_ref()?;
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            producer.insert(o.as_str(), i);
        }
    }
    let mut removed: Vec<usize> = vec![];
    let mut fetch: Vec<String> = vec![];
    let mut tails = Vec::with_capacity(outputs.len());
    for (tensor, _, _) in outputs {
        // The chain of row-wise operators ending at this output, output side first.
        let mut chain: Vec<usize> = vec![];
        let mut at = tensor.as_str();
        while let Some(&ix) = producer.get(at) {
            let node = &graph.node[ix];
            let Some(input) = row_wise_input(node, &inits) else {
                break;
            };
            if chain.contains(&ix) {
                break;
            }
            chain.push(ix);
            at = input;
        }
        chain.reverse();
        // The longest suffix that compiles.
        let (root, tail, used) = (0..=chain.len())
            .find_map(|k| {
                let ops: Vec<&NodeProto> = chain[k..].iter().map(|&i| &graph.node[i]).collect();
                let tail = compile_tail(&ops, &inits)?;
                let root = match chain.get(k) {
                    Some(&first) => row_wise_input(&graph.node[first], &inits)?.to_string(),
                    None => tensor.clone(),
                };
                Some((root, tail, &chain[k..]))
            })
            .unwrap_or((tensor.clone(), Tail::None, &[]));
        for &i in used {
            if !removed.contains(&i) {
                removed.push(i);
            }
        }
        let ix = match fetch.iter().position(|f| *f == root) {
            Some(ix) => ix,
            None => {
                fetch.push(root);
                fetch.len() - 1
            }
        };
        tails.push((ix, tail));
    }
    if removed.is_empty() {
        return None;
    }
    // Nothing left in the graph may read what the removed operators produced.
    let gone: Vec<&str> = removed
        .iter()
        .flat_map(|&i| graph.node[i].output.iter().map(String::as_str))
        .collect();
    let kept_reads_gone = graph
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .any(|(_, n)| n.input.iter().any(|t| gone.contains(&t.as_str())));
    if kept_reads_gone || fetch.iter().any(|f| gone.contains(&f.as_str())) {
        return None;
    }
    let mut stripped = proto.clone();
    if let Some(g) = stripped.graph.as_mut() {
        g.node = std::mem::take(&mut g.node)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !removed.contains(i))
            .map(|(_, n)| n)
            .collect();
        g.output = fetch
            .iter()
            .map(|name| ValueInfoProto {
                name: name.clone(),
                ..Default::default()
            })
            .collect();
    }
    Some((stripped, fetch, tails))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> ModelProto {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/onnx")
            .join(name);
        let bytes = std::fs::read(path).expect("fixture");
        ModelProto::decode(bytes.as_slice()).expect("decode")
    }

    fn outputs(proto: &ModelProto) -> Vec<(String, (), ())> {
        proto
            .graph
            .iter()
            .flat_map(|g| g.output.iter().map(|o| (o.name.clone(), (), ())))
            .collect()
    }

    #[test]
    fn classifier_tails_run_natively() {
        let proto = fixture("wine_shaped_mlp.onnx");
        let (stripped, fetch, tails) = native_tails(&proto, &outputs(&proto)).expect("tails found");
        assert_eq!(fetch, ["add_result2"]);
        let Tail::Label(label) = &tails[0].1 else {
            panic!("{tails:?}")
        };
        assert!(label.softmax && label.scalar && !label.last);
        assert_eq!(label.classes, Some(Classes::Ints((0..9).collect())));
        assert_eq!(tails[1], (0, Tail::Softmax));
        let ops: Vec<&str> = stripped
            .graph
            .iter()
            .flat_map(|g| g.node.iter().map(|n| n.op_type.as_str()))
            .collect();
        assert!(
            !ops.contains(&"Softmax") && !ops.contains(&"ArgMax"),
            "{ops:?}"
        );
    }

    #[test]
    fn graphs_without_row_tails_are_left_alone() {
        let proto = fixture("linear_regressor.onnx");
        assert!(native_tails(&proto, &outputs(&proto)).is_none());
    }
}

#[cfg(test)]
mod dense_tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/onnx/{name}.onnx",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).expect("fixture")
    }

    /// Deterministic rows in [-8, 8).
    fn rows(n: usize, width: usize) -> Vec<f32> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n * width)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 16.0 - 8.0
            })
            .collect()
    }

    #[test]
    fn wine_mlp_runs_natively_and_matches_tract() {
        let model = load(fixture("wine_shaped_mlp"), &LoadOptions::default()).expect("load");
        let data = rows(5000, 11);
        let diff = model.dense_vs_tract(5000, &data).expect("a dense chain");
        eprintln!("wine_shaped_mlp: native vs tract, 5000 rows, max diff {diff:e}");
        assert!(diff <= 1e-5, "{diff}");
    }

    #[test]
    fn other_graphs_keep_tract() {
        for name in ["forest_classifier", "linear_regressor", "gbm_regressor"] {
            let model = load(fixture(name), &LoadOptions::default()).expect("load");
            assert!(model.dense_vs_tract(1, &[0.0; 64]).is_none(), "{name}");
        }
    }
}
