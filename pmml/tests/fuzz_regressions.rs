//! Replays the inputs kept in `tests/fixtures/fuzz/pmml/` — crash cases of the `pmml` cargo-fuzz
//! target in `fuzz/` — through the very code the target runs (`fuzz/fuzz_targets/pmml_input.rs`:
//! load, then evaluate records built from the input fields): each must be an error or a
//! result, never a panic. The long fuzzing runs are `scripts/fuzz.sh` (README, "Fuzzing").

#[path = "../../fuzz/fuzz_targets/pmml_input.rs"]
mod pmml_input;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz/pmml")
}

#[test]
fn kept_fuzz_inputs_are_errors_not_panics() {
    let dir = fixtures();
    let listing = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = listing.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    assert!(!paths.is_empty(), "no input kept in {}", dir.display());
    let mut panicked = Vec::new();
    for path in &paths {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| pmml_input::run(&bytes))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(panicked.is_empty(), "these inputs panic: {panicked:?}");
}
