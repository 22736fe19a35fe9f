//! The tutorial's TensorFlow models against TensorFlow's own outputs (fixtures written by
//! scripts/models/tf_reference.py).

#![cfg(feature = "tensorflow")]

mod common;

use flowstage_model::{
    LoadOptions, Model, ModelRegistry, ModelType, OutputValue, Record, Score, Value,
};

const TOLERANCE: f64 = 1e-5;

fn vector(score: &Score) -> Vec<f64> {
    match &score.outputs[0].1 {
        OutputValue::Numbers(v) => v.clone(),
        other => panic!("expected a vector output, got {other:?}"),
    }
}

/// Compares every row, one record at a time and as one batch; returns the max abs diff.
fn check_all_rows(model: &dyn Model, rows: &[Vec<f64>], expected: &[Vec<f64>]) -> f64 {
    assert_eq!(rows.len(), 1599);
    assert_eq!(expected.len(), rows.len());
    let records: Vec<Record> = rows.iter().map(|r| common::record(r)).collect();
    let batch = model.score_batch(&records);
    let mut max_diff = 0f64;
    for (i, (rec, want)) in records.iter().zip(expected).enumerate() {
        let single = model.score(rec).expect("score");
        let batched = batch[i].as_ref().expect("batch score");
        for got in [vector(&single), vector(batched)] {
            assert_eq!(got.len(), want.len(), "row {i}");
            for (g, w) in got.iter().zip(want) {
                let d = (g - w).abs();
                max_diff = max_diff.max(d);
                assert!(d <= TOLERANCE, "row {i}: got {got:?}, TensorFlow {want:?}");
            }
        }
        // The tutorial's score: the argmax index.
        let best = want
            .iter()
            .enumerate()
            .fold(
                (0, f64::MIN),
                |b, (j, v)| if *v > b.1 { (j, *v) } else { b },
            )
            .0;
        let margin = {
            let mut s = want.clone();
            s.sort_by(|a, b| b.total_cmp(a));
            s[0] - s[1]
        };
        if margin > 1e-4 {
            assert_eq!(single.value, Value::Number(best as f64), "row {i}");
        }
    }
    max_diff
}

#[test]
fn frozen_graph_matches_tensorflow_on_all_rows() {
    let Some(wine) = common::wine_dir() else {
        return;
    };
    let expected = common::read_csv(&common::fixtures().join("wine_frozen_tf.csv"));
    let registry = ModelRegistry::with_defaults();
    let model = registry
        .load_path(
            ModelType::TensorFlow,
            &wine.join("optimized_WineQuality.pb"),
            &LoadOptions::default(),
        )
        .expect("load frozen graph");
    assert_eq!(model.model_type(), ModelType::TensorFlow);
    assert_eq!(model.inputs()[0].name, "dense_1_input");
    assert_eq!(model.outputs()[0].name, "dense_3/Sigmoid");
    let diff = check_all_rows(&model, &common::wine_rows(&wine), &expected);
    eprintln!("frozen graph: 1599 rows, max abs diff {diff:e}");

    // to_bytes restores an equivalent model.
    let restored = registry
        .restore(ModelType::TensorFlow, &model.to_bytes().expect("to_bytes"))
        .expect("restore");
    let rec = common::record(&common::wine_rows(&wine)[0]);
    assert_eq!(
        restored.score(&rec).expect("score"),
        model.score(&rec).expect("score")
    );
}

#[test]
fn saved_model_matches_tensorflow_on_all_rows() {
    let Some(wine) = common::wine_dir() else {
        return;
    };
    let expected = common::read_csv(&common::fixtures().join("wine_saved_tf.csv"));
    let registry = ModelRegistry::with_defaults();
    let model = registry
        .load_path(
            ModelType::TensorFlowSaved,
            &wine.join("saved/1"),
            &LoadOptions::default(),
        )
        .expect("load SavedModel");
    assert_eq!(model.model_type(), ModelType::TensorFlowSaved);
    assert_eq!(model.outputs()[0].name, "outputs");
    let diff = check_all_rows(&model, &common::wine_rows(&wine), &expected);
    eprintln!("SavedModel: 1599 rows, max abs diff {diff:e}");

    // to_bytes is a SavedModelArchive that restores the same model.
    let restored = registry
        .restore(
            ModelType::TensorFlowSaved,
            &model.to_bytes().expect("to_bytes"),
        )
        .expect("restore");
    let rec = common::record(&common::wine_rows(&wine)[5]);
    assert_eq!(
        restored.score(&rec).expect("score"),
        model.score(&rec).expect("score")
    );
}

#[test]
fn wrong_width_and_strings_are_row_errors() {
    let Some(wine) = common::wine_dir() else {
        return;
    };
    let model = ModelRegistry::with_defaults()
        .load_path(
            ModelType::TensorFlow,
            &wine.join("optimized_WineQuality.pb"),
            &LoadOptions::default(),
        )
        .expect("load");
    let good = common::record(&common::wine_rows(&wine)[0]);
    let short = Record::new().with("a", 1.0);
    let text = good.clone().with("c3", "sweet");
    let results = model.score_batch(&[good.clone(), short, text, good]);
    assert!(results[0].is_ok());
    assert!(results[1].is_err());
    assert!(results[2].is_err());
    assert_eq!(
        results[0].as_ref().ok(),
        results[3].as_ref().ok(),
        "bad rows must not disturb good ones"
    );
}
