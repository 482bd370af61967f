//! Generated types for the Coral agent API, package `coral.agent.v1`.
//!
//! The agent serves [`v1::ebpf_service_server::EbpfService`]; the CLI and any
//! control plane use [`v1::ebpf_service_client::EbpfServiceClient`]. Every
//! message also implements serde (proto3 JSON mapping) for `-o json`.
#![forbid(unsafe_code)]

mod errors;
mod kinds;
pub mod text;

pub use errors::error_chain;

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("coral.agent.v1");
    include!(concat!(env!("OUT_DIR"), "/coral.agent.v1.serde.rs"));
}

/// Encoded `FileDescriptorSet` of the API, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/coral_descriptor.bin"));

/// Default agent socket, shared by agent and CLI.
pub const DEFAULT_SOCKET: &str = "/run/coral/agent.sock";
