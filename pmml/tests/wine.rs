//! The seven wine tutorial models of `../shared/data/wine` must score all 1,599 rows exactly as
//! JPMML-Evaluator does (fixtures recorded by `scripts/pmml/record_wine_fixtures.py`).

mod common;

use flowstage_pmml::{Pmml, Value};
use serde_json::Value as Json;
use std::path::PathBuf;

use common::wine::{COLUMNS, MODELS};

fn wine_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wine");
    dir.join("winequality_red.csv").is_file().then_some(dir)
}

fn fixture(model: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wine")
        .join(format!("{model}.expected.jsonl"))
}

#[test]
fn wine_models_match_jpmml() {
    let Some(dir) = wine_dir() else {
        eprintln!("SKIPPED wine_models_match_jpmml: ../shared/data/wine (relative to the repository) is absent");
        return;
    };
    let csv =
        std::fs::read_to_string(dir.join("winequality_red.csv")).expect("read winequality_red.csv");
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(';').collect())
        .collect();
    assert_eq!(
        rows.len(),
        1599,
        "winequality_red.csv should have 1,599 rows"
    );

    let mut compared_rows = 0usize;
    let mut compared_values = 0usize;
    let mut failures = Vec::new();
    for model in MODELS {
        let evaluator = Pmml::from_path(dir.join(format!("{model}.pmml")))
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        let columns: Vec<usize> = evaluator
            .input_fields()
            .iter()
            .map(|f| {
                COLUMNS
                    .iter()
                    .position(|c| *c == f.name)
                    .unwrap_or_else(|| panic!("{model}: unexpected input {}", f.name))
            })
            .collect();
        let expected_text = std::fs::read_to_string(fixture(model))
            .unwrap_or_else(|e| panic!("{model}: fixture: {e}"));
        let expected: Vec<Json> = expected_text
            .lines()
            .map(|l| serde_json::from_str(l).expect("fixture line"))
            .collect();
        assert_eq!(expected.len(), rows.len(), "{model}: fixture row count");

        let mut args = Vec::with_capacity(columns.len());
        for (i, (row, exp)) in rows.iter().zip(&expected).enumerate() {
            // Each row twice: the CSV text as strings, then parsed to doubles (the fast path).
            for numeric in [false, true] {
                args.clear();
                args.extend(columns.iter().map(|c| match row[*c].trim().parse::<f64>() {
                    Ok(x) if numeric => Value::Double(x),
                    _ => Value::String(row[*c].to_string()),
                }));
                let kind = if numeric { "doubles" } else { "strings" };
                let out = evaluator.evaluate(&args);
                let exp = exp.as_object().expect("fixture object");
                match (out, exp.get("error")) {
                    (Err(_), Some(_)) => {}
                    (Err(e), None) => failures.push(format!("{model} row {i} ({kind}): error {e}")),
                    (Ok(o), Some(e)) => failures.push(format!(
                        "{model} row {i} ({kind}): got {o:?}, JPMML failed with {e}"
                    )),
                    (Ok(o), None) => {
                        let names: Vec<&String> = exp.keys().filter(|k| *k != "row").collect();
                        assert_eq!(
                            o.names().len(),
                            names.len(),
                            "{model}: result fields {:?} vs JPMML {:?}",
                            o.names(),
                            names
                        );
                        for name in names {
                            let ours = o
                                .get(name)
                                .unwrap_or_else(|| panic!("{model}: no result field {name:?}"));
                            compared_values += 1;
                            if let Err(msg) = common::compare(ours, &exp[name]) {
                                failures.push(format!(
                                    "{model} row {i} ({kind}) field {name:?}: {msg}"
                                ));
                            }
                        }
                    }
                }
            }
            compared_rows += 1;
        }
    }
    eprintln!(
        "wine: compared {compared_rows} rows, {compared_values} values over {} models",
        MODELS.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches, first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(compared_rows, 7 * 1599);
}

/// Rough single-thread throughput over the wine rows (not a benchmark harness; run with
/// `cargo test -p flowstage-pmml --release --test wine -- --ignored --nocapture`).
#[test]
#[ignore]
fn wine_throughput() {
    let Some(dir) = wine_dir() else {
        eprintln!("SKIPPED wine_throughput: ../shared/data/wine is absent");
        return;
    };
    let csv = std::fs::read_to_string(dir.join("winequality_red.csv")).expect("csv");
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(';')
                .map(|c| c.parse::<f64>().expect("number"))
                .collect()
        })
        .collect();
    let only = std::env::var("PMML_MODEL").ok();
    for model in MODELS {
        if only.as_deref().is_some_and(|o| !model.contains(o)) {
            continue;
        }
        let m = Pmml::from_path(dir.join(format!("{model}.pmml"))).expect("loads");
        let cols: Vec<usize> = m
            .input_fields()
            .iter()
            .map(|f| COLUMNS.iter().position(|c| *c == f.name).expect("column"))
            .collect();
        let inputs: Vec<Vec<Value>> = rows
            .iter()
            .map(|r| cols.iter().map(|c| Value::Double(r[*c])).collect())
            .collect();
        let mut n = 0usize;
        let start = std::time::Instant::now();
        while start.elapsed().as_secs_f64() < 1.0 {
            for args in &inputs {
                let out = m.evaluate(args).expect("evaluates");
                std::hint::black_box(&out);
                n += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!("{model}: {:.0} records/s", n as f64 / secs);
    }
}
