//! Agents given to the colony (`--agent ADDR`, `--agents-file FILE`) rather
//! than registered: the colony probes each with `GetCapabilities` every
//! heartbeat interval. A successful probe is a heartbeat (and, the first
//! time or after the agent restarted, a registration under the id the agent
//! reports); a failed one is recorded on the agent as its error, so
//! `coral agents` says why it is silent. An agent never reached yet is
//! listed as `static:ADDRESS` so that it is selected, and reported
//! unreachable, like any other.

use crate::colony::{AGENT_CALL_TIMEOUT, Colony, StaticAgent, describe, now_nanos};
use crate::store::AgentRow;
use coral_proto::colony::v1 as cpb;
use coral_proto::v1 as pb;
use prost::Message;
use std::collections::HashMap;

/// The id a static agent has until it answers.
pub fn placeholder_id(address: &str) -> String {
    format!("static:{address}")
}

pub async fn run(colony: Colony) {
    let mut stopping = colony.stopping();
    // Address -> the agent id it answered with last.
    let mut known: HashMap<String, String> = HashMap::new();
    loop {
        let probes = colony
            .config()
            .static_agents
            .iter()
            .map(|s| probe(&colony, s.clone(), known.get(&s.address).cloned()));
        for (address, id) in futures_util::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
        {
            known.insert(address, id);
        }
        tokio::select! {
            _ = tokio::time::sleep(colony.config().heartbeat) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// Probes one static agent; (address, agent id) when it answered.
async fn probe(colony: &Colony, s: StaticAgent, known: Option<String>) -> Option<(String, String)> {
    let store = colony.store();
    let node = if s.node.is_empty() {
        s.address.clone()
    } else {
        s.node.clone()
    };
    let answer = match colony.agent_client(&s.address) {
        Ok(mut client) => {
            let mut req = tonic::Request::new(pb::GetCapabilitiesRequest {});
            req.set_timeout(AGENT_CALL_TIMEOUT);
            client
                .get_capabilities(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| describe(&s))
        }
        Err(e) => Err(e.to_string()),
    };
    let now = now_nanos();
    match answer {
        Ok(caps) => {
            let id = caps.agent_id.clone();
            if known.as_deref() == Some(id.as_str()) {
                if let Err(err) = store.touch_agent(&id, now).await {
                    tracing::warn!(error = %err, "recording a static agent's probe");
                }
            } else {
                tracing::info!(address = %s.address, agent = %id, node, "static agent answered");
                let row = AgentRow {
                    agent_id: id.clone(),
                    node,
                    labels: s.labels.clone(),
                    address: s.address.clone(),
                    source: cpb::AgentSource::Static as i32,
                    registered_unix_nano: now,
                    last_seen_unix_nano: now,
                    capabilities: caps.encode_to_vec(),
                    replaced_by: String::new(),
                    error: String::new(),
                };
                if let Err(err) = colony.register(row).await {
                    tracing::warn!(error = %err, "recording a static agent");
                }
            }
            Some((s.address, id))
        }
        Err(error) => {
            let id = known.unwrap_or_else(|| placeholder_id(&s.address));
            match store.agent(&id).await {
                Ok(Some(_)) => {
                    let _ = store.set_agent_error(&id, &error).await;
                }
                Ok(None) => {
                    let row = AgentRow {
                        agent_id: id.clone(),
                        node,
                        labels: s.labels.clone(),
                        address: s.address.clone(),
                        source: cpb::AgentSource::Static as i32,
                        registered_unix_nano: now,
                        // Never seen: silent from the start.
                        last_seen_unix_nano: now,
                        capabilities: Vec::new(),
                        replaced_by: String::new(),
                        error,
                    };
                    let _ = store.upsert_agent(&row).await;
                }
                Err(err) => tracing::warn!(error = %err, "recording a static agent's failure"),
            }
            None
        }
    }
}
