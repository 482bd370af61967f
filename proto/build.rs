//! Compiles `proto/coral/agent/v1/*.proto` with protox (pure Rust, no system
//! `protoc`), then generates prost types, tonic client/server and pbjson serde
//! impls (canonical proto3 JSON, used by `coral -o json`).

use anyhow::Context;
use prost::Message;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let files = ["proto/coral/agent/v1/agent.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"]).context("compiling protos")?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("coral_descriptor.bin");
    std::fs::write(&descriptor_path, fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds.clone())
        .context("generating tonic code")?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .build(&[".coral"])
        .context("generating serde impls")?;
    Ok(())
}
