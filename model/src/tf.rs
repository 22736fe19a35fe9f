//! TensorFlow frozen graphs (a binary `GraphDef`) through tract-tensorflow.
//!
//! The input is the graph's placeholder (it must be unique unless [`LoadOptions::input`] names
//! one); the outputs are the nodes nobody consumes (or [`LoadOptions::outputs`]). Records become
//! rows of a float32 `[N, columns]` tensor. The headline value of a vector output is its argmax
//! index, as in the tutorial.

use tract_hir::prelude::*;

use crate::error::ModelError;
use crate::model::{Model, ModelType};
use crate::registry::{read_file, LoadOptions, ModelFactory, ModelSource};
use crate::tensor::{tract_err, OutputSpec, TensorModel, TensorModelSpec};

/// Creates models from frozen GraphDefs ([`ModelType::TensorFlow`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct FrozenGraphFactory;

impl ModelFactory for FrozenGraphFactory {
    fn create(
        &self,
        source: ModelSource<'_>,
        options: &LoadOptions,
    ) -> Result<Box<dyn Model>, ModelError> {
        let bytes = match source {
            ModelSource::Bytes(b) => b.to_vec(),
            ModelSource::Path(p) => read_file(p)?,
        };
        let graph = bytes.clone();
        Ok(Box::new(load_graph(
            &graph,
            GraphLoad {
                model_type: ModelType::TensorFlow,
                input: options.input.clone(),
                outputs: options
                    .outputs
                    .as_ref()
                    .map(|o| o.iter().map(|n| (n.clone(), n.clone())).collect()),
                columns: options.columns.clone(),
                bytes,
            },
        )?))
    }
}

/// What to load from a GraphDef.
pub(crate) struct GraphLoad {
    pub model_type: ModelType,
    /// Input tensor ("node" or "node:0"); `None`: the only placeholder.
    pub input: Option<String>,
    /// Outputs as (score name, tensor "node:slot"); `None`: the graph's unconsumed nodes.
    pub outputs: Option<Vec<(String, String)>>,
    pub columns: Option<Vec<String>>,
    /// What [`Model::to_bytes`] returns.
    pub bytes: Vec<u8>,
}

/// Splits "node:slot" (slot 0 when absent).
pub(crate) fn split_tensor_name(name: &str) -> (&str, usize) {
    match name.rsplit_once(':') {
        Some((node, slot)) => match slot.parse() {
            Ok(s) => (node, s),
            Err(_) => (name, 0),
        },
        None => (name, 0),
    }
}

/// The most elements a constant may declare without holding them (1 GiB of float32). A
/// `TensorProto` with a shape and one value stands for that value repeated: tract builds the
/// whole tensor while it reads the graph, so a file of a few hundred bytes declaring 88 GB
/// aborted the process on the failed allocation.
const MAX_REPEATED_ELEMENTS: u64 = 1 << 28;

/// Refuses a graph with a constant that declares more than [`MAX_REPEATED_ELEMENTS`] elements
/// without holding them (no `tensor_content`). A graph that does not decode is left to tract,
/// which says why.
fn check_constants(graph: &[u8], model_type: ModelType) -> Result<(), ModelError> {
    use crate::pb::tensorflow::{attr_value, GraphDef, TensorProto};
    use prost::Message;
    let Ok(graph) = GraphDef::decode(graph) else {
        return Ok(());
    };
    let elements = |t: &TensorProto| {
        t.tensor_shape.as_ref().map_or(1, |s| {
            s.dim.iter().fold(1u64, |n, d| {
                n.saturating_mul(u64::try_from(d.size).unwrap_or(0))
            })
        })
    };
    for node in &graph.node {
        for (attr, value) in &node.attr {
            let tensors: Vec<&TensorProto> = match &value.value {
                Some(attr_value::Value::Tensor(t)) => vec![t],
                Some(attr_value::Value::List(l)) => l.tensor.iter().collect(),
                _ => continue,
            };
            for t in tensors {
                let n = elements(t);
                if t.tensor_content.is_empty() && n > MAX_REPEATED_ELEMENTS {
                    return Err(ModelError::invalid(
                        model_type,
                        format!(
                            "node {:?} ({}) declares a tensor of {n} elements in its attribute \
                             {attr:?} (at most {MAX_REPEATED_ELEMENTS} are loaded)",
                            node.name, node.op
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Loads a binary GraphDef into a [`TensorModel`].
pub(crate) fn load_graph(graph: &[u8], load: GraphLoad) -> Result<TensorModel, ModelError> {
    let model_type = load.model_type;
    let invalid = |reason: String| ModelError::invalid(model_type, reason);
    check_constants(graph, model_type)?;
    // tract is not expected to panic on bad input, but a model arriving from the network must
    // never take the server down: a panic is reported as an invalid model.
    let parsed = std::panic::catch_unwind(move || -> Result<_, ModelError> {
        let _capped = crate::alloc::Capped::new();
        let tf = tract_tensorflow::tensorflow();
        let mut model = tf
            .model_for_read(&mut &graph[..])
            .map_err(|e| invalid(tract_err(e)))?;
        if let Some(input) = &load.input {
            let (node, _) = split_tensor_name(input);
            model
                .select_inputs_by_name([node])
                .map_err(|e| invalid(tract_err(e)))?;
        }
        let names: Vec<String> = match &load.outputs {
            Some(outputs) => {
                let mut outlets = Vec::with_capacity(outputs.len());
                for (_, tensor) in outputs {
                    let (node, slot) = split_tensor_name(tensor);
                    let id = model
                        .node_id_by_name(node)
                        .map_err(|e| invalid(tract_err(e)))?;
                    outlets.push(OutletId::new(id, slot));
                }
                model
                    .select_output_outlets(&outlets)
                    .map_err(|e| invalid(tract_err(e)))?;
                outputs.iter().map(|(n, _)| n.clone()).collect()
            }
            None => {
                let outlets = model.output_outlets().map_err(|e| invalid(tract_err(e)))?;
                outlets
                    .iter()
                    .map(|o| {
                        let node = &model.node(o.node).name;
                        if o.slot == 0 {
                            node.clone()
                        } else {
                            format!("{node}:{}", o.slot)
                        }
                    })
                    .collect()
            }
        };
        Ok((model, names, load.columns, load.bytes))
    })
    .map_err(|_| invalid("the TensorFlow graph loader panicked".into()))??;
    let (model, names, columns, bytes) = parsed;
    let outputs = names
        .into_iter()
        .enumerate()
        .map(|(fetch, name)| OutputSpec::plain(name, fetch))
        .collect();
    let spec = TensorModelSpec {
        model_type,
        columns,
        outputs,
        bytes,
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::alloc::capped(|| TensorModel::new(model, spec))
    }))
    .map_err(|p| invalid(crate::alloc::panicked("optimizing the graph", &*p)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_tensor_names() {
        assert_eq!(
            split_tensor_name("dense_3/Sigmoid:0"),
            ("dense_3/Sigmoid", 0)
        );
        assert_eq!(split_tensor_name("a:2"), ("a", 2));
        assert_eq!(split_tensor_name("a"), ("a", 0));
        assert_eq!(split_tensor_name("a:b"), ("a:b", 0));
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let r = FrozenGraphFactory.create(
            ModelSource::Bytes(&[0xff, 0x00, 0x13, 0x37]),
            &LoadOptions::default(),
        );
        assert!(matches!(r, Err(ModelError::InvalidModel { .. })), "{r:?}");
    }
}

#[cfg(test)]
mod dense_tests {
    use super::*;

    #[test]
    fn wine_frozen_graph_runs_natively_and_matches_tract() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/wine/optimized_WineQuality.pb"
        );
        let Ok(bytes) = std::fs::read(path) else {
            eprintln!("SKIPPED: {path} not found");
            return;
        };
        let model = load_graph(
            &bytes,
            GraphLoad {
                model_type: ModelType::TensorFlow,
                input: None,
                outputs: None,
                columns: None,
                bytes: Vec::new(),
            },
        )
        .expect("load");
        // Deterministic rows in [-8, 8).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<f32> = (0..5000 * 11)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 16.0 - 8.0
            })
            .collect();
        let diff = model.dense_vs_tract(5000, &data).expect("a dense chain");
        eprintln!("wine frozen graph: native vs tract, 5000 rows, max diff {diff:e}");
        assert!(diff <= 1e-5, "{diff}");
    }
}
