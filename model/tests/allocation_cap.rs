//! With [`CappedAllocator`] installed (as the `flowstage` binary does), a graph
//! whose constant inputs ask for a huge tensor fails to load with a model error
//! instead of filling the machine's memory while tract optimizes it.

use flowstage_model::{CappedAllocator, ModelRegistry, ModelType};
use prost::Message;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto, ValueInfoProto};

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator::new(1 << 30);

mod common;

/// The MLP fixture with one more output: `op` over constant `inputs`.
fn with_node(op: &str, inputs: &[(&str, TensorProto)]) -> Vec<u8> {
    let bytes = std::fs::read(common::fixtures().join("onnx").join("mlp_regressor.onnx"))
        .expect("read the fixture");
    let mut proto = ModelProto::decode(bytes.as_slice()).expect("decode");
    let graph = proto.graph.as_mut().expect("a graph");
    for (name, t) in inputs {
        graph.initializer.push(TensorProto {
            name: name.to_string(),
            ..t.clone()
        });
    }
    graph.node.push(NodeProto {
        op_type: op.into(),
        name: "huge".into(),
        input: inputs.iter().map(|(n, _)| n.to_string()).collect(),
        output: vec!["huge_out".into()],
        ..NodeProto::default()
    });
    graph.output.push(ValueInfoProto {
        name: "huge_out".into(),
        ..ValueInfoProto::default()
    });
    proto.encode_to_vec()
}

fn ints(v: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![v.len() as i64],
        data_type: 7, // INT64
        int64_data: v.to_vec(),
        ..TensorProto::default()
    }
}

fn float(v: f32) -> TensorProto {
    TensorProto {
        dims: vec![1],
        data_type: 1, // FLOAT
        float_data: vec![v],
        ..TensorProto::default()
    }
}

#[test]
fn graphs_asking_for_huge_tensors_fail_to_load() {
    let registry = ModelRegistry::with_defaults();
    for (op, inputs) in [
        // 10^10 copies of one float: 40 GB.
        (
            "Tile",
            vec![("one", float(1.0)), ("reps", ints(&[10_000_000_000]))],
        ),
        (
            "Expand",
            vec![
                ("one", float(1.0)),
                ("shape", ints(&[100_000, 100_000, 100])),
            ],
        ),
    ] {
        let err = registry
            .restore(ModelType::Onnx, &with_node(op, &inputs))
            .err()
            .unwrap_or_else(|| panic!("{op}: a 40 GB tensor loaded"));
        assert!(
            err.to_string().contains("could not allocate"),
            "{op}: {err}"
        );
    }
    // The same node at a sane size loads: the cap refuses only what is above it.
    let small = with_node("Tile", &[("one", float(1.0)), ("reps", ints(&[1000]))]);
    assert!(registry.restore(ModelType::Onnx, &small).is_ok());
}
