//! Collectors: one module per kind, each owning its BPF object, its attach
//! logic and its map readers.
//!
//! A [`CollectorFactory`] says whether its kind can run on this node and starts
//! instances; a running [`Collector`] owns every kernel object it created, so
//! dropping it detaches and unloads everything (RAII). The manager drives it:
//! `snapshot` every interval, `detach` at the end, one last `snapshot`, drop.

use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::domain::{Kind, KindConfig, Payload, Spec};
use std::time::Duration;

#[cfg(target_os = "linux")]
mod bpf;
#[cfg(target_os = "linux")]
pub mod cpu_profile;
#[cfg(target_os = "linux")]
mod filter;
#[cfg(target_os = "linux")]
pub mod http_latency;
#[cfg(target_os = "linux")]
pub mod memory;
#[cfg(target_os = "linux")]
pub mod syscall_stats;
#[cfg(target_os = "linux")]
pub mod tcp_metrics;

/// Why a collector could not start or read its kernel state.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The BPF object could not be loaded (verifier, map creation, BTF).
    #[error("loading BPF object: {0}")]
    Load(String),
    /// A program could not be attached to its hook.
    #[error("attaching {program} to {hook}: {reason}")]
    Attach {
        program: &'static str,
        hook: &'static str,
        reason: String,
    },
    /// A map could not be read.
    #[error("reading map {map}: {reason}")]
    Read { map: &'static str, reason: String },
    /// The filter could not be resolved (e.g. a cgroup path that does not exist).
    #[error("{0}")]
    Filter(String),
}

/// What a collector instance needs to start, resolved by the manager.
#[derive(Clone, Debug)]
pub struct StartContext {
    pub spec: Spec,
    /// The agent's own tgid, excluded from tracing.
    pub agent_pid: u32,
    /// Where cgroup paths are resolved (the cgroup2 mount), if any.
    pub cgroup2_root: Option<std::path::PathBuf>,
}

/// A running collector. Dropping it detaches and unloads everything it owns.
pub trait Collector: Send {
    /// Ids of the BPF programs it loaded, for `GetCollector` and leak checks.
    fn program_ids(&self) -> Vec<u32>;

    /// How often the manager calls [`collect`](Self::collect).
    fn tick_interval(&self) -> Duration;

    /// Drains what the kernel has into `out`: discrete events and/or an
    /// aggregate snapshot. `elapsed` is the time since start. The last call,
    /// made after [`detach`](Self::detach), has `last` set and must end with
    /// the collector's final result.
    fn collect(
        &mut self,
        elapsed: Duration,
        last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError>;

    /// Detaches every program now; maps stay readable for the final collect.
    fn detach(&mut self);
}

/// Builds collectors of one kind.
pub trait CollectorFactory: Send + Sync {
    fn kind(&self) -> Kind;

    /// Kernel hooks the kind attaches to, as shown in capabilities.
    fn hooks(&self) -> &'static [&'static str];

    /// `Err(reason)` when this node cannot run the kind.
    fn availability(&self, caps: &HostCapabilities) -> Result<(), String>;

    /// Checks the kind's own configuration; `Err` becomes INVALID_ARGUMENT.
    /// The manager has already checked that the config is for this kind.
    fn validate(&self, config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let _ = (config, limits);
        Ok(())
    }

    /// Checks a cgroup filter before anything loads; `Err` becomes
    /// INVALID_ARGUMENT. A cgroup v2 directory by default; kinds that also
    /// take other hierarchies (memory: the v1 memory controller) override it.
    fn check_cgroup(
        &self,
        cgroup2_root: Option<&std::path::Path>,
        path: &str,
    ) -> Result<(), String> {
        check_cgroup(cgroup2_root, path)
    }

    /// Loads and attaches. Blocking (the verifier can take milliseconds).
    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError>;
}

/// Checks that a cgroup filter names a cgroup v2 directory, before anything
/// is loaded, so a typo is an invalid argument rather than a failed start.
pub fn check_cgroup(root: Option<&std::path::Path>, path: &str) -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        let root = root.ok_or("cgroup filter given but no cgroup2 mount found")?;
        filter::resolve_cgroup(root, path)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (root, path);
        Err("cgroup filters need Linux".into())
    }
}

/// `e` and its sources on one line: aya's top-level messages alone rarely say
/// which syscall or verifier step failed.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Many errors already print their source; say each part once.
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The factories this agent was built with.
pub fn builtin() -> Vec<Box<dyn CollectorFactory>> {
    #[cfg(target_os = "linux")]
    {
        vec![
            Box::new(syscall_stats::SyscallStatsFactory),
            Box::new(tcp_metrics::TcpMetricsFactory),
            Box::new(cpu_profile::CpuProfileFactory),
            Box::new(http_latency::HttpLatencyFactory),
            Box::new(memory::MemoryFactory),
        ]
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}
