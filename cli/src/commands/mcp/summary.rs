//! Records for a model: each kind's aggregate as a compact, bounded summary
//! (the busiest, slowest, failing or growing rows first, at most `top` of
//! each), and each discrete event as one line. The per-kind helpers of
//! `crate::kinds` (quantiles, forecasts, function shares, peer names) do the
//! arithmetic, so a model and a person read the same numbers.
//!
//! [`summarise`] is one match over every payload type without a `_` arm: a
//! payload added to the API does not build until it is summarised here.

use crate::kinds::{
    cpu_profile, dns, file_io, memory, process_events, security, short_container, tcp_metrics,
};
use crate::render::{bytes, duration_ns, log2_quantile};
use coral_proto::text::Cleaned;
use coral_proto::v1::{self as pb, record::Payload};
use schemars::JsonSchema;
use serde::Serialize;

/// Bytes of one text field taken from a record (a function name, a route,
/// a cgroup path): kernel and agent bound most of them, this bounds all.
const FIELD_BYTES: usize = 256;

/// Frames of the hottest stack shown.
const STACK_FRAMES: usize = 12;

fn clip(s: &str) -> String {
    Cleaned::new(s, FIELD_BYTES).to_string()
}

fn opt_duration(ns: Option<u64>) -> Option<String> {
    ns.map(duration_ns)
}

/// Per second over `elapsed_ns`, one decimal.
fn per_second(count: u64, elapsed_ns: u64) -> f64 {
    if elapsed_ns == 0 {
        return 0.0;
    }
    (count as f64 / (elapsed_ns as f64 / 1e9) * 10.0).round() / 10.0
}

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (n as f64 * 1000.0 / total as f64).round() / 10.0
    }
}

/// What a payload is, for a model.
pub enum Summarised {
    /// A cumulative aggregate: the latest one is the whole answer so far.
    Aggregate(KindSummary),
    /// One discrete event: its type (`http_request`) and a line.
    Event(&'static str, String),
}

/// The latest aggregate of a collector, per kind.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindSummary {
    SyscallStats(SyscallSummary),
    HttpLatency(HttpSummary),
    CpuProfile(CpuSummary),
    TcpMetrics(TcpSummary),
    ProcessEvents(ProcessSummary),
    Memory(MemorySummary),
    FileIo(FileIoSummary),
    Dns(DnsSummary),
    Security(SecuritySummary),
}

impl KindSummary {
    /// One sentence: what the aggregate says overall.
    pub fn headline(&self) -> &str {
        match self {
            KindSummary::SyscallStats(s) => &s.headline,
            KindSummary::HttpLatency(s) => &s.headline,
            KindSummary::CpuProfile(s) => &s.headline,
            KindSummary::TcpMetrics(s) => &s.headline,
            KindSummary::ProcessEvents(s) => &s.headline,
            KindSummary::Memory(s) => &s.headline,
            KindSummary::FileIo(s) => &s.headline,
            KindSummary::Dns(s) => &s.headline,
            KindSummary::Security(s) => &s.headline,
        }
    }
}

/// `payload` for a model, tables cut to `top` rows.
pub fn summarise(payload: &Payload, top: usize) -> Summarised {
    use Summarised::{Aggregate, Event};
    match payload {
        Payload::SyscallStats(s) => Aggregate(KindSummary::SyscallStats(syscalls(s, top))),
        Payload::HttpRequest(r) => Event("http_request", http_request(r)),
        Payload::HttpStats(s) => Aggregate(KindSummary::HttpLatency(http(s, top))),
        Payload::CpuProfile(p) => Aggregate(KindSummary::CpuProfile(cpu(p, top))),
        Payload::TcpConnection(c) => Event("tcp_connection", tcp_connection(c)),
        Payload::TcpStats(s) => Aggregate(KindSummary::TcpMetrics(tcp(s, top))),
        Payload::ProcessEvent(e) => Event("process_event", process_event(e)),
        Payload::ProcessStats(s) => Aggregate(KindSummary::ProcessEvents(processes(s, top))),
        Payload::MemoryStats(s) => Aggregate(KindSummary::Memory(memory_stats(s, top))),
        Payload::OomKill(k) => Event("oom_kill", clip_line(&memory::oom_line(k))),
        Payload::FileIoEvent(e) => Event("file_io_event", file_io_event(e)),
        Payload::FileIoStats(s) => Aggregate(KindSummary::FileIo(file_io_stats(s, top))),
        Payload::DnsQuery(q) => Event("dns_query", dns_query(q)),
        Payload::DnsStats(s) => Aggregate(KindSummary::Dns(dns_stats(s, top))),
        Payload::SecurityEvent(e) => Event("security_event", security_event(e)),
        Payload::SecurityStats(s) => Aggregate(KindSummary::Security(security_stats(s, top))),
    }
}

/// An event line, bounded like every field.
fn clip_line(s: &str) -> String {
    Cleaned::new(s, 2 * FIELD_BYTES).to_string()
}

// ---------------------------------------------------------------- syscall-stats

/// syscall-stats: counts, errors and latency per syscall.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SyscallSummary {
    pub headline: String,
    pub elapsed: String,
    pub calls: u64,
    pub errors: u64,
    /// Distinct syscalls seen.
    pub distinct: usize,
    /// False when latency was not measured (the tap ran with latency off).
    pub timed: bool,
    /// Busiest syscalls, by count.
    pub busiest: Vec<SyscallRow>,
    /// Syscalls that took the most time in all (timed taps only).
    pub slowest: Vec<SyscallRow>,
    /// Syscalls that returned errors, most errors first.
    pub failing: Vec<SyscallRow>,
    /// Per process (taps with per_process), most calls first.
    pub processes: Vec<SyscallProcessRow>,
    /// Per-process entries lost to a full kernel map.
    pub dropped: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SyscallRow {
    pub name: String,
    pub count: u64,
    pub errors: u64,
    pub rate_per_s: f64,
    /// Mean latency of the timed calls, e.g. "350ns".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg: Option<String>,
    /// Upper bound of the log2 bucket holding the median / 99th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99: Option<String>,
    /// Time spent in this syscall, all calls together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    pub total_ns: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SyscallProcessRow {
    pub pid: u32,
    pub comm: String,
    pub calls: u64,
    pub errors: u64,
    /// Its busiest syscall, e.g. "read (1200)".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_syscall: Option<String>,
    /// Short container id, when the process runs in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

fn syscall_row(s: &pb::SyscallStat, elapsed_ns: u64, timed: bool) -> SyscallRow {
    let timed_calls: u64 = s.latency_log2.iter().sum();
    let q = |q| timed.then(|| log2_quantile(&s.latency_log2, q)).flatten();
    SyscallRow {
        name: clip(&s.name),
        count: s.count,
        errors: s.errors,
        rate_per_s: per_second(s.count, elapsed_ns),
        avg: timed
            .then(|| s.total_ns.checked_div(timed_calls))
            .flatten()
            .map(duration_ns),
        p50: opt_duration(q(0.5)),
        p99: opt_duration(q(0.99)),
        total: timed.then(|| duration_ns(s.total_ns)),
        total_ns: s.total_ns,
    }
}

fn container_of(c: Option<&pb::Container>) -> Option<String> {
    match short_container(c) {
        "-" => None,
        id => Some(id.to_string()),
    }
}

pub fn syscalls(s: &pb::SyscallStats, top: usize) -> SyscallSummary {
    let calls: u64 = s.syscalls.iter().map(|c| c.count).sum();
    let errors: u64 = s.syscalls.iter().map(|c| c.errors).sum();
    let row = |c: &pb::SyscallStat| syscall_row(c, s.elapsed_ns, s.timed);
    let mut by_count: Vec<_> = s.syscalls.iter().collect();
    by_count.sort_by(|a, b| b.count.cmp(&a.count).then(a.nr.cmp(&b.nr)));
    let mut by_time = by_count.clone();
    by_time.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.nr.cmp(&b.nr)));
    let mut by_errors: Vec<_> = s.syscalls.iter().filter(|c| c.errors > 0).collect();
    by_errors.sort_by(|a, b| b.errors.cmp(&a.errors).then(a.nr.cmp(&b.nr)));
    let mut procs: Vec<SyscallProcessRow> = s
        .processes
        .iter()
        .map(|p| SyscallProcessRow {
            pid: p.pid,
            comm: clip(&p.comm),
            calls: p.syscalls.iter().map(|c| c.count).sum(),
            errors: p.syscalls.iter().map(|c| c.errors).sum(),
            top_syscall: p
                .syscalls
                .iter()
                .max_by_key(|c| c.count)
                .map(|c| format!("{} ({})", clip(&c.name), c.count)),
            container: container_of(p.container.as_ref()),
        })
        .collect();
    procs.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.pid.cmp(&b.pid)));
    procs.truncate(top);
    let busiest = by_count
        .iter()
        .take(3)
        .map(|c| format!("{} {}", c.name, c.count));
    let headline = format!(
        "{calls} syscalls ({errors} errors) over {}, {} distinct; busiest: {}",
        duration_ns(s.elapsed_ns),
        s.syscalls.len(),
        crate::render::top_list(&busiest.collect::<Vec<_>>(), ", ")
    );
    SyscallSummary {
        headline: clip_line(&headline),
        elapsed: duration_ns(s.elapsed_ns),
        calls,
        errors,
        distinct: s.syscalls.len(),
        timed: s.timed,
        busiest: by_count.iter().take(top).map(|c| row(c)).collect(),
        slowest: if s.timed {
            by_time.iter().take(top).map(|c| row(c)).collect()
        } else {
            Vec::new()
        },
        failing: by_errors.iter().take(top).map(|c| row(c)).collect(),
        processes: procs,
        dropped: s.dropped,
    }
}

// ---------------------------------------------------------------- http-latency

/// http-latency: requests per (method, route, status), with quantiles.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct HttpSummary {
    pub headline: String,
    pub elapsed: String,
    pub requests: u64,
    /// Requests answered with a status >= 500.
    pub errors_5xx: u64,
    pub routes: usize,
    /// Slowest groups by 99th percentile.
    pub slowest: Vec<RouteRow>,
    /// Busiest groups by count.
    pub busiest: Vec<RouteRow>,
    /// Groups with a 5xx status, most requests first.
    pub server_errors: Vec<RouteRow>,
    /// Requests the kernel could not hand over (ring buffer full).
    pub dropped: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RouteRow {
    pub method: String,
    /// The path with ids replaced by {id}.
    pub route: String,
    pub status: u32,
    /// An outgoing request made by the target (it was the client).
    pub client: bool,
    pub count: u64,
    pub rate_per_s: f64,
    pub p50: String,
    pub p90: String,
    pub p99: String,
    pub p99_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg: Option<String>,
}

fn route_row(r: &pb::HttpRouteStats, elapsed_ns: u64) -> RouteRow {
    RouteRow {
        method: clip(&r.method),
        route: clip(&r.route),
        status: r.status,
        client: r.client,
        count: r.count,
        rate_per_s: per_second(r.count, elapsed_ns),
        p50: duration_ns(r.p50_ns),
        p90: duration_ns(r.p90_ns),
        p99: duration_ns(r.p99_ns),
        p99_ns: r.p99_ns,
        avg: r.total_ns.checked_div(r.count).map(duration_ns),
    }
}

pub fn http(s: &pb::HttpStats, top: usize) -> HttpSummary {
    let requests: u64 = s.routes.iter().map(|r| r.count).sum();
    let errors: u64 = s
        .routes
        .iter()
        .filter(|r| r.status >= 500)
        .map(|r| r.count)
        .sum();
    let row = |r: &&pb::HttpRouteStats| route_row(r, s.elapsed_ns);
    let mut by_p99: Vec<_> = s.routes.iter().collect();
    by_p99.sort_by(|a, b| b.p99_ns.cmp(&a.p99_ns).then(b.count.cmp(&a.count)));
    let mut by_count: Vec<_> = s.routes.iter().collect();
    by_count.sort_by(|a, b| b.count.cmp(&a.count).then(b.p99_ns.cmp(&a.p99_ns)));
    let server_errors: Vec<_> = by_count
        .iter()
        .filter(|r| r.status >= 500)
        .take(top)
        .map(row)
        .collect();
    let slowest = by_p99.first().map_or(String::new(), |r| {
        format!(
            "; slowest: {} {} {} p99 {}",
            r.method,
            r.route,
            r.status,
            duration_ns(r.p99_ns)
        )
    });
    let headline = format!(
        "{requests} HTTP requests ({errors} 5xx) over {}, {} route groups{slowest}",
        duration_ns(s.elapsed_ns),
        s.routes.len()
    );
    HttpSummary {
        headline: clip_line(&headline),
        elapsed: duration_ns(s.elapsed_ns),
        requests,
        errors_5xx: errors,
        routes: s.routes.len(),
        slowest: by_p99.iter().take(top).map(row).collect(),
        busiest: by_count.iter().take(top).map(row).collect(),
        server_errors,
        dropped: s.dropped_events,
    }
}

fn http_request(r: &pb::HttpRequest) -> String {
    clip_line(&format!(
        "HTTP {}{} {} -> {} in {} (pid {} {})",
        if r.client { "out " } else { "" },
        r.method,
        r.path,
        r.status,
        duration_ns(r.latency_ns),
        r.pid,
        r.comm
    ))
}

// ---------------------------------------------------------------- cpu-profile

/// cpu-profile: where CPU time went, by function and by process.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CpuSummary {
    pub headline: String,
    pub elapsed: String,
    pub elapsed_s: f64,
    pub frequency_hz: u32,
    pub samples: u64,
    /// Samples that could not be counted.
    pub lost: u64,
    /// Functions by self samples (running themselves, not their callees).
    pub hottest: Vec<FunctionRow>,
    /// Processes by samples.
    pub processes: Vec<CpuProcessRow>,
    /// The hottest stack, leaf first.
    pub hottest_stack: Vec<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FunctionRow {
    pub function: String,
    /// The binary or library, or [kernel].
    pub module: String,
    /// Share of all samples in which it was the leaf, in percent.
    pub self_pct: f64,
    /// Share of all samples in which it was on the stack, in percent.
    pub total_pct: f64,
    pub self_samples: u64,
    pub total_samples: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CpuProcessRow {
    pub pid: u32,
    pub comm: String,
    pub samples: u64,
    pub pct: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

pub fn cpu(p: &pb::CpuProfile, top: usize) -> CpuSummary {
    let functions = cpu_profile::functions(p);
    let hottest: Vec<FunctionRow> = functions
        .iter()
        .filter(|f| f.self_samples > 0)
        .take(top)
        .map(|f| FunctionRow {
            function: clip(&f.function),
            module: clip(&f.module),
            self_pct: pct(f.self_samples, p.total_samples),
            total_pct: pct(f.total_samples, p.total_samples),
            self_samples: f.self_samples,
            total_samples: f.total_samples,
        })
        .collect();
    let mut by_pid: Vec<CpuProcessRow> = Vec::new();
    for s in &p.stacks {
        match by_pid.iter_mut().find(|r| r.pid == s.pid) {
            Some(r) => r.samples += s.count,
            None => by_pid.push(CpuProcessRow {
                pid: s.pid,
                comm: clip(&s.comm),
                samples: s.count,
                pct: 0.0,
                container: container_of(s.container.as_ref()),
            }),
        }
    }
    for r in &mut by_pid {
        r.pct = pct(r.samples, p.total_samples);
    }
    by_pid.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.pid.cmp(&b.pid)));
    let processes = by_pid.len();
    by_pid.truncate(top);
    let hottest_stack = p
        .stacks
        .iter()
        .max_by_key(|s| s.count)
        .map(|s| {
            s.frames
                .iter()
                .rev()
                .take(STACK_FRAMES)
                .map(|f| clip(&cpu_profile::frame_name(f)))
                .collect()
        })
        .unwrap_or_default();
    let top3: Vec<String> = hottest
        .iter()
        .take(3)
        .map(|f| format!("{} {:.1}%", f.function, f.self_pct))
        .collect();
    let headline = format!(
        "{} samples over {} at {} Hz in {processes} process{}{}; hottest: {}",
        p.total_samples,
        duration_ns(p.elapsed_ns),
        p.frequency_hz,
        if processes == 1 { "" } else { "es" },
        if p.lost_samples > 0 {
            format!(", {} lost", p.lost_samples)
        } else {
            String::new()
        },
        crate::render::top_list(&top3, ", ")
    );
    CpuSummary {
        headline: clip_line(&headline),
        elapsed: duration_ns(p.elapsed_ns),
        elapsed_s: p.elapsed_ns as f64 / 1e9,
        frequency_hz: p.frequency_hz,
        samples: p.total_samples,
        lost: p.lost_samples,
        hottest,
        processes: by_pid,
        hottest_stack,
    }
}

// ---------------------------------------------------------------- tcp-metrics

/// tcp-metrics: connections, retransmits, resets and RTT per remote.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TcpSummary {
    pub headline: String,
    pub elapsed: String,
    pub opened: u64,
    pub closed: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    /// Remotes with retransmits, most first.
    pub retransmitting: Vec<RemoteRow>,
    /// Remotes with resets (sent or received), most first.
    pub resetting: Vec<RemoteRow>,
    /// Remotes by connections.
    pub busiest: Vec<RemoteRow>,
    /// Slowest remotes by RTT p99.
    pub slowest: Vec<RemoteRow>,
    /// Events or aggregates lost to full kernel buffers or maps.
    pub dropped: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RemoteRow {
    /// `addr:port` for connections this node opened; `addr -> :lport` for
    /// connections it accepted (their remote ports folded together).
    pub remote: String,
    pub opened: u64,
    pub closed: u64,
    pub retransmits: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    /// Smoothed RTT quantiles (log2 bucket upper bounds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_p50: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_p99: Option<String>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

fn remote_row(r: &pb::TcpRemoteStats) -> RemoteRow {
    let rtt = |us: u64| (!r.rtt_us_log2.is_empty()).then(|| duration_ns(us.saturating_mul(1000)));
    RemoteRow {
        remote: clip(&tcp_metrics::remote_name(r)),
        opened: r.opened,
        closed: r.closed,
        retransmits: r.retransmits,
        resets_sent: r.resets_sent,
        resets_received: r.resets_received,
        rtt_p50: rtt(r.rtt_p50_us),
        rtt_p99: rtt(r.rtt_p99_us),
        bytes_sent: r.bytes_sent,
        bytes_received: r.bytes_received,
    }
}

pub fn tcp(s: &pb::TcpStats, top: usize) -> TcpSummary {
    let sum = |f: fn(&pb::TcpRemoteStats) -> u64| s.remotes.iter().map(f).sum::<u64>();
    let (opened, closed) = (sum(|r| r.opened), sum(|r| r.closed));
    let retransmits = sum(|r| r.retransmits);
    let (resets_sent, resets_received) = (sum(|r| r.resets_sent), sum(|r| r.resets_received));
    let ranked = |key: fn(&pb::TcpRemoteStats) -> u64, keep_zero: bool| -> Vec<RemoteRow> {
        let mut v: Vec<_> = s
            .remotes
            .iter()
            .filter(|r| keep_zero || key(r) > 0)
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(key(r)));
        v.into_iter().take(top).map(remote_row).collect()
    };
    let retransmitting = ranked(|r| r.retransmits, false);
    let resetting = ranked(|r| r.resets_sent + r.resets_received, false);
    let busiest = ranked(|r| r.opened + r.closed, true);
    let slowest = ranked(
        |r| {
            if r.rtt_us_log2.is_empty() {
                0
            } else {
                r.rtt_p99_us
            }
        },
        false,
    );
    let worst = retransmitting.first().map_or(String::new(), |r| {
        format!("; most retransmits: {} ({})", r.remote, r.retransmits)
    });
    let headline = format!(
        "{opened} connections opened, {closed} closed over {}, {} remotes, {retransmits} retransmits, {} resets{worst}",
        duration_ns(s.elapsed_ns),
        s.remotes.len(),
        resets_sent + resets_received
    );
    TcpSummary {
        headline: clip_line(&headline),
        elapsed: duration_ns(s.elapsed_ns),
        opened,
        closed,
        retransmits,
        resets_sent,
        resets_received,
        retransmitting,
        resetting,
        busiest,
        slowest,
        dropped: s.dropped_events,
    }
}

fn tcp_connection(c: &pb::TcpConnection) -> String {
    let (from, to) = (
        format!("{}:{}", c.local_addr, c.local_port),
        format!("{}:{}", c.remote_addr, c.remote_port),
    );
    let arrow = if c.active { "->" } else { "<-" };
    clip_line(&format!(
        "TCP {from} {arrow} {to} closed ({}) after {}, {} sent, {} received, {} retransmits (pid {} {})",
        c.close_reason,
        duration_ns(c.duration_ns),
        bytes(c.bytes_sent),
        bytes(c.bytes_received),
        c.retransmits,
        c.pid,
        c.comm
    ))
}

// ---------------------------------------------------------------- process-events

/// process-events: execs and exits.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ProcessSummary {
    pub headline: String,
    pub elapsed: String,
    pub execs: u64,
    pub exits: u64,
    /// Exits with a non-zero code or by a signal.
    pub failed_exits: u64,
    /// Processes that lived less than `short_lived_threshold`.
    pub short_lived: u64,
    pub short_lived_threshold: String,
    /// Executables run, most first.
    pub executables: Vec<CountRow>,
    /// How processes ended ("exit 0", "killed by SIGKILL"), most first.
    pub exit_statuses: Vec<CountRow>,
    /// Parents with the most children seen.
    pub top_parents: Vec<CountRow>,
    /// Events lost to a full ring buffer.
    pub dropped: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct CountRow {
    pub what: String,
    pub count: u64,
}

pub fn processes(s: &pb::ProcessStats, top: usize) -> ProcessSummary {
    let failed: u64 = s
        .exit_statuses
        .iter()
        .filter(|e| e.exit_code != 0 || e.signal != 0)
        .map(|e| e.count)
        .sum();
    let mut statuses: Vec<_> = s.exit_statuses.iter().collect();
    statuses.sort_by_key(|e| std::cmp::Reverse(e.count));
    let headline = format!(
        "{} execs, {} exits ({failed} failed, {} short-lived) over {}",
        s.execs,
        s.exits,
        s.short_lived,
        duration_ns(s.elapsed_ns)
    );
    ProcessSummary {
        headline,
        elapsed: duration_ns(s.elapsed_ns),
        execs: s.execs,
        exits: s.exits,
        failed_exits: failed,
        short_lived: s.short_lived,
        short_lived_threshold: duration_ns(s.short_lived_threshold_ns),
        executables: s
            .executables
            .iter()
            .take(top)
            .map(|e| CountRow {
                what: clip(&e.filename),
                count: e.count,
            })
            .collect(),
        exit_statuses: statuses
            .iter()
            .take(top)
            .map(|e| CountRow {
                what: process_events::exit_status(e.exit_code, e.signal, false),
                count: e.count,
            })
            .collect(),
        top_parents: s
            .top_parents
            .iter()
            .take(top)
            .map(|p| CountRow {
                what: clip(&format!("pid {} ({})", p.pid, p.comm)),
                count: p.children,
            })
            .collect(),
        dropped: s.dropped_events,
    }
}

fn process_event(e: &pb::ProcessEvent) -> String {
    let line = match e.r#type() {
        pb::ProcessEventType::Exec => format!(
            "exec pid {} (parent {}): {}",
            e.pid,
            e.ppid,
            process_events::command_line(e)
        ),
        pb::ProcessEventType::Exit => format!(
            "exit pid {} ({}): {} after {}",
            e.pid,
            e.comm,
            process_events::exit_status(e.exit_code, e.signal, e.core_dumped),
            duration_ns(e.lifetime_ns)
        ),
        pb::ProcessEventType::Unspecified => format!("process event pid {}", e.pid),
    };
    clip_line(&line)
}

// ---------------------------------------------------------------- file-io

/// file-io: top files by bytes, failed opens.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FileIoSummary {
    pub headline: String,
    pub elapsed: String,
    /// Most bytes first.
    pub files: Vec<FileIoRow>,
    /// Failed opens per (process, path, errno), most first.
    pub failed_opens: Vec<CountRow>,
    /// Reads, writes and fsyncs on fds opened before the tap started.
    pub untracked_ops: u64,
    /// Entries or events the kernel could not hand over.
    pub dropped: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FileIoRow {
    pub pid: u32,
    pub comm: String,
    pub path: String,
    pub reads: u64,
    pub read_bytes: u64,
    pub writes: u64,
    pub write_bytes: u64,
    pub fsyncs: u64,
    /// Upper bound of the log2 bucket holding the 99th percentile.
    pub read_p99: String,
    pub write_p99: String,
}

pub fn file_io_stats(s: &pb::FileIoStats, top: usize) -> FileIoSummary {
    let read: u64 = s.processes.iter().map(|p| p.read_bytes).sum();
    let written: u64 = s.processes.iter().map(|p| p.write_bytes).sum();
    let failed: u64 = s.open_errors.iter().map(|e| e.count).sum();
    FileIoSummary {
        headline: format!(
            "{} read, {} written by {} processes, {failed} failed opens over {}",
            bytes(read),
            bytes(written),
            s.processes.len(),
            duration_ns(s.elapsed_ns)
        ),
        elapsed: duration_ns(s.elapsed_ns),
        files: s
            .files
            .iter()
            .take(top)
            .map(|f| FileIoRow {
                pid: f.pid,
                comm: clip(&f.comm),
                path: clip(&f.path),
                reads: f.reads,
                read_bytes: f.read_bytes,
                writes: f.writes,
                write_bytes: f.write_bytes,
                fsyncs: f.fsyncs,
                read_p99: duration_ns(f.read_p99_ns),
                write_p99: duration_ns(f.write_p99_ns),
            })
            .collect(),
        failed_opens: s
            .open_errors
            .iter()
            .take(top)
            .map(|e| CountRow {
                what: clip(&format!(
                    "pid {} ({}) {} {}",
                    e.pid, e.comm, e.error, e.path
                )),
                count: e.count,
            })
            .collect(),
        untracked_ops: s.untracked_ops,
        dropped: s.dropped_events + s.dropped_files,
    }
}

fn file_io_event(e: &pb::FileIoEvent) -> String {
    let op = file_io::op_name(e.op);
    let line = if e.errno != 0 {
        format!(
            "{op} {} failed: {} (pid {} {})",
            e.path, e.error, e.pid, e.comm
        )
    } else {
        format!(
            "slow {op} of {} on {}: {} (pid {} {})",
            bytes(e.bytes),
            e.path,
            duration_ns(e.latency_ns),
            e.pid,
            e.comm
        )
    };
    clip_line(&line)
}

// ---------------------------------------------------------------- dns

/// dns: exchanges per (name, type, rcode), failures first in the counts.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DnsSummary {
    pub headline: String,
    pub elapsed: String,
    pub queries: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub timeouts: u64,
    /// Most exchanges first.
    pub names: Vec<DnsRow>,
    /// Events or queries the kernel could not hand over.
    pub dropped: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct DnsRow {
    pub name: String,
    pub qtype: String,
    /// "NOERROR", "NXDOMAIN", ... or "TIMEOUT".
    pub rcode: String,
    pub count: u64,
    /// Exact, from a sample of up to 4096 per row ("-" for timeouts).
    pub p50: String,
    pub p99: String,
}

pub fn dns_stats(s: &pb::DnsStats, top: usize) -> DnsSummary {
    let lat = |n: &pb::DnsName, ns: u64| {
        if n.timed_out {
            "-".to_string()
        } else {
            duration_ns(ns)
        }
    };
    DnsSummary {
        headline: format!(
            "{} DNS queries, {} NXDOMAIN, {} SERVFAIL, {} timeouts over {}",
            s.queries,
            s.nxdomain,
            s.servfail,
            s.timeouts,
            duration_ns(s.elapsed_ns)
        ),
        elapsed: duration_ns(s.elapsed_ns),
        queries: s.queries,
        nxdomain: s.nxdomain,
        servfail: s.servfail,
        timeouts: s.timeouts,
        names: s
            .names
            .iter()
            .take(top)
            .map(|n| DnsRow {
                name: clip(&n.name),
                qtype: n.qtype_name.clone(),
                rcode: n.rcode_name.clone(),
                count: n.count,
                p50: lat(n, n.latency_p50_ns),
                p99: lat(n, n.latency_p99_ns),
            })
            .collect(),
        dropped: s.dropped_events + s.dropped_inflight,
    }
}

fn dns_query(q: &pb::DnsQuery) -> String {
    let line = format!(
        "{} {} from pid {} ({}) to {}: {}{}",
        q.qtype_name,
        q.name,
        q.pid,
        q.comm,
        q.server,
        dns::result_name(q),
        if q.outcome == i32::from(pb::DnsOutcome::Answered) {
            format!(" in {}", duration_ns(q.latency_ns))
        } else {
            String::new()
        }
    );
    clip_line(&line)
}

// ---------------------------------------------------------------- security

/// security: events per type, per syscall and result, per process.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SecuritySummary {
    pub headline: String,
    pub elapsed: String,
    /// Events per type ("credentials 3 (1 failed)"), most first.
    pub types: Vec<CountRow>,
    /// Per (syscall, result), most first.
    pub syscalls: Vec<CountRow>,
    /// Per process, most events first.
    pub processes: Vec<CountRow>,
    /// Events the kernel could not hand over.
    pub dropped: u64,
}

pub fn security_stats(s: &pb::SecurityStats, top: usize) -> SecuritySummary {
    let (events, failed) = s
        .types
        .iter()
        .fold((0, 0), |(n, f), t| (n + t.events, f + t.failed));
    SecuritySummary {
        headline: format!(
            "{events} security events ({failed} failed) from {} processes over {}",
            s.processes.len(),
            duration_ns(s.elapsed_ns)
        ),
        elapsed: duration_ns(s.elapsed_ns),
        types: s
            .types
            .iter()
            .map(|t| CountRow {
                what: format!("{} ({} failed)", security::type_name(t.r#type), t.failed),
                count: t.events,
            })
            .collect(),
        syscalls: s
            .syscalls
            .iter()
            .take(top)
            .map(|c| CountRow {
                what: clip(&format!(
                    "{} {}",
                    c.syscall,
                    if c.error.is_empty() { "ok" } else { &c.error }
                )),
                count: c.count,
            })
            .collect(),
        processes: s
            .processes
            .iter()
            .take(top)
            .map(|p| CountRow {
                what: clip(&format!("pid {} ({}), {} failed", p.pid, p.comm, p.failed)),
                count: p.events,
            })
            .collect(),
        dropped: s.dropped_events,
    }
}

fn security_event(e: &pb::SecurityEvent) -> String {
    let result = if e.errno != 0 {
        e.error.clone()
    } else {
        e.result.to_string()
    };
    clip_line(&format!(
        "{} {} by pid {} ({}, parent {} {}) -> {}: {}",
        security::type_name(e.r#type),
        e.syscall,
        e.pid,
        e.comm,
        e.ppid,
        e.parent_comm,
        result,
        security::details(e)
    ))
}

// ---------------------------------------------------------------- memory

/// memory: use against limits, growth and time to the limit.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MemorySummary {
    pub headline: String,
    pub elapsed: String,
    /// Rows (cgroups and processes) predicted to reach their limit, soonest first.
    pub growing: Vec<MemoryRow>,
    pub cgroups: Vec<MemoryRow>,
    /// Processes, the soonest at a limit first (as the agent orders them).
    pub processes: Vec<MemoryRow>,
    pub processes_tracked: u32,
    /// OOM kills counted by the cgroups' memory.events.
    pub oom_kills: u64,
    pub dropped: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct MemoryRow {
    /// A cgroup path, or "pid N (comm)".
    pub name: String,
    /// Memory in use (cgroup: memory.current; process: RSS).
    pub used: String,
    pub used_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Growth rate, e.g. "+18 MiB/min".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// The prediction in words: "reaches memory.max in 7m23s (6m50s-8m05s), R2 0.97, ...".
    pub forecast: String,
    /// Time to the limit when growing toward it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_limit_ns: Option<u64>,
}

fn memory_row(
    name: String,
    used: u64,
    limit: u64,
    prediction: Option<&pb::MemoryPrediction>,
) -> MemoryRow {
    let growing = prediction.filter(|p| p.state() == pb::PredictionState::Growing);
    MemoryRow {
        name: clip(&name),
        used: bytes(used),
        used_bytes: used,
        limit: (limit > 0).then(|| bytes(limit)),
        rate: prediction.map(|p| memory::rate(p.rate_bytes_per_sec)),
        forecast: memory::forecast(prediction),
        time_to_limit: growing.map(|p| memory::eta(p.time_to_limit_ns)),
        time_to_limit_ns: growing.map(|p| p.time_to_limit_ns),
    }
}

pub fn memory_stats(s: &pb::MemoryStats, top: usize) -> MemorySummary {
    let cgroups: Vec<MemoryRow> = s
        .cgroups
        .iter()
        .map(|c| {
            memory_row(
                c.path.clone(),
                c.current_bytes,
                c.limit_bytes,
                c.prediction.as_ref(),
            )
        })
        .collect();
    let processes: Vec<MemoryRow> = s
        .processes
        .iter()
        .map(|p| {
            memory_row(
                format!("pid {} ({})", p.pid, p.comm),
                p.rss_bytes,
                p.limit_bytes,
                p.prediction.as_ref(),
            )
        })
        .collect();
    let mut growing: Vec<MemoryRow> = cgroups
        .iter()
        .chain(&processes)
        .filter(|r| r.time_to_limit_ns.is_some())
        .cloned()
        .collect();
    growing.sort_by_key(|r| r.time_to_limit_ns);
    growing.truncate(top);
    let oom_kills = s.cgroups.iter().map(|c| c.oom_kills).sum();
    let soonest = growing.first().map_or(String::new(), |r| {
        format!("; soonest at its limit: {} {}", r.name, r.forecast)
    });
    let headline = format!(
        "{} processes tracked, {} cgroups sampled over {}, {} growing toward a limit, {oom_kills} OOM kills{soonest}",
        s.processes_tracked,
        s.cgroups.len(),
        duration_ns(s.elapsed_ns),
        growing.len()
    );
    MemorySummary {
        headline: clip_line(&headline),
        elapsed: duration_ns(s.elapsed_ns),
        growing,
        cgroups: cgroups.into_iter().take(top).collect(),
        processes: processes.into_iter().take(top).collect(),
        processes_tracked: s.processes_tracked,
        oom_kills,
        dropped: s.dropped_events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(nr: u32, name: &str, count: u64, errors: u64, total_ns: u64) -> pb::SyscallStat {
        pb::SyscallStat {
            nr,
            name: name.into(),
            count,
            errors,
            total_ns,
            latency_log2: vec![0, 0, 0, 0, 0, 0, 0, 0, count],
        }
    }

    #[test]
    fn syscalls_rank_by_count_time_and_errors() {
        let s = pb::SyscallStats {
            elapsed_ns: 2_000_000_000,
            syscalls: vec![
                stat(110, "getppid", 1000, 0, 300_000),
                stat(0, "read", 10, 0, 9_000_000),
                stat(3, "close", 20, 20, 5_000),
            ],
            timed: true,
            ..Default::default()
        };
        let sum = syscalls(&s, 2);
        assert_eq!(sum.calls, 1030);
        assert_eq!(sum.errors, 20);
        assert_eq!(sum.busiest.len(), 2);
        assert_eq!(sum.busiest[0].name, "getppid");
        assert_eq!(sum.busiest[0].rate_per_s, 500.0);
        assert_eq!(sum.slowest[0].name, "read");
        assert_eq!(sum.failing[0].name, "close");
        assert_eq!(sum.failing.len(), 1);
        assert!(
            sum.headline.contains("busiest: getppid 1000"),
            "{}",
            sum.headline
        );
    }

    #[test]
    fn cpu_names_the_hottest_function() {
        let p = crate::kinds::cpu_profile::tests::profile();
        let sum = cpu(&p, 10);
        assert_eq!(sum.hottest[0].function, "alpha");
        assert_eq!(sum.hottest[0].self_pct, 60.0);
        assert_eq!(sum.processes[0].samples, 100);
        assert_eq!(sum.hottest_stack, ["alpha", "main"]);
        assert!(
            sum.headline.contains("hottest: alpha 60.0%"),
            "{}",
            sum.headline
        );
    }

    #[test]
    fn record_text_is_bounded_and_escaped() {
        let s = pb::SyscallStats {
            syscalls: vec![stat(1, &format!("x\n{}", "y".repeat(10_000)), 1, 0, 1)],
            ..Default::default()
        };
        let name = &syscalls(&s, 10).busiest[0].name;
        assert!(name.len() < FIELD_BYTES + 40, "{}", name.len());
        assert!(name.starts_with("x\\ny"), "{name}");
    }

    #[test]
    fn every_payload_is_summarised() {
        // One of each: a payload added to the API is a build error in
        // `summarise`; this checks each arm gives the right shape.
        let payloads = [
            Payload::SyscallStats(Default::default()),
            Payload::HttpRequest(Default::default()),
            Payload::HttpStats(Default::default()),
            Payload::CpuProfile(Default::default()),
            Payload::TcpConnection(Default::default()),
            Payload::TcpStats(Default::default()),
            Payload::ProcessEvent(Default::default()),
            Payload::ProcessStats(Default::default()),
            Payload::MemoryStats(Default::default()),
            Payload::OomKill(Default::default()),
            Payload::FileIoEvent(Default::default()),
            Payload::FileIoStats(Default::default()),
            Payload::DnsQuery(Default::default()),
            Payload::DnsStats(Default::default()),
            Payload::SecurityEvent(Default::default()),
            Payload::SecurityStats(Default::default()),
        ];
        for p in &payloads {
            let is_event = matches!(
                p,
                Payload::HttpRequest(_)
                    | Payload::TcpConnection(_)
                    | Payload::ProcessEvent(_)
                    | Payload::OomKill(_)
                    | Payload::FileIoEvent(_)
                    | Payload::DnsQuery(_)
                    | Payload::SecurityEvent(_)
            );
            match summarise(p, 5) {
                Summarised::Aggregate(a) => {
                    assert!(!is_event);
                    assert!(!a.headline().is_empty());
                }
                Summarised::Event(_, line) => {
                    assert!(is_event);
                    assert!(!line.is_empty());
                }
            }
        }
    }
}
