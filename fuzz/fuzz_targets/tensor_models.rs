//! TensorFlow frozen graphs and ONNX models from bytes; see `common::tensor_models`.

#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::tensor_models(data));
