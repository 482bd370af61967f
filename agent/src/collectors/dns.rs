//! dns: every DNS query of the target processes over UDP and TCP, on port
//! 53 and the configured ports, with its response: name, type, rcode,
//! answers, latency (query to response, matched by 5-tuple and DNS id),
//! server, pid, comm and container; an aggregate per (name, type, rcode)
//! with latency percentiles, and NXDOMAIN, SERVFAIL and timeout counts.
//!
//! Kernel side: `src/bpf/dns.bpf.c`, two programs on the packet tracepoints
//! `net_dev_queue` (a query leaving, in the querier's context: the target
//! filter applies there) and `netif_receive_skb` (a response arriving,
//! matched in the kernel against the queries in flight, so other processes'
//! responses never leave it), through tp_btf. No kprobes, no fentry, no
//! tracefs; it needs BTF, a ring buffer and CAP_BPF + CAP_PERFMON. Why
//! packets and not socket syscalls: docs/collectors/dns.md.
//!
//! Agent side: the kernel hands over the DNS message bytes (at most 512 per
//! packet); this module parses them (`wire`), keeps the queries in flight,
//! times them out (and deletes them from the kernel's map), and aggregates
//! per row (`table`). The ring buffer is drained every 100ms; the aggregate
//! is cumulative and sent every interval.

mod table;
mod wire;

use super::bpf::{self, KtimeClock, read_err, take_map};
use super::filter::FilterGlobals;
use super::{Collector, CollectorError, CollectorFactory, StartContext, check_interval};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::containers::resolve::{Cgroup, CgroupResolver};
use crate::domain::{Kind, KindConfig, Payload};
use crate::tracepoints::{self, VMLINUX_BTF};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::cgroup_skb::CgroupSkbLink;
use aya::programs::links::{CgroupAttachMode, FdLink};
use aya::programs::{CgroupSkb, CgroupSkbAttachType};
use aya::{Ebpf, EbpfLoader};
use coral_ebpf_programs::dns::{DnsEvent, DnsInflight, DnsKey, MAX_PORTS, OBJECT, QUERY, RESPONSE};
use coral_proto::error_chain;
use coral_proto::v1::{DnsConfig, DnsOutcome, DnsQuery, DnsStats};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;
use table::{Outcome, RowKey, Table};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than any resolver waits (glibc: 5s x 2 tries by default).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_NAMES: u32 = 1024;
pub const MAX_MAX_NAMES: u32 = 65_536;
pub const DEFAULT_MAX_INFLIGHT: u32 = 8192;
/// A key and value are 80 bytes: 20 MiB of LRU hash at most.
pub const MAX_MAX_INFLIGHT: u32 = 262_144;
/// The port always watched.
pub const DNS_PORT: u16 = 53;
/// How often the ring buffer is drained and queries timed out.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// (program, tp_btf tracepoint, hook as reported).
const PROGRAMS: [(&str, &str, &str); 2] = [
    ("coral_dns_egress", "net_dev_queue", "tp_btf/net_dev_queue"),
    (
        "coral_dns_ingress",
        "netif_receive_skb",
        "tp_btf/netif_receive_skb",
    ),
];

/// TCP: (program, direction, hook as reported), on the cgroup2 root.
const TCP_PROGRAMS: [(&str, CgroupSkbAttachType, &str); 2] = [
    (
        "coral_dns_tcp_egress",
        CgroupSkbAttachType::Egress,
        "cgroup_skb/egress (cgroup2 root)",
    ),
    (
        "coral_dns_tcp_ingress",
        CgroupSkbAttachType::Ingress,
        "cgroup_skb/ingress (cgroup2 root)",
    ),
];

/// drops[] slots (dns.bpf.c).
const DROP_EVENTS: u32 = 0;
const DROP_INFLIGHT: u32 = 1;

pub struct DnsFactory;

fn config(spec_config: Option<&KindConfig>) -> DnsConfig {
    match spec_config {
        Some(KindConfig::Dns(c)) => c.clone(),
        _ => DnsConfig::default(),
    }
}

fn or_default(v: u32, default: u32) -> u32 {
    if v == 0 { default } else { v }
}

/// The ports besides 53, as the kernel's `ports[]` global.
fn port_global(ports: &[u32]) -> [u16; MAX_PORTS] {
    let mut out = [0u16; MAX_PORTS];
    for (slot, &p) in out.iter_mut().zip(ports) {
        *slot = p as u16;
    }
    out
}

impl CollectorFactory for DnsFactory {
    fn kind(&self) -> Kind {
        Kind::Dns
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[
            "tp_btf/net_dev_queue (UDP queries leaving to a DNS port)",
            "tp_btf/netif_receive_skb (UDP responses arriving, matched to the queries in flight)",
            "cgroup_skb/egress and cgroup_skb/ingress on the cgroup2 root (the same over TCP)",
        ]
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        caps.require_btf("tp_btf programs need it")?;
        caps.require_raw_tracepoints()?;
        caps.require_ringbuf()?;
        let missing = tracepoints::missing(PROGRAMS.iter().map(|&(_, tp, _)| tp))?;
        if !missing.is_empty() {
            return Err(format!(
                "kernel tracepoints missing: {} (no btf_trace_* in {VMLINUX_BTF})",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    fn notes(&self, caps: &HostCapabilities) -> Option<String> {
        if caps.cgroup2_path.is_none() {
            Some("no cgroup2 mount: DNS over TCP is not seen (UDP is)".into())
        } else if !caps.cap_sys_admin {
            Some("DNS over TCP needs CAP_NET_ADMIN or CAP_SYS_ADMIN (cgroup_skb programs); without, only UDP is seen".into())
        } else {
            None
        }
    }

    fn validate(&self, spec_config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let c = config(spec_config);
        check_interval(c.interval_ns, limits)?;
        if c.ports.len() > MAX_PORTS {
            return Err(format!("at most {MAX_PORTS} ports besides 53"));
        }
        if let Some(p) = c.ports.iter().find(|&&p| p == 0 || p > 65_535) {
            return Err(format!("port {p} is not a port (1-65535)"));
        }
        if Duration::from_nanos(c.timeout_ns) > MAX_TIMEOUT {
            return Err(format!(
                "timeout must be at most {}s",
                MAX_TIMEOUT.as_secs()
            ));
        }
        if c.max_names > MAX_MAX_NAMES {
            return Err(format!("max_names must be at most {MAX_MAX_NAMES}"));
        }
        if c.max_inflight > MAX_MAX_INFLIGHT {
            return Err(format!("max_inflight must be at most {MAX_MAX_INFLIGHT}"));
        }
        Ok(())
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let c = config(ctx.spec.config.as_ref());
        let globals = FilterGlobals::resolve(ctx)?;
        let ports = port_global(&c.ports);
        let max_inflight = or_default(c.max_inflight, DEFAULT_MAX_INFLIGHT);
        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader);
        loader
            .override_global("ports", &ports, true)
            .map_max_entries("inflight", max_inflight);
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;
        let mut program_ids = Vec::new();
        let links = bpf::attach_btf_tracepoints(&mut bpf, &PROGRAMS, &mut program_ids)?;
        // TCP, where there is a cgroup2 hierarchy to attach to and the
        // agent may load cgroup_skb programs (CAP_NET_ADMIN or
        // CAP_SYS_ADMIN): without them UDP is still seen, and the stats say
        // TCP is not.
        let tcp_links = match &ctx.cgroup2_root {
            Some(root) => match attach_tcp(&mut bpf, root, &mut program_ids) {
                Ok(links) => links,
                Err(e) => {
                    tracing::warn!(error = %e, "dns: TCP not watched");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let mut watched = vec![u32::from(DNS_PORT)];
        watched.extend(c.ports.iter().filter(|&&p| p != u32::from(DNS_PORT)));
        Ok(Box::new(DnsCollector {
            events: take_map(&mut bpf, "events")?,
            inflight: take_map(&mut bpf, "inflight")?,
            drops: take_map(&mut bpf, "drops")?,
            links,
            tcp: !tcp_links.is_empty(),
            tcp_links,
            program_ids,
            interval: match c.interval_ns {
                0 => DEFAULT_INTERVAL,
                ns => Duration::from_nanos(ns),
            },
            next_stats: Duration::ZERO,
            timeout_ns: match c.timeout_ns {
                0 => DEFAULT_TIMEOUT.as_nanos() as u64,
                ns => ns,
            },
            ports: watched,
            pending: HashMap::new(),
            max_pending: max_inflight as usize,
            table: Table::new(or_default(c.max_names, DEFAULT_MAX_NAMES) as usize),
            totals: Totals::default(),
            cgroups: CgroupResolver::new(ctx.cgroup2_root.clone()),
            clock: KtimeClock::now(),
            _bpf: bpf,
        }))
    }
}

/// Loads and attaches the TCP programs on the cgroup2 root `root`.
fn attach_tcp(
    bpf: &mut Ebpf,
    root: &std::path::Path,
    program_ids: &mut Vec<u32>,
) -> Result<Vec<CgroupSkbLink>, CollectorError> {
    let cgroup = std::fs::File::open(root).map_err(|e| CollectorError::Attach {
        program: TCP_PROGRAMS[0].0,
        hook: TCP_PROGRAMS[0].2,
        reason: format!("opening {}: {e}", root.display()),
    })?;
    let mut links = Vec::new();
    for (name, direction, hook) in TCP_PROGRAMS {
        links.push(bpf::attach(
            bpf,
            name,
            hook,
            program_ids,
            |p: &mut CgroupSkb| {
                p.load()?;
                // A link (5.7+): others' programs on the root stay.
                let id = p.attach(&cgroup, direction, CgroupAttachMode::Single)?;
                p.take_link(id)
            },
        )?);
    }
    Ok(links)
}

/// "127.0.0.1:53", "[::1]:53".
fn endpoint(addr: &[u8; 16], family: u8, port: u16) -> String {
    if family == 4 {
        format!(
            "{}:{port}",
            Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])
        )
    } else {
        format!("[{}]:{port}", Ipv6Addr::from(*addr))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()
}

/// A query of the target waiting for its response (agent side).
#[derive(Clone, Debug)]
struct Pending {
    ns: u64,
    tgid: u32,
    tid: u32,
    comm: String,
    cgroup_id: u64,
    name: String,
    qtype: u16,
}

#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    queries: u64,
    responses: u64,
    nxdomain: u64,
    servfail: u64,
    timeouts: u64,
    malformed: u64,
}

struct DnsCollector {
    events: RingBuf<MapData>,
    inflight: BpfHashMap<MapData, DnsKey, DnsInflight>,
    drops: PerCpuArray<MapData, u64>,
    /// Dropping a link detaches it.
    links: Vec<FdLink>,
    tcp_links: Vec<CgroupSkbLink>,
    /// TCP was attached (the links are gone after detach).
    tcp: bool,
    program_ids: Vec<u32>,
    interval: Duration,
    next_stats: Duration,
    timeout_ns: u64,
    ports: Vec<u32>,
    pending: HashMap<DnsKey, Pending>,
    max_pending: usize,
    table: Table,
    totals: Totals,
    cgroups: CgroupResolver,
    clock: KtimeClock,
    /// Owns the programs (declared last: dropped after the links).
    _bpf: Ebpf,
}

/// CLOCK_MONOTONIC in ns: `bpf_ktime_get_ns`'s clock.
fn ktime_now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64)
    })
}

impl DnsCollector {
    /// The event of an exchange, without what the response says.
    fn exchange(&mut self, key: &DnsKey, p: &Pending, outcome: DnsOutcome) -> DnsQuery {
        DnsQuery {
            start_unix_nano: self.clock.unix(p.ns),
            pid: p.tgid,
            tid: p.tid,
            comm: p.comm.clone(),
            transport: if key.proto == 6 { "tcp" } else { "udp" }.into(),
            client: endpoint(&key.client, key.family, key.client_port),
            server: endpoint(&key.server, key.family, key.server_port),
            id: u32::from(key.id),
            name: p.name.clone(),
            qtype: u32::from(p.qtype),
            qtype_name: wire::type_name(p.qtype),
            outcome: outcome.into(),
            rcode: 0,
            rcode_name: String::new(),
            answer_count: 0,
            answers: Vec::new(),
            latency_ns: 0,
            cgroup_id: p.cgroup_id,
            container: self.cgroups.resolve(p.cgroup_id).map(Cgroup::to_proto),
        }
    }

    fn on_query(&mut self, e: &DnsEvent) {
        let m = match wire::parse(e.message()) {
            Ok(m) if !m.response => m,
            _ => {
                self.totals.malformed += 1;
                return;
            }
        };
        self.totals.queries += 1;
        if self.pending.len() >= self.max_pending && !self.pending.contains_key(&e.key) {
            // The kernel's LRU map is as full: it forgets one too.
            return;
        }
        self.pending.insert(
            e.key,
            Pending {
                ns: e.query_ns,
                tgid: e.tgid,
                tid: e.tid,
                comm: text(&e.comm),
                cgroup_id: e.cgroup_id,
                name: m.name,
                qtype: m.qtype,
            },
        );
    }

    fn on_response(&mut self, e: &DnsEvent) -> Option<DnsQuery> {
        let parsed = wire::parse(e.message());
        let pending = match (self.pending.remove(&e.key), &parsed) {
            (Some(p), _) => p,
            // The query's event was lost (ring buffer full): the response
            // repeats its question.
            (None, Ok(m)) => {
                self.totals.queries += 1;
                Pending {
                    ns: e.query_ns,
                    tgid: e.tgid,
                    tid: e.tid,
                    comm: text(&e.comm),
                    cgroup_id: e.cgroup_id,
                    name: m.name.clone(),
                    qtype: m.qtype,
                }
            }
            (None, Err(_)) => {
                self.totals.malformed += 1;
                return None;
            }
        };
        // The kernel checked that the header is there.
        let rcode = e.message().get(3).map_or(0, |b| b & 0x0f);
        let latency = e.ns.saturating_sub(e.query_ns);
        self.totals.responses += 1;
        match rcode {
            2 => self.totals.servfail += 1,
            3 => self.totals.nxdomain += 1,
            _ => {}
        }
        self.table.add(
            RowKey {
                name: pending.name.clone(),
                qtype: pending.qtype,
                outcome: Outcome::Rcode(rcode),
            },
            Some(latency),
        );
        let mut q = self.exchange(&e.key, &pending, DnsOutcome::Answered);
        q.rcode = u32::from(rcode);
        q.rcode_name = wire::rcode_name(rcode);
        q.latency_ns = latency;
        if let Ok(m) = parsed {
            q.answer_count = u32::from(m.answer_count);
            q.answers = m.answers;
        } else {
            self.totals.malformed += 1;
        }
        Some(q)
    }

    /// Queries older than the timeout: counted, sent, and forgotten on
    /// both sides (a late response is not matched).
    fn time_out(&mut self, out: &mut Vec<Payload>) {
        let now = ktime_now();
        let expired: Vec<DnsKey> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.ns) >= self.timeout_ns)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            // Already gone when the LRU evicted it.
            let _ = self.inflight.remove(&key);
            self.totals.timeouts += 1;
            self.table.add(
                RowKey {
                    name: p.name.clone(),
                    qtype: p.qtype,
                    outcome: Outcome::Timeout,
                },
                None,
            );
            let q = self.exchange(&key, &p, DnsOutcome::Timeout);
            out.push(Payload::DnsQuery(q));
        }
    }

    fn drop_count(&self, slot: u32) -> Result<u64, CollectorError> {
        Ok(self
            .drops
            .get(&slot, 0)
            .map_err(read_err("drops"))?
            .iter()
            .sum())
    }

    fn stats(&mut self, elapsed: Duration) -> Result<DnsStats, CollectorError> {
        let t = self.totals;
        Ok(DnsStats {
            elapsed_ns: elapsed.as_nanos() as u64,
            names: self.table.snapshot(),
            queries: t.queries,
            responses: t.responses,
            nxdomain: t.nxdomain,
            servfail: t.servfail,
            timeouts: t.timeouts,
            in_flight: self.pending.len() as u64,
            other_names: self.table.other,
            malformed: t.malformed,
            dropped_events: self.drop_count(DROP_EVENTS)?,
            dropped_inflight: self.drop_count(DROP_INFLIGHT)?,
            timeout_ns: self.timeout_ns,
            ports: self.ports.clone(),
            tcp: self.tcp,
        })
    }
}

impl Collector for DnsCollector {
    fn program_ids(&self) -> Vec<u32> {
        self.program_ids.clone()
    }

    fn tick_interval(&self) -> Duration {
        DRAIN_EVERY
    }

    fn collect(
        &mut self,
        elapsed: Duration,
        last: bool,
        out: &mut Vec<Payload>,
    ) -> Result<(), CollectorError> {
        loop {
            let event = match self.events.next() {
                Some(item) => DnsEvent::from_bytes(&item),
                None => break,
            };
            let Some(e) = event else { continue };
            match e.kind {
                QUERY => self.on_query(&e),
                RESPONSE => {
                    if let Some(q) = self.on_response(&e) {
                        out.push(Payload::DnsQuery(q));
                    }
                }
                _ => self.totals.malformed += 1,
            }
        }
        self.time_out(out);
        if last {
            // Younger than the timeout: their answer may still come, unseen.
            let mut left: Vec<_> = self.pending.iter().map(|(k, p)| (*k, p.clone())).collect();
            left.sort_by_key(|(_, p)| p.ns);
            for (k, p) in left {
                let q = self.exchange(&k, &p, DnsOutcome::Unanswered);
                out.push(Payload::DnsQuery(q));
            }
        }
        if last || elapsed >= self.next_stats {
            self.next_stats = elapsed + self.interval;
            let stats = self.stats(elapsed)?;
            out.push(Payload::DnsStats(stats));
        }
        Ok(())
    }

    fn detach(&mut self) {
        self.links.clear();
        self.tcp_links.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_ports() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(endpoint(&v4, 4, 53), "127.0.0.1:53");
        let v6 = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(endpoint(&v6, 6, 5353), "[::1]:5353");
        assert_eq!(port_global(&[5353, 15353]), [5353, 15353, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn configs_out_of_bounds_are_refused() {
        let limits = Limits::default();
        let check = |c: DnsConfig| DnsFactory.validate(Some(&KindConfig::Dns(c)), &limits);
        assert!(check(DnsConfig::default()).is_ok());
        assert!(
            check(DnsConfig {
                ports: vec![5353],
                ..Default::default()
            })
            .is_ok()
        );
        assert!(
            check(DnsConfig {
                ports: vec![1; MAX_PORTS + 1],
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            check(DnsConfig {
                ports: vec![70_000],
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            check(DnsConfig {
                timeout_ns: 3600 * 1_000_000_000,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            check(DnsConfig {
                max_names: MAX_MAX_NAMES + 1,
                ..Default::default()
            })
            .is_err()
        );
    }
}
