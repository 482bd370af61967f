//! coral-colony: many agents, fleet taps, and durable, queryable results.
//!
//! * [`colony`]: agents (registered with `coral-agent --colony`, or given
//!   statically), fleet taps (one collector per selected agent) and their
//!   members;
//! * [`pull`]: each member's records pulled with the agent's seq cursor,
//!   resumable, stored once; [`ingest`] batches them into the store;
//! * [`store`]: the [`store::Store`] trait, SQLite (embedded) and
//!   PostgreSQL (shared by replicas) behind one schema and one query code;
//! * [`retention`]: per-kind retention of stored records;
//! * [`server`]: the gRPC edge (`coral.colony.v1`), on the agent's listener
//!   and authentication; [`error`] maps errors to status codes, once.
#![forbid(unsafe_code)]

pub mod colony;
pub mod error;
pub mod ingest;
pub mod pull;
pub mod retention;
pub mod server;
pub mod statics;
pub mod store;

pub use colony::{Colony, Config};
