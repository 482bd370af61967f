//! What to collect and from whom: shared by `tap start` and `tap run`.

use clap::ValueEnum;
use coral_proto::v1::{self as pb, collector_spec::Config};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Count, errors and latency per syscall (raw tracepoints sys_enter/sys_exit).
    SyscallStats,
    /// HTTP/1.x request latency per route and status.
    HttpLatency,
    /// Sampled, symbolized CPU stacks.
    CpuProfile,
    /// TCP connection lifecycle, RTT, retransmits, resets.
    TcpMetrics,
    /// Memory per process and cgroup, time to the limit, OOM kills.
    Memory,
}

impl From<Kind> for pb::CollectorKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::SyscallStats => pb::CollectorKind::SyscallStats,
            Kind::HttpLatency => pb::CollectorKind::HttpLatency,
            Kind::CpuProfile => pb::CollectorKind::CpuProfile,
            Kind::TcpMetrics => pb::CollectorKind::TcpMetrics,
            Kind::Memory => pb::CollectorKind::Memory,
        }
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Sizes: `4096`, `512KiB`, `1MiB`, `2GiB` (also `K`, `M`, `G`: powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 4096, 512KiB, 1MiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(format!("{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Human durations: `500ms`, `60s`, `1m30s`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 30s, 1m30s, 500ms)"))
}

#[derive(Debug, clap::Args)]
pub struct SpecArgs {
    /// Collector kind.
    #[arg(long, value_enum)]
    pub kind: Kind,

    /// How long it runs before it expires by itself (agent default: 60s).
    #[arg(long, short, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Only these processes (tgid). Repeat for several.
    #[arg(long = "pid", short = 'p')]
    pub pids: Vec<u32>,

    /// Only tasks in this cgroup v2 (and below): a path under the cgroup2 mount.
    /// memory also takes a cgroup v1 memory path (/sys/fs/cgroup/memory/...).
    #[arg(long)]
    pub cgroup: Option<String>,

    /// Only tasks with this exact name (comm, at most 15 bytes).
    #[arg(long)]
    pub comm: Option<String>,

    /// Attach a label to every record, e.g. --label service=checkout. Repeatable.
    #[arg(long = "label", short = 'l', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Aggregate snapshot interval (syscall-stats, tcp-metrics, http-latency; default 1s).
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Break syscall counts down per process (syscall-stats).
    #[arg(long)]
    pub per_process: bool,

    /// Count calls and errors without timing them: one hook instead of two,
    /// about a third of the overhead per syscall (syscall-stats).
    #[arg(long)]
    pub no_latency: bool,

    /// Samples per second per CPU (cpu-profile; default 49).
    #[arg(long, short = 'F')]
    pub frequency: Option<u32>,

    /// Count samples of idle CPUs too (cpu-profile).
    #[arg(long)]
    pub include_idle: bool,

    /// Only connections on this local port (tcp-metrics). Repeatable.
    #[arg(long = "local-port")]
    pub local_ports: Vec<u16>,

    /// Only connections to this remote port (tcp-metrics). Repeatable.
    #[arg(long = "remote-port")]
    pub remote_ports: Vec<u16>,

    /// Only connections whose remote address is in this prefix, e.g. 10.0.0.0/8 (tcp-metrics).
    #[arg(long)]
    pub remote_prefix: Option<String>,

    /// Keep one RTT sample of every N ACKs (tcp-metrics; default 1).
    #[arg(long)]
    pub rtt_sample_every: Option<u32>,

    /// Also trace outgoing requests made by the target (http-latency).
    #[arg(long)]
    pub client_side: bool,

    /// Distinct (method, route, status) groups kept (http-latency; default 256).
    #[arg(long)]
    pub max_routes: Option<u32>,

    /// Window of the growth fit (memory; default 60s).
    #[arg(long, value_parser = parse_duration)]
    pub window: Option<Duration>,

    /// The confidence is the probability of reaching the limit within this (memory; default 1h).
    #[arg(long, value_parser = parse_duration)]
    pub horizon: Option<Duration>,

    /// The kernel reports a process when its RSS moved by this much (memory; default 1MiB).
    #[arg(long, value_parser = parse_size)]
    pub rss_threshold: Option<u64>,

    /// Process rows per snapshot, the soonest at a limit first (memory; default 50).
    #[arg(long)]
    pub max_processes: Option<u32>,
}

impl SpecArgs {
    pub fn to_spec(&self) -> pb::CollectorSpec {
        let interval_ns = self.interval.map_or(0, |d| d.as_nanos() as u64);
        let config = match self.kind {
            Kind::SyscallStats => Config::SyscallStats(pb::SyscallStatsConfig {
                interval_ns,
                per_process: self.per_process,
                latency: if self.no_latency {
                    pb::SyscallLatency::Off
                } else {
                    pb::SyscallLatency::Exact
                } as i32,
            }),
            Kind::CpuProfile => Config::CpuProfile(pb::CpuProfileConfig {
                frequency_hz: self.frequency.unwrap_or(0),
                include_idle: self.include_idle,
            }),
            Kind::TcpMetrics => Config::TcpMetrics(pb::TcpMetricsConfig {
                interval_ns,
                local_ports: self.local_ports.iter().map(|&p| u32::from(p)).collect(),
                remote_ports: self.remote_ports.iter().map(|&p| u32::from(p)).collect(),
                remote_prefix: self.remote_prefix.clone().unwrap_or_default(),
                rtt_sample_every: self.rtt_sample_every.unwrap_or(0),
            }),
            Kind::HttpLatency => Config::HttpLatency(pb::HttpLatencyConfig {
                interval_ns,
                client_side: self.client_side,
                max_routes: self.max_routes.unwrap_or(0),
            }),
            Kind::Memory => Config::Memory(pb::MemoryConfig {
                interval_ns,
                window_ns: self.window.map_or(0, |d| d.as_nanos() as u64),
                threshold_bytes: self.rss_threshold.unwrap_or(0),
                horizon_ns: self.horizon.map_or(0, |d| d.as_nanos() as u64),
                max_processes: self.max_processes.unwrap_or(0),
            }),
        };
        pb::CollectorSpec {
            kind: pb::CollectorKind::from(self.kind) as i32,
            duration_ns: self.duration.map(|d| d.as_nanos() as u64),
            filter: Some(pb::TargetFilter {
                pids: self.pids.clone(),
                cgroup: self.cgroup.clone().unwrap_or_default(),
                comm: self.comm.clone().unwrap_or_default(),
            }),
            labels: self.labels.iter().cloned().collect(),
            config: Some(config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_human() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("1TB").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn labels_need_a_key() {
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("=x").is_err());
        assert!(parse_label("novalue").is_err());
    }
}
