//! The agent's own types for collectors and their records. Proto types stay at
//! the gRPC edge (`server::convert`); everything inside speaks these.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::kinds::Kind;

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
    /// cgroup v2 path as the client gave it (or the cgroup of `container`).
    pub cgroup: Option<String>,
    pub comm: Option<String>,
    /// A container id or unique prefix, as the client gave it; the manager
    /// resolves it to that container's cgroup.
    pub container: Option<String>,
}

impl TargetFilter {
    /// True when nothing narrows the target: the whole machine is traced.
    pub fn is_whole_machine(&self) -> bool {
        self.pids.is_empty()
            && self.cgroup.is_none()
            && self.comm.is_none()
            && self.container.is_none()
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
    /// Serve its results as metrics (`/metrics`, OTLP): see `crate::export`.
    pub export: bool,
    /// `None`: defaults for the kind.
    pub config: Option<KindConfig>,
}
