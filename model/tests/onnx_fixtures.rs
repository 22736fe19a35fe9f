//! Every ONNX fixture model (scikit-learn → skl2onnx, written by
//! scripts/models/onnx_fixtures.py) against onnxruntime's recorded outputs.

#![cfg(feature = "onnx")]

mod common;

use std::path::Path;

use flowstage_model::{
    LoadOptions, Model, ModelRegistry, ModelType, OutputValue, Record, Score, Value,
};
use serde_json::Value as Json;

/// |got - want| <= 1e-5 * max(|want|, 1).
const TOLERANCE: f64 = 1e-5;

fn close(got: f64, want: f64) -> bool {
    (got.is_nan() && want.is_nan()) || (got - want).abs() <= TOLERANCE * want.abs().max(1.0)
}

fn json_number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) if s == "NaN" => Some(f64::NAN),
        Json::String(s) if s == "Infinity" => Some(f64::INFINITY),
        Json::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Compares one output; returns the largest abs difference seen.
fn compare(ctx: &str, got: &OutputValue, want: &Json) -> f64 {
    let mut diff = 0f64;
    let mut num = |g: f64, w: &Json| {
        let w = json_number(w).unwrap_or_else(|| panic!("{ctx}: expected a number, got {w}"));
        assert!(close(g, w), "{ctx}: got {g}, onnxruntime {w}");
        if g.is_finite() && w.is_finite() {
            diff = diff.max((g - w).abs());
        }
    };
    match (got, want) {
        (OutputValue::Number(g), w) => num(*g, w),
        (OutputValue::Text(g), Json::String(w)) => assert_eq!(g, w, "{ctx}"),
        (OutputValue::Numbers(g), Json::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{ctx}");
            for (g, w) in g.iter().zip(w) {
                num(*g, w);
            }
        }
        (OutputValue::Texts(g), Json::Array(w)) => {
            let w: Vec<&str> = w.iter().filter_map(Json::as_str).collect();
            assert_eq!(g, &w, "{ctx}");
        }
        (OutputValue::Map(g), Json::Object(w)) => {
            assert_eq!(g.len(), w.len(), "{ctx}: {g:?} vs {w:?}");
            for (label, p) in g {
                let wp = w
                    .get(label)
                    .unwrap_or_else(|| panic!("{ctx}: label {label} not in {w:?}"));
                num(*p, wp);
            }
        }
        (g, w) => panic!("{ctx}: got {g:?}, onnxruntime {w}"),
    }
    diff
}

fn read_inputs(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).expect("read inputs");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| {
                    let v = if v.is_empty() {
                        Value::Missing
                    } else {
                        Value::Number(v.parse().expect("number"))
                    };
                    (h.to_string(), v)
                })
                .collect()
        })
        .collect()
}

fn check_model(name: &str) -> (usize, f64) {
    let dir = common::fixtures().join("onnx");
    let model = ModelRegistry::with_defaults()
        .load_path(
            ModelType::Onnx,
            &dir.join(format!("{name}.onnx")),
            &LoadOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let records = read_inputs(&dir.join(format!("{name}.input.csv")));
    let expected: Vec<Json> = std::fs::read_to_string(dir.join(format!("{name}.expected.jsonl")))
        .expect("read expected")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(records.len(), expected.len());
    assert!(!records.is_empty());
    let batch = model.score_batch(&records);
    let mut max_diff = 0f64;
    for (i, (rec, want)) in records.iter().zip(&expected).enumerate() {
        let single = model
            .score(rec)
            .unwrap_or_else(|e| panic!("{name} row {i}: {e}"));
        let batched = batch[i]
            .as_ref()
            .unwrap_or_else(|e| panic!("{name} row {i} (batch): {e}"));
        for score in [&single, batched] {
            let want = want.as_object().expect("object");
            assert_eq!(score.outputs.len(), want.len(), "{name} row {i}");
            for (key, w) in want {
                let got = score
                    .output(key)
                    .unwrap_or_else(|| panic!("{name}: no output {key} in {score:?}"));
                max_diff = max_diff.max(compare(&format!("{name} row {i} {key}"), got, w));
            }
        }
        check_headline(name, &single);
    }
    // The columnar form holds the same scores.
    let columnar = model.score_columnar(&records);
    assert_eq!(columnar.len(), records.len());
    for (i, b) in batch.iter().enumerate() {
        let b = b.as_ref().ok();
        assert_eq!(
            columnar.score(i).and_then(|s| s.ok()).as_ref(),
            b,
            "{name} row {i}"
        );
        assert_eq!(
            columnar.value(i).as_ref(),
            b.map(|s| &s.value),
            "{name} row {i}"
        );
    }
    // A batch larger than one plan run (chunks, the last one padded).
    let many: Vec<Record> = records.iter().cycle().take(1100).cloned().collect();
    for (j, got) in model.score_batch(&many).iter().enumerate() {
        let got = got
            .as_ref()
            .unwrap_or_else(|e| panic!("{name} row {j} (large batch): {e}"));
        let want = expected[j % records.len()].as_object().expect("object");
        for (key, w) in want {
            let g = got.output(key).expect("output");
            compare(&format!("{name} row {j} (large batch) {key}"), g, w);
        }
    }
    (records.len(), max_diff)
}

/// A classifier's headline value is its label output; a regressor's its value.
fn check_headline(name: &str, score: &Score) {
    match &score.outputs[0].1 {
        OutputValue::Number(n) => assert_eq!(score.value, Value::Number(*n), "{name}"),
        OutputValue::Text(t) => assert_eq!(score.value, Value::Text(t.clone()), "{name}"),
        OutputValue::Numbers(v) if v.len() == 1 => {
            assert_eq!(score.value, Value::Number(v[0]), "{name}")
        }
        _ => {}
    }
}

#[test]
fn every_fixture_matches_onnxruntime() {
    let manifest: Json = serde_json::from_str(
        &std::fs::read_to_string(common::fixtures().join("onnx/manifest.json")).expect("manifest"),
    )
    .expect("manifest json");
    let models = manifest["models"].as_array().expect("models");
    assert!(models.len() >= 10);
    let mut failures = vec![];
    for m in models {
        let name = m["name"].as_str().expect("name");
        match std::panic::catch_unwind(|| check_model(name)) {
            Ok((rows, diff)) => eprintln!("{name}: {rows} rows match, max abs diff {diff:e}"),
            Err(_) => failures.push(name.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "models not matching onnxruntime: {failures:?}"
    );
}

#[test]
fn zipmap_outputs_become_label_maps() {
    let dir = common::fixtures().join("onnx");
    let model = ModelRegistry::with_defaults()
        .load_path(
            ModelType::Onnx,
            &dir.join("tree_classifier_strings.onnx"),
            &LoadOptions::default(),
        )
        .expect("load");
    let names: Vec<&str> = model.outputs().iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["output_label", "output_probability"]);
    let rec = read_inputs(&dir.join("tree_classifier_strings.input.csv"))
        .into_iter()
        .next()
        .expect("a row");
    let score = model.score(&rec).expect("score");
    let probs = score.probabilities().expect("a map");
    let mut labels: Vec<&str> = probs.iter().map(|(l, _)| l.as_str()).collect();
    labels.sort();
    assert_eq!(labels, ["high", "low", "mid"]);
    assert!(matches!(score.value, Value::Text(_)));
}
