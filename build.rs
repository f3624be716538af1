//! Generates the gRPC service and messages from `proto/grpc_service.proto`.
//! `protoc` comes from the protoc-bin-vendored crate, so a fresh clone builds
//! without a system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Raw tensor bytes decode into `Bytes`, which slices the request buffer
    // instead of copying it.
    config.bytes([".inference.ModelInferRequest.raw_input_contents"]);
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/grpc_service.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/grpc_service.proto");
    Ok(())
}
