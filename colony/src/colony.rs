//! The colony's state and what it does with it: agents (registered or
//! static), fleet taps and their members, the pulls, retention.
//!
//! Everything that must survive a restart, or be shared by replicas, is in
//! the [`Store`]; in memory are only the channels to agents, the pull tasks
//! of this process and the ingest queue.

use crate::error::Error;
use crate::ingest::Ingest;
use crate::pull;
use crate::store::{AgentRow, LossRow, MemberRow, RecordQuery, Store, TapRow};
use coral_agent::dial::{self, Authorized, Credentials};
use coral_proto::colony::v1 as cpb;
use coral_proto::v1 as pb;
use coral_proto::v1::ebpf_service_client::EbpfServiceClient;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Label every member collector carries: the fleet tap it belongs to.
pub const TAP_LABEL: &str = "coral.fleet-tap";
/// Deadline of one call to an agent that is not a stream.
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How the colony runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// How often agents heartbeat (told to them at registration) and static
    /// agents are probed.
    pub heartbeat: Duration,
    /// An agent not heard from for this long is silent; its collecting
    /// members are lost.
    pub agent_timeout: Duration,
    /// Silent agents are left out of `--nodes all` after this long.
    pub forget_after: Duration,
    /// What the colony presents to agents (their tokens, mutual TLS).
    pub agent_credentials: Credentials,
    /// Static agents: addresses with an optional node name and labels.
    pub static_agents: Vec<StaticAgent>,
    /// How long stored records are kept, per kind name, and for the rest.
    pub retention: BTreeMap<String, Duration>,
    pub default_retention: Duration,
    /// How often retention runs.
    pub retention_every: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            agent_timeout: Duration::from_secs(30),
            forget_after: Duration::from_secs(24 * 3600),
            agent_credentials: Credentials::default(),
            static_agents: Vec::new(),
            retention: BTreeMap::new(),
            default_retention: Duration::from_secs(7 * 24 * 3600),
            retention_every: Duration::from_secs(60),
        }
    }
}

/// An agent given to the colony rather than registered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticAgent {
    pub address: String,
    /// Empty: the address.
    pub node: String,
    pub labels: BTreeMap<String, String>,
}

pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub type AgentClient = EbpfServiceClient<Authorized>;

/// The colony. Cheap to clone.
#[derive(Clone)]
pub struct Colony {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    store: Arc<dyn Store>,
    config: Config,
    ingest: Ingest,
    /// Channels to agents by address (tonic channels reconnect by themselves).
    channels: Mutex<HashMap<String, Authorized>>,
    /// The pulls this process runs, by (tap, agent).
    pulls: Mutex<HashMap<(String, String), tokio::task::JoinHandle<()>>>,
    stopping: watch::Receiver<bool>,
}

fn kinds_of(capabilities: &[u8]) -> Vec<pb::CollectorKind> {
    pb::Capabilities::decode(capabilities)
        .map(|c| {
            c.kinds
                .iter()
                .filter(|k| k.available)
                .filter_map(|k| pb::CollectorKind::try_from(k.kind).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Colony {
    pub fn new(store: Arc<dyn Store>, config: Config, stopping: watch::Receiver<bool>) -> Colony {
        let ingest = Ingest::start(store.clone());
        Colony {
            inner: Arc::new(Inner {
                id: uuid::Uuid::new_v4().to_string(),
                store,
                config,
                ingest,
                channels: Mutex::new(HashMap::new()),
                pulls: Mutex::new(HashMap::new()),
                stopping,
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn ingest(&self) -> &Ingest {
        &self.inner.ingest
    }
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.clone()
    }

    /// A client of the agent at `address`.
    pub fn agent_client(&self, address: &str) -> Result<AgentClient, dial::DialError> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(address) {
            Some(c) => c.clone(),
            None => {
                let c = dial::lazy(address, &self.inner.config.agent_credentials)?;
                channels.insert(address.to_string(), c.clone());
                c
            }
        };
        Ok(EbpfServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
    }

    /// Starts what runs in the background: resumed pulls, static probes,
    /// retention.
    pub async fn start(&self) -> Result<(), Error> {
        let collecting = self
            .inner
            .store
            .members_with_status(cpb::MemberStatus::Collecting as i32)
            .await?;
        if !collecting.is_empty() {
            tracing::info!(
                members = collecting.len(),
                "resuming the pulls of collecting members"
            );
        }
        for member in collecting {
            if let Some((tap, _)) = self.inner.store.tap(&member.tap_id).await? {
                self.spawn_pull(&tap, member);
            }
        }
        if !self.inner.config.static_agents.is_empty() {
            tokio::spawn(crate::statics::run(self.clone()));
        }
        tokio::spawn(crate::retention::run(self.clone()));
        tokio::spawn(watch_silent(self.clone()));
        Ok(())
    }

    pub fn spawn_pull(&self, tap: &TapRow, member: MemberRow) {
        let key = (member.tap_id.clone(), member.agent_id.clone());
        let mut pulls = self.inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if pulls.get(&key).is_some_and(|h| !h.is_finished()) {
            return;
        }
        let handle = tokio::spawn(pull::run(self.clone(), tap.clone(), member));
        pulls.insert(key, handle);
    }

    /// Waits until every pull of this process has ended (shutdown).
    pub async fn pulls_ended(&self, timeout: Duration) {
        let handles: Vec<_> = self
            .inner
            .pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        let _ = tokio::time::timeout(timeout, futures_util::future::join_all(handles)).await;
    }

    // ------------------------------------------------------------ agents

    pub fn agent_status(&self, a: &AgentRow, now: u64) -> cpb::AgentStatus {
        if !a.replaced_by.is_empty() {
            cpb::AgentStatus::Replaced
        } else if !a.error.is_empty() {
            // A static agent whose last probe failed.
            cpb::AgentStatus::Silent
        } else if now.saturating_sub(a.last_seen_unix_nano)
            <= self.inner.config.agent_timeout.as_nanos() as u64
        {
            cpb::AgentStatus::Alive
        } else {
            cpb::AgentStatus::Silent
        }
    }

    pub fn agent_proto(&self, a: &AgentRow, now: u64) -> cpb::Agent {
        cpb::Agent {
            agent_id: a.agent_id.clone(),
            node: a.node.clone(),
            labels: a.labels.clone().into_iter().collect(),
            address: a.address.clone(),
            source: a.source,
            status: self.agent_status(a, now) as i32,
            registered_unix_nano: a.registered_unix_nano,
            last_seen_unix_nano: a.last_seen_unix_nano,
            kinds: kinds_of(&a.capabilities)
                .into_iter()
                .map(|k| k as i32)
                .collect(),
            capabilities: pb::Capabilities::decode(a.capabilities.as_slice()).ok(),
            error: a.error.clone(),
        }
    }

    /// Records an agent (registered, or a probed static one). An earlier
    /// agent on the same node and address is replaced: its collecting
    /// members are lost (a restarted agent has none of its collectors).
    pub async fn register(&self, mut row: AgentRow) -> Result<(), Error> {
        let store = &self.inner.store;
        if let Some(old) = store.agent(&row.agent_id).await? {
            row.registered_unix_nano = old.registered_unix_nano;
        }
        store.upsert_agent(&row).await?;
        for old in store
            .replace_agents(&row.agent_id, &row.node, &row.address)
            .await?
        {
            tracing::info!(node = %row.node, old = %old, new = %row.agent_id, "agent restarted: replaced");
            self.lose_agent(
                &old,
                &format!(
                    "the agent was replaced by {} (restarted): its collector is gone",
                    row.agent_id
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Marks every collecting member of `agent_id` lost, with `reason`.
    pub async fn lose_agent(&self, agent_id: &str, reason: &str) -> Result<(), Error> {
        let store = &self.inner.store;
        for m in store
            .members_with_status(cpb::MemberStatus::Collecting as i32)
            .await?
        {
            if m.agent_id == agent_id {
                self.lose_member(m, reason).await?;
            }
        }
        Ok(())
    }

    /// One member lost: what is stored stays, the rest is recorded lost.
    pub async fn lose_member(&self, mut m: MemberRow, reason: &str) -> Result<(), Error> {
        // What this process still has queued for it is stored first, so the
        // loss starts after the last record that will ever be stored.
        self.inner.ingest.flush().await;
        let store = &self.inner.store;
        let stored = store.stored(&m.agent_id, &m.collector_id).await?;
        store
            .insert(
                &[],
                &[LossRow {
                    tap_id: m.tap_id.clone(),
                    agent_id: m.agent_id.clone(),
                    node: m.node.clone(),
                    collector_id: m.collector_id.clone(),
                    from_seq: stored.max_seq + 1,
                    count: 0,
                    reason: reason.to_string(),
                    time_unix_nano: now_nanos(),
                }],
            )
            .await?;
        tracing::warn!(tap = %m.tap_id, agent = %m.agent_id, node = %m.node,
            stored_seq = stored.max_seq, reason, "member lost");
        m.status = cpb::MemberStatus::Lost as i32;
        m.error = format!("{reason}; records up to seq {} are stored", stored.max_seq);
        store.update_member(&m).await?;
        if let Some(h) = self
            .inner
            .pulls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(m.tap_id.clone(), m.agent_id.clone()))
        {
            h.abort();
        }
        Ok(())
    }

    // ------------------------------------------------------------ fleet taps

    /// The agents a selector picks, in node order.
    pub async fn select(&self, sel: &cpb::Selector) -> Result<Vec<AgentRow>, Error> {
        let now = now_nanos();
        let forget = self.inner.config.forget_after.as_nanos() as u64;
        let explicit = !sel.agent_ids.is_empty() || !sel.nodes.is_empty() || !sel.labels.is_empty();
        if !sel.all && !explicit {
            return Err(Error::InvalidArgument(
                "select agents: --nodes all, --nodes N1,N2, --agents ID,... or --selector k=v"
                    .into(),
            ));
        }
        let agents = self.inner.store.agents().await?;
        Ok(agents
            .into_iter()
            .filter(|a| a.replaced_by.is_empty())
            // Agents silent for long are gone for good; recently silent
            // ones are selected and reported unreachable.
            .filter(|a| {
                sel.agent_ids.contains(&a.agent_id)
                    || now.saturating_sub(a.last_seen_unix_nano) <= forget
            })
            .filter(|a| sel.agent_ids.is_empty() || sel.agent_ids.contains(&a.agent_id))
            .filter(|a| sel.nodes.is_empty() || sel.nodes.contains(&a.node))
            .filter(|a| sel.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
            .collect())
    }

    pub async fn fleet_tap(&self, tap_id: &str) -> Result<cpb::FleetTap, Error> {
        let (tap, members) = self
            .inner
            .store
            .tap(tap_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no fleet tap with id {tap_id:?}")))?;
        self.tap_proto(tap, members).await
    }

    pub async fn tap_proto(
        &self,
        tap: TapRow,
        members: Vec<MemberRow>,
    ) -> Result<cpb::FleetTap, Error> {
        let mut out = Vec::with_capacity(members.len());
        let mut running = false;
        for m in members {
            let stored = if m.collector_id.is_empty() {
                Default::default()
            } else {
                self.inner
                    .store
                    .stored(&m.agent_id, &m.collector_id)
                    .await?
            };
            running |= m.status == cpb::MemberStatus::Collecting as i32;
            out.push(cpb::Member {
                agent_id: m.agent_id,
                node: m.node,
                status: m.status,
                collector_id: m.collector_id,
                collector_state: m.collector_state,
                error: m.error,
                stored_seq: stored.max_seq,
                stored_records: stored.records,
                lost_records: stored.lost,
            });
        }
        Ok(cpb::FleetTap {
            id: tap.tap_id,
            spec: pb::CollectorSpec::decode(tap.spec.as_slice()).ok(),
            selector: cpb::Selector::decode(tap.selector.as_slice()).ok(),
            state: if running {
                cpb::FleetTapState::Running
            } else {
                cpb::FleetTapState::Ended
            } as i32,
            created_unix_nano: tap.created_unix_nano,
            deadline_unix_nano: tap.deadline_unix_nano,
            members: out,
        })
    }

    /// Starts one collector per selected agent, concurrently. Every
    /// selected agent becomes a member, whatever happened to it.
    pub async fn start_tap(
        &self,
        mut spec: pb::CollectorSpec,
        selector: cpb::Selector,
    ) -> Result<cpb::FleetTap, Error> {
        let kind = pb::CollectorKind::try_from(spec.kind)
            .ok()
            .filter(|k| *k != pb::CollectorKind::Unspecified)
            .ok_or_else(|| Error::InvalidArgument("spec.kind is required".into()))?;
        let agents = self.select(&selector).await?;
        if agents.is_empty() {
            return Err(Error::NoAgents(format!(
                "no agent matches the selector {} (coral agents lists them)",
                describe_selector(&selector)
            )));
        }
        let tap_id = uuid::Uuid::new_v4().to_string();
        spec.labels.insert(TAP_LABEL.into(), tap_id.clone());
        let now = now_nanos();
        let starts = agents.into_iter().map(|agent| {
            let spec = spec.clone();
            let tap_id = tap_id.clone();
            async move { self.start_member(&tap_id, agent, kind, spec).await }
        });
        let members: Vec<MemberRow> = futures_util::future::join_all(starts).await;
        let deadline = spec.duration_ns.map_or(0, |d| now.saturating_add(d));
        let tap = TapRow {
            tap_id: tap_id.clone(),
            kind: kind.name().to_string(),
            spec: spec.encode_to_vec(),
            selector: selector.encode_to_vec(),
            created_unix_nano: now,
            deadline_unix_nano: deadline,
        };
        self.inner.store.insert_tap(&tap, &members).await?;
        for m in &members {
            tracing::info!(tap = %tap_id, agent = %m.agent_id, node = %m.node,
                status = ?cpb::MemberStatus::try_from(m.status).unwrap_or_default(),
                collector = %m.collector_id, error = %m.error, "fleet tap member");
            if m.status == cpb::MemberStatus::Collecting as i32 {
                self.spawn_pull(&tap, m.clone());
            }
        }
        self.tap_proto(tap, members).await
    }

    async fn start_member(
        &self,
        tap_id: &str,
        agent: AgentRow,
        kind: pb::CollectorKind,
        spec: pb::CollectorSpec,
    ) -> MemberRow {
        let mut m = MemberRow {
            tap_id: tap_id.to_string(),
            agent_id: agent.agent_id.clone(),
            node: agent.node.clone(),
            address: agent.address.clone(),
            ..Default::default()
        };
        let caps = pb::Capabilities::decode(agent.capabilities.as_slice()).unwrap_or_default();
        // A static agent never reached has no capabilities yet: try it.
        let known = !agent.capabilities.is_empty();
        if let Some(k) = caps.kinds.iter().find(|k| k.kind == kind as i32)
            && !k.available
        {
            m.status = cpb::MemberStatus::Unsupported as i32;
            m.error = format!(
                "{} is not available on this agent: {}",
                kind.name(),
                k.reason
            );
            return m;
        }
        if known && !caps.kinds.iter().any(|k| k.kind == kind as i32) {
            m.status = cpb::MemberStatus::Unsupported as i32;
            m.error = format!("this agent does not know {}", kind.name());
            return m;
        }
        let mut client = match self.agent_client(&agent.address) {
            Ok(c) => c,
            Err(e) => {
                m.status = cpb::MemberStatus::Unreachable as i32;
                m.error = e.to_string();
                return m;
            }
        };
        let mut req = tonic::Request::new(pb::StartCollectorRequest { spec: Some(spec) });
        req.set_timeout(AGENT_CALL_TIMEOUT);
        match client.start_collector(req).await {
            Ok(resp) => {
                let info = resp.into_inner().collector.unwrap_or_default();
                m.status = cpb::MemberStatus::Collecting as i32;
                m.collector_id = info.id;
                m.collector_state = info.state;
            }
            Err(status) if is_transport(&status) => {
                m.status = cpb::MemberStatus::Unreachable as i32;
                m.error = format!(
                    "cannot reach the agent at {}: {}",
                    agent.address,
                    describe(&status)
                );
            }
            Err(status) => {
                m.status = cpb::MemberStatus::Refused as i32;
                m.error = describe(&status);
            }
        }
        m
    }

    /// Stops every collecting member, then waits (a bounded time) for their
    /// final records to be stored.
    pub async fn stop_tap(&self, tap_id: &str) -> Result<cpb::FleetTap, Error> {
        let (_, members) = self
            .inner
            .store
            .tap(tap_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no fleet tap with id {tap_id:?}")))?;
        let stops = members
            .into_iter()
            .filter(|m| m.status == cpb::MemberStatus::Collecting as i32)
            .map(|m| async move {
                let Ok(mut client) = self.agent_client(&m.address) else {
                    return;
                };
                let mut req = tonic::Request::new(pb::StopCollectorRequest {
                    id: m.collector_id.clone(),
                });
                req.set_timeout(AGENT_CALL_TIMEOUT * 4);
                if let Err(status) = client.stop_collector(req).await {
                    tracing::warn!(tap = %m.tap_id, agent = %m.agent_id, error = %describe(&status), "stop failed");
                    let mut m = m;
                    m.error = format!("stop: {}", describe(&status));
                    let _ = self.inner.store.update_member(&m).await;
                }
            });
        futures_util::future::join_all(stops).await;
        // The pulls store each final record and complete their member.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let tap = self.fleet_tap(tap_id).await?;
            if tap.state != cpb::FleetTapState::Running as i32
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(tap);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn extend_tap(&self, tap_id: &str, by: Duration) -> Result<cpb::FleetTap, Error> {
        let (_, members) = self
            .inner
            .store
            .tap(tap_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no fleet tap with id {tap_id:?}")))?;
        let extends = members
            .into_iter()
            .filter(|m| m.status == cpb::MemberStatus::Collecting as i32)
            .map(|mut m| async move {
                let result = match self.agent_client(&m.address) {
                    Ok(mut client) => {
                        let mut req = tonic::Request::new(pb::ExtendCollectorRequest {
                            id: m.collector_id.clone(),
                            duration_ns: by.as_nanos() as u64,
                        });
                        req.set_timeout(AGENT_CALL_TIMEOUT);
                        client
                            .extend_collector(req)
                            .await
                            .map(drop)
                            .map_err(|s| describe(&s))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let error = match result {
                    Ok(()) => String::new(),
                    Err(e) => format!("extend: {e}"),
                };
                if error != m.error {
                    m.error = error;
                    let _ = self.inner.store.update_member(&m).await;
                }
            });
        futures_util::future::join_all(extends).await;
        self.inner
            .store
            .set_deadline(tap_id, now_nanos().saturating_add(by.as_nanos() as u64))
            .await?;
        self.fleet_tap(tap_id).await
    }

    pub async fn list_taps(&self) -> Result<Vec<cpb::FleetTap>, Error> {
        let mut out = Vec::new();
        for (tap, members) in self.inner.store.taps().await? {
            out.push(self.tap_proto(tap, members).await?);
        }
        Ok(out)
    }

    pub async fn query(&self, q: &RecordQuery) -> Result<Vec<crate::store::RecordRow>, Error> {
        Ok(self.inner.store.records(q).await?)
    }
}

fn describe_selector(s: &cpb::Selector) -> String {
    let mut parts = Vec::new();
    if s.all {
        parts.push("all".to_string());
    }
    if !s.nodes.is_empty() {
        parts.push(format!("nodes {}", s.nodes.join(",")));
    }
    if !s.agent_ids.is_empty() {
        parts.push(format!("agents {}", s.agent_ids.join(",")));
    }
    let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    if !labels.is_empty() {
        parts.push(format!("labels {}", labels.join(",")));
    }
    parts.join(", ")
}

/// A status made on this side from a transport failure (tonic reports
/// those as UNAVAILABLE, or with a source error) rather than the agent's
/// answer.
pub fn is_transport(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        || status.code() == tonic::Code::DeadlineExceeded
        || std::error::Error::source(status).is_some()
}

pub fn describe(status: &tonic::Status) -> String {
    let mut s = format!("{:?}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        s.push_str(&format!(" ({})", coral_proto::error_chain(source)));
    }
    s
}

/// Loses the collecting members of agents that fell silent: whatever
/// process pulls them, the first colony to notice records the loss.
async fn watch_silent(colony: Colony) {
    let mut stopping = colony.stopping();
    let every = colony.config().heartbeat.min(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if let Err(err) = check_silent(&colony).await {
            tracing::warn!(error = %err, "checking for silent agents");
        }
    }
}

async fn check_silent(colony: &Colony) -> Result<(), Error> {
    let store = colony.store();
    let collecting = store
        .members_with_status(cpb::MemberStatus::Collecting as i32)
        .await?;
    if collecting.is_empty() {
        return Ok(());
    }
    let now = now_nanos();
    let agents: HashMap<String, AgentRow> = store
        .agents()
        .await?
        .into_iter()
        .map(|a| (a.agent_id.clone(), a))
        .collect();
    for m in collecting {
        let Some(a) = agents.get(&m.agent_id) else {
            continue;
        };
        if colony.agent_status(a, now) == cpb::AgentStatus::Silent {
            let silent = Duration::from_nanos(now.saturating_sub(a.last_seen_unix_nano));
            colony
                .lose_member(
                    m,
                    &format!(
                        "the agent died: silent for {} (past the agent timeout of {})",
                        humantime::format_duration(Duration::from_secs(silent.as_secs())),
                        humantime::format_duration(colony.config().agent_timeout)
                    ),
                )
                .await?;
        }
    }
    Ok(())
}
