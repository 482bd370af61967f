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
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::SyscallStats,
        Kind::HttpLatency,
        Kind::CpuProfile,
        Kind::TcpMetrics,
    ];

    /// The CLI's spelling, used in messages too.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SyscallStats => "syscall-stats",
            Kind::HttpLatency => "http-latency",
            Kind::CpuProfile => "cpu-profile",
            Kind::TcpMetrics => "tcp-metrics",
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

/// Per-kind configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KindConfig {
    SyscallStats(SyscallStatsConfig),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyscallStatsConfig {
    pub interval: Duration,
    pub per_process: bool,
}

impl Default for SyscallStatsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            per_process: false,
        }
    }
}

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

/// A record's content.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    SyscallStats(SyscallStats),
}

/// Cumulative syscall statistics since the collector started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyscallStats {
    pub elapsed: Duration,
    pub syscalls: Vec<SyscallStat>,
    pub processes: Vec<ProcessSyscalls>,
    pub dropped: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyscallStat {
    pub nr: u32,
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    /// `latency_log2[i]`: calls that took `[2^i, 2^(i+1))` ns.
    pub latency_log2: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessSyscalls {
    pub pid: u32,
    pub comm: String,
    pub syscalls: Vec<SyscallStat>,
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
