//! A pure-Rust PMML evaluator (work in progress).
