//! Replays the inputs kept in `tests/fixtures/fuzz/<target>/` — crash cases of the cargo-fuzz
//! targets in `fuzz/` and hand-made inputs the fuzzers cannot reach by mutation — through the
//! very code the targets run (`fuzz/fuzz_targets/common.rs`): loading must return an error or
//! a model, never panic. The long fuzzing runs are `scripts/fuzz.sh` (README, "Fuzzing").

#[path = "../../fuzz/fuzz_targets/common.rs"]
mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use flowstage_model::savedmodel::SavedModelFactory;
use flowstage_model::{LoadOptions, ModelFactory, ModelSource};

fn fixtures(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target)
}

/// Runs every kept input of `target`, reports each one that panics, and returns how many ran.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = fixtures(target);
    let Ok(listing) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut paths: Vec<PathBuf> = listing.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    let mut panicked = Vec::new();
    for path in &paths {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| run(&bytes))).is_err() {
            panicked.push(path.display().to_string());
        }
    }
    assert!(
        panicked.is_empty(),
        "{target}: these inputs panic: {panicked:?}"
    );
    paths.len()
}

#[test]
fn savedmodel_inputs_are_errors_not_panics() {
    let n = replay("savedmodel", common::savedmodel);
    assert!(
        n > 0,
        "no input kept in {}",
        fixtures("savedmodel").display()
    );
}

#[test]
fn tensor_model_inputs_are_errors_not_panics() {
    replay("tensor_models", common::tensor_models);
}

#[test]
fn wire_inputs_are_errors_not_panics() {
    replay("wire", common::wire);
}

/// A 10 KB `variables.index` whose index block points 500 times at one data block of 1,000
/// entries repeating a 3,000-byte key decoded into ~1.5 GB of entries before the table reader
/// bounded what it materialises; now it is refused at once.
#[test]
fn amplifying_tensor_bundle_index_is_refused() {
    let path = fixtures("savedmodel").join("sstable-amplification");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.len() < 16 * 1024, "the input is small");
    let err = SavedModelFactory
        .create(ModelSource::Bytes(&bytes), &LoadOptions::default())
        .expect_err("an amplifying index must not load");
    let msg = err.to_string();
    assert!(
        msg.contains("variables.index") && msg.contains("larger than the table allows"),
        "unexpected error: {msg}"
    );
}
