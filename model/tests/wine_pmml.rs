//! The tutorial's seven PMML models through the `Model` trait: records named as the
//! protobuf `WineRecord` names them (`fixed_acidity`, `pH`, …) reach the PMML inputs
//! ("fixed acidity", …), and every output equals JPMML-Evaluator's (the fixtures the
//! PMML crate records with `scripts/pmml/record_wine_fixtures.py`).

mod common;

use std::path::Path;

use flowstage_model::pb::WineRecord;
use flowstage_model::{LoadOptions, ModelRegistry, ModelType, OutputValue, Record};
use serde_json::Value as Json;

// The tutorial model list, shared with the PMML crate's own wine test and bench.
#[path = "../../pmml/tests/common/wine.rs"]
#[allow(dead_code)]
mod wine;
use wine::MODELS;

fn wine_record(row: &[f64]) -> Record {
    let w = WineRecord {
        fixed_acidity: row[0],
        volatile_acidity: row[1],
        citric_acid: row[2],
        residual_sugar: row[3],
        chlorides: row[4],
        free_sulfur_dioxide: row[5],
        total_sulfur_dioxide: row[6],
        density: row[7],
        p_h: row[8],
        sulphates: row[9],
        alcohol: row[10],
        data_type: "wine".into(),
        ..Default::default()
    };
    Record::from(&w)
}

fn same(expected: &Json, got: &OutputValue) -> bool {
    match (expected, got) {
        (Json::Null, OutputValue::Missing) => true,
        (Json::String(s), OutputValue::Text(t)) => s == t,
        (Json::Number(n), OutputValue::Number(x)) => {
            let e = n.as_f64().unwrap_or(f64::NAN);
            e == *x || (e - x).abs() <= 1e-9 * e.abs().max(x.abs())
        }
        _ => false,
    }
}

#[test]
fn tutorial_pmml_models_match_jpmml_through_the_model_trait() {
    let Some(wine) = common::wine_dir() else {
        return;
    };
    let rows = common::wine_rows(&wine);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pmml/tests/fixtures/wine");
    let registry = ModelRegistry::with_defaults();
    let mut compared = 0usize;
    for stem in MODELS {
        let model = registry
            .load_path(
                ModelType::Pmml,
                &wine.join(format!("{stem}.pmml")),
                &LoadOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let expected = std::fs::read_to_string(fixtures.join(format!("{stem}.expected.jsonl")))
            .unwrap_or_else(|e| panic!("{stem}: fixture: {e}"));
        let expected: Vec<Json> = expected
            .lines()
            .map(|l| serde_json::from_str(l).expect("fixture line is JSON"))
            .collect();
        assert_eq!(
            expected.len(),
            rows.len(),
            "{stem}: one fixture row per wine row"
        );
        for (i, (row, exp)) in rows.iter().zip(&expected).enumerate() {
            let score = model
                .score(&wine_record(row))
                .unwrap_or_else(|e| panic!("{stem} row {i}: {e}"));
            let Json::Object(fields) = exp else {
                panic!("{stem} row {i}: fixture is not an object")
            };
            for (name, want) in fields.iter().filter(|(k, _)| k.as_str() != "row") {
                let got = score
                    .output(name)
                    .unwrap_or_else(|| panic!("{stem} row {i}: no output {name:?}"));
                assert!(
                    same(want, got),
                    "{stem} row {i} {name}: want {want}, got {got:?}"
                );
                compared += 1;
            }
        }
    }
    eprintln!(
        "compared {compared} output values of 7 models x {} rows",
        rows.len()
    );
    assert!(compared >= 7 * rows.len());
}
