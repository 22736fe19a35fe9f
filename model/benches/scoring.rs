//! Scoring throughput: the wine MLP one record at a time and in batches of 1,024, as a frozen
//! graph, as a SavedModel, and as an ONNX MLP of the same shape (the wine_shaped_mlp fixture).
//! Each model also scores the batch with `score_columnar` (columns, no per-record `Score`).
//! `scripts/models/bench.sh` runs this and onnxruntime on the same ONNX model in one go.
//!
//! Run: `cargo bench -p flowstage-model --bench scoring` (needs ../shared for the wine data).

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

fn main() {
    let Some(wine) = wine_dir() else {
        println!("SKIPPED: ../shared/data/wine is absent");
        return;
    };
    let recs = records(&wine);
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
}
