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

#[cfg(bpf)]
mod bpf;
#[cfg(bpf)]
pub mod cpu_profile;
#[cfg(bpf)]
pub mod dns;
#[cfg(bpf)]
pub mod file_io;
#[cfg(bpf)]
mod filter;
#[cfg(bpf)]
pub mod http_latency;
#[cfg(bpf)]
pub mod memory;
#[cfg(bpf)]
pub mod process_events;
#[cfg(bpf)]
pub mod security;
#[cfg(bpf)]
pub mod syscall_stats;
#[cfg(bpf)]
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
    /// Uprobes can be attached on this node (probed at agent start).
    pub uprobes: bool,
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

    /// The hooks it would attach on this node, for capabilities: [`hooks`]
    /// unless the kind chooses among them by kernel (tcp-metrics before
    /// Linux 6.3).
    ///
    /// [`hooks`]: CollectorFactory::hooks
    fn hooks_here(&self, caps: &HostCapabilities) -> Vec<&'static str> {
        let _ = caps;
        self.hooks().to_vec()
    }

    /// `Err(reason)` when this node cannot run the kind.
    fn availability(&self, caps: &HostCapabilities) -> Result<(), String>;

    /// What capabilities should say about an available kind: a part it
    /// cannot do on this node (http-latency without uprobes sees no HTTPS).
    fn notes(&self, caps: &HostCapabilities) -> Option<String> {
        let _ = caps;
        None
    }

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

/// Shortest snapshot interval a kind with one accepts: each snapshot reads
/// its maps whole.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Checks a config's `interval_ns` (0: the kind's default): at least
/// [`MIN_INTERVAL`], and no longer than the longest a collector may run,
/// where it would never produce a snapshot.
pub fn check_interval(interval_ns: u64, limits: &Limits) -> Result<(), String> {
    check_interval_from(interval_ns, MIN_INTERVAL, limits)
}

/// [`check_interval`] with the kind's own minimum.
pub fn check_interval_from(interval_ns: u64, min: Duration, limits: &Limits) -> Result<(), String> {
    if interval_ns == 0 {
        return Ok(());
    }
    let interval = Duration::from_nanos(interval_ns);
    if interval < min {
        return Err(format!("interval must be at least {}ms", min.as_millis()));
    }
    if interval > limits.max_duration {
        return Err(format!(
            "interval {} is longer than the agent's maximum duration of {}: it would never produce a snapshot",
            humantime::format_duration(interval),
            humantime::format_duration(limits.max_duration)
        ));
    }
    Ok(())
}

/// Checks that a cgroup filter names a cgroup v2 directory, before anything
/// is loaded, so a typo is an invalid argument rather than a failed start.
pub fn check_cgroup(root: Option<&std::path::Path>, path: &str) -> Result<(), String> {
    let root = root.ok_or("cgroup filter given but no cgroup2 mount found")?;
    crate::cgroup::resolve_cgroup(root, path).map(drop)
}

/// The factory of every kind in an agent built without the `bpf` feature:
/// it serves the whole API, and every start is refused with the reason.
#[cfg(not(bpf))]
pub struct WithoutBpf(pub Kind);

#[cfg(not(bpf))]
impl CollectorFactory for WithoutBpf {
    fn kind(&self) -> Kind {
        self.0
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[]
    }

    fn availability(&self, _: &HostCapabilities) -> Result<(), String> {
        Err(WITHOUT_BPF.into())
    }

    fn start(&self, _: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        Err(CollectorError::Load(WITHOUT_BPF.into()))
    }
}

/// Why every kind is unavailable in an agent built without the `bpf` feature.
pub const WITHOUT_BPF: &str = "built without BPF support (the agent's `bpf` cargo feature is off)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_fit_between_the_minimum_and_the_longest_run() {
        let limits = Limits::default();
        assert_eq!(check_interval(0, &limits), Ok(()));
        assert_eq!(check_interval(100_000_000, &limits), Ok(()));
        assert!(
            check_interval(99_000_000, &limits)
                .unwrap_err()
                .contains("at least 100ms")
        );
        let over = limits.max_duration.as_nanos() as u64 + 1;
        let err = check_interval(over, &limits).unwrap_err();
        assert!(
            err.contains("longer than the agent's maximum duration"),
            "{err}"
        );
    }
}
