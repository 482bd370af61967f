//! The tools: their arguments (JSON schemas from schemars, descriptions
//! written for a model), what they call on the backend, and their bounded
//! answers (summaries first; the full record only on request, under a byte
//! cap). Validation and limits are the agent's: a tool passes its request
//! on and the agent's refusal back, word for word, as a tool error.

use super::backend::{Backend, NodeCaps, TapInfo, member_status};
use super::diagnose::{self, Diagnose, DiagnoseOut};
use super::summary::{KindSummary, Summarised, summarise};
use super::{audit, resources};
use crate::client::CliError;
use crate::commands::parse_duration;
use crate::commands::tap::view;
use crate::kinds::{self, Kind};
use crate::render::{duration_ns, timestamp};
use coral_proto::text::{MESSAGE_BYTES, bounded, quote};
use coral_proto::v1::{self as pb, collector_spec::Config};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::IntoCallToolResult;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListResourcesResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Rows per summary table unless asked otherwise, and at most.
pub const TOP_DEFAULT: u32 = 10;
pub const TOP_MAX: u32 = 50;

/// Byte cap of a full record in a tool answer unless asked otherwise, and at most.
pub const RECORD_BYTES_DEFAULT: u32 = 64 * 1024;
pub const RECORD_BYTES_MAX: u32 = 1024 * 1024;

/// The newest discrete events (requests, connections, execs) shown.
pub const RECENT_EVENTS: usize = 5;

/// Longest `tap_result` waits for a collector to end.
pub const WAIT_MAX_S: u32 = 120;

/// Collectors `list_taps` shows, the newest.
pub const LIST_MAX: usize = 100;

/// The label every collector started through this server carries, so the
/// agent's own list and audit log show who started it.
pub const STARTED_BY: (&str, &str) = ("started-by", "coral-mcp");

/// Tools that change what the kernel runs: hidden by `--read-only`, and
/// refused by the agent for a read-only token.
pub const WRITE_TOOLS: [&str; 3] = ["start_tap", "stop_tap", "diagnose"];

const INSTRUCTIONS: &str = "Coral runs time-boxed eBPF collectors (taps) on one Linux node through its coral-agent. \
Start with `capabilities` to see which collector kinds this node can run and its limits. \
To investigate a process, service or container, `diagnose` with a symptom (slow, errors, cpu, memory, network) picks the collectors, runs them for a bounded time and names the evidence. \
For a specific measurement, `start_tap` a kind on a target, then `tap_result` (with wait_seconds to let it finish) or `stop_tap`. \
Taps expire by themselves; the agent refuses durations over its max_duration and more than max_running_collectors taps at once. \
Resources coral://docs/collectors/<kind> explain every field of each kind's records.";

const COLONY_INSTRUCTIONS: &str = " \
This server speaks to a colony: one control point for many nodes' agents. `capabilities` lists every alive node and what each can run. \
`start_tap` and `diagnose` take `nodes` (empty: every alive node) and start one fleet tap, a collector on each node; a target's pids are read on each node. \
`tap_result` answers per node (`nodes[]`), from the colony's store, which keeps results after the agents forget them.";

// ---------------------------------------------------------------- arguments

/// A collector kind, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindName(pub Kind);

impl JsonSchema for KindName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Kind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        schemars::json_schema!({
            "type": "string",
            "enum": names,
            "description": "A collector kind; `capabilities` says which ones this node can run."
        })
    }
}

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Kind::ALL
            .iter()
            .find(|k| k.name() == name)
            .map(|&k| KindName(k))
            .ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                serde::de::Error::custom(format!(
                    "unknown kind {}; known: {}",
                    quote(&name),
                    known.join(", ")
                ))
            })
    }
}

/// Which tasks to trace. All given conditions must hold; none means the
/// whole machine.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Process ids (tgids); every thread of each process is traced. At most 64.
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Exact task name (comm, as in `ps -o comm`), 1 to 15 bytes.
    pub comm: Option<String>,
    /// A cgroup v2 path, descendants included: under the cgroup2 mount
    /// (/sys/fs/cgroup/system.slice/nginx.service) or relative to it
    /// (system.slice/nginx.service).
    pub cgroup: Option<String>,
    /// A container id or a unique prefix of one (docker, containerd, cri-o,
    /// podman); not with cgroup.
    pub container: Option<String>,
}

impl Target {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.comm.is_none()
            && self.cgroup.is_none()
            && self.container.is_none()
    }

    pub fn filter(&self) -> pb::TargetFilter {
        pb::TargetFilter {
            pids: self.pids.clone(),
            comm: self.comm.clone().unwrap_or_default(),
            cgroup: self.cgroup.clone().unwrap_or_default(),
            container: self.container.clone().unwrap_or_default(),
        }
    }
}

/// Settings of one kind; each applies to the kinds it names only.
#[derive(Clone, Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TapOptions {
    /// Interval of the cumulative snapshots, e.g. "1s" (default 1s, at least
    /// 100ms). Every kind but cpu-profile.
    pub interval: Option<String>,
    /// cpu-profile: samples per second per CPU (default 49; the agent's
    /// max_profile_frequency_hz bounds it).
    pub frequency_hz: Option<u32>,
    /// syscall-stats: break the counts down per process.
    pub per_process: Option<bool>,
    /// http-latency: also trace outgoing HTTP requests the target makes.
    pub client_side: Option<bool>,
    /// tcp-metrics: only connections on these local ports (at most 16).
    #[serde(default)]
    pub local_ports: Vec<u16>,
    /// tcp-metrics: only connections to these remote ports (at most 16).
    #[serde(default)]
    pub remote_ports: Vec<u16>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartTap {
    /// The collector kind.
    pub kind: KindName,
    /// How long the tap runs before it expires by itself, e.g. "10s", "2m".
    /// Default: the agent's default_duration. Over the agent's max_duration
    /// it is refused, never shortened.
    pub duration: Option<String>,
    /// Which tasks to trace; empty traces the whole machine.
    #[serde(default)]
    pub target: Target,
    /// Settings of the kind.
    #[serde(default)]
    pub options: TapOptions,
    /// On a colony: the nodes to run on (one collector each, one fleet tap
    /// id); empty runs on every alive agent. Not for a single agent.
    #[serde(default)]
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TapId {
    /// The tap's id, from start_tap or list_taps.
    pub id: String,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TapResult {
    /// The tap's id, from start_tap or list_taps.
    pub id: String,
    /// First wait up to this many seconds (0 to 120) for the tap to end, so
    /// the answer is its final result. Default 0: answer now with the latest
    /// snapshot (cumulative since the start).
    pub wait_seconds: Option<u32>,
    /// Rows per table in the summary (1 to 50, default 10).
    pub top: Option<u32>,
    /// Also return the latest aggregate record in full (proto3 JSON, see the
    /// coral://docs/collectors/<kind> resources), when it fits in max_bytes.
    #[serde(default)]
    pub include_record: bool,
    /// Byte cap of that record (default 65536, at most 1048576).
    pub max_bytes: Option<u32>,
}

// ---------------------------------------------------------------- answers

/// One tap, as `list_taps`, `start_tap` and `tap_result` show it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Tap {
    pub id: String,
    pub kind: String,
    /// starting, running, expired, stopped or failed.
    pub state: String,
    /// "pid 42", "comm nginx", "container 3f4e2c1d", or "whole machine".
    pub target: String,
    /// Time left while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<String>,
    pub started: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<String>,
    /// Records made so far (the seq of the newest).
    pub records: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Started through this MCP server (label started-by=coral-mcp).
    pub started_by_mcp: bool,
    /// On a colony: the fleet tap's member agents, one collector each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<MemberOut>>,
}

/// One member agent of a fleet tap.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MemberOut {
    pub node: String,
    pub agent_id: String,
    /// collecting, complete, unsupported, unreachable, refused or lost.
    pub status: String,
    /// Its collector's state (starting, running, expired, stopped,
    /// failed), when one was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Records the colony stored for it.
    pub records: u64,
    /// Why it is unsupported, unreachable, refused, lost or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn member_out(m: &coral_proto::colony::v1::Member) -> MemberOut {
    MemberOut {
        node: bounded(&m.node, 256),
        agent_id: bounded(&m.agent_id, 64),
        status: member_status(m.status).to_string(),
        state: (!m.collector_id.is_empty())
            .then(|| crate::render::state_name(m.collector_state).to_string()),
        records: m.stored_records,
        error: (!m.error.is_empty()).then(|| bounded(&m.error, MESSAGE_BYTES)),
    }
}

pub fn tap(t: &TapInfo) -> Tap {
    let info = &t.info;
    let started_by_mcp = info
        .spec
        .as_ref()
        .and_then(|s| s.labels.get(STARTED_BY.0))
        .is_some_and(|v| v == STARTED_BY.1);
    Tap {
        id: bounded(&info.id, 64),
        kind: view::kind(info).to_string(),
        state: crate::render::state_name(info.state).to_string(),
        target: bounded(&view::target(info), 512),
        remaining: (info.state == pb::CollectorState::Running as i32)
            .then(|| view::remaining(info)),
        started: timestamp(info.started_unix_nano),
        ended: (info.ended_unix_nano > 0).then(|| timestamp(info.ended_unix_nano)),
        records: info.last_seq,
        error: (!info.error.is_empty()).then(|| bounded(&info.error, MESSAGE_BYTES)),
        started_by_mcp,
        nodes: t
            .members
            .as_ref()
            .map(|m| m.iter().take(NODES_MAX).map(member_out).collect()),
    }
}

pub(crate) fn is_terminal(t: &TapInfo) -> bool {
    matches!(
        pb::CollectorState::try_from(t.info.state),
        Ok(pb::CollectorState::Expired | pb::CollectorState::Stopped | pb::CollectorState::Failed)
    )
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NodeInfo {
    pub agent_id: String,
    pub agent_version: String,
    pub kernel: String,
    pub arch: String,
    pub btf: bool,
    pub cap_bpf: bool,
    pub cap_perfmon: bool,
    pub cap_sys_admin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perf_event_paranoid: Option<i32>,
    /// Where tracefs is, if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracefs: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup2: Option<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct KindInfo {
    pub kind: String,
    /// What it measures.
    pub about: String,
    pub available: bool,
    /// Why not, when not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Kernel hooks it attaches to.
    pub hooks: Vec<String>,
    /// Its documentation, as an MCP resource.
    pub doc: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct LimitsInfo {
    pub max_running_collectors: u32,
    /// Taps starting or running now.
    pub running_now: usize,
    pub max_duration: String,
    pub max_duration_s: u64,
    pub default_duration: String,
    pub default_duration_s: u64,
    pub max_profile_frequency_hz: u32,
    pub max_filter_pids: u32,
    /// How long ended taps stay readable.
    pub retention: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CapabilitiesOut {
    /// The answer in a few lines.
    pub summary: Vec<String>,
    /// Each kind; on a colony, available when at least one node can run
    /// it (`reason` names the nodes that cannot).
    pub kinds: Vec<KindInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsInfo>,
    /// The agent's node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeInfo>,
    /// On a colony: each alive agent's node, what it can run, its limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<FleetNode>>,
}

/// One alive agent of a colony.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FleetNode {
    pub node: String,
    /// Kinds it can run.
    pub available: Vec<String>,
    /// Kinds it cannot run, and why.
    pub unavailable: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsInfo>,
    pub info: NodeInfo,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct StartOut {
    pub summary: Vec<String>,
    pub tap: Tap,
    /// The agent's warnings, e.g. a whole-machine filter on a hot hook.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ListOut {
    pub summary: Vec<String>,
    /// Oldest first, at most 100 (the newest).
    pub taps: Vec<Tap>,
    /// Taps left out of the list.
    pub more: usize,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct EventsSeen {
    /// Discrete events (requests, connections, execs, OOM kills) in the
    /// records read, by type.
    pub by_type: BTreeMap<String, u64>,
    /// The newest, newest last.
    pub recent: Vec<String>,
    /// Records read: the newest ones, enough to reach the latest aggregate.
    pub records_read: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ResultOut {
    /// The answer in a few lines.
    pub summary: Vec<String>,
    pub tap: Tap,
    /// "final" (the tap ended; this is its whole result), "snapshot" (still
    /// running; cumulative so far), "none" (no aggregate recorded yet).
    pub result: String,
    /// The latest aggregate, summarised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<KindSummary>,
    pub events: EventsSeen,
    /// On a colony: each member agent's result (`latest` and `events` above
    /// are then empty; `record` is the first member's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeResult>>,
    /// Records dropped by the agent's retention budgets (on a colony: the
    /// records it knows it lost).
    pub dropped_records: u64,
    /// Events or samples the kernel side could not hand over.
    pub kernel_lost: u64,
    /// The latest aggregate record in full (proto3 JSON), when asked for and
    /// within max_bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
    /// Why the record is not there, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_note: Option<String>,
}

/// A tool's answer: `T` as structured content (its schema is the tool's
/// output schema: the `#[tool]` macro recognises the name `Json`), and the
/// same JSON as text with the fields in their declared order, so a model
/// reads the summary first (rmcp's own `Json` sorts the keys).
pub struct Json<T>(pub T);

impl<T: JsonSchema> JsonSchema for Json<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<T: Serialize + JsonSchema + 'static> IntoCallToolResult for Json<T> {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        let internal = |e: serde_json::Error| {
            ErrorData::internal_error(format!("serializing the answer: {e}"), None)
        };
        let text = serde_json::to_string(&self.0).map_err(internal)?;
        let value = serde_json::to_value(&self.0).map_err(internal)?;
        let mut result =
            rmcp::model::CallToolResult::success(vec![rmcp::model::ContentBlock::text(text)]);
        result.structured_content = Some(value);
        Ok(result.into())
    }
}

/// A failure for the model to read: the agent's refusal, or ours.
pub type ToolError = String;

pub fn agent_error(err: CliError) -> ToolError {
    bounded(&err.to_string(), MESSAGE_BYTES)
}

fn parse_human_duration(what: &str, s: &str) -> Result<Duration, ToolError> {
    parse_duration(s)
        .map_err(|_| format!("{what} {} is not a duration (try 10s, 2m, 500ms)", quote(s)))
}

fn clamp(v: Option<u32>, default: u32, min: u32, max: u32, what: &str) -> Result<u32, ToolError> {
    let v = v.unwrap_or(default);
    if !(min..=max).contains(&v) {
        return Err(format!("{what} must be {min} to {max}; it is {v}"));
    }
    Ok(v)
}

/// The config of `kind` from the tool's options; an option of another kind
/// is an error (as `coral tap start` makes it a usage error).
pub fn kind_config(kind: Kind, o: &TapOptions) -> Result<Config, ToolError> {
    let interval_ns = o
        .interval
        .as_deref()
        .map(|s| parse_human_duration("interval", s))
        .transpose()?
        .map_or(0, |d| d.as_nanos() as u64);
    let given: [(&str, bool, &[Kind]); 6] = [
        (
            "interval",
            o.interval.is_some(),
            &[
                Kind::SyscallStats,
                Kind::HttpLatency,
                Kind::TcpMetrics,
                Kind::ProcessEvents,
                Kind::Memory,
                Kind::FileIo,
                Kind::Dns,
                Kind::Security,
            ],
        ),
        (
            "frequency_hz",
            o.frequency_hz.is_some(),
            &[Kind::CpuProfile],
        ),
        (
            "per_process",
            o.per_process.is_some(),
            &[Kind::SyscallStats],
        ),
        ("client_side", o.client_side.is_some(), &[Kind::HttpLatency]),
        (
            "local_ports",
            !o.local_ports.is_empty(),
            &[Kind::TcpMetrics],
        ),
        (
            "remote_ports",
            !o.remote_ports.is_empty(),
            &[Kind::TcpMetrics],
        ),
    ];
    for (name, set, kinds) in given {
        if set && !kinds.contains(&kind) {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            return Err(format!(
                "option {name} is for {}, and this tap is {}",
                names.join(", "),
                kind.name()
            ));
        }
    }
    Ok(match kind {
        Kind::SyscallStats => Config::SyscallStats(pb::SyscallStatsConfig {
            interval_ns,
            per_process: o.per_process.unwrap_or(false),
            latency: pb::SyscallLatency::Exact as i32,
        }),
        Kind::HttpLatency => Config::HttpLatency(pb::HttpLatencyConfig {
            interval_ns,
            client_side: o.client_side.unwrap_or(false),
            ..Default::default()
        }),
        Kind::CpuProfile => Config::CpuProfile(pb::CpuProfileConfig {
            frequency_hz: o.frequency_hz.unwrap_or(0),
            ..Default::default()
        }),
        Kind::TcpMetrics => Config::TcpMetrics(pb::TcpMetricsConfig {
            interval_ns,
            local_ports: o.local_ports.iter().map(|&p| u32::from(p)).collect(),
            remote_ports: o.remote_ports.iter().map(|&p| u32::from(p)).collect(),
            ..Default::default()
        }),
        Kind::ProcessEvents => Config::ProcessEvents(pb::ProcessEventsConfig {
            interval_ns,
            ..Default::default()
        }),
        Kind::Memory => Config::Memory(pb::MemoryConfig {
            interval_ns,
            ..Default::default()
        }),
        Kind::FileIo => Config::FileIo(pb::FileIoConfig {
            interval_ns,
            ..Default::default()
        }),
        Kind::Dns => Config::Dns(pb::DnsConfig {
            interval_ns,
            ..Default::default()
        }),
        Kind::Security => Config::Security(pb::SecurityConfig {
            interval_ns,
            ..Default::default()
        }),
    })
}

/// A spec for the agent: the kind, its config, the target, the duration
/// (`None`: the agent's default) and the started-by label.
pub fn spec(
    kind: Kind,
    duration: Option<Duration>,
    target: &Target,
    config: Config,
) -> pb::CollectorSpec {
    pb::CollectorSpec {
        kind: pb::CollectorKind::from(kind) as i32,
        duration_ns: duration.map(|d| d.as_nanos() as u64),
        filter: Some(target.filter()),
        labels: [(STARTED_BY.0.to_string(), STARTED_BY.1.to_string())].into(),
        config: Some(config),
        export: false,
    }
}

// ---------------------------------------------------------------- results

/// How much of a result to show.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub top: usize,
    pub record_bytes: Option<usize>,
}

/// Windows of newest records read to find the latest aggregate: an
/// aggregate comes at least every interval, but events in between can be
/// many; each window is read only if the one before held no aggregate.
const WINDOWS: [u64; 3] = [256, 4096, 65_536];

/// What a run of records holds: the latest aggregate, and the discrete
/// events by type with the newest of them.
#[derive(Default)]
struct Gathered {
    aggregate: Option<pb::Record>,
    by_type: BTreeMap<String, u64>,
    recent: std::collections::VecDeque<String>,
    read: u64,
}

impl Gathered {
    fn keep(&mut self, r: pb::Record) {
        self.read += 1;
        let Some(payload) = &r.payload else { return };
        match summarise(payload, 0) {
            Summarised::Aggregate(_) => self.aggregate = Some(r),
            Summarised::Event(what, line) => {
                *self.by_type.entry(what.to_string()).or_default() += 1;
                if self.recent.len() == RECENT_EVENTS {
                    self.recent.pop_front();
                }
                self.recent.push_back(line);
            }
        }
    }

    fn latest(&self, top: usize) -> Option<KindSummary> {
        self.aggregate
            .as_ref()
            .and_then(|r| r.payload.as_ref())
            .and_then(|p| match summarise(p, top) {
                Summarised::Aggregate(a) => Some(a),
                Summarised::Event(..) => None,
            })
    }

    fn events(&self) -> EventsSeen {
        EventsSeen {
            by_type: self.by_type.clone(),
            recent: self.recent.iter().cloned().collect(),
            records_read: self.read,
        }
    }

    /// "final", "snapshot" or "none".
    fn status(&self, ended: bool) -> &'static str {
        match &self.aggregate {
            None => "none",
            Some(r) if ended && r.r#final => "final",
            Some(_) => "snapshot",
        }
    }

    fn counts(&self) -> Option<String> {
        (!self.by_type.is_empty()).then(|| {
            let counts: Vec<String> = self
                .by_type
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            format!(
                "events in the newest {} records: {}",
                self.read,
                counts.join(", ")
            )
        })
    }
}

/// The newest records of an agent's collector, enough to reach its latest
/// aggregate.
async fn gather_collector(
    backend: &Backend,
    info: &pb::CollectorInfo,
) -> Result<Gathered, CliError> {
    let last = info.last_seq;
    let mut g = Gathered::default();
    for window in WINDOWS {
        let from = last.saturating_sub(window);
        g = Gathered::default();
        let mut cursor = from;
        while cursor < last {
            let page = backend.events(&info.id, cursor, 1000).await?;
            if page.records.is_empty() {
                break;
            }
            cursor = page.next_after_seq;
            for r in page.records {
                if r.seq > last {
                    break;
                }
                g.keep(r);
            }
            if page.end {
                break;
            }
        }
        if g.aggregate.is_some() || from == 0 {
            break;
        }
    }
    Ok(g)
}

/// One member agent's part of a fleet tap's result.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NodeResult {
    pub node: String,
    pub agent_id: String,
    /// collecting, complete, unsupported, unreachable, refused or lost.
    pub status: String,
    /// "final", "snapshot" or "none", as for an agent's tap.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest: Option<KindSummary>,
    pub events: EventsSeen,
    /// Records the colony knows it will never have (the agent's retention
    /// dropped them first, or the agent died).
    pub lost_records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long `stop_tap` on a colony waits for the members' final records.
pub const FLEET_STOP_WAIT: Duration = Duration::from_secs(15);

/// Members whose results a fleet answer shows, at most.
pub const NODES_MAX: usize = 64;

/// The latest aggregate of a tap and the events around it, summarised; for
/// a fleet tap, each member's, from the colony's store.
pub async fn result(backend: &Backend, t: &TapInfo, shape: Shape) -> Result<ResultOut, CliError> {
    let info = &t.info;
    let ended = is_terminal(t);
    let tap = tap(t);
    let state_words = |status: &str| match status {
        "final" => ", final result".to_string(),
        "snapshot" => match &tap.remaining {
            Some(r) => format!(", latest snapshot ({r} left)"),
            None => ", latest snapshot".to_string(),
        },
        _ => ", no aggregate recorded yet".to_string(),
    };
    let (g, nodes, status) = match &t.members {
        None => {
            let g = gather_collector(backend, info).await?;
            let status = g.status(ended);
            (g, None, status)
        }
        Some(members) => {
            let mut nodes = Vec::new();
            // The one whose record `include_record` returns: the first
            // member with an aggregate.
            let mut first: Option<Gathered> = None;
            for m in members.iter().take(NODES_MAX) {
                let complete = m.status == coral_proto::colony::v1::MemberStatus::Complete as i32;
                let g = if m.collector_id.is_empty() {
                    Gathered::default()
                } else {
                    let mut g = Gathered::default();
                    for r in backend.member_records(&info.id, &m.agent_id, false).await? {
                        g.keep(r);
                    }
                    g
                };
                nodes.push(NodeResult {
                    node: bounded(&m.node, 256),
                    agent_id: bounded(&m.agent_id, 64),
                    status: member_status(m.status).to_string(),
                    result: g.status(complete).to_string(),
                    latest: g.latest(shape.top),
                    events: g.events(),
                    lost_records: m.lost_records,
                    error: (!m.error.is_empty()).then(|| bounded(&m.error, MESSAGE_BYTES)),
                });
                if first.is_none() && g.aggregate.is_some() {
                    first = Some(g);
                }
            }
            let status = if nodes.iter().any(|n| n.result != "none") {
                if ended
                    && nodes
                        .iter()
                        .filter(|n| {
                            n.status != "unsupported"
                                && n.status != "unreachable"
                                && n.status != "refused"
                        })
                        .all(|n| n.result == "final")
                {
                    "final"
                } else {
                    "snapshot"
                }
            } else {
                "none"
            };
            (first.unwrap_or_default(), Some(nodes), status)
        }
    };
    let mut summary = vec![format!(
        "{} tap {} on {}: {}{}",
        tap.kind,
        tap.id,
        tap.target,
        tap.state,
        state_words(status)
    )];
    if let Some(e) = &tap.error {
        summary.push(format!("error: {e}"));
    }
    let latest = match &nodes {
        None => {
            let latest = g.latest(shape.top);
            if let Some(l) = &latest {
                summary.push(l.headline().to_string());
            }
            if let Some(c) = g.counts() {
                summary.push(c);
            }
            latest
        }
        Some(nodes) => {
            for n in nodes {
                let what = match (&n.latest, &n.error) {
                    (Some(l), _) => l.headline().to_string(),
                    (None, Some(e)) => format!("{}: {e}", n.status),
                    (None, None) => format!("{}, no aggregate stored yet", n.status),
                };
                summary.push(format!("node {}: {what}", n.node));
            }
            None
        }
    };
    if info.kernel_lost > 0 {
        summary.push(format!(
            "the kernel side lost {} events or samples (full buffers): counts are lower bounds",
            info.kernel_lost
        ));
    }
    let (record, record_note) = match (shape.record_bytes, &g.aggregate) {
        (None, _) => (None, None),
        (Some(_), None) => (None, Some("no aggregate record yet".to_string())),
        (Some(cap), Some(r)) => {
            let text = serde_json::to_string(r).unwrap_or_default();
            if text.len() <= cap {
                (serde_json::from_str(&text).ok(), None)
            } else {
                (
                    None,
                    Some(format!(
                        "the record is {} bytes, over max_bytes {cap} (at most {RECORD_BYTES_MAX}); the summary has its top rows",
                        text.len()
                    )),
                )
            }
        }
    };
    Ok(ResultOut {
        summary,
        tap,
        result: status.to_string(),
        latest,
        events: match nodes {
            Some(_) => Gathered::default().events(),
            None => g.events(),
        },
        nodes,
        dropped_records: info.dropped_records,
        kernel_lost: info.kernel_lost,
        record,
        record_note,
    })
}

/// Progress notifications for a call that waits (tap_result's wait,
/// diagnose's run), when the client asked for them with a progress token:
/// hosts show them, and some keep a long call alive on them.
#[derive(Clone)]
pub struct Progress {
    peer: rmcp::Peer<RoleServer>,
    token: Option<rmcp::model::ProgressToken>,
}

impl Progress {
    pub fn of(context: &RequestContext<RoleServer>) -> Self {
        Self {
            peer: context.peer.clone(),
            token: context.meta.get_progress_token(),
        }
    }

    /// `done` of `total` seconds; a lost notification is not an error.
    pub async fn report(&self, done: f64, total: f64, message: String) {
        if let Some(token) = &self.token {
            let param = rmcp::model::ProgressNotificationParam::new(token.clone(), done)
                .with_total(total)
                .with_message(message);
            let _ = self.peer.notify_progress(param).await;
        }
    }
}

/// How often a waiting call reports progress.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Polls until the tap has ended or `wait` has passed; its latest info.
pub async fn wait_end(
    backend: &Backend,
    id: &str,
    wait: Duration,
    progress: Option<&Progress>,
) -> Result<TapInfo, CliError> {
    let start = tokio::time::Instant::now();
    let deadline = start + wait;
    let mut next_report = start + PROGRESS_EVERY;
    loop {
        let info = backend.get(id).await?;
        let now = tokio::time::Instant::now();
        if is_terminal(&info) || now >= deadline {
            return Ok(info);
        }
        if let Some(p) = progress
            && now >= next_report
        {
            next_report = now + PROGRESS_EVERY;
            let waited = (now - start).as_secs_f64();
            p.report(
                waited,
                wait.as_secs_f64(),
                format!(
                    "waiting for tap {} to end ({waited:.0}s)",
                    bounded(&info.info.id, 64)
                ),
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------- the server

/// The MCP server: the tools over one backend.
#[derive(Clone)]
pub struct CoralMcp {
    backend: Backend,
    tool_router: ToolRouter<Self>,
    read_only: bool,
}

#[tool_router(router = tool_router)]
impl CoralMcp {
    /// A server over `backend`; `read_only` leaves out the tools that start
    /// or stop collectors.
    pub fn new(backend: Backend, read_only: bool) -> Self {
        let mut tool_router = Self::tool_router();
        if read_only {
            for name in WRITE_TOOLS {
                tool_router.remove_route(name);
            }
        }
        Self {
            backend,
            tool_router,
            read_only,
        }
    }

    /// The names of the tools offered.
    pub fn tool_names(&self) -> Vec<String> {
        self.tool_router
            .list_all()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect()
    }

    #[tool(
        description = "What this node can observe: each collector kind (syscall-stats, http-latency, cpu-profile, tcp-metrics, process-events, memory) with whether it can run here and, if not, why (missing privilege, kernel feature); the kernel and privileges; and the agent's limits (max duration, running taps). On a colony: every alive node, each with the same. Call it first.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn capabilities(&self) -> Result<Json<CapabilitiesOut>, ToolError> {
        let nodes = self.backend.capabilities().await.map_err(agent_error)?;
        let taps = self.backend.list().await.map_err(agent_error)?;
        if self.backend.is_colony() {
            return Ok(Json(fleet_capabilities_out(&nodes, &taps)));
        }
        let running = taps.iter().filter(|c| !is_terminal(c)).count();
        let caps = nodes.into_iter().next().map(|n| n.caps).unwrap_or_default();
        Ok(Json(capabilities_out(&caps, running)))
    }

    #[tool(
        description = "Start a time-boxed collector (a tap) of one kind on a target, e.g. {\"kind\":\"syscall-stats\",\"duration\":\"10s\",\"target\":{\"pids\":[4242]}}. It runs in the agent and expires by itself; read it with tap_result (wait_seconds lets it finish first) or end it early with stop_tap. The agent validates everything and refuses, with its reason, a duration over its max_duration, more taps than max_running_collectors, a kind this node cannot run, or a bad filter. On a colony, `nodes` picks the nodes (default: every alive one) and one id covers a collector on each. Needs a token with full access.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn start_tap(
        &self,
        Parameters(args): Parameters<StartTap>,
    ) -> Result<Json<StartOut>, ToolError> {
        let kind = args.kind.0;
        let duration = args
            .duration
            .as_deref()
            .map(|s| parse_human_duration("duration", s))
            .transpose()?;
        let config = kind_config(kind, &args.options)?;
        let (info, warnings) = self
            .backend
            .start(spec(kind, duration, &args.target, config), &args.nodes)
            .await
            .map_err(agent_error)?;
        let tap = tap(&info);
        let summary = vec![format!(
            "started {} tap {} on {}, expires in {}; read it with tap_result (id {})",
            tap.kind,
            tap.id,
            tap.target,
            tap.remaining.clone().unwrap_or_else(|| "-".into()),
            tap.id
        )];
        Ok(Json(StartOut {
            summary,
            tap,
            warnings: warnings
                .iter()
                .take(NODES_MAX)
                .map(|w| bounded(w, MESSAGE_BYTES))
                .collect(),
        }))
    }

    #[tool(
        description = "Stop a running tap now and return its final result, summarised like tap_result. Needs a token with full access.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn stop_tap(
        &self,
        Parameters(args): Parameters<TapId>,
    ) -> Result<Json<ResultOut>, ToolError> {
        let mut info = self.backend.stop(&args.id).await.map_err(agent_error)?;
        if self.backend.is_colony() {
            // The colony stops the members' collectors, then pulls their
            // final records: the answer waits for those, a bounded time.
            info = wait_end(&self.backend, &args.id, FLEET_STOP_WAIT, None)
                .await
                .map_err(agent_error)?;
        }
        let shape = Shape {
            top: TOP_DEFAULT as usize,
            record_bytes: None,
        };
        Ok(Json(
            result(&self.backend, &info, shape)
                .await
                .map_err(agent_error)?,
        ))
    }

    #[tool(
        description = "List the taps the agent holds: running ones and those that ended within its retention period, oldest first, with kind, state, target and time left.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_taps(&self) -> Result<Json<ListOut>, ToolError> {
        let all = self.backend.list().await.map_err(agent_error)?;
        let running = all.iter().filter(|c| !is_terminal(c)).count();
        let more = all.len().saturating_sub(LIST_MAX);
        let taps: Vec<Tap> = all.iter().skip(more).map(tap).collect();
        let summary = vec![format!(
            "{} taps: {running} running, {} ended{}",
            all.len(),
            all.len() - running,
            if more > 0 {
                format!("; the oldest {more} are left out")
            } else {
                String::new()
            }
        )];
        Ok(Json(ListOut {
            summary,
            taps,
            more,
        }))
    }

    #[tool(
        description = "Read a tap's result: its state and a compact summary of its latest cumulative aggregate, per kind: top syscalls with counts, errors and latency; slowest and failing HTTP routes; hottest functions with their share of CPU samples; retransmitting and resetting TCP peers; memory growing toward a limit with the time to reach it; exec and exit counts. Plus the newest discrete events (requests, connections, execs, OOM kills). Set wait_seconds to wait for the tap to end first, include_record for the full record.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn tap_result(
        &self,
        Parameters(args): Parameters<TapResult>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ResultOut>, ToolError> {
        let wait = clamp(args.wait_seconds, 0, 0, WAIT_MAX_S, "wait_seconds")?;
        let top = clamp(args.top, TOP_DEFAULT, 1, TOP_MAX, "top")?;
        let bytes = clamp(
            args.max_bytes,
            RECORD_BYTES_DEFAULT,
            1,
            RECORD_BYTES_MAX,
            "max_bytes",
        )?;
        let info = wait_end(
            &self.backend,
            &args.id,
            Duration::from_secs(u64::from(wait)),
            Some(&Progress::of(&context)),
        )
        .await
        .map_err(agent_error)?;
        let shape = Shape {
            top: top as usize,
            record_bytes: args.include_record.then_some(bytes as usize),
        };
        Ok(Json(
            result(&self.backend, &info, shape)
                .await
                .map_err(agent_error)?,
        ))
    }

    #[tool(
        description = "Find evidence for a symptom of a target. Give a target (pids, comm, cgroup or container) and a symptom: slow, errors, cpu, memory or network. It chooses the collectors that answer that symptom among those this node can run (a fixed rule table, see the coral://docs/mcp resource), runs them side by side for a bounded time (duration, default 10s, at most the agent's max_duration), and returns findings that name the evidence (e.g. the hottest function and its share of samples, the slowest syscall, the route with 5xx answers, the peer with retransmits), with each collector's summary. Needs a token with full access.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            open_world_hint = false
        )
    )]
    async fn diagnose(
        &self,
        Parameters(args): Parameters<Diagnose>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DiagnoseOut>, ToolError> {
        let progress = Progress::of(&context);
        Ok(Json(diagnose::run(&self.backend, args, &progress).await?))
    }
}

fn kind_infos(caps: &pb::Capabilities) -> Vec<KindInfo> {
    caps.kinds
        .iter()
        .map(|k| {
            let kind = pb::CollectorKind::try_from(k.kind)
                .ok()
                .and_then(Kind::from_proto);
            KindInfo {
                kind: kinds::kind_name(k.kind).to_string(),
                about: kind.map_or("", |k| k.about()).to_string(),
                available: k.available,
                reason: (!k.available).then(|| bounded(&k.reason, MESSAGE_BYTES)),
                hooks: k.hooks.iter().map(|h| bounded(h, 256)).collect(),
                doc: kind.map_or(String::new(), |k| {
                    format!("{}collectors/{}", resources::PREFIX, k.name())
                }),
            }
        })
        .collect()
}

fn limits_info(caps: &pb::Capabilities, running: usize) -> Option<LimitsInfo> {
    caps.limits.as_ref().map(|l| LimitsInfo {
        max_running_collectors: l.max_running_collectors,
        running_now: running,
        max_duration: duration_ns(l.max_duration_ns),
        max_duration_s: l.max_duration_ns / 1_000_000_000,
        default_duration: duration_ns(l.default_duration_ns),
        default_duration_s: l.default_duration_ns / 1_000_000_000,
        max_profile_frequency_hz: l.max_profile_frequency_hz,
        max_filter_pids: l.max_filter_pids,
        retention: duration_ns(l.retention_ns),
    })
}

fn node_info(caps: &pb::Capabilities) -> NodeInfo {
    let some = |s: &str| (!s.is_empty()).then(|| bounded(s, 256));
    NodeInfo {
        agent_id: bounded(&caps.agent_id, 64),
        agent_version: bounded(&caps.agent_version, 32),
        kernel: bounded(&caps.kernel_release, 128),
        arch: bounded(&caps.arch, 32),
        btf: caps.btf,
        cap_bpf: caps.cap_bpf,
        cap_perfmon: caps.cap_perfmon,
        cap_sys_admin: caps.cap_sys_admin,
        perf_event_paranoid: caps.perf_event_paranoid,
        tracefs: some(&caps.tracefs_path),
        cgroup2: some(&caps.cgroup2_path),
    }
}

pub fn capabilities_out(caps: &pb::Capabilities, running: usize) -> CapabilitiesOut {
    let kinds = kind_infos(caps);
    let available: Vec<&str> = kinds
        .iter()
        .filter(|k| k.available)
        .map(|k| k.kind.as_str())
        .collect();
    let mut summary = vec![format!(
        "node {} ({} {}), agent v{}: {} of {} kinds available{}",
        bounded(&caps.agent_id, 64),
        bounded(&caps.kernel_release, 128),
        bounded(&caps.arch, 32),
        bounded(&caps.agent_version, 32),
        available.len(),
        kinds.len(),
        if available.is_empty() {
            String::new()
        } else {
            format!(": {}", available.join(", "))
        }
    )];
    for k in kinds.iter().filter(|k| !k.available) {
        summary.push(format!(
            "{} is not available: {}",
            k.kind,
            k.reason.as_deref().unwrap_or("")
        ));
    }
    let limits = limits_info(caps, running);
    if let Some(l) = &limits {
        summary.push(format!(
            "limits: taps run at most {} (default {}), {} at once ({} running now)",
            l.max_duration, l.default_duration, l.max_running_collectors, l.running_now
        ));
    }
    CapabilitiesOut {
        summary,
        kinds,
        limits,
        node: Some(node_info(caps)),
        nodes: None,
    }
}

/// A colony's capabilities: per alive agent, and per kind over them all.
pub fn fleet_capabilities_out(nodes: &[NodeCaps], taps: &[TapInfo]) -> CapabilitiesOut {
    let mut out_nodes = Vec::new();
    let mut kinds: Vec<KindInfo> = Vec::new();
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in nodes.iter().take(NODES_MAX) {
        let name = bounded(n.node.as_deref().unwrap_or(""), 256);
        let agent_id = &n.caps.agent_id;
        // Fleet taps running with a collector on this agent.
        let running = taps
            .iter()
            .filter(|t| !is_terminal(t))
            .filter(|t| {
                t.members.iter().flatten().any(|m| {
                    &m.agent_id == agent_id
                        && m.status == coral_proto::colony::v1::MemberStatus::Collecting as i32
                })
            })
            .count();
        let own = kind_infos(&n.caps);
        for k in &own {
            match kinds.iter_mut().find(|e| e.kind == k.kind) {
                None => kinds.push(k.clone()),
                Some(e) if !e.available && k.available => {
                    e.available = true;
                    e.hooks = k.hooks.clone();
                }
                Some(_) => {}
            }
            if !k.available {
                missing
                    .entry(k.kind.clone())
                    .or_default()
                    .push(format!("{name}: {}", k.reason.as_deref().unwrap_or("")));
            }
        }
        out_nodes.push(FleetNode {
            node: name,
            available: own
                .iter()
                .filter(|k| k.available)
                .map(|k| k.kind.clone())
                .collect(),
            unavailable: own
                .iter()
                .filter(|k| !k.available)
                .map(|k| (k.kind.clone(), k.reason.clone().unwrap_or_default()))
                .collect(),
            limits: limits_info(&n.caps, running),
            info: node_info(&n.caps),
        });
    }
    for k in &mut kinds {
        k.reason = missing
            .get(&k.kind)
            .map(|why| bounded(&format!("not on {}", why.join("; ")), MESSAGE_BYTES));
    }
    let names: Vec<&str> = out_nodes.iter().map(|n| n.node.as_str()).collect();
    let mut summary = vec![format!(
        "colony: {} alive agents{}{}",
        nodes.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(" on nodes {}", names.join(", "))
        },
        if nodes.len() > NODES_MAX {
            format!(" (the first {NODES_MAX} shown)")
        } else {
            String::new()
        }
    )];
    let everywhere: Vec<&str> = kinds
        .iter()
        .filter(|k| k.available && k.reason.is_none())
        .map(|k| k.kind.as_str())
        .collect();
    if !everywhere.is_empty() {
        summary.push(format!("on every node: {}", everywhere.join(", ")));
    }
    for k in kinds.iter().filter(|k| k.reason.is_some()) {
        summary.push(format!("{}: {}", k.kind, k.reason.as_deref().unwrap_or("")));
    }
    if let Some(l) = out_nodes.first().and_then(|n| n.limits.as_ref()) {
        summary.push(format!(
            "limits of {}: taps run at most {} (default {}), {} at once; every node's are in nodes[].limits",
            out_nodes[0].node, l.max_duration, l.default_duration, l.max_running_collectors
        ));
    }
    CapabilitiesOut {
        summary,
        kinds,
        limits: None,
        node: None,
        nodes: Some(out_nodes),
    }
}

/// How rmcp starts the tool error of arguments that do not deserialize;
/// serde's message after it quotes what was sent (an unknown field's name,
/// a value of the wrong type) in full.
const ARGUMENT_ERROR: &str = "failed to deserialize parameters:";

/// Bytes of an argument error passed on.
const ARGUMENT_ERROR_BYTES: usize = 512;

/// Every error text cut and escaped: argument errors (which quote the
/// client's input) to [`ARGUMENT_ERROR_BYTES`], the rest (the agent's
/// messages, already bounded by the agent) to [`MESSAGE_BYTES`].
fn bound_errors(
    response: Result<CallToolResponse, ErrorData>,
) -> Result<CallToolResponse, ErrorData> {
    let cut = |text: &str| {
        let limit = if text.starts_with(ARGUMENT_ERROR) {
            ARGUMENT_ERROR_BYTES
        } else {
            MESSAGE_BYTES
        };
        bounded(text, limit)
    };
    match response {
        Ok(CallToolResponse::Complete(mut r)) if r.is_error == Some(true) => {
            r.content = r
                .content
                .into_iter()
                .map(|c| match c.as_text() {
                    Some(t) => rmcp::model::ContentBlock::text(cut(&t.text)),
                    None => c,
                })
                .collect();
            Ok(r.into())
        }
        Err(mut e) => {
            e.message = cut(&e.message).into();
            Err(e)
        }
        other => other,
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for CoralMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("coral", env!("CARGO_PKG_VERSION")))
        .with_instructions(if self.backend.is_colony() {
            format!("{INSTRUCTIONS}{COLONY_INSTRUCTIONS}")
        } else {
            INSTRUCTIONS.to_string()
        })
    }

    /// Every call goes through here: routed to its tool, then audited.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let args = request.arguments.clone();
        let response = if self.read_only && WRITE_TOOLS.contains(&name.as_str()) {
            // Said as a tool error, so the model reads why.
            Ok(rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(
                format!(
                    "{name} is not offered: this coral mcp runs with --read-only (capabilities, list_taps and tap_result are)"
                ),
            )])
            .into())
        } else {
            let tcc = ToolCallContext::new(self, request, context);
            self.tool_router.call(tcc).await
        };
        let response = bound_errors(response);
        audit::tool_call(&name, args.as_ref(), &response);
        response
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let resources = resources::all()
            .into_iter()
            .map(|d| {
                Resource::new(d.uri, d.name)
                    .with_description(d.description)
                    .with_mime_type("text/markdown")
                    .with_size(d.text.len() as u64)
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let doc = resources::find(&request.uri).ok_or_else(|| {
            ErrorData::resource_not_found(
                format!(
                    "no resource {}; resources/list has them all",
                    quote(&request.uri)
                ),
                None,
            )
        })?;
        Ok(ReadResourceResponse::Complete(ReadResourceResult::new(
            vec![ResourceContents::text(doc.text, doc.uri).with_mime_type("text/markdown")],
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_of_another_kind_are_refused() {
        let o = TapOptions {
            frequency_hz: Some(99),
            ..Default::default()
        };
        let err = kind_config(Kind::SyscallStats, &o).unwrap_err();
        assert_eq!(
            err,
            "option frequency_hz is for cpu-profile, and this tap is syscall-stats"
        );
        assert!(kind_config(Kind::CpuProfile, &o).is_ok());
        let o = TapOptions {
            interval: Some("1s".into()),
            ..Default::default()
        };
        assert!(kind_config(Kind::CpuProfile, &o).is_err());
        for &k in Kind::ALL {
            let config = kind_config(k, &TapOptions::default()).unwrap();
            let spec = spec(k, None, &Target::default(), config);
            assert_eq!(spec.kind, pb::CollectorKind::from(k) as i32);
            assert_eq!(spec.labels.get("started-by").unwrap(), "coral-mcp");
        }
    }

    #[test]
    fn bad_input_is_quoted_bounded() {
        let huge = format!("\n{}", "x".repeat(100_000));
        let err = parse_human_duration("duration", &huge).unwrap_err();
        assert!(err.len() < 300, "{}", err.len());
        assert!(!err.contains('\n'));
        let err = serde_json::from_value::<StartTap>(serde_json::json!({"kind": huge}))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 500, "{}", err.len());
    }

    #[test]
    fn argument_errors_are_cut() {
        let long = format!("{ARGUMENT_ERROR} unknown field `{}`", "x".repeat(100_000));
        let r = rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(long)]);
        let Ok(CallToolResponse::Complete(r)) = bound_errors(Ok(r.into())) else {
            panic!("not a complete result");
        };
        let text = &r.content[0].as_text().unwrap().text;
        assert!(text.len() < ARGUMENT_ERROR_BYTES + 40, "{}", text.len());
        assert!(text.ends_with("(100050 bytes, cut)"), "{text}");
        let Err(e) = bound_errors(Err(ErrorData::invalid_params("y".repeat(10_000), None))) else {
            panic!("not an error");
        };
        assert!(e.message.len() < MESSAGE_BYTES + 40);
    }

    fn unconnected() -> Backend {
        Backend::agent(crate::client::unconnected(), "unix:///nowhere")
    }

    #[tokio::test]
    async fn schemas_are_objects_with_descriptions() {
        let server = CoralMcp::new(unconnected(), false);
        let tools = server.tool_router.list_all();
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(
            names,
            [
                "capabilities",
                "diagnose",
                "list_taps",
                "start_tap",
                "stop_tap",
                "tap_result"
            ]
        );
        for t in &tools {
            assert_eq!(t.input_schema.get("type").unwrap(), "object", "{}", t.name);
            assert!(t.output_schema.is_some(), "{}", t.name);
            assert!(t.description.as_ref().unwrap().len() > 80, "{}", t.name);
        }
        let read_only = CoralMcp::new(unconnected(), true);
        assert_eq!(
            read_only.tool_names(),
            ["capabilities", "list_taps", "tap_result"]
        );
    }
}
