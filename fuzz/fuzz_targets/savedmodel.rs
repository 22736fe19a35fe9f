//! The SavedModel / TensorBundle reader (flowstage_model::savedmodel); see `common::savedmodel`.

#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::savedmodel(data));
