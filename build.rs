//! Generates the gRPC service and messages from `proto/grpc_service.proto`,
//! with Triton's model configuration schema (`proto/model_config.proto`) that
//! it imports, and writes their descriptor set, which `src/model/pbtxt.rs`
//! embeds to read config.pbtxt files, and the messages of ONNX model files
//! that hold their weights (`proto/onnx_weights.proto`). `protoc` comes from the
//! protoc-bin-vendored crate, so a fresh clone builds without a system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    // Raw tensor bytes decode into `Bytes`, which slices the request buffer
    // instead of copying it.
    config.bytes([".inference.ModelInferRequest.raw_input_contents"]);
    config.file_descriptor_set_path(
        PathBuf::from(std::env::var("OUT_DIR")?).join("inference_descriptors.bin"),
    );
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/grpc_service.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/grpc_service.proto");
    println!("cargo:rerun-if-changed=proto/model_config.proto");

    // The initializers of ONNX model files, which instances of one model share.
    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    config.bytes([".onnx.TensorProto.raw_data"]);
    config.compile_protos(&["proto/onnx_weights.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/onnx_weights.proto");
    Ok(())
}
