//! TensorFlow SavedModels in pure Rust.
//!
//! `saved_model.pb` is decoded with flowstage's own minimal schema; the MetaGraphDef tagged
//! `serve` (or [`LoadOptions::tag`]) and its signature (the only one, `serving_default`, or
//! [`LoadOptions::signature`]) are chosen; the variables are restored from the tensor bundle
//! (`variables/variables.index`, a table of `BundleEntryProto`, and the data shards holding
//! raw little-endian tensors) and frozen into `Const` nodes; the graph is pruned to what the
//! signature's outputs need and run through tract like a frozen graph.
//!
//! [`Model::to_bytes`] returns a [`SavedModelArchive`]: the SavedModel in one message, which
//! this factory also accepts as bytes (so a SavedModel can travel by value).

mod crc32c;
mod sstable;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use prost::Message;

use crate::error::ModelError;
use crate::model::{Model, ModelType};
use crate::pb::tensorflow::{
    attr_value, AttrValue, BundleEntryProto, BundleHeaderProto, DataType, GraphDef, NodeDef,
    SavedModel, SignatureDef, TensorProto, TensorShapeProto,
};
use crate::pb::SavedModelArchive;
use crate::registry::{read_file, LoadOptions, ModelFactory, ModelSource};
use crate::tf::{load_graph, split_tensor_name, GraphLoad};

pub use sstable::TableError;

const T: ModelType = ModelType::TensorFlowSaved;

fn invalid(reason: impl Into<String>) -> ModelError {
    ModelError::invalid(T, reason)
}

/// Creates models from SavedModels ([`ModelType::TensorFlowSaved`]): a directory, or a
/// [`SavedModelArchive`] as bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SavedModelFactory;

impl ModelFactory for SavedModelFactory {
    fn create(
        &self,
        source: ModelSource<'_>,
        options: &LoadOptions,
    ) -> Result<Box<dyn Model>, ModelError> {
        let archive = match source {
            ModelSource::Bytes(b) => {
                SavedModelArchive::decode(b).map_err(|source| ModelError::Decode {
                    what: "SavedModelArchive",
                    source,
                })?
            }
            ModelSource::Path(p) => read_dir(p)?,
        };
        Ok(Box::new(load_archive(archive, options)?))
    }
}

/// Packs a SavedModel directory into a [`SavedModelArchive`].
pub fn read_dir(dir: &Path) -> Result<SavedModelArchive, ModelError> {
    let saved_model = read_file(&dir.join("saved_model.pb"))?;
    let vars = dir.join("variables");
    let index_path = vars.join("variables.index");
    let mut archive = SavedModelArchive {
        saved_model,
        ..Default::default()
    };
    if !index_path.exists() {
        return Ok(archive);
    }
    archive.variables_index = read_file(&index_path)?;
    let header = read_index(&archive.variables_index)?.0;
    let shards = header.num_shards.max(1);
    for shard in 0..shards {
        let name = format!("variables.data-{shard:05}-of-{shards:05}");
        archive.variables_data.push(read_file(&vars.join(name))?);
    }
    Ok(archive)
}

type Entries = HashMap<String, BundleEntryProto>;

/// Decodes the bundle index: its header and entries by tensor name.
fn read_index(index: &[u8]) -> Result<(BundleHeaderProto, Entries), ModelError> {
    let table = sstable::read_table(index).map_err(|e| invalid(format!("variables.index: {e}")))?;
    let mut header = None;
    let mut entries = HashMap::new();
    for (key, value) in table {
        if key.is_empty() {
            header = Some(
                BundleHeaderProto::decode(value.as_slice()).map_err(|source| {
                    ModelError::Decode {
                        what: "BundleHeaderProto",
                        source,
                    }
                })?,
            );
        } else {
            let name = String::from_utf8(key)
                .map_err(|_| invalid("variables.index: a tensor name is not UTF-8"))?;
            let entry = BundleEntryProto::decode(value.as_slice()).map_err(|source| {
                ModelError::Decode {
                    what: "BundleEntryProto",
                    source,
                }
            })?;
            entries.insert(name, entry);
        }
    }
    let header = header.ok_or_else(|| invalid("variables.index has no bundle header"))?;
    if header.endianness != 0 {
        return Err(invalid("big-endian tensor bundles are not supported"));
    }
    if header.num_shards < 0 || header.num_shards > 10_000 {
        return Err(invalid(format!("bad shard count {}", header.num_shards)));
    }
    Ok((header, entries))
}

/// Bytes per element of a fixed-size type.
fn element_size(dt: DataType) -> Option<usize> {
    Some(match dt {
        DataType::DtFloat | DataType::DtInt32 | DataType::DtUint32 => 4,
        DataType::DtDouble | DataType::DtInt64 | DataType::DtUint64 | DataType::DtComplex64 => 8,
        DataType::DtUint8 | DataType::DtInt8 | DataType::DtBool => 1,
        DataType::DtInt16 | DataType::DtUint16 | DataType::DtHalf | DataType::DtBfloat16 => 2,
        _ => return None,
    })
}

/// The tensor stored under `name`, as a TensorProto with raw content.
fn restore_tensor(
    name: &str,
    entries: &Entries,
    shards: &[Vec<u8>],
) -> Result<TensorProto, ModelError> {
    let entry = entries
        .get(name)
        .ok_or_else(|| invalid(format!("variable {name:?} is not in the checkpoint")))?;
    if !entry.slices.is_empty() {
        return Err(invalid(format!(
            "variable {name:?} is partitioned; partitioned variables are not supported"
        )));
    }
    let dt = DataType::try_from(entry.dtype).map_err(|_| {
        invalid(format!(
            "variable {name:?} has unknown dtype {}",
            entry.dtype
        ))
    })?;
    let size_of = element_size(dt)
        .ok_or_else(|| invalid(format!("variable {name:?}: dtype {dt:?} is not supported")))?;
    let shape = entry.shape.clone().unwrap_or_default();
    let mut elements = 1usize;
    for d in &shape.dim {
        let d = usize::try_from(d.size)
            .map_err(|_| invalid(format!("variable {name:?} has an unknown dimension")))?;
        elements = elements
            .checked_mul(d)
            .ok_or_else(|| invalid(format!("variable {name:?} is too large")))?;
    }
    let size =
        usize::try_from(entry.size).map_err(|_| invalid(format!("variable {name:?}: bad size")))?;
    if elements.checked_mul(size_of) != Some(size) {
        return Err(invalid(format!(
            "variable {name:?}: {size} bytes for {elements} elements of {dt:?}"
        )));
    }
    let shard = usize::try_from(entry.shard_id)
        .ok()
        .and_then(|s| shards.get(s))
        .ok_or_else(|| {
            invalid(format!(
                "variable {name:?} is in data shard {} which is missing",
                entry.shard_id
            ))
        })?;
    let offset = usize::try_from(entry.offset)
        .map_err(|_| invalid(format!("variable {name:?}: bad offset")))?;
    let bytes = offset
        .checked_add(size)
        .and_then(|end| shard.get(offset..end))
        .ok_or_else(|| {
            invalid(format!(
                "variable {name:?} lies past the end of its data file"
            ))
        })?;
    let crc = crc32c::crc32c(bytes);
    if entry.crc32c != crc32c::mask(crc) && entry.crc32c != crc {
        return Err(invalid(format!("variable {name:?}: checksum mismatch")));
    }
    Ok(TensorProto {
        dtype: dt as i32,
        tensor_shape: Some(shape),
        tensor_content: bytes.to_vec(),
        ..Default::default()
    })
}

/// Picks the MetaGraph and signature.
fn choose<'a>(
    saved: &'a SavedModel,
    tag: &str,
    signature: Option<&str>,
) -> Result<(&'a GraphDef, String, &'a SignatureDef), ModelError> {
    let meta = saved
        .meta_graphs
        .iter()
        .find(|m| {
            m.meta_info_def
                .as_ref()
                .is_some_and(|i| i.tags.iter().any(|t| t == tag))
        })
        .ok_or_else(|| invalid(format!("no MetaGraph tagged {tag:?}")))?;
    let graph = meta
        .graph_def
        .as_ref()
        .ok_or_else(|| invalid("the MetaGraph has no graph"))?;
    let mut names: Vec<&String> = meta.signature_def.keys().collect();
    names.sort();
    let name = match signature {
        Some(s) => s.to_string(),
        None if names.len() == 1 => names[0].clone(),
        None if meta.signature_def.contains_key("serving_default") => "serving_default".into(),
        None => {
            return Err(invalid(format!(
                "choose a signature among {names:?} (none is serving_default)"
            )))
        }
    };
    let sig = meta
        .signature_def
        .get(&name)
        .ok_or_else(|| invalid(format!("no signature {name:?} (there are {names:?})")))?;
    Ok((graph, name, sig))
}

fn tensor_name(info: &crate::pb::tensorflow::TensorInfo) -> Result<&str, ModelError> {
    match &info.encoding {
        Some(crate::pb::tensorflow::tensor_info::Encoding::Name(n)) => Ok(n),
        None => Err(invalid(
            "sparse or composite signature tensors are not supported",
        )),
    }
}

/// The graph pruned to what `outputs` need, with variables replaced by constants.
fn freeze(
    graph: &GraphDef,
    input: (&str, Option<&TensorShapeProto>),
    outputs: &[&str],
    entries: &Entries,
    shards: &[Vec<u8>],
) -> Result<GraphDef, ModelError> {
    let by_name: HashMap<&str, &NodeDef> =
        graph.node.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut needed: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = outputs.iter().map(|o| split_tensor_name(o).0).collect();
    while let Some(name) = stack.pop() {
        if !needed.insert(name) {
            continue;
        }
        let node = by_name
            .get(name)
            .ok_or_else(|| invalid(format!("the graph has no node {name:?}")))?;
        for input in &node.input {
            if input.starts_with('^') {
                continue;
            }
            stack.push(split_tensor_name(input).0);
        }
    }
    let mut nodes = Vec::with_capacity(needed.len());
    for node in &graph.node {
        if !needed.contains(node.name.as_str()) {
            continue;
        }
        let mut node = node.clone();
        node.input.retain(|i| !i.starts_with('^'));
        node.device.clear();
        match node.op.as_str() {
            "VariableV2" | "Variable" | "VarHandleOp" => {
                let key = match node.attr.get("shared_name").and_then(|a| a.value.as_ref()) {
                    Some(attr_value::Value::S(s)) if node.op == "VarHandleOp" && !s.is_empty() => {
                        String::from_utf8_lossy(s).into_owned()
                    }
                    _ => node.name.clone(),
                };
                let tensor = restore_tensor(&key, entries, shards)?;
                let dtype = tensor.dtype;
                node.op = "Const".into();
                node.attr = BTreeMap::from([
                    (
                        "dtype".to_string(),
                        AttrValue {
                            value: Some(attr_value::Value::Type(dtype)),
                        },
                    ),
                    (
                        "value".to_string(),
                        AttrValue {
                            value: Some(attr_value::Value::Tensor(tensor)),
                        },
                    ),
                ])
                .into_iter()
                .collect();
            }
            "Placeholder" if node.name == split_tensor_name(input.0).0 => {
                // Old graphs store an empty `shape` meaning "unknown"; the signature knows.
                if let Some(shape) = input.1.filter(|s| !s.dim.is_empty()) {
                    node.attr.insert(
                        "shape".into(),
                        AttrValue {
                            value: Some(attr_value::Value::Shape(shape.clone())),
                        },
                    );
                }
            }
            "ReadVariableOp" => {
                node.op = "Identity".into();
                if let Some(dt) = node.attr.remove("dtype") {
                    node.attr.insert("T".into(), dt);
                }
            }
            "Assign" | "AssignVariableOp" | "RestoreV2" | "SaveV2" => {
                return Err(invalid(format!(
                    "the signature depends on {} node {:?}",
                    node.op, node.name
                )))
            }
            _ => {}
        }
        nodes.push(node);
    }
    Ok(GraphDef {
        node: nodes,
        versions: graph.versions.clone(),
    })
}

/// Loads an archive.
fn load_archive(
    archive: SavedModelArchive,
    options: &LoadOptions,
) -> Result<crate::tensor::TensorModel, ModelError> {
    let saved = SavedModel::decode(archive.saved_model.as_slice()).map_err(|source| {
        ModelError::Decode {
            what: "SavedModel",
            source,
        }
    })?;
    let tag = options
        .tag
        .clone()
        .or_else(|| Some(archive.tag.clone()).filter(|t| !t.is_empty()))
        .unwrap_or_else(|| "serve".into());
    let wanted_sig = options
        .signature
        .clone()
        .or_else(|| Some(archive.signature.clone()).filter(|s| !s.is_empty()));
    let (graph, sig_name, sig) = choose(&saved, &tag, wanted_sig.as_deref())?;
    if sig.inputs.len() != 1 {
        return Err(invalid(format!(
            "signature {sig_name:?} has {} inputs; one input tensor is supported",
            sig.inputs.len()
        )));
    }
    let input_info = sig
        .inputs
        .values()
        .next()
        .ok_or_else(|| invalid("signature without input"))?;
    let input = tensor_name(input_info)?.to_string();
    let mut outputs: Vec<(String, String)> = Vec::new();
    for (key, info) in &sig.outputs {
        outputs.push((key.clone(), tensor_name(info)?.to_string()));
    }
    outputs.sort();
    if let Some(wanted) = &options.outputs {
        outputs.retain(|(k, _)| wanted.contains(k));
        if outputs.len() != wanted.len() {
            return Err(invalid(format!(
                "signature {sig_name:?} lacks some of the outputs {wanted:?}"
            )));
        }
    }
    if outputs.is_empty() {
        return Err(invalid(format!("signature {sig_name:?} has no outputs")));
    }
    let entries = if archive.variables_index.is_empty() {
        HashMap::new()
    } else {
        read_index(&archive.variables_index)?.1
    };
    let output_tensors: Vec<&str> = outputs.iter().map(|(_, t)| t.as_str()).collect();
    let frozen = freeze(
        graph,
        (&input, input_info.tensor_shape.as_ref()),
        &output_tensors,
        &entries,
        &archive.variables_data,
    )?;
    let archive_bytes = SavedModelArchive {
        tag,
        signature: sig_name,
        ..archive
    }
    .encode_to_vec();
    load_graph(
        &frozen.encode_to_vec(),
        GraphLoad {
            model_type: T,
            input: Some(input),
            outputs: Some(outputs),
            columns: options.columns.clone(),
            bytes: archive_bytes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_archives_are_typed_errors() {
        for bytes in [&b""[..], b"\xff\xff\xff", b"\x0a\x05abc"] {
            let r = SavedModelFactory.create(ModelSource::Bytes(bytes), &LoadOptions::default());
            assert!(
                matches!(
                    r,
                    Err(ModelError::Decode { .. } | ModelError::InvalidModel { .. })
                ),
                "{r:?}"
            );
        }
    }

    #[test]
    fn missing_directory_is_io_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = SavedModelFactory.create(ModelSource::Path(tmp.path()), &LoadOptions::default());
        assert!(matches!(r, Err(ModelError::Io { .. })), "{r:?}");
    }
}
