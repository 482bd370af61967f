//! Collector results as metrics: what each payload type becomes.
//!
//! The matches below have no `_` arm: a payload type (or a kind) added to
//! the API does not build until someone decides here how it is exported,
//! or that it is not. Aggregates are cumulative since the collector started,
//! so the newest one is the whole result: the exporter reads only that
//! (`EventLog::latest_aggregate`). Discrete events (a request, a closed
//! connection, an exec) are already counted in their kind's aggregate.

use super::{Bounds, Desc, Labels, Merge, Point, Type, Unit, Value};
use crate::containers::parse_cgroup_path;
use crate::domain::{Kind, Payload};
use coral_proto::v1 as pb;

/// Whether a payload is a cumulative aggregate snapshot (or one event).
pub fn is_aggregate(payload: &Payload) -> bool {
    match payload {
        Payload::SyscallStats(_)
        | Payload::HttpStats(_)
        | Payload::CpuProfile(_)
        | Payload::TcpStats(_)
        | Payload::ProcessStats(_)
        | Payload::MemoryStats(_)
        | Payload::FileIoStats(_)
        | Payload::DnsStats(_)
        | Payload::SecurityStats(_) => true,
        Payload::HttpRequest(_)
        | Payload::TcpConnection(_)
        | Payload::ProcessEvent(_)
        | Payload::OomKill(_)
        | Payload::FileIoEvent(_)
        | Payload::DnsQuery(_)
        | Payload::SecurityEvent(_) => false,
    }
}

/// Whether a kind's results can be exported (`CollectorSpec.export`).
pub fn exported(kind: Kind) -> bool {
    match kind {
        Kind::SyscallStats
        | Kind::HttpLatency
        | Kind::TcpMetrics
        | Kind::ProcessEvents
        | Kind::Memory
        | Kind::FileIo
        | Kind::Dns
        | Kind::Security => true,
        // Stacks are no time series: profiles stay pprof.
        Kind::CpuProfile => false,
    }
}

/// The points one aggregate makes.
pub fn points(payload: &Payload) -> Vec<Point> {
    let mut out = Vec::new();
    match payload {
        Payload::SyscallStats(s) => syscalls(s, &mut out),
        Payload::HttpStats(s) => http(s, &mut out),
        Payload::TcpStats(s) => tcp(s, &mut out),
        Payload::ProcessStats(s) => processes(s, &mut out),
        Payload::MemoryStats(s) => memory(s, &mut out),
        Payload::FileIoStats(s) => file_io(s, &mut out),
        Payload::DnsStats(s) => dns(s, &mut out),
        Payload::SecurityStats(s) => security(s, &mut out),
        Payload::CpuProfile(_)
        | Payload::HttpRequest(_)
        | Payload::TcpConnection(_)
        | Payload::ProcessEvent(_)
        | Payload::OomKill(_)
        | Payload::FileIoEvent(_)
        | Payload::DnsQuery(_)
        | Payload::SecurityEvent(_) => {}
    }
    out
}

const fn counter(name: &'static str, help: &'static str, unit: Unit) -> Desc {
    Desc {
        name,
        help,
        unit,
        ty: Type::Counter,
        merge: Merge::Sum,
    }
}

const fn gauge(name: &'static str, help: &'static str, unit: Unit, merge: Merge) -> Desc {
    Desc {
        name,
        help,
        unit,
        ty: Type::Gauge,
        merge,
    }
}

const fn histogram(name: &'static str, help: &'static str, bounds: Bounds) -> Desc {
    Desc {
        name,
        help,
        unit: Unit::Seconds,
        ty: Type::Histogram(bounds),
        merge: Merge::Sum,
    }
}

/// Nanoseconds, from 256 ns to 2^34 ns (17.2 s), a factor of 4 apart: a
/// whole-machine collector has a row for every syscall anything makes, so
/// its buckets are what a scrape mostly carries.
const SYSCALL_BOUNDS: Bounds = Bounds::Log2 {
    min: 8,
    max: 34,
    step: 2,
    scale: 1e-9,
};
/// Nanoseconds, from 16.4 µs to 2^36 ns (68.7 s), a factor of 2 apart.
const HTTP_BOUNDS: Bounds = Bounds::Log2 {
    min: 14,
    max: 36,
    step: 1,
    scale: 1e-9,
};
/// Microseconds, from 16 µs to 2^24 µs (16.8 s), a factor of 2 apart.
const RTT_BOUNDS: Bounds = Bounds::Log2 {
    min: 4,
    max: 24,
    step: 1,
    scale: 1e-6,
};

pub static KERNEL_DROPPED: Desc = counter(
    "coral.collector.kernel.dropped",
    "Events or entries the kernel side of an exported collector could not hand over (ring buffer or map full).",
    Unit::Count("{event}"),
);

pub static SYSCALL_CALLS: Desc = counter(
    "coral.syscall.calls",
    "System calls made by the collector's targets, per syscall.",
    Unit::Count("{call}"),
);
pub static SYSCALL_ERRORS: Desc = counter(
    "coral.syscall.errors",
    "System calls that returned an error (a negative value), per syscall.",
    Unit::Count("{call}"),
);
pub static SYSCALL_DURATION: Desc = histogram(
    "coral.syscall.duration",
    "Time from syscall entry to exit (collectors with latency on).",
    SYSCALL_BOUNDS,
);

pub static HTTP_SERVER_DURATION: Desc = histogram(
    "http.server.request.duration",
    "Duration of HTTP server requests: first request byte read to first response byte written (OpenTelemetry HTTP semantic conventions).",
    HTTP_BOUNDS,
);
pub static HTTP_CLIENT_DURATION: Desc = histogram(
    "http.client.request.duration",
    "Duration of HTTP client requests: first request byte written to first response byte read (OpenTelemetry HTTP semantic conventions).",
    HTTP_BOUNDS,
);

pub static TCP_OPENED: Desc = counter(
    "coral.tcp.connections.opened",
    "TCP connections opened (connected or accepted), per remote.",
    Unit::Count("{connection}"),
);
pub static TCP_CLOSED: Desc = counter(
    "coral.tcp.connections.closed",
    "TCP connections closed, per remote.",
    Unit::Count("{connection}"),
);
pub static TCP_SENT: Desc = counter(
    "coral.tcp.sent",
    "Bytes sent on closed TCP connections, per remote.",
    Unit::Bytes,
);
pub static TCP_RECEIVED: Desc = counter(
    "coral.tcp.received",
    "Bytes received on closed TCP connections, per remote.",
    Unit::Bytes,
);
pub static TCP_RETRANSMITS: Desc = counter(
    "coral.tcp.retransmits",
    "TCP segments retransmitted, per remote.",
    Unit::Count("{segment}"),
);
pub static TCP_RESETS_SENT: Desc = counter(
    "coral.tcp.resets.sent",
    "TCP resets sent, per remote.",
    Unit::Count("{reset}"),
);
pub static TCP_RESETS_RECEIVED: Desc = counter(
    "coral.tcp.resets.received",
    "TCP resets received, per remote.",
    Unit::Count("{reset}"),
);
pub static TCP_RTT: Desc = histogram(
    "coral.tcp.rtt",
    "Smoothed round-trip time samples (tcp_probe), per remote.",
    RTT_BOUNDS,
);

pub static PROCESS_EXECS: Desc = counter(
    "coral.process.execs",
    "Successful execs by the collector's targets.",
    Unit::Count("{exec}"),
);
pub static PROCESS_EXITS: Desc = counter(
    "coral.process.exits",
    "Process exits, by exit code and killing signal (0: none).",
    Unit::Count("{exit}"),
);
pub static PROCESS_SHORT_LIVED: Desc = counter(
    "coral.process.short_lived_exits",
    "Exits of processes that lived less than the collector's short-lived threshold.",
    Unit::Count("{exit}"),
);

pub static MEMORY_USAGE: Desc = gauge(
    "coral.memory.usage",
    "Memory charged to the cgroup (memory.current, or memory.usage_in_bytes on cgroup v1).",
    Unit::Bytes,
    Merge::Sum,
);
pub static MEMORY_LIMIT: Desc = gauge(
    "coral.memory.limit",
    "The lowest memory limit of the cgroup and its ancestors (cgroups with one).",
    Unit::Bytes,
    Merge::Drop,
);
pub static MEMORY_GROWTH: Desc = gauge(
    "coral.memory.growth_rate",
    "Fitted growth of the cgroup's unreclaimable memory (anon + shmem + kernel) over the collector's window.",
    Unit::BytesPerSecond,
    Merge::Drop,
);
pub static MEMORY_TIME_TO_LIMIT: Desc = gauge(
    "coral.memory.time_to_limit",
    "Predicted time until the cgroup reaches its limit at the fitted rate (only while significantly growing toward it).",
    Unit::Seconds,
    Merge::Drop,
);
pub static MEMORY_OOM_KILLS: Desc = counter(
    "coral.memory.oom_kills",
    "OOM kills in the cgroup (memory.events oom_kill; memory.oom_control on v1).",
    Unit::Count("{kill}"),
);
pub static PROCESS_RSS: Desc = gauge(
    "coral.memory.process.rss",
    "Resident memory of a process (anon + file + shmem), the fastest growing ones.",
    Unit::Bytes,
    Merge::Sum,
);
pub static PROCESS_GROWTH: Desc = gauge(
    "coral.memory.process.growth_rate",
    "Fitted growth of a process's anon + shmem memory.",
    Unit::BytesPerSecond,
    Merge::Drop,
);
pub static PROCESS_TIME_TO_LIMIT: Desc = gauge(
    "coral.memory.process.time_to_limit",
    "Predicted time until a process's memory reaches its cgroup's limit (else MemTotal).",
    Unit::Seconds,
    Merge::Drop,
);

/// Every metric results can make, for the docs test and the dashboard test.
/// Nanoseconds, from 1 µs to 2^34 ns (17.2 s), a factor of 4 apart.
const FILE_IO_BOUNDS: Bounds = Bounds::Log2 {
    min: 10,
    max: 34,
    step: 2,
    scale: 1e-9,
};

pub static FILE_IO_OPERATIONS: Desc = counter(
    "coral.file.io.operations",
    "Opens, reads, writes and fsyncs per (process, path as opened), for the top files by bytes.",
    Unit::Count("{operation}"),
);
pub static FILE_IO_BYTES: Desc = counter(
    "coral.file.io",
    "Bytes read and written per (process, path as opened), for the top files by bytes.",
    Unit::Bytes,
);
pub static FILE_IO_DURATION: Desc = histogram(
    "coral.file.io.duration",
    "Time from entry to return of reads and writes, per (process, path as opened).",
    FILE_IO_BOUNDS,
);
pub static FILE_OPEN_ERRORS: Desc = counter(
    "coral.file.open.errors",
    "Failed opens per (process, path as given, errno).",
    Unit::Count("{open}"),
);

/// Nanoseconds, from 16.4 µs to 2^35 ns (34.4 s), a factor of 2 apart.
const DNS_BOUNDS: Bounds = Bounds::Log2 {
    min: 14,
    max: 35,
    step: 1,
    scale: 1e-9,
};

pub static DNS_QUERIES: Desc = counter(
    "coral.dns.queries",
    "DNS queries of the collector's targets per (question name, type, response code or TIMEOUT).",
    Unit::Count("{query}"),
);
pub static DNS_LOOKUP_DURATION: Desc = histogram(
    "coral.dns.lookup.duration",
    "Time from a DNS query leaving to its response arriving, per (question name, type, response code).",
    DNS_BOUNDS,
);

pub static SECURITY_EVENTS: Desc = counter(
    "coral.security.events",
    "Credential and privilege events of the collector's targets, per event type.",
    Unit::Count("{event}"),
);
pub static SECURITY_FAILED: Desc = counter(
    "coral.security.failed",
    "Security events whose call failed (a denied setuid, mount, ptrace ...), per event type.",
    Unit::Count("{event}"),
);
pub static SECURITY_CALLS: Desc = counter(
    "coral.security.calls",
    "Security events per syscall and error (none when the call succeeded), for the 100 most frequent.",
    Unit::Count("{call}"),
);

pub static ALL: &[&Desc] = &[
    &KERNEL_DROPPED,
    &SYSCALL_CALLS,
    &SYSCALL_ERRORS,
    &SYSCALL_DURATION,
    &HTTP_SERVER_DURATION,
    &HTTP_CLIENT_DURATION,
    &TCP_OPENED,
    &TCP_CLOSED,
    &TCP_SENT,
    &TCP_RECEIVED,
    &TCP_RETRANSMITS,
    &TCP_RESETS_SENT,
    &TCP_RESETS_RECEIVED,
    &TCP_RTT,
    &PROCESS_EXECS,
    &PROCESS_EXITS,
    &PROCESS_SHORT_LIVED,
    &MEMORY_USAGE,
    &MEMORY_LIMIT,
    &MEMORY_GROWTH,
    &MEMORY_TIME_TO_LIMIT,
    &MEMORY_OOM_KILLS,
    &PROCESS_RSS,
    &PROCESS_GROWTH,
    &PROCESS_TIME_TO_LIMIT,
    &FILE_IO_OPERATIONS,
    &FILE_IO_BYTES,
    &FILE_IO_DURATION,
    &FILE_OPEN_ERRORS,
    &DNS_QUERIES,
    &DNS_LOOKUP_DURATION,
    &SECURITY_EVENTS,
    &SECURITY_FAILED,
    &SECURITY_CALLS,
];

fn labels<const N: usize>(pairs: [(&'static str, String); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

fn log2_histogram(bounds: Bounds, counts: &[u64], sum: f64) -> Value {
    let buckets = bounds.fold_log2(counts);
    Value::Histogram {
        count: buckets.iter().sum(),
        buckets,
        sum,
    }
}

fn kernel_dropped(n: u64, out: &mut Vec<Point>) {
    out.push(Point::new(&KERNEL_DROPPED, Vec::new(), Value::Int(n)));
}

fn syscalls(s: &pb::SyscallStats, out: &mut Vec<Point>) {
    let pb::SyscallStats {
        elapsed_ns: _,
        syscalls,
        // Per-process rows break the same counts down by pid: the
        // aggregate rows already carry them, bounded by syscall.
        processes: _,
        dropped,
        timed,
    } = s;
    kernel_dropped(*dropped, out);
    for sc in syscalls {
        let l = labels([("syscall", sc.name.clone())]);
        out.push(Point::new(&SYSCALL_CALLS, l.clone(), Value::Int(sc.count)));
        out.push(Point::new(
            &SYSCALL_ERRORS,
            l.clone(),
            Value::Int(sc.errors),
        ));
        if *timed {
            out.push(Point::new(
                &SYSCALL_DURATION,
                l,
                log2_histogram(SYSCALL_BOUNDS, &sc.latency_log2, sc.total_ns as f64 / 1e9),
            ));
        }
    }
}

fn http(s: &pb::HttpStats, out: &mut Vec<Point>) {
    let pb::HttpStats {
        elapsed_ns: _,
        routes,
        dropped_events,
        // Those requests are in the routes: nothing to export apart.
        unrecorded_requests: _,
    } = s;
    kernel_dropped(*dropped_events, out);
    for r in routes {
        let status = if r.status == 0 {
            // No response seen (the connection closed first).
            String::new()
        } else {
            r.status.to_string()
        };
        let (desc, route_key) = if r.client {
            (&HTTP_CLIENT_DURATION, "url.template")
        } else {
            (&HTTP_SERVER_DURATION, "http.route")
        };
        let l = labels([
            ("http.request.method", r.method.clone()),
            (route_key, r.route.clone()),
            ("http.response.status_code", status),
        ]);
        out.push(Point::new(
            desc,
            l,
            log2_histogram(HTTP_BOUNDS, &r.latency_log2, r.total_ns as f64 / 1e9),
        ));
    }
}

fn tcp(s: &pb::TcpStats, out: &mut Vec<Point>) {
    let pb::TcpStats {
        elapsed_ns: _,
        remotes,
        dropped_events,
    } = s;
    kernel_dropped(*dropped_events, out);
    for r in remotes {
        let l = labels([
            ("network.peer.address", r.remote_addr.clone()),
            ("network.peer.port", r.remote_port.to_string()),
            ("network.local.port", r.local_port.to_string()),
        ]);
        for (desc, n) in [
            (&TCP_OPENED, r.opened),
            (&TCP_CLOSED, r.closed),
            (&TCP_SENT, r.bytes_sent),
            (&TCP_RECEIVED, r.bytes_received),
            (&TCP_RETRANSMITS, r.retransmits),
            (&TCP_RESETS_SENT, r.resets_sent),
            (&TCP_RESETS_RECEIVED, r.resets_received),
        ] {
            out.push(Point::new(desc, l.clone(), Value::Int(n)));
        }
        // The kernel keeps no RTT sum: each sample counts at its bucket's
        // midpoint (1.5 x its lower edge), so averages are approximate.
        let sum_us: f64 = r
            .rtt_us_log2
            .iter()
            .enumerate()
            .map(|(i, &n)| n as f64 * 1.5 * (1u64 << i.min(62)) as f64)
            .sum();
        out.push(Point::new(
            &TCP_RTT,
            l,
            log2_histogram(RTT_BOUNDS, &r.rtt_us_log2, sum_us / 1e6),
        ));
    }
}

fn file_io(s: &pb::FileIoStats, out: &mut Vec<Point>) {
    let pb::FileIoStats {
        elapsed_ns: _,
        files,
        // Summed rows and per-process sums repeat the counts of the files.
        other_files: _,
        open_errors,
        processes: _,
        untracked_ops: _,
        dropped_files,
        dropped_events,
        slow_threshold_ns: _,
    } = s;
    kernel_dropped(dropped_events + dropped_files, out);
    for f in files {
        let l = |op: &str| {
            labels([
                ("file.path", f.path.clone()),
                ("process.pid", f.pid.to_string()),
                ("file.operation", op.to_string()),
            ])
        };
        for (op, n) in [
            ("open", f.opens),
            ("read", f.reads),
            ("write", f.writes),
            ("fsync", f.fsyncs),
        ] {
            out.push(Point::new(&FILE_IO_OPERATIONS, l(op), Value::Int(n)));
        }
        for (op, n, log2, ns) in [
            ("read", f.read_bytes, &f.read_latency_log2, f.read_ns),
            ("write", f.write_bytes, &f.write_latency_log2, f.write_ns),
        ] {
            out.push(Point::new(&FILE_IO_BYTES, l(op), Value::Int(n)));
            out.push(Point::new(
                &FILE_IO_DURATION,
                l(op),
                log2_histogram(FILE_IO_BOUNDS, log2, ns as f64 / 1e9),
            ));
        }
    }
    for e in open_errors {
        out.push(Point::new(
            &FILE_OPEN_ERRORS,
            labels([
                ("file.path", e.path.clone()),
                ("process.pid", e.pid.to_string()),
                ("error.type", e.error.clone()),
            ]),
            Value::Int(e.count),
        ));
    }
}

fn dns(s: &pb::DnsStats, out: &mut Vec<Point>) {
    let pb::DnsStats {
        elapsed_ns: _,
        names,
        // The totals are sums of the rows.
        queries: _,
        responses: _,
        nxdomain: _,
        servfail: _,
        timeouts: _,
        in_flight: _,
        other_names: _,
        malformed: _,
        dropped_events,
        dropped_inflight,
        timeout_ns: _,
        ports: _,
        tcp: _,
    } = s;
    kernel_dropped(dropped_events + dropped_inflight, out);
    for n in names {
        let l = labels([
            ("dns.question.name", n.name.clone()),
            ("dns.question.type", n.qtype_name.clone()),
            ("dns.response.code", n.rcode_name.clone()),
        ]);
        out.push(Point::new(&DNS_QUERIES, l.clone(), Value::Int(n.count)));
        if !n.timed_out {
            out.push(Point::new(
                &DNS_LOOKUP_DURATION,
                l,
                log2_histogram(DNS_BOUNDS, &n.latency_log2, n.latency_sum_ns as f64 / 1e9),
            ));
        }
    }
}

/// "credentials" for SECURITY_EVENT_TYPE_CREDENTIALS.
fn security_type(t: i32) -> String {
    pb::SecurityEventType::try_from(t)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("SECURITY_EVENT_TYPE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| t.to_string())
}

fn security(s: &pb::SecurityStats, out: &mut Vec<Point>) {
    let pb::SecurityStats {
        elapsed_ns: _,
        types,
        syscalls,
        // Per-process rows would make a series per pid: the events carry them.
        processes: _,
        dropped_events,
        reported_syscalls: _,
    } = s;
    kernel_dropped(*dropped_events, out);
    for t in types {
        let l = labels([("security.event.type", security_type(t.r#type))]);
        out.push(Point::new(
            &SECURITY_EVENTS,
            l.clone(),
            Value::Int(t.events),
        ));
        out.push(Point::new(&SECURITY_FAILED, l, Value::Int(t.failed)));
    }
    for c in syscalls {
        let error = if c.error.is_empty() {
            "none".to_string()
        } else {
            c.error.clone()
        };
        out.push(Point::new(
            &SECURITY_CALLS,
            labels([("syscall", c.syscall.clone()), ("error.type", error)]),
            Value::Int(c.count),
        ));
    }
}

fn processes(s: &pb::ProcessStats, out: &mut Vec<Point>) {
    let pb::ProcessStats {
        elapsed_ns: _,
        execs,
        exits: _,
        executables: _,
        other_execs: _,
        exit_statuses,
        short_lived,
        short_lived_threshold_ns: _,
        top_parents: _,
        dropped_events,
        dropped_execs: _,
        dropped_exits: _,
        untracked_children: _,
    } = s;
    kernel_dropped(*dropped_events, out);
    out.push(Point::new(&PROCESS_EXECS, Vec::new(), Value::Int(*execs)));
    for e in exit_statuses {
        out.push(Point::new(
            &PROCESS_EXITS,
            labels([
                ("process.exit.code", e.exit_code.to_string()),
                ("process.exit.signal", e.signal.to_string()),
            ]),
            Value::Int(e.count),
        ));
    }
    out.push(Point::new(
        &PROCESS_SHORT_LIVED,
        Vec::new(),
        Value::Int(*short_lived),
    ));
}

/// A prediction's rate and, when growing toward the limit, its time to it.
fn prediction(
    p: Option<&pb::MemoryPrediction>,
    l: &Labels,
    growth: &'static Desc,
    time: &'static Desc,
    out: &mut Vec<Point>,
) {
    let Some(p) = p else { return };
    let state = pb::PredictionState::try_from(p.state).unwrap_or_default();
    match state {
        pb::PredictionState::Growing
        | pb::PredictionState::NotGrowing
        | pb::PredictionState::BeyondHorizon
        | pb::PredictionState::AtLimit
        | pb::PredictionState::NoLimit => out.push(Point::new(
            growth,
            l.clone(),
            Value::Float(p.rate_bytes_per_sec),
        )),
        pb::PredictionState::Unspecified | pb::PredictionState::InsufficientData => {}
    }
    match state {
        pb::PredictionState::Growing => out.push(Point::new(
            time,
            l.clone(),
            Value::Float(p.time_to_limit_ns as f64 / 1e9),
        )),
        pb::PredictionState::AtLimit => out.push(Point::new(time, l.clone(), Value::Float(0.0))),
        pb::PredictionState::Unspecified
        | pb::PredictionState::NotGrowing
        | pb::PredictionState::NoLimit
        | pb::PredictionState::InsufficientData
        | pb::PredictionState::BeyondHorizon => {}
    }
}

fn memory(s: &pb::MemoryStats, out: &mut Vec<Point>) {
    let pb::MemoryStats {
        elapsed_ns: _,
        cgroups,
        processes,
        processes_tracked: _,
        dropped_events,
    } = s;
    kernel_dropped(*dropped_events, out);
    for c in cgroups {
        let mut l = labels([("cgroup.path", c.path.clone())]);
        if let Some(container) = parse_cgroup_path(&c.path).container {
            l.push(("container.id".into(), container.id));
        }
        out.push(Point::new(
            &MEMORY_USAGE,
            l.clone(),
            Value::Int(c.current_bytes),
        ));
        if c.limit_bytes > 0 {
            out.push(Point::new(
                &MEMORY_LIMIT,
                l.clone(),
                Value::Int(c.limit_bytes),
            ));
        }
        out.push(Point::new(
            &MEMORY_OOM_KILLS,
            l.clone(),
            Value::Int(c.oom_kills),
        ));
        prediction(
            c.prediction.as_ref(),
            &l,
            &MEMORY_GROWTH,
            &MEMORY_TIME_TO_LIMIT,
            out,
        );
    }
    for p in processes {
        let mut l = labels([
            ("process.pid", p.pid.to_string()),
            ("process.command", p.comm.clone()),
        ]);
        if let Some(container) = parse_cgroup_path(&p.cgroup).container {
            l.push(("container.id".into(), container.id));
        }
        out.push(Point::new(&PROCESS_RSS, l.clone(), Value::Int(p.rss_bytes)));
        prediction(
            p.prediction.as_ref(),
            &l,
            &PROCESS_GROWTH,
            &PROCESS_TIME_TO_LIMIT,
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(points: &'a [Point], desc: &Desc, label: &str) -> &'a Value {
        &points
            .iter()
            .find(|p| p.desc == desc && p.labels.iter().any(|(_, v)| v == label))
            .unwrap_or_else(|| panic!("no {} {label}", desc.name))
            .value
    }

    #[test]
    fn syscall_stats_become_counts_errors_and_histograms() {
        let mut latency = vec![0; 12];
        latency[9] = 3; // [512, 1024) ns
        latency[11] = 2; // [2048, 4096) ns
        let payload = Payload::SyscallStats(pb::SyscallStats {
            syscalls: vec![pb::SyscallStat {
                name: "getppid".into(),
                count: 5,
                errors: 1,
                total_ns: 6000,
                latency_log2: latency,
                ..Default::default()
            }],
            timed: true,
            dropped: 4,
            ..Default::default()
        });
        assert!(is_aggregate(&payload));
        let points = points(&payload);
        assert_eq!(*find(&points, &SYSCALL_CALLS, "getppid"), Value::Int(5));
        assert_eq!(*find(&points, &SYSCALL_ERRORS, "getppid"), Value::Int(1));
        let Value::Histogram {
            buckets,
            count,
            sum,
        } = find(&points, &SYSCALL_DURATION, "getppid")
        else {
            panic!("not a histogram")
        };
        assert_eq!((*count, *sum), (5, 6e-6));
        // Bounds 2^8, 2^10, 2^12 ns...: [512, 1024) is under 2^10 (index
        // 1), [2048, 4096) under 2^12 (index 2).
        assert_eq!((buckets[1], buckets[2]), (3, 2));
        assert_eq!(buckets.len(), SYSCALL_BOUNDS.len() + 1);
        assert!(
            points
                .iter()
                .any(|p| p.desc == &KERNEL_DROPPED && p.value == Value::Int(4))
        );
    }

    #[test]
    fn untimed_syscall_stats_have_no_histogram() {
        let points = points(&Payload::SyscallStats(pb::SyscallStats {
            syscalls: vec![pb::SyscallStat {
                name: "read".into(),
                count: 1,
                ..Default::default()
            }],
            ..Default::default()
        }));
        assert!(points.iter().all(|p| p.desc != &SYSCALL_DURATION));
    }

    #[test]
    fn http_routes_use_the_semantic_convention_attributes() {
        let points = points(&Payload::HttpStats(pb::HttpStats {
            routes: vec![
                pb::HttpRouteStats {
                    method: "GET".into(),
                    route: "/users/{id}".into(),
                    status: 404,
                    count: 2,
                    latency_log2: vec![0; 20],
                    ..Default::default()
                },
                pb::HttpRouteStats {
                    method: "POST".into(),
                    route: "/login".into(),
                    status: 200,
                    client: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }));
        let server = points
            .iter()
            .find(|p| p.desc == &HTTP_SERVER_DURATION)
            .unwrap();
        let keys: Vec<_> = server.labels.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(
            keys,
            [
                "http.request.method",
                "http.route",
                "http.response.status_code"
            ]
        );
        assert_eq!(server.labels[2].1, "404");
        assert!(points.iter().any(|p| p.desc == &HTTP_CLIENT_DURATION));
    }

    #[test]
    fn memory_predictions_export_time_to_limit_only_when_growing() {
        let cgroup = |state: pb::PredictionState| {
            pb::MemoryCgroup {
            path: "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope".into(),
            current_bytes: 100,
            limit_bytes: 1000,
            prediction: Some(pb::MemoryPrediction {
                state: state as i32,
                rate_bytes_per_sec: 10.0,
                time_to_limit_ns: 90_000_000_000,
                ..Default::default()
            }),
            ..Default::default()
        }
        };
        let growing = points(&Payload::MemoryStats(pb::MemoryStats {
            cgroups: vec![cgroup(pb::PredictionState::Growing)],
            ..Default::default()
        }));
        let ttl = growing
            .iter()
            .find(|p| p.desc == &MEMORY_TIME_TO_LIMIT)
            .unwrap();
        assert_eq!(ttl.value, Value::Float(90.0));
        assert!(
            ttl.labels
                .iter()
                .any(|(k, v)| k == "container.id" && v.starts_with("0123"))
        );
        let flat = points(&Payload::MemoryStats(pb::MemoryStats {
            cgroups: vec![cgroup(pb::PredictionState::NotGrowing)],
            ..Default::default()
        }));
        assert!(flat.iter().all(|p| p.desc != &MEMORY_TIME_TO_LIMIT));
        assert!(flat.iter().any(|p| p.desc == &MEMORY_GROWTH));
    }

    #[test]
    fn dns_rows_count_every_outcome_and_time_only_the_answered() {
        let points = points(&Payload::DnsStats(pb::DnsStats {
            names: vec![
                pb::DnsName {
                    name: "alpha.test".into(),
                    qtype_name: "A".into(),
                    rcode: 3,
                    rcode_name: "NXDOMAIN".into(),
                    count: 4,
                    latency_sum_ns: 400_000,
                    latency_log2: {
                        let mut b = vec![0; 17];
                        b[16] = 4; // [65.5, 131) µs
                        b
                    },
                    ..Default::default()
                },
                pb::DnsName {
                    name: "drop.test".into(),
                    qtype_name: "A".into(),
                    timed_out: true,
                    rcode_name: "TIMEOUT".into(),
                    count: 1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }));
        let queries: Vec<_> = points.iter().filter(|p| p.desc == &DNS_QUERIES).collect();
        assert_eq!(queries.len(), 2);
        let keys: Vec<_> = queries[0].labels.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(
            keys,
            [
                "dns.question.name",
                "dns.question.type",
                "dns.response.code"
            ]
        );
        assert_eq!(queries[0].labels[2].1, "NXDOMAIN");
        assert_eq!(queries[0].value, Value::Int(4));
        assert_eq!(queries[1].labels[2].1, "TIMEOUT");
        let timed: Vec<_> = points
            .iter()
            .filter(|p| p.desc == &DNS_LOOKUP_DURATION)
            .collect();
        assert_eq!(timed.len(), 1, "no duration for timeouts");
        let Value::Histogram { count, .. } = &timed[0].value else {
            panic!("{:?}", timed[0].value)
        };
        assert_eq!(*count, 4);
        assert_eq!(DNS_QUERIES.prometheus_name(), "coral_dns_queries_total");
        assert_eq!(
            DNS_LOOKUP_DURATION.prometheus_name(),
            "coral_dns_lookup_duration_seconds"
        );
    }

    #[test]
    fn events_and_profiles_make_no_points() {
        for payload in [
            Payload::DnsQuery(Default::default()),
            Payload::HttpRequest(Default::default()),
            Payload::CpuProfile(Default::default()),
            Payload::OomKill(Default::default()),
            Payload::SecurityEvent(Default::default()),
        ] {
            assert!(points(&payload).is_empty());
        }
        assert!(!exported(Kind::CpuProfile));
    }

    #[test]
    fn security_stats_count_per_type_and_per_syscall_result() {
        let points = points(&Payload::SecurityStats(pb::SecurityStats {
            types: vec![pb::SecurityTypeCount {
                r#type: pb::SecurityEventType::Credentials.into(),
                events: 3,
                failed: 1,
            }],
            syscalls: vec![
                pb::SecuritySyscallCount {
                    syscall: "setuid".into(),
                    error: "EPERM".into(),
                    count: 1,
                },
                pb::SecuritySyscallCount {
                    syscall: "setresuid".into(),
                    error: String::new(),
                    count: 2,
                },
            ],
            dropped_events: 4,
            ..Default::default()
        }));
        assert_eq!(
            *find(&points, &SECURITY_EVENTS, "credentials"),
            Value::Int(3)
        );
        assert_eq!(
            *find(&points, &SECURITY_FAILED, "credentials"),
            Value::Int(1)
        );
        assert_eq!(*find(&points, &SECURITY_CALLS, "EPERM"), Value::Int(1));
        let ok = points
            .iter()
            .find(|p| p.desc == &SECURITY_CALLS && p.labels.iter().any(|(_, v)| v == "setresuid"))
            .unwrap();
        assert!(
            ok.labels
                .iter()
                .any(|(k, v)| k.as_ref() == "error.type" && v == "none")
        );
        let dropped = points.iter().find(|p| p.desc == &KERNEL_DROPPED).unwrap();
        assert_eq!(dropped.value, Value::Int(4));
        assert!(exported(Kind::Security));
    }
}
