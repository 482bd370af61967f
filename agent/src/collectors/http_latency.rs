//! http-latency: one event per HTTP/1.x request and aggregates per
//! (method, route, status), for servers in any language, plaintext or
//! HTTPS through OpenSSL.
//!
//! Kernel side: `src/bpf/http_latency.bpf.c`. Plaintext comes from ONE
//! program on `tp_btf/sys_exit`, dispatching on the syscall number to the
//! read and write families and close (nothing on `sys_enter`: see the
//! program's header for why). HTTPS comes from uprobes on `SSL_read`,
//! `SSL_read_ex`, `SSL_write`, `SSL_write_ex` and `SSL_free` in the libssl
//! each target process maps, attached per process by [`tls`]; with a cgroup
//! or comm filter, `tp_btf/sched_process_exec` and `sched_process_fork`
//! announce new processes to attach to. No kprobes, no tracefs. It needs BTF
//! (tp_btf), a ring buffer, x86_64 syscall numbers, CAP_BPF + CAP_PERFMON,
//! and uprobes for HTTPS. Every request is sent to the agent, which parses
//! method, path and status from the raw bytes, normalises routes, keeps
//! exact-enough quantiles (HDR histograms, 1%) and resolves the cgroup id to
//! a container.

mod tls;

use super::bpf::{self, KtimeClock, read_err, take_map};
use super::filter::FilterGlobals;
use super::{Collector, CollectorError, CollectorFactory, StartContext, check_interval};
use crate::capabilities::HostCapabilities;
use crate::config::Limits;
use crate::containers::resolve::{Cgroup, CgroupResolver};
use crate::domain::{Kind, KindConfig, Payload};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::programs::links::FdLink;
use aya::{Btf, Ebpf, EbpfLoader};
use coral_ebpf_programs::http_latency::{FLAG_CLIENT, FLAG_TLS, HttpEvent, OBJECT, REQ_LEN};
use coral_proto::error_chain;
use coral_proto::v1::{HttpLatencyConfig, HttpRequest, HttpRouteStats, HttpStats, HttpTls};
use hdrhistogram::Histogram;
use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;
use tls::{ProcFilter, TlsTracker};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_ROUTES: u32 = 256;
pub const MAX_MAX_ROUTES: u32 = 10_000;
/// Requests recorded one by one per second unless the config says otherwise:
/// enough to read along or sample from, and a cost that stays small on a
/// server doing 70 000 a second (docs/benchmarks.md, "http-latency overhead").
pub const DEFAULT_REQUEST_RECORDS_PER_SEC: u32 = 1000;
pub const MAX_REQUEST_RECORDS_PER_SEC: u32 = 1_000_000;
/// How often the ring buffer is drained.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// The route requests beyond `max_routes` are counted under.
pub const OVERFLOW_ROUTE: &str = "{overflow}";
const LOG2_BUCKETS: usize = 40;
/// TLS connections followed at once (the `tls_conns` LRU map).
const TLS_CONNECTIONS: u32 = 16_384;
/// Threads inside SSL_read at once (the `ssl_reads` LRU map).
const TLS_READS: u32 = 4096;
/// The process-announcement ring buffer, when it is used.
const PROCS_RING: u32 = 64 << 10;
/// The smallest ring buffer (one page), for the unused one.
const MIN_RING: u32 = 4096;

/// (program, tp_btf tracepoint).
const EXIT_PROGRAM: (&str, &str) = ("coral_http_exit", "sys_exit");
const EXEC_PROGRAM: (&str, &str) = ("coral_http_exec", "sched_process_exec");
const FORK_PROGRAM: (&str, &str) = ("coral_http_fork", "sched_process_fork");

/// Why HTTPS is not seen on a node without uprobes (capabilities' note).
const NO_UPROBES: &str = "HTTPS is not seen: uprobes cannot be attached on this node \
     (the agent's uprobe probe failed), so only plaintext HTTP on sockets is traced";

pub struct HttpLatencyFactory;

fn config(spec_config: Option<&KindConfig>) -> HttpLatencyConfig {
    match spec_config {
        Some(KindConfig::HttpLatency(c)) => *c,
        _ => HttpLatencyConfig::default(),
    }
}

/// What one collector does about TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsPlan {
    Off,
    /// Uprobes in each matching process; `announce`: new processes of a
    /// cgroup or comm filter are announced by the kernel.
    PerProcess {
        announce: bool,
    },
    /// No filter and TLS on: every libssl mapped at start, for everyone.
    Everywhere,
}

fn tls_plan(
    mode: HttpTls,
    filter: &crate::domain::TargetFilter,
    uprobes: bool,
) -> Result<TlsPlan, CollectorError> {
    let per_process = TlsPlan::PerProcess {
        announce: filter.cgroup.is_some() || filter.comm.is_some(),
    };
    Ok(match mode {
        HttpTls::Off => TlsPlan::Off,
        HttpTls::Auto if filter.is_whole_machine() || !uprobes => TlsPlan::Off,
        HttpTls::Auto => per_process,
        HttpTls::On if !uprobes => {
            return Err(CollectorError::Attach {
                program: "coral_ssl_read",
                hook: "uprobe/SSL_read",
                reason: "tls is on but uprobes cannot be attached on this node \
                         (the agent's uprobe probe failed)"
                    .into(),
            });
        }
        HttpTls::On if filter.is_whole_machine() => TlsPlan::Everywhere,
        HttpTls::On => per_process,
    })
}

/// The cgroup filter as a path relative to the cgroup2 mount (`/a/b`).
fn relative_cgroup(ctx: &StartContext) -> Result<Option<String>, CollectorError> {
    let Some(path) = &ctx.spec.filter.cgroup else {
        return Ok(None);
    };
    let root = ctx.cgroup2_root.as_deref().ok_or_else(|| {
        CollectorError::Filter("cgroup filter given but no cgroup2 mount found".into())
    })?;
    let given = std::path::Path::new(path);
    let full = if given.starts_with(root) {
        given.to_path_buf()
    } else {
        root.join(given.strip_prefix("/").unwrap_or(given))
    };
    let canonical = full
        .canonicalize()
        .map_err(|e| CollectorError::Filter(format!("cgroup {path}: {e}")))?;
    let rel = canonical.strip_prefix(root).unwrap_or(&canonical);
    Ok(Some(format!("/{}", rel.display())))
}

/// Loads and attaches one tp_btf program (program, tracepoint).
fn attach_btf(
    bpf: &mut Ebpf,
    (name, tracepoint): (&'static str, &'static str),
    btf: &Btf,
    ids: &mut Vec<u32>,
) -> Result<FdLink, CollectorError> {
    let hook = match tracepoint {
        "sys_exit" => "tp_btf/sys_exit",
        "sched_process_exec" => "tp_btf/sched_process_exec",
        _ => "tp_btf/sched_process_fork",
    };
    bpf::attach(bpf, name, hook, ids, |p: &mut BtfTracePoint| {
        p.load(tracepoint, btf)?;
        let id = p.attach()?;
        p.take_link(id)
    })
    .map(FdLink::from)
}

impl CollectorFactory for HttpLatencyFactory {
    fn kind(&self) -> Kind {
        Kind::HttpLatency
    }

    fn hooks(&self) -> &'static [&'static str] {
        &[
            "tp_btf/sys_exit (read, readv, recvfrom, recvmsg, write, writev, sendto, sendmsg, close)",
            "uprobe/SSL_read, SSL_read_ex (and their returns), SSL_write, SSL_write_ex, SSL_free in each target process's libssl (HTTPS)",
            "tp_btf/sched_process_exec, sched_process_fork (HTTPS with a cgroup or comm filter: new processes)",
        ]
    }

    fn availability(&self, caps: &HostCapabilities) -> Result<(), String> {
        caps.require_bpf()?;
        caps.require_x86_64("syscall numbers and argument registers")?;
        caps.require_btf("the fd-table read needs it")?;
        caps.require_raw_tracepoints()?;
        caps.require_ringbuf()
    }

    fn notes(&self, caps: &HostCapabilities) -> Option<String> {
        (!caps.uprobes).then(|| NO_UPROBES.to_string())
    }

    fn validate(&self, spec_config: Option<&KindConfig>, limits: &Limits) -> Result<(), String> {
        let c = config(spec_config);
        check_interval(c.interval_ns, limits)?;
        if c.max_routes > MAX_MAX_ROUTES {
            return Err(format!("max_routes must be at most {MAX_MAX_ROUTES}"));
        }
        if c.max_request_records_per_sec > MAX_REQUEST_RECORDS_PER_SEC {
            return Err(format!(
                "max_request_records_per_sec must be at most {MAX_REQUEST_RECORDS_PER_SEC}"
            ));
        }
        if HttpTls::try_from(c.tls).is_err() {
            return Err(format!("unknown tls mode {}", c.tls));
        }
        Ok(())
    }

    fn start(&self, ctx: &StartContext) -> Result<Box<dyn Collector>, CollectorError> {
        let config = config(ctx.spec.config.as_ref());
        let globals = FilterGlobals::resolve(ctx)?;
        let client_side = u8::from(config.client_side);
        let plan = tls_plan(config.tls(), &ctx.spec.filter, ctx.uprobes)?;
        let tls_on = plan != TlsPlan::Off;
        let announce = plan == TlsPlan::PerProcess { announce: true };

        let mut loader = EbpfLoader::new();
        globals.apply(&mut loader);
        loader
            .override_global("client_side", &client_side, true)
            .map_max_entries("tls_conns", if tls_on { TLS_CONNECTIONS } else { 1 })
            .map_max_entries("ssl_reads", if tls_on { TLS_READS } else { 1 })
            .map_max_entries("procs", if announce { PROCS_RING } else { MIN_RING });
        let mut bpf = loader
            .load(OBJECT)
            .map_err(|e| CollectorError::Load(error_chain(&e)))?;
        // The loader parsed the kernel's BTF too, but keeps it private.
        let btf = Btf::from_sys_fs().map_err(|e| CollectorError::Load(error_chain(&e)))?;

        let mut program_ids = Vec::new();
        let mut links = vec![attach_btf(&mut bpf, EXIT_PROGRAM, &btf, &mut program_ids)?];
        let events = take_map(&mut bpf, "events")?;
        let drops = take_map(&mut bpf, "drops")?;

        let tls = match plan {
            TlsPlan::Off => None,
            plan => {
                // Announcements first: a process started between the scan
                // and the attach would be missed.
                let announced = if announce {
                    links.push(attach_btf(&mut bpf, EXEC_PROGRAM, &btf, &mut program_ids)?);
                    links.push(attach_btf(&mut bpf, FORK_PROGRAM, &btf, &mut program_ids)?);
                    Some(take_map(&mut bpf, "procs")?)
                } else {
                    None
                };
                let filter = ProcFilter {
                    pids: ctx.spec.filter.pids.clone(),
                    cgroup: relative_cgroup(ctx)?,
                    comm: ctx.spec.filter.comm.clone(),
                    ignore: ctx.agent_pid,
                };
                let mut tracker = TlsTracker::new(&mut bpf, filter, announced, &mut program_ids)
                    .map_err(|e| tls_error(&e))?;
                let strict = config.tls() == HttpTls::On;
                if plan == TlsPlan::Everywhere {
                    let libs = tracker
                        .attach_everywhere(&mut bpf)
                        .map_err(|e| tls_error(&e))?;
                    tracing::info!(libraries = libs, "http-latency: TLS for every process");
                } else {
                    for e in tracker.attach_matching(&mut bpf) {
                        if strict {
                            return Err(tls_error(&e));
                        }
                        tracing::warn!(error = %e, "http-latency: a process gets no TLS uprobes");
                    }
                }
                Some(tracker)
            }
        };

        Ok(Box::new(HttpLatencyCollector {
            events,
            drops,
            links,
            tls,
            program_ids,
            interval: match config.interval_ns {
                0 => DEFAULT_INTERVAL,
                ns => Duration::from_nanos(ns),
            },
            next_stats: Duration::ZERO,
            prefixes: HashMap::new(),
            routes: Routes::new(match config.max_routes {
                0 => DEFAULT_MAX_ROUTES,
                n => n,
            }),
            records: RecordCap::new(match config.max_request_records_per_sec {
                0 => DEFAULT_REQUEST_RECORDS_PER_SEC,
                n => n,
            }),
            cgroups: CgroupResolver::new(ctx.cgroup2_root.clone()),
            clock: KtimeClock::now(),
            bpf,
        }))
    }
}

fn tls_error(e: &tls::TlsError) -> CollectorError {
    CollectorError::Attach {
        program: "coral_ssl_read",
        hook: "uprobe/SSL_read",
        reason: e.to_string(),
    }
}

/// Method and raw path of a request line's prefix.
pub fn parse_request(raw: &[u8]) -> Option<(&str, Cow<'_, str>)> {
    let raw = raw.split(|&b| b == 0).next().unwrap_or(raw);
    let mut parts = raw.splitn(3, |&b| b == b' ');
    let method = std::str::from_utf8(parts.next()?).ok()?;
    let path = parts.next()?;
    // A path cut by the kernel's bounded copy keeps what it has.
    let path = path
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(path);
    Some((method, String::from_utf8_lossy(path)))
}

/// The status code of a response's status line (`HTTP/1.1 200 OK`).
pub fn parse_status(raw: &[u8]) -> Option<u32> {
    let digits = raw.get(9..12)?;
    if !raw.starts_with(b"HTTP/1.") || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn is_id_segment(seg: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    // 8-4-4-4-12 hex digits; checked without splitting (no allocation per
    // segment per request).
    let uuid = seg.len() == 36
        && seg.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    (!seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
        || uuid
        || (seg.len() >= 16 && hex(seg))
}

/// Bounds cardinality: query and fragment dropped, numeric, UUID and long
/// hex segments become `{id}`.
pub fn normalize_route(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".into();
    }
    // Most paths have no id segment: one copy, no rebuilding.
    if !path.split('/').any(is_id_segment) {
        return path.to_string();
    }
    path.split('/')
        .map(|seg| if is_id_segment(seg) { "{id}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RouteKey {
    method: String,
    route: String,
    status: u32,
    client: bool,
}

struct RouteAgg {
    count: u64,
    total_ns: u64,
    hist: Histogram<u64>,
    log2: [u64; LOG2_BUCKETS],
}

impl RouteAgg {
    fn new() -> Self {
        Self {
            count: 0,
            total_ns: 0,
            // Two significant digits: quantiles within 1%, a few KiB per route.
            hist: Histogram::new(2).expect("valid sigfig"),
            log2: [0; LOG2_BUCKETS],
        }
    }

    fn record(&mut self, latency_ns: u64) {
        self.count += 1;
        self.total_ns += latency_ns;
        // Auto-resizing histogram: recording cannot fail for u64 values.
        let _ = self.hist.record(latency_ns.max(1));
        let slot = (63 - latency_ns.max(1).leading_zeros()) as usize;
        self.log2[slot.min(LOG2_BUCKETS - 1)] += 1;
    }
}

/// Aggregates per (method, route, status, side), at most `max` groups, the
/// overflow group included: once `max - 1` groups exist, requests of any new
/// group are counted in one group, route `{overflow}` (no method, status 0),
/// so the memory and the records stay within `max` however many routes a
/// server has. Groups are never removed, so a group's slot stays valid.
struct Routes {
    max: u32,
    groups: Vec<(RouteKey, RouteAgg)>,
    slots: HashMap<RouteKey, usize>,
}

impl Routes {
    fn new(max: u32) -> Self {
        Self {
            max: max.max(1),
            groups: Vec::new(),
            slots: HashMap::new(),
        }
    }

    fn overflow() -> RouteKey {
        RouteKey {
            method: String::new(),
            route: OVERFLOW_ROUTE.to_string(),
            status: 0,
            client: false,
        }
    }

    /// The slot of `key`'s group, made if new. The key is cloned only when
    /// it starts a group.
    fn slot(&mut self, key: &RouteKey) -> usize {
        if let Some(&i) = self.slots.get(key) {
            return i;
        }
        let overflow = Self::overflow();
        let real = self.groups.len() - usize::from(self.slots.contains_key(&overflow));
        let key = if real + 1 < self.max as usize {
            key.clone()
        } else if let Some(&i) = self.slots.get(&overflow) {
            return i;
        } else {
            overflow
        };
        self.slots.insert(key.clone(), self.groups.len());
        self.groups.push((key, RouteAgg::new()));
        self.groups.len() - 1
    }

    fn record_at(&mut self, slot: usize, latency_ns: u64) {
        self.groups[slot].1.record(latency_ns);
    }

    /// Counts one request of `key`'s group.
    #[cfg(test)]
    fn record(&mut self, key: &RouteKey, latency_ns: u64) {
        let slot = self.slot(key);
        self.record_at(slot, latency_ns);
    }

    fn stats(&self) -> Vec<HttpRouteStats> {
        let mut out: Vec<_> = self
            .groups
            .iter()
            .map(|(k, a)| {
                let used = a.log2.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                HttpRouteStats {
                    method: k.method.clone(),
                    route: k.route.clone(),
                    status: k.status,
                    count: a.count,
                    error_rate: if k.status >= 500 { 1.0 } else { 0.0 },
                    total_ns: a.total_ns,
                    p50_ns: a.hist.value_at_quantile(0.50),
                    p90_ns: a.hist.value_at_quantile(0.90),
                    p99_ns: a.hist.value_at_quantile(0.99),
                    latency_log2: a.log2[..used].to_vec(),
                    client: k.client,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| (&a.method, &a.route, a.status).cmp(&(&b.method, &b.route, b.status)))
        });
        out
    }
}

/// At most `per_sec` requests of each second (of the requests' kernel end
/// time) become HttpRequest records; the rest are only counted. Building,
/// encoding and retaining a record was most of what a request cost the agent
/// (0.9 µs per request without the cap, 0.24 µs with it, under nginx at
/// 60 000 a second), and that CPU is taken from the server being watched.
struct RecordCap {
    per_sec: u32,
    second: u64,
    this_second: u32,
    unrecorded: u64,
}

impl RecordCap {
    fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            second: 0,
            this_second: 0,
            unrecorded: 0,
        }
    }

    /// Whether a request that ended at `end_ns` (ktime) is recorded.
    fn admit(&mut self, end_ns: u64) -> bool {
        let second = end_ns / 1_000_000_000;
        if second != self.second {
            self.second = second;
            self.this_second = 0;
        }
        if self.this_second < self.per_sec {
            self.this_second += 1;
            true
        } else {
            self.unrecorded += 1;
            false
        }
    }
}

/// Raw request prefixes already seen, each with its route group's slot, so
/// a request that is only counted (past the record cap: nearly all of them
/// under load) costs one lookup instead of parsing, normalizing and two
/// allocations. Bounded: past `MAX_PREFIXES` (paths full of ids), requests
/// take the parsing path.
const MAX_PREFIXES: usize = 4096;

/// What decides a request's group: `method SP path` as `parse_request`
/// reads it, the status, the side. Written into `buf`; its length.
fn prefix_key(req: &[u8], status: u32, client: bool, buf: &mut [u8; REQ_LEN + 5]) -> usize {
    let req = req.split(|&b| b == 0).next().unwrap_or(req);
    let end = req
        .iter()
        .position(|&b| b == b' ')
        .and_then(|sp| {
            req[sp + 1..]
                .iter()
                .position(|&b| matches!(b, b' ' | b'\r' | b'\n'))
                .map(|n| sp + 1 + n)
        })
        .unwrap_or(req.len());
    buf[..end].copy_from_slice(&req[..end]);
    buf[end..end + 4].copy_from_slice(&status.to_le_bytes());
    buf[end + 4] = u8::from(client);
    end + 5
}

struct HttpLatencyCollector {
    events: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    /// Dropping a link detaches it.
    links: Vec<FdLink>,
    /// The TLS uprobes and their processes; dropping it detaches them.
    tls: Option<TlsTracker>,
    program_ids: Vec<u32>,
    interval: Duration,
    next_stats: Duration,
    routes: Routes,
    prefixes: HashMap<Box<[u8]>, usize>,
    records: RecordCap,
    cgroups: CgroupResolver,
    clock: KtimeClock,
    /// Owns the programs (declared last: dropped after the links, which
    /// unloads them).
    bpf: Ebpf,
}

impl HttpLatencyCollector {
    /// Counts one request; its record, unless over the per-second cap.
    fn request(&mut self, e: &HttpEvent) -> Option<HttpRequest> {
        let status = parse_status(&e.resp)?;
        let client = e.flags & FLAG_CLIENT != 0;
        let latency_ns = e.end_ns.saturating_sub(e.start_ns);
        let mut buf = [0; REQ_LEN + 5];
        let n = prefix_key(e.request(), status, client, &mut buf);
        let known = self.prefixes.get(&buf[..n]).copied();
        if let Some(slot) = known {
            self.routes.record_at(slot, latency_ns);
            if !self.records.admit(e.end_ns) {
                return None;
            }
        }
        let (method, path) = parse_request(e.request())?;
        let key = RouteKey {
            route: normalize_route(&path),
            method: method.to_string(),
            status,
            client,
        };
        if known.is_none() {
            let slot = self.routes.slot(&key);
            self.routes.record_at(slot, latency_ns);
            if self.prefixes.len() < MAX_PREFIXES {
                self.prefixes.insert(buf[..n].into(), slot);
            }
            if !self.records.admit(e.end_ns) {
                return None;
            }
        }
        let RouteKey {
            method,
            route,
            client,
            ..
        } = key;
        let comm = e.comm.split(|&b| b == 0).next().unwrap_or(&[]);
        Some(HttpRequest {
            start_unix_nano: self.clock.unix(e.start_ns),
            pid: e.tgid,
            comm: String::from_utf8_lossy(comm).into_owned(),
            method,
            path: path.into_owned(),
            route,
            status,
            latency_ns,
            client,
            tls: e.flags & FLAG_TLS != 0,
            cgroup_id: e.cgroup_id,
            container: self.cgroups.resolve(e.cgroup_id).map(Cgroup::to_proto),
        })
    }
}

impl Collector for HttpLatencyCollector {
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
        if !last && let Some(tls) = self.tls.as_mut() {
            tls.tick(&mut self.bpf);
        }
        loop {
            let event = match self.events.next() {
                Some(item) => HttpEvent::from_bytes(&item),
                None => break,
            };
            if let Some(request) = event.and_then(|e| self.request(&e)) {
                out.push(Payload::HttpRequest(request));
            }
        }
        if last || elapsed >= self.next_stats {
            self.next_stats = elapsed + self.interval;
            let dropped_events = self
                .drops
                .get(&0, 0)
                .map_err(read_err("drops"))?
                .iter()
                .sum();
            out.push(Payload::HttpStats(HttpStats {
                elapsed_ns: elapsed.as_nanos() as u64,
                routes: self.routes.stats(),
                dropped_events,
                unrecorded_requests: self.records.unrecorded,
            }));
        }
        Ok(())
    }

    fn detach(&mut self) {
        self.links.clear();
        if let Some(tls) = self.tls.as_mut() {
            tls.detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse() {
        let mut raw = [0u8; 128];
        let line = b"GET /users/42?x=1 HTTP/1.1\r\nHost: a\r\n";
        raw[..line.len()].copy_from_slice(line);
        assert_eq!(parse_request(&raw), Some(("GET", "/users/42?x=1".into())));
        // Cut by the kernel's bounded copy: keep what is there.
        assert_eq!(
            parse_request(b"POST /very/long"),
            Some(("POST", "/very/long".into()))
        );
        assert_eq!(parse_request(b"GARBAGE"), None);
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Serv"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.1 2x0 OK"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
    }

    #[test]
    fn routes_are_normalised() {
        assert_eq!(
            normalize_route("/users/42/orders?page=2"),
            "/users/{id}/orders"
        );
        assert_eq!(
            normalize_route("/o/3b241101-e2bb-4255-8caf-4136c566a962"),
            "/o/{id}"
        );
        // Dashes out of place: not a UUID (nor all hex).
        assert_eq!(
            normalize_route("/o/3b2411-01e2bb-4255-8caf-4136c566a962"),
            "/o/3b2411-01e2bb-4255-8caf-4136c566a962"
        );
        assert_eq!(normalize_route("/blob/deadbeefdeadbeef01"), "/blob/{id}");
        assert_eq!(normalize_route("/v1/items"), "/v1/items");
        assert_eq!(normalize_route("/"), "/");
        assert_eq!(normalize_route("?q"), "/");
    }

    #[test]
    fn route_cap_overflows_into_one_group() {
        let mut routes = Routes::new(2);
        for (i, route) in ["/a", "/b", "/c", "/d"].iter().enumerate() {
            routes.record(
                &RouteKey {
                    method: "GET".into(),
                    route: route.to_string(),
                    status: 200,
                    client: false,
                },
                1000 * (i as u64 + 1),
            );
        }
        // The overflow group is one of the two.
        let stats = routes.stats();
        assert_eq!(stats.len(), 2);
        let overflow = stats.iter().find(|s| s.route == OVERFLOW_ROUTE).unwrap();
        assert_eq!(overflow.count, 3);
        let mut one = Routes::new(1);
        one.record(
            &RouteKey {
                method: "GET".into(),
                route: "/a".into(),
                status: 200,
                client: false,
            },
            1,
        );
        assert_eq!(one.stats()[0].route, OVERFLOW_ROUTE);
    }

    #[test]
    fn tls_follows_the_filter_the_mode_and_the_node() {
        use crate::domain::TargetFilter;
        let none = TargetFilter::default();
        let pid = TargetFilter {
            pids: vec![42],
            ..Default::default()
        };
        let cgroup = TargetFilter {
            cgroup: Some("/a".into()),
            ..Default::default()
        };
        let plan = |mode, f: &TargetFilter, uprobes| tls_plan(mode, f, uprobes).ok();
        let per = |announce| Some(TlsPlan::PerProcess { announce });
        assert_eq!(plan(HttpTls::Auto, &pid, true), per(false));
        assert_eq!(plan(HttpTls::Auto, &cgroup, true), per(true));
        // Never for the whole machine by default, never an error.
        assert_eq!(plan(HttpTls::Auto, &none, true), Some(TlsPlan::Off));
        assert_eq!(plan(HttpTls::Auto, &pid, false), Some(TlsPlan::Off));
        assert_eq!(plan(HttpTls::On, &none, true), Some(TlsPlan::Everywhere));
        assert_eq!(plan(HttpTls::On, &pid, true), per(false));
        assert_eq!(plan(HttpTls::Off, &pid, true), Some(TlsPlan::Off));
        let err = tls_plan(HttpTls::On, &pid, false).unwrap_err().to_string();
        assert!(err.contains("uprobes cannot be attached"), "{err}");
    }

    #[test]
    fn capabilities_say_when_https_is_not_seen() {
        let mut caps = HostCapabilities {
            uprobes: true,
            ..Default::default()
        };
        assert_eq!(HttpLatencyFactory.notes(&caps), None);
        caps.uprobes = false;
        let note = HttpLatencyFactory.notes(&caps).unwrap();
        assert!(note.starts_with("HTTPS is not seen"), "{note}");
    }

    #[test]
    fn unknown_tls_modes_are_refused() {
        let config = KindConfig::HttpLatency(HttpLatencyConfig {
            tls: 7,
            ..Default::default()
        });
        assert_eq!(
            HttpLatencyFactory.validate(Some(&config), &Limits::default()),
            Err("unknown tls mode 7".into())
        );
    }

    #[test]
    fn equal_prefix_keys_mean_equal_groups() {
        let key = |req: &[u8], status, client| {
            let mut buf = [0; REQ_LEN + 5];
            let n = prefix_key(req, status, client, &mut buf);
            buf[..n].to_vec()
        };
        // The rest of the request does not matter, as for parse_request...
        assert_eq!(
            key(b"GET /a HTTP/1.1\r\nHost: x\r\n", 200, false),
            key(b"GET /a HTTP/1.0\r\nUser-Agent: y", 200, false)
        );
        assert_eq!(
            key(b"GET /a\r\n", 200, false),
            key(b"GET /a\0junk", 200, false)
        );
        // ...method, path, status and side do.
        let base = key(b"GET /a HTTP/1.1", 200, false);
        for other in [
            key(b"PUT /a HTTP/1.1", 200, false),
            key(b"GET /ab HTTP/1.1", 200, false),
            key(b"GET /a HTTP/1.1", 404, false),
            key(b"GET /a HTTP/1.1", 200, true),
        ] {
            assert_ne!(base, other);
        }
        // A path cut at the copy's end is a prefix of its own.
        let long = [b"GET /".as_slice(), &[b'x'; REQ_LEN - 5]].concat();
        assert_eq!(key(&long, 200, false).len(), REQ_LEN + 5);
    }

    #[test]
    fn records_are_capped_per_second_of_kernel_time() {
        let mut cap = RecordCap::new(2);
        let s = 1_000_000_000;
        let admitted: Vec<bool> = [5 * s, 5 * s + 1, 5 * s + 2, 6 * s, 6 * s + 9, 6 * s + 10]
            .iter()
            .map(|&t| cap.admit(t))
            .collect();
        assert_eq!(admitted, [true, true, false, true, true, false]);
        assert_eq!(cap.unrecorded, 2);
        let config = KindConfig::HttpLatency(HttpLatencyConfig {
            max_request_records_per_sec: MAX_REQUEST_RECORDS_PER_SEC + 1,
            ..Default::default()
        });
        assert_eq!(
            HttpLatencyFactory.validate(Some(&config), &Limits::default()),
            Err("max_request_records_per_sec must be at most 1000000".into())
        );
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut agg = RouteAgg::new();
        for ms in 50..=59 {
            agg.record(ms * 1_000_000);
        }
        let p50 = agg.hist.value_at_quantile(0.5) as f64 / 1e6;
        assert!((54.0..=55.6).contains(&p50), "{p50}");
        assert_eq!(agg.count, 10);
    }
}
