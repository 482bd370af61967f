//! Generated types for the Coral agent API, package `coral.agent.v1`, and
//! the colony API, package `coral.colony.v1`.
//!
//! The agent serves [`v1::ebpf_service_server::EbpfService`]; the CLI, the
//! colony and any control plane use
//! [`v1::ebpf_service_client::EbpfServiceClient`]. The colony serves
//! [`colony::v1::colony_service_server::ColonyService`]. Every message also
//! implements serde (proto3 JSON mapping) for `-o json`.
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

/// The generated colony code names agent types by their package path
/// (`coral.agent.v1` seen from `coral.colony.v1`); this is that path.
#[doc(hidden)]
pub mod agent {
    pub use crate::v1;
}

pub mod colony {
    //! `coral.colony.v1`: agents, fleet taps, stored results.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("coral.colony.v1");
        include!(concat!(env!("OUT_DIR"), "/coral.colony.v1.serde.rs"));
    }

    /// Encoded `FileDescriptorSet` of the colony API (with agent.proto, which
    /// it imports), for the colony's reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/colony_descriptor.bin"));

    /// Default colony socket, shared by colony and CLI.
    pub const DEFAULT_SOCKET: &str = "/run/coral/colony.sock";
}

/// Encoded `FileDescriptorSet` of the agent API, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/coral_descriptor.bin"));

/// Default agent socket, shared by agent and CLI.
pub const DEFAULT_SOCKET: &str = "/run/coral/agent.sock";
