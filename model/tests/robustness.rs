//! Corrupt input never panics: random bytes, truncations of every fixture model, a SavedModel
//! with a missing or damaged variables file, unknown model types. Each gives a typed error.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use flowstage_model::pb::model_descriptor::MessageContent;
use flowstage_model::pb::ModelDescriptor;
use flowstage_model::{LoadOptions, Model, ModelError, ModelRegistry, ModelType, Record, Value};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const TYPES: [ModelType; 3] = [
    ModelType::TensorFlow,
    ModelType::TensorFlowSaved,
    ModelType::Onnx,
];

/// Restores `bytes` as `t` without panicking; if a model comes out, scoring must not panic
/// either. Returns whether it was an error.
fn restore_is_error(registry: &ModelRegistry, t: ModelType, bytes: &[u8], what: &str) -> bool {
    let result = catch_unwind(AssertUnwindSafe(|| registry.restore(t, bytes)))
        .unwrap_or_else(|_| panic!("{what}: restoring as {t} panicked"));
    match result {
        Err(_) => true,
        Ok(model) => {
            let width = model.inputs()[0]
                .shape
                .as_ref()
                .and_then(|s| s.last().copied().flatten())
                .unwrap_or(1);
            let record: Record = (0..width)
                .map(|i| (format!("c{i}"), Value::Number(i as f64 * 0.5)))
                .collect();
            let scored = catch_unwind(AssertUnwindSafe(|| model.score(&record)));
            assert!(
                scored.is_ok(),
                "{what}: scoring a model restored as {t} panicked"
            );
            false
        }
    }
}

#[test]
fn random_bytes_are_typed_errors() {
    let registry = ModelRegistry::with_defaults();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let len = (rng.next() % 4096) as usize;
        let bytes = rng.bytes(len);
        for t in TYPES {
            assert!(
                restore_is_error(&registry, t, &bytes, &format!("random round {round}")),
                "random bytes (round {round}) loaded as a {t} model"
            );
        }
    }
    for t in TYPES {
        assert!(
            restore_is_error(&registry, t, &[], "empty"),
            "empty bytes loaded as {t}"
        );
    }
}

/// Cut points: every prefix of the first 64 bytes, then 64 evenly spaced ones.
fn cut_points(len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = (0..len.min(64)).collect();
    cuts.extend((1..64).map(|k| k * len / 64));
    cuts.extend([len.saturating_sub(1), len.saturating_sub(2)]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.retain(|c| *c < len);
    cuts
}

/// Truncates `bytes` everywhere; returns (truncations, typed errors).
fn truncations(registry: &ModelRegistry, t: ModelType, bytes: &[u8], name: &str) -> (usize, usize) {
    let cuts = cut_points(bytes.len());
    let errors = cuts
        .iter()
        .filter(|c| restore_is_error(registry, t, &bytes[..**c], &format!("{name} cut at {c}")))
        .count();
    (cuts.len(), errors)
}

#[test]
fn truncated_onnx_fixtures_never_panic() {
    let registry = ModelRegistry::with_defaults();
    let dir = common::fixtures().join("onnx");
    let mut models = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
            continue;
        }
        models += 1;
        let bytes = std::fs::read(&path).expect("read");
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (n, errors) = truncations(&registry, ModelType::Onnx, &bytes, &name);
        // A cut on a top-level field boundary may still be a (smaller) valid protobuf; every
        // other cut is a typed error. The graph is one field, so nearly every cut fails.
        assert!(
            errors * 10 >= n * 9,
            "{name}: only {errors} of {n} truncations failed"
        );
        eprintln!("{name}: {errors} of {n} truncations are typed errors, none panicked");
    }
    assert!(models >= 10);
}

#[test]
fn truncated_tensorflow_models_never_panic() {
    let Some(wine) = common::wine_dir() else {
        return;
    };
    let registry = ModelRegistry::with_defaults();
    let frozen = std::fs::read(wine.join("optimized_WineQuality.pb")).expect("read");
    let (n, errors) = truncations(&registry, ModelType::TensorFlow, &frozen, "frozen graph");
    eprintln!("frozen graph: {errors} of {n} truncations are typed errors, none panicked");
    assert!(errors * 10 >= n * 9);

    let saved = registry
        .load_path(
            ModelType::TensorFlowSaved,
            &wine.join("saved/1"),
            &LoadOptions::default(),
        )
        .expect("load SavedModel");
    let archive = saved.to_bytes().expect("archive");
    let (n, errors) = truncations(&registry, ModelType::TensorFlowSaved, &archive, "archive");
    eprintln!("SavedModel archive: {errors} of {n} truncations are typed errors, none panicked");
    assert!(errors * 10 >= n * 9);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
            let mut perms = std::fs::metadata(&target).expect("meta").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).expect("chmod");
        }
    }
}

#[test]
fn damaged_saved_models_are_typed_errors() {
    let Some(wine) = common::wine_dir() else {
        return;
    };
    let registry = ModelRegistry::with_defaults();
    let tmp = tempfile::tempdir().expect("tempdir");
    let load = |dir: &Path| {
        catch_unwind(AssertUnwindSafe(|| {
            registry.load_path(ModelType::TensorFlowSaved, dir, &LoadOptions::default())
        }))
        .expect("no panic")
    };

    // The data file is missing.
    let no_data = tmp.path().join("no_data");
    copy_dir(&wine.join("saved/1"), &no_data);
    std::fs::remove_file(no_data.join("variables/variables.data-00000-of-00001")).expect("rm");
    assert!(matches!(load(&no_data), Err(ModelError::Io { .. })));

    // The whole variables directory is missing: the variables cannot be restored.
    let no_vars = tmp.path().join("no_vars");
    copy_dir(&wine.join("saved/1"), &no_vars);
    std::fs::remove_dir_all(no_vars.join("variables")).expect("rm");
    let err = load(&no_vars).expect_err("must fail");
    assert!(
        matches!(&err, ModelError::InvalidModel { reason, .. } if reason.contains("not in the checkpoint")),
        "{err}"
    );

    // Flipped bits in the data file fail the checksums.
    let flipped = tmp.path().join("flipped");
    copy_dir(&wine.join("saved/1"), &flipped);
    let data_path = flipped.join("variables/variables.data-00000-of-00001");
    let mut data = std::fs::read(&data_path).expect("read");
    data.iter_mut().for_each(|b| *b ^= 0x40);
    std::fs::write(&data_path, data).expect("write");
    let err = load(&flipped).expect_err("must fail");
    assert!(err.to_string().contains("checksum"), "{err}");

    // A damaged index.
    let bad_index = tmp.path().join("bad_index");
    copy_dir(&wine.join("saved/1"), &bad_index);
    let index_path = bad_index.join("variables/variables.index");
    let mut index = std::fs::read(&index_path).expect("read");
    index[3] ^= 0xff;
    std::fs::write(&index_path, index).expect("write");
    assert!(matches!(
        load(&bad_index),
        Err(ModelError::InvalidModel { .. })
    ));

    // An unknown signature and tag.
    for opts in [
        LoadOptions {
            signature: Some("nope".into()),
            ..LoadOptions::default()
        },
        LoadOptions {
            tag: Some("train".into()),
            ..LoadOptions::default()
        },
    ] {
        let r = registry.load_path(ModelType::TensorFlowSaved, &wine.join("saved/1"), &opts);
        assert!(
            matches!(r, Err(ModelError::InvalidModel { .. })),
            "{opts:?}"
        );
    }
}

#[test]
fn unknown_descriptor_types_are_typed_errors() {
    let registry = ModelRegistry::with_defaults();
    for t in [4, 17, -1, i32::MAX] {
        let d = ModelDescriptor {
            name: "x".into(),
            modeltype: t,
            message_content: Some(MessageContent::Data(vec![1, 2, 3])),
            ..Default::default()
        };
        assert!(matches!(
            registry.from_descriptor(&d, &LoadOptions::default()),
            Err(ModelError::UnknownModelType(v)) if v == t
        ));
    }
}

#[test]
fn descriptors_by_value_and_by_location() {
    use prost::Message;
    let dir = common::fixtures().join("onnx");
    let bytes = std::fs::read(dir.join("linear_regressor.onnx")).expect("read");
    let d = ModelDescriptor {
        name: "linear".into(),
        description: "fixture".into(),
        data_type: "synthetic".into(),
        modeltype: ModelType::Onnx.to_wire(),
        message_content: Some(MessageContent::Data(bytes)),
    };
    // Round trip through the wire format.
    let d = ModelDescriptor::decode(d.encode_to_vec().as_slice()).expect("decode");
    let registry = ModelRegistry::with_defaults()
        .with_models_dir(flowstage_model::ModelsDir::new(&dir).expect("models dir"));
    let by_value = registry
        .from_descriptor(&d, &LoadOptions::default())
        .expect("by value");
    let by_location = registry
        .from_descriptor(
            &ModelDescriptor {
                message_content: Some(MessageContent::Location("linear_regressor.onnx".into())),
                ..d.clone()
            },
            &LoadOptions::default(),
        )
        .expect("by location");
    let record: Record = (0..6)
        .map(|i| (format!("f{i}"), Value::Number(i as f64)))
        .collect();
    assert_eq!(
        by_value.score(&record).expect("score"),
        by_location.score(&record).expect("score")
    );
    let escape = registry.from_descriptor(
        &ModelDescriptor {
            message_content: Some(MessageContent::Location("../onnx/../../Cargo.toml".into())),
            ..d
        },
        &LoadOptions::default(),
    );
    assert!(matches!(escape, Err(ModelError::InvalidLocation { .. })));
}

/// A frozen graph: a float placeholder `x` of `x_shape`, times a constant of `w_shape` holding
/// one value (TensorFlow's "this value repeated"), into the output `y`.
fn matmul_graph(x_shape: &[i64], w_shape: &[i64]) -> Vec<u8> {
    use flowstage_model::pb::tensorflow::{
        attr_value, tensor_shape_proto::Dim, AttrValue, DataType, GraphDef, NodeDef, TensorProto,
        TensorShapeProto,
    };
    use prost::Message;
    let shape = |dims: &[i64]| TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| Dim {
                size,
                ..Dim::default()
            })
            .collect(),
        ..TensorShapeProto::default()
    };
    let attr = |v: attr_value::Value| AttrValue { value: Some(v) };
    let float = attr(attr_value::Value::Type(DataType::DtFloat as i32));
    let no = attr(attr_value::Value::B(false));
    let node = |name: &str, op: &str, input: &[&str], attrs: Vec<(&str, AttrValue)>| NodeDef {
        name: name.into(),
        op: op.into(),
        input: input.iter().map(|i| i.to_string()).collect(),
        attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..NodeDef::default()
    };
    let weights = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(shape(w_shape)),
        float_val: vec![0.5],
        ..TensorProto::default()
    };
    GraphDef {
        node: vec![
            node(
                "x",
                "Placeholder",
                &[],
                vec![
                    ("dtype", float.clone()),
                    ("shape", attr(attr_value::Value::Shape(shape(x_shape)))),
                ],
            ),
            node(
                "w",
                "Const",
                &[],
                vec![
                    ("dtype", float.clone()),
                    ("value", attr(attr_value::Value::Tensor(weights))),
                ],
            ),
            node(
                "y",
                "MatMul",
                &["x", "w"],
                vec![
                    ("T", float),
                    ("transpose_a", no.clone()),
                    ("transpose_b", no),
                ],
            ),
        ],
        ..GraphDef::default()
    }
    .encode_to_vec()
}

#[test]
fn graphs_declaring_huge_tensors_are_refused_at_load() {
    let registry = ModelRegistry::with_defaults();
    let load = |graph: Vec<u8>| registry.restore(ModelType::TensorFlow, &graph);
    // The same graph at a sane size loads and scores: y = 0.5 * (x0 + x1 + x2).
    let model = load(matmul_graph(&[-1, 3], &[3, 1])).expect("a small graph loads");
    let record: Record = (0..3)
        .map(|i| (format!("c{i}"), Value::Number(i as f64)))
        .collect();
    let score = model.score(&record).expect("scores");
    assert_eq!(
        score.output("y"),
        Some(&flowstage_model::OutputValue::Numbers(vec![1.5])),
        "{score:?}"
    );
    // A constant of 3 × 30 billion floats, written as one value (88 GB to build it).
    let err = load(matmul_graph(&[-1, 3], &[3, 30_000_000_000])).unwrap_err();
    assert!(err.to_string().contains("declares a tensor of"), "{err}");
    // A placeholder 40 billion values wide (160 GB for one batch).
    let err = load(matmul_graph(&[-1, 40_000_000_000], &[3, 1])).unwrap_err();
    assert!(err.to_string().contains("values a row"), "{err}");
}
