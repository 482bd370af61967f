//! The agent's own types for collectors and their records. Proto types stay at
//! the gRPC edge (`server::convert`); everything inside speaks these.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A collector kind the API knows about (whether or not this agent builds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    SyscallStats,
    HttpLatency,
    CpuProfile,
    TcpMetrics,
    Memory,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::SyscallStats,
        Kind::HttpLatency,
        Kind::CpuProfile,
        Kind::TcpMetrics,
        Kind::Memory,
    ];

    /// The CLI's spelling, used in messages too.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SyscallStats => "syscall-stats",
            Kind::HttpLatency => "http-latency",
            Kind::CpuProfile => "cpu-profile",
            Kind::TcpMetrics => "tcp-metrics",
            Kind::Memory => "memory",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle: `Starting -> Running -> {Expired | Stopped | Failed}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Starting,
    Running,
    Expired,
    Stopped,
    Failed,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Expired | State::Stopped | State::Failed)
    }
}

/// Which processes a collector looks at. Empty fields mean "no restriction".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetFilter {
    pub pids: Vec<u32>,
    /// cgroup v2 path as the client gave it.
    pub cgroup: Option<String>,
    pub comm: Option<String>,
}

impl TargetFilter {
    /// True when nothing narrows the target: the whole machine is traced.
    pub fn is_whole_machine(&self) -> bool {
        self.pids.is_empty() && self.cgroup.is_none() && self.comm.is_none()
    }
}

/// Per-kind configuration, as the client sent it. Each collector validates
/// its own (`CollectorFactory::validate`), so adding a kind touches no core code.
pub type KindConfig = coral_proto::v1::collector_spec::Config;

/// A record's content: a kind's aggregate snapshot or one discrete event.
/// Records are pure data on their way to clients, so the wire type is used
/// as is rather than mirrored.
pub type Payload = coral_proto::v1::record::Payload;

/// What a client asked for, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub kind: Kind,
    /// `None`: the agent's default duration.
    pub duration: Option<Duration>,
    pub filter: TargetFilter,
    pub labels: BTreeMap<String, String>,
    /// `None`: defaults for the kind.
    pub config: Option<KindConfig>,
}

/// One entry of a collector's event log.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// From 1, per collector, without holes.
    pub seq: u64,
    pub time_unix_nano: u64,
    /// Taken after the programs were detached: the collector's result.
    pub last: bool,
    pub payload: Payload,
}
