//! The PMML parser and compiler (flowstage-pmml): a document from bytes; when it loads, a few
//! records built from its input fields are evaluated.

#![no_main]

#[path = "pmml_input.rs"]
mod pmml_input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| pmml_input::run(data));
