//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use flowstage_model::{Record, Value};

/// `../shared/data/wine` seen from the repository root (override with FLOWSTAGE_SHARED, the
/// `shared` directory), or `None` with a message when it is absent.
pub fn wine_dir() -> Option<PathBuf> {
    let shared = std::env::var_os("FLOWSTAGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let wine = shared.join("data/wine");
    if wine.join("winequality_red.csv").is_file() {
        Some(wine)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (the tutorial's wine data and models live in ../shared)",
            wine.display()
        );
        None
    }
}

/// The fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The wine rows' eleven measurements.
pub fn wine_rows(wine: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(wine.join("winequality_red.csv")).expect("read wine csv");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(';')
                .take(11)
                .map(|v| v.trim().parse::<f64>().expect("number"))
                .collect()
        })
        .collect()
}

/// A record of the row's values named c0, c1, ...
pub fn record(row: &[f64]) -> Record {
    row.iter()
        .enumerate()
        .map(|(i, v)| (format!("c{i}"), Value::Number(*v)))
        .collect()
}

/// A numeric CSV with a header line.
pub fn read_csv(path: &Path) -> Vec<Vec<f64>> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split(',')
                .map(|v| v.trim().parse::<f64>().expect("number"))
                .collect()
        })
        .collect()
}
