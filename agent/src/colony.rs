//! Joining a colony (`coral-agent --colony URL`): register once, then
//! heartbeat, for as long as the agent runs.
//!
//! The agent only announces itself: the colony dials back the advertised
//! address to start collectors and pull their records, with the agent's own
//! authentication (tokens, mutual TLS), as any client. Registration carries
//! the agent id, node name, labels, address and capabilities. A colony that
//! is down is retried with a growing pause (at most [`MAX_BACKOFF`]); a
//! colony that answers a heartbeat with NOT_FOUND (it lost the agent, e.g.
//! a fresh store) gets a new registration. Nothing here can stop the agent
//! serving its own API.

use crate::dial::{self, Credentials};
use crate::manager::Manager;
use crate::server::connections::ConnectionLimits;
use crate::server::convert;
use coral_proto::colony::v1 as cpb;
use coral_proto::colony::v1::colony_service_client::ColonyServiceClient;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

/// Longest pause between two attempts to reach the colony.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Heartbeats never come more often than this, whatever the colony asks.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(200);
/// Deadline of one call to the colony.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the colony is and what to tell it.
#[derive(Clone, Debug)]
pub struct Join {
    /// The colony's address (the same forms as the CLI's `--colony`).
    pub colony: String,
    pub credentials: Credentials,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// Where the colony reaches this agent.
    pub address: String,
}

/// The host name, for `--node-name`'s default.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Registers and heartbeats until `stopping` turns true.
pub async fn run(
    join: Join,
    manager: Manager,
    connections: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let channel = match dial::lazy(&join.colony, &join.credentials) {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(colony = %join.colony, error = %err, "cannot join the colony");
            return;
        }
    };
    let mut client = ColonyServiceClient::new(channel);
    let mut backoff = Duration::from_millis(500);
    let mut registered: Option<Duration> = None;
    let mut failing = false;
    loop {
        let pause = match registered {
            None => {
                let caps = convert::capabilities(
                    manager.agent_id(),
                    manager.capabilities(),
                    manager.limits(),
                    &connections,
                    manager.kinds(),
                    manager.retained_bytes(),
                );
                let mut req = tonic::Request::new(cpb::RegisterRequest {
                    agent_id: manager.agent_id().to_string(),
                    node: join.node.clone(),
                    labels: join.labels.clone().into_iter().collect(),
                    address: join.address.clone(),
                    capabilities: Some(caps),
                });
                req.set_timeout(CALL_TIMEOUT);
                match client.register(req).await {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        let every =
                            Duration::from_nanos(resp.heartbeat_interval_ns).max(MIN_HEARTBEAT);
                        tracing::info!(colony = %join.colony, colony_id = %resp.colony_id,
                            node = %join.node, address = %join.address, "registered with the colony");
                        registered = Some(every);
                        failing = false;
                        backoff = Duration::from_millis(500);
                        every
                    }
                    Err(status) => {
                        if !failing {
                            tracing::warn!(colony = %join.colony, code = ?status.code(),
                                error = %status.message(), "cannot register with the colony; retrying");
                            failing = true;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        backoff
                    }
                }
            }
            Some(every) => {
                let mut req = tonic::Request::new(cpb::HeartbeatRequest {
                    agent_id: manager.agent_id().to_string(),
                });
                req.set_timeout(CALL_TIMEOUT);
                match client.heartbeat(req).await {
                    Ok(_) => {
                        if failing {
                            tracing::info!(colony = %join.colony, "colony reachable again");
                            failing = false;
                        }
                        every
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        tracing::info!(colony = %join.colony, "the colony does not know this agent: registering again");
                        registered = None;
                        Duration::ZERO
                    }
                    Err(status) => {
                        if !failing {
                            tracing::warn!(colony = %join.colony, code = ?status.code(),
                                error = %status.message(), "heartbeat failed; retrying");
                            failing = true;
                        }
                        every
                    }
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}
