//! Where the tools' calls go. Today one agent, through the CLI's own client
//! (`--agent`, `--token`, the TLS flags). The colony (one API in front of
//! a fleet of agents) is the second variant to come: each method matches
//! on the backend without a `_` arm, so adding `Colony` lists every call it
//! must answer, and the tools above stay as they are.

use crate::client::{CliError, Client};
use coral_proto::v1::{self as pb};

/// The API the MCP tools need, from one backend.
#[derive(Clone)]
pub enum Backend {
    /// One node's coral-agent.
    Agent { client: Client, addr: String },
}

impl Backend {
    pub fn agent(client: Client, addr: &str) -> Self {
        Backend::Agent {
            client,
            addr: addr.to_string(),
        }
    }

    /// For the start-up line: what this server speaks to.
    pub fn describe(&self) -> String {
        match self {
            Backend::Agent { addr, .. } => format!("agent {addr}"),
        }
    }

    /// A failed call as the CLI reports it, naming the address: the
    /// CLI's conversion of a status cannot know it.
    fn error(&self, status: tonic::Status) -> CliError {
        match (self, CliError::from(status)) {
            (Backend::Agent { addr, .. }, CliError::Unreachable { reason, .. }) => {
                CliError::Unreachable {
                    addr: addr.clone(),
                    reason,
                }
            }
            (Backend::Agent { .. }, other) => other,
        }
    }

    pub async fn capabilities(&self) -> Result<pb::Capabilities, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(client
                .clone()
                .get_capabilities(pb::GetCapabilitiesRequest {})
                .await
                .map_err(|s| self.error(s))?
                .into_inner()),
        }
    }

    pub async fn start(
        &self,
        spec: pb::CollectorSpec,
    ) -> Result<pb::StartCollectorResponse, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(client
                .clone()
                .start_collector(pb::StartCollectorRequest { spec: Some(spec) })
                .await
                .map_err(|s| self.error(s))?
                .into_inner()),
        }
    }

    pub async fn stop(&self, id: &str) -> Result<pb::CollectorInfo, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(client
                .clone()
                .stop_collector(pb::StopCollectorRequest { id: id.into() })
                .await
                .map_err(|s| self.error(s))?
                .into_inner()),
        }
    }

    pub async fn get(&self, id: &str) -> Result<pb::CollectorInfo, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(client
                .clone()
                .get_collector(pb::GetCollectorRequest { id: id.into() })
                .await
                .map_err(|s| self.error(s))?
                .into_inner()),
        }
    }

    pub async fn list(&self) -> Result<Vec<pb::CollectorInfo>, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(client
                .clone()
                .list_collectors(pb::ListCollectorsRequest {})
                .await
                .map_err(|s| self.error(s))?
                .into_inner()
                .collectors),
        }
    }

    pub async fn events(
        &self,
        id: &str,
        after_seq: u64,
        max: u32,
    ) -> Result<pb::GetEventsResponse, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(client
                .clone()
                .get_events(pb::GetEventsRequest {
                    id: id.into(),
                    after_seq,
                    max,
                })
                .await
                .map_err(|s| self.error(s))?
                .into_inner()),
        }
    }
}
