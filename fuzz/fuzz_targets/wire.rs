//! WineRecord / ModelDescriptor decoding and descriptor loading; see `common::wire`.

#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::wire(data));
