//! Compiles the workspace's .proto files with protox (a pure-Rust protobuf compiler, so no system
//! `protoc` is needed) and generates Rust types with prost-build.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("..").join("proto");
    let files = [
        "flowstage.proto",
        "tensorflow/graph.proto",
        "tensorflow/saved_model.proto",
        "tensorflow/tensor_bundle.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(f).display());
    }
    let fds = protox::compile(files, [&proto_root])?;
    let mut config = prost_build::Config::new();
    config.compile_fds(fds)?;
    Ok(())
}
