//! The bodies of the flowstage-model fuzz targets (`savedmodel`, `tensor_models`, `wire`), shared
//! with `model/tests/fuzz_regressions.rs`, which replays the crash inputs kept in
//! `model/tests/fixtures/fuzz/<target>/`. Loading and scoring errors are fine; only panics, hangs
//! and OOMs are findings.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Once, OnceLock};

use flowstage_model::pb::{ModelDescriptor, WineRecord};
use flowstage_model::savedmodel::SavedModelFactory;
use flowstage_model::{
    DataKind, LoadOptions, Model, ModelFactory, ModelRegistry, ModelSource, ModelType, ModelsDir,
    Record, Value,
};
use prost::Message;

/// tract panics on some malformed graphs; flowstage-model contains those panics (`catch_unwind`
/// around its tract calls) and returns errors. libFuzzer's panic hook aborts on every panic,
/// caught or not, so the model targets put the default hook back: a panic that escapes the
/// library still aborts (libfuzzer-sys aborts when the target unwinds) and is a finding.
fn count_only_escaping_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

/// Loads a model back from its `to_bytes`.
type Restore<'a> = &'a dyn Fn(&[u8]) -> Option<Box<dyn Model>>;

/// At most this many columns are fed to a tensor model (a fuzzed shape may ask for millions).
const MAX_COLUMNS: usize = 256;

/// The number of columns a model's first input takes: the product of its fixed non-batch
/// dimensions, or one per input field (PMML), capped.
fn columns(model: &dyn Model) -> usize {
    let inputs = model.inputs();
    let fixed = inputs.first().and_then(|f| f.shape.as_ref()).map(|shape| {
        shape
            .iter()
            .skip(1)
            .map(|d| d.unwrap_or(1))
            .fold(1usize, |a, d| a.saturating_mul(d))
    });
    match fixed {
        Some(n) if inputs.len() == 1 => n.clamp(1, MAX_COLUMNS),
        _ => inputs.len().clamp(1, MAX_COLUMNS),
    }
}

/// Records for `model`: typical numbers, all missing, and values taken from `seed` (which may
/// be NaN, infinite, huge or text).
pub fn records(model: &dyn Model, seed: &[u8]) -> Vec<Record> {
    let n = columns(model);
    let names: Vec<String> = match model.inputs() {
        inputs if inputs.len() == n => inputs.iter().map(|f| f.name.clone()).collect(),
        _ => (0..n).map(|i| format!("c{i}")).collect(),
    };
    let kinds: Vec<DataKind> = model.inputs().iter().map(|f| f.kind.clone()).collect();
    let mut out = Vec::new();
    out.push(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), Value::Number(0.5 + i as f64)))
            .collect(),
    );
    out.push(
        names
            .iter()
            .map(|name| (name.as_str(), Value::Missing))
            .collect(),
    );
    out.push(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let b = seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
                let text = kinds.get(i).is_some_and(|k| *k == DataKind::Text);
                let v = match b % 8 {
                    0 => Value::Number(f64::NAN),
                    1 => Value::Number(f64::INFINITY),
                    2 => Value::Number(-1e308),
                    3 => Value::Text("x".into()),
                    4 => Value::Missing,
                    _ if text => Value::Text(format!("{b}")),
                    _ => Value::Number(f64::from(b) - 128.0),
                };
                (name.as_str(), v)
            })
            .collect(),
    );
    out
}

/// Scores `records(model)` one by one, as a batch and columnar, and round-trips the model
/// through `to_bytes` / `restore` when `restore` is given.
pub fn exercise(model: &dyn Model, seed: &[u8], restore: Option<Restore<'_>>) {
    let recs = records(model, seed);
    for r in &recs {
        let _ = model.score(r);
    }
    let _ = model.score_batch(&recs);
    let _ = model.score_columnar(&recs);
    if let (Some(restore), Ok(bytes)) = (restore, model.to_bytes()) {
        if let Some(again) = restore(&bytes) {
            let _ = again.score(&recs[0]);
        }
    }
}

/// `savedmodel`: a `SavedModelArchive` (saved_model.pb, variables.index — an SSTable of
/// BundleEntryProto — and the data shards) from bytes; when it loads, records are scored and the
/// model is round-tripped.
pub fn savedmodel(data: &[u8]) {
    count_only_escaping_panics();
    let Ok(model) = SavedModelFactory.create(ModelSource::Bytes(data), &LoadOptions::default())
    else {
        return;
    };
    let restore = |b: &[u8]| -> Option<Box<dyn Model>> { SavedModelFactory.restore(b).ok() };
    exercise(model.as_ref(), data, Some(&restore));
}

/// `tensor_models`: TensorFlow frozen graphs and ONNX models through the registry's loading entry
/// point; the first byte picks the format (even: frozen graph, odd: ONNX), the rest is the
/// model's bytes.
pub fn tensor_models(data: &[u8]) {
    count_only_escaping_panics();
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let model_type = if selector % 2 == 0 {
        ModelType::TensorFlow
    } else {
        ModelType::Onnx
    };
    let registry = ModelRegistry::with_defaults();
    let Ok(model) = registry.restore(model_type, bytes) else {
        return;
    };
    let restore = |b: &[u8]| -> Option<Box<dyn Model>> { registry.restore(model_type, b).ok() };
    exercise(model.as_ref(), bytes, Some(&restore));
}

/// A linear regression over the eleven wine measurements, named as in the protobuf.
const WINE_PMML: &str = r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <DataDictionary>
    <DataField name="fixed_acidity" optype="continuous" dataType="double"/>
    <DataField name="volatile_acidity" optype="continuous" dataType="double"/>
    <DataField name="citric_acid" optype="continuous" dataType="double"/>
    <DataField name="residual_sugar" optype="continuous" dataType="double"/>
    <DataField name="chlorides" optype="continuous" dataType="double"/>
    <DataField name="free_sulfur_dioxide" optype="continuous" dataType="double"/>
    <DataField name="total_sulfur_dioxide" optype="continuous" dataType="double"/>
    <DataField name="density" optype="continuous" dataType="double"/>
    <DataField name="pH" optype="continuous" dataType="double"/>
    <DataField name="sulphates" optype="continuous" dataType="double"/>
    <DataField name="alcohol" optype="continuous" dataType="double"/>
    <DataField name="quality" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema>
      <MiningField name="fixed_acidity"/>
      <MiningField name="volatile_acidity"/>
      <MiningField name="citric_acid"/>
      <MiningField name="residual_sugar"/>
      <MiningField name="chlorides"/>
      <MiningField name="free_sulfur_dioxide"/>
      <MiningField name="total_sulfur_dioxide"/>
      <MiningField name="density"/>
      <MiningField name="pH"/>
      <MiningField name="sulphates"/>
      <MiningField name="alcohol"/>
      <MiningField name="quality" usageType="target"/>
    </MiningSchema>
    <RegressionTable intercept="21.9">
      <NumericPredictor name="fixed_acidity" coefficient="0.025"/>
      <NumericPredictor name="volatile_acidity" coefficient="-1.08"/>
      <NumericPredictor name="citric_acid" coefficient="-0.18"/>
      <NumericPredictor name="residual_sugar" coefficient="0.016"/>
      <NumericPredictor name="chlorides" coefficient="-1.87"/>
      <NumericPredictor name="free_sulfur_dioxide" coefficient="0.004"/>
      <NumericPredictor name="total_sulfur_dioxide" coefficient="-0.003"/>
      <NumericPredictor name="density" coefficient="-17.9"/>
      <NumericPredictor name="pH" coefficient="-0.41"/>
      <NumericPredictor name="sulphates" coefficient="0.92"/>
      <NumericPredictor name="alcohol" coefficient="0.276"/>
    </RegressionTable>
  </RegressionModel>
</PMML>"#;

struct Fixture {
    registry: ModelRegistry,
    wine: Box<dyn Model>,
}

/// The registry (with a models directory holding `wine.pmml` and `sub/wine.pmml`) and the
/// wine model, made once per process.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        remove_stale_fixture_dirs();
        let dir: PathBuf =
            std::env::temp_dir().join(format!("{FIXTURE_DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).expect("fuzz fixture: models dir");
        std::fs::write(dir.join("wine.pmml"), WINE_PMML).expect("fuzz fixture: wine.pmml");
        std::fs::write(dir.join("sub/wine.pmml"), WINE_PMML).expect("fuzz fixture: sub/wine.pmml");
        let registry = ModelRegistry::with_defaults()
            .with_models_dir(ModelsDir::new(&dir).expect("fuzz fixture: ModelsDir"));
        let wine = registry
            .restore(ModelType::Pmml, WINE_PMML.as_bytes())
            .expect("fuzz fixture: the wine PMML loads");
        Fixture { registry, wine }
    })
}

/// The models directory of a process is this prefix and its pid, in the temp directory.
const FIXTURE_DIR_PREFIX: &str = "flowstage-fuzz-models-";

/// Removes the models directories of processes that are gone: a process's fixture lives as long
/// as the process (a static is never dropped), so each run would leave one behind. Where there
/// is no `/proc` to tell, nothing is removed.
fn remove_stale_fixture_dirs() {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FIXTURE_DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `flowstage_stages::wine::decode_record`: the dead-letter reason on failure.
fn decode_record(payload: Option<&[u8]>) -> Result<WineRecord, String> {
    let bytes = payload.ok_or_else(|| "no payload".to_string())?;
    let record =
        WineRecord::decode(bytes).map_err(|e| format!("not a WineRecord protobuf: {e}"))?;
    if record.data_type.is_empty() {
        return Err("WineRecord without dataType".into());
    }
    Ok(record)
}

/// `wire`: record decoding and the descriptor → model path, as the wine server runs them on
/// Kafka payloads. The first byte picks the message:
/// * even: a data-topic payload — `WineRecord` decoding with the checks of
///   `flowstage_stages::wine::decode_record` (a protobuf, with a dataType), then the record is
///   converted (`Record::from(&WineRecord)`) and scored by a PMML wine model;
/// * odd: a model-topic payload — `ModelDescriptor` decoding, then
///   `ModelRegistry::from_descriptor` (data by value in any format, or a `location` confined to
///   a models directory holding a PMML model), and records scored by what loaded.
///
/// (flowstage-stages itself is not linked: it builds librdkafka; its `decode_record` is
/// `WineRecord::decode` plus the dataType check reproduced here.)
pub fn wire(data: &[u8]) {
    count_only_escaping_panics();
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    if selector % 2 == 0 {
        if let Ok(wine) = decode_record(Some(payload)) {
            let record = Record::from(&wine);
            let _ = fx.wine.score(&record);
            let _ = fx.wine.score_columnar(std::slice::from_ref(&record));
        }
    } else if let Ok(descriptor) = ModelDescriptor::decode(payload) {
        if let Ok(model) = fx
            .registry
            .from_descriptor(&descriptor, &LoadOptions::default())
        {
            exercise(model.as_ref(), payload, None);
        }
    }
}
