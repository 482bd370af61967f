//! tcp-metrics: one event per closed TCP connection and per-remote aggregates
//! (connections, smoothed-RTT histogram, retransmits, resets, bytes).
//!
//! Kernel side: `src/bpf/tcp_metrics.bpf.c`, tracepoints only, so it works on
//! kernels without kprobes or fentry (where libbpf-tools' tcprtt and
//! tcpconnlat cannot run):
//! - raw tracepoints `inet_sock_set_state`, `tcp_destroy_sock`, `tcp_probe`,
//!   `tcp_retransmit_skb`, `tcp_send_reset`, `tcp_receive_reset` (no tracefs,
//!   no trace record formatted per ACK);
//! - for the owner of an accepted connection (its handshake ran in softirq
//!   context, where `current` is whatever task happened to run): raw
//!   tracepoints `sock_recv_length` / `sock_send_length` (Linux 6.3+), the
//!   first task to read or write it; on older kernels, tracepoints
//!   `syscalls:sys_exit_accept{,4}` (perf_event, so tracefs; and every
//!   syscall of every task takes the slow path while they are attached).
//!
//! Needs CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN), BTF (CO-RE), BPF ring
//! buffers (5.8+) and BPF atomic fetch / compare-and-exchange (5.12+). Only
//! connections opened while the collector runs are tracked.
//!
//! User space drains the ring buffer every [`TICK`] and reads the per-CPU
//! aggregates every interval; the final collect also reports connections that
//! closed but whose socket the owner had not released yet.

use super::bpf::{self, KtimeClock, read_err, take_map};
use super::filter::FilterGlobals;
use super::{Collector, CollectorError, CollectorFactory, StartContext, check_interval};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::containers::resolve::{Cgroup, CgroupResolver};
use crate::domain::{Kind, KindConfig, Payload};
use crate::tracepoints::{self, VMLINUX_BTF};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::TracePoint;
use aya::programs::raw_trace_point::RawTracePointLink;
use aya::programs::trace_point::TracePointLink;
use aya::{Ebpf, EbpfLoader};
use coral_ebpf_programs::tcp_metrics::{
    AF_INET, AF_INET6, DROP_SLOTS, FLAG_ACTIVE, FLAG_ESTABLISHED, FLAG_OWNED, MAX_PORTS, OBJECT,
    RTT_BUCKETS, Remote, RemoteKey, SOCK_CLOSED, SOCK_TARGET, SOCK_TUPLE_MATCH, Sock, TcpEvent,
};
use coral_proto::error_chain;
use coral_proto::text::quote;
use coral_proto::v1::{TcpConnection, TcpMetricsConfig, TcpRemoteStats, TcpStats};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Duration;

/// Aggregate snapshot interval when the request gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// How often the ring buffer is drained: closed connections show up this fast.
pub const TICK: Duration = Duration::from_millis(200);
/// Live connections tracked at once (the kernel map's size).
pub const SOCK_ENTRIES: u32 = 65_536;
/// Distinct remote endpoints aggregated.
pub const REMOTE_ENTRIES: u32 = 8_192;

/// Raw tracepoints always attached: (program, tracepoint).
const RAW_PROGRAMS: [(&str, &str); 6] = [
    ("coral_tcp_state", "inet_sock_set_state"),
    ("coral_tcp_destroy", "tcp_destroy_sock"),
    ("coral_tcp_rtt", "tcp_probe"),
    ("coral_tcp_retransmit", "tcp_retransmit_skb"),
    ("coral_tcp_send_reset", "tcp_send_reset"),
    ("coral_tcp_receive_reset", "tcp_receive_reset"),
];

/// Owners of accepted connections, where the kernel has these (6.3+).
const IO_PROGRAMS: [(&str, &str); 2] = [
    ("coral_tcp_recv", "sock_recv_length"),
    ("coral_tcp_send", "sock_send_length"),
];

/// Owners of accepted connections otherwise: perf_event tracepoints
/// (program, category, name).
const ACCEPT_PROGRAMS: [(&str, &str, &str); 2] = [
    ("coral_tcp_accept4", "syscalls", "sys_exit_accept4"),
    ("coral_tcp_accept", "syscalls", "sys_exit_accept"),
];

/// Environment variable of the agent: with `accept`, accepted connections get
/// their owner from the `accept()` tracepoints even where `sock_*_length`
/// exist (the e2e tests run the fallback this way).
pub const OWNER_ENV: &str = "CORAL_TCP_OWNER";

/// The tracepoints this collector may attach that the running kernel has.
fn kernel_tracepoints() -> Result<BTreeSet<&'static str>, String> {
    let names: Vec<&str> = RAW_PROGRAMS
        .iter()
        .chain(IO_PROGRAMS.iter())
        .map(|(_, tp)| *tp)
        .collect();
    let missing = tracepoints::missing(names.iter().copied())?;
    Ok(names.into_iter().filter(|n| !missing.contains(n)).collect())
}

/// How accepted connections get their owner on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ownership {
    /// `sock_recv_length` / `sock_send_length`.
    Io,
    /// `syscalls:sys_exit_accept{,4}`.
    Accept,
}

/// Which hooks this kernel allows, or the first thing it lacks.
fn plan(tracefs: Option<&Path>) -> Result<Ownership, String> {
    let found = kernel_tracepoints()?;
    for (_, tp) in RAW_PROGRAMS {
        if !found.contains(tp) {
            return Err(format!(
                "kernel tracepoint {tp} is missing (no btf_trace_{tp} in {VMLINUX_BTF})"
            ));
        }
    }
    if IO_PROGRAMS.iter().all(|(_, tp)| found.contains(tp)) {
        return Ok(Ownership::Io);
    }
    let tracefs = tracefs.ok_or(
        "this kernel lacks sock_recv_length / sock_send_length (Linux 6.3+), and tracefs, \
         needed for the syscalls:sys_exit_accept tracepoints used instead, is not mounted",
    )?;
    let events = tracefs.join("events");
    for (_, cat, tp) in ACCEPT_PROGRAMS {
        if !events.join(cat).join(tp).join("id").exists() {
            return Err(format!(
                "this kernel lacks sock_recv_length / sock_send_length (Linux 6.3+) and the \
                 tracepoint {cat}:{tp} used instead (not under {}; syscall tracepoints need \
                 CONFIG_FTRACE_SYSCALLS)",
                events.display()
            ));
        }
    }
    Ok(Ownership::Accept)
}

/// How accepted connections get their owner here: sock_*_length when the
/// kernel has them (unlike syscall tracepoints they tax no other syscall).
/// CORAL_TCP_OWNER=accept forces the accept() tracepoints (to compare, or
/// to test them).
fn ownership() -> Ownership {
    match (std::env::var(OWNER_ENV).as_deref(), kernel_tracepoints()) {
        (Ok("accept"), _) => Ownership::Accept,
        (_, Ok(found)) if IO_PROGRAMS.iter().all(|(_, tp)| found.contains(tp)) => Ownership::Io,
        _ => Ownership::Accept,
    }
}

/// The entry of [`TcpMetricsFactory::hooks`] for the accept() tracepoints.
const ACCEPT_HOOKS: &str =
    "tracepoint/syscalls/sys_exit_accept{,4} (instead of sock_*_length before Linux 6.3)";

/// A remote address prefix, as the kernel side compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    pub len: u32,
}

/// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a full-length prefix).
pub fn parse_prefix(s: &str) -> Result<Prefix, String> {
    if s.trim() != s {
        return Err(format!(
            "remote_prefix {}: surrounding whitespace is not part of a prefix",
            quote(s)
        ));
    }
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| {
        format!(
            "remote_prefix {}: {} is not an IP address",
            quote(s),
            quote(addr)
        )
    })?;
    let (family, max, mut bytes) = match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (AF_INET, 32, b)
        }
        IpAddr::V6(v6) => (AF_INET6, 128, v6.octets()),
    };
    let len = match len {
        None => max,
        Some(l) => l.parse::<u32>().ok().filter(|&l| l <= max).ok_or_else(|| {
            format!(
                "remote_prefix {}: prefix length must be 0 to {max}",
                quote(s)
            )
        })?,
    };
    // Host bits are ignored, so `10.1.2.3/8` means 10.0.0.0/8.
    for (i, b) in bytes.iter_mut().enumerate() {
        let bit = i as u32 * 8;
        if bit >= len {
            *b = 0;
        } else if len - bit < 8 {
            *b &= 0xffu8 << (8 - (len - bit));
        }
    }
    Ok(Prefix {
        family,
        addr: bytes,
        len,
    })
}

fn check_ports(what: &str, ports: &[u32]) -> Result<(), String> {
    if ports.len() > MAX_PORTS {
        return Err(format!("at most {MAX_PORTS} {what} ports"));
    }
    if let Some(p) = ports.iter().find(|&&p| p == 0 || p > 65_535) {
        return Err(format!("{what} port {p} is not in 1..65535"));
    }
    Ok(())
}

fn port_array(ports: &[u32]) -> [u16; MAX_PORTS] {
    let mut out = [0u16; MAX_PORTS];
    for (o, &p) in out.iter_mut().zip(ports) {
        *o = p as u16;
    }
    out
}

pub struct TcpMetricsFactory;

impl CollectorFactory for TcpMetricsFactory {
    fn kind(&self) -> Kind {
        Kind::TcpMetrics
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[
            "raw_tracepoint/inet_sock_set_state",
            "raw_tracepoint/tcp_destroy_sock",
            "raw_tracepoint/tcp_probe",
            "raw_tracepoint/tcp_retransmit_skb",
            "raw_tracepoint/tcp_send_reset",
            "raw_tracepoint/tcp_receive_reset",
            "raw_tracepoint/sock_recv_length",
            "raw_tracepoint/sock_send_length",
            ACCEPT_HOOKS,
        ]
    }

    fn hooks_here(&self, caps: &HostCapabilities) -> Vec<&'static str> {
        let all = self.hooks().iter().copied();
        if self.availability(caps).is_err() {
            return all.collect();
        }
        match ownership() {
            Ownership::Io => all.filter(|h| *h != ACCEPT_HOOKS).collect(),
            Ownership::Accept => all.filter(|h| !h.ends_with("_length")).collect(),
        }
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        caps.require_btf("its CO-RE programs cannot load")?;
        caps.require_raw_tracepoints()?;
        caps.require_ringbuf()?;
        plan(caps.tracefs_path.as_deref()).map(drop)
    }

    fn validate(&self, config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let Some(KindConfig::TcpMetrics(c)) = config else {
            return Ok(());
        };
        check_interval(c.interval_ns, limits)?;
        check_ports("local", &c.local_ports)?;
        check_ports("remote", &c.remote_ports)?;
        if !c.remote_prefix.is_empty() {
            parse_prefix(&c.remote_prefix)?;
        }
        Ok(())
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let config = match &ctx.spec.config {
            Some(KindConfig::TcpMetrics(c)) => c.clone(),
            _ => TcpMetricsConfig::default(),
        };
        let interval = match config.interval_ns {
            0 => DEFAULT_INTERVAL,
            ns => Duration::from_nanos(ns),
        };
        let globals = FilterGlobals::resolve(ctx)?;
        let prefix = if config.remote_prefix.is_empty() {
            Prefix {
                family: 0,
                addr: [0; 16],
                len: 0,
            }
        } else {
            parse_prefix(&config.remote_prefix).map_err(CollectorError::Filter)?
        };
        let local_ports = port_array(&config.local_ports);
        let n_local_ports = config.local_ports.len().min(MAX_PORTS) as u32;
        let remote_ports = port_array(&config.remote_ports);
        let n_remote_ports = config.remote_ports.len().min(MAX_PORTS) as u32;
        let rtt_sample_every = config.rtt_sample_every.max(1);

        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader);
        loader
            .override_global("local_ports", &local_ports, true)
            .override_global("n_local_ports", &n_local_ports, true)
            .override_global("remote_ports", &remote_ports, true)
            .override_global("n_remote_ports", &n_remote_ports, true)
            .override_global("prefix_family", &prefix.family, true)
            .override_global("prefix_addr", &prefix.addr, true)
            .override_global("prefix_len", &prefix.len, true)
            .override_global("rtt_sample_every", &rtt_sample_every, true)
            .map_max_entries("socks", SOCK_ENTRIES)
            .map_max_entries("remotes", REMOTE_ENTRIES);
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;

        let ownership = ownership();
        let raw: Vec<(&'static str, &'static str)> = match ownership {
            Ownership::Io => RAW_PROGRAMS
                .iter()
                .chain(IO_PROGRAMS.iter())
                .copied()
                .collect(),
            Ownership::Accept => RAW_PROGRAMS.to_vec(),
        };
        let mut program_ids = Vec::new();
        let raw_links = bpf::attach_raw_tracepoints(&mut bpf, &raw, &mut program_ids)?;
        let mut tp_links = Vec::new();
        if ownership == Ownership::Accept {
            for (name, category, hook) in ACCEPT_PROGRAMS {
                tp_links.push(bpf::attach(
                    &mut bpf,
                    name,
                    hook,
                    &mut program_ids,
                    |p: &mut TracePoint| {
                        p.load()?;
                        let id = p.attach(category, hook)?;
                        p.take_link(id)
                    },
                )?);
            }
        }

        Ok(Box::new(TcpMetricsCollector {
            events: take_map(&mut bpf, "events")?,
            socks: take_map(&mut bpf, "socks")?,
            remotes: take_map(&mut bpf, "remotes")?,
            drops: take_map(&mut bpf, "drops")?,
            raw_links,
            tp_links,
            program_ids,
            interval,
            next_snapshot: interval,
            clock: KtimeClock::now(),
            cgroups: CgroupResolver::new(ctx.cgroup2_root.clone()),
            _bpf: bpf,
        }))
    }
}

struct TcpMetricsCollector {
    events: RingBuf<MapData>,
    socks: HashMap<MapData, u64, Sock>,
    remotes: PerCpuHashMap<MapData, RemoteKey, Remote>,
    drops: PerCpuArray<MapData, u64>,
    /// Dropping a link detaches it.
    raw_links: Vec<RawTracePointLink>,
    tp_links: Vec<TracePointLink>,
    program_ids: Vec<u32>,
    interval: Duration,
    /// Elapsed time at which the next aggregate snapshot is due.
    next_snapshot: Duration,
    clock: KtimeClock,
    /// Paths (and containers) of the owners' cgroup ids.
    cgroups: CgroupResolver,
    /// Owns the programs; dropped last, which unloads them.
    _bpf: Ebpf,
}

/// `addr` of `family` as text; IPv4 sits in the first 4 bytes.
fn addr_string(family: u8, addr: &[u8; 16]) -> String {
    if family == AF_INET {
        Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).to_string()
    } else {
        Ipv6Addr::from(*addr).to_string()
    }
}

fn family_number(family: u8) -> u32 {
    if family == AF_INET { 4 } else { 6 }
}

fn comm_string(comm: &[u8; 16]) -> String {
    String::from_utf8_lossy(comm.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
}

/// How a connection ended, from what the kernel left in the socket.
pub fn close_reason(ev: &TcpEvent) -> &'static str {
    let established = ev.flags & FLAG_ESTABLISHED != 0;
    match (established, ev.sk_err) {
        (false, _) if ev.resets_received > 0 => "refused",
        (false, libc::ECONNREFUSED) => "refused",
        (false, libc::ETIMEDOUT) => "timeout",
        (false, _) => "failed",
        _ if ev.resets_received > 0 => "reset",
        _ if ev.resets_sent > 0 => "abort",
        (true, libc::ETIMEDOUT) => "timeout",
        (true, libc::ECONNRESET) | (true, libc::EPIPE) => "reset",
        _ => "fin",
    }
}

impl TcpMetricsCollector {
    fn connection(&mut self, ev: &TcpEvent) -> TcpConnection {
        let owned = ev.flags & FLAG_OWNED != 0;
        let cgroup_id = if owned { ev.cgroup_id } else { 0 };
        TcpConnection {
            cgroup_id,
            container: match cgroup_id {
                0 => None,
                id => self.cgroups.resolve(id).map(Cgroup::to_proto),
            },
            pid: if owned { ev.pid } else { 0 },
            comm: if owned {
                comm_string(&ev.comm)
            } else {
                String::new()
            },
            family: family_number(ev.family),
            local_addr: addr_string(ev.family, &ev.laddr),
            local_port: u32::from(ev.lport),
            remote_addr: addr_string(ev.family, &ev.raddr),
            remote_port: u32::from(ev.rport),
            bytes_sent: ev.bytes_sent,
            bytes_received: ev.bytes_received,
            duration_ns: ev.end_ns.saturating_sub(ev.start_ns),
            connect_latency_ns: ev.connect_ns,
            active: ev.flags & FLAG_ACTIVE != 0,
            retransmits: ev.retransmits,
            resets_sent: ev.resets_sent,
            resets_received: ev.resets_received,
            close_reason: close_reason(ev).into(),
            start_unix_nano: self.clock.unix(ev.start_ns),
            end_unix_nano: self.clock.unix(ev.end_ns),
        }
    }

    fn drain_events(&mut self, out: &mut Vec<Payload>) {
        let mut batch = Vec::new();
        while let Some(item) = self.events.next() {
            if let Some(ev) = TcpEvent::from_bytes(&item) {
                batch.push(ev);
            }
        }
        for ev in &batch {
            out.push(Payload::TcpConnection(self.connection(ev)));
        }
    }

    /// Connections that reached CLOSE but whose socket was not destroyed yet
    /// (its owner still holds the file descriptor): reported at the end.
    fn flush_closed(&mut self, out: &mut Vec<Payload>) -> Result<(), CollectorError> {
        let mut closed = Vec::new();
        for entry in self.socks.iter() {
            let (_, s) = entry.map_err(read_err("socks"))?;
            let wanted = SOCK_CLOSED | SOCK_TARGET | SOCK_TUPLE_MATCH;
            if s.state & wanted == wanted {
                closed.push(s.ev);
            }
        }
        closed.sort_by_key(|ev| ev.end_ns);
        for ev in &closed {
            out.push(Payload::TcpConnection(self.connection(ev)));
        }
        Ok(())
    }

    fn snapshot(&self, elapsed: Duration) -> Result<TcpStats, CollectorError> {
        let mut remotes = Vec::new();
        for entry in self.remotes.iter() {
            let (key, values) = entry.map_err(read_err("remotes"))?;
            remotes.push(remote_stats(&key, &sum(&values)));
        }
        remotes.sort_by(|a, b| {
            (b.opened + b.closed)
                .cmp(&(a.opened + a.closed))
                .then_with(|| a.remote_addr.cmp(&b.remote_addr))
                .then_with(|| a.remote_port.cmp(&b.remote_port))
                .then_with(|| a.local_port.cmp(&b.local_port))
        });
        let mut dropped_events = 0;
        for slot in 0..DROP_SLOTS {
            let values = self.drops.get(&slot, 0).map_err(read_err("drops"))?;
            dropped_events += values.iter().sum::<u64>();
        }
        Ok(TcpStats {
            elapsed_ns: elapsed.as_nanos() as u64,
            remotes,
            dropped_events,
        })
    }
}

/// Per-CPU values summed into one.
fn sum(values: &[Remote]) -> Remote {
    let mut total = Remote {
        opened: 0,
        closed: 0,
        retransmits: 0,
        resets_sent: 0,
        resets_received: 0,
        bytes_sent: 0,
        bytes_received: 0,
        rtt_log2: [0; RTT_BUCKETS],
    };
    for v in values {
        total.opened += v.opened;
        total.closed += v.closed;
        total.retransmits += v.retransmits;
        total.resets_sent += v.resets_sent;
        total.resets_received += v.resets_received;
        total.bytes_sent += v.bytes_sent;
        total.bytes_received += v.bytes_received;
        for (t, b) in total.rtt_log2.iter_mut().zip(v.rtt_log2.iter()) {
            *t += b;
        }
    }
    total
}

/// Value at quantile `q` of a log2 histogram: the upper bound of its bucket
/// (an over-estimate by less than 2x), 0 when empty.
pub fn log2_quantile(buckets: &[u64], q: f64) -> u64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return (1u64 << (i + 1).min(63)) - 1;
        }
    }
    0
}

fn remote_stats(key: &RemoteKey, r: &Remote) -> TcpRemoteStats {
    let used = r
        .rtt_log2
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1);
    TcpRemoteStats {
        remote_addr: addr_string(key.family, &key.addr),
        remote_port: u32::from(key.rport),
        local_port: u32::from(key.lport),
        opened: r.opened,
        closed: r.closed,
        retransmits: r.retransmits,
        resets_sent: r.resets_sent,
        resets_received: r.resets_received,
        bytes_sent: r.bytes_sent,
        bytes_received: r.bytes_received,
        rtt_us_log2: r.rtt_log2[..used].to_vec(),
        rtt_p50_us: log2_quantile(&r.rtt_log2, 0.5),
        rtt_p99_us: log2_quantile(&r.rtt_log2, 0.99),
    }
}

impl Collector for TcpMetricsCollector {
    fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    fn tick_interval(&self) -> Duration {
        TICK.min(self.interval)
    }

    fn collect(
        &mut self,
        elapsed: Duration,
        last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        self.drain_events(out);
        if last {
            self.flush_closed(out)?;
        }
        if last || elapsed >= self.next_snapshot {
            out.push(Payload::TcpStats(self.snapshot(elapsed)?));
            while self.next_snapshot <= elapsed {
                self.next_snapshot += self.interval;
            }
        }
        Ok(())
    }

    fn detach(&mut self) {
        self.raw_links.clear();
        self.tp_links.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> TcpEvent {
        TcpEvent {
            start_ns: 0,
            connect_ns: 0,
            end_ns: 0,
            bytes_sent: 0,
            bytes_received: 0,
            pid: 0,
            retransmits: 0,
            resets_sent: 0,
            resets_received: 0,
            sk_err: 0,
            lport: 0,
            rport: 0,
            family: AF_INET,
            flags: FLAG_ESTABLISHED,
            end_state: 0,
            pad: 0,
            laddr: [0; 16],
            raddr: [0; 16],
            comm: [0; 16],
            pad2: 0,
            cgroup_id: 0,
        }
    }

    #[test]
    fn prefixes_parse_and_mask_host_bits() {
        let p = parse_prefix("10.1.2.3/8").unwrap();
        assert_eq!((p.family, p.len), (AF_INET, 8));
        assert_eq!(&p.addr[..4], &[10, 0, 0, 0]);
        let p = parse_prefix("fd00:1::/20").unwrap();
        assert_eq!((p.family, p.len), (AF_INET6, 20));
        assert_eq!(&p.addr[..3], &[0xfd, 0x00, 0x00]);
        assert_eq!(parse_prefix("127.0.0.1").unwrap().len, 32);
        assert!(parse_prefix("10.0.0.0/33").is_err());
        assert!(parse_prefix("nope/8").is_err());
        assert!(parse_prefix("::/129").is_err());
        for spaced in [
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0 /8",
            "10.0.0.0/ 8",
            "\t::1",
        ] {
            let err = parse_prefix(spaced).unwrap_err();
            assert!(
                err.contains("whitespace") || err.contains("not an IP") || err.contains("length"),
                "{spaced:?}: {err}"
            );
        }
    }

    #[test]
    fn config_is_validated() {
        let f = TcpMetricsFactory;
        let limits = Limits::default();
        let check = |c: TcpMetricsConfig| f.validate(Some(&KindConfig::TcpMetrics(c)), &limits);
        assert!(check(TcpMetricsConfig::default()).is_ok());
        let bad_port = TcpMetricsConfig {
            local_ports: vec![70_000],
            ..Default::default()
        };
        assert!(check(bad_port).unwrap_err().contains("70000"));
        let many = TcpMetricsConfig {
            remote_ports: (1..=17).collect(),
            ..Default::default()
        };
        assert!(check(many).is_err());
        let short = TcpMetricsConfig {
            interval_ns: 1_000_000,
            ..Default::default()
        };
        assert!(check(short).is_err());
        let prefix = TcpMetricsConfig {
            remote_prefix: "10.0.0.0/99".into(),
            ..Default::default()
        };
        assert!(check(prefix).is_err());
    }

    #[test]
    fn close_reasons() {
        let mut ev = event();
        assert_eq!(close_reason(&ev), "fin");
        ev.resets_sent = 1;
        assert_eq!(close_reason(&ev), "abort");
        ev.resets_received = 1;
        assert_eq!(close_reason(&ev), "reset");
        ev.flags = FLAG_ACTIVE;
        assert_eq!(close_reason(&ev), "refused");
        ev.resets_received = 0;
        ev.sk_err = libc::ETIMEDOUT;
        assert_eq!(close_reason(&ev), "timeout");
    }

    #[test]
    fn addresses_render_per_family() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(addr_string(AF_INET, &a), "127.0.0.1");
        let v6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(addr_string(AF_INET6, &v6), "::1");
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        assert_eq!(log2_quantile(&[0, 0, 0, 0, 0, 10], 0.5), 63);
        assert_eq!(log2_quantile(&[0, 99, 0, 1], 0.99), 3);
        assert_eq!(log2_quantile(&[0, 98, 0, 2], 0.99), 15);
        assert_eq!(log2_quantile(&[], 0.5), 0);
    }
}
