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
use tract_onnx::pb::{ModelProto, ValueInfoProto};

use crate::error::ModelError;
use crate::model::{Model, ModelType};
use crate::registry::{read_file, LoadOptions, ModelFactory, ModelSource};
use crate::tensor::{tract_err, OutputSpec, TensorModel, TensorModelSpec};

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
    let input = options.input.clone();
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut model = framework()
            .model_for_proto_model(&proto)
            .map_err(|e| invalid(tract_err(e)))?;
        if let Some(input) = &input {
            model
                .select_inputs_by_name([input.as_str()])
                .map_err(|e| invalid(tract_err(e)))?;
        }
        let names: Vec<&str> = outputs.iter().map(|(t, _, _)| t.as_str()).collect();
        model
            .select_outputs_by_name(&names)
            .map_err(|e| invalid(tract_err(e)))?;
        Ok::<_, ModelError>(model)
    }))
    .map_err(|_| invalid("the ONNX loader panicked".into()))??;
    let spec = TensorModelSpec {
        model_type: T,
        columns: options.columns.clone(),
        outputs: outputs
            .into_iter()
            .map(|(_, name, map_labels)| OutputSpec { name, map_labels })
            .collect(),
        bytes,
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        TensorModel::new(parsed, spec)
    }))
    .map_err(|_| invalid("tract panicked while optimizing the model".into()))?
}
