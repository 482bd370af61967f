//! Compiles `proto/coral/agent/v1/agent.proto` and
//! `proto/coral/colony/v1/colony.proto` with protox (pure Rust, no system
//! `protoc`), then generates prost types, tonic clients/servers and pbjson
//! serde impls (canonical proto3 JSON, used by `coral -o json`).
//!
//! Each server's reflection gets its own descriptor set, so an agent lists
//! only the agent's service and a colony only the colony's (its set also
//! holds agent.proto, which it imports).

use anyhow::Context;
use prost::Message;
use std::path::PathBuf;

const AGENT: &str = "proto/coral/agent/v1/agent.proto";
const COLONY: &str = "proto/coral/colony/v1/colony.proto";

fn main() -> anyhow::Result<()> {
    for f in [AGENT, COLONY] {
        println!("cargo:rerun-if-changed={f}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let agent = protox::compile([AGENT], ["proto"]).context("compiling agent.proto")?;
    std::fs::write(out.join("coral_descriptor.bin"), agent.encode_to_vec())?;
    // With its import: agent.proto and colony.proto, generated together once.
    let colony = protox::compile([COLONY], ["proto"]).context("compiling colony.proto")?;
    let colony_path = out.join("colony_descriptor.bin");
    // The colony's reflection describes the agent's messages it uses, not
    // the agent's service, which it does not serve.
    let mut reflected = colony.clone();
    for file in &mut reflected.file {
        if file.name.as_deref() != Some("coral/colony/v1/colony.proto") {
            file.service.clear();
        }
    }
    std::fs::write(&colony_path, reflected.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(colony.clone())
        .context("generating tonic code")?;

    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&colony_path)?)?
        .build(&[".coral"])
        .context("generating serde impls")?;
    Ok(())
}
