//! coral-agent: an on-demand eBPF collector manager behind a gRPC API.
//!
//! * [`capabilities`] probes what the kernel and the process allow.
//! * [`manager`] owns the registry, the limits and each collector's lifecycle
//!   (`Starting -> Running -> Expired | Stopped | Failed`), its deadline and
//!   its bounded event log.
//! * [`kinds`] declares every collector kind once; [`collectors`] holds one
//!   module per kind, each owning its BPF object (with the `bpf` feature).
//! * [`containers`] reads container and pod ids out of cgroup paths.
//! * [`server`] is the gRPC edge: conversions and the service.
//! * [`dial`] connects to another Coral server (the colony, or an agent from
//!   the colony); [`colony`] is the agent's side of joining a colony.
//! * [`error`] is the one place errors become gRPC status codes.
//! * [`export`] serves the agent's health and exported collectors' results
//!   as Prometheus `/metrics` and pushes them over OTLP.

pub mod capabilities;
pub mod cgroup;
pub mod collectors;
pub mod colony;
pub mod config;
pub mod containers;
pub mod dial;
pub mod domain;
pub mod error;
pub mod export;
pub mod kinds;
pub mod manager;
pub mod memory;
pub mod server;
pub mod test_hooks;
#[cfg(test)]
mod testing;
pub mod tracepoints;

pub use config::Limits;
pub use manager::Manager;
