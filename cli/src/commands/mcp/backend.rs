//! Where the tools' calls go: one agent (`--agent`), or a colony
//! (`--colony`), through the CLI's own clients and credentials. Each method
//! matches on the backend without a `_` arm, so a third backend lists every
//! call it must answer.
//!
//! The tools see one shape for both: a [`TapInfo`]. An agent's tap is one
//! collector; a colony's is a fleet tap, one collector per member agent,
//! whose records the colony stores. A fleet tap is shown as a collector
//! (its id, spec, state, deadline) with its members beside it.

use crate::client::{CliError, Client, ColonyClient};
pub use crate::commands::fleet::member_status;
use coral_proto::colony::v1::{self as cpb};
use coral_proto::v1::{self as pb};

/// The API the MCP tools need, from one backend.
#[derive(Clone)]
pub enum Backend {
    /// One node's coral-agent.
    Agent { client: Client, addr: String },
    /// A coral-colony: every alive agent it knows, by node.
    Colony { client: ColonyClient, addr: String },
}

/// A tap: one collector, or a fleet tap with its members.
#[derive(Clone, Debug)]
pub struct TapInfo {
    /// The collector, or the fleet tap as one: its id, spec, deadline and
    /// state (running while a member collects; then the members' common
    /// end state, or expired).
    pub info: pb::CollectorInfo,
    /// A fleet tap's members; `None` for an agent's collector.
    pub members: Option<Vec<cpb::Member>>,
}

/// One node's capabilities.
#[derive(Clone, Debug)]
pub struct NodeCaps {
    /// The node's name, on a colony.
    pub node: Option<String>,
    pub caps: pb::Capabilities,
}

/// Records of one member read at most, to find its latest aggregate.
pub const MEMBER_RECORDS_MAX: usize = 65_536;

impl Backend {
    pub fn agent(client: Client, addr: &str) -> Self {
        Backend::Agent {
            client,
            addr: addr.to_string(),
        }
    }

    pub fn colony(client: ColonyClient, addr: &str) -> Self {
        Backend::Colony {
            client,
            addr: addr.to_string(),
        }
    }

    pub fn is_colony(&self) -> bool {
        match self {
            Backend::Agent { .. } => false,
            Backend::Colony { .. } => true,
        }
    }

    /// For the start-up line: what this server speaks to.
    pub fn describe(&self) -> String {
        match self {
            Backend::Agent { addr, .. } => format!("agent {addr}"),
            Backend::Colony { addr, .. } => format!("colony {addr}"),
        }
    }

    /// A failed call as the CLI reports it, naming the address: the
    /// CLI's conversion of a status cannot know it.
    fn error(&self, status: tonic::Status) -> CliError {
        let addr = match self {
            Backend::Agent { addr, .. } | Backend::Colony { addr, .. } => addr,
        };
        match CliError::from(status) {
            CliError::Unreachable { reason, .. } => CliError::Unreachable {
                addr: addr.clone(),
                reason,
            },
            other => other,
        }
    }

    /// Every node's capabilities: the agent's, or those of each alive
    /// agent of the colony, by node name.
    pub async fn capabilities(&self) -> Result<Vec<NodeCaps>, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(vec![NodeCaps {
                node: None,
                caps: client
                    .clone()
                    .get_capabilities(pb::GetCapabilitiesRequest {})
                    .await
                    .map_err(|s| self.error(s))?
                    .into_inner(),
            }]),
            Backend::Colony { client, .. } => {
                let mut agents = client
                    .clone()
                    .list_agents(cpb::ListAgentsRequest {})
                    .await
                    .map_err(|s| self.error(s))?
                    .into_inner()
                    .agents;
                agents.retain(|a| a.status == cpb::AgentStatus::Alive as i32);
                agents.sort_by(|a, b| (&a.node, &a.agent_id).cmp(&(&b.node, &b.agent_id)));
                Ok(agents
                    .into_iter()
                    .map(|a| NodeCaps {
                        node: Some(a.node),
                        caps: a.capabilities.unwrap_or_default(),
                    })
                    .collect())
            }
        }
    }

    /// Starts `spec`: on the agent, or on the colony's agents of `nodes`
    /// (every alive one when empty). A fleet tap none of whose members
    /// collects is refused with the members' reasons.
    pub async fn start(
        &self,
        spec: pb::CollectorSpec,
        nodes: &[String],
    ) -> Result<(TapInfo, Vec<String>), CliError> {
        match self {
            Backend::Agent { client, .. } => {
                if !nodes.is_empty() {
                    return Err(CliError::Usage(
                        "nodes choose agents of a colony; this MCP server speaks to one agent (coral mcp --colony URL for a fleet)".into(),
                    ));
                }
                let response = client
                    .clone()
                    .start_collector(pb::StartCollectorRequest { spec: Some(spec) })
                    .await
                    .map_err(|s| self.error(s))?
                    .into_inner();
                let info = response.collector.ok_or_else(|| {
                    CliError::NotAgent("the agent answered without a collector".into())
                })?;
                Ok((
                    TapInfo {
                        info,
                        members: None,
                    },
                    response.warnings,
                ))
            }
            Backend::Colony { client, .. } => {
                let selector = cpb::Selector {
                    all: nodes.is_empty(),
                    nodes: nodes.to_vec(),
                    ..Default::default()
                };
                let tap = client
                    .clone()
                    .start_fleet_tap(cpb::StartFleetTapRequest {
                        spec: Some(spec),
                        selector: Some(selector),
                    })
                    .await
                    .map_err(|s| self.error(s))?
                    .into_inner();
                let collecting = |m: &cpb::Member| !m.collector_id.is_empty();
                if !tap.members.iter().any(collecting) {
                    return Err(no_member_started(&tap, nodes));
                }
                let warnings = tap
                    .members
                    .iter()
                    .filter(|m| !collecting(m))
                    .map(member_line)
                    .collect();
                Ok((fleet(tap), warnings))
            }
        }
    }

    pub async fn stop(&self, id: &str) -> Result<TapInfo, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(one(client
                .clone()
                .stop_collector(pb::StopCollectorRequest { id: id.into() })
                .await
                .map_err(|s| self.error(s))?
                .into_inner())),
            Backend::Colony { client, .. } => Ok(fleet(
                client
                    .clone()
                    .stop_fleet_tap(cpb::StopFleetTapRequest { id: id.into() })
                    .await
                    .map_err(|s| self.error(s))?
                    .into_inner(),
            )),
        }
    }

    pub async fn get(&self, id: &str) -> Result<TapInfo, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(one(client
                .clone()
                .get_collector(pb::GetCollectorRequest { id: id.into() })
                .await
                .map_err(|s| self.error(s))?
                .into_inner())),
            Backend::Colony { client, .. } => Ok(fleet(
                client
                    .clone()
                    .get_fleet_tap(cpb::GetFleetTapRequest { id: id.into() })
                    .await
                    .map_err(|s| self.error(s))?
                    .into_inner(),
            )),
        }
    }

    /// Every tap, oldest first.
    pub async fn list(&self) -> Result<Vec<TapInfo>, CliError> {
        match self {
            Backend::Agent { client, .. } => Ok(client
                .clone()
                .list_collectors(pb::ListCollectorsRequest {})
                .await
                .map_err(|s| self.error(s))?
                .into_inner()
                .collectors
                .into_iter()
                .map(one)
                .collect()),
            Backend::Colony { client, .. } => {
                let mut taps = client
                    .clone()
                    .list_fleet_taps(cpb::ListFleetTapsRequest {})
                    .await
                    .map_err(|s| self.error(s))?
                    .into_inner()
                    .taps;
                taps.sort_by_key(|t| t.created_unix_nano);
                Ok(taps.into_iter().map(fleet).collect())
            }
        }
    }

    /// A page of an agent's collector's records after `after_seq`. A
    /// colony has no such call: its records are read per member
    /// ([`Backend::member_records`]).
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
            Backend::Colony { .. } => Err(CliError::Usage(
                "a colony's records are read per member".into(),
            )),
        }
    }

    /// The newest stored records (at most [`MEMBER_RECORDS_MAX`], oldest
    /// first) of one member of a fleet tap; only its final record when
    /// `final_only`. An agent has no members.
    pub async fn member_records(
        &self,
        fleet_tap_id: &str,
        agent_id: &str,
        final_only: bool,
    ) -> Result<Vec<pb::Record>, CliError> {
        match self {
            Backend::Agent { .. } => Err(CliError::Usage(
                "an agent's collector has no members".into(),
            )),
            Backend::Colony { client, .. } => {
                let mut query = cpb::QueryRecordsRequest {
                    fleet_tap_id: fleet_tap_id.into(),
                    agent_ids: vec![agent_id.into()],
                    final_only,
                    max: 1000,
                    ..Default::default()
                };
                let mut records = std::collections::VecDeque::new();
                loop {
                    let page = client
                        .clone()
                        .query_records(query.clone())
                        .await
                        .map_err(|s| self.error(s))?
                        .into_inner();
                    for r in page.records.into_iter().filter_map(|s| s.record) {
                        if records.len() == MEMBER_RECORDS_MAX {
                            records.pop_front();
                        }
                        records.push_back(r);
                    }
                    if page.next_cursor.is_empty() {
                        return Ok(records.into());
                    }
                    query.cursor = page.next_cursor;
                }
            }
        }
    }
}

fn one(info: pb::CollectorInfo) -> TapInfo {
    TapInfo {
        info,
        members: None,
    }
}

/// `node N: refused: <the agent's reason>`.
fn member_line(m: &cpb::Member) -> String {
    format!("node {}: {}: {}", m.node, member_status(m.status), m.error)
}

/// A fleet tap as one collector: running while the colony says so; ended,
/// the end state its started members share (all stopped: stopped), else
/// expired, or failed when none ended well.
fn fleet(tap: cpb::FleetTap) -> TapInfo {
    use pb::CollectorState as S;
    let started: Vec<&cpb::Member> = tap
        .members
        .iter()
        .filter(|m| !m.collector_id.is_empty())
        .collect();
    let state = if tap.state == cpb::FleetTapState::Running as i32 {
        S::Running
    } else if !started.is_empty()
        && started
            .iter()
            .all(|m| m.collector_state == S::Stopped as i32)
    {
        S::Stopped
    } else if started
        .iter()
        .any(|m| m.collector_state == S::Expired as i32 || m.collector_state == S::Stopped as i32)
    {
        S::Expired
    } else {
        S::Failed
    };
    let error = if state == S::Failed {
        tap.members
            .iter()
            .map(member_line)
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        String::new()
    };
    TapInfo {
        info: pb::CollectorInfo {
            id: tap.id,
            spec: tap.spec,
            state: state as i32,
            started_unix_nano: tap.created_unix_nano,
            deadline_unix_nano: tap.deadline_unix_nano,
            last_seq: tap.members.iter().map(|m| m.stored_records).sum(),
            dropped_records: tap.members.iter().map(|m| m.lost_records).sum(),
            error,
            ..Default::default()
        },
        members: Some(tap.members),
    }
}

/// Why no member of a new fleet tap collects: the agents' own refusals
/// (a duration over their max_duration, say), each named by node.
fn no_member_started(tap: &cpb::FleetTap, nodes: &[String]) -> CliError {
    if tap.members.is_empty() {
        return CliError::Usage(if nodes.is_empty() {
            "the colony has no alive agent to run the tap on".to_string()
        } else {
            format!(
                "no alive agent of the colony is on nodes {}",
                nodes.join(", ")
            )
        });
    }
    let why: Vec<String> = tap.members.iter().map(member_line).collect();
    CliError::Usage(format!(
        "no agent of the colony started the tap: {}",
        why.join("; ")
    ))
}
