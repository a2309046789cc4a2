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
    // The agent's attributes are kept on its Hardware as JSON, with the field
    // names Tinkerbell's server writes there (its `data.AgentAttributes`).
    let mut config = tonic_prost_build::configure();
    for message in [
        "AgentAttributes",
        "CPU",
        "Processor",
        "Memory",
        "Block",
        "Network",
        "PCI",
        "GPU",
        "Chassis",
        "BIOS",
        "Baseboard",
        "Product",
    ] {
        config = config.type_attribute(
            format!(".proto.{message}"),
            "#[derive(serde::Serialize)] #[serde(rename_all = \"camelCase\")]",
        );
    }
    for (field, name) in [
        ("block", "blockDevices"),
        ("network", "networkInterfaces"),
        ("pci", "pciDevices"),
        ("gpu", "gpuDevices"),
    ] {
        config = config.field_attribute(
            format!(".proto.AgentAttributes.{field}"),
            format!("#[serde(rename = \"{name}\")]"),
        );
    }
    config
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
