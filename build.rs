//! Generates the gRPC service and messages from `proto/grpc_service.proto`,
//! and compiles `proto/model_config.proto` (Triton's model configuration
//! schema) into a descriptor set that `src/model/pbtxt.rs` embeds to read
//! config.pbtxt files. `protoc` comes from the protoc-bin-vendored crate, so a
//! fresh clone builds without a system protoc.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    // Raw tensor bytes decode into `Bytes`, which slices the request buffer
    // instead of copying it.
    config.bytes([".inference.ModelInferRequest.raw_input_contents"]);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/grpc_service.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/grpc_service.proto");

    // A descriptor set only, with no Rust types: grpc_service.proto declares
    // a subset of the same `inference` messages, and generating both into
    // one module would clash.
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("model_config.bin");
    let status = Command::new(&protoc)
        .arg("--proto_path=proto")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("model_config.proto")
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed on proto/model_config.proto: {status}").into());
    }
    println!("cargo:rerun-if-changed=proto/model_config.proto");
    Ok(())
}
