//! Compiles the proto3 transcription of Tinkerbell's protos in `proto/` with
//! `protox` (a protobuf compiler in Rust, so no `protoc` binary is needed) and
//! generates the message types and the tonic service from it. The encoded
//! descriptor set is written beside them for server reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["workflow_service.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tinkerbell_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
