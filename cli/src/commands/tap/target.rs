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
    /// Execs and process exits: argv, exit code, signal, lifetime, container.
    ProcessEvents,
}

impl From<Kind> for pb::CollectorKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::SyscallStats => pb::CollectorKind::SyscallStats,
            Kind::HttpLatency => pb::CollectorKind::HttpLatency,
            Kind::CpuProfile => pb::CollectorKind::CpuProfile,
            Kind::TcpMetrics => pb::CollectorKind::TcpMetrics,
            Kind::ProcessEvents => pb::CollectorKind::ProcessEvents,
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

    /// Trace only the listed pids, not the processes they fork (process-events;
    /// by default a pid filter follows children).
    #[arg(long)]
    pub no_follow: bool,

    /// Exits of processes younger than this count as short-lived (process-events; default 1s).
    #[arg(long, value_parser = parse_duration)]
    pub short_lived: Option<Duration>,

    /// Arguments kept per exec (process-events; default 64).
    #[arg(long)]
    pub max_args: Option<u32>,

    /// Kernel ring buffer size in bytes, a power of two >= 4096 (process-events; for tests).
    #[arg(long, hide = true)]
    pub ring_buffer_bytes: Option<u32>,
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
            Kind::ProcessEvents => Config::ProcessEvents(pb::ProcessEventsConfig {
                interval_ns,
                no_follow: self.no_follow,
                short_lived_ns: self.short_lived.map_or(0, |d| d.as_nanos() as u64),
                max_args: self.max_args.unwrap_or(0),
                max_arg_bytes: 0,
                ring_buffer_bytes: self.ring_buffer_bytes.unwrap_or(0),
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
    fn labels_need_a_key() {
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("=x").is_err());
        assert!(parse_label("novalue").is_err());
    }
}
