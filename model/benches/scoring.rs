//! Scoring throughput: the wine MLP one record at a time and in batches of 1,024, as a frozen
//! graph, as a SavedModel, and as an ONNX MLP of the same shape (the wine_shaped_mlp fixture).
//! Each model also scores the batch with `score_columnar` (columns, no per-record `Score`).
//! `scripts/models/bench.sh` runs this and onnxruntime on the same ONNX model in one go.
//!
//! Then the seven tutorial PMML models as the server scores them: a `WineRecord` to a `Record`,
//! scored through the wine field mapping, the `ServingResult` built and encoded; against the
//! evaluator alone on the same rows, prepared once (the baseline, measured in the same run).
//! The ratio is what the model adapter and the result cost on top of the evaluation.
//!
//! Run: `cargo bench -p flowstage-model --bench scoring` (needs ../shared for the wine data).
//! `BENCH_PMML_ONLY=1` runs the PMML part alone; `BENCH_PMML_MODEL=text`, only the PMML files
//! whose path contains `text`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowstage_model::{LoadOptions, Model, ModelRegistry, ModelType, Record, Value};

fn wine_dir() -> Option<PathBuf> {
    let shared = std::env::var_os("FLOWSTAGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let wine = shared.join("data/wine");
    wine.join("winequality_red.csv").is_file().then_some(wine)
}

fn records(wine: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(wine.join("winequality_red.csv")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(';')
                .take(11)
                .enumerate()
                .map(|(i, v)| {
                    (
                        format!("c{i}"),
                        v.trim()
                            .parse::<f64>()
                            .map_or(Value::Missing, Value::Number),
                    )
                })
                .collect()
        })
        .collect()
}

/// Runs `f` repeatedly for about `budget`, returning the time per call.
fn time_per_call(budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..100 {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < budget {
        for _ in 0..100 {
            f();
        }
        calls += 100;
    }
    start.elapsed() / calls
}

fn bench(name: &str, model: &dyn Model, recs: &[Record]) {
    let mut i = 0usize;
    let single = time_per_call(Duration::from_secs(2), || {
        let r = model.score(&recs[i % recs.len()]);
        black_box(r.is_ok());
        i += 1;
    });
    let batch: Vec<Record> = recs.iter().cycle().take(1024).cloned().collect();
    let per_batch = time_per_call(Duration::from_secs(3), || {
        let r = model.score_batch(&batch);
        black_box(r.len());
    });
    let throughput = 1024.0 / per_batch.as_secs_f64();
    println!(
        "{name:<28} single: {:>8.2} µs/record   batch 1024: {:>10.0} records/s ({:.2} µs/record)",
        single.as_secs_f64() * 1e6,
        throughput,
        per_batch.as_secs_f64() * 1e6 / 1024.0
    );
    // The same batch kept columnar (no per-record Score); reading every record's headline
    // value so that the work is not skipped.
    let per_columnar = time_per_call(Duration::from_secs(3), || {
        let b = model.score_columnar(&batch);
        let mut n = 0usize;
        for i in 0..b.len() {
            n += usize::from(b.value(i).is_some());
        }
        black_box(n);
    });
    println!(
        "{:<28}                           columnar:   {:>10.0} records/s ({:.2} µs/record)",
        format!("  {name}"),
        1024.0 / per_columnar.as_secs_f64(),
        per_columnar.as_secs_f64() * 1e6 / 1024.0
    );
}

/// tract alone on the whole ONNX graph (softmax and label included, as tract runs them): a
/// `[1024, 11]` tensor in, tensors out, no records. flowstage runs the softmax and label
/// natively, so its own lines can beat this one.
fn bench_raw_tract(model_path: &Path, recs: &[Record]) {
    use tract_onnx::prelude::*;
    let plan = flowstage_model::onnx::framework()
        .model_for_path(model_path)
        .and_then(|m| m.with_input_fact(0, f32::fact([1024, 11]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable());
    let Ok(plan) = plan else {
        println!("raw tract: cannot load");
        return;
    };
    let data: Vec<f32> = recs
        .iter()
        .cycle()
        .take(1024)
        .flat_map(|r| {
            r.values()
                .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let Ok(input) = Tensor::from_shape(&[1024, 11], &data) else {
        return;
    };
    let per_batch = time_per_call(Duration::from_secs(3), || {
        let r = plan.run(tvec!(input.clone().into_tvalue()));
        black_box(r.is_ok());
    });
    println!(
        "{:<28} batch 1024: {:>10.0} records/s ({:.2} µs/record)",
        "raw tract, whole onnx graph",
        1024.0 / per_batch.as_secs_f64(),
        per_batch.as_secs_f64() * 1e6 / 1024.0
    );
}

/// The best of 25 samples of about 40 ms each, as time per call: on a shared
/// machine, the samples that were not preempted.
fn best_per_call(mut f: impl FnMut()) -> Duration {
    (0..25)
        .map(|_| time_per_call(Duration::from_millis(40), &mut f))
        .min()
        .unwrap_or_default()
}

/// The PMML models through the adapter, per record, against the evaluator alone.
fn bench_pmml_adapter(wine: &Path, recs: &[Record]) {
    use flowstage_model::pb::WineRecord;
    use flowstage_model::{FieldMapping, MappedModel};
    use prost::Message;
    let wines: Vec<WineRecord> = recs
        .iter()
        .map(|r| {
            let v: Vec<f64> = r.values().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect();
            let at = |i: usize| v.get(i).copied().unwrap_or(f64::NAN);
            WineRecord {
                fixed_acidity: at(0),
                volatile_acidity: at(1),
                citric_acid: at(2),
                residual_sugar: at(3),
                chlorides: at(4),
                free_sulfur_dioxide: at(5),
                total_sulfur_dioxide: at(6),
                density: at(7),
                p_h: at(8),
                sulphates: at(9),
                alcohol: at(10),
                data_type: "wine".into(),
                ts: 1,
                // As the provider stamps them: µs past `ts`.
                ts_micros: 500,
            }
        })
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(wine)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let only = std::env::var("BENCH_PMML_MODEL").unwrap_or_default();
    files.retain(|p| {
        p.extension().is_some_and(|e| e == "pmml") && p.to_string_lossy().contains(&only)
    });
    files.sort();
    println!("PMML, per record: the evaluator alone, then record -> score -> ServingResult bytes");
    for path in files {
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        let stem = stem.unwrap_or_default();
        let loaded = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                flowstage_model::pmml::PmmlModel::from_bytes(b).map_err(|e| e.to_string())
            });
        let model = match loaded {
            Ok(m) => m,
            Err(e) => {
                println!("{stem}: cannot load: {e}");
                continue;
            }
        };
        // The baseline: each row's inputs in the evaluator's order, prepared once.
        let mapping = FieldMapping::wine();
        let evaluator = model.evaluator();
        let rows: Vec<Vec<flowstage_pmml::Value>> = wines
            .iter()
            .map(|w| {
                let r = mapping.apply(&Record::from(w));
                evaluator
                    .input_fields()
                    .iter()
                    .map(|f| {
                        r.get(&f.name).and_then(Value::as_f64).map_or(
                            flowstage_pmml::Value::Missing,
                            flowstage_pmml::Value::Double,
                        )
                    })
                    .collect()
            })
            .collect();
        let mut out = flowstage_pmml::Outputs::default();
        let mut i = 0usize;
        let alone = best_per_call(|| {
            let r = evaluator.evaluate_into(&rows[i % rows.len()], &mut out);
            black_box(r.is_ok());
            i += 1;
        });
        let served = MappedModel::new(model, mapping);
        let mut i = 0usize;
        let adapted = best_per_call(|| {
            let w = &wines[i % wines.len()];
            let bytes = served.score(&Record::from(w)).map(|s| {
                s.to_serving_result_for("m", "wine", Duration::from_nanos(1), w.ts, Vec::new())
                    .encode_to_vec()
            });
            black_box(bytes.map_or(0, |b| b.len()));
            i += 1;
        });
        println!(
            "  {stem:<50} evaluator {:>7.0} ns   served {:>7.0} ns   ratio {:>5.2}x",
            alone.as_secs_f64() * 1e9,
            adapted.as_secs_f64() * 1e9,
            adapted.as_secs_f64() / alone.as_secs_f64()
        );
    }
}

fn main() {
    let Some(wine) = wine_dir() else {
        println!("SKIPPED: ../shared/data/wine is absent");
        return;
    };
    let recs = records(&wine);
    if std::env::var_os("BENCH_PMML_ONLY").is_some() {
        bench_pmml_adapter(&wine, &recs);
        return;
    }
    let registry = ModelRegistry::with_defaults();
    let opts = LoadOptions::default();
    let onnx =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/wine_shaped_mlp.onnx");
    let models: Vec<(&str, Result<Box<dyn Model>, _>)> = vec![
        (
            "tensorflow frozen graph",
            registry.load_path(
                ModelType::TensorFlow,
                &wine.join("optimized_WineQuality.pb"),
                &opts,
            ),
        ),
        (
            "tensorflow SavedModel",
            registry.load_path(ModelType::TensorFlowSaved, &wine.join("saved/1"), &opts),
        ),
        (
            "onnx wine_shaped_mlp",
            registry.load_path(ModelType::Onnx, &onnx, &opts),
        ),
    ];
    for (name, model) in models {
        match model {
            Ok(m) => bench(name, m.as_ref(), &recs),
            Err(e) => println!("{name}: cannot load: {e}"),
        }
    }
    bench_raw_tract(&onnx, &recs);
    bench_pmml_adapter(&wine, &recs);
}
